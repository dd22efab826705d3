//! Operator actions on a whole cluster: every member's status, planned switchover,
//! forced failover to a standby and cross-site verification, shared by
//! `maildr cluster` and the admin HTTP API.
//!
//! They talk to running sites over the replication channel, presenting the cluster
//! secret, exactly as sites talk to each other, and return typed reports; printing
//! them is the caller's business. They never open a site's files: everything they
//! report is what the sites say, and they never change state except through a
//! site's own control requests (`HandOver`, `ForceFailover`), which the site checks
//! again itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use maildr_api_types::cluster::{
    ClusterStatus, Divergence, FailoverLoss, FailoverReport, MemberView, MessageDifference, SwitchoverReport,
    VerifyReport,
};
use maildr_config::{ClusterMember, ClusterSection, SiteConfig, SiteRole};

use crate::raft::apply_delay::ApplyHold;
use crate::raft::network::{PeerCallError, PeerClient};
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::replicated::PRIMARY_SILENCE_ELECTION_TIMEOUTS;
use crate::status::{MailboxDigest, MessageSummary, SiteStatus};

/// How long one control request may take, unless the caller says otherwise.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `verify` keeps trying to read every site at one applied index.
pub const VERIFY_DEADLINE: Duration = Duration::from_secs(60);

/// How long a site waits to apply the index `verify` asks it to reach.
const VERIFY_APPLY_WAIT_MS: u64 = 10_000;

/// Pause between two attempts of `verify` while writes keep coming.
const VERIFY_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// How long one status call may take while waiting for a promoted standby.
const FAILOVER_POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause between two status calls while waiting for a promoted standby.
const FAILOVER_POLL_PAUSE: Duration = Duration::from_millis(200);

/// Why an operator action did not happen (or not completely).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("site {0} has no [[cluster.members]]: it is not part of a cluster")]
    NotACluster(String),
    #[error("no member site {site:?}; members are {members}")]
    UnknownMember { site: String, members: String },
    #[error("{site} is a {role} site; only data sites become primary")]
    NotADataSite { site: String, role: &'static str },
    #[error("no primary is known; switchover needs one")]
    NoPrimary,
    #[error("the primary (node {0}) is not in this config")]
    PrimaryNotConfigured(u64),
    /// The site got no answer through.
    #[error(transparent)]
    Unreachable(#[from] PeerCallError),
    /// The site answered with a refusal (for a switchover: the target is not a
    /// caught-up data site, a hand-over is already running, …).
    #[error("site {site}: {reason}")]
    Refused { site: String, reason: String },
    /// The site answered something this version does not expect.
    #[error("site {site} answered {what}")]
    Unexpected { site: String, what: String },
    #[error("fewer than two sites answered; nothing to compare (unreachable: {0})")]
    TooFewSites(String),
    #[error("sites kept applying new entries; could not read them all at one index within {0} s")]
    KeptApplying(u64),
    #[error(
        "{site} is a {role} site; a forced failover promotes only a standby or a held lagged site (with a quorum, use \
         switchover)"
    )]
    NotAStandby { site: String, role: &'static str },
    #[error("a forced failover names the operator who forces it; it is recorded")]
    NoOperator,
    #[error("{site} was already promoted by a forced failover ({detail})")]
    AlreadyPromoted { site: String, detail: String },
    #[error(
        "{site} heard from the primary (node {primary}) {heard_ms_ago} ms ago: the quorum is alive; use switchover"
    )]
    PrimaryAlive { site: String, primary: u64, heard_ms_ago: u64 },
    /// Nothing was changed: the operator has not accepted the loss.
    #[error("refused: nothing changed. Accept the data loss to promote {site} knowing what it lacks")]
    DataLossNotAccepted { site: String },
    #[error("{site} is a {role} site; only a lagged site delays and holds its applies")]
    NotLagged { site: String, role: &'static str },
    #[error("{site} accepted the forced failover but does not lead after {secs} s; see its log")]
    NotPromoted { site: String, secs: u64 },
}

/// Talks to the sites named in one site's cluster configuration. Cheap to clone.
#[derive(Clone)]
pub struct ControlClient {
    site: String,
    cluster: ClusterSection,
}

impl ControlClient {
    /// From a site's whole configuration (the `maildr cluster` commands).
    pub fn new(config: SiteConfig) -> Result<ControlClient, OpsError> {
        ControlClient::from_cluster(&config.site.name, config.cluster)
    }

