//! What a witness does beyond voting: wait longer before it campaigns, hand the lead
//! to a data site as soon as it can, and keep bodies only until both data sites
//! hold them.
//!
//! A witness campaigns only after data sites had [`super::campaign::WITNESS_ELECTION_PATIENCE`] times
//! as long: it leads only when no data site can (the survivor lacks entries only the
//! witness holds), and then hands the lead to a data site it has brought up to date
//! and heard from within the lease: of those, the one heard from last (a data site
//! that froze or died after the witness was elected must not keep the lead with the
//! witness while the other waits). Every [`WITNESS_BODY_SWEEP`] it asks every data voter which of its bodies
//! they hold durably and drops those held everywhere.
//!
//! This module must never drop a body a data site lacks, nor drop anything in a round
//! in which a data site did not answer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maildr_config::SiteRole;
use maildr_types::BlobHash;
use openraft::RaftMetrics;
use tokio::sync::watch;

use super::Replicated;
use crate::raft::wire::{BodyReply, BodyRpc, PeerRequest, PeerResponse, HOLDS_BODIES_MAX};
use crate::raft::{NodeId, SiteNode};

/// Least time between two hand-over attempts of a witness that leads.
const HANDOVER_RETRY: Duration = Duration::from_millis(300);

/// How often a witness looks for bodies it may drop.
const WITNESS_BODY_SWEEP: Duration = Duration::from_secs(2);

/// How old a body no message refers to must be before a caught-up witness drops
/// it: far longer than any write waits for its body (so it is an orphan, pushed
/// for a write that then failed, or of a message since expunged).
pub(super) const ORPHAN_BODY_GRACE: Duration = Duration::from_secs(10 * 60);

/// What a witness may drop of the bodies it looked at: those every data site holds,
/// and, once it has applied every committed entry, orphans (no message refers to
/// them) older than [`ORPHAN_BODY_GRACE`].
pub(super) fn droppable_bodies(
    held: &[BlobHash],
    everywhere: &[bool],
    unreferenced: &[bool],
    age: impl Fn(&BlobHash) -> Option<Duration>,
    caught_up: bool,
) -> Vec<BlobHash> {
    assert!(held.len() == everywhere.len() && held.len() == unreferenced.len(), "one answer per body");
    held.iter()
        .zip(everywhere.iter().zip(unreferenced))
        .filter(|(hash, (all, orphan))| {
            **all || (caught_up && **orphan && age(hash).is_some_and(|a| a >= ORPHAN_BODY_GRACE))
        })
        .map(|(hash, _)| *hash)
        .collect()
}

/// A data site a leading witness might hand its lead to.
#[derive(Debug, Clone, Copy)]
pub(super) struct HandoverCandidate {
    pub node: NodeId,
    /// Whether it has every entry the witness has.
    pub caught_up: bool,
    /// How long ago the witness last heard from it (never: `None`).
    pub heard_ago: Option<Duration>,
}

/// The data site a leading witness hands its lead to: of those with every entry
/// and heard from within `lease`, the one heard from last. None: no data site can
/// take it now (the witness keeps leading and looks again).
pub(super) fn handover_target(candidates: &[HandoverCandidate], lease: Duration) -> Option<NodeId> {
    candidates
        .iter()
        .filter(|c| c.caught_up)
        .filter_map(|c| c.heard_ago.filter(|ago| *ago < lease).map(|ago| (ago, c.node)))
        .min()
        .map(|(_, node)| node)
}

impl Replicated {
    /// On a witness that leads: hand the lead to the data site [`handover_target`]
    /// picks, at most once per [`HANDOVER_RETRY`] (`last_handover` remembers when).
    pub(super) fn hand_lead_to_a_data_site(
        self: &Arc<Self>,
        m: &RaftMetrics<NodeId, SiteNode>,
        last_handover: &mut Option<Instant>,
    ) {
        if self.role != SiteRole::Witness || last_handover.is_some_and(|t| t.elapsed() < HANDOVER_RETRY) {
            return;
        }
        let last = m.last_log_index.unwrap_or(0);
        let candidates: Vec<HandoverCandidate> = m
            .replication
            .iter()
            .flat_map(|r| r.iter())
            .filter(|(node, _)| self.role_of(**node) == Some(SiteRole::Data))
            .map(|(node, matched)| HandoverCandidate {
                node: *node,
                caught_up: matched.map(|l| l.index).unwrap_or(0) >= last,
                heard_ago: self.last_heard_from(*node).map(|at| at.elapsed()),
            })
            .collect();
        let ready = handover_target(&candidates, Duration::from_millis(self.election_timeout_max_ms));
        let busy = self.handing_over.load(Ordering::SeqCst);
        if let Some(node) = ready.filter(|_| !busy) {
            *last_handover = Some(Instant::now());
            tracing::warn!(to = node, "this witness leads; handing the lead to a caught-up data site");
            let site = Arc::clone(self);
            tokio::spawn(async move {
                if let Err(e) = site.hand_over(node).await {
                    tracing::warn!(to = node, error = %e, "hand-over");
                }
            });
        }
    }

