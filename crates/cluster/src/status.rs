//! What a site reports about itself and its peers: the answers behind
//! `maildr cluster status` and `maildr cluster verify`.
//!
//! These are plain data, serialisable both on the replication channel and as JSON
//! for operators and scripts. They are observations at one moment, never inputs to
//! a decision that must be safe (Raft makes those).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One site's view of itself and of the peers it talks to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SiteStatus {
    pub site: String,
    pub node_id: u64,
    /// `data`, `witness`, `standby` or `lagged`.
    pub role: String,
    /// Raft state: `Leader`, `Follower`, `Candidate` or `Learner`.
    pub state: String,
    pub term: u64,
    /// Node id of the primary this site knows of.
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Index up to which the log was compacted into a snapshot.
    pub snapshot_index: Option<u64>,
    /// Whether the cluster has been initialised (this site knows a membership).
    pub initialized: bool,
    /// The voting members and learners of the committed membership.
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    /// Peers as seen from this site.
    pub peers: Vec<PeerStatus>,
    /// Bodies referenced by applied entries that this site still lacks.
    pub missing_bodies: u64,
    pub metrics: WriteMetrics,
    /// The last time this site heard from a primary, and what the primary said then.
    /// On a standby this is what a forced failover may lose (`maildr cluster failover`).
    pub primary_contact: Option<PrimaryContact>,
    /// Set once this site was promoted by a forced failover: it then acts as a data
    /// site whatever its configured role says.
    pub forced_failover: Option<ForcedFailoverRecord>,
    /// On a lagged site: its apply delay, what waits for it, and any hold.
    #[serde(default)]
    pub apply_delay: Option<ApplyDelayStatus>,
}

/// A lagged site's delayed apply, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApplyDelayStatus {
    /// Seconds between an entry's arrival and its apply (`cluster.apply_delay_secs`).
    pub delay_secs: u64,
    /// Entries in this site's log that it has not applied yet.
    pub pending_entries: u64,
    /// Set while an operator holds the site: it applies nothing until released.
    pub hold: Option<crate::raft::apply_delay::ApplyHold>,
}

/// The last AppendEntries (entries or heartbeat) this site accepted from a primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PrimaryContact {
    /// Node id of the primary that sent it.
    pub primary: u64,
    pub term: u64,
    /// Milliseconds since then.
    pub heard_ms_ago: u64,
    /// The primary's commit index it announced then.
    pub primary_committed_index: Option<u64>,
    /// This site's last log index right after accepting it.
    pub last_log_index_then: Option<u64>,
}

impl PrimaryContact {
    /// Committed entries this site lacked at that contact (the primary may have
    /// committed more since, unseen from here).
    pub fn lag_entries_then(&self) -> u64 {
        self.primary_committed_index.unwrap_or(0).saturating_sub(self.last_log_index_then.unwrap_or(0))
    }
}

/// Who promoted a standby by a forced failover, when, and where its log stood. It is
/// written into the data directory (`force-failover.json` while the promotion is under
/// way, `promoted.json` for good) and shown in the site's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ForcedFailoverRecord {
    /// The operator who forced it (`--by`).
    pub by: String,
    /// When it was decided, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// This site's last log index and its term when it was promoted: entries after it
    /// that the lost primary may have committed are lost.
    pub last_log_index: u64,
    pub last_log_term: u64,
    /// The primary's commit index at the last contact, if there was one.
    pub primary_committed_index: Option<u64>,
    /// Whether the promoted site has committed the `forced_failover` event yet.
    #[serde(default)]
    pub event_recorded: bool,
}

impl ForcedFailoverRecord {
    /// The event detail recorded in the replicated log.
    pub fn event_detail(&self) -> String {
        format!("by {}; entries after index {} may be lost", self.by, self.last_log_index)
    }
}