    /// From the `[cluster]` section of the site named `site`; refused when the
    /// section names no members (a site alone).
    pub fn from_cluster(site: &str, cluster: ClusterSection) -> Result<ControlClient, OpsError> {
        if cluster.members.is_empty() {
            return Err(OpsError::NotACluster(site.to_string()));
        }
        if !cluster.members.iter().any(|m| m.node_id == cluster.node_id) {
            // The config check refuses this too; a client built by hand must not panic later.
            return Err(OpsError::UnknownMember {
                site: format!("node {}", cluster.node_id),
                members: names(&cluster),
            });
        }
        Ok(ControlClient { site: site.to_string(), cluster })
    }

    /// The site whose config this is.
    pub fn local(&self) -> &ClusterMember {
        self.cluster.members.iter().find(|m| m.node_id == self.cluster.node_id).expect("checked in from_cluster")
    }

    pub fn members(&self) -> &[ClusterMember] {
        &self.cluster.members
    }

    /// The name of the site whose config this is.
    pub fn site(&self) -> &str {
        &self.site
    }

    fn client(&self, member: &ClusterMember) -> PeerClient {
        // Our own site is reached at its listen address; others at the configured
        // address (in the lab: through this site's fault-proxy link).
        let addr =
            if member.node_id == self.cluster.node_id { self.cluster.listen.to_string() } else { member.addr.clone() };
        PeerClient::new(
            member.node_id,
            member.site.clone(),
            addr,
            self.cluster.secret.clone().unwrap_or_default(),
            None,
        )
    }

    /// This site's replication listener.
    pub fn listen_addr(&self) -> SocketAddr {
        self.cluster.listen
    }

    pub async fn call(&self, member: &ClusterMember, request: ControlRequest) -> Result<ControlResponse, OpsError> {
        self.call_with_timeout(member, request, CONTROL_TIMEOUT).await
    }

    pub async fn call_with_timeout(
        &self,
        member: &ClusterMember,
        request: ControlRequest,
        timeout: Duration,
    ) -> Result<ControlResponse, OpsError> {
        let client = self.client(member);
        match client.call(&PeerRequest::Control(request), timeout, false).await? {
            PeerResponse::Control(Ok(response)) => Ok(response),
            PeerResponse::Control(Err(reason)) => Err(OpsError::Refused { site: member.site.clone(), reason }),
            other => Err(OpsError::Unexpected { site: member.site.clone(), what: format!("{other:?}") }),
        }
    }

    pub async fn status_of(&self, member: &ClusterMember) -> Result<SiteStatus, OpsError> {
        self.status_within(member, CONTROL_TIMEOUT).await
    }

    /// The member's own status, asked with a deadline.
    pub async fn status_within(&self, member: &ClusterMember, timeout: Duration) -> Result<SiteStatus, OpsError> {
        match self.call_with_timeout(member, ControlRequest::Status, timeout).await? {
            ControlResponse::Status(s) => Ok(*s),
            other => Err(OpsError::Unexpected { site: member.site.clone(), what: format!("status with {other:?}") }),
        }
    }

    /// How long a standby must not have heard from a primary before a forced failover
    /// may promote it: [`PRIMARY_SILENCE_ELECTION_TIMEOUTS`] of this config's longest
    /// election timeout (the standby checks again with its own).
    pub fn primary_silence_ms(&self) -> u64 {
        PRIMARY_SILENCE_ELECTION_TIMEOUTS * self.cluster.election_timeout_max_ms
    }

    pub fn member_named(&self, site: &str) -> Result<&ClusterMember, OpsError> {
        self.members()
            .iter()
            .find(|m| m.site == site)
            .ok_or_else(|| OpsError::UnknownMember { site: site.to_string(), members: names(&self.cluster) })
    }
}

fn names(cluster: &ClusterSection) -> String {
    cluster.members.iter().map(|m| m.site.as_str()).collect::<Vec<_>>().join(", ")
}

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

/// Planned switchover: ask the primary to hand its lead to data site `to`. The
/// primary refuses unless `to` is healthy and caught up.
pub async fn switchover(client: &ControlClient, to: &str) -> Result<SwitchoverReport, OpsError> {
    let target = client.member_named(to)?.clone();
    if target.role != SiteRole::Data {
        return Err(OpsError::NotADataSite { site: to.to_string(), role: target.role.name() });
    }
    let local = client.local().clone();
    let leader = client.status_of(&local).await?.leader.ok_or(OpsError::NoPrimary)?;
    let primary =
        client.members().iter().find(|m| m.node_id == leader).ok_or(OpsError::PrimaryNotConfigured(leader))?.clone();
    match client.call(&primary, ControlRequest::HandOver { to: target.node_id }).await? {
        ControlResponse::BecamePrimary { unavailable_ms, term } => {
            Ok(SwitchoverReport { primary: to.to_string(), term, unavailable_ms })
        }
        other => Err(OpsError::Unexpected { site: primary.site, what: format!("switchover with {other:?}") }),
    }
}

