//! `GET /metrics`: the site's status in the Prometheus text format (version 0.0.4).
//!
//! Generated directly from [`SiteStatus`] at each scrape, so there is no second
//! set of counters to keep in step. Names start with `maildr_`, carry their unit
//! (`_seconds`, `_bytes`, `_entries`, `_total` for counters) and use base units.
//! This module must never expose a secret, and never block on other sites: it
//! reports only what this site knows.

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use maildr_cluster::status::SiteStatus;

use crate::error::{ErrorBody, Failure};
use crate::ApiState;

#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 401, description = "No or wrong token", body = ErrorBody)))]
pub async fn metrics(State(state): State<ApiState>) -> Result<impl IntoResponse, Failure> {
    let status = crate::handlers::cluster::local_status(&state).await?;
    let mut text = render(&status);
    if let Some(service) = state.backups() {
        text.push_str(&render_backups(&service.health(), maildr_backup::now_ms()));
    }
    let store = state.cluster().store();
    let read = move || Ok::<_, maildr_store::StoreError>((store.queued()?, store.queue_totals()?));
    if let Ok(Ok((queued, left))) = tokio::task::spawn_blocking(read).await {
        text.push_str(&crate::handlers::queue::render_metrics(&queued, &left, chrono::Utc::now().timestamp_millis()));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text))
}

/// Escape a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// The text of one scrape.
pub fn render(s: &SiteStatus) -> String {
    let mut out = Out(String::new());
    out.family("maildr_site_info", "gauge", "This site: name, role and Raft state (value always 1).");
    out.sample("maildr_site_info", &[("site", &s.site), ("role", &s.role), ("state", &s.state)], 1.0);
    let primary = s.leader == Some(s.node_id) && s.state == "Leader";
    out.one("maildr_is_primary", "gauge", "1 when this site is the primary.", if primary { 1.0 } else { 0.0 });
    out.one("maildr_raft_term", "gauge", "Current Raft term.", s.term as f64);
    if let Some(i) = s.last_log_index {
        out.one("maildr_raft_last_log_index", "gauge", "Index of the last log entry held.", i as f64);
    }
    if let Some(i) = s.applied_index {
        out.one("maildr_raft_applied_index", "gauge", "Index of the last entry applied to the store.", i as f64);
    }
    out.one(
        "maildr_missing_bodies",
        "gauge",
        "Message bodies referenced by applied entries that this site still lacks.",
        s.missing_bodies as f64,
    );
    if let Some(at) = s.certificate_expires_at {
        out.one(
            "maildr_cluster_certificate_expiry_timestamp_seconds",
            "gauge",
            "When this site's cluster certificate (mutual TLS between sites) expires, as a Unix time.",
            at as f64,
        );
    }
    let m = &s.metrics;
    let counters = [
        ("maildr_writes_committed_total", "Writes committed since start.", m.writes_committed),
        ("maildr_writes_unavailable_total", "Writes answered unavailable since start.", m.writes_unavailable),
        ("maildr_writes_forwarded_total", "Writes forwarded to the primary since start.", m.writes_forwarded),
        ("maildr_body_pushes_total", "Message bodies pushed to peers.", m.body_pushes),
        ("maildr_body_push_bytes_total", "Bytes of message bodies pushed.", m.body_push_bytes),
        ("maildr_bodies_fetched_total", "Message bodies fetched from peers.", m.bodies_fetched),
        (
            "maildr_bodies_dropped_total",
            "On a witness: bodies dropped because every data site holds them.",
            m.bodies_dropped,
        ),
        (
            "maildr_entries_held_for_bodies_total",
            "Entries a voter appended later than sent because their message body had not reached it yet.",
            m.entries_held_for_bodies,
        ),
    ];
    for (name, help, value) in counters {
        out.one(name, "counter", help, value as f64);
    }
    let latencies = [
        (
            "maildr_write_commit_latency_seconds",
            "Commit latency seen by clients of this site (recent window).",
            [(0.5, m.commit_latency_ms_p50), (0.99, m.commit_latency_ms_p99)],
        ),
        (
            "maildr_body_push_latency_seconds",
            "Time until the first peer acknowledged a pushed body (recent window).",
            [(0.5, m.body_push_latency_ms_p50), (0.99, m.body_push_latency_ms_p99)],
        ),
    ];
    for (name, help, points) in latencies {
        quantiles(&mut out, name, help, points);
    }
    type PeerValue = fn(&maildr_cluster::status::PeerStatus) -> Option<f64>;
    let per_peer: [(&str, &str, PeerValue); 5] = [
        ("maildr_peer_lag_entries", "On the primary: log entries the peer lacks.", |p| p.lag_entries.map(|v| v as f64)),
        (
            "maildr_peer_lag_bytes",
            "On the primary: encoded bytes of the log entries the peer lacks (estimated from the mean entry size \
             for entries the primary has not measured).",
            |p| p.lag_bytes.map(|v| v as f64),
        ),
        ("maildr_peer_lag_seconds", "On the primary: seconds since the peer last had every entry.", |p| p.lag_seconds),
        ("maildr_peer_matched_index", "On the primary: last log index known on the peer.", |p| {
            p.matched_index.map(|v| v as f64)
        }),
        ("maildr_peer_last_heard_seconds", "Seconds since this site last heard from the peer.", |p| {
            p.last_heard_ms_ago.map(|ms| ms as f64 / 1000.0)
        }),
    ];
    for (name, help, value) in per_peer {
        let samples: Vec<(&maildr_cluster::status::PeerStatus, f64)> =
            s.peers.iter().filter_map(|p| value(p).map(|v| (p, v))).collect();
        if samples.is_empty() {
            continue;
        }
        out.family(name, "gauge", help);
        for (p, v) in samples {
            out.sample(name, &[("peer", &p.site), ("role", &p.role)], v);
        }
    }
    out.0
}

