//! DKIM signing (RFC 6376) of outgoing mail with the sender domain's replicated
//! key: relaxed/relaxed canonicalisation, SHA-256, RSA or Ed25519 (RFC 8463).
//! The signature goes on when the message is handed over (each attempt signs
//! anew, so a key replaced while mail waits is the one used).

use mail_auth::common::crypto::{Ed25519Key, RsaKey, Sha256};
use mail_auth::common::headers::HeaderWriter;
use mail_auth::dkim::DkimSigner;
use maildr_store::{DkimAlgorithm, DkimKey};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs1KeyDer};

/// The header fields signed when present (the ones a forwarder or a list must
/// not change without breaking the signature). Absent ones are left out of `h=`:
/// listing one would forbid a receiving MTA to add it (Postfix adds a missing
/// `Date:`), and the signature would break on arrival.
pub const SIGNED_HEADERS: [&str; 12] = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

/// `message` with a `DKIM-Signature:` of `domain` by `key` in front.
pub fn sign(key: &DkimKey, domain: &str, message: &[u8]) -> Result<Vec<u8>, String> {
    let present = present_fields(message);
    let signed: Vec<&str> =
        SIGNED_HEADERS.iter().copied().filter(|h| present.iter().any(|p| p.eq_ignore_ascii_case(h))).collect();
    if !signed.iter().any(|h| h.eq_ignore_ascii_case("From")) {
        return Err("the message has no From: field (RFC 6376 requires signing it)".into());
    }
    let header = match key.algorithm {
        DkimAlgorithm::RsaSha256 => {
            let der = PrivateKeyDer::Pkcs1(PrivatePkcs1KeyDer::from(key.private_der.as_slice()));
            let k = RsaKey::<Sha256>::from_key_der(der).map_err(|e| format!("the DKIM key of {domain}: {e}"))?;
            DkimSigner::from_key(k)
                .domain(domain)
                .selector(&key.selector)
                .headers(signed.iter().copied())
                .sign(message)
                .map_err(|e| format!("signing for {domain}: {e}"))?
                .to_header()
        }
        DkimAlgorithm::Ed25519Sha256 => {
            let k =
                Ed25519Key::from_pkcs8_der(&key.private_der).map_err(|e| format!("the DKIM key of {domain}: {e}"))?;
            DkimSigner::from_key(k)
                .domain(domain)
                .selector(&key.selector)
                .headers(signed.iter().copied())
                .sign(message)
                .map_err(|e| format!("signing for {domain}: {e}"))?
                .to_header()
        }
    };
    let mut out = header.into_bytes();
    out.extend_from_slice(message);
    Ok(out)
}

/// The names of the header fields of `message` (up to the empty line).
fn present_fields(message: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if matches!(line[0], b' ' | b'\t') {
            continue;
        }
        if let Some(colon) = line.iter().position(|b| *b == b':') {
            names.push(String::from_utf8_lossy(&line[..colon]).trim().to_string());
        }
    }
    names
}

/// A new key: RSA of `bits` (2048 by default: what every verifier accepts) or
/// Ed25519.
pub fn generate(
    algorithm: DkimAlgorithm,
    selector: &str,
    bits: usize,
    at: maildr_types::UnixSeconds,
) -> Result<DkimKey, String> {
    let pair = match algorithm {
        DkimAlgorithm::RsaSha256 => mail_auth::dkim::generate::DkimKeyPair::generate_rsa(bits),
        DkimAlgorithm::Ed25519Sha256 => mail_auth::dkim::generate::DkimKeyPair::generate_ed25519(),
    }
    .map_err(|e| format!("generating the key: {e}"))?;
    let public_base64 = pair.encoded_public_key();
    let (private_der, _) = pair.into_inner();
    Ok(DkimKey { selector: selector.to_string(), algorithm, private_der, public_base64, created_at: at })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mail_auth::common::parse::TxtRecordParser;
    use mail_auth::common::verify::DomainKey;

    #[test]
    fn a_generated_key_signs_and_its_dns_record_parses() {
        for algorithm in [DkimAlgorithm::Ed25519Sha256, DkimAlgorithm::RsaSha256] {
            let key = generate(algorithm, "maildr", 2048, maildr_types::UnixSeconds(1)).unwrap();
            let signed = sign(&key, "example.test", b"From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n").unwrap();
            let text = String::from_utf8(signed).unwrap();
            assert!(text.starts_with("DKIM-Signature: v=1;"), "{text}");
            assert!(text.contains("d=example.test") && text.contains("s=maildr"), "{text}");
            assert!(text.ends_with("From: a@example.test\r\nSubject: x\r\n\r\nbody\r\n"));
            DomainKey::parse(key.dns_text().as_bytes()).unwrap();
            let h = text.lines().find(|l| l.contains("h=")).unwrap().to_string();
            assert!(h.contains("From") && h.contains("Subject") && !h.contains("Date"), "only present fields: {h}");
            assert!(sign(&key, "example.test", b"Subject: no from\r\n\r\nx\r\n").is_err());
        }
    }
}
