//! Who votes: bootstrapping the cluster (`Init`), the configured standby and lagged
//! sites made learners by the primary, a site that lost its data rejoining under a
//! new node id (`Rejoin`), and the refusal to start under an old id with new data.
//!
//! A site whose Raft log database is new asks its peers at start whether they count
//! its node id as a member, and refuses to start if one does (openraft issue 898).
//! It starts only once a majority of the configured voters has answered (it listens
//! meanwhile and answers `Fresh`, so sites of a new cluster started together clear
//! each other); `--new-cluster` waives the majority for a brand-new cluster.
//! A restored store (every site lost) becomes the first state of a new cluster of
//! the configured voters with [`seed_restored_site`].
//! This module must never make a site a voter before it has caught up as a learner,
//! nor change membership anywhere but on the primary.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use maildr_config::ClusterMember;
use openraft::RaftMetrics;

use super::{FreshStart, Replicated, StartError};
use crate::raft::network::PeerDirectory;
use crate::raft::transport::{self, ChannelSecurity, PeerListener};
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::raft::{NodeId, SiteNode};

/// Make the store a whole-site restore wrote into `data_dir` (at log index `index`
/// of the lost cluster) the first state of a new cluster of `cluster`'s voters: the
/// site of that directory leads once it starts, and every other site, started with
/// no Raft state (`serve --new-cluster`), installs its snapshot.
pub fn seed_restored_site(
    data_dir: &std::path::Path,
    cluster: &maildr_config::ClusterSection,
    index: u64,
) -> Result<crate::raft::state_machine::SeededState, StartError> {
    let voters: BTreeMap<NodeId, SiteNode> =
        cluster.members.iter().filter(|m| m.role.votes()).map(|m| (m.node_id, Replicated::site_node(m))).collect();
    if !voters.contains_key(&cluster.node_id) {
        return Err(StartError::Raft(format!(
            "node id {} is not a voting member (a data site) of the configured cluster: a restored site \
             seeds a new cluster as one of its data sites",
            cluster.node_id
        )));
    }
    Ok(crate::raft::state_machine::seed_new_cluster(data_dir, voters, index)?)
}

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
        // An election may pass between the catch-up and the change (the leader
        // steps down for a moment under load): wait for it and go on if this site
        // leads again; the change itself is idempotent.
        let deadline = Instant::now() + REJOIN_LEADERSHIP_WAIT;
        loop {
            let change = openraft::ChangeMembers::ReplaceAllVoters(voters.clone());
            match self.raft.change_membership(change, false).await {
                Ok(_) => break,
                Err(openraft::error::RaftError::APIError(openraft::error::ClientWriteError::ForwardToLeader(f)))
                    if Instant::now() < deadline =>
                {
                    let leader = self
                        .raft
                        .wait(Some(deadline.saturating_duration_since(Instant::now())))
                        .metrics(|m| m.current_leader.is_some(), "a primary is elected")
                        .await
                        .ok()
                        .and_then(|m| m.current_leader);
                    if leader != Some(self.me) {
                        return Err(format!(
                            "making {site} ({node_id}) a voter: {} stopped being the primary (now {:?}; was asked to \
                             forward to {:?}); run `cluster rejoin` again",
                            self.site, leader, f.leader_id
                        ));
                    }
                }
                Err(e) => return Err(format!("making {site} ({node_id}) a voter: {e}")),
            }
        }
        Ok(Rejoined { replaced: old, voters: voters.into_iter().collect() })
    }
}

/// How long the primary waits, in a rejoin, for an election that interrupted the
/// membership change to end with it leading again.
const REJOIN_LEADERSHIP_WAIT: Duration = Duration::from_secs(10);
/// How long a site with no Raft state waits between rounds of asking its peers.
const FRESH_CHECK_ROUND: Duration = Duration::from_millis(500);
/// How long one peer has to answer one round.
const FRESH_CHECK_CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the wait for a majority is logged.
const FRESH_CHECK_LOG_EVERY: Duration = Duration::from_secs(5);

/// What the configured voters said, so far, about a site that has no Raft state.
#[derive(Debug, Default)]
struct FreshCheck {
    /// Voters (this site among them, if it votes) that answered without counting
    /// this node id as a member.
    cleared_by: BTreeSet<NodeId>,
}

