//! A site that is a member of a Raft group: quorum commit, forwarding to the primary,
//! message body replication, and the control requests behind `maildr cluster`.
//!
//! [`Replicated`] is one site: this module starts it ([`Replicated::start`]) and
//! answers simple questions about it. Each job lives in its own module:
//! - `write`: commit on the primary, forward from elsewhere, read your writes;
//! - `bodies`: body replication (push, fetch, missing bodies, the body channel);
//! - `entry_bodies`: a voter acknowledges an entry only with its body held;
//! - `witness`: a witness's patience, its hand-over of a lead, its body drop;
//! - `leading`: what a primary keeps up while it leads (lag, learners);
//! - `handover`: planned switchover (`hand_over`, `become_primary`);
//! - `membership`: `Init`, `Rejoin`, learners, no return under an old id;
//! - `forced_failover`: promoting a standby when quorum is gone for good;
//! - `lagged`: the lagged site's hold;
//! - `status`: what a site reports about itself and asks its peers;
//! - `dispatch`: the one listener and RPC router of the replication channel.
//!
//! This module never interprets a command (the store does) and never answers a client
//! before the quorum commit; it holds no job of its own beyond starting the site.

mod bodies;
mod campaign;
mod dispatch;
mod entry_bodies;
mod forced_failover;
mod handover;
mod lagged;
mod leading;
mod membership;
pub use membership::seed_restored_site;
mod status;
mod witness;
mod write;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maildr_config::{ClusterMember, ClusterSection, SiteRole};
use maildr_store::Store;
use maildr_types::{BlobHash, MailboxId};
use openraft::{ServerState, SnapshotPolicy};
use tokio::sync::watch;

pub use forced_failover::{
    FENCED_FILE, FENCE_CHECK_EVERY, FORCE_FAILOVER_FILE, PRIMARY_CONTACT_FILE, PRIMARY_CONTACT_SAVE_EVERY,
    PRIMARY_SILENCE_ELECTION_TIMEOUTS, PROMOTED_FILE,
};

use crate::raft::apply_delay::ApplyDelay;
use crate::raft::network::{GreaterLogSeen, Network, PeerClient, PeerDirectory};
use crate::raft::transport::{ChannelSecurity, PeerListener};
use crate::raft::{self, NodeId, RaftStorageError, SiteNode, StateMachineStore, TypeConfig};
use crate::status::{ForcedFailoverRecord, LatencyWindow, PrimaryContact, WriteMetrics};
use crate::WritePathLimits;

/// The openraft handle of maildr.
pub type Raft = openraft::Raft<TypeConfig>;

/// Why a replicated site could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Storage(#[from] RaftStorageError),
    #[error("raft: {0}")]
    Raft(String),
    #[error("cannot listen for replication on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("the cluster configuration has no member with node_id {0}")]
    NotAMember(NodeId),
    #[error(
        "this site's Raft state is new, but {peer} counts node_id {node_id} as a member: a site that lost its data \
         must not come back under its old id (it may have voted or acknowledged entries it no longer has). Give it a \
         new node_id in its config, start it, and run `maildr cluster rejoin --config <its config>`"
    )]
    LostDataUnderOldId { node_id: NodeId, peer: String },
    #[error(
        "the standby {peer} was promoted by a forced failover ({detail}) and node_id {node_id} is not in its cluster: \
         this site's log may hold entries the new cluster never had. Do not start it with this data: wipe its data \
         directory, give it a new node_id in its config, start it, and run `maildr cluster rejoin --config <its \
         config>`"
    )]
    SupersededByForcedFailover { node_id: NodeId, peer: String, detail: String },
    #[error("forced failover: {path}: {detail}")]
    ForcedFailover { path: PathBuf, detail: String },
    #[error("the cluster's certificates: {0}")]
    Certificates(#[from] crate::certs::CertError),
}

