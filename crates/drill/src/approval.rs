//! Approvals: who agreed that a plan may run against a real deployment.
//!
//! An approval is bound to the SHA-256 of the plan's exact bytes, so any change
//! to the plan, down to a space, needs approving again; approvals of an earlier
//! version are kept but no longer count. One person counts once per plan
//! version however often they approve (names compare case-insensitively, with
//! white space folded). Every approval is first written to the audit log, then
//! to the store, so nothing counts that the audit log does not show.
//!
//! The store is one JSON file in the drill data directory, replaced atomically
//! under an exclusive lock. Names are what the operator typed: they are not
//! authenticated here, which is why the audit record also carries the OS user
//! who ran the command.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::archive::write_atomic;
use crate::audit::{self, is_sha256_hex, AuditError, AuditEvent, AuditLog, Lock};
pub use crate::report::Approval;

/// The store's file name inside the drill data directory.
pub const FILE_NAME: &str = "approvals.json";
const LOCK_FILE_NAME: &str = "approvals.lock";
/// Longest approver name, in characters.
pub const NAME_CHARS_MAX: usize = 100;
/// Longest plan name recorded with an approval, in characters.
pub const PLAN_NAME_CHARS_MAX: usize = 200;
/// Most approvals the store keeps, across every plan and version.
pub const APPROVALS_MAX: usize = 10_000;
/// Largest store file read.
pub const STORE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// An approver's name as it is recorded: trimmed, inner white space folded to
/// one space, printable, at most [`NAME_CHARS_MAX`] characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApproverName(String);

