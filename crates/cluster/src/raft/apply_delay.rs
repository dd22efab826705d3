//! The lagged role: apply each log entry a configured delay after it arrived, and
//! stop applying altogether when an operator holds the site.
//!
//! Replication copies logical corruption (a mistaken bulk expunge, a compromised
//! admin account, a bug that writes nonsense) to every replica as faithfully as good
//! changes. A lagged site receives and fsyncs the log like any learner, so nothing
//! is lost on it, but its mail store applies an entry only `delay` after the entry
//! reached this site. Corruption noticed within that window has not reached the
//! lagged store yet; `maildr cluster hold-apply` freezes it there, and a forced
//! failover to the held site makes that state the cluster's again.
//!
//! Arrival times are recorded by the log store in the same transaction that makes
//! the entry durable (see `RaftDb::stamps_arrivals`), so a restart keeps them. An
//! entry without one (appended before this site became lagged) counts as arriving
//! when the state machine first sees it.
//!
//! The hold is a file in the data directory ([`APPLY_HOLD_FILE`]): an operator who
//! froze the site because of corruption wants it frozen after a restart too.
//!
//! This module never reorders entries: it only decides when the next ones may go.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::RaftStorageError;
use crate::record_file;

/// The hold of a lagged site, in its data directory while it holds.
pub const APPLY_HOLD_FILE: &str = "apply-hold.json";

/// Who stopped a lagged site from applying, and when (the admin API reports it).
pub use maildr_api_types::status::ApplyHold;

/// The delay and the hold of a lagged site's state machine.
pub struct ApplyDelay {
    delay: Duration,
    hold_path: PathBuf,
    hold: watch::Sender<Option<ApplyHold>>,
    /// Held while a batch is being applied, so a hold reports the index it froze at.
    applying: tokio::sync::Mutex<()>,
}

impl ApplyDelay {
    /// The delay of the lagged site whose data directory is `data_dir`, with the
    /// hold it had when it stopped, if any.
    pub fn open(data_dir: &Path, delay: Duration) -> Result<ApplyDelay, RaftStorageError> {
        assert!(!delay.is_zero(), "a lagged site has an apply delay (the config check refuses 0)");
        let hold_path = data_dir.join(APPLY_HOLD_FILE);
        let hold: Option<ApplyHold> =
            record_file::read(&hold_path).map_err(|source| RaftStorageError::Io { path: hold_path.clone(), source })?;
        if let Some(h) = &hold {
            tracing::warn!(by = %h.by, applied_index = ?h.applied_index, "this lagged site is held: it applies nothing");
        }
        Ok(ApplyDelay { delay, hold_path, hold: watch::channel(hold).0, applying: tokio::sync::Mutex::new(()) })
    }

    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The hold in effect, if any.
    pub fn current_hold(&self) -> Option<ApplyHold> {
        self.hold.borrow().clone()
    }

    /// When an entry that arrived at `arrived` may be applied.
    pub fn release_time(&self, arrived: SystemTime) -> SystemTime {
        arrived + self.delay
    }

    /// Wait until nothing holds the site and `release` has passed. The guard it
    /// returns keeps a hold from taking effect until the caller has applied.
    pub async fn wait_for(&self, release: SystemTime) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hold = self.hold.subscribe();
        loop {
            if hold.borrow_and_update().is_some() {
                // A closed channel cannot happen (we own the sender); wait anyway.
                let _ = hold.changed().await;
                continue;
            }
            match release.duration_since(SystemTime::now()) {
                Ok(left) if !left.is_zero() => {
                    tokio::select! {
                        _ = tokio::time::sleep(left) => {}
                        _ = hold.changed() => {}
                    }
                }
                _ => {
                    let guard = self.applying.lock().await;
                    if self.hold.borrow().is_none() {
                        return guard;
                    }
                }
            }
        }
    }

    /// Stop applying, durably. `applied_index` reads the applied index once no batch
    /// is in flight. Holding a held site keeps the first hold.
    pub async fn hold(
        &self,
        by: String,
        applied_index: impl FnOnce() -> Option<u64>,
    ) -> Result<ApplyHold, RaftStorageError> {
        if let Some(existing) = self.current_hold() {
            return Ok(existing);
        }
        let _applying = self.applying.lock().await;
        let hold = ApplyHold { by, at_ms: record_file::now_ms(), applied_index: applied_index() };
        let (path, record) = (self.hold_path.clone(), hold.clone());
        self.on_disk(move || record_file::write(&path, &record)).await?;
        self.hold.send_replace(Some(hold.clone()));
        tracing::warn!(by = %hold.by, applied_index = ?hold.applied_index, "apply held");
        Ok(hold)
    }

    /// Resume applying (entries whose delay has passed go at once). Returns the
    /// hold that was lifted, if there was one.
    pub async fn release(&self) -> Result<Option<ApplyHold>, RaftStorageError> {
        let Some(lifted) = self.current_hold() else { return Ok(None) };
        let path = self.hold_path.clone();
        self.on_disk(move || record_file::remove(&path)).await?;
        self.hold.send_replace(None);
        tracing::warn!(was_by = %lifted.by, "apply released");
        Ok(Some(lifted))
    }

    /// Run a change of the hold file on the blocking pool.
    async fn on_disk(
        &self,
        change: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> Result<(), RaftStorageError> {
        let io = |source| RaftStorageError::Io { path: self.hold_path.clone(), source };
        tokio::task::spawn_blocking(change).await.map_err(|e| io(std::io::Error::other(e)))?.map_err(io)
    }
}

/// A time from milliseconds since the Unix epoch.
pub(crate) fn from_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hold_survives_reopening_and_blocks_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let gate = ApplyDelay::open(dir.path(), Duration::from_millis(50)).unwrap();
        let past = SystemTime::now() - Duration::from_secs(1);
        drop(gate.wait_for(past).await);

        let hold = gate.hold("ops@example.test".into(), || Some(7)).await.unwrap();
        assert_eq!((hold.by.as_str(), hold.applied_index), ("ops@example.test", Some(7)));
        let again = gate.hold("someone else".into(), || Some(9)).await.unwrap();
        assert_eq!(again, hold, "the first hold stands");

        let reopened = ApplyDelay::open(dir.path(), Duration::from_millis(50)).unwrap();
        assert_eq!(reopened.current_hold(), Some(hold.clone()), "the hold is on disk");
        let blocked = tokio::time::timeout(Duration::from_millis(300), reopened.wait_for(past)).await;
        assert!(blocked.is_err(), "a held site applies nothing, however old the entry");

        assert_eq!(reopened.release().await.unwrap(), Some(hold));
        assert!(!dir.path().join(APPLY_HOLD_FILE).exists());
        assert_eq!(reopened.release().await.unwrap(), None);
        let released = tokio::time::timeout(Duration::from_millis(300), reopened.wait_for(past)).await;
        assert!(released.is_ok());
    }

    #[tokio::test]
    async fn an_entry_waits_for_its_delay() {
        let dir = tempfile::tempdir().unwrap();
        let gate = ApplyDelay::open(dir.path(), Duration::from_millis(400)).unwrap();
        let arrived = SystemTime::now();
        let started = std::time::Instant::now();
        drop(gate.wait_for(gate.release_time(arrived)).await);
        assert!(started.elapsed() >= Duration::from_millis(350), "{:?}", started.elapsed());
    }
}
