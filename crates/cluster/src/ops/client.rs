//! The operations client: how `maildr cluster`, the admin API and the control plane
//! reach a running site, one typed method per control request.
//!
//! It talks to sites over the replication channel, with the site's own cluster
//! certificate and secret, exactly as sites talk to each other, and turns each answer into a typed value or
//! an [`OpsError`]. It is the only way out of this crate to the control channel: no
//! other crate names a wire type. It must never open a site's files nor decide
//! anything a site decides: every request is checked again by the site that gets it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use maildr_config::{ClusterMember, ClusterSection, SiteConfig};
use maildr_store::{Applied, Command, CommandError};

use super::{OpsError, SwitchoverReport, CONTROL_TIMEOUT, INIT_FRESH_WAIT};
use crate::raft::apply_delay::ApplyHold;
use crate::raft::network::PeerClient;
use crate::raft::transport::ChannelSecurity;
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::raft::NodeId;
use crate::replicated::PRIMARY_SILENCE_ELECTION_TIMEOUTS;
use crate::status::{ForcedFailoverRecord, MailboxDigest, MessageSummary, SiteStatus};

/// How long a rejoin may take: the primary answers once the site caught up.
pub const REJOIN_TIMEOUT: Duration = Duration::from_secs(600);

/// Every mailbox's digest on one site, read at one applied index.
#[derive(Debug, Clone)]
pub struct SiteDigests {
    /// The applied index the digests were read at.
    pub applied_index: u64,
    pub mailboxes: Vec<MailboxDigest>,
}

/// What a rejoin changed.
#[derive(Debug, Clone)]
pub struct Rejoined {
    /// The old node id the site replaced among the voters, if it had one.
    pub replaced: Option<NodeId>,
    /// The voters after the change.
    pub voters: Vec<NodeId>,
}

/// Talks to the sites named in one site's cluster configuration. Cheap to clone.
#[derive(Clone)]
pub struct ControlClient {
    site: String,
    cluster: ClusterSection,
    security: ChannelSecurity,
}