impl ApproverName {
    pub fn parse(raw: &str) -> Result<ApproverName, ApprovalError> {
        let bad = |why: &str| Err(ApprovalError::BadName { name: raw.to_string(), why: why.to_string() });
        if let Some(c) = raw.trim().chars().find(|&c| c.is_control() || is_invisible(c)) {
            return bad(&format!("it holds the unprintable character U+{:04X}", u32::from(c)));
        }
        let name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        if name.is_empty() {
            return bad("it is empty");
        }
        if name.chars().count() > NAME_CHARS_MAX {
            return bad(&format!("it is longer than {NAME_CHARS_MAX} characters"));
        }
        Ok(ApproverName(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// What identifies the person: the name without case.
    fn key(&self) -> String {
        person_key(&self.0)
    }
}

fn person_key(name: &str) -> String {
    name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// Characters that print as nothing, with which one name could pass for two.
fn is_invisible(c: char) -> bool {
    matches!(u32::from(c),
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB | 0xE0000..=0xE0FFF)
}

/// The outcome of [`approve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The approval that counts (the first one, when this person had already
    /// approved this version).
    pub approval: Approval,
    /// This person had already approved this exact plan; nothing was added to
    /// the store (the attempt is in the audit log all the same).
    pub repeated: bool,
    /// The audit record's sequence number.
    pub audit_seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    #[error("approver name {name:?} refused: {why}")]
    BadName { name: String, why: String },
    #[error("plan name {name:?} refused: {why}")]
    BadPlanName { name: String, why: String },
    #[error("{0:?} is not a plan SHA-256 (64 lowercase hex digits)")]
    BadSha(String),
    #[error(
        "plan {} needs {required} approval(s) and has {}{}; {} missing: record them with `maildr drill approve PLAN --by NAME`{}",
        short(plan_sha256),
        approvers.len(),
        if approvers.is_empty() { String::new() } else { format!(" ({})", approvers.join(", ")) },
        (*required as usize).saturating_sub(approvers.len()),
        if stale.is_empty() { String::new() } else { format!(". {} approved an earlier version of this plan; the plan has changed since, so that no longer counts", stale.join(", ")) }
    )]
    Missing { plan_sha256: String, required: u32, approvers: Vec<String>, stale: Vec<String> },
    #[error("approval store {path}: {detail}")]
    Store { path: PathBuf, detail: String },
    #[error("approval store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("approval store {path} holds {APPROVALS_MAX} approvals, its limit; archive it and start a new one")]
    Full { path: PathBuf },
    #[error(transparent)]
    Audit(#[from] AuditError),
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// One stored approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredApproval {
    pub plan_name: String,
    pub plan_sha256: String,
    pub by: String,
    pub at_ms: u64,
    /// The audit record that recorded it.
    pub audit_seq: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: u32,
    approvals: Vec<StoredApproval>,
}

const STORE_VERSION: u32 = 1;

/// Record that `by` approves the plan `plan_name` whose text hashes to
/// `plan_sha256`: an `approval` record in the audit log, then the store.
pub fn approve(
    store_dir: &Path,
    plan_name: &str,
    plan_sha256: &str,
    by: &str,
    audit: &AuditLog,
) -> Result<Approved, ApprovalError> {
    let name = ApproverName::parse(by)?;
    let plan_name = check_plan_name(plan_name)?;
    check_sha(plan_sha256)?;
    let path = store_dir.join(FILE_NAME);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ApprovalError::Io { path, source }
    };
    fs::create_dir_all(store_dir).map_err(io_err(store_dir))?;
    let lock_path = store_dir.join(LOCK_FILE_NAME);
    let lock_file = OpenOptions::new().create(true).append(true).open(&lock_path).map_err(io_err(&lock_path))?;
    let _lock = Lock::take(&lock_file, libc::LOCK_EX).map_err(io_err(&lock_path))?;

    let mut store = read_store(&path)?;
    let earlier = store
        .approvals
        .iter()
        .filter(|a| a.plan_sha256 == plan_sha256 && person_key(&a.by) == name.key())
        .min_by_key(|a| a.at_ms)
        .cloned();
    if earlier.is_none() && store.approvals.len() >= APPROVALS_MAX {
        return Err(ApprovalError::Full { path });
    }
    let record =
        audit.append(AuditEvent::new(name.as_str(), audit::action::APPROVAL).plan(plan_sha256).detail(json!({
            "plan": plan_name,
            "repeated": earlier.is_some(),
            "os_user": audit::os_user(),
        })))?;
    if let Some(first) = earlier {
        return Ok(Approved {
            approval: Approval { by: first.by, at_ms: first.at_ms, plan_sha256: first.plan_sha256 },
            repeated: true,
            audit_seq: record.seq,
        });
    }
    let stored = StoredApproval {
        plan_name,
        plan_sha256: plan_sha256.to_string(),
        by: name.as_str().to_string(),
        at_ms: record.at_ms,
        audit_seq: record.seq,
    };
    store.version = STORE_VERSION;
    store.approvals.push(stored.clone());
    let mut bytes = serde_json::to_vec_pretty(&store).expect("the store is plain data");
    bytes.push(b'\n');
    write_atomic(&path, &bytes).map_err(io_err(&path))?;
    Ok(Approved {
        approval: Approval { by: stored.by, at_ms: stored.at_ms, plan_sha256: stored.plan_sha256 },
        repeated: false,
        audit_seq: record.seq,
    })
}

/// The approvals of exactly this plan version, one per person (their first),
/// oldest first.
pub fn approvals_for(store_dir: &Path, plan_sha256: &str) -> Result<Vec<Approval>, ApprovalError> {
    check_sha(plan_sha256)?;
    let store = read_store(&store_dir.join(FILE_NAME))?;
    let mut matching: Vec<&StoredApproval> = store.approvals.iter().filter(|a| a.plan_sha256 == plan_sha256).collect();
    matching.sort_by_key(|a| a.at_ms);
    let mut seen = std::collections::HashSet::new();
    Ok(matching
        .into_iter()
        .filter(|a| seen.insert(person_key(&a.by)))
        .map(|a| Approval { by: a.by.clone(), at_ms: a.at_ms, plan_sha256: a.plan_sha256.clone() })
        .collect())
}

/// Whether this plan version has `required` distinct approvals: `Ok` with them,
/// or [`ApprovalError::Missing`] saying how many are missing, who approved, and
/// who approved only an earlier version of a plan of the same name.
pub fn check(
    store_dir: &Path,
    plan_name: &str,
    plan_sha256: &str,
    required: u32,
) -> Result<Vec<Approval>, ApprovalError> {
    let approvals = approvals_for(store_dir, plan_sha256)?;
    if approvals.len() >= required as usize {
        return Ok(approvals);
    }
    let have: std::collections::HashSet<String> = approvals.iter().map(|a| person_key(&a.by)).collect();
    let store = read_store(&store_dir.join(FILE_NAME))?;
    let mut stale: Vec<String> = Vec::new();
    for a in store.approvals.iter().filter(|a| a.plan_name == plan_name.trim() && a.plan_sha256 != plan_sha256) {
        if !have.contains(&person_key(&a.by)) && !stale.iter().any(|s| person_key(s) == person_key(&a.by)) {
            stale.push(a.by.clone());
        }
    }
    Err(ApprovalError::Missing {
        plan_sha256: plan_sha256.to_string(),
        required,
        approvers: approvals.into_iter().map(|a| a.by).collect(),
        stale,
    })
}

fn check_sha(sha: &str) -> Result<(), ApprovalError> {
    if is_sha256_hex(sha) {
        Ok(())
    } else {
        Err(ApprovalError::BadSha(sha.to_string()))
    }
}

fn check_plan_name(raw: &str) -> Result<String, ApprovalError> {
    let bad = |why: &str| Err(ApprovalError::BadPlanName { name: raw.to_string(), why: why.to_string() });
    let name = raw.trim();
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > PLAN_NAME_CHARS_MAX {
        return bad(&format!("it is longer than {PLAN_NAME_CHARS_MAX} characters"));
    }
    if name.chars().any(char::is_control) {
        return bad("it holds a control character");
    }
    Ok(name.to_string())
}

fn read_store(path: &Path) -> Result<StoreFile, ApprovalError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(StoreFile { version: STORE_VERSION, approvals: Vec::new() })
        }
        Err(source) => return Err(ApprovalError::Io { path: path.to_path_buf(), source }),
    };
    let mut bytes = Vec::new();
    file.take(STORE_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ApprovalError::Io { path: path.to_path_buf(), source })?;
    let store_err = |detail: String| ApprovalError::Store { path: path.to_path_buf(), detail };
    if bytes.len() as u64 > STORE_BYTES_MAX {
        return Err(store_err(format!("larger than {STORE_BYTES_MAX} bytes")));
    }
    let store: StoreFile =
        serde_json::from_slice(&bytes).map_err(|e| store_err(format!("not an approval store: {e}")))?;
    if store.version != STORE_VERSION {
        return Err(store_err(format!("version {} (this maildr reads version {STORE_VERSION})", store.version)));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_folded_and_must_be_printable() {
        assert_eq!(ApproverName::parse("  Li   Wei ").unwrap().as_str(), "Li Wei");
        assert_eq!(ApproverName::parse("Li Wei").unwrap().key(), ApproverName::parse("li  WEI").unwrap().key());
        assert_eq!(ApproverName::parse(&"é".repeat(NAME_CHARS_MAX)).unwrap().as_str().chars().count(), NAME_CHARS_MAX);
        assert_eq!(ApproverName::parse("bob\n").unwrap().as_str(), "bob");
        for bad in ["", "   ", "a\u{7}b", "a\nb", "a\tb", "al\u{200b}ice", "\u{feff}bob", "x\u{202e}y"] {
            assert!(ApproverName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ApproverName::parse(&"é".repeat(NAME_CHARS_MAX + 1)).is_err());
    }
}