/// A peer as seen from one site.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PeerStatus {
    pub node_id: u64,
    pub site: String,
    pub role: String,
    /// Milliseconds since this site last got an answer from the peer.
    pub last_heard_ms_ago: Option<u64>,
    /// On the primary: the last log index known to be on the peer.
    pub matched_index: Option<u64>,
    /// On the primary: entries the peer lacks.
    pub lag_entries: Option<u64>,
    /// On the primary: seconds since the peer last had every entry the primary had
    /// (0 when it has them now).
    pub lag_seconds: Option<f64>,
    /// On the primary: bytes of the log entries the peer lacks, each counted as the
    /// replication channel encodes it (postcard; framing and message bodies, which
    /// travel outside the log, not counted). `None` when not yet measured.
    pub lag_bytes: Option<u64>,
    /// Whether `lag_bytes` is an estimate: a site keeps the sizes of its newest
    /// [`ENTRY_SIZES_MAX`] entries, and entries beyond them (or appended before the
    /// site started) count at the mean size of the known ones.
    #[serde(default)]
    pub lag_bytes_estimated: bool,
}

/// Newest log entries whose encoded size the primary keeps, for `lag_bytes`.
pub const ENTRY_SIZES_MAX: u64 = 10_000;

/// The encoded size of each of the newest log entries of this site, recorded by the
/// log store as it appends them (the bytes it writes are what the replication
/// channel sends), so a peer's lag in bytes is a sum over a bounded window, with no
/// log read. Entries a truncation removed are forgotten with it; entries appended
/// before the site started are unknown (and estimated).
#[derive(Debug, Default)]
pub(crate) struct EntrySizes {
    /// Log index → encoded size in bytes; at most [`ENTRY_SIZES_MAX`] of them.
    sizes: std::collections::BTreeMap<u64, u64>,
}

/// A peer's lag in bytes, and whether part of it is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LagBytes {
    pub bytes: u64,
    pub estimated: bool,
}

impl EntrySizes {
    /// Entry `index` was appended with this encoded size (replacing any entry of
    /// that index, as a log does).
    pub fn appended(&mut self, index: u64, size_bytes: u64) {
        self.sizes.insert(index, size_bytes);
        while self.sizes.len() as u64 > ENTRY_SIZES_MAX {
            self.sizes.pop_first();
        }
    }

    /// The entries from `index` on were removed from the log.
    pub fn truncated_from(&mut self, index: u64) {
        self.sizes.split_off(&index);
    }

    /// Bytes of the entries after `matched` up to `last`: the sum of their sizes when
    /// all are known; else the known ones scaled up to all of them (an estimate);
    /// `None` when none is known.
    pub fn lag_bytes(&self, matched: u64, last: u64) -> Option<LagBytes> {
        let lag_entries = last.saturating_sub(matched);
        if lag_entries == 0 {
            return Some(LagBytes { bytes: 0, estimated: false });
        }
        let (mut bytes, mut counted) = (0u64, 0u64);
        for size in self.sizes.range(matched + 1..=last).map(|(_, size)| *size) {
            bytes = bytes.saturating_add(size);
            counted += 1;
        }
        match counted {
            0 => None,
            c if c == lag_entries => Some(LagBytes { bytes, estimated: false }),
            c => {
                let scaled = u128::from(bytes) * u128::from(lag_entries) / u128::from(c);
                Some(LagBytes { bytes: u64::try_from(scaled).unwrap_or(u64::MAX), estimated: true })
            }
        }
    }
}

/// Counters and latencies of the write path since the site started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct WriteMetrics {
    pub writes_committed: u64,
    pub writes_unavailable: u64,
    pub writes_forwarded: u64,
    /// Commit latency seen by clients of this site, in milliseconds.
    pub commit_latency_ms_p50: Option<f64>,
    pub commit_latency_ms_p99: Option<f64>,
    pub body_pushes: u64,
    pub body_push_bytes: u64,
    pub body_push_latency_ms_p50: Option<f64>,
    pub body_push_latency_ms_p99: Option<f64>,
    pub bodies_fetched: u64,
    /// On a witness: bodies it dropped because every data site holds them.
    #[serde(default)]
    pub bodies_dropped: u64,
}

