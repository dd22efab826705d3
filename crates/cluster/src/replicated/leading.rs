//! What a primary keeps doing while it leads, on every change of Raft state: note
//! when each follower last had every entry (its lag in seconds), make the configured
//! standby and lagged sites learners, and on a witness, hand the lead to a data site.
//!
//! This module must never block the loop on a peer: anything that talks to one is
//! spawned.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;

use super::Replicated;
use crate::raft::{NodeId, SiteNode};

/// Keep `caught_up_at` current on the primary, make configured standby sites
/// learners once this site leads, and, on a witness that leads, hand the lead to a
/// data site as soon as one has every entry.
pub(super) async fn track_lag(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    let mut metrics = site.raft.metrics();
    let mut last_handover: Option<Instant> = None;
    loop {
        let m = metrics.borrow_and_update().clone();
        if m.state == ServerState::Leader {
            site.note_caught_up(&m);
            site.hand_lead_to_a_data_site(&m, &mut last_handover);
            site.add_configured_learners(&m);
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

impl Replicated {
    /// Note which followers have every entry the primary has, now.
    fn note_caught_up(&self, m: &RaftMetrics<NodeId, SiteNode>) {
        let last = m.last_log_index.unwrap_or(0);
        let now = Instant::now();
        let mut caught_up = self.caught_up_at.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(replication) = &m.replication {
            for (node, matched) in replication.iter() {
                if matched.map(|l| l.index).unwrap_or(0) >= last {
                    caught_up.insert(*node, now);
                }
            }
        }
    }
}