/// The backup service's view of its targets (only on sites that take backups).
pub fn render_backups(health: &maildr_backup::schedule::BackupHealth, now_ms: u64) -> String {
    let mut out = Out(String::new());
    let age = |at_ms: u64| now_ms.saturating_sub(at_ms) as f64 / 1000.0;
    out.family(
        "maildr_backup_verified_age_seconds",
        "gauge",
        "Age of the newest backup verified by restoring it, per target (since this site started)",
    );
    for (target, (_, taken_ms)) in &health.verified {
        out.sample("maildr_backup_verified_age_seconds", &[("target", target)], age(*taken_ms));
    }
    out.family("maildr_backup_last_age_seconds", "gauge", "Age of the newest backup this site wrote, per target");
    for (target, at_ms) in &health.last_backup {
        out.sample("maildr_backup_last_age_seconds", &[("target", target)], age(*at_ms));
    }
    out.family("maildr_backup_archived_index", "gauge", "Last log index in the target's archived log");
    out.family("maildr_backup_archive_age_seconds", "gauge", "Age of the last archived log entry, per target");
    for (target, (index, at_ms)) in &health.archived {
        out.sample("maildr_backup_archived_index", &[("target", target)], *index as f64);
        out.sample("maildr_backup_archive_age_seconds", &[("target", target)], age(*at_ms));
    }
    out.family("maildr_backup_archive_failing", "gauge", "1 while archiving to the target fails");
    for target in health.archived.keys().chain(health.archive_errors.keys()).collect::<std::collections::BTreeSet<_>>()
    {
        let failing = f64::from(u8::from(health.archive_errors.contains_key(target)));
        out.sample("maildr_backup_archive_failing", &[("target", target)], failing);
    }
    out.0
}

fn quantiles(out: &mut Out, name: &str, help: &str, values_ms: [(f64, Option<f64>); 2]) {
    if values_ms.iter().all(|(_, v)| v.is_none()) {
        return;
    }
    out.family(name, "gauge", help);
    for (q, v) in values_ms {
        if let Some(ms) = v {
            out.sample(name, &[("quantile", &q.to_string())], ms / 1000.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maildr_cluster::status::{PeerStatus, WriteMetrics};

    #[test]
    fn peers_and_quantiles_become_labelled_samples() {
        let status = SiteStatus {
            site: "b\"j".into(),
            node_id: 1,
            role: "data".into(),
            state: "Leader".into(),
            term: 3,
            leader: Some(1),
            last_log_index: Some(10),
            applied_index: Some(9),
            snapshot_index: None,
            initialized: true,
            voters: vec![1, 2],
            learners: vec![],
            peers: vec![PeerStatus {
                node_id: 2,
                site: "sh".into(),
                role: "data".into(),
                last_heard_ms_ago: Some(1500),
                matched_index: Some(8),
                lag_entries: Some(2),
                lag_seconds: None,
                lag_bytes: Some(512),
                lag_bytes_estimated: false,
            }],
            missing_bodies: 0,
            metrics: WriteMetrics { commit_latency_ms_p50: Some(4.0), ..Default::default() },
            primary_contact: None,
            forced_failover: None,
            apply_delay: None,
            certificate_expires_at: Some(1_800_000_000),
        };
        let text = render(&status);
        assert!(text.contains("maildr_cluster_certificate_expiry_timestamp_seconds 1800000000\n"), "{text}");
        assert!(text.contains("maildr_site_info{site=\"b\\\"j\",role=\"data\",state=\"Leader\"} 1\n"), "{text}");
        assert!(text.contains("maildr_is_primary 1\n"));
        assert!(text.contains("maildr_peer_lag_entries{peer=\"sh\",role=\"data\"} 2\n"));
        assert!(text.contains("# TYPE maildr_peer_lag_bytes gauge\n"), "{text}");
        assert!(text.contains("maildr_peer_lag_bytes{peer=\"sh\",role=\"data\"} 512\n"), "{text}");
        assert!(text.contains("maildr_peer_last_heard_seconds{peer=\"sh\",role=\"data\"} 1.5\n"));
        assert!(!text.contains("maildr_peer_lag_seconds"), "no sample, no family");
        assert!(text.contains("maildr_write_commit_latency_seconds{quantile=\"0.5\"} 0.004\n"));
        assert!(!text.contains("quantile=\"0.99\""));
    }
}
