//! What a site reports about itself and its peers: `GET /api/cluster/status`, the
//! status inside `GET /api/cluster/members`, and the mailbox and message records
//! `POST /api/cluster/verify` compares.
//!
//! The same values travel between sites on the replication channel (postcard), so
//! a field is never added, removed or reordered here without both ends in mind:
//! these types must never gain `skip_serializing_if` (postcard cannot skip) and
//! must never hold anything but plain data.

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
    /// When this site's cluster certificate (mutual TLS between sites) expires, in
    /// seconds since the Unix epoch; absent for a cluster on loopback without
    /// certificates, or a site alone.
    #[serde(default)]
    pub certificate_expires_at: Option<i64>,
}

impl SiteStatus {
    /// The primary this site leads as, or follows as a voter, now; `None` when it
    /// has none. (A learner's idea of the primary is not evidence: it never
    /// campaigns, so it keeps the last one it heard of.)
    pub fn primary_seen(&self) -> Option<u64> {
        if self.state == "Leader" {
            return Some(self.node_id);
        }
        self.leader.filter(|_| self.voters.contains(&self.node_id))
    }
}

/// A lagged site's delayed apply, as it reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApplyDelayStatus {
    /// Seconds between an entry's arrival and its apply (`cluster.apply_delay_secs`).
    pub delay_secs: u64,
    /// Entries in this site's log that it has not applied yet.
    pub pending_entries: u64,
    /// Set while an operator holds the site: it applies nothing until released.
    pub hold: Option<ApplyHold>,
}

/// Who stopped a lagged site from applying, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApplyHold {
    /// The operator who asked for it.
    pub by: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The last log index applied when the hold took effect: the state this site
    /// keeps until it is released.
    pub applied_index: Option<u64>,
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
    /// `ENTRY_SIZES_MAX` entries (a `maildr-cluster` constant), and entries beyond
    /// them (or appended before the site started) count at the mean size of the
    /// known ones.
    #[serde(default)]
    pub lag_bytes_estimated: bool,
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
    /// Entries this voter appended later than sent, because their message body had
    /// not reached it yet (a voter acknowledges an entry only with its body held).
    #[serde(default)]
    pub entries_held_for_bodies: u64,
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

#[cfg(test)]
mod tests {
    use super::*;

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
