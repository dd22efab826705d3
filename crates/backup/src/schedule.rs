//! The backup service of a running site: the archiver, the backup and verification
//! schedules, and retention.
//!
//! Every data site runs it; only the primary acts. A schedule's due time is kept
//! by every site until a backup taken at or after it is on a target: so when the
//! primary is lost before or during a scheduled backup, the new primary takes it
//! as soon as it leads (the schedule resumes after a failover), and a primary that
//! sees the backup already there does nothing.
//!
//! Retention keeps the newest `keep_last` backups, the newest of each of the last
//! `keep_daily` days, `keep_weekly` weeks and `keep_monthly` months (UTC), drops
//! those older than `max_age_days` (never the newest), and prunes the archive
//! before the oldest kept backup and every body that no kept backup or kept segment
//! refers to: a kept backup and the archive after it always stay restorable. A
//! prune holds off the archiver and backups, so it never removes a body that an
//! upload in flight is about to refer to. On a bucket with Object Lock, objects
//! whose retention has not ended stay and are pruned on a later run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use croner::Cron;
use maildr_api_types::{BackupReport, BackupVerifyReport};
use maildr_cluster::Cluster;
use serde::Serialize;

use crate::archive::{read_segment, segments_of, Archiver};
use crate::catalog::manifests_of;
use crate::manifest::{time_of, BODIES_PREFIX};
use crate::verify::{verify, Verdict};
use crate::{now_ms, BackupError, Backups, Manifest, Target};

/// How often the schedule loop looks at the clock and the site's role.
const TICK: Duration = Duration::from_secs(2);

/// Parse a schedule (`sec min hour day month weekday`); empty = none.
pub fn parse_schedule(text: &str) -> Result<Option<Cron>, BackupError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Cron::new(text)
        .with_seconds_required()
        .parse()
        .map(Some)
        .map_err(|e| BackupError::Refused(format!("schedule {text:?}: {e}")))
}

/// Which backups retention keeps, of `manifests` (any order), at `now_ms`.
pub fn retained(config: &maildr_config::BackupSection, manifests: &[Manifest], now_ms: u64) -> BTreeSet<String> {
    let mut newest_first: Vec<&Manifest> = manifests.iter().collect();
    newest_first.sort_by_key(|m| std::cmp::Reverse((m.taken_at_ms, m.applied_index)));
    let mut keep = BTreeSet::new();
    for m in newest_first.iter().take(config.keep_last as usize) {
        keep.insert(m.id.to_string());
    }
    /// A backup's day, ISO week or month: the newest of each is kept.
    type Bucket = fn(DateTime<Utc>) -> (i32, u32);
    let buckets: [(u32, Bucket); 3] = [
        (config.keep_daily, |t| (t.year(), t.ordinal())),
        (config.keep_weekly, |t| (t.iso_week().year(), t.iso_week().week())),
        (config.keep_monthly, |t| (t.year(), t.month())),
    ];
    for (count, bucket_of) in buckets {
        let mut seen = BTreeSet::new();
        for m in &newest_first {
            if seen.len() >= count as usize {
                break;
            }
            if seen.insert(bucket_of(time_of(m.taken_at_ms))) {
                keep.insert(m.id.to_string());
            }
        }
    }
    if config.max_age_days > 0 {
        let oldest_allowed = now_ms.saturating_sub(u64::from(config.max_age_days) * 86_400_000);
        keep.retain(|id| newest_first.iter().any(|m| m.id.as_str() == id && m.taken_at_ms >= oldest_allowed));
    }
    if let Some(newest) = newest_first.first() {
        keep.insert(newest.id.to_string());
    }
    keep
}

/// What a prune removed on one target.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    pub target: String,
    pub backups_removed: Vec<String>,
    pub segments_removed: u64,
    pub bodies_removed: u64,
    /// Objects that could not be removed yet (Object Lock, or an error), with why.
    pub kept: Vec<String>,
}

