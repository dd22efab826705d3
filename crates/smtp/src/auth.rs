//! SASL PLAIN and LOGIN for submission, and password verification.
//!
//! Verification is `maildr_frontend::passwords::check_password`: argon2 on the
//! blocking pool, bounded site-wide, as slow for unknown accounts as for known.

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

/// What a login attempt came to.
pub enum Login {
    Accepted(EmailAddress),
    Refused,
    /// Every password-check slot was busy: nothing was checked.
    Busy,
}

/// Check a login.
pub async fn verify_login(cluster: &Cluster, user: &str, password: &str) -> Login {
    use maildr_frontend::passwords::{check_password, PasswordCheck};
    let account = EmailAddress::parse(user).ok().and_then(|a| cluster.store().account(&a).ok().flatten());
    let hash = account.as_ref().map(|a| a.password_hash.clone());
    match (check_password(hash, password.to_string()).await, account) {
        (PasswordCheck::Matches, Some(a)) => Login::Accepted(a.address),
        (PasswordCheck::Busy, _) => Login::Busy,
        _ => Login::Refused,
    }
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