/// The outbound queue as one site holds it.
#[derive(Debug, Clone)]
pub struct QueueSnapshot {
    /// The messages listed (at most `QUEUE_LIST_MAX`), by queue id.
    pub messages: Vec<maildr_store::QueuedMessage>,
    /// How many the queue holds in all.
    pub total: u64,
    /// How messages and recipients have left it since the store began.
    pub left: maildr_store::QueueTotals,
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
        let security = ChannelSecurity::from_config(&cluster)?;
        Ok(ControlClient { site: site.to_string(), cluster, security })
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
        PeerClient::new(member.node_id, member.site.clone(), addr, self.security.clone(), None)
    }

    /// This site's replication listener.
    pub fn listen_addr(&self) -> SocketAddr {
        self.cluster.listen
    }

    async fn call(&self, member: &ClusterMember, request: ControlRequest) -> Result<ControlResponse, OpsError> {
        self.call_with_timeout(member, request, CONTROL_TIMEOUT).await
    }

    async fn call_with_timeout(
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
            other => Err(unexpected(member, "status", other)),
        }
    }

    /// Bootstrap the cluster through this config's own site; `true` when it was
    /// initialised already. Returns once a primary is elected.
    /// Init waits (up to [`INIT_FRESH_WAIT`]) until no voter that answers is still
    /// in its fresh-start check (sites of a new cluster clear each other within a
    /// moment of all listening): a voter still checking would find itself counted
    /// as a member of the cluster just made, and refuse to start.
    pub async fn init(&self) -> Result<bool, OpsError> {
        let local = self.local();
        let deadline = Instant::now() + INIT_FRESH_WAIT;
        for voter in self.cluster.members.iter().filter(|m| m.role.votes()) {
            while let Err(OpsError::Starting(_)) = self.status_within(voter, Duration::from_secs(2)).await {
                if Instant::now() >= deadline {
                    return Err(OpsError::Starting(voter.site.clone()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let mut answer = self.call(local, ControlRequest::Init).await?;
        while matches!(answer, ControlResponse::Fresh) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            answer = self.call(local, ControlRequest::Init).await?;
        }
        match answer {
            ControlResponse::Initialized { already } => Ok(already),
            other => Err(unexpected(local, "init", other)),
        }
    }

    /// Apply an admin command through this config's own site (which forwards it to
    /// the primary). The outer error: the site did not commit it (retry later); the
    /// inner one: the state refused it.
    pub async fn write(&self, command: Command) -> Result<Result<Applied, CommandError>, OpsError> {
        let local = self.local();
        match self.call(local, ControlRequest::Write(command)).await? {
            ControlResponse::Written(result) => Ok(result),
            other => Err(unexpected(local, "a write", other)),
        }
    }

    /// Store a message body through this config's own site (on it and a peer), for a
    /// `write` that refers to it.
    pub async fn store_body(&self, body: Vec<u8>) -> Result<maildr_types::BlobRef, OpsError> {
        let local = self.local();
        match self.call(local, ControlRequest::StoreBody(body)).await? {
            ControlResponse::BodyStored(stored) => Ok(stored),
            other => Err(unexpected(local, "a body stored", other)),
        }
    }

    /// Ask `primary` to hand its lead to data site `to`; the new primary's term and
    /// how long writes were unavailable.
    pub async fn hand_over(&self, primary: &ClusterMember, to: &ClusterMember) -> Result<SwitchoverReport, OpsError> {
        match self.call(primary, ControlRequest::HandOver { to: to.node_id }).await? {
            ControlResponse::BecamePrimary { unavailable_ms, term } => {
                Ok(SwitchoverReport { primary: to.site.clone(), term, unavailable_ms })
            }
            other => Err(unexpected(primary, "switchover", other)),
        }
    }

    /// Every mailbox's digest on `member`, read at one applied index once it has
    /// applied at least `applied_at_least` (it waits at most `wait_ms` for that).
    pub async fn digests(
        &self,
        member: &ClusterMember,
        applied_at_least: u64,
        wait_ms: u64,
    ) -> Result<SiteDigests, OpsError> {
        match self.call(member, ControlRequest::Digests { applied_at_least, wait_ms }).await? {
            ControlResponse::Digests { applied_index, mailboxes } => Ok(SiteDigests { applied_index, mailboxes }),
            other => Err(unexpected(member, "digests", other)),
        }
    }

    /// `member`'s digests at exactly log index `index`, not yet applied there
    /// when asked (see [`ControlRequest::DigestsAt`]).
    pub async fn digests_at(&self, member: &ClusterMember, index: u64, wait_ms: u64) -> Result<SiteDigests, OpsError> {
        match self.call(member, ControlRequest::DigestsAt { index, wait_ms }).await? {
            ControlResponse::Digests { applied_index, mailboxes } => Ok(SiteDigests { applied_index, mailboxes }),
            other => Err(unexpected(member, "digests", other)),
        }
    }

    /// The outbound queue as `member` holds it: (listed messages, total).
    pub async fn queue(&self, member: &ClusterMember) -> Result<QueueSnapshot, OpsError> {
        match self.call(member, ControlRequest::Queue).await? {
            ControlResponse::Queue { messages, total, left } => Ok(QueueSnapshot { messages, total, left }),
            other => Err(unexpected(member, "the queue", other)),
        }
    }

    /// The messages of one mailbox on `member`.
    pub async fn messages(&self, member: &ClusterMember, mailbox: u64) -> Result<Vec<MessageSummary>, OpsError> {
        match self.call(member, ControlRequest::Messages { mailbox }).await? {
            ControlResponse::Messages(list) => Ok(list),
            other => Err(unexpected(member, "messages", other)),
        }
    }

    /// Ask `primary` to take this config's own site (running empty under its new
    /// node id) back in: as a learner until caught up, then in place of its old node
    /// id among the voters. Waits up to [`REJOIN_TIMEOUT`].
    pub async fn rejoin(&self, primary: &ClusterMember) -> Result<Rejoined, OpsError> {
        let me = self.local();
        let request =
            ControlRequest::Rejoin { node_id: me.node_id, site: me.site.clone(), addr: self.listen_addr().to_string() };
        match self.call_with_timeout(primary, request, REJOIN_TIMEOUT).await? {
            ControlResponse::Rejoined { replaced, voters } => Ok(Rejoined { replaced, voters }),
            other => Err(unexpected(primary, "rejoin", other)),
        }
    }

    /// Ask the standby (or held lagged site) `member` to accept a forced failover
    /// forced `by` the named operator; the site checks again itself.
    pub async fn force_failover(&self, member: &ClusterMember, by: &str) -> Result<ForcedFailoverRecord, OpsError> {
        match self.call(member, ControlRequest::ForceFailover { by: by.to_string() }).await? {
            ControlResponse::ForcedFailover(accepted) => Ok(accepted),
            other => Err(unexpected(member, "failover", other)),
        }
    }

    /// Ask the lagged site `member` to stop applying, held `by` the named operator.
    pub async fn hold_apply(&self, member: &ClusterMember, by: &str) -> Result<ApplyHold, OpsError> {
        match self.call(member, ControlRequest::HoldApply { by: by.to_string() }).await? {
            ControlResponse::ApplyHeld(hold) => Ok(hold),
            other => Err(unexpected(member, "hold", other)),
        }
    }

    /// Ask the lagged site `member` to apply again; the hold it lifted, if any.
    pub async fn release_apply(&self, member: &ClusterMember) -> Result<Option<ApplyHold>, OpsError> {
        match self.call(member, ControlRequest::ReleaseApply).await? {
            ControlResponse::ApplyReleased(lifted) => Ok(lifted),
            other => Err(unexpected(member, "release", other)),
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

fn unexpected(member: &ClusterMember, what: &str, answer: ControlResponse) -> OpsError {
    if matches!(answer, ControlResponse::Fresh) {
        return OpsError::Starting(member.site.clone());
    }
    OpsError::Unexpected { site: member.site.clone(), what: format!("{what} with {answer:?}") }
}
