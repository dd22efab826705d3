//! Who is in the cluster, from the operator's side: bootstrap (`maildr cluster init`)
//! and a site that lost its data rejoining under a new node id
//! (`maildr cluster rejoin`).
//!
//! The primary does the membership change and its checks; this module must never
//! ask anything but the site whose config it is (init) or the primary (rejoin).

use super::{ControlClient, OpsError};
use crate::raft::NodeId;

/// What `init` found after bootstrapping.
#[derive(Debug, Clone)]
pub struct InitReport {
    /// The cluster was initialised before.
    pub already: bool,
    /// How many voters the cluster has.
    pub voters: usize,
    /// The primary's site name, when known.
    pub primary: Option<String>,
}

/// Bootstrap the cluster from the config's member list (once; harmless later) and
/// report the primary elected.
pub async fn init(client: &ControlClient) -> Result<InitReport, OpsError> {
    let already = client.init().await?;
    let status = client.status_of(client.local()).await?;
    let primary = status.leader.and_then(|l| client.members().iter().find(|m| m.node_id == l)).map(|m| m.site.clone());
    Ok(InitReport { already, voters: status.voters.len(), primary })
}

/// What a rejoin changed, for the site whose config this is.
#[derive(Debug, Clone)]
pub struct RejoinReport {
    pub site: String,
    pub node_id: NodeId,
    /// The old node id it replaced among the voters, if it had one.
    pub replaced: Option<NodeId>,
    pub voters: Vec<NodeId>,
}

/// Take the site whose config this is (wiped, running under a new node id) back into
/// the cluster: find the primary through the other members, then ask it.
pub async fn rejoin(client: &ControlClient) -> Result<RejoinReport, OpsError> {
    let me = client.local().clone();
    let mut primary = None;
    for member in client.members().iter().filter(|m| m.node_id != me.node_id) {
        if let Ok(status) = client.status_of(member).await {
            if let Some(leader) = status.leader {
                primary = client.members().iter().find(|m| m.node_id == leader).cloned().or(Some(member.clone()));
                break;
            }
        }
    }
    let primary = primary.ok_or(OpsError::NoPrimary)?;
    let rejoined = client.rejoin(&primary).await?;
    Ok(RejoinReport { site: me.site, node_id: me.node_id, replaced: rejoined.replaced, voters: rejoined.voters })
}