/// Apply retention to one target.
pub async fn prune_target(backups: &Backups, target: &Target) -> Result<PruneReport, BackupError> {
    let mut report = PruneReport { target: target.name().into(), ..PruneReport::default() };
    let manifests = manifests_of(backups, target).await?;
    let keep = retained(&backups.config, &manifests, now_ms());
    let (kept, dropped): (Vec<&Manifest>, Vec<&Manifest>) =
        manifests.iter().partition(|m| keep.contains(m.id.as_str()));
    let Some(oldest_kept) = kept.iter().map(|m| m.applied_index).min() else { return Ok(report) };

    let mut referenced: BTreeSet<String> = BTreeSet::new();
    for m in &kept {
        referenced.extend(m.body_hashes().map(|h| backups.key.body_object(&h)));
    }
    let mut old_segments = Vec::new();
    for segment in segments_of(target).await? {
        if segment.last <= oldest_kept {
            old_segments.push(segment);
            continue;
        }
        for entry in read_segment(backups, target, &segment).await? {
            if let Some(hash) = entry.command.as_ref().and_then(maildr_store::Command::new_body) {
                referenced.insert(backups.key.body_object(&hash));
            }
        }
    }
    for m in dropped {
        // The manifest first: from then on the backup is not listed, even if the
        // state object outlives this run.
        let mut removed = true;
        for key in [m.id.manifest_key(), m.id.state_key()] {
            if let Err(e) = target.delete(&key).await {
                report.kept.push(format!("{key}: {e}"));
                removed = false;
            }
        }
        if removed {
            report.backups_removed.push(m.id.to_string());
        }
    }
    for segment in old_segments {
        match target.delete(&segment.key()).await {
            Ok(()) => report.segments_removed += 1,
            Err(e) => report.kept.push(format!("{}: {e}", segment.key())),
        }
    }
    for key in target.list(BODIES_PREFIX).await? {
        if referenced.contains(&key) {
            continue;
        }
        match target.delete(&key).await {
            Ok(()) => report.bodies_removed += 1,
            Err(e) => report.kept.push(format!("{key}: {e}")),
        }
    }
    Ok(report)
}

/// The age of the newest verified backup on each target, for `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BackupHealth {
    /// Target → when its newest good verification ran and the time of the backup
    /// it verified (ms since the epoch).
    pub verified: BTreeMap<String, (u64, u64)>,
    /// Target → time of the newest backup this site wrote there.
    pub last_backup: BTreeMap<String, u64>,
    /// Target → the last archived index and its apply time.
    pub archived: BTreeMap<String, (u64, u64)>,
    /// Target → the archiver's last error.
    pub archive_errors: BTreeMap<String, String>,
}

/// Appends one record to the site's audit log: (action, detail).
pub type AuditHook = Arc<dyn Fn(&str, serde_json::Value) + Send + Sync>;

/// The backup service of one running site.
pub struct BackupService {
    audit: AuditHook,
    backups: Backups,
    cluster: Cluster,
    archiver: Arc<Archiver>,
    /// Held by a backup and by a prune.
    taking: tokio::sync::Mutex<()>,
    /// Held by an archive round and by a prune.
    archiving: tokio::sync::Mutex<()>,
    exe: PathBuf,
    health: Mutex<BackupHealth>,
}