/// What a forced failover to `to` would lose. Refused unless `to` is a standby that
/// answers and was not promoted already; changes nothing.
pub async fn failover_loss(client: &ControlClient, to: &str) -> Result<FailoverLoss, OpsError> {
    let target = client.member_named(to)?;
    if !target.role.is_learner() {
        return Err(OpsError::NotAStandby { site: to.to_string(), role: target.role.name() });
    }
    let status = client.status_of(target).await?;
    if let Some(done) = &status.forced_failover {
        return Err(OpsError::AlreadyPromoted { site: to.to_string(), detail: done.event_detail() });
    }
    if target.role == SiteRole::Lagged && status.apply_delay.as_ref().is_none_or(|d| d.hold.is_none()) {
        return Err(OpsError::Refused {
            site: to.to_string(),
            reason: "a lagged site is promoted only while held: run `maildr cluster hold-apply` first, so that the \
                     state it keeps is the one you chose"
                .into(),
        });
    }
    Ok(FailoverLoss::of(&status))
}

/// Forced failover, for when the quorum is gone for good: promote the standby `to`
/// to the only voter of a new cluster, recording `by` as the operator. Refused
/// (nothing changed) for anything but a standby, while the standby still hears from
/// a primary, and unless `accept_data_loss`. Returns once the standby accepted; it
/// then restarts, and [`wait_until_promoted`] waits for it to lead.
pub async fn failover(
    client: &ControlClient,
    to: &str,
    by: &str,
    accept_data_loss: bool,
) -> Result<FailoverReport, OpsError> {
    if by.trim().is_empty() {
        return Err(OpsError::NoOperator);
    }
    let loss = failover_loss(client, to).await?;
    if let Some(c) = loss.primary_contact.as_ref().filter(|c| c.heard_ms_ago < client.primary_silence_ms()) {
        return Err(OpsError::PrimaryAlive { site: to.to_string(), primary: c.primary, heard_ms_ago: c.heard_ms_ago });
    }
    if !accept_data_loss {
        return Err(OpsError::DataLossNotAccepted { site: to.to_string() });
    }
    let target = client.member_named(to)?.clone();
    match client.call(&target, ControlRequest::ForceFailover { by: by.trim().to_string() }).await? {
        ControlResponse::ForcedFailover(accepted) => Ok(FailoverReport { loss, accepted }),
        other => Err(OpsError::Unexpected { site: target.site, what: format!("failover with {other:?}") }),
    }
}

/// Wait until the standby `to`, promoted by [`failover`], leads; its status then.
pub async fn wait_until_promoted(client: &ControlClient, to: &str, within: Duration) -> Result<SiteStatus, OpsError> {
    let target = client.member_named(to)?.clone();
    let deadline = Instant::now() + within;
    loop {
        // The standby restarts in between: an unanswered call is expected.
        if let Ok(s) = client.status_within(&target, FAILOVER_POLL_TIMEOUT).await {
            if s.state == "Leader" && s.forced_failover.is_some() {
                return Ok(s);
            }
        }
        if Instant::now() >= deadline {
            return Err(OpsError::NotPromoted { site: to.to_string(), secs: within.as_secs() });
        }
        tokio::time::sleep(FAILOVER_POLL_PAUSE).await;
    }
}

/// Stop the lagged site `site` from applying anything further, recording `by` as
/// the operator: the state it holds is then kept for recovery until released.
/// Refused (nothing changed) for any other role.
pub async fn hold_apply(client: &ControlClient, site: &str, by: &str) -> Result<ApplyHold, OpsError> {
    if by.trim().is_empty() {
        return Err(OpsError::NoOperator);
    }
    let target = lagged_member(client, site)?;
    match client.call(&target, ControlRequest::HoldApply { by: by.trim().to_string() }).await? {
        ControlResponse::ApplyHeld(hold) => Ok(hold),
        other => Err(OpsError::Unexpected { site: target.site, what: format!("hold with {other:?}") }),
    }
}

/// Let the lagged site `site` apply again; the hold it lifted, if it was held.
pub async fn release_apply(client: &ControlClient, site: &str) -> Result<Option<ApplyHold>, OpsError> {
    let target = lagged_member(client, site)?;
    match client.call(&target, ControlRequest::ReleaseApply).await? {
        ControlResponse::ApplyReleased(lifted) => Ok(lifted),
        other => Err(OpsError::Unexpected { site: target.site, what: format!("release with {other:?}") }),
    }
}

