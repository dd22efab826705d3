//! A running drill's progress for whoever supervises it: the phases the drill
//! entered, in order, each with the step that entered it.
//!
//! `maildr drill run --progress FILE` keeps the list in a small JSON file and
//! replaces the whole file at each entry (temporary file, rename), so a reader
//! sees the previous list or the next one, never a torn one. The drill service
//! watches the file of each drill it started, to tell people when a run enters
//! each phase: the drill runs in another process, and this file is the one
//! channel between the two. The type is shared by the writer and the reader.
//!
//! Never: stop or slow the drill because the file could not be written (the
//! drill reports the failure and goes on), or grow without bound.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::plan::Phase;

/// The name the drill service gives the file, in a run's directory.
pub const FILE_NAME: &str = "progress.json";
/// Format version of the file.
pub const VERSION: u32 = 1;
/// Phase entries kept; later ones are dropped (six phases, each entered a few
/// times at most by a plan that goes back and forth).
pub const ENTRIES_MAX: usize = 64;
/// Longest step name kept in an entry.
pub const STEP_BYTES_MAX: usize = 256;
/// Largest file read.
pub const FILE_BYTES_MAX: u64 = 64 * 1024;

/// The drill entered `phase` at `at_ms`, with the step `step`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseEntered {
    pub phase: Phase,
    pub step: String,
    pub at_ms: u64,
}

/// What the progress file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub version: u32,
    pub drill_id: String,
    /// Oldest first, at most [`ENTRIES_MAX`].
    pub phases: Vec<PhaseEntered>,
}

/// Why a progress file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ProgressError {
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
    #[error("{path}: not a drill progress file: {detail}")]
    Corrupt { path: String, detail: String },
}

impl Progress {
    pub fn new(drill_id: &str) -> Progress {
        Progress { version: VERSION, drill_id: drill_id.to_string(), phases: Vec::new() }
    }

    /// Record that the drill entered `phase`; `false` when the list is full and
    /// the entry was dropped.
    pub fn enter(&mut self, phase: Phase, step: &str, at_ms: u64) -> bool {
        if self.phases.len() >= ENTRIES_MAX {
            return false;
        }
        let mut cut = step.len().min(STEP_BYTES_MAX);
        while !step.is_char_boundary(cut) {
            cut -= 1;
        }
        self.phases.push(PhaseEntered { phase, step: step[..cut].to_string(), at_ms });
        true
    }

    /// Replace `path` with this progress: a temporary file beside it, then a
    /// rename. Not fsynced: the file is a live signal to a running reader, and
    /// after a crash the drill's report is what counts.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let bytes = serde_json::to_vec(self).expect("progress is plain data");
        let written = std::fs::write(&temp, bytes).and_then(|()| std::fs::rename(&temp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written
    }

    /// The progress in `path`; `None` while the drill has written none.
    pub fn read(path: &Path) -> Result<Option<Progress>, ProgressError> {
        let shown = path.display().to_string();
        let mut bytes = Vec::new();
        match std::fs::File::open(path) {
            Ok(file) => file
                .take(FILE_BYTES_MAX + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| ProgressError::Io { path: shown.clone(), detail: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ProgressError::Io { path: shown, detail: e.to_string() }),
        };
        if bytes.len() as u64 > FILE_BYTES_MAX {
            return Err(ProgressError::Corrupt { path: shown, detail: format!("larger than {FILE_BYTES_MAX} bytes") });
        }
        let progress: Progress = serde_json::from_slice(&bytes)
            .map_err(|e| ProgressError::Corrupt { path: shown.clone(), detail: e.to_string() })?;
        if progress.version != VERSION {
            let detail = format!("version {} (this maildr reads {VERSION})", progress.version);
            return Err(ProgressError::Corrupt { path: shown, detail });
        }
        if progress.phases.len() > ENTRIES_MAX {
            let detail = format!("{} phase entries (at most {ENTRIES_MAX})", progress.phases.len());
            return Err(ProgressError::Corrupt { path: shown, detail });
        }
        Ok(Some(progress))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_entered_survive_a_write_and_a_read_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(Progress::read(&path).unwrap().is_none());
        let mut p = Progress::new("d1");
        assert!(p.enter(Phase::Confirm, "checking the steady state", 10));
        p.write(&path).unwrap();
        assert!(p.enter(Phase::Decide, "Kill the primary", 20));
        p.write(&path).unwrap();
        let read = Progress::read(&path).unwrap().unwrap();
        assert_eq!(read, p);
        let phases: Vec<Phase> = read.phases.iter().map(|e| e.phase).collect();
        assert_eq!(phases, [Phase::Confirm, Phase::Decide]);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"phase\":\"decide\""), "{text}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }

    #[test]
    fn entries_stop_at_the_bound_and_a_long_step_is_cut_at_a_character_boundary() {
        let mut p = Progress::new("d1");
        for i in 0..ENTRIES_MAX {
            assert!(p.enter(Phase::ALL[i % Phase::ALL.len()], "s", i as u64));
        }
        assert!(!p.enter(Phase::Review, "one too many", 0));
        assert_eq!(p.phases.len(), ENTRIES_MAX);
        let mut q = Progress::new("d2");
        q.enter(Phase::Verify, &"北".repeat(STEP_BYTES_MAX), 0);
        assert!(q.phases[0].step.len() <= STEP_BYTES_MAX && q.phases[0].step.ends_with('北'));
    }

    #[test]
    fn a_foreign_or_oversized_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, b"{\"version\": 2, \"drill_id\": \"d\", \"phases\": []}").unwrap();
        assert!(matches!(Progress::read(&path), Err(ProgressError::Corrupt { .. })));
        std::fs::write(&path, vec![b' '; usize::try_from(FILE_BYTES_MAX).unwrap() + 1]).unwrap();
        let e = Progress::read(&path).unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }
}