impl BackupService {
    /// Start the archiver and the schedules; they stop when `stop` turns true.
    /// `exe` is the `maildr` executable (restore tests start scratch sites with it).
    /// Every backup, verification, prune and restore it makes is passed to `audit`.
    pub fn start(
        backups: Backups,
        cluster: Cluster,
        exe: PathBuf,
        audit: AuditHook,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<BackupService>, BackupError> {
        let backup_schedule = parse_schedule(&backups.config.schedule)?;
        let verify_schedule = parse_schedule(&backups.config.verify_schedule)?;
        let archiver = Archiver::new(backups.clone(), cluster.clone());
        let service = Arc::new(BackupService {
            audit,
            backups,
            cluster,
            archiver,
            taking: Default::default(),
            archiving: Default::default(),
            exe,
            health: Mutex::new(BackupHealth::default()),
        });
        let every = Duration::from_secs(service.backups.config.archive_every_secs);
        tokio::spawn(Arc::clone(&service).archive_loop(every, stop.clone()));
        tokio::spawn(Arc::clone(&service).schedule_loop(backup_schedule, verify_schedule, stop));
        Ok(service)
    }

    pub fn backups(&self) -> &Backups {
        &self.backups
    }

    /// Record an operation in the site's audit log.
    pub fn record(&self, action: &str, detail: serde_json::Value) {
        (self.audit)(action, detail);
    }

    /// Take a backup now (on this site, at its applied index), then apply retention.
    pub async fn run_now(&self) -> Result<BackupReport, BackupError> {
        let report = {
            let _taking = self.taking.lock().await;
            match crate::take::take(&self.cluster, &self.backups).await {
                Ok(report) => report,
                Err(e) => {
                    self.record("backup", serde_json::json!({ "ok": false, "error": e.to_string() }));
                    return Err(e);
                }
            }
        };
        self.record("backup", serde_json::to_value(&report).unwrap_or_default());
        {
            let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            for t in report.targets.iter().filter(|t| t.ok) {
                health.last_backup.insert(t.target.clone(), report.taken_at_ms);
            }
        }
        for result in self.prune().await {
            if let Err(e) = result {
                tracing::warn!(error = %e, "pruning after a backup failed");
            }
        }
        Ok(report)
    }

    /// Apply retention to every target.
    pub async fn prune(&self) -> Vec<Result<PruneReport, BackupError>> {
        let _taking = self.taking.lock().await;
        let _archiving = self.archiving.lock().await;
        let mut out = Vec::new();
        for target in &self.backups.targets {
            let result = prune_target(&self.backups, target).await;
            if let Ok(r) = &result {
                if !r.backups_removed.is_empty() || r.segments_removed > 0 || r.bodies_removed > 0 {
                    tracing::info!(target = %r.target, backups = ?r.backups_removed, segments = r.segments_removed,
                        bodies = r.bodies_removed, "pruned expired backups");
                    self.record("backup_pruned", serde_json::to_value(r).unwrap_or_default());
                }
            }
            out.push(result);
        }
        out
    }

    /// Verify the newest backup (restoring it into a scratch site) and note the result.
    pub async fn verify_now(&self, restore_test: bool) -> (BackupVerifyReport, Verdict) {
        let exe = restore_test.then_some(self.exe.as_path());
        let (report, verdict) = verify(&self.backups, None, exe).await;
        self.record("backup_verify", serde_json::to_value(&report).unwrap_or_default());
        if verdict == Verdict::Good {
            let taken = crate::BackupId::parse(&report.backup).and_then(|id| id.taken_at_ms()).unwrap_or_default();
            let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
            for target in &report.targets {
                health.verified.insert(target.clone(), (now_ms(), taken));
            }
        }
        (report, verdict)
    }

    /// The service's view of its targets, for `/metrics`.
    pub fn health(&self) -> BackupHealth {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (target, state) in self.archiver.status() {
            if let (Some(index), Some(at)) = (state.archived_through, state.archived_at_ms) {
                health.archived.insert(target.clone(), (index, at));
            }
            if let Some(e) = state.error {
                health.archive_errors.insert(target, e);
            }
        }
        health
    }

    async fn archive_loop(self: Arc<Self>, every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let _archiving = self.archiving.lock().await;
            self.archiver.round().await;
        }
    }

    async fn schedule_loop(
        self: Arc<Self>,
        backup: Option<Cron>,
        verify_schedule: Option<Cron>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backup_due = Due::new(backup);
        let mut verify_due = Due::new(verify_schedule);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = Utc::now();
            let primary = self.cluster.replication().is_some_and(|r| r.is_primary());
            if let Some(due) = backup_due.pending(now) {
                if primary {
                    if self.newest_backup_ms().await.is_some_and(|newest| newest >= due) {
                        backup_due.done();
                    } else {
                        tracing::info!(due = %time_of(due), "taking the scheduled backup");
                        match self.run_now().await {
                            Ok(report) if report.ok => backup_due.done(),
                            Ok(report) => {
                                tracing::error!(backup = %report.id, "the scheduled backup failed on a target");
                                backup_due.done();
                            }
                            Err(e) => tracing::error!(error = %e, "the scheduled backup failed; retrying"),
                        }
                    }
                }
            }
            if verify_due.pending(now).is_some() && primary {
                let (report, verdict) = self.verify_now(true).await;
                match verdict {
                    Verdict::Good => tracing::info!(backup = %report.backup, "scheduled verification passed"),
                    _ => {
                        tracing::error!(backup = %report.backup, problems = ?report.problems, "scheduled verification found problems")
                    }
                }
                verify_due.done();
            }
        }
    }

    async fn newest_backup_ms(&self) -> Option<u64> {
        let mut newest = None;
        for target in &self.backups.targets {
            if let Ok(manifests) = manifests_of(&self.backups, target).await {
                newest = newest.max(manifests.iter().map(|m| m.taken_at_ms).max());
            }
        }
        newest
    }
}

/// A schedule's next occurrence and the one that came due and is not done yet.
struct Due {
    cron: Option<Cron>,
    next: Option<DateTime<Utc>>,
    pending: Option<u64>,
}

impl Due {
    fn new(cron: Option<Cron>) -> Due {
        let next = cron.as_ref().and_then(|c| c.find_next_occurrence(&Utc::now(), false).ok());
        Due { cron, next, pending: None }
    }