/// One site of a replicated cluster.
pub struct Replicated {
    me: NodeId,
    site: String,
    /// The role this site acts in: the configured one, or `data` once promoted.
    role: SiteRole,
    configured_role: SiteRole,
    data_dir: PathBuf,
    election_timeout_min_ms: u64,
    election_timeout_max_ms: u64,
    heartbeat_interval_ms: u64,
    /// When this site last heard from a primary or granted a vote: the silence a
    /// campaign waits for starts here (see `campaign`).
    heard_at: Mutex<Instant>,
    /// When a voter last refused this site's vote for a longer log.
    greater_log: GreaterLogSeen,
    /// Set when this site refused a candidate whose log is shorter than its own:
    /// it may be the one site that can win, so it campaigns soon.
    shorter_candidate_seen: Mutex<Option<Instant>>,
    /// When this site last accepted (or was sent, by a primary of a term it
    /// knows) an append: what its answer to a pre-vote is judged by.
    primary_heard_at: Mutex<Option<Instant>>,
    /// Set once promoted by a forced failover.
    forced_failover: Mutex<Option<ForcedFailoverRecord>>,
    /// Set once a forced failover is accepted: Raft traffic is refused from then on
    /// until the restart.
    promoting: AtomicBool,
    /// The last AppendEntries accepted from a primary.
    primary_contact: Mutex<Option<(Instant, PrimaryContact)>>,
    /// When the contact was last saved to disk (standby and lagged sites).
    primary_contact_saved: Mutex<Option<Instant>>,
    restart: watch::Sender<bool>,
    members: Vec<ClusterMember>,
    security: ChannelSecurity,
    raft: Raft,
    state_machine: StateMachineStore,
    /// A clone of the log store openraft writes through: it knows the sizes of
    /// the newest entries, for each peer's lag in bytes.
    log_store: raft::LogStore,
    directory: PeerDirectory,
    limits: WritePathLimits,
    body_push_timeout: Duration,
    listen_addr: SocketAddr,
    metrics: Arc<Mutex<Metrics>>,
    /// Bodies stored here for writes forwarded to the primary, pushes under way.
    bodies_in_flight: Arc<Mutex<bodies::BodiesInFlight>>,
    /// On the primary: when each follower last had every entry the primary had.
    caught_up_at: Mutex<BTreeMap<NodeId, Instant>>,
    /// Bodies `put_body` is still writing here while their entries go out, with
    /// the outcome once known (see `bodies`); a body leaves once it is durable.
    local_puts: Arc<Mutex<bodies::LocalPuts>>,
    /// Bodies being written here right now (on disk, not yet durable).
    bodies_being_written: Arc<bodies::BodiesBeingWritten>,
    /// Bodies fetched in the background for entries held back without them.
    body_fetches: entry_bodies::BodyFetches,
    /// Bodies arriving in several pieces, by hash, until their last piece.
    partial_bodies: Mutex<BTreeMap<BlobHash, Vec<u8>>>,
    /// Set while this primary hands its lead to another site.
    handing_over: AtomicBool,
    /// The control plane's observations of this site, served to peers that ask.
    observations: Mutex<Option<ObservationSource>>,
    /// On a lagged site: its apply delay and hold.
    apply_delay: Option<Arc<ApplyDelay>>,
    stop: watch::Sender<bool>,
}

/// What a site with no Raft state yet may assume about the cluster before it starts
/// (openraft issue 898: a site that lost its data must not vote under its old id).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FreshStart {
    /// Start only once a majority of the configured voters has answered and none
    /// counts this node id as a member (the sites of a new cluster started together
    /// answer each other).
    #[default]
    AwaitMajority,
    /// The operator bootstraps a brand-new cluster whose sites start one at a time,
    /// or starts one of its sites for the first time after `cluster init`
    /// (`maildr serve --new-cluster`): do not wait for a majority, and start even
    /// where a member counts this node id (the operator says it never held data).
    NewCluster,
}

/// Produces this site's control-plane observations (JSON) on request.
pub type ObservationSource = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

#[derive(Default)]
struct Metrics {
    counters: WriteMetrics,
    commit_latency: LatencyWindow,
    body_push_latency: LatencyWindow,
}

