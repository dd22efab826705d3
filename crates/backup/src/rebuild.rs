//! Rebuilding the state of a moment in a scratch directory: the nearest backup at
//! or before it, plus the archived entries applied after that backup up to it.
//!
//! The archived commands are applied with the store's own `apply_batch`, the same
//! deterministic function every replica applies them with, so the rebuilt store is
//! the state the cluster had once it had applied the last entry replayed. Entries
//! are replayed only while their indexes follow each other: a gap in the archive
//! stops the replay there, and the result says so.

use std::path::Path;

use maildr_store::{Command, Store};
use sha2::Digest as _;

use crate::archive::{read_segment, segments_of};
use crate::catalog::manifests_of;
use crate::manifest::{show_time, BackupId, Manifest};
use crate::{BackupError, Backups, Target};

/// Commands applied to the scratch store per transaction.
const REPLAY_BATCH: usize = 1_000;

/// Which state to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// Exactly what one backup holds.
    Backup(BackupId),
    /// The state at this moment (ms since the epoch).
    At(u64),
}

/// A rebuilt state.
#[derive(Debug, Clone)]
pub struct Rebuilt {
    /// The backup it started from.
    pub backup: Manifest,
    /// The target it was read from.
    pub target: String,
    /// The log index it stands at, and when that entry was applied.
    pub applied_index: u64,
    pub stands_at_ms: u64,
    /// Archived entries replayed on top of the backup.
    pub replayed: u64,
    /// Why it stands before the moment asked for, when it does (a gap).
    pub short_of_target: Option<String>,
}

/// Rebuild `point` into `dir` (a `maildr.redb` there; no bodies) from the first
/// target that can serve it.
pub async fn rebuild(backups: &Backups, point: &Point, dir: &Path) -> Result<Rebuilt, BackupError> {
    let mut errors = Vec::new();
    for target in &backups.targets {
        match rebuild_from(backups, target, point, dir).await {
            Ok(rebuilt) => return Ok(rebuilt),
            Err(e) => errors.push(format!("{}: {e}", target.name())),
        }
    }
    Err(BackupError::Refused(format!("no target could rebuild it: {}", errors.join("; "))))
}

/// Rebuild `point` from one target.
pub async fn rebuild_from(
    backups: &Backups,
    target: &Target,
    point: &Point,
    dir: &Path,
) -> Result<Rebuilt, BackupError> {
    let manifests = manifests_of(backups, target).await?;
    let manifest = match point {
        Point::Backup(id) => manifests.into_iter().find(|m| &m.id == id),
        Point::At(at) => manifests.into_iter().rev().find(|m| m.taken_at_ms <= *at),
    }
    .ok_or_else(|| match point {
        Point::Backup(id) => BackupError::Refused(format!("no backup {id}")),
        Point::At(at) => BackupError::Refused(format!("no backup taken at or before {}", show_time(*at))),
    })?;
    restore_state(backups, target, &manifest, dir).await?;

    let mut rebuilt = Rebuilt {
        applied_index: manifest.applied_index,
        stands_at_ms: manifest.taken_at_ms,
        backup: manifest,
        target: target.name().into(),
        replayed: 0,
        short_of_target: None,
    };
    let Point::At(at) = *point else { return Ok(rebuilt) };

    let store = open_blocking(dir).await?;
    let mut pending: Vec<Command> = Vec::new();
    'segments: for segment in segments_of(target).await? {
        if segment.last <= rebuilt.applied_index {
            continue;
        }
        if segment.first_ms > at {
            break;
        }
        for entry in read_segment(backups, target, &segment).await? {
            if entry.index <= rebuilt.applied_index {
                continue;
            }
            if entry.applied_at_ms > at {
                break 'segments;
            }
            if entry.index != rebuilt.applied_index + 1 {
                rebuilt.short_of_target = Some(format!(
                    "the archive lacks log entries {}-{}; the state stands at entry {} ({})",
                    rebuilt.applied_index + 1,
                    entry.index - 1,
                    rebuilt.applied_index,
                    show_time(rebuilt.stands_at_ms)
                ));
                break 'segments;
            }
            if let Some(command) = entry.command {
                pending.push(command);
            }
            rebuilt.applied_index = entry.index;
            rebuilt.stands_at_ms = entry.applied_at_ms;
            rebuilt.replayed += 1;
            if pending.len() >= REPLAY_BATCH {
                apply_blocking(&store, std::mem::take(&mut pending)).await?;
            }
        }
    }
    apply_blocking(&store, pending).await?;
    Ok(rebuilt)
}

/// Download, open and check a backup's state into `dir/maildr.redb`.
pub async fn restore_state(
    backups: &Backups,
    target: &Target,
    manifest: &Manifest,
    dir: &Path,
) -> Result<(), BackupError> {
    let key = manifest.id.state_key();
    let sealed = target.get(&key).await?.ok_or_else(|| BackupError::Refused(format!("state object {key} is gone")))?;
    let state = backups.key.open(&key, &sealed)?;
    if hex::encode(sha2::Sha256::digest(&state)) != manifest.state_sha256 {
        return Err(BackupError::Refused(format!("state object {key} does not match its manifest")));
    }
    std::fs::create_dir_all(dir).map_err(|e| BackupError::Io(format!("{}: {e}", dir.display())))?;
    let db = dir.join(maildr_store::DATABASE_FILE);
    if db.exists() {
        return Err(BackupError::Refused(format!("{} exists; restore into an empty directory", db.display())));
    }
    std::fs::write(&db, &state).map_err(|e| BackupError::Io(format!("{}: {e}", db.display())))?;
    Ok(())
}

/// Open the store in `dir` off the async threads.
pub async fn open_blocking(dir: &Path) -> Result<std::sync::Arc<Store>, BackupError> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || Store::open(&dir).map(std::sync::Arc::new))
        .await
        .map_err(|e| BackupError::Io(e.to_string()))?
        .map_err(BackupError::from)
}

async fn apply_blocking(store: &std::sync::Arc<Store>, commands: Vec<Command>) -> Result<(), BackupError> {
    if commands.is_empty() {
        return Ok(());
    }
    let store = std::sync::Arc::clone(store);
    tokio::task::spawn_blocking(move || store.apply_batch(&commands).map(|_| ()))
        .await
        .map_err(|e| BackupError::Io(e.to_string()))?
        .map_err(BackupError::from)
}
