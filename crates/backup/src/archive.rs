//! The archived log: every committed entry, uploaded by the primary every
//! `backup.archive_every_secs` with the bodies it brings, so a restore can reach any
//! moment after the oldest kept backup (as PostgreSQL's archived WAL does).
//!
//! Each data site spools the entries it applies (`archive_spool` in the cluster
//! crate). The primary reads its spool after the last index a target holds, uploads
//! the bodies those entries bring that the target lacks, then the segment
//! (`archive/<first>-<last>-<first ms>-<last ms>`), and forgets spooled entries every
//! target holds. A follower does not upload; it reads how far the targets reach and
//! forgets what they hold. After a failover the new primary continues from what the
//! targets hold: its spool has the entries the old primary had not uploaded.
//!
//! A segment is uploaded only after its bodies, so every body an archived entry
//! refers to is on that target. A spool that no longer reaches back to a target's
//! last index (the archiver was away longer than the spool holds) leaves a gap,
//! reported by `backup list` and by restores that would need it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use maildr_cluster::raft::state_machine::ArchivedEntry;
use maildr_cluster::Cluster;
use maildr_store::Command;
use maildr_types::BlobHash;

use crate::manifest::{SegmentName, ARCHIVE_PREFIX, BODIES_PREFIX};
use crate::take::{upload_bodies, BodySource};
use crate::{BackupError, Backups, Target};

/// Most entries in one archive segment.
pub const SEGMENT_ENTRIES_MAX: usize = 5_000;
/// Most segments one round uploads to one target (the rest wait for the next round).
pub const SEGMENTS_PER_ROUND_MAX: usize = 20;
/// A follower reads the targets' reach every this many rounds.
const FOLLOWER_REFRESH_ROUNDS: u64 = 6;

/// What the archiver knows of one target.
#[derive(Debug, Clone, Default)]
pub struct TargetArchive {
    /// The last log index the target holds; `None` until read from it.
    pub archived_through: Option<u64>,
    /// Apply time of that entry.
    pub archived_at_ms: Option<u64>,
    /// The last error, if the last round failed.
    pub error: Option<String>,
    /// Entries the spool no longer held when they were due (a gap), in total.
    pub gap_entries: u64,
    bodies: Option<BTreeSet<String>>,
}

/// The archiver of one site: run [`Archiver::round`] every `archive_every_secs`.
pub struct Archiver {
    backups: Backups,
    cluster: Cluster,
    targets: Mutex<BTreeMap<String, TargetArchive>>,
    rounds: std::sync::atomic::AtomicU64,
}

impl Archiver {
    pub fn new(backups: Backups, cluster: Cluster) -> Arc<Archiver> {
        Arc::new(Archiver { backups, cluster, targets: Mutex::new(BTreeMap::new()), rounds: Default::default() })
    }

    /// What the archiver knows of each target.
    pub fn status(&self) -> BTreeMap<String, TargetArchive> {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn state_of(&self, target: &str) -> TargetArchive {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).get(target).cloned().unwrap_or_default()
    }

    fn set_state(&self, target: &str, state: TargetArchive) {
        self.targets.lock().unwrap_or_else(|p| p.into_inner()).insert(target.into(), state);
    }

    /// One round: on the primary, upload what is new; everywhere, forget what every
    /// target holds.
    pub async fn round(&self) {
        let Some(replicated) = self.cluster.replication() else { return };
        let round = self.rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let primary = replicated.is_primary();
        for target in &self.backups.targets {
            let mut state = self.state_of(target.name());
            let refresh =
                state.archived_through.is_none() || (!primary && round.is_multiple_of(FOLLOWER_REFRESH_ROUNDS));
            let result = async {
                if refresh {
                    let (through, at) = reach_of(target).await?;
                    state.archived_through = Some(through);
                    state.archived_at_ms = at.or(state.archived_at_ms);
                }
                if primary {
                    self.upload_new(target, &mut state).await?;
                }
                Ok::<_, BackupError>(())
            }
            .await;
            match result {
                Ok(()) => state.error = None,
                Err(e) => {
                    if state.error.is_none() {
                        tracing::warn!(target = %target.name(), error = %e, "archiving the log failed; retrying");
                    }
                    state.archived_through = state.archived_through.filter(|_| !refresh);
                    state.error = Some(e.to_string());
                }
            }
            self.set_state(target.name(), state);
        }
        let reach = self.status().values().map(|s| s.archived_through).collect::<Option<Vec<u64>>>();
        if let Some(through) = reach.and_then(|r| r.into_iter().min()).filter(|t| *t > 0) {
            let state_machine = replicated.state_machine().clone();
            let trimmed = tokio::task::spawn_blocking(move || state_machine.trim_archive_spool(through)).await;
            if let Ok(Err(e)) = trimmed {
                tracing::warn!(error = %e, "trimming the archive spool failed");
            }
        }
    }