/// One mailbox's identity and digest, as compared by `maildr cluster verify`: two
/// sites agree on a mailbox when every field is equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailboxDigest {
    pub mailbox: u64,
    pub account: u64,
    /// The address of the account the mailbox belongs to.
    pub account_address: String,
    pub name: String,
    pub uid_validity: u32,
    pub uid_next: u32,
    /// The digest covers each message's MODSEQ, not the mailbox's (an expunge raises it).
    pub highest_modseq: u64,
    pub message_count: u64,
    pub digest: String,
}

impl MailboxDigest {
    /// The digest of mailbox `m` of the account with address `account_address`.
    pub fn of(m: &maildr_store::Mailbox, account_address: &str) -> MailboxDigest {
        MailboxDigest {
            mailbox: m.id.0,
            account: m.account.0,
            account_address: account_address.to_string(),
            name: m.name.as_str().to_string(),
            uid_validity: m.uid_validity.0,
            uid_next: m.uid_next.0,
            highest_modseq: m.highest_modseq.0,
            message_count: m.message_count,
            digest: m.digest.to_hex(),
        }
    }

    /// Every mailbox of the store, ordered by mailbox id. Call it where no write can
    /// come between its reads (under the state machine's lock).
    pub fn all(store: &maildr_store::Store) -> Result<Vec<MailboxDigest>, maildr_store::StoreError> {
        let addresses: std::collections::BTreeMap<u64, String> =
            store.accounts(None)?.into_iter().map(|a| (a.id.0, a.address.as_str().to_string())).collect();
        Ok(store
            .all_mailboxes()?
            .iter()
            .map(|m| MailboxDigest::of(m, addresses.get(&m.account.0).map_or("", String::as_str)))
            .collect())
    }
}

/// One message, as listed when a mailbox's digests differ between sites. It holds
/// everything the message's digest leaf covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageSummary {
    pub uid: u32,
    pub modseq: u64,
    /// IMAP system flags as bits: 1 `\Seen`, 2 `\Answered`, 4 `\Flagged`,
    /// 8 `\Deleted`, 16 `\Draft`.
    pub flags: u8,
    pub keywords: Vec<String>,
    /// Seconds since the Unix epoch.
    pub internal_date: i64,
    pub size_bytes: u64,
    /// SHA-256 of the body, hex.
    pub body: String,
    /// Whether this site holds the body file.
    pub body_present: bool,
}

impl MessageSummary {
    pub fn of(m: &maildr_store::Message, body_present: bool) -> MessageSummary {
        MessageSummary {
            uid: m.uid.0,
            modseq: m.modseq.0,
            flags: m.flags.0,
            keywords: m.keywords.clone(),
            internal_date: m.internal_date.0,
            size_bytes: m.size_bytes,
            body: m.body.to_hex(),
            body_present,
        }
    }

    /// Whether two sites agree on this message (holding the body file is not state).
    pub fn same_state(&self, other: &MessageSummary) -> bool {
        self.differing_fields(other).is_empty()
    }

    /// The names of the fields in which two sites' records of a message differ
    /// (holding the body file is not state).
    pub fn differing_fields(&self, other: &MessageSummary) -> Vec<&'static str> {
        let differs = [
            ("uid", self.uid != other.uid),
            ("modseq", self.modseq != other.modseq),
            ("flags", self.flags != other.flags),
            ("keywords", self.keywords != other.keywords),
            ("internal_date", self.internal_date != other.internal_date),
            ("size_bytes", self.size_bytes != other.size_bytes),
            ("body", self.body != other.body),
        ];
        differs.into_iter().filter(|(_, differ)| *differ).map(|(name, _)| name).collect()
    }

    /// The message as `maildr cluster verify --messages` prints it.
    pub fn render(&self) -> String {
        let mut flags: Vec<&str> = maildr_types::SystemFlags(self.flags).names();
        flags.extend(self.keywords.iter().map(String::as_str));
        format!(
            "modseq {}, flags ({}), internal date {}, {} bytes, body {}{}",
            self.modseq,
            flags.join(" "),
            self.internal_date,
            self.size_bytes,
            self.body,
            if self.body_present { "" } else { " (body file missing here)" }
        )
    }
}