fn lagged_member(client: &ControlClient, site: &str) -> Result<ClusterMember, OpsError> {
    let target = client.member_named(site)?;
    if target.role != SiteRole::Lagged {
        return Err(OpsError::NotLagged { site: site.to_string(), role: target.role.name() });
    }
    Ok(target.clone())
}

/// The sites whose view differs from the one shared by more than half of them.
fn outliers<T: PartialEq>(views: &BTreeMap<String, T>) -> Vec<String> {
    let majority = views.values().find(|v| views.values().filter(|w| w == v).count() * 2 > views.len());
    match majority {
        Some(m) => views.iter().filter(|(_, v)| *v != m).map(|(site, _)| site.clone()).collect(),
        None => Vec::new(),
    }
}

/// Every message of one mailbox the sites do not all agree on, by UID.
fn message_differences(lists: &[(String, Vec<MessageSummary>)]) -> Vec<MessageDifference> {
    let uids: std::collections::BTreeSet<u32> = lists.iter().flat_map(|(_, l)| l.iter().map(|m| m.uid)).collect();
    let mut out = Vec::new();
    for uid in uids {
        let by_site: BTreeMap<String, Option<MessageSummary>> =
            lists.iter().map(|(site, l)| (site.clone(), l.iter().find(|m| m.uid == uid).cloned())).collect();
        let present: Vec<&MessageSummary> = by_site.values().flatten().collect();
        let mut fields: Vec<String> = Vec::new();
        if present.len() < by_site.len() {
            fields.push("absent".into());
        }
        if let Some((first, others)) = present.split_first() {
            for field in others.iter().flat_map(|other| first.differing_fields(other)) {
                if !fields.iter().any(|f| f == field) {
                    fields.push(field.into());
                }
            }
        }
        if !fields.is_empty() {
            out.push(MessageDifference { uid, fields, by_site });
        }
    }
    out
}

