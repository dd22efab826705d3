//! Taking a backup of a running site: the store at one applied index, the bodies it
//! refers to, and its manifest, on every target.
//!
//! The store's database is copied while applies wait (reads go on; the copy of a
//! lab-sized store takes milliseconds, see bench/README.md), and everything after
//! that reads the copy. Each target is written on its own: bodies it lacks first
//! (their names are HMACs, so an incremental backup uploads only new bodies and a
//! full one costs nothing extra), then the state, then the manifest. A target that
//! fails does not stop the others; a backup is good on a target only once its
//! manifest is there, and the report never says `ok` for a target that failed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use futures_util::{stream, StreamExt};
use maildr_api_types::{BackupReport, TargetOutcome};
use maildr_cluster::Cluster;
use maildr_store::Store;
use maildr_types::BlobHash;

use crate::manifest::{show_time, Manifest, BODIES_PREFIX};
use crate::{now_ms, BackupError, Backups, Target};

/// Bodies uploaded at once to one target.
pub const BODY_UPLOADS_IN_FLIGHT: usize = 8;

/// The store copied at one index, described, ready to upload.
pub struct Copied {
    pub manifest: Manifest,
    pub state: Vec<u8>,
}

/// Copy the running site's store at its applied index into the work directory and
/// describe it.
pub async fn copy_running(cluster: &Cluster, backups: &Backups) -> Result<Copied, BackupError> {
    let replicated = cluster.replication().ok_or(BackupError::NotReplicated)?.clone();
    let work = backups.work_dir.join(format!("take-{}", now_ms()));
    let site = backups.site.clone();
    let fingerprint = backups.key.fingerprint().to_string();
    tokio::task::spawn_blocking(move || {
        let result = (|| {
            std::fs::create_dir_all(&work).map_err(|e| BackupError::Io(format!("{}: {e}", work.display())))?;
            let applied = replicated
                .state_machine()
                .copy_store(&work.join(maildr_store::DATABASE_FILE))
                .map_err(|e| BackupError::Io(format!("copying the store: {e}")))?
                .ok_or_else(|| BackupError::Refused("this site has applied nothing yet".into()))?;
            // After the copy: every entry in it was applied before this moment, every
            // entry after it is stamped later than the copy began.
            let taken_at_ms = now_ms();
            describe_copy(&work, &site, applied, taken_at_ms, &fingerprint)
        })();
        let _ = std::fs::remove_dir_all(&work);
        result
    })
    .await
    .map_err(|e| BackupError::Io(format!("backup copy task: {e}")))?
}

/// Describe the store database copied into `dir`.
pub fn describe_copy(
    dir: &Path,
    site: &str,
    applied_index: u64,
    taken_at_ms: u64,
    fingerprint: &str,
) -> Result<Copied, BackupError> {
    let db = dir.join(maildr_store::DATABASE_FILE);
    let state = std::fs::read(&db).map_err(|e| BackupError::Io(format!("{}: {e}", db.display())))?;
    let store = Store::open(dir)?;
    let manifest = Manifest::describe(&store, site, applied_index, taken_at_ms, &state, fingerprint)?;
    Ok(Copied { manifest, state })
}

/// Where a backup reads the bodies it uploads.
pub trait BodySource: Send + Sync {
    fn body(&self, hash: &BlobHash) -> Result<Vec<u8>, String>;
}

impl BodySource for maildr_store::BlobStore {
    fn body(&self, hash: &BlobHash) -> Result<Vec<u8>, String> {
        self.get_verified(hash).map_err(|e| e.to_string())
    }
}

/// Take a backup of the running site behind `cluster` onto every target.
pub async fn take(cluster: &Cluster, backups: &Backups) -> Result<BackupReport, BackupError> {
    let started = Instant::now();
    let copied = copy_running(cluster, backups).await?;
    let hashes: Vec<BlobHash> = copied.manifest.body_hashes().collect();
    cluster.ensure_bodies(&hashes).await.map_err(|e| BackupError::Refused(format!("bodies not on this site: {e}")))?;
    let store = cluster.store();
    let source: Arc<dyn BodySource> = Arc::new(store.blobs().clone());
    Ok(upload(backups, copied, source, started).await)
}

