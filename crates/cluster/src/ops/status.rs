//! Every member's status at once, put together: who is primary, and each member's lag
//! as the primary sees it (`maildr cluster status`, `GET /api/cluster/members`).
//!
//! It only asks; it must never change anything.

pub use maildr_api_types::cluster::{ClusterStatus, MemberView};
use std::collections::BTreeMap;
use std::time::Duration;

use maildr_config::ClusterMember;

use super::ControlClient;
use crate::status::SiteStatus;

/// Ask every member for its status (all at once, each within `timeout`) and put
/// the answers together: who is primary, and each member's lag as the primary sees it.
pub async fn cluster_status(client: &ControlClient, timeout: Duration) -> ClusterStatus {
    let mut asking = tokio::task::JoinSet::new();
    for (i, member) in client.members().iter().enumerate() {
        let (client, member) = (client.clone(), member.clone());
        asking.spawn(async move { (i, client.status_within(&member, timeout).await.map_err(|e| e.to_string())) });
    }
    let mut by_index: BTreeMap<usize, Result<SiteStatus, String>> = BTreeMap::new();
    while let Some(joined) = asking.join_next().await {
        match joined {
            Ok((i, answer)) => {
                by_index.insert(i, answer);
            }
            Err(e) => tracing::warn!(error = %e, "a status query task failed"),
        }
    }
    let answers: Vec<(&ClusterMember, Result<SiteStatus, String>)> = client
        .members()
        .iter()
        .enumerate()
        .map(|(i, m)| (m, by_index.remove(&i).unwrap_or_else(|| Err("status query failed".into()))))
        .collect();
    let statuses: BTreeMap<u64, &SiteStatus> =
        answers.iter().filter_map(|(m, a)| a.as_ref().ok().map(|s| (m.node_id, s))).collect();
    let site_of = |id: u64| client.members().iter().find(|m| m.node_id == id).map(|m| m.site.clone());
    // The primary is the reachable site that says it leads in the highest term.
    let primary = statuses.values().filter(|s| s.state == "Leader").max_by_key(|s| s.term);
    let leader = primary.map(|p| p.node_id);
    let local_id = client.local().node_id;
    let mut members = Vec::new();
    for (member, answer) in &answers {
        let s = answer.as_ref().ok();
        let from_primary = primary.and_then(|p| p.peers.iter().find(|peer| peer.node_id == member.node_id));
        let from_local =
            statuses.get(&local_id).and_then(|l| l.peers.iter().find(|peer| peer.node_id == member.node_id));
        let is_leader = Some(member.node_id) == leader;
        members.push(MemberView {
            site: member.site.clone(),
            node_id: member.node_id,
            role: member.role.name().into(),
            reachable: answer.is_ok(),
            error: answer.as_ref().err().cloned(),
            state: s.map(|s| s.state.clone()),
            term: s.map(|s| s.term),
            leader: s.and_then(|s| s.leader).and_then(site_of),
            last_log_index: s.and_then(|s| s.last_log_index),
            applied_index: s.and_then(|s| s.applied_index),
            lag_entries: if is_leader { Some(0) } else { from_primary.and_then(|p| p.lag_entries) },
            lag_seconds: if is_leader { Some(0.0) } else { from_primary.and_then(|p| p.lag_seconds) },
            lag_bytes: if is_leader { Some(0) } else { from_primary.and_then(|p| p.lag_bytes) },
            lag_bytes_estimated: !is_leader && from_primary.is_some_and(|p| p.lag_bytes_estimated),
            last_heard_ms_ago: if member.node_id == local_id {
                Some(0)
            } else {
                from_local.and_then(|p| p.last_heard_ms_ago)
            },
            missing_bodies: s.map(|s| s.missing_bodies),
            status: s.cloned(),
        });
    }
    ClusterStatus { leader: leader.and_then(site_of), term: primary.map(|p| p.term), members }
}
