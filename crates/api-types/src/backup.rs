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