    /// The due time (ms) not yet done, after moving past occurrences that passed.
    fn pending(&mut self, now: DateTime<Utc>) -> Option<u64> {
        while let Some(next) = self.next.filter(|n| *n <= now) {
            self.pending = Some(u64::try_from(next.timestamp_millis()).unwrap_or(0));
            self.next = self.cron.as_ref().and_then(|c| c.find_next_occurrence(&next, false).ok());
        }
        self.pending
    }

    fn done(&mut self) {
        self.pending = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::BackupId;

    fn manifest(taken_at_ms: u64) -> Manifest {
        Manifest {
            id: BackupId::new(taken_at_ms, taken_at_ms / 1000),
            site: "bj".into(),
            applied_index: taken_at_ms / 1000,
            taken_at_ms,
            state_bytes: 0,
            state_sha256: String::new(),
            bodies: Vec::new(),
            mailboxes: Vec::new(),
            messages: 0,
            message_bytes: 0,
            key_fingerprint: String::new(),
        }
    }

    #[test]
    fn retention_keeps_the_last_n_and_the_newest_of_each_day_week_and_month() {
        const DAY: u64 = 86_400_000;
        let start = 1_767_225_600_000; // 2026-01-01T00:00:00Z
                                       // Four backups a day for 90 days.
        let all: Vec<Manifest> = (0..90 * 4).map(|i| manifest(start + i * DAY / 4)).collect();
        let now = start + 90 * DAY;
        let config = maildr_config::BackupSection {
            keep_last: 3,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 3,
            ..Default::default()
        };
        let keep = retained(&config, &all, now);
        let newest = &all[all.len() - 1];
        assert!(keep.contains(newest.id.as_str()));
        for m in &all[all.len() - 3..] {
            assert!(keep.contains(m.id.as_str()), "keep_last");
        }
        // 3 last + 7 days (the newest day's already counted) + weeks + months,
        // overlapping: far fewer than all, more than keep_last.
        assert!(keep.len() > 3 + 6 && keep.len() < 3 + 7 + 4 + 3, "{}", keep.len());
        // The newest backup of each of the last 7 days is kept.
        for day in 83..90 {
            let last_of_day = &all[day * 4 + 3];
            assert!(keep.contains(last_of_day.id.as_str()), "day {day}");
        }
        // The oldest backups are gone.
        assert!(!keep.contains(all[0].id.as_str()));

        let aged = maildr_config::BackupSection { max_age_days: 2, ..config };
        let keep = retained(&aged, &all, now);
        assert!(keep.iter().all(|id| all.iter().any(|m| m.id.as_str() == id && m.taken_at_ms + 2 * DAY >= now)));
        assert!(keep.contains(newest.id.as_str()));
    }

    #[test]
    fn a_due_time_stays_pending_until_done_and_later_occurrences_replace_it() {
        let cron = parse_schedule("0 0 3 * * *").unwrap();
        let mut due = Due::new(cron);
        due.next = Some(DateTime::parse_from_rfc3339("2026-12-01T03:00:00Z").unwrap().to_utc());
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(due.pending(t("2026-12-01T02:59:59Z")), None);
        let first = due.pending(t("2026-12-01T03:00:01Z")).unwrap();
        assert_eq!(time_of(first), t("2026-12-01T03:00:00Z"));
        // Not done (this site is not primary): still pending a minute later.
        assert_eq!(due.pending(t("2026-12-01T03:01:00Z")), Some(first));
        // A day later the next occurrence replaces it.
        let second = due.pending(t("2026-12-02T03:00:05Z")).unwrap();
        assert_eq!(time_of(second), t("2026-12-02T03:00:00Z"));
        due.done();
        assert_eq!(due.pending(t("2026-12-02T03:00:06Z")), None);
        assert!(parse_schedule("").unwrap().is_none());

        // A schedule every 3 seconds, looked at every 2 seconds for a minute: one
        // due time per occurrence, never the same twice, and the loop ends.
        let mut due = Due::new(parse_schedule("*/3 * * * * *").unwrap());
        due.next = Some(t("2026-12-01T03:00:00Z"));
        let mut seen = Vec::new();
        for tick in 0..30 {
            let now = t("2026-12-01T03:00:00Z") + chrono::Duration::seconds(2 * tick);
            if let Some(at) = due.pending(now) {
                seen.push(at);
                due.done();
            }
        }
        seen.dedup();
        assert_eq!(seen.len(), 20, "{seen:?}");
        assert!(parse_schedule("not a schedule").is_err());
    }
}
