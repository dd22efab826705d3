//! Snapshots of the state machine: building one (a header plus a byte copy of the
//! mail store's database), handing out the current one, and installing a received
//! one crash-safely (kept, staged, decided, swapped; see the parent module).
//!
//! This module must never replace the live database before the install is decided
//! durably, nor keep a received snapshot that does not match its metadata.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use maildr_store::{Store, DATABASE_FILE};
use openraft::storage::Snapshot;
use openraft::{ErrorSubject, ErrorVerb, RaftSnapshotBuilder, SnapshotMeta, StorageError};

use super::{
    missing_bodies_of, staged_store_file, AppliedRecord, AppliedState, Shared, SiteSnapshotMeta, SnapshotBuilder,
    KEY_INSTALLING, SNAPSHOT_FILE, SNAPSHOT_RECEIVING_PREFIX, SNAPSHOT_TEMP_PREFIX,
};
use crate::raft::snapshot_file::{copy_exact, SnapshotHeader};
use crate::raft::{blocking, sync_dir, NodeId, RaftStorageError, TypeConfig};

impl Shared {
    pub(super) fn build_snapshot(&self) -> Result<(SiteSnapshotMeta, File), RaftStorageError> {
        let temp_path = self.temp_path(SNAPSHOT_TEMP_PREFIX);
        let leftovers = RemoveOnFailure(vec![temp_path.clone()]);
        let (meta, out) = {
            // The read lock keeps applies and installs out while the file is copied,
            // so the copy is the state right after a committed transaction.
            let inner = self.read()?;
            inner.store.as_ref().ok_or_else(|| self.stopped())?;
            let meta = SnapshotMeta {
                last_log_id: inner.applied.last_applied,
                last_membership: inner.applied.last_membership.clone(),
                snapshot_id: snapshot_id(&inner.applied, inner.commands_applied),
            };
            let db_path = self.data_dir.join(DATABASE_FILE);
            let mut source = File::open(&db_path).map_err(Self::io(&db_path))?;
            let store_size_bytes = source.metadata().map_err(Self::io(&db_path))?.len();
            let header = SnapshotHeader { meta: meta.clone(), store_size_bytes };
            let mut out = File::create(&temp_path).map_err(Self::io(&temp_path))?;
            out.write_all(&header.prefix(&temp_path)?).map_err(Self::io(&temp_path))?;
            copy_exact(&mut source, &db_path, &mut out, &temp_path, store_size_bytes)?;
            (meta, out)
        };
        out.sync_all().map_err(Self::io(&temp_path))?;
        drop(out);
        leftovers.disarm();

        let mut current = self.snapshot_lock()?;
        let snapshot_path = self.data_dir.join(SNAPSHOT_FILE);
        if let Some(newer) = current.as_ref().filter(|c| c.last_log_id > meta.last_log_id) {
            // An install overtook this build; the installed snapshot is the better answer.
            let newer = newer.clone();
            std::fs::remove_file(&temp_path).map_err(Self::io(&temp_path))?;
            let file = File::open(&snapshot_path).map_err(Self::io(&snapshot_path))?;
            return Ok((newer, file));
        }
        std::fs::rename(&temp_path, &snapshot_path).map_err(Self::io(&temp_path))?;
        sync_dir(&self.data_dir)?;
        *current = Some(meta.clone());
        let file = File::open(&snapshot_path).map_err(Self::io(&snapshot_path))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, "built a snapshot");
        Ok((meta, file))
    }

    pub(super) fn current_snapshot(&self) -> Result<Option<(SiteSnapshotMeta, File)>, RaftStorageError> {
        let current = self.snapshot_lock()?;
        let Some(meta) = current.as_ref() else { return Ok(None) };
        let snapshot_path = self.data_dir.join(SNAPSHOT_FILE);
        let file = File::open(&snapshot_path).map_err(Self::io(&snapshot_path))?;
        Ok(Some((meta.clone(), file)))
    }

    pub(super) fn begin_receiving(&self) -> Result<File, RaftStorageError> {
        let path = self.temp_path(SNAPSHOT_RECEIVING_PREFIX);
        OpenOptions::new().read(true).write(true).create_new(true).open(&path).map_err(Self::io(&path))
    }

    pub(super) fn install_snapshot(&self, meta: SiteSnapshotMeta, source: File) -> Result<(), RaftStorageError> {
        let mut current = self.snapshot_lock()?;
        let (temp_path, staged_path) = self.keep_and_stage(&meta, source)?;

        // 3. The received snapshot becomes the current one.
        let snapshot_path = self.data_dir.join(SNAPSHOT_FILE);
        std::fs::rename(&temp_path, &snapshot_path).map_err(Self::io(&temp_path))?;
        sync_dir(&self.data_dir)?;
        *current = Some(meta.clone());

        // 4. Decide the install durably, then swap the database under the write lock.
        let state = AppliedState { last_applied: meta.last_log_id, last_membership: meta.last_membership.clone() };
        self.db.sm_write(KEY_INSTALLING, &state)?;
        let commands_applied = self.swap_in(&staged_path, state)?;

        remove_files_starting_with(&self.data_dir, &[SNAPSHOT_RECEIVING_PREFIX])?;
        tracing::info!(snapshot_id = %meta.snapshot_id, commands_applied, "installed a snapshot");
        Ok(())
    }

    /// Steps 1 and 2 of an install: check the received bytes against `meta` and keep
    /// them as a file of our own, then stage the database copy beside the live
    /// database. Returns the kept snapshot's and the staged database's paths.
    fn keep_and_stage(
        &self,
        meta: &SiteSnapshotMeta,
        mut source: File,
    ) -> Result<(PathBuf, PathBuf), RaftStorageError> {
        let source_path = PathBuf::from(format!("<received snapshot {}>", meta.snapshot_id));
        source.seek(SeekFrom::Start(0)).map_err(Self::io(&source_path))?;
        let (header, prefix_size_bytes) = SnapshotHeader::read(&mut source, &source_path)?;
        if header.meta != *meta {
            return Err(RaftStorageError::SnapshotMismatch {
                snapshot_id: meta.snapshot_id.clone(),
                detail: format!("the file says {}, openraft says {}", header.meta, meta),
            });
        }
        let temp_path = self.temp_path(SNAPSHOT_TEMP_PREFIX);
        let staged_path = self.data_dir.join(staged_store_file());
        let leftovers = RemoveOnFailure(vec![temp_path.clone(), staged_path.clone()]);
        let mut kept = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .map_err(Self::io(&temp_path))?;
        source.seek(SeekFrom::Start(0)).map_err(Self::io(&source_path))?;
        let total_size_bytes = prefix_size_bytes + header.store_size_bytes;
        copy_exact(&mut source, &source_path, &mut kept, &temp_path, total_size_bytes)?;
        if source.read(&mut [0u8; 1]).map_err(Self::io(&source_path))? != 0 {
            return Err(RaftStorageError::Corrupt {
                path: source_path,
                what: "snapshot".into(),
                detail: format!("longer than the {total_size_bytes} bytes its header announces"),
            });
        }
        kept.sync_all().map_err(Self::io(&temp_path))?;

        let mut staged = File::create(&staged_path).map_err(Self::io(&staged_path))?;
        kept.seek(SeekFrom::Start(prefix_size_bytes)).map_err(Self::io(&temp_path))?;
        copy_exact(&mut kept, &temp_path, &mut staged, &staged_path, header.store_size_bytes)?;
        staged.sync_all().map_err(Self::io(&staged_path))?;
        drop(staged);
        drop(kept);
        leftovers.disarm();
        Ok((temp_path, staged_path))
    }

    /// Step 4 of an install, once it is decided: close the store, rename the staged
    /// database over the live one, reopen, settle the applied state and tell
    /// watchers. Returns the store's `commands_applied`.
    fn swap_in(&self, staged_path: &Path, state: AppliedState) -> Result<u64, RaftStorageError> {
        let mut inner = self.write()?;
        // Closing the old store releases redb's lock on the live file.
        inner.store = None;
        let live_path = self.data_dir.join(DATABASE_FILE);
        std::fs::rename(staged_path, &live_path).map_err(Self::io(staged_path))?;
        sync_dir(&self.data_dir)?;
        let store = Arc::new(Store::open(&self.data_dir)?);
        let commands_applied = store.commands_applied()?;
        self.db.sm_settle_install(&AppliedRecord::settled(state.clone(), commands_applied))?;
        inner.store = Some(Arc::clone(&store));
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&store);
        let missing =
            if self.tracks_bodies.load(Ordering::SeqCst) { missing_bodies_of(&store)? } else { Default::default() };
        let missing_count = missing.len();
        *self.missing_bodies.lock().unwrap_or_else(|p| p.into_inner()) = missing;
        self.missing_bodies_added.notify_one();
        // Every mailbox may have changed: watchers resynchronise each.
        for mailbox in store.all_mailboxes()? {
            let _ = self.changes.send(mailbox.id);
        }
        tracing::info!(missing_bodies = missing_count, "snapshot state in place; fetching the bodies it refers to");
        inner.applied = state;
        inner.commands_applied = commands_applied;
        Ok(commands_applied)
    }
}

