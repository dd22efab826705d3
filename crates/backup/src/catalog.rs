//! What the targets hold: the backups (by their manifests) and the archived log.

use std::collections::BTreeMap;

use maildr_api_types::{ArchiveSummary, BackupList, BackupSummary};

use crate::archive::segments_of;
use crate::manifest::{show_time, BackupId, Manifest, BACKUPS_PREFIX};
use crate::{BackupError, Backups, Target};

/// Every complete backup on `target` (one whose manifest is there), oldest first.
/// A manifest that does not open is an error: it names the object.
pub async fn manifests_of(backups: &Backups, target: &Target) -> Result<Vec<Manifest>, BackupError> {
    let mut manifests = Vec::new();
    for key in target.list(BACKUPS_PREFIX).await? {
        let Some(id) = BackupId::of_manifest_key(&key) else { continue };
        manifests.push(read_manifest(backups, target, &id).await?);
    }
    manifests.sort_by_key(|m| (m.taken_at_ms, m.applied_index));
    Ok(manifests)
}

/// Read and open one backup's manifest.
pub async fn read_manifest(backups: &Backups, target: &Target, id: &BackupId) -> Result<Manifest, BackupError> {
    let key = id.manifest_key();
    let sealed = target
        .get(&key)
        .await?
        .ok_or_else(|| BackupError::Refused(format!("target {}: no backup {id}", target.name())))?;
    let plain = backups.key.open(&key, &sealed)?;
    serde_json::from_slice(&plain).map_err(|e| BackupError::Refused(format!("manifest {key} does not decode: {e}")))
}

/// Every backup and the archive of every target; unreachable targets are named.
pub async fn list(backups: &Backups) -> BackupList {
    let mut by_id: BTreeMap<String, BackupSummary> = BTreeMap::new();
    let mut archives = Vec::new();
    let mut unreachable = Vec::new();
    for target in &backups.targets {
        let manifests = match manifests_of(backups, target).await {
            Ok(m) => m,
            Err(e) => {
                unreachable.push(format!("{}: {e}", target.name()));
                continue;
            }
        };
        for m in manifests {
            by_id
                .entry(m.id.to_string())
                .or_insert_with(|| BackupSummary {
                    id: m.id.to_string(),
                    site: m.site.clone(),
                    applied_index: m.applied_index,
                    taken_at: show_time(m.taken_at_ms),
                    taken_at_ms: m.taken_at_ms,
                    messages: m.messages,
                    message_bytes: m.message_bytes,
                    mailboxes: m.mailboxes.len() as u64,
                    targets: Vec::new(),
                })
                .targets
                .push(target.name().into());
        }
        match segments_of(target).await {
            Ok(segments) => {
                let mut gaps = Vec::new();
                for pair in segments.windows(2) {
                    if pair[1].first > pair[0].last + 1 {
                        gaps.push(format!("{}-{}", pair[0].last + 1, pair[1].first - 1));
                    }
                }
                archives.push(ArchiveSummary {
                    target: target.name().into(),
                    segments: segments.len() as u64,
                    first_index: segments.first().map_or(0, |s| s.first),
                    last_index: segments.iter().map(|s| s.last).max().unwrap_or(0),
                    last_at: segments.iter().max_by_key(|s| s.last).map(|s| show_time(s.last_ms)),
                    last_at_ms: segments.iter().max_by_key(|s| s.last).map(|s| s.last_ms),
                    gaps,
                });
            }
            Err(e) => unreachable.push(format!("{}: {e}", target.name())),
        }
    }
    let mut backups_list: Vec<BackupSummary> = by_id.into_values().collect();
    backups_list.sort_by_key(|b| (b.taken_at_ms, b.applied_index));
    BackupList { backups: backups_list, archives, unreachable }
}

/// Remove backup `id` from every target: its manifest first (from then on it is not
/// listed), then its state. Bodies and archive segments go at the next prune, once
/// nothing kept refers to them. Per target, what happened.
pub async fn delete(backups: &Backups, id: &BackupId) -> Vec<(String, Result<bool, BackupError>)> {
    let mut out = Vec::new();
    for target in &backups.targets {
        let result = async {
            if target.get(&id.manifest_key()).await?.is_none() {
                return Ok(false);
            }
            target.delete(&id.manifest_key()).await?;
            target.delete(&id.state_key()).await?;
            Ok(true)
        }
        .await;
        out.push((target.name().to_string(), result));
    }
    out
}

/// What approvals of deleting backup `id` by hand are bound to: the backup and the
/// key it is sealed under (an approval for one deployment never counts for another).
pub fn deletion_sha256(backups: &Backups, id: &BackupId) -> String {
    use sha2::Digest as _;
    let text = format!("maildr-backup-delete\n{}\n{}\n", id, backups.key.fingerprint());
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}
