//! Encryption of everything that leaves the site, and names that reveal nothing.
//!
//! A backup target is someone else's disk: every object is sealed with AES-256-GCM
//! (ring, the one crypto provider of maildr) under a key derived from the site's
//! backup key file, which is kept apart from the targets. An object is cut into
//! chunks of [`CHUNK_PLAINTEXT_BYTES`] so that large objects need no second copy in
//! memory per chunk; each chunk's nonce is the object's random 8-byte prefix and the
//! chunk's number, and its associated data is the object's name and whether it is
//! the last chunk, so a chunk cannot be moved to another object, reordered, or cut
//! off at a chunk boundary without the open failing (the STREAM construction).
//!
//! Body objects are named by an HMAC of the body's hash under a second derived key:
//! the target learns neither the hashes (which would tell who holds a known message)
//! nor anything but sizes and times.
//!
//! This module must never write a key, plaintext or a body hash anywhere.

use std::path::Path;

use maildr_types::BlobHash;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::{hkdf, hmac, rand::SecureRandom};

/// Bytes of plaintext per sealed chunk.
pub const CHUNK_PLAINTEXT_BYTES: usize = 1024 * 1024;
/// What every sealed object starts with (format version 1).
const MAGIC: &[u8; 8] = b"MDRBK1\0\0";
const PREFIX_BYTES: usize = 8;
const TAG_BYTES: usize = 16;
const HEADER_BYTES: usize = MAGIC.len() + PREFIX_BYTES;

/// Why the key could not be loaded or an object not opened.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("backup key file {path}: {detail}")]
    KeyFile { path: String, detail: String },
    #[error("object {name}: not a maildr backup object (bad header)")]
    NotAnObject { name: String },
    #[error("object {name}: does not decrypt with this key (changed, truncated, or sealed under another name or key)")]
    Tampered { name: String },
    #[error("no randomness for a nonce")]
    Random,
}

/// The site's backup key, with the two keys derived from it.
pub struct BackupKey {
    seal: LessSafeKey,
    names: hmac::Key,
    /// A short fingerprint of the key (not secret), so a manifest can say which key
    /// sealed it.
    fingerprint: String,
}

impl std::fmt::Debug for BackupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BackupKey({})", self.fingerprint)
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl BackupKey {
    /// Read a key file: 64 hex digits (whitespace around them ignored).
    pub fn load(path: &Path) -> Result<BackupKey, CryptoError> {
        let err = |detail: String| CryptoError::KeyFile { path: path.display().to_string(), detail };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let bytes = hex::decode(text.trim()).map_err(|_| err("is not hex".into()))?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| err("must hold 32 bytes (64 hex digits)".into()))?;
        Ok(BackupKey::from_secret(&secret))
    }

    /// A new random key, as the hex text of a key file.
    pub fn generate_hex() -> Result<String, CryptoError> {
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut secret).map_err(|_| CryptoError::Random)?;
        Ok(hex::encode(secret))
    }

    /// A new random key (benchmarks and scratch work).
    pub fn random() -> Result<BackupKey, CryptoError> {
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut secret).map_err(|_| CryptoError::Random)?;
        Ok(BackupKey::from_secret(&secret))
    }

    /// Derive the sealing and naming keys from the 32-byte secret.
    pub fn from_secret(secret: &[u8; 32]) -> BackupKey {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"maildr-backup-v1").extract(secret);
        let derive = |info: &'static [u8]| -> [u8; 32] {
            let mut out = [0u8; 32];
            prk.expand(&[info], Len32).and_then(|okm| okm.fill(&mut out)).expect("32 bytes is a valid HKDF length");
            out
        };
        let seal =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &derive(b"seal")).expect("32 bytes is an AES-256 key"));
        let names = hmac::Key::new(hmac::HMAC_SHA256, &derive(b"names"));
        let fingerprint = hex::encode(&derive(b"fingerprint")[..8]);
        BackupKey { seal, names, fingerprint }
    }

    /// Not secret: tells two keys apart in reports.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The object name of a body with this hash (`bodies/<64 hex>`): an HMAC, so the
    /// target cannot tell which body it is.
    pub fn body_object(&self, hash: &BlobHash) -> String {
        format!("bodies/{}", hex::encode(hmac::sign(&self.names, &hash.0).as_ref()))
    }

    /// Seal `plaintext` as the object called `name`.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut prefix = [0u8; PREFIX_BYTES];
        ring::rand::SystemRandom::new().fill(&mut prefix).map_err(|_| CryptoError::Random)?;
        let chunks = plaintext.len().div_ceil(CHUNK_PLAINTEXT_BYTES).max(1);
        let mut out = Vec::with_capacity(HEADER_BYTES + plaintext.len() + chunks * TAG_BYTES);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&prefix);
        for i in 0..chunks {
            let start = i * CHUNK_PLAINTEXT_BYTES;
            let end = (start + CHUNK_PLAINTEXT_BYTES).min(plaintext.len());
            let last = i + 1 == chunks;
            let mut chunk = plaintext[start..end].to_vec();
            let tag = self
                .seal
                .seal_in_place_separate_tag(nonce(&prefix, i)?, aad(name, last), &mut chunk)
                .map_err(|_| CryptoError::Random)?;
            out.extend_from_slice(&chunk);
            out.extend_from_slice(tag.as_ref());
        }
        Ok(out)
    }

    /// Open the object called `name`; any change, truncation or other name fails.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < HEADER_BYTES + TAG_BYTES || &sealed[..MAGIC.len()] != MAGIC {
            return Err(CryptoError::NotAnObject { name: name.into() });
        }
        let mut prefix = [0u8; PREFIX_BYTES];
        prefix.copy_from_slice(&sealed[MAGIC.len()..HEADER_BYTES]);
        let mut rest = &sealed[HEADER_BYTES..];
        let mut out = Vec::with_capacity(rest.len());
        let full = CHUNK_PLAINTEXT_BYTES + TAG_BYTES;
        let tampered = || CryptoError::Tampered { name: name.into() };
        for i in 0.. {
            let last = rest.len() <= full;
            let take = if last { rest.len() } else { full };
            if take < TAG_BYTES {
                return Err(tampered());
            }
            let mut chunk = rest[..take].to_vec();
            let plain = self
                .seal
                .open_in_place(nonce(&prefix, i).map_err(|_| tampered())?, aad(name, last), &mut chunk)
                .map_err(|_| tampered())?;
            out.extend_from_slice(plain);
            rest = &rest[take..];
            if last {
                break;
            }
        }
        Ok(out)
    }
}

