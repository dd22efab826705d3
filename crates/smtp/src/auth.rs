//! SASL PLAIN and LOGIN for submission, and password verification.
//!
//! Verification runs argon2 on the blocking pool: it is deliberately slow, and
//! must not stall the connections sharing a runtime thread.

use base64::Engine;
use maildr_cluster::Cluster;
use maildr_types::EmailAddress;

/// Decoded SASL PLAIN message: `authzid NUL authcid NUL password` (RFC 4616).
pub fn decode_plain(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let mut parts = raw.split(|&b| b == 0);
    let authzid = parts.next()?;
    let authcid = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let password = String::from_utf8(parts.next()?.to_vec()).ok()?;
    if parts.next().is_some() {
        return None;
    }
    // Acting as another user is not supported: an authzid must name the same user.
    if !authzid.is_empty() && authzid != authcid.as_bytes() {
        return None;
    }
    Some((authcid, password))
}

pub fn decode_b64_text(b64: &str) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    String::from_utf8(raw).ok()
}

/// Check a login; returns the account's address when the password matches.
pub async fn verify_login(cluster: &Cluster, user: &str, password: &str) -> Option<EmailAddress> {
    let address = EmailAddress::parse(user).ok()?;
    let account = cluster.store().account(&address).ok()??;
    let hash = account.password_hash;
    let password = password.to_string();
    let matches = tokio::task::spawn_blocking(move || maildr_frontend::verify_password(&hash, &password)).await.ok()?;
    matches.then_some(account.address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_decode_and_impersonation_is_refused() {
        let enc = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(decode_plain(&enc(b"\0alice@example.test\0pw")), Some(("alice@example.test".into(), "pw".into())));
        assert_eq!(decode_plain(&enc(b"alice@example.test\0alice@example.test\0pw")).map(|x| x.1), Some("pw".into()));
        assert_eq!(decode_plain(&enc(b"bob@example.test\0alice@example.test\0pw")), None);
        assert_eq!(decode_plain("not base64!"), None);
        assert_eq!(decode_plain(&enc(b"no separators")), None);
    }
}