/// Write a described copy to every target.
pub async fn upload(backups: &Backups, copied: Copied, source: Arc<dyn BodySource>, started: Instant) -> BackupReport {
    let copied = Arc::new(copied);
    let outcomes = futures_util::future::join_all(
        backups.targets.iter().map(|target| upload_to(backups, target, Arc::clone(&copied), Arc::clone(&source))),
    )
    .await;
    let m = &copied.manifest;
    let ok = outcomes.iter().all(|o| o.ok);
    for outcome in &outcomes {
        match &outcome.error {
            None => {
                tracing::info!(backup = %m.id, target = %outcome.target, bodies = outcome.bodies_uploaded, "backup complete")
            }
            Some(e) => {
                tracing::error!(backup = %m.id, target = %outcome.target, error = %e, "backup failed on a target")
            }
        }
    }
    BackupReport {
        id: m.id.to_string(),
        site: m.site.clone(),
        applied_index: m.applied_index,
        taken_at: show_time(m.taken_at_ms),
        taken_at_ms: m.taken_at_ms,
        messages: m.messages,
        message_bytes: m.message_bytes,
        mailboxes: m.mailboxes.len() as u64,
        bodies: m.bodies.len() as u64,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ok,
        targets: outcomes,
    }
}

async fn upload_to(
    backups: &Backups,
    target: &Target,
    copied: Arc<Copied>,
    source: Arc<dyn BodySource>,
) -> TargetOutcome {
    let mut outcome = TargetOutcome {
        target: target.name().into(),
        kind: target.kind().into(),
        ok: false,
        error: None,
        bodies_uploaded: 0,
        bytes_uploaded: 0,
    };
    match upload_to_inner(backups, target, &copied, source, &mut outcome).await {
        Ok(()) => outcome.ok = true,
        Err(e) => outcome.error = Some(e.to_string()),
    }
    outcome
}

async fn upload_to_inner(
    backups: &Backups,
    target: &Target,
    copied: &Copied,
    source: Arc<dyn BodySource>,
    outcome: &mut TargetOutcome,
) -> Result<(), BackupError> {
    let held: BTreeSet<String> = target.list(BODIES_PREFIX).await?.into_iter().collect();
    let missing: Vec<BlobHash> =
        copied.manifest.body_hashes().filter(|h| !held.contains(&backups.key.body_object(h))).collect();
    let uploaded = upload_bodies(backups, target, &missing, source).await?;
    outcome.bodies_uploaded = missing.len() as u64;
    outcome.bytes_uploaded = uploaded;

    let m = &copied.manifest;
    let state = backups.key.seal(&m.id.state_key(), &copied.state)?;
    outcome.bytes_uploaded += state.len() as u64;
    target.put(&m.id.state_key(), state).await?;
    let manifest_json = serde_json::to_vec(m).map_err(|e| BackupError::Io(e.to_string()))?;
    let manifest = backups.key.seal(&m.id.manifest_key(), &manifest_json)?;
    outcome.bytes_uploaded += manifest.len() as u64;
    target.put(&m.id.manifest_key(), manifest).await?;
    Ok(())
}

/// Seal and upload the bodies `hashes` to `target`, durable when this returns;
/// returns the bytes written.
pub async fn upload_bodies(
    backups: &Backups,
    target: &Target,
    hashes: &[BlobHash],
    source: Arc<dyn BodySource>,
) -> Result<u64, BackupError> {
    let results: Vec<Result<u64, BackupError>> = stream::iter(hashes.iter().copied())
        .map(|hash| {
            let source = Arc::clone(&source);
            let key = Arc::clone(&backups.key);
            async move {
                let name = key.body_object(&hash);
                let sealed = tokio::task::spawn_blocking(move || {
                    let body = source.body(&hash).map_err(|e| BackupError::Io(format!("body {hash}: {e}")))?;
                    Ok::<_, BackupError>(key.seal(&name, &body)?)
                })
                .await
                .map_err(|e| BackupError::Io(format!("body task: {e}")))??;
                let bytes = sealed.len() as u64;
                target.put_unsynced(&backups.key.body_object(&hash), sealed).await?;
                Ok(bytes)
            }
        })
        .buffer_unordered(BODY_UPLOADS_IN_FLIGHT)
        .collect()
        .await;
    let written = results.into_iter().try_fold(0u64, |sum, r| Ok::<_, BackupError>(sum + r?))?;
    // Durable before anything that refers to them (a state, a manifest, a segment).
    if !hashes.is_empty() {
        target.sync().await?;
    }
    Ok(written)
}