/// Latencies kept for percentiles: the most recent samples, bounded.
#[derive(Debug, Default)]
pub(crate) struct LatencyWindow {
    samples_ms: std::collections::VecDeque<f64>,
}

impl LatencyWindow {
    const CAPACITY: usize = 4096;

    pub fn record(&mut self, ms: f64) {
        if self.samples_ms.len() == Self::CAPACITY {
            self.samples_ms.pop_front();
        }
        self.samples_ms.push_back(ms);
    }

    /// The `q` quantile (0..=1) of the window, or `None` when it is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = self.samples_ms.iter().copied().collect();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
        Some(sorted[rank])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_bounded_window() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.quantile(0.5), None);
        for i in 1..=100 {
            w.record(i as f64);
        }
        assert_eq!(w.quantile(0.5), Some(51.0));
        assert_eq!(w.quantile(0.99), Some(99.0));
        for _ in 0..LatencyWindow::CAPACITY {
            w.record(7.0);
        }
        assert_eq!(w.quantile(0.99), Some(7.0), "old samples leave the window");
    }

    #[test]
    fn lag_in_bytes_is_the_sum_of_the_entries_a_peer_lacks() {
        let mut sizes = EntrySizes::default();
        assert_eq!(sizes.lag_bytes(2, 5), None, "nothing known yet");
        (1..=5).for_each(|i| sizes.appended(i, i * 100));
        assert_eq!(sizes.lag_bytes(2, 5), Some(LagBytes { bytes: 300 + 400 + 500, estimated: false }));
        assert_eq!(sizes.lag_bytes(5, 5), Some(LagBytes { bytes: 0, estimated: false }));
        // Entry 6 is not known: it counts at the mean of the known ones.
        assert_eq!(sizes.lag_bytes(4, 6), Some(LagBytes { bytes: 500 * 2, estimated: true }));
        // A new leader overwrote entries 4 and 5 with a single smaller one.
        sizes.truncated_from(4);
        sizes.appended(4, 7);
        assert_eq!(sizes.lag_bytes(2, 4), Some(LagBytes { bytes: 300 + 7, estimated: false }));
        assert_eq!(sizes.lag_bytes(4, 5), None, "entry 5 is gone and nothing after 4 is known");
    }

    #[test]
    fn only_the_newest_entry_sizes_are_kept_and_older_lag_is_estimated() {
        let mut sizes = EntrySizes::default();
        let last = ENTRY_SIZES_MAX + 500;
        (1..=last).for_each(|i| sizes.appended(i, 10));
        assert_eq!(sizes.sizes.len() as u64, ENTRY_SIZES_MAX, "the window stays bounded");
        assert_eq!(sizes.sizes.first_key_value().map(|(i, _)| *i), Some(501));
        assert_eq!(sizes.lag_bytes(500, last), Some(LagBytes { bytes: ENTRY_SIZES_MAX * 10, estimated: false }));
        assert_eq!(sizes.lag_bytes(0, last), Some(LagBytes { bytes: last * 10, estimated: true }));
    }

    #[test]
    fn two_records_of_a_message_name_the_fields_they_differ_in() {
        let a = MessageSummary {
            uid: 3,
            modseq: 7,
            flags: maildr_types::SystemFlags::SEEN,
            keywords: vec![],
            internal_date: 1_700_000_000,
            size_bytes: 120,
            body: "ab".repeat(32),
            body_present: true,
        };
        let b = MessageSummary {
            modseq: 9,
            flags: maildr_types::SystemFlags::SEEN | maildr_types::SystemFlags::FLAGGED,
            body_present: false,
            ..a.clone()
        };
        assert_eq!(a.differing_fields(&b), ["modseq", "flags"]);
        assert!(!a.same_state(&b));
        assert!(a.same_state(&MessageSummary { body_present: false, ..a.clone() }), "holding the file is not state");
        assert!(b.render().contains("flags (\\Seen \\Flagged)"), "{}", b.render());
        assert!(b.render().contains("body file missing here"));
    }
}
