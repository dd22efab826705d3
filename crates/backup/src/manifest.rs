//! What a backup and an archive segment are on a target: their names and the
//! manifest that describes a backup.
//!
//! Names say only what the operator needs to choose without decrypting: a backup's
//! time and log index (`backups/b-20261206t230000z-1234/…`), an archive segment's
//! first and last log index and their apply times. Everything else (the manifest's
//! account addresses, mailbox names, body hashes) is inside sealed objects.

use std::fmt;

use chrono::{DateTime, Utc};
use maildr_store::Store;
use serde::{Deserialize, Serialize};

/// Prefix of every backup's objects.
pub const BACKUPS_PREFIX: &str = "backups/";
/// Prefix of the archived log.
pub const ARCHIVE_PREFIX: &str = "archive/";
/// Prefix of message bodies.
pub const BODIES_PREFIX: &str = "bodies/";

/// A backup's id: its time (UTC, to the second) and the log index it stands at.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackupId(String);

impl BackupId {
    pub fn new(taken_at_ms: u64, applied_index: u64) -> BackupId {
        let at = time_of(taken_at_ms).format("%Y%m%dt%H%M%Sz");
        BackupId(format!("b-{at}-{applied_index}"))
    }

    /// An id as typed by an operator (`--backup`), checked for shape.
    pub fn parse(text: &str) -> Option<BackupId> {
        let rest = text.strip_prefix("b-")?;
        let (at, index) = rest.rsplit_once('-')?;
        (at.len() == 16
            && at.bytes().all(|b| b.is_ascii_digit() || b == b't' || b == b'z')
            && index.parse::<u64>().is_ok())
        .then(|| BackupId(text.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the backup was taken (to the second), from its id.
    pub fn taken_at_ms(&self) -> Option<u64> {
        let at = self.0.strip_prefix("b-")?.get(..16)?;
        let naive = chrono::NaiveDateTime::parse_from_str(at, "%Y%m%dt%H%M%Sz").ok()?;
        u64::try_from(naive.and_utc().timestamp_millis()).ok()
    }

    pub fn manifest_key(&self) -> String {
        format!("{BACKUPS_PREFIX}{}/manifest", self.0)
    }

    pub fn state_key(&self) -> String {
        format!("{BACKUPS_PREFIX}{}/state", self.0)
    }

    /// The id of a manifest's key, if `key` is one.
    pub fn of_manifest_key(key: &str) -> Option<BackupId> {
        BackupId::parse(key.strip_prefix(BACKUPS_PREFIX)?.strip_suffix("/manifest")?)
    }
}

impl fmt::Display for BackupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A moment as `DateTime<Utc>` (the epoch for values out of range).
pub fn time_of(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default()
}

/// A moment for people: RFC 3339 to the millisecond.
pub fn show_time(ms: u64) -> String {
    time_of(ms).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A moment as people type it: RFC 3339 (`2026-12-01T10:00:00Z`,
/// `2026-12-01T10:00:00.250+08:00`) or `YYYY-MM-DD HH:MM[:SS]` in UTC; ms since the epoch.
pub fn parse_moment(text: &str) -> Option<u64> {
    let text = text.trim();
    let at = DateTime::parse_from_rfc3339(text).map(|t| t.to_utc()).ok().or_else(|| {
        ["%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(text, f).ok())
            .map(|n| n.and_utc())
    })?;
    u64::try_from(at.timestamp_millis()).ok()
}

/// One mailbox as the backup holds it: what a restore test compares against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestMailbox {
    pub account: String,
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    /// The mailbox's digest (XOR of its messages' digests), hex.
    pub digest: String,
}

/// What one backup holds; sealed as `backups/<id>/manifest` and written last, so a
/// backup without a manifest is an unfinished one and is never listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub id: BackupId,
    /// The site that took it.
    pub site: String,
    /// The applied log index the state stands at.
    pub applied_index: u64,
    /// When the state was copied, ms since the epoch.
    pub taken_at_ms: u64,
    /// Size and SHA-256 (hex) of the state object's plaintext (the store database).
    pub state_bytes: u64,
    pub state_sha256: String,
    /// Every body the state refers to, by hash (hex).
    pub bodies: Vec<String>,
    pub mailboxes: Vec<ManifestMailbox>,
    pub messages: u64,
    pub message_bytes: u64,
    /// Fingerprint of the key that sealed it.
    pub key_fingerprint: String,
}

impl Manifest {
    /// The bodies it refers to, as hashes (a name that is not a hash is skipped;
    /// `verify` reports it).
    pub fn body_hashes(&self) -> impl Iterator<Item = maildr_types::BlobHash> + '_ {
        self.bodies.iter().filter_map(|h| maildr_types::BlobHash::from_hex(h))
    }

    /// Describe the store `store` (a copy at `applied_index`).
    pub fn describe(
        store: &Store,
        site: &str,
        applied_index: u64,
        taken_at_ms: u64,
        state: &[u8],
        key_fingerprint: &str,
    ) -> Result<Manifest, maildr_store::StoreError> {
        use sha2::Digest as _;
        let accounts = store.accounts(None)?;
        let mut mailboxes = Vec::new();
        for mailbox in store.all_mailboxes()? {
            let account = accounts
                .iter()
                .find(|a| a.id == mailbox.account)
                .map_or_else(|| format!("account {}", mailbox.account.0), |a| a.address.to_string());
            mailboxes.push(ManifestMailbox {
                account,
                name: mailbox.name.to_string(),
                messages: mailbox.message_count,
                bytes: mailbox.size_bytes,
                digest: mailbox.digest.to_hex(),
            });
        }
        mailboxes.sort_by(|a, b| (&a.account, &a.name).cmp(&(&b.account, &b.name)));
        Ok(Manifest {
            id: BackupId::new(taken_at_ms, applied_index),
            site: site.into(),
            applied_index,
            taken_at_ms,
            state_bytes: state.len() as u64,
            state_sha256: hex::encode(sha2::Sha256::digest(state)),
            bodies: store.referenced_blobs()?.iter().map(|h| h.to_hex()).collect(),
            messages: mailboxes.iter().map(|m| m.messages).sum(),
            message_bytes: mailboxes.iter().map(|m| m.bytes).sum(),
            mailboxes,
            key_fingerprint: key_fingerprint.into(),
        })
    }
}

/// An archive segment: the log entries `first..=last`, applied between `first_ms`
/// and `last_ms`. Sealed, postcard-encoded `Vec<ArchivedEntry>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentName {
    pub first: u64,
    pub last: u64,
    pub first_ms: u64,
    pub last_ms: u64,
}

impl SegmentName {
    pub fn key(&self) -> String {
        format!("{ARCHIVE_PREFIX}{:020}-{:020}-{:013}-{:013}", self.first, self.last, self.first_ms, self.last_ms)
    }

    pub fn parse(key: &str) -> Option<SegmentName> {
        let mut parts = key.strip_prefix(ARCHIVE_PREFIX)?.split('-');
        let mut next = || parts.next()?.parse::<u64>().ok();
        let name = SegmentName { first: next()?, last: next()?, first_ms: next()?, last_ms: next()? };
        (name.first <= name.last).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_written() {
        let id = BackupId::new(1_796_598_000_123, 42);
        assert_eq!(id.as_str(), "b-20261206t230000z-42");
        assert_eq!(id.taken_at_ms(), Some(1_796_598_000_000));
        assert_eq!(BackupId::of_manifest_key(&id.manifest_key()), Some(id.clone()));
        assert_eq!(BackupId::parse("b-nonsense"), None);
        let segment = SegmentName { first: 5, last: 9, first_ms: 1, last_ms: 2 };
        assert_eq!(SegmentName::parse(&segment.key()), Some(segment));
        assert_eq!(SegmentName::parse("archive/9-5-1-2"), None);
        assert_eq!(parse_moment("2026-12-06T23:00:00.123Z"), Some(1_796_598_000_123));
        assert_eq!(parse_moment("2026-12-07T07:00:00+08:00"), Some(1_796_598_000_000));
        assert_eq!(parse_moment("2026-12-06 23:00"), Some(1_796_598_000_000));
        assert_eq!(parse_moment("yesterday"), None);
    }
}
