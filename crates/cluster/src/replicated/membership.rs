//! Who votes: bootstrapping the cluster (`Init`), the configured standby and lagged
//! sites made learners by the primary, a site that lost its data rejoining under a
//! new node id (`Rejoin`), and the refusal to start under an old id with new data.
//!
//! A site whose Raft log database is new asks its peers at start whether they count
//! its node id as a member, and refuses to start if one does (openraft issue 898).
//! This module must never make a site a voter before it has caught up as a learner,
//! nor change membership anywhere but on the primary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::RaftMetrics;

use super::{Replicated, StartError};
use crate::raft::network::PeerDirectory;
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::raft::{NodeId, SiteNode};

/// What a rejoin changed.
#[derive(Debug, Clone)]
pub(super) struct Rejoined {
    /// The old node id the site replaced among the voters, if it had one.
    pub replaced: Option<NodeId>,
    /// The voters after the change.
    pub voters: Vec<NodeId>,
}

impl Replicated {
    /// On the primary: make every configured standby and lagged site that the
    /// membership does not know yet a learner.
    pub(super) fn add_configured_learners(&self, m: &RaftMetrics<NodeId, SiteNode>) {
        let known: Vec<NodeId> = m.membership_config.membership().nodes().map(|(id, _)| *id).collect();
        for member in self.members.iter().filter(|m| m.role.is_learner()) {
            if !known.contains(&member.node_id) {
                let raft = self.raft.clone();
                let (id, node) = (member.node_id, Replicated::site_node(member));
                tokio::spawn(async move {
                    if let Err(e) = raft.add_learner(id, node, false).await {
                        tracing::warn!(node = id, error = %e, "adding a standby or lagged site as a learner");
                    }
                });
            }
        }
    }

    pub(super) async fn init(&self) -> Result<bool, String> {
        let already = self.raft.is_initialized().await.map_err(|e| e.to_string())?;
        if !already {
            let voters: BTreeMap<NodeId, SiteNode> =
                self.members.iter().filter(|m| m.role.votes()).map(|m| (m.node_id, Self::site_node(m))).collect();
            tracing::info!(voters = ?voters.keys().collect::<Vec<_>>(), "initialising the cluster");
            if let Err(e) = self.raft.initialize(voters).await {
                // Another site may have initialised it meanwhile; the wait below decides.
                tracing::warn!(error = %e, "initialise");
            }
        }
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader.is_some(), "a primary is elected")
            .await
            .map_err(|e| format!("no primary elected: {e}"))?;
        Ok(already)
    }

    pub(super) async fn rejoin(&self, node_id: NodeId, site: String, addr: String) -> Result<Rejoined, String> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.me) {
            return Err(format!("{} is not the primary; ask the primary ({:?})", self.site, m.current_leader));
        }
        let membership = m.membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == node_id) {
            return Ok(Rejoined { replaced: None, voters: membership.voter_ids().collect() });
        }
        let old = membership.nodes().find(|(id, node)| node.site == site && **id != node_id).map(|(id, _)| *id);
        tracing::warn!(site, node_id, ?old, "a site rejoins under a new node id; catching it up as a learner");
        // Blocking: returns once the learner has caught up (log or snapshot).
        self.raft
            .add_learner(node_id, SiteNode { site: site.clone(), addr }, true)
            .await
            .map_err(|e| format!("adding {site} as learner {node_id}: {e}"))?;
        let mut voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if let Some(old) = old {
            voters.remove(&old);
        }
        voters.insert(node_id);
        self.raft
            .change_membership(openraft::ChangeMembers::ReplaceAllVoters(voters.clone()), false)
            .await
            .map_err(|e| format!("making {site} ({node_id}) a voter: {e}"))?;
        Ok(Rejoined { replaced: old, voters: voters.into_iter().collect() })
    }
}

/// A site whose Raft state is new must not be one the cluster already counts as a
/// member (openraft issue 898): ask the peers that answer.
pub(super) async fn refuse_lost_data_under_old_id(directory: &PeerDirectory, me: NodeId) -> Result<(), StartError> {
    for peer in directory.all() {
        let request = PeerRequest::Control(ControlRequest::Status);
        if let Ok(PeerResponse::Control(Ok(ControlResponse::Status(status)))) =
            peer.call(&request, Duration::from_secs(2), true).await
        {
            if status.voters.contains(&me) || status.learners.contains(&me) {
                return Err(StartError::LostDataUnderOldId { node_id: me, peer: peer.site.clone() });
            }
        }
    }
    Ok(())
}
