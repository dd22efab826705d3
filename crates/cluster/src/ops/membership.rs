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
    let mut attempt = 1;
    loop {
        let primary = find_primary(client, me.node_id).await;
        let outcome = match &primary {
            Some(primary) => client.rejoin(primary).await,
            None => Err(OpsError::NoPrimary),
        };
        match outcome {
            Ok(rejoined) => {
                return Ok(RejoinReport {
                    site: me.site,
                    node_id: me.node_id,
                    replaced: rejoined.replaced,
                    voters: rejoined.voters,
                })
            }
            // An election in progress, or the primary asked lost the lead while it
            // changed the voters (a rejoin is idempotent): ask whoever leads now.
            Err(e @ (OpsError::NoPrimary | OpsError::Refused { .. })) if attempt < REJOIN_ATTEMPTS => {
                let now = find_primary(client, me.node_id).await;
                let moved = now.as_ref().map(|m| m.node_id) != primary.as_ref().map(|m| m.node_id);
                if !moved && !matches!(e, OpsError::NoPrimary) {
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt, "rejoin: the primary changed; asking again");
                tokio::time::sleep(REJOIN_RETRY_PAUSE).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many times `rejoin` asks, when an election moves the primary under it.
const REJOIN_ATTEMPTS: u32 = 4;
/// The pause between those attempts (about an election).
const REJOIN_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The member that the first reachable other member names as primary.
async fn find_primary(client: &ControlClient, me: NodeId) -> Option<maildr_config::ClusterMember> {
    for member in client.members().iter().filter(|m| m.node_id != me) {
        if let Ok(status) = client.status_of(member).await {
            if let Some(leader) = status.leader {
                return client.members().iter().find(|m| m.node_id == leader).cloned().or(Some(member.clone()));
            }
        }
    }
    None
}