impl Replicated {
    /// Open the site's Raft storage in `data_dir`, start Raft, listen for peers on
    /// `cluster.listen` and start the background tasks (body fetching, lag tracking).
    pub async fn start(
        data_dir: &Path,
        site: &str,
        cluster: &ClusterSection,
        limits: WritePathLimits,
        fresh_start: FreshStart,
    ) -> Result<Arc<Replicated>, StartError> {
        let me = cluster.node_id;
        let member = cluster.members.iter().find(|m| m.node_id == me).ok_or(StartError::NotAMember(me))?;
        let pending = forced_failover::read_record(&data_dir.join(FORCE_FAILOVER_FILE))?;
        let mut promoted = forced_failover::read_record(&data_dir.join(PROMOTED_FILE))?;
        let role = if pending.is_some() || promoted.is_some() { SiteRole::Data } else { member.role };
        let security = ChannelSecurity::from_config(cluster)?;
        let config = raft_config(cluster)?;
        let directory = PeerDirectory::new(
            cluster
                .members
                .iter()
                .filter(|m| m.node_id != me)
                .map(|m| PeerClient::new(m.node_id, m.site.clone(), m.addr.clone(), security.clone(), Some(me))),
        );
        let fresh = !data_dir.join(raft::LOG_DATABASE_FILE).exists();
        let (log_store, state_machine) = open_storage(data_dir).await?;
        if let Some(record) = pending {
            let record = forced_failover::promote_pending(data_dir, member, &log_store, &state_machine, record);
            promoted = Some(record.await?);
        }
        let apply_delay = prepare_role(data_dir, cluster, role, &log_store, &state_machine)?;
        let bind = || async {
            PeerListener::bind(cluster.listen)
                .await
                .map_err(|source| StartError::Listen { addr: cluster.listen, source })
        };
        // A fresh site listens before its check, so that the sites of a new cluster
        // started together answer each other's; the others only once Raft runs.
        let early_listener = if fresh {
            let listener = bind().await?;
            let check = membership::refuse_lost_data_under_old_id(&directory, &cluster.members, me, fresh_start);
            membership::answer_as_fresh_while(&listener, &security, me, site, check).await?;
            Some(listener)
        } else {
            if promoted.is_none() {
                forced_failover::refuse_after_forced_failover(data_dir, &directory, &cluster.members, me).await?;
            }
            None
        };
        let greater_log = GreaterLogSeen::default();
        let network =
            Network { directory: directory.clone(), security: security.clone(), me, greater_log: greater_log.clone() };
        let log_store_view = log_store.clone();
        let raft = Raft::new(me, Arc::new(config), network, log_store, state_machine.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let listener = match early_listener {
            Some(listener) => listener,
            None => bind().await?,
        };
        let listen_addr =
            listener.local_addr().map_err(|source| StartError::Listen { addr: cluster.listen, source })?;
        let (stop, stop_rx) = watch::channel(false);
        let record_event = promoted.as_ref().is_some_and(|r| !r.event_recorded);
        let site = Arc::new(Replicated {
            me,
            site: site.to_string(),
            role,
            configured_role: member.role,
            data_dir: data_dir.to_path_buf(),
            election_timeout_min_ms: cluster.election_timeout_min_ms,
            election_timeout_max_ms: cluster.election_timeout_max_ms,
            heartbeat_interval_ms: cluster.heartbeat_interval_ms,
            heard_at: Mutex::new(Instant::now()),
            greater_log,
            shorter_candidate_seen: Mutex::new(None),
            primary_heard_at: Mutex::new(None),
            forced_failover: Mutex::new(promoted),
            promoting: AtomicBool::new(false),
            primary_contact: Mutex::new(forced_failover::read_primary_contact(data_dir)),
            primary_contact_saved: Mutex::new(None),
            restart: watch::channel(false).0,
            members: cluster.members.clone(),
            security,
            raft,
            state_machine,
            log_store: log_store_view,
            directory,
            limits,
            body_push_timeout: Duration::from_millis(cluster.body_push_timeout_ms),
            listen_addr,
            metrics: Arc::new(Mutex::new(Metrics::default())),
            bodies_in_flight: Arc::default(),
            caught_up_at: Mutex::new(BTreeMap::new()),
            partial_bodies: Mutex::new(BTreeMap::new()),
            body_fetches: entry_bodies::BodyFetches::default(),
            local_puts: Arc::default(),
            bodies_being_written: Arc::default(),
            handing_over: AtomicBool::new(false),
            observations: Mutex::new(None),
            apply_delay,
            stop,
        });
        site.spawn_tasks(listener, stop_rx, record_event);
        tracing::info!(site = %site.site, node_id = me, role = role.name(), %listen_addr, "replication started");
        Ok(site)
    }

    /// Start the background tasks, each stopped by `stop`.
    fn spawn_tasks(self: &Arc<Self>, listener: PeerListener, stop: watch::Receiver<bool>, record_event: bool) {
        tokio::spawn(dispatch::serve_peers(Arc::clone(self), listener, stop.clone()));
        tokio::spawn(leading::track_lag(Arc::clone(self), stop.clone()));
        tokio::spawn(campaign::campaign_when_silent(Arc::clone(self), stop.clone()));
        if record_event {
            tokio::spawn(forced_failover::record_forced_failover(Arc::clone(self), stop.clone()));
        }
        let promoted = self.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).is_some();
        if !promoted {
            tokio::spawn(forced_failover::fence_if_superseded(Arc::clone(self), stop.clone()));
        }
        if self.role == SiteRole::Witness {
            tokio::spawn(witness::drop_bodies_the_data_sites_hold(Arc::clone(self), stop));
        } else {
            tokio::spawn(bodies::fetch_missing_bodies(Arc::clone(self), stop));
        }
    }