fn nonce(prefix: &[u8; PREFIX_BYTES], chunk: usize) -> Result<Nonce, CryptoError> {
    let chunk = u32::try_from(chunk).map_err(|_| CryptoError::Random)?;
    let mut bytes = [0u8; 12];
    bytes[..PREFIX_BYTES].copy_from_slice(prefix);
    bytes[PREFIX_BYTES..].copy_from_slice(&chunk.to_be_bytes());
    Ok(Nonce::assume_unique_for_key(bytes))
}

fn aad(name: &str, last: bool) -> Aad<Vec<u8>> {
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(u8::from(last));
    Aad::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> BackupKey {
        BackupKey::from_secret(&[byte; 32])
    }

    #[test]
    fn objects_of_every_chunk_count_open_to_what_was_sealed() {
        let k = key(1);
        for len in [
            0,
            1,
            CHUNK_PLAINTEXT_BYTES - 1,
            CHUNK_PLAINTEXT_BYTES,
            CHUNK_PLAINTEXT_BYTES + 1,
            3 * CHUNK_PLAINTEXT_BYTES,
        ] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let sealed = k.seal("backups/x/state", &plain).unwrap();
            if len > 0 {
                assert_ne!(&sealed[HEADER_BYTES..HEADER_BYTES + len.min(64)], &plain[..len.min(64)], "sealed in clear");
            }
            assert_eq!(k.open("backups/x/state", &sealed).unwrap(), plain, "length {len}");
        }
    }

    #[test]
    fn a_changed_byte_another_name_another_key_or_a_cut_at_a_chunk_boundary_fail_to_open() {
        let k = key(1);
        let plain = vec![7u8; 2 * CHUNK_PLAINTEXT_BYTES + 10];
        let sealed = k.seal("a", &plain).unwrap();
        let mut flipped = sealed.clone();
        flipped[HEADER_BYTES + 5] ^= 1;
        assert!(matches!(k.open("a", &flipped), Err(CryptoError::Tampered { .. })));
        assert!(matches!(k.open("b", &sealed), Err(CryptoError::Tampered { .. })));
        assert!(matches!(key(2).open("a", &sealed), Err(CryptoError::Tampered { .. })));
        let cut = &sealed[..HEADER_BYTES + 2 * (CHUNK_PLAINTEXT_BYTES + TAG_BYTES)];
        assert!(matches!(k.open("a", cut), Err(CryptoError::Tampered { .. })));
        assert!(matches!(k.open("a", b"plain text"), Err(CryptoError::NotAnObject { .. })));
    }

    #[test]
    fn body_names_hide_the_hash_and_differ_per_key() {
        let hash = BlobHash([9; 32]);
        let name = key(1).body_object(&hash);
        assert!(!name.contains(&hash.to_hex()));
        assert_eq!(name, key(1).body_object(&hash));
        assert_ne!(name, key(2).body_object(&hash));
    }

    #[test]
    fn a_key_file_must_hold_exactly_32_bytes_of_hex() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, format!("{}\n", BackupKey::generate_hex().unwrap())).unwrap();
        BackupKey::load(&path).unwrap();
        std::fs::write(&path, "abcd").unwrap();
        assert!(BackupKey::load(&path).unwrap_err().to_string().contains("32 bytes"));
        std::fs::write(&path, "zz".repeat(32)).unwrap();
        assert!(BackupKey::load(&path).unwrap_err().to_string().contains("not hex"));
    }
}
