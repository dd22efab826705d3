//! The service's state file, `DIR/service.json`: people (with the SHA-256 of
//! their tokens, never the tokens), schedules, approvals, runs, and how far the
//! calendar has looked. Written whole and atomically (temporary file, fsync,
//! rename, fsync of the directory) after every change, so a crash leaves the
//! old state or the new one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::{ApprovalRecord, Delivery, Role, RunRecord, Schedule};

/// The file under the data directory.
pub const FILE_NAME: &str = "service.json";
/// Format version of the file.
pub const VERSION: u32 = 1;
/// Runs kept in the state file; older ones are dropped (the audit log and the
/// report archive keep them).
pub const RUNS_KEPT_MAX: usize = 10_000;
/// Approvals kept (the oldest dropped first).
pub const APPROVALS_KEPT_MAX: usize = 10_000;

/// A person with a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    pub name: String,
    pub role: Role,
    /// SHA-256 (hex) of the token.
    pub token_sha256: String,
    pub created_at_ms: u64,
}

/// Everything the service keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub version: u32,
    pub people: Vec<Person>,
    pub schedules: Vec<Schedule>,
    pub approvals: Vec<ApprovalRecord>,
    pub runs: Vec<RunRecord>,
    /// Due times up to here have been judged (epoch ms).
    pub checked_until_ms: u64,
    /// Per schedule, the due time last announced ahead, and what that cost.
    pub announced: BTreeMap<String, u64>,
    pub announcements: BTreeMap<String, Vec<Delivery>>,
    /// Counters for ids.
    pub next_schedule: u64,
    pub next_run: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{path}: not a drill service state file: {detail}")]
    Corrupt { path: PathBuf, detail: String },
}

impl State {
    /// The state in `dir`, or `None` when the service never ran there.
    pub fn load(dir: &Path) -> Result<Option<State>, StateError> {
        let path = dir.join(FILE_NAME);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Io { path, detail: e.to_string() }),
        };
        let state: State = serde_json::from_slice(&bytes)
            .map_err(|e| StateError::Corrupt { path: path.clone(), detail: e.to_string() })?;
        if state.version != VERSION {
            return Err(StateError::Corrupt {
                path,
                detail: format!("version {} (this maildr reads {VERSION})", state.version),
            });
        }
        Ok(Some(state))
    }

    /// Write the state into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(FILE_NAME);
        let bytes = serde_json::to_vec_pretty(self).expect("the state is plain data");
        write_atomic(&path, &bytes).map_err(|e| StateError::Io { path, detail: e.to_string() })
    }

    pub fn new_schedule_id(&mut self) -> String {
        self.next_schedule += 1;
        format!("s{}", self.next_schedule)
    }

    pub fn new_run_id(&mut self) -> String {
        self.next_run += 1;
        format!("r{}", self.next_run)
    }

    pub fn run_mut(&mut self, id: &str) -> Option<&mut RunRecord> {
        self.runs.iter_mut().find(|r| r.id == id)
    }

    /// Add a run record, dropping the oldest beyond [`RUNS_KEPT_MAX`].
    pub fn push_run(&mut self, run: RunRecord) {
        self.runs.push(run);
        if self.runs.len() > RUNS_KEPT_MAX {
            let excess = self.runs.len() - RUNS_KEPT_MAX;
            self.runs.drain(..excess);
        }
    }

    pub fn push_approval(&mut self, approval: ApprovalRecord) {
        self.approvals.push(approval);
        if self.approvals.len() > APPROVALS_KEPT_MAX {
            let excess = self.approvals.len() - APPROVALS_KEPT_MAX;
            self.approvals.drain(..excess);
        }
    }
}

/// Replace `path` with `bytes`: temporary file beside it, fsync, rename, fsync
/// the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_survives_a_save_and_a_load_and_a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), None);
        let mut state = State { version: VERSION, ..State::default() };
        assert_eq!(state.new_schedule_id(), "s1");
        state.checked_until_ms = 42;
        state.save(dir.path()).unwrap();
        assert_eq!(State::load(dir.path()).unwrap(), Some(state));
        std::fs::write(dir.path().join(FILE_NAME), b"{\"version\": 1, \"surprise\": true}").unwrap();
        assert!(matches!(State::load(dir.path()), Err(StateError::Corrupt { .. })));
    }
}