    /// One round of [`drop_bodies_the_data_sites_hold`], over the next page of
    /// bodies after `cursor` (which it advances, and resets at the end, so every
    /// body is looked at in turn); how many it dropped.
    async fn drop_bodies_held_elsewhere(&self, cursor: &mut Option<BlobHash>) -> Result<usize, String> {
        let store = self.store();
        let held = {
            let store = Arc::clone(&store);
            let after = *cursor;
            tokio::task::spawn_blocking(move || store.blobs().list_after(after.as_ref(), HOLDS_BODIES_MAX))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
        *cursor = held.last().copied();
        if held.is_empty() {
            return Ok(0);
        }
        let membership = self.raft.metrics().borrow().membership_config.membership().clone();
        let data_sites: Vec<NodeId> =
            membership.voter_ids().filter(|id| *id != self.me && self.role_of(*id) == Some(SiteRole::Data)).collect();
        if data_sites.len() < 2 {
            return Err(format!(
                "{} data sites vote; a witness drops bodies only when two hold them",
                data_sites.len()
            ));
        }
        let mut everywhere = vec![true; held.len()];
        for node in data_sites {
            let peer = self.peer(node).ok_or_else(|| format!("no address for node {node}"))?;
            let question = PeerRequest::Body(BodyRpc::Holds(held.clone()));
            let answer = peer.call(&question, Duration::from_secs(10), true).await.map_err(|e| e.to_string())?;
            let flags = match answer {
                PeerResponse::Body(BodyReply::Holds(Ok(flags))) => flags,
                PeerResponse::Body(BodyReply::Holds(Err(reason))) => return Err(format!("{}: {reason}", peer.site)),
                other => return Err(format!("{} answered {other:?}", peer.site)),
            };
            if flags.len() != held.len() {
                return Err(format!("{} answered for {} bodies of {}", peer.site, flags.len(), held.len()));
            }
            everywhere.iter_mut().zip(flags).for_each(|(all, here)| *all &= here);
        }
        let caught_up = self.is_caught_up();
        let dropped = tokio::task::spawn_blocking(move || -> Result<usize, String> {
            let unreferenced = store.unreferenced(&held).map_err(|e| e.to_string())?;
            let droppable = droppable_bodies(&held, &everywhere, &unreferenced, |h| store.blobs().age(h), caught_up);
            let mut dropped = 0;
            for hash in droppable {
                if store.blobs().remove(&hash).map_err(|e| e.to_string())? {
                    dropped += 1;
                }
            }
            Ok(dropped)
        })
        .await
        .map_err(|e| e.to_string())??;
        self.metrics.lock().unwrap_or_else(|p| p.into_inner()).counters.bodies_dropped += dropped as u64;
        Ok(dropped)
    }
}

/// On a witness: drop each body once every data site among the voters holds it
/// durably. A witness keeps bodies only as the second copy a data site needs
/// before it may propose a message (and to hand them to the other data site); once
/// both data sites hold a body, that is two sites without it. A body the other data
/// site still lacks (it was down, or cut off) stays, and a round in which a data
/// site does not answer drops nothing.
pub(super) async fn drop_bodies_the_data_sites_hold(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    let mut cursor = None;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(WITNESS_BODY_SWEEP) => {}
        }
        match site.drop_bodies_held_elsewhere(&mut cursor).await {
            Ok(0) => {}
            Ok(dropped) => tracing::debug!(dropped, "dropped bodies both data sites hold"),
            Err(e) => tracing::debug!(error = %e, "keeping bodies this round"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_witness_hands_its_lead_to_the_caught_up_data_site_heard_from_last() {
        let lease = Duration::from_millis(1_000);
        let site = |node, caught_up, heard_ms: Option<u64>| HandoverCandidate {
            node,
            caught_up,
            heard_ago: heard_ms.map(Duration::from_millis),
        };
        // bj (1) froze just after the witness was elected: it is caught up but silent.
        assert_eq!(handover_target(&[site(1, true, Some(1_000)), site(2, true, Some(40))], lease), Some(2));
        assert_eq!(handover_target(&[site(1, true, Some(999)), site(2, true, Some(40))], lease), Some(2));
        assert_eq!(handover_target(&[site(1, true, Some(10)), site(2, true, Some(40))], lease), Some(1));
        assert_eq!(
            handover_target(&[site(1, true, Some(1_000)), site(2, false, Some(5))], lease),
            None,
            "one lags, the other is silent: the witness keeps leading until one can take it"
        );
        assert_eq!(handover_target(&[site(1, true, None), site(2, false, Some(5))], lease), None);
        assert_eq!(handover_target(&[site(1, true, Some(999))], lease), Some(1));
        assert_eq!(handover_target(&[], lease), None);
    }

    #[test]
    fn a_witness_drops_what_both_hold_and_only_old_orphans_once_caught_up() {
        let h = |i: u8| BlobHash([i; 32]);
        let held = [h(1), h(2), h(3), h(4)];
        let everywhere = [true, false, false, false];
        let unreferenced = [false, true, true, false];
        let age = |hash: &BlobHash| match hash.0[0] {
            2 => Some(ORPHAN_BODY_GRACE),
            3 => Some(ORPHAN_BODY_GRACE - Duration::from_secs(1)),
            _ => Some(Duration::from_secs(1)),
        };
        assert_eq!(droppable_bodies(&held, &everywhere, &unreferenced, age, true), [h(1), h(2)]);
        assert_eq!(
            droppable_bodies(&held, &everywhere, &unreferenced, age, false),
            [h(1)],
            "a witness still applying keeps unreferenced bodies: a message may yet refer to them"
        );
    }
}