    async fn upload_new(&self, target: &Target, state: &mut TargetArchive) -> Result<(), BackupError> {
        let replicated = self.cluster.replication().ok_or(BackupError::NotReplicated)?.clone();
        for _ in 0..SEGMENTS_PER_ROUND_MAX {
            let after = state.archived_through.unwrap_or(0);
            let state_machine = replicated.state_machine().clone();
            let entries: Vec<ArchivedEntry> =
                tokio::task::spawn_blocking(move || state_machine.archived_after(after, SEGMENT_ENTRIES_MAX))
                    .await
                    .map_err(|e| BackupError::Io(e.to_string()))?
                    .map_err(|e| BackupError::Io(format!("reading the archive spool: {e}")))?;
            let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(()) };
            if first.index > after + 1 && after > 0 {
                state.gap_entries += first.index - after - 1;
                tracing::error!(
                    target = %target.name(), from = after + 1, to = first.index - 1,
                    "archive gap: these log entries left the spool before they were archived; restores cannot reach \
                     moments between them and the next backup"
                );
            }
            let hashes: Vec<BlobHash> =
                entries.iter().filter_map(|e| e.command.as_ref().and_then(Command::new_body)).collect();
            if state.bodies.is_none() {
                state.bodies = Some(target.list(BODIES_PREFIX).await?.into_iter().collect());
            }
            let held = state.bodies.get_or_insert_with(BTreeSet::new);
            let mut missing: Vec<BlobHash> =
                hashes.into_iter().filter(|h| !held.contains(&self.backups.key.body_object(h))).collect();
            missing.sort();
            missing.dedup();
            if !missing.is_empty() {
                self.cluster
                    .ensure_bodies(&missing)
                    .await
                    .map_err(|e| BackupError::Refused(format!("bodies not on this site yet: {e}")))?;
                let source: Arc<dyn BodySource> = Arc::new(self.cluster.store().blobs().clone());
                upload_bodies(&self.backups, target, &missing, source).await?;
                held.extend(missing.iter().map(|h| self.backups.key.body_object(h)));
            }
            let name = SegmentName {
                first: first.index,
                last: last.index,
                first_ms: first.applied_at_ms,
                last_ms: last.applied_at_ms,
            };
            let plain =
                postcard::to_stdvec(&entries).map_err(|e| BackupError::Io(format!("encoding a segment: {e}")))?;
            let sealed = self.backups.key.seal(&name.key(), &plain)?;
            target.put(&name.key(), sealed).await?;
            state.archived_through = Some(last.index);
            state.archived_at_ms = Some(last.applied_at_ms);
            if entries.len() < SEGMENT_ENTRIES_MAX {
                return Ok(());
            }
        }
        Ok(())
    }
}

/// The last log index a target's archive holds and its apply time (0 and `None`
/// when it holds none).
pub async fn reach_of(target: &Target) -> Result<(u64, Option<u64>), BackupError> {
    let segments = segments_of(target).await?;
    Ok(segments.iter().max_by_key(|s| s.last).map_or((0, None), |s| (s.last, Some(s.last_ms))))
}

/// Every archive segment on a target, in log order.
pub async fn segments_of(target: &Target) -> Result<Vec<SegmentName>, BackupError> {
    let mut segments: Vec<SegmentName> =
        target.list(ARCHIVE_PREFIX).await?.iter().filter_map(|k| SegmentName::parse(k)).collect();
    segments.sort();
    Ok(segments)
}

/// Read and open one segment.
pub async fn read_segment(
    backups: &Backups,
    target: &Target,
    name: &SegmentName,
) -> Result<Vec<ArchivedEntry>, BackupError> {
    let key = name.key();
    let sealed = target
        .get(&key)
        .await?
        .ok_or_else(|| BackupError::Refused(format!("target {}: archive segment {key} is gone", target.name())))?;
    let plain = backups.key.open(&key, &sealed)?;
    postcard::from_bytes(&plain)
        .map_err(|e| BackupError::Refused(format!("archive segment {key} does not decode: {e}")))
}