/// Removes the files of a snapshot operation that failed half way, unless disarmed.
/// (Whatever a crash leaves instead is removed on open.)
struct RemoveOnFailure(Vec<PathBuf>);

impl RemoveOnFailure {
    fn disarm(mut self) {
        self.0.clear();
    }
}

impl Drop for RemoveOnFailure {
    fn drop(&mut self) {
        for path in &self.0 {
            // Best effort: the file may not exist yet, and open removes it anyway.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A snapshot id unique across builds: the state it holds, and the build time.
fn snapshot_id(applied: &AppliedState, commands_applied: u64) -> String {
    // Reading the clock is fine here: the id names a snapshot stream, it is not state.
    let micros =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros()).unwrap_or_default();
    match &applied.last_applied {
        Some(log_id) => format!("{log_id}-c{commands_applied}-{micros}"),
        None => format!("none-c{commands_applied}-{micros}"),
    }
}

pub(super) fn read_snapshot_meta(path: &Path) -> Result<SiteSnapshotMeta, RaftStorageError> {
    let mut file = File::open(path).map_err(|source| RaftStorageError::Io { path: path.into(), source })?;
    let (header, prefix_size_bytes) = SnapshotHeader::read(&mut file, path)?;
    let size_bytes = file.metadata().map_err(|source| RaftStorageError::Io { path: path.into(), source })?.len();
    if size_bytes != prefix_size_bytes + header.store_size_bytes {
        return Err(RaftStorageError::Corrupt {
            path: path.into(),
            what: "snapshot".into(),
            detail: format!(
                "{size_bytes} bytes, but its header announces {}",
                prefix_size_bytes + header.store_size_bytes
            ),
        });
    }
    Ok(header.meta)
}

pub(super) fn remove_files_starting_with(dir: &Path, prefixes: &[&str]) -> Result<(), RaftStorageError> {
    let io = |source| RaftStorageError::Io { path: dir.into(), source };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if prefixes.iter().any(|p| name.starts_with(p)) {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                // Gone since the listing (another clean-up got there first): the
                // goal is reached, and Raft must not stop over it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                result => result.map_err(|source| RaftStorageError::Io { path, source })?,
            }
        }
    }
    Ok(())
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let shared = Arc::clone(&self.shared);
        let (meta, file) =
            blocking(ErrorSubject::Snapshot(None), ErrorVerb::Write, move || shared.build_snapshot()).await?;
        Ok(Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) })
    }
}

#[cfg(test)]
mod tests {
    use super::remove_files_starting_with;

    /// Two clean-ups of one directory at once: each lists files the other removes
    /// before it gets to them. Neither may fail (a failure here stopped Raft).
    #[test]
    fn concurrent_clean_ups_of_the_same_files_both_succeed() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..5 {
            for n in 0..2_000 {
                std::fs::write(dir.path().join(format!("snapshot-tmp-{round}-{n}")), b"x").unwrap();
            }
            std::fs::write(dir.path().join("keep-me"), b"x").unwrap();
            let path = dir.path().to_path_buf();
            let other = std::thread::spawn(move || remove_files_starting_with(&path, &["snapshot-tmp-"]).is_ok());
            let mine = remove_files_starting_with(dir.path(), &["snapshot-tmp-"]);
            assert!(mine.is_ok(), "round {round}: {mine:?}");
            assert!(other.join().unwrap(), "round {round}: the other clean-up failed");
            let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(left, ["keep-me"], "round {round}");
        }
    }
}