    /// This site's name.
    pub fn site_name(&self) -> &str {
        &self.site
    }

    /// This site's Raft node id.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// Every configured member.
    pub fn members(&self) -> &[ClusterMember] {
        &self.members
    }

    /// Whether this site is the primary now (Raft leader).
    pub fn is_primary(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.state == ServerState::Leader && m.current_leader == Some(self.me)
    }

    /// The site name of the primary this site knows of.
    pub fn primary_site(&self) -> Option<String> {
        let leader = self.raft.metrics().borrow().current_leader?;
        if leader == self.me {
            return Some(self.site.clone());
        }
        self.site_in_membership(leader).or_else(|| self.directory.get(leader).map(|p| p.site.clone()))
    }

    /// Changes of Raft state (leader, term, indexes): wakes a watcher on every one.
    pub fn raft_changes(&self) -> watch::Receiver<openraft::RaftMetrics<NodeId, SiteNode>> {
        self.raft.metrics()
    }

    /// Where the replication listener is bound.
    pub fn listen_addr(&self) -> SocketAddr {
        self.listen_addr
    }

    /// The role this site acts in: its configured role, or `data` once a forced
    /// failover promoted it (it then serves mail).
    pub fn effective_role(&self) -> SiteRole {
        self.role
    }

    /// Resolves once this site asks its owner to restart it (a forced failover was
    /// accepted and the Raft state must be rewritten before Raft starts again). The
    /// owner shuts the site down and starts it again with the same configuration.
    pub async fn restart_requested(&self) {
        let mut rx = self.restart.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The state machine of this site (backups read the store and the archive spool
    /// through it).
    pub fn state_machine(&self) -> &StateMachineStore {
        &self.state_machine
    }

    /// The store as applied on this site.
    pub fn store(&self) -> Arc<Store> {
        self.state_machine.store()
    }

    pub fn watch_mailboxes(&self) -> tokio::sync::broadcast::Receiver<MailboxId> {
        self.state_machine.watch_mailboxes()
    }

    /// A voter or learner that knows a primary and has applied everything it holds.
    /// (openraft 0.9 does not tell a follower the primary's commit index; entries
    /// not yet received cannot be seen here, so this is the best local evidence.)
    pub fn is_caught_up(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        let member = m.membership_config.membership().get_node(&self.me).is_some();
        let applied = m.last_applied.map(|l| l.index);
        member && m.current_leader.is_some() && applied.is_some() && applied >= m.last_log_index
    }

    /// Stop Raft and the background tasks.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }

    /// The peer with this node id: by id in our configuration, else by the site
    /// name the membership gives it (a site that rejoined under a new id).
    /// When this site last heard from `node` (an answer, or a request from it),
    /// through the configured peer of its site when it rejoined under a new id.
    fn last_heard_from(&self, node: NodeId) -> Option<Instant> {
        let peer = self
            .directory
            .get(node)
            .or_else(|| self.site_in_membership(node).and_then(|site| self.directory.by_site(&site)))?;
        peer.last_heard()
    }

    fn peer(&self, node: NodeId) -> Option<Arc<PeerClient>> {
        if let Some(peer) = self.directory.get(node) {
            return Some(peer);
        }
        let site = self.site_in_membership(node)?;
        let configured = self.directory.by_site(&site)?;
        Some(Arc::new(PeerClient::new(node, site, configured.addr.clone(), self.security.clone(), Some(self.me))))
    }

    fn role_of(&self, node: NodeId) -> Option<SiteRole> {
        let by_id = self.members.iter().find(|m| m.node_id == node).map(|m| m.role);
        by_id.or_else(|| {
            let site = self.site_in_membership(node)?;
            self.members.iter().find(|m| m.site == site).map(|m| m.role)
        })
    }

    /// The site name the replicated membership gives a node id.
    fn site_in_membership(&self, node: NodeId) -> Option<String> {
        Some(self.raft.metrics().borrow().membership_config.membership().get_node(&node)?.site.clone())
    }

    fn site_node(member: &ClusterMember) -> SiteNode {
        SiteNode { site: member.site.clone(), addr: member.addr.clone() }
    }
}

/// Open (or create) the Raft log store and the state machine in `data_dir`.
async fn open_storage(data_dir: &Path) -> Result<(raft::LogStore, StateMachineStore), StartError> {
    let data_dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || raft::open(&data_dir))
        .await
        .map_err(|e| StartError::Raft(format!("opening storage: {e}")))?
        .map_err(StartError::from)
}

/// openraft's configuration, the same for every site.
fn raft_config(cluster: &ClusterSection) -> Result<openraft::Config, StartError> {
    // openraft's own election timer is off: `campaign` decides when to campaign
    // (a witness only after data sites had three times as long, a standby or
    // lagged site never while it is not a voter). Every voter has the same leader
    // lease (openraft's `election_timeout_max`), so the witness refuses a
    // survivor's votes no longer than the survivor's peer data site would.
    openraft::Config {
        cluster_name: "maildr".into(),
        election_timeout_min: cluster.election_timeout_min_ms,
        election_timeout_max: cluster.election_timeout_max_ms,
        heartbeat_interval: cluster.heartbeat_interval_ms,
        install_snapshot_timeout: 10_000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cluster.snapshot_after_entries),
        // Entries kept after a snapshot, for peers slightly behind; a peer
        // further behind gets the snapshot.
        max_in_snapshot_log_to_keep: cluster.snapshot_after_entries.min(1_000),
        enable_elect: false,
        ..Default::default()
    }
    .validate()
    .map_err(|e| StartError::Raft(e.to_string()))
}

/// Set up storage for the site's role: a witness does not track missing bodies; a
/// lagged site stamps arrivals and delays its applies (its [`ApplyDelay`]).
fn prepare_role(
    data_dir: &Path,
    cluster: &ClusterSection,
    role: SiteRole,
    log_store: &raft::LogStore,
    state_machine: &StateMachineStore,
) -> Result<Option<Arc<ApplyDelay>>, StartError> {
    if role == SiteRole::Witness {
        state_machine.ignore_missing_bodies();
    }
    if role != SiteRole::Lagged {
        return Ok(None);
    }
    log_store.stamp_arrivals();
    let delay = Arc::new(ApplyDelay::open(data_dir, Duration::from_secs(cluster.apply_delay_secs))?);
    state_machine.delay_applies(Arc::clone(&delay));
    Ok(Some(delay))
}