/// Compare digests of every reachable site at the same applied index: ask the
/// sites for their applied index, have every site wait until it applied at least
/// the highest, read digests with the index they were read at, and retry while
/// sites read at different indexes (writes kept coming).
pub async fn verify(client: &ControlClient, list_messages: bool) -> Result<VerifyReport, OpsError> {
    let deadline = Instant::now() + VERIFY_DEADLINE;
    let (lagged, compared): (Vec<&ClusterMember>, Vec<&ClusterMember>) =
        client.members().iter().partition(|m| m.role == SiteRole::Lagged);
    let lagged: Vec<String> = lagged.into_iter().map(|m| m.site.clone()).collect();
    loop {
        let mut statuses = Vec::new();
        for member in compared.iter().copied() {
            if let Ok(s) = client.status_of(member).await {
                statuses.push((member.clone(), s));
            }
        }
        let target = statuses.iter().filter_map(|(_, s)| s.applied_index).max().unwrap_or(0);
        let mut reads = Vec::new();
        let mut unreachable = Vec::new();
        for member in compared.iter().copied() {
            let request = ControlRequest::Digests { applied_at_least: target, wait_ms: VERIFY_APPLY_WAIT_MS };
            match client.call(member, request).await {
                Ok(ControlResponse::Digests { applied_index, mailboxes }) => {
                    reads.push((member.clone(), applied_index, mailboxes))
                }
                Ok(other) => {
                    return Err(OpsError::Unexpected {
                        site: member.site.clone(),
                        what: format!("digests with {other:?}"),
                    })
                }
                Err(e) => {
                    tracing::warn!(site = %member.site, error = %e, "not compared");
                    unreachable.push(member.site.clone());
                }
            }
        }
        if reads.len() < 2 {
            return Err(OpsError::TooFewSites(unreachable.join(", ")));
        }
        let index = reads[0].1;
        if reads.iter().any(|(_, i, _)| *i != index) {
            if Instant::now() > deadline {
                return Err(OpsError::KeptApplying(VERIFY_DEADLINE.as_secs()));
            }
            tokio::time::sleep(VERIFY_RETRY_PAUSE).await;
            continue;
        }
        let mut by_mailbox: BTreeMap<u64, BTreeMap<String, Option<MailboxDigest>>> = BTreeMap::new();
        for (member, _, mailboxes) in &reads {
            for m in mailboxes {
                by_mailbox.entry(m.mailbox).or_default().insert(member.site.clone(), Some(m.clone()));
            }
        }
        let mailboxes = by_mailbox.len();
        let mut diverging = Vec::new();
        for (mailbox, mut views) in by_mailbox {
            for (member, _, _) in &reads {
                views.entry(member.site.clone()).or_insert(None);
            }
            let first = views.values().next().cloned().flatten();
            if views.values().all(|v| *v == first) {
                continue;
            }
            let some = views.values().flatten().next();
            let name = some.map(|m| m.name.clone()).unwrap_or_default();
            let account = some.map(|m| m.account_address.clone()).unwrap_or_default();
            let mut differing_uids = BTreeMap::new();
            let mut messages = Vec::new();
            if list_messages {
                let mut lists = Vec::new();
                for (member, _, _) in &reads {
                    let list = match client.call(member, ControlRequest::Messages { mailbox }).await? {
                        ControlResponse::Messages(list) => list,
                        other => {
                            return Err(OpsError::Unexpected {
                                site: member.site.clone(),
                                what: format!("messages with {other:?}"),
                            })
                        }
                    };
                    lists.push((member.site.clone(), list));
                }
                let (_, reference) = &lists[0];
                for (site, list) in &lists[1..] {
                    let mut uids: Vec<u32> = list
                        .iter()
                        .filter(|m| !reference.iter().any(|r| r.same_state(m)))
                        .map(|m| m.uid)
                        .chain(reference.iter().filter(|r| !list.iter().any(|m| r.same_state(m))).map(|m| m.uid))
                        .collect();
                    uids.sort_unstable();
                    uids.dedup();
                    differing_uids.insert(site.clone(), uids);
                }
                messages = message_differences(&lists);
            }
            let outliers = outliers(&views);
            diverging.push(Divergence { mailbox, account, name, by_site: views, outliers, differing_uids, messages });
        }
        return Ok(VerifyReport {
            applied_index: index,
            sites: reads.iter().map(|(m, _, _)| m.site.clone()).collect(),
            unreachable,
            lagged,
            mailboxes,
            diverging,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(uid: u32, modseq: u64, flags: u8) -> MessageSummary {
        MessageSummary {
            uid,
            modseq,
            flags,
            keywords: Vec::new(),
            internal_date: 1_700_000_000,
            size_bytes: 100,
            body: "00".repeat(32),
            body_present: true,
        }
    }

    #[test]
    fn the_site_disagreeing_with_the_majority_is_the_outlier() {
        let views: BTreeMap<String, u8> = [("bj".into(), 1), ("hz".into(), 1), ("sh".into(), 2)].into();
        assert_eq!(outliers(&views), ["sh"]);
        let split: BTreeMap<String, u8> = [("bj".into(), 1), ("sh".into(), 2)].into();
        assert!(outliers(&split).is_empty(), "two sites that disagree: no majority, no suspect");
    }

    #[test]
    fn only_messages_the_sites_disagree_on_are_listed_with_what_differs() {
        let same = message(1, 3, 0);
        let lists = vec![
            ("bj".to_string(), vec![same.clone(), message(2, 4, 0), message(3, 5, 0)]),
            ("hz".to_string(), vec![same.clone(), message(2, 4, 0), message(3, 5, 0)]),
            ("sh".to_string(), vec![same, message(2, 6, maildr_types::SystemFlags::FLAGGED)]),
        ];
        let differences = message_differences(&lists);
        let listed: Vec<(u32, Vec<String>)> = differences.iter().map(|d| (d.uid, d.fields.clone())).collect();
        assert_eq!(listed, [(2, vec!["modseq".into(), "flags".into()]), (3, vec!["absent".into()])]);
        assert_eq!(differences[1].by_site["sh"], None);

        let report = VerifyReport {
            applied_index: 9,
            sites: vec!["bj".into(), "hz".into(), "sh".into()],
            unreachable: vec![],
            lagged: vec!["lg".into()],
            mailboxes: 4,
            diverging: vec![Divergence {
                mailbox: 7,
                account: "bob@example.test".into(),
                name: "INBOX".into(),
                by_site: BTreeMap::new(),
                outliers: vec!["sh".into()],
                differing_uids: BTreeMap::new(),
                messages: differences,
            }],
        };
        let text = report.render();
        assert!(text.contains("DIVERGES: bob@example.test INBOX (mailbox 7)\n"), "{text}");
        assert!(text.contains("  UID 2 differs: modseq, flags\n"), "{text}");
        assert!(text.contains("    sh: modseq 6, flags (\\Flagged),"), "{text}");
        assert!(text.contains("  UID 3 differs: absent\n    bj: modseq 5"), "{text}");
        assert!(text.contains("    sh: no such message\n"), "{text}");
        assert!(text.contains("not compared: lg is lagged"), "{text}");
    }
}