/// A site whose Raft state is new must not be one the cluster already counts as a
/// member (openraft issue 898). Ask the peers until a majority of the configured
/// voters has answered without counting `me`: only then is the latest membership
/// known to one of them. Any member, voter or not, that counts `me` refuses the
/// start at once. `FreshStart::NewCluster` (an operator bootstrapping a brand-new
/// cluster whose sites start one by one, or one started after `cluster init`) asks
/// once, does not wait for a majority, and starts even where it is counted.
pub(super) async fn refuse_lost_data_under_old_id(
    directory: &PeerDirectory,
    members: &[ClusterMember],
    me: NodeId,
    fresh_start: FreshStart,
) -> Result<(), StartError> {
    let voters: BTreeSet<NodeId> = members.iter().filter(|m| m.role.votes()).map(|m| m.node_id).collect();
    let needed = voters.len() / 2 + 1;
    let mut check = FreshCheck::default();
    if voters.contains(&me) {
        check.cleared_by.insert(me);
    }
    let began = Instant::now();
    let mut logged = began;
    loop {
        for peer in directory.all() {
            if check.cleared_by.contains(&peer.node_id) {
                continue;
            }
            let request = PeerRequest::Control(ControlRequest::Status);
            let counted = match peer.call(&request, FRESH_CHECK_CALL_TIMEOUT, true).await {
                Ok(PeerResponse::Control(Ok(ControlResponse::Status(status)))) => {
                    status.voters.contains(&me) || status.learners.contains(&me)
                }
                Ok(PeerResponse::Control(Ok(ControlResponse::Fresh))) => false,
                _ => continue,
            };
            if counted && fresh_start == FreshStart::NewCluster {
                tracing::warn!(
                    peer = %peer.site,
                    "counted as a member already; starting anyway (--new-cluster: this site never held data)"
                );
                return Ok(());
            }
            if counted {
                return Err(StartError::LostDataUnderOldId { node_id: me, peer: peer.site.clone() });
            }
            if voters.contains(&peer.node_id) {
                check.cleared_by.insert(peer.node_id);
            }
        }
        if check.cleared_by.len() >= needed {
            tracing::info!(cleared_by = ?check.cleared_by, "no configured voter counts this new node id as a member");
            return Ok(());
        }
        if fresh_start == FreshStart::NewCluster {
            tracing::warn!(
                cleared_by = ?check.cleared_by,
                needed,
                "starting a brand-new cluster (--new-cluster): not waiting for a majority of the voters"
            );
            return Ok(());
        }
        if logged.elapsed() >= FRESH_CHECK_LOG_EVERY {
            logged = Instant::now();
            tracing::warn!(
                answered = check.cleared_by.len(),
                needed,
                waited_s = began.elapsed().as_secs(),
                "this site has no Raft state: waiting for a majority of the configured voters to confirm that none \
                 counts its node id as a member (start a brand-new cluster's first site with --new-cluster)"
            );
        }
        tokio::time::sleep(FRESH_CHECK_ROUND).await;
    }
}

/// While `check` runs, answer peers on `listener` as a site with no Raft state yet:
/// every control request gets [`ControlResponse::Fresh`], everything else a refusal. Each
/// connection is answered once and closed, so no peer keeps one to this stand-in.
pub(super) async fn answer_as_fresh_while<T>(
    listener: &PeerListener,
    security: &ChannelSecurity,
    me: NodeId,
    site: &str,
    check: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(check);
    loop {
        tokio::select! {
            done = &mut check => return done,
            accepted = listener.accept() => {
                let Ok(Some(connection)) = accepted else { continue };
                let (security, site) = (security.clone(), site.to_string());
                tokio::spawn(async move {
                    let Ok(Some((mut stream, _caller))) = transport::handshake(connection, &security, me, &site).await
                    else {
                        return;
                    };
                    if let Ok(Some(request)) = transport::next_request(&mut stream, security.idle_timeout).await {
                        let response = match request {
                            PeerRequest::Control(_) => PeerResponse::Control(Ok(ControlResponse::Fresh)),
                            _ => PeerResponse::Refused(format!(
                                "{site} is starting with no Raft state: it waits for a majority of the voters \
                                 to confirm that none counts its node id as a member"
                            )),
                        };
                        let _ = transport::answer(&mut stream, &response).await;
                    }
                });
            }
        }
    }
}
