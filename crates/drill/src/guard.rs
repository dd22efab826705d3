//! One drill at a time, and a global stop.
//!
//! Two drills breaking the same deployment at once would each measure the other's
//! faults, and their rollbacks could undo each other. A drill holds
//! [`RUNNING_FILE`] in the drill data directory while it runs; a second one finds it
//! held by a live process and is not ready (it ends `aborted` before any fault).
//!
//! The global stop is one file, [`STOP_FILE`]: `maildr drill stop` writes it (who,
//! why, when), every running drill sees it within a second, aborts and runs its
//! rollback, and no drill injects a fault while it is there; `maildr drill release`
//! removes it. A file, not a signal, so that it reaches drills started by other
//! processes and users on the same data directory, and survives restarts: a stop
//! holds until someone releases it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Held by the running drill.
pub const RUNNING_FILE: &str = "running.json";
/// Present while drills are stopped.
pub const STOP_FILE: &str = "stopped.json";

/// Who holds the running-drill file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningDrill {
    pub drill_id: String,
    pub pid: u32,
    pub started_at_ms: u64,
}

/// The running-drill file of this process; removed when dropped.
#[derive(Debug)]
pub struct DrillLock {
    path: PathBuf,
}

/// Why a drill may not run: another one is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("another drill is running: {} (pid {}, started at {} ms)", .0.drill_id, .0.pid, .0.started_at_ms)]
    Busy(RunningDrill),
    #[error("{path}: {detail}")]
    Io { path: String, detail: String },
}

impl DrillLock {
    /// Take the running-drill file of `data_dir` for `drill_id`. A file left by a
    /// process that is gone is taken over.
    pub fn acquire(data_dir: &Path, drill_id: &str, now_ms: u64) -> Result<DrillLock, GuardError> {
        let path = data_dir.join(RUNNING_FILE);
        let io = |e: std::io::Error| GuardError::Io { path: path.display().to_string(), detail: e.to_string() };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let me = RunningDrill { drill_id: drill_id.into(), pid: std::process::id(), started_at_ms: now_ms };
        let text = serde_json::to_vec(&me).expect("a running-drill record serializes");
        for _ in 0..2 {
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    use std::io::Write as _;
                    file.write_all(&text).and_then(|()| file.sync_all()).map_err(io)?;
                    return Ok(DrillLock { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if let Some(holder) = running(data_dir) {
                        return Err(GuardError::Busy(holder));
                    }
                    // Left by a process that is gone (or unreadable): take it over.
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(e)),
                    }
                }
                Err(e) => return Err(io(e)),
            }
        }
        running(data_dir).map_or_else(
            || Err(GuardError::Io { path: path.display().to_string(), detail: "could not be taken".into() }),
            |holder| Err(GuardError::Busy(holder)),
        )
    }
}

impl Drop for DrillLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The drill running on `data_dir` now, if its process is alive.
pub fn running(data_dir: &Path) -> Option<RunningDrill> {
    let bytes = std::fs::read(data_dir.join(RUNNING_FILE)).ok()?;
    let holder: RunningDrill = serde_json::from_slice(&bytes).ok()?;
    Path::new(&format!("/proc/{}", holder.pid)).exists().then_some(holder)
}

/// A global stop: who ordered it, why, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOrder {
    pub by: String,
    pub reason: String,
    pub at_ms: u64,
}

impl StopOrder {
    /// How a refusal or an abort names it.
    pub fn describe(&self) -> String {
        format!(
            "drills are stopped by {} ({}) since {} ms; `maildr drill release` lifts the stop",
            self.by, self.reason, self.at_ms
        )
    }
}

/// Stop every drill on `data_dir` until released. Writing it again replaces the order.
pub fn stop_all(data_dir: &Path, order: &StopOrder) -> Result<(), GuardError> {
    let path = data_dir.join(STOP_FILE);
    let io = |e: std::io::Error| GuardError::Io { path: path.display().to_string(), detail: e.to_string() };
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let tmp = data_dir.join(format!("{STOP_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(order).expect("a stop order serializes")).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)
}

/// Lift the global stop; the order it lifted, if there was one.
pub fn release(data_dir: &Path) -> Result<Option<StopOrder>, GuardError> {
    let order = stopped(data_dir);
    let path = data_dir.join(STOP_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(order),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(GuardError::Io { path: path.display().to_string(), detail: e.to_string() }),
    }
}

/// The global stop in force on `data_dir`, if any. An unreadable stop file still
/// stops: it is read as an order of unknown origin.
pub fn stopped(data_dir: &Path) -> Option<StopOrder> {
    stopped_at(&data_dir.join(STOP_FILE))
}

/// [`stopped`] for the stop file at `path`.
pub fn stopped_at(path: &Path) -> Option<StopOrder> {
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| StopOrder {
        by: "unknown".into(),
        reason: format!("unreadable stop file {}: {e}", path.display()),
        at_ms: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_drill_at_a_time_and_a_stale_file_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lock = DrillLock::acquire(dir.path(), "d1", 1).unwrap();
        match DrillLock::acquire(dir.path(), "d2", 2) {
            Err(GuardError::Busy(holder)) => assert_eq!(holder.drill_id, "d1"),
            other => panic!("a second drill must be refused: {other:?}"),
        }
        drop(lock);
        assert!(running(dir.path()).is_none());
        // A record of a process that is gone.
        let stale = RunningDrill { drill_id: "old".into(), pid: u32::MAX - 1, started_at_ms: 0 };
        std::fs::write(dir.path().join(RUNNING_FILE), serde_json::to_vec(&stale).unwrap()).unwrap();
        let _lock = DrillLock::acquire(dir.path(), "d3", 3).unwrap();
        assert_eq!(running(dir.path()).unwrap().drill_id, "d3");
    }

    #[test]
    fn a_stop_holds_until_released() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(stopped(dir.path()), None);
        let order = StopOrder { by: "alice".into(), reason: "real incident".into(), at_ms: 5 };
        stop_all(dir.path(), &order).unwrap();
        assert_eq!(stopped(dir.path()), Some(order.clone()));
        assert_eq!(release(dir.path()).unwrap(), Some(order));
        assert_eq!(stopped(dir.path()), None);
        assert_eq!(release(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(STOP_FILE), b"garbage").unwrap();
        assert_eq!(stopped(dir.path()).unwrap().by, "unknown");
    }
}
