//! Backups as the admin API and `maildr backup … --json` report them (keep these
//! forms stable: scripts read them).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How one target fared in one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TargetOutcome {
    pub target: String,
    /// `dir` or `s3`.
    pub kind: String,
    /// Whether the backup is complete on this target (its manifest written).
    pub ok: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bodies this backup uploaded (the others were there already).
    pub bodies_uploaded: u64,
    /// Bytes written to the target, sealed.
    pub bytes_uploaded: u64,
}

/// What `backup run` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupReport {
    pub id: String,
    pub site: String,
    pub applied_index: u64,
    /// RFC 3339.
    pub taken_at: String,
    pub taken_at_ms: u64,
    pub messages: u64,
    pub message_bytes: u64,
    pub mailboxes: u64,
    pub bodies: u64,
    pub duration_ms: u64,
    /// Complete on every target.
    pub ok: bool,
    pub targets: Vec<TargetOutcome>,
}

/// One backup as a target lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupSummary {
    pub id: String,
    pub site: String,
    pub applied_index: u64,
    pub taken_at: String,
    pub taken_at_ms: u64,
    pub messages: u64,
    pub message_bytes: u64,
    pub mailboxes: u64,
    /// The targets holding it complete.
    pub targets: Vec<String>,
}

/// The archived log on one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ArchiveSummary {
    pub target: String,
    pub segments: u64,
    /// First and last archived log index (0 when empty).
    pub first_index: u64,
    pub last_index: u64,
    /// Apply time of the last archived entry (RFC 3339), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
    /// The same in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at_ms: Option<u64>,
    /// Index ranges missing between segments (the archiver fell too far behind).
    pub gaps: Vec<String>,
}

/// `backup list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupList {
    pub backups: Vec<BackupSummary>,
    pub archives: Vec<ArchiveSummary>,
    /// Targets that could not be read, with the reason.
    pub unreachable: Vec<String>,
}

/// One problem `backup verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyProblem {
    pub target: String,
    /// The object at fault (or the mailbox, for a restore test).
    pub object: String,
    pub problem: String,
}

/// `backup verify`: exit 0 when `ok`, 1 when problems were found, 2 when it could
/// not check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupVerifyReport {
    pub backup: String,
    pub targets: Vec<String>,
    pub objects_checked: u64,
    pub bytes_checked: u64,
    /// Whether the backup was restored into a scratch site and compared.
    pub restore_tested: bool,
    /// Messages read back over IMAP from the scratch site.
    pub messages_read_over_imap: u64,
    pub problems: Vec<VerifyProblem>,
    pub ok: bool,
}

/// One mailbox a restore wrote (or, for a site restore, rebuilt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MailboxRestored {
    pub from: String,
    pub account: String,
    pub into: String,
    pub messages: u64,
    pub bytes: u64,
}

/// What a restore did (`maildr restore … --json`, `POST /api/restore`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreReport {
    /// The backup it started from, and the target it was read from.
    pub backup: String,
    pub target: String,
    /// The log index and the moment (RFC 3339) the restored state stands at.
    pub applied_index: u64,
    pub stands_at: String,
    pub stands_at_ms: u64,
    /// Archived log entries replayed on top of the backup.
    pub archived_entries_replayed: u64,
    pub messages: u64,
    pub bytes: u64,
    pub mailboxes: Vec<MailboxRestored>,
    /// Why it stands before the moment asked for, when it does (a gap in the archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_of_target: Option<String>,
    /// A whole-site restore with a cluster config: the new cluster it seeds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_cluster: Option<NewClusterSeed>,
}

/// The new cluster a whole-site restore seeds (`maildr restore site` with a config
/// that names `[[cluster.members]]`): the restored site leads it once started, and
/// the other sites, started with no data (`serve --new-cluster`), copy its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClusterSeed {
    /// The restored site's node id.
    pub node_id: u64,
    /// The node ids of the new cluster's voters.
    pub voters: Vec<u64>,
    /// The log index the new cluster's log starts after.
    pub applied_index: u64,
    /// Size of the snapshot the other sites will install, in bytes.
    pub snapshot_bytes: u64,
}

/// `POST /api/restore`: messages of an account at a moment, written back into new
/// mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    pub account: String,
    /// The moment to restore, RFC 3339 (e.g. `2026-12-01T10:00:00Z`); or `at_ms`.
    #[serde(default)]
    pub at: Option<String>,
    /// The moment to restore, in milliseconds since the Unix epoch; or `at`.
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// Only this mailbox (default: every mailbox of the account).
    #[serde(default)]
    pub mailbox: Option<String>,
    /// Write into this new mailbox (default `Restored <time>`).
    #[serde(default)]
    pub into_mailbox: Option<String>,
    /// Write into `Restored <time>` of this other account.
    #[serde(default)]
    pub into_account: Option<String>,
}

/// `POST /api/backups/verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBackupRequest {
    /// The backup to verify (default: the newest).
    #[serde(default)]
    pub backup: Option<String>,
    /// Also restore it into a scratch site and read a sample over IMAP.
    #[serde(default)]
    pub restore_test: bool,
}
