//! A site that is a member of a Raft group: quorum commit, forwarding to the primary,
//! message body replication, and the control requests behind `maildr cluster`.
//!
//! # The write path
//! A write on the primary is `Raft::client_write`, which returns once a quorum of
//! voters has the entry fsynced and the primary has applied it. A data site that is not
//! primary forwards the command to the primary over the replication channel, gets the
//! entry's log index back, and answers its client only once it has applied that index
//! itself, so the client then reads its own write here. Every write has one deadline
//! (`store.write_timeout_ms`); past it the client is told "unavailable, retry" (SMTP
//! 451, IMAP NO \[UNAVAILABLE\]). A write that timed out may still commit later: the
//! client's retry is then a duplicate, never a loss.
//!
//! # Message bodies
//! Bodies never enter the Raft log. [`Replicated::put_body`] stores the body here and
//! pushes it to every peer, and returns once at least one peer has it durable: the
//! body is then on two sites before the entry that refers to it is proposed. A site
//! whose applied state refers to a body it lacks (it was down during the push, or it
//! installed a snapshot, which carries metadata only) fetches it from a peer in the
//! background; readers that need it sooner ask for it with [`Replicated::ensure_bodies`].
//!
//! # Forced failover to a standby
//! When quorum is gone for good (both cities lost), the operator may promote the
//! standby (`maildr cluster failover --force`), accepting that entries the lost
//! primary committed after the standby's last one are lost. openraft 0.9 changes
//! membership only through a quorum, so the standby rewrites its own Raft state, as
//! etcd's `--force-new-cluster` does. The running `Raft` owns the log store, so the
//! rewrite happens between two runs of the site:
//! 1. `ControlRequest::ForceFailover` checks that this is a standby that has not heard
//!    from a primary for [`PRIMARY_SILENCE_ELECTION_TIMEOUTS`] election timeouts,
//!    stops taking Raft traffic, writes [`FORCE_FAILOVER_FILE`] into the data
//!    directory, answers, and asks its owner to restart it
//!    ([`Replicated::restart_requested`]; `maildr serve` re-executes itself, keeping
//!    its pid).
//! 2. [`Replicated::start`] finds the file and, before `Raft::new`, appends a
//!    membership entry whose only voter is this site under a new term, with a vote
//!    for itself in that term ([`crate::raft::LogStore::force_single_voter`]). openraft
//!    takes the last membership entry in the log as effective even if uncommitted, and
//!    a lone voter elects itself at its first tick; its first entry as leader commits
//!    everything the standby's log holds. [`PROMOTED_FILE`] then records the promotion
//!    for good: from now on the site acts as a data site ([`Replicated::effective_role`])
//!    and serves mail, whatever its configured role.
//! 3. Once it leads, it commits a `forced_failover` event naming the operator and the
//!    last index it had.
//!
//! The old sites still count themselves (and each other) as voters of the old
//! membership. A promoted site refuses Raft traffic from any node outside its own
//! membership, so an old site cannot pull it back or overwrite its log. The old sites
//! must not be restarted with their data: they could form the old quorum again. Wipe
//! each one's data directory, give it a new `node_id`, start it and run
//! `maildr cluster rejoin` against the promoted site.
//!
//! This module never interprets a command (the store does) and never answers a client
//! before the quorum commit.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maildr_config::{ClusterMember, ClusterSection, SiteRole};
use maildr_store::{Applied, Command, ControlEventKind, Store};
use maildr_types::{BlobHash, BlobRef, MailboxId};
use openraft::error::{ClientWriteError, RaftError};
use openraft::raft::AppendEntriesResponse;
use openraft::{ServerState, SnapshotPolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::raft::apply_delay::ApplyDelay;
use crate::raft::network::{Network, PeerCallError, PeerClient, PeerDirectory};
use crate::raft::wire::{
    read_frame, write_frame, BodyPiece, ControlRequest, ControlResponse, ForwardError, ForwardedWrite, PeerRequest,
    PeerResponse, BODY_CHUNK_BYTES,
};
use crate::raft::{self, EntryOutcome, NodeId, RaftStorageError, SiteNode, StateMachineStore, TypeConfig};
use crate::status::{
    ApplyDelayStatus, ForcedFailoverRecord, LatencyWindow, MailboxDigest, MailboxDigestOf, MessageSummary,
    MessageSummaryOf, PeerStatus, PrimaryContact, SiteStatus, WriteMetrics,
};
use crate::{record_file, WriteError, WritePathLimits};

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
}

/// Written into the data directory when a forced failover is accepted, removed once
/// [`Replicated::start`] has rewritten the Raft state.
pub const FORCE_FAILOVER_FILE: &str = "force-failover.json";

/// Written into the data directory once a standby has been promoted; it stays.
pub const PROMOTED_FILE: &str = "promoted.json";

/// A standby refuses a forced failover while it heard from a primary within this
/// many (longest) election timeouts: the quorum is then alive, and a planned
/// switchover is the tool.
pub const PRIMARY_SILENCE_ELECTION_TIMEOUTS: u64 = 2;

/// One site of a replicated cluster.
pub struct Replicated {
    me: NodeId,
    site: String,
    /// The role this site acts in: the configured one, or `data` once promoted.
    role: SiteRole,
    configured_role: SiteRole,
    data_dir: PathBuf,
    election_timeout_max_ms: u64,
    /// Set once promoted by a forced failover.
    forced_failover: Mutex<Option<ForcedFailoverRecord>>,
    /// Set once a forced failover is accepted: Raft traffic is refused from then on
    /// until the restart.
    promoting: AtomicBool,
    /// The last AppendEntries accepted from a primary.
    primary_contact: Mutex<Option<(Instant, PrimaryContact)>>,
    restart: watch::Sender<bool>,
    members: Vec<ClusterMember>,
    secret: String,
    raft: Raft,
    state_machine: StateMachineStore,
    /// A clone of the log store openraft writes through: it knows the sizes of
    /// the newest entries, for each peer's lag in bytes.
    log_store: raft::LogStore,
    directory: PeerDirectory,
    limits: WritePathLimits,
    body_push_timeout: Duration,
    listen_addr: SocketAddr,
    metrics: Mutex<Metrics>,
    /// On the primary: when each follower last had every entry the primary had.
    caught_up_at: Mutex<BTreeMap<NodeId, Instant>>,
    /// Bodies arriving in several pieces, by hash, until their last piece.
    partial_bodies: Mutex<BTreeMap<BlobHash, Vec<u8>>>,
    /// Set while this primary hands its lead to another site.
    handing_over: std::sync::atomic::AtomicBool,
    /// The control plane's observations of this site, served to peers that ask.
    observations: Mutex<Option<ObservationSource>>,
    /// On a lagged site: its apply delay and hold.
    apply_delay: Option<Arc<ApplyDelay>>,
    stop: watch::Sender<bool>,
}

/// Produces this site's control-plane observations (JSON) on request.
pub type ObservationSource = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// How many times longer than a data site a witness waits before it campaigns.
const WITNESS_ELECTION_PATIENCE: u64 = 3;

/// Entries a site may lack and still be handed the lead (it gets them while it
/// campaigns; a vote is refused only to a log behind the voter's).
const CAUGHT_UP_SLACK_ENTRIES: u64 = 64;

/// Least time between two hand-over attempts of a witness that leads.
const HANDOVER_RETRY: Duration = Duration::from_millis(300);
/// How often a held write (or a transfer waiting for its target) looks again.
const HANDOVER_WRITE_HOLD_POLL: Duration = Duration::from_millis(5);
/// How long a leadership transfer holds writes for the target to match the log.
const HANDOVER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// Most bodies one `HoldsBodies` question names.
const HOLDS_BODIES_MAX: usize = 1024;

/// How often a witness looks for bodies it may drop.
const WITNESS_BODY_SWEEP: Duration = Duration::from_secs(2);

/// Most bodies received in pieces at once; beyond it one of them is dropped (its
/// sender's push then fails and the body is fetched later instead).
const PARTIAL_BODIES_MAX: usize = 16;

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
    ) -> Result<Arc<Replicated>, StartError> {
        let me = cluster.node_id;
        let member = cluster.members.iter().find(|m| m.node_id == me).ok_or(StartError::NotAMember(me))?;
        let pending = read_record(&data_dir.join(FORCE_FAILOVER_FILE))?;
        let mut promoted = read_record(&data_dir.join(PROMOTED_FILE))?;
        let role = if pending.is_some() || promoted.is_some() { SiteRole::Data } else { member.role };
        let secret = cluster.secret.clone().unwrap_or_default();
        // A witness campaigns only after data sites had three times as long: it
        // leads only when no data site can (the survivor lacks entries that only the
        // witness holds), and then hands the lead to the first data site it has
        // brought up to date (see `track_lag`). A standby or lagged site never campaigns.
        let patience = if role == SiteRole::Witness { WITNESS_ELECTION_PATIENCE } else { 1 };
        let config = openraft::Config {
            cluster_name: "maildr".into(),
            election_timeout_min: cluster.election_timeout_min_ms * patience,
            election_timeout_max: cluster.election_timeout_max_ms * patience,
            heartbeat_interval: cluster.heartbeat_interval_ms,
            install_snapshot_timeout: 10_000,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cluster.snapshot_after_entries),
            // Entries kept after a snapshot, for peers slightly behind; a peer
            // further behind gets the snapshot.
            max_in_snapshot_log_to_keep: cluster.snapshot_after_entries.min(1_000),
            enable_elect: !role.is_learner(),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let directory = PeerDirectory::new(
            cluster
                .members
                .iter()
                .filter(|m| m.node_id != me)
                .map(|m| PeerClient::new(m.node_id, m.site.clone(), m.addr.clone(), secret.clone(), Some(me))),
        );
        let fresh = !data_dir.join(raft::LOG_DATABASE_FILE).exists();
        let (log_store, state_machine) = {
            let data_dir = data_dir.to_path_buf();
            tokio::task::spawn_blocking(move || raft::open(&data_dir))
                .await
                .map_err(|e| StartError::Raft(format!("opening storage: {e}")))??
        };
        if let Some(record) = pending {
            // A held lagged site is promoted with the state it applied, not with the
            // log it received since (which may hold the corruption it was held for).
            let keep_through = match member.role {
                SiteRole::Lagged => state_machine.applied_log_id()?,
                _ => None,
            };
            promoted = Some(promote(data_dir, me, member, &log_store, record, keep_through).await?);
        }
        if role == SiteRole::Witness {
            state_machine.ignore_missing_bodies();
        }
        let apply_delay = match role {
            SiteRole::Lagged => {
                log_store.stamp_arrivals();
                let delay = Arc::new(ApplyDelay::open(data_dir, Duration::from_secs(cluster.apply_delay_secs))?);
                state_machine.delay_applies(Arc::clone(&delay));
                Some(delay)
            }
            _ => None,
        };
        if fresh {
            refuse_lost_data_under_old_id(&directory, me).await?;
        } else if promoted.is_none() {
            refuse_after_forced_failover(&directory, &cluster.members, me).await?;
        }
        let network = Network { directory: directory.clone(), secret: secret.clone(), me };
        let log_store_view = log_store.clone();
        let raft = Raft::new(me, Arc::new(config), network, log_store, state_machine.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;

        let listener = TcpListener::bind(cluster.listen)
            .await
            .map_err(|source| StartError::Listen { addr: cluster.listen, source })?;
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
            election_timeout_max_ms: cluster.election_timeout_max_ms,
            forced_failover: Mutex::new(promoted),
            promoting: AtomicBool::new(false),
            primary_contact: Mutex::new(None),
            restart: watch::channel(false).0,
            members: cluster.members.clone(),
            secret,
            raft,
            state_machine,
            log_store: log_store_view,
            directory,
            limits,
            body_push_timeout: Duration::from_millis(cluster.body_push_timeout_ms),
            listen_addr,
            metrics: Mutex::new(Metrics::default()),
            caught_up_at: Mutex::new(BTreeMap::new()),
            partial_bodies: Mutex::new(BTreeMap::new()),
            handing_over: std::sync::atomic::AtomicBool::new(false),
            observations: Mutex::new(None),
            apply_delay,
            stop,
        });
        tokio::spawn(serve_peers(Arc::clone(&site), listener, stop_rx.clone()));
        tokio::spawn(track_lag(Arc::clone(&site), stop_rx.clone()));
        if record_event {
            tokio::spawn(record_forced_failover(Arc::clone(&site), stop_rx.clone()));
        }
        if role == SiteRole::Witness {
            tokio::spawn(drop_bodies_the_data_sites_hold(Arc::clone(&site), stop_rx));
        } else {
            tokio::spawn(fetch_missing_bodies(Arc::clone(&site), stop_rx));
        }
        tracing::info!(site = %site.site, node_id = me, role = role.name(), %listen_addr, "replication started");
        Ok(site)
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

    /// How long ago this site last knew itself part of a majority: the age of the
    /// contact (an answer, or a request) with the voters it needs besides itself,
    /// the most recent ones first. Heartbeats, forwarded writes and the control
    /// plane's status calls all count, so a follower whose primary died but who
    /// still hears the witness is not cut off, while a partitioned site is.
    /// `u64::MAX` when it has not heard from enough voters since it started.
    /// (openraft's `millis_since_quorum_ack` is aged only when metrics are
    /// reported, and exists only on the leader.)
    pub fn quorum_silence_ms(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        let others: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|v| *v != self.me).collect();
        let needed = others.len().div_ceil(2);
        if needed == 0 {
            return 0;
        }
        let mut ages: Vec<u64> = others
            .iter()
            .map(|v| self.peer(*v).and_then(|p| p.last_heard()).map_or(u64::MAX, |t| t.elapsed().as_millis() as u64))
            .collect();
        ages.sort_unstable();
        ages[needed - 1]
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

    /// Let peers ask this site for its control-plane observations.
    pub fn set_observation_source(&self, source: ObservationSource) {
        *self.observations.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// This site's own observations (empty when no control plane runs).
    pub fn local_observations(&self) -> Vec<u8> {
        let source = self.observations.lock().unwrap_or_else(|p| p.into_inner()).clone();
        source.map(|f| f()).unwrap_or_default()
    }

    /// Ask every other member for its observations; `None` for a member that did
    /// not answer within `timeout`.
    pub async fn peer_observations(&self, timeout: Duration) -> Vec<(String, Option<Vec<u8>>)> {
        let peers: Vec<Arc<PeerClient>> = self.directory.all().cloned().collect();
        let calls = peers.into_iter().map(|peer| async move {
            let answer = peer.call(&PeerRequest::Control(ControlRequest::Observations), timeout, true).await;
            let bytes = match answer {
                Ok(PeerResponse::Control(Ok(ControlResponse::Observations(bytes)))) => Some(bytes),
                _ => None,
            };
            (peer.site.clone(), bytes)
        });
        futures_join_all(calls).await
    }

    /// Ask member `site` for its Raft status over the replication channel (through
    /// the same link the site replicates on).
    pub async fn peer_status(&self, site: &str, timeout: Duration) -> Result<SiteStatus, String> {
        let peer = self.directory.by_site(site).ok_or_else(|| format!("no member site {site:?}"))?;
        match peer.call(&PeerRequest::Control(ControlRequest::Status), timeout, true).await {
            Ok(PeerResponse::Control(Ok(ControlResponse::Status(s)))) => Ok(*s),
            Ok(other) => Err(format!("{site} answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
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

    /// Commit `command` through the primary; see the module documentation.
    pub async fn write(&self, command: Command) -> Result<Applied, WriteError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.limits.write_timeout_ms);
        let kind = command.kind();
        let result = self.write_by(command, deadline).await;
        let mut metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(WriteError::Unavailable(reason)) => {
                metrics.counters.writes_unavailable += 1;
                tracing::warn!(kind, reason = %reason, "write not committed");
            }
            _ => {
                metrics.counters.writes_committed += 1;
                metrics.commit_latency.record(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        result
    }

    async fn write_by(&self, command: Command, deadline: Instant) -> Result<Applied, WriteError> {
        let unavailable = |why: &str| WriteError::Unavailable(format!("{} not committed: {why}", command.kind()));
        let mut primary_hint: Option<NodeId> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(unavailable("no primary with a quorum answered in time"));
            }
            let target = match primary_hint.take() {
                Some(p) => Some(p),
                None => self.raft.metrics().borrow().current_leader,
            };
            match target {
                Some(primary) if primary == self.me => {
                    if self.handing_over.load(std::sync::atomic::Ordering::SeqCst) {
                        // A leadership transfer holds new writes so the target can
                        // catch up completely and win its election; then they go
                        // to the new primary.
                        tokio::time::sleep(
                            HANDOVER_WRITE_HOLD_POLL.min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                        continue;
                    }
                    match tokio::time::timeout_at(deadline.into(), self.raft.client_write(command.clone())).await {
                        Err(_) => return Err(unavailable("the quorum did not confirm in time")),
                        Ok(Ok(response)) => return outcome(response.data),
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                            primary_hint = f.leader_id.filter(|l| *l != self.me);
                            if primary_hint.is_none() {
                                pause_before_retry(deadline).await;
                            }
                        }
                        Ok(Err(e)) => return Err(unavailable(&e.to_string())),
                    }
                }
                Some(primary) => match self.forward(primary, &command, deadline).await {
                    Forwarded::Done(result) => return result,
                    Forwarded::TryPrimary(next) => {
                        primary_hint = next.filter(|n| *n != primary);
                        if primary_hint.is_none() {
                            pause_before_retry(deadline).await;
                        }
                    }
                },
                None => pause_before_retry(deadline).await,
            }
        }
    }

    async fn forward(&self, primary: NodeId, command: &Command, deadline: Instant) -> Forwarded {
        let Some(peer) = self.peer(primary) else {
            return Forwarded::Done(Err(WriteError::Unavailable(format!(
                "primary {primary} is not in our configuration"
            ))));
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.metrics.lock().unwrap_or_else(|p| p.into_inner()).counters.writes_forwarded += 1;
        // Not idempotent: a forwarded write is sent at most once by this call.
        let response = peer.call(&PeerRequest::Forward(command.clone()), remaining, false).await;
        match response {
            Ok(PeerResponse::Forward(Ok(ForwardedWrite { log_index, outcome }))) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let waited =
                    self.raft.wait(Some(remaining)).applied_index_at_least(Some(log_index), "read your writes").await;
                match waited {
                    Ok(_) => Forwarded::Done(outcome.map_err(WriteError::Refused)),
                    Err(e) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                        "committed at the primary as entry {log_index} but not applied here in time: {e}"
                    )))),
                }
            }
            Ok(PeerResponse::Forward(Err(ForwardError::NotPrimary { primary }))) => Forwarded::TryPrimary(primary),
            Ok(PeerResponse::Forward(Err(ForwardError::Unavailable(reason)))) => {
                Forwarded::Done(Err(WriteError::Unavailable(format!("primary {}: {reason}", peer.site))))
            }
            Ok(other) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                "primary {} answered a forwarded write with {other:?}",
                peer.site
            )))),
            Err(PeerCallError::Io { source, .. }) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                // Nothing was sent: safe to look for the primary again.
                Forwarded::TryPrimary(None)
            }
            Err(e) => Forwarded::Done(Err(WriteError::Unavailable(format!("forwarding to the primary: {e}")))),
        }
    }

    /// A forwarded write, committed here as primary.
    async fn commit_forwarded(&self, command: Command) -> Result<ForwardedWrite, ForwardError> {
        let timeout = Duration::from_millis(self.limits.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        while self.handing_over.load(std::sync::atomic::Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return Err(ForwardError::Unavailable("a leadership transfer did not finish in time".into()));
            }
            tokio::time::sleep(HANDOVER_WRITE_HOLD_POLL).await;
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
            Err(_) => Err(ForwardError::Unavailable("the quorum did not confirm in time".into())),
            Ok(Ok(response)) => match response.data {
                EntryOutcome::Command(outcome) => Ok(ForwardedWrite { log_index: response.log_id.index, outcome }),
                EntryOutcome::NoCommand => Err(ForwardError::Unavailable("entry carried no command".into())),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotPrimary { primary: f.leader_id })
            }
            Ok(Err(e)) => Err(ForwardError::Unavailable(e.to_string())),
        }
    }

    /// Store a body here and on at least one other site before returning (here only,
    /// when this site is the only voter: its log then commits here alone too).
    pub async fn put_body(&self, body: Vec<u8>) -> Result<BlobRef, WriteError> {
        let started = Instant::now();
        let body = Arc::new(body);
        let local = {
            let store = self.store();
            let body = Arc::clone(&body);
            tokio::task::spawn_blocking(move || store.blobs().put(&body))
                .await
                .map_err(|e| WriteError::Unavailable(format!("body writer failed: {e}")))?
                .map_err(|e| WriteError::Unavailable(format!("storing the message body failed: {e}")))?
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let mut pushes = 0;
        for peer in self.directory.all() {
            pushes += 1;
            let peer = Arc::clone(peer);
            let body = Arc::clone(&body);
            let tx = tx.clone();
            let timeout = self.body_push_timeout;
            let hash = local.hash;
            // Each push runs to its end even after the write returns: the more
            // sites hold the body early, the fewer fetches later.
            tokio::spawn(async move {
                let result = push_body(&peer, hash, &body, timeout).await;
                if let Err(e) = &result {
                    tracing::debug!(peer = %peer.site, error = %e, "body push failed");
                }
                let _ = tx.send(result.is_ok()).await;
            });
        }
        drop(tx);
        if self.sole_voter() {
            // A site promoted by a forced failover is its own quorum until others
            // rejoin: its log commits on this one site, and so may bodies.
            return Ok(local);
        }
        let mut failures = 0;
        while let Some(ok) = rx.recv().await {
            if ok {
                let mut metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
                metrics.counters.body_pushes += 1;
                metrics.counters.body_push_bytes += body.len() as u64;
                metrics.body_push_latency.record(started.elapsed().as_secs_f64() * 1000.0);
                return Ok(local);
            }
            failures += 1;
        }
        Err(WriteError::Unavailable(format!(
            "the message body reached no other site ({failures} of {pushes} pushes failed within {} ms)",
            self.body_push_timeout.as_millis()
        )))
    }

    /// Make sure the bodies are here, fetching missing ones from peers; gives up
    /// after `wait` and says which are still missing.
    pub async fn ensure_bodies(&self, hashes: &[BlobHash], wait: Duration) -> Result<(), WriteError> {
        let deadline = Instant::now() + wait;
        for hash in hashes {
            if self.store().blobs().contains(hash) {
                continue;
            }
            loop {
                if self.fetch_body(hash, deadline.saturating_duration_since(Instant::now())).await.is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(WriteError::Unavailable(format!("message body {hash} is not on this site yet")));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Fetch one body from whichever peer has it, verify and store it.
    async fn fetch_body(&self, hash: &BlobHash, timeout: Duration) -> Result<(), String> {
        let mut reasons = Vec::new();
        let mut peers: Vec<_> = self.directory.all().cloned().collect();
        // Data sites hold every body; ask them first.
        peers.sort_by_key(|p| self.members.iter().find(|m| m.node_id == p.node_id).map(|m| m.role != SiteRole::Data));
        for peer in peers {
            match fetch_from(&peer, hash, timeout).await {
                Ok(Some(bytes)) => {
                    let store = self.store();
                    let stored = tokio::task::spawn_blocking(move || store.blobs().put(&bytes))
                        .await
                        .map_err(|e| e.to_string())?
                        .map_err(|e| e.to_string())?;
                    if stored.hash != *hash {
                        reasons.push(format!("{} sent a body that does not match its hash", peer.site));
                        continue;
                    }
                    self.state_machine.body_arrived(hash);
                    self.metrics.lock().unwrap_or_else(|p| p.into_inner()).counters.bodies_fetched += 1;
                    return Ok(());
                }
                Ok(None) => reasons.push(format!("{} does not have it", peer.site)),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        Err(format!("body {hash}: {}", reasons.join("; ")))
    }

    /// Whether this site is the only voter (after a forced failover, until others rejoin).
    fn sole_voter(&self) -> bool {
        let m = self.raft.metrics().borrow().clone();
        m.membership_config.membership().voter_ids().eq([self.me])
    }

    /// This site's view of itself and its peers.
    pub fn status(&self) -> SiteStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let last_log_index = m.last_log_index;
        let caught_up = self.caught_up_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let peers = self
            .directory
            .all()
            .map(|peer| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&peer.node_id)).map(|l| l.map(|l| l.index));
                let lag_entries =
                    matched.map(|matched| last_log_index.unwrap_or(0).saturating_sub(matched.unwrap_or(0)));
                let lag_seconds = lag_entries.map(|lag| match (lag, caught_up.get(&peer.node_id)) {
                    (0, _) => 0.0,
                    (_, Some(at)) => at.elapsed().as_secs_f64(),
                    (_, None) => f64::NAN,
                });
                let lag_bytes = matched
                    .and_then(|matched| self.log_store.lag_bytes(matched.unwrap_or(0), last_log_index.unwrap_or(0)));
                PeerStatus {
                    node_id: peer.node_id,
                    site: peer.site.clone(),
                    role: self.role_of(peer.node_id).map(|r| r.name().to_string()).unwrap_or_default(),
                    last_heard_ms_ago: peer.last_heard().map(|t| t.elapsed().as_millis() as u64),
                    matched_index: matched.flatten(),
                    lag_entries,
                    lag_seconds: lag_seconds.filter(|s| s.is_finite()),
                    lag_bytes: lag_bytes.map(|l| l.bytes),
                    lag_bytes_estimated: lag_bytes.is_some_and(|l| l.estimated),
                }
            })
            .collect();
        let metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let mut counters = metrics.counters.clone();
        counters.commit_latency_ms_p50 = metrics.commit_latency.quantile(0.5);
        counters.commit_latency_ms_p99 = metrics.commit_latency.quantile(0.99);
        counters.body_push_latency_ms_p50 = metrics.body_push_latency.quantile(0.5);
        counters.body_push_latency_ms_p99 = metrics.body_push_latency.quantile(0.99);
        SiteStatus {
            site: self.site.clone(),
            node_id: self.me,
            role: self.role.name().into(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            initialized: !voters.is_empty(),
            voters,
            learners,
            peers,
            missing_bodies: self.state_machine.missing_bodies().len() as u64,
            metrics: counters,
            primary_contact: self.primary_contact(),
            forced_failover: self.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            apply_delay: self.apply_delay_status(last_log_index, m.last_applied.map(|l| l.index)),
        }
    }

    /// What this site last heard from a primary, aged to now.
    fn primary_contact(&self) -> Option<PrimaryContact> {
        let contact = self.primary_contact.lock().unwrap_or_else(|p| p.into_inner()).clone();
        contact.map(|(at, c)| PrimaryContact { heard_ms_ago: at.elapsed().as_millis() as u64, ..c })
    }

    /// Note an AppendEntries accepted from primary `primary`.
    fn note_primary_contact(&self, primary: Option<NodeId>, term: u64, committed: Option<u64>) {
        let Some(primary) = primary else { return };
        let last_log_index_then = self.raft.metrics().borrow().last_log_index;
        let contact =
            PrimaryContact { primary, term, heard_ms_ago: 0, primary_committed_index: committed, last_log_index_then };
        *self.primary_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), contact));
    }

    /// Why Raft traffic led or requested by `from` is refused, if it is: during a
    /// forced failover, and afterwards from any node outside the new membership (an
    /// old site must not pull the promoted site back into the old cluster).
    fn refuse_raft_from(&self, from: Option<NodeId>) -> Option<String> {
        if self.promoting.load(Ordering::SeqCst) {
            return Some(format!("{} is being promoted by a forced failover", self.site));
        }
        self.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).as_ref()?;
        let member =
            from.is_some_and(|id| self.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some());
        (!member).then(|| {
            format!(
                "{} was promoted by a forced failover and node {from:?} is not in its membership: wipe that site's \
                 data, give it a new node_id and run `maildr cluster rejoin`",
                self.site
            )
        })
    }

    /// Accept a forced failover (see the module documentation): check, stop Raft
    /// traffic, write the marker file. The caller answers, then requests the restart.
    /// Which of `hashes` this site holds durably (asked by a witness that wants to
    /// drop the bodies both data sites hold).
    async fn holds_bodies(&self, hashes: Vec<BlobHash>) -> Result<ControlResponse, String> {
        if hashes.len() > HOLDS_BODIES_MAX {
            return Err(format!("{} hashes in one question; at most {HOLDS_BODIES_MAX}", hashes.len()));
        }
        let store = self.store();
        let held = tokio::task::spawn_blocking(move || store.blobs().held_durably(&hashes))
            .await
            .map_err(|e| format!("checking bodies: {e}"))?
            .map_err(|e| format!("checking bodies: {e}"))?;
        Ok(ControlResponse::HeldBodies(held))
    }

    /// On a lagged site: stop applying, durably, and say at which index it stopped.
    async fn hold_apply(&self, by: String) -> Result<ControlResponse, String> {
        let by = by.trim().to_string();
        if by.is_empty() {
            return Err("a hold names the operator who asks for it (--by)".into());
        }
        let delay = self.apply_delay.as_ref().ok_or_else(|| self.not_lagged())?;
        let state_machine = self.state_machine.clone();
        let hold = delay
            .hold(by, move || state_machine.applied_index().ok().flatten())
            .await
            .map_err(|e| format!("recording the hold: {e}"))?;
        Ok(ControlResponse::ApplyHeld(hold))
    }

    /// On a lagged site: resume applying.
    async fn release_apply(&self) -> Result<ControlResponse, String> {
        let delay = self.apply_delay.as_ref().ok_or_else(|| self.not_lagged())?;
        let lifted = delay.release().await.map_err(|e| format!("removing the hold: {e}"))?;
        Ok(ControlResponse::ApplyReleased(lifted))
    }

    fn not_lagged(&self) -> String {
        format!("{} is a {} site; only a lagged site delays or holds its applies", self.site, self.role.name())
    }

    /// The apply delay and hold of a lagged site, for its status.
    fn apply_delay_status(&self, last_log_index: Option<u64>, applied_index: Option<u64>) -> Option<ApplyDelayStatus> {
        self.apply_delay.as_ref().map(|delay| ApplyDelayStatus {
            delay_secs: delay.delay().as_secs(),
            pending_entries: last_log_index.unwrap_or(0).saturating_sub(applied_index.unwrap_or(0)),
            hold: delay.current_hold(),
        })
    }

    async fn force_failover(&self, by: String) -> Result<ControlResponse, String> {
        let by = by.trim().to_string();
        if by.is_empty() {
            return Err("a forced failover names the operator who forces it (--by)".into());
        }
        if let Some(done) = self.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Err(format!("{} was already promoted by a forced failover ({})", self.site, done.event_detail()));
        }
        let held = self.apply_delay.as_ref().and_then(|d| d.current_hold());
        match (self.configured_role, &held) {
            (SiteRole::Standby, _) | (SiteRole::Lagged, Some(_)) => {}
            (SiteRole::Lagged, None) => {
                return Err(format!(
                    "{} is a lagged site that is not held: hold it first (`maildr cluster hold-apply`), so that the \
                     state it is promoted with is the one you chose",
                    self.site
                ))
            }
            (role, _) => {
                return Err(format!(
                    "{} is a {} site; a forced failover promotes only a standby or a held lagged site (with a \
                     quorum, use `maildr cluster switchover`)",
                    self.site,
                    role.name()
                ))
            }
        }
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().voter_ids().any(|v| v == self.me) {
            return Err(format!("{} is already a voter", self.site));
        }
        let Some(last_log_index) = m.last_log_index else {
            return Err(format!("{} holds no Raft log: it never received the cluster's state", self.site));
        };
        // A held lagged site keeps what it applied; the rest of its log goes.
        let last_log_index = match &held {
            Some(_) => m.last_applied.map_or(0, |l| l.index),
            None => last_log_index,
        };
        let contact = self.primary_contact();
        let silence_ms = PRIMARY_SILENCE_ELECTION_TIMEOUTS * self.election_timeout_max_ms;
        if let Some(c) = contact.as_ref().filter(|c| c.heard_ms_ago < silence_ms) {
            return Err(format!(
                "{} heard from the primary (node {}) {} ms ago: the quorum is alive; use `maildr cluster switchover`",
                self.site, c.primary, c.heard_ms_ago
            ));
        }
        if self.promoting.swap(true, Ordering::SeqCst) {
            return Err(format!("a forced failover of {} is already under way", self.site));
        }
        let record = ForcedFailoverRecord {
            by,
            at_ms: record_file::now_ms(),
            last_log_index,
            // Provisional: the restart records the log's own last entry (see `promote`);
            // openraft's metrics give the last index but not its term.
            last_log_term: m.last_applied.filter(|l| l.index == last_log_index).map_or(0, |l| l.leader_id.term),
            primary_committed_index: contact.and_then(|c| c.primary_committed_index),
            event_recorded: false,
        };
        let path = self.data_dir.join(FORCE_FAILOVER_FILE);
        let written = {
            let (path, record) = (path.clone(), record.clone());
            tokio::task::spawn_blocking(move || write_record(&path, &record)).await
        };
        match written {
            Ok(Ok(())) => {
                tracing::warn!(site = %self.site, by = %record.by, last_log_index, "forced failover accepted; restarting");
                Ok(ControlResponse::ForcedFailover(record))
            }
            Ok(Err(e)) => {
                self.promoting.store(false, Ordering::SeqCst);
                Err(e.to_string())
            }
            Err(e) => {
                self.promoting.store(false, Ordering::SeqCst);
                Err(format!("writing {}: {e}", path.display()))
            }
        }
    }

    /// The peer with this node id: by id in our configuration, else by the site
    /// name the membership gives it (a site that rejoined under a new id).
    fn peer(&self, node: NodeId) -> Option<Arc<PeerClient>> {
        if let Some(peer) = self.directory.get(node) {
            return Some(peer);
        }
        let site = self.site_in_membership(node)?;
        let configured = self.directory.by_site(&site)?;
        Some(Arc::new(PeerClient::new(node, site, configured.addr.clone(), self.secret.clone(), Some(self.me))))
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

    async fn control(&self, request: ControlRequest) -> Result<ControlResponse, String> {
        match request {
            ControlRequest::Init => self.init().await,
            ControlRequest::Status => Ok(ControlResponse::Status(Box::new(self.status()))),
            ControlRequest::BecomePrimary => self.become_primary().await,
            ControlRequest::HandOver { to } => self.hand_over(to).await,
            ControlRequest::Digests { applied_at_least, wait_ms } => self.digests(applied_at_least, wait_ms).await,
            ControlRequest::Messages { mailbox } => {
                let store = self.store();
                tokio::task::spawn_blocking(move || {
                    let messages = store.messages(MailboxId(mailbox)).map_err(|e| e.to_string())?;
                    let present = |m: &maildr_store::Message| store.blobs().contains(&m.body);
                    Ok(ControlResponse::Messages(messages.iter().map(|m| MessageSummary::of(m, present(m))).collect()))
                })
                .await
                .map_err(|e| e.to_string())?
            }
            ControlRequest::Rejoin { node_id, site, addr } => self.rejoin(node_id, site, addr).await,
            ControlRequest::Observations => Ok(ControlResponse::Observations(self.local_observations())),
            ControlRequest::ForceFailover { by } => self.force_failover(by).await,
            ControlRequest::HoldApply { by } => self.hold_apply(by).await,
            ControlRequest::HoldsBodies(hashes) => self.holds_bodies(hashes).await,
            ControlRequest::ReleaseApply => self.release_apply().await,
            ControlRequest::Write(command) => match self.write(command).await {
                Ok(applied) => Ok(ControlResponse::Written(Ok(applied))),
                Err(WriteError::Refused(e)) => Ok(ControlResponse::Written(Err(e))),
                Err(WriteError::Unavailable(reason)) => Err(reason),
            },
        }
    }

    /// Every mailbox's digest, read at one applied index once at least
    /// `applied_at_least` is applied (waiting at most `wait_ms`).
    async fn digests(&self, applied_at_least: u64, wait_ms: u64) -> Result<ControlResponse, String> {
        let wait = Duration::from_millis(wait_ms.min(60_000));
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(applied_at_least), "verify")
            .await
            .map_err(|e| format!("{} has not applied entry {applied_at_least}: {e}", self.site))?;
        let sm = self.state_machine.clone();
        let read = tokio::task::spawn_blocking(move || {
            sm.at_applied_index(|index, store| {
                Ok::<_, maildr_store::StoreError>(ControlResponse::Digests {
                    applied_index: index.unwrap_or(0),
                    mailboxes: MailboxDigest::all(store)?,
                })
            })
        });
        read.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    }

    async fn rejoin(&self, node_id: NodeId, site: String, addr: String) -> Result<ControlResponse, String> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.me) {
            return Err(format!("{} is not the primary; ask the primary ({:?})", self.site, m.current_leader));
        }
        let membership = m.membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == node_id) {
            return Ok(ControlResponse::Rejoined { replaced: None, voters: membership.voter_ids().collect() });
        }
        let old = membership.nodes().find(|(id, node)| node.site == site && **id != node_id).map(|(id, _)| *id);
        tracing::warn!(site, node_id, ?old, "a site rejoins under a new node id; catching it up as a learner");
        // Blocking: returns once the learner has caught up (log or snapshot).
        self.raft
            .add_learner(node_id, SiteNode { site: site.clone(), addr }, true)
            .await
            .map_err(|e| format!("adding {site} as learner {node_id}: {e}"))?;
        let mut voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        if let Some(old) = old {
            voters.remove(&old);
        }
        voters.insert(node_id);
        self.raft
            .change_membership(openraft::ChangeMembers::ReplaceAllVoters(voters.clone()), false)
            .await
            .map_err(|e| format!("making {site} ({node_id}) a voter: {e}"))?;
        Ok(ControlResponse::Rejoined { replaced: old, voters: voters.into_iter().collect() })
    }

    async fn init(&self) -> Result<ControlResponse, String> {
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
        Ok(ControlResponse::Initialized { already })
    }

    /// On the primary: give the lead to data site `to`, refused unless it has every
    /// entry but a few. openraft 0.9 has no leadership transfer, and a voter refuses
    /// votes while its leader lease runs (renewed by every acknowledged heartbeat), so
    /// the primary goes quiet (no heartbeats, no campaigns) and asks `to` to campaign;
    /// once the lease runs out, `to` wins. Used by planned switchovers and by a witness
    /// that had to lead.
    async fn hand_over(&self, to: NodeId) -> Result<ControlResponse, String> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.me) {
            return Err(format!("{} is not the primary (it knows {:?})", self.site, m.current_leader));
        }
        if to == self.me {
            return Ok(ControlResponse::BecamePrimary { unavailable_ms: 0, term: m.current_term });
        }
        if self.role_of(to) != Some(SiteRole::Data) {
            return Err(format!("node {to} is not a data site; only data sites become primary"));
        }
        let peer = self.peer(to).ok_or_else(|| format!("node {to} is not in {}'s configuration", self.site))?;
        let matched = m.replication.as_ref().and_then(|r| r.get(&to).copied().flatten()).map(|l| l.index).unwrap_or(0);
        let last = m.last_log_index.unwrap_or(0);
        if matched + CAUGHT_UP_SLACK_ENTRIES < last {
            return Err(format!(
                "{} is not caught up: it has {matched} of {last} entries; try again when it is",
                peer.site
            ));
        }
        if self.handing_over.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(format!("{} is already handing over its lead", self.site));
        }
        // Leadership transfer (Raft thesis 3.10): new writes are held from here on,
        // so the target can match the whole log; a target behind the log would lose
        // its election to the voters' up-to-date check, and entries still flowing
        // would keep the followers' leader lease fresh.
        let transfer_deadline = Instant::now() + HANDOVER_CATCH_UP_TIMEOUT;
        loop {
            let m = self.raft.metrics().borrow().clone();
            let last = m.last_log_index.unwrap_or(0);
            let matched =
                m.replication.as_ref().and_then(|r| r.get(&to).copied().flatten()).map(|l| l.index).unwrap_or(0);
            if matched >= last {
                break;
            }
            if Instant::now() >= transfer_deadline {
                self.handing_over.store(false, std::sync::atomic::Ordering::SeqCst);
                return Err(format!(
                    "{} did not match the whole log ({matched} of {last} entries) within {} ms with writes held; try again",
                    peer.site,
                    HANDOVER_CATCH_UP_TIMEOUT.as_millis()
                ));
            }
            tokio::time::sleep(HANDOVER_WRITE_HOLD_POLL).await;
        }
        self.raft.runtime_config().heartbeat(false);
        self.raft.runtime_config().elect(false);
        let answer =
            peer.call(&PeerRequest::Control(ControlRequest::BecomePrimary), Duration::from_secs(20), true).await;
        self.raft.runtime_config().heartbeat(true);
        self.raft.runtime_config().elect(true);
        self.handing_over.store(false, std::sync::atomic::Ordering::SeqCst);
        match answer {
            Ok(PeerResponse::Control(result)) => result,
            Ok(other) => Err(format!("{} answered {other:?}", peer.site)),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn become_primary(&self) -> Result<ControlResponse, String> {
        if self.role != SiteRole::Data {
            return Err(format!("{} is a {} site; only data sites become primary", self.site, self.role.name()));
        }
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader == Some(self.me) {
            return Ok(ControlResponse::BecamePrimary { unavailable_ms: 0, term: m.current_term });
        }
        let primary = m.current_leader.ok_or("no primary is known; switchover needs a healthy cluster")?;
        let peer = self.peer(primary).ok_or("the primary is not in this site's configuration")?;
        let primary_status =
            match peer.call(&PeerRequest::Control(ControlRequest::Status), Duration::from_secs(3), true).await {
                Ok(PeerResponse::Control(Ok(ControlResponse::Status(s)))) => s,
                Ok(other) => return Err(format!("primary {} answered status with {other:?}", peer.site)),
                Err(e) => return Err(format!("primary unreachable: {e}")),
            };
        let have = m.last_applied.map(|l| l.index).unwrap_or(0);
        let want = primary_status.last_log_index.unwrap_or(0);
        if have + CAUGHT_UP_SLACK_ENTRIES < want {
            return Err(format!(
                "{} is not caught up: applied {have}, primary {} has {want}; try again when it is",
                self.site, peer.site
            ));
        }
        let started = Instant::now();
        self.raft.trigger().elect().await.map_err(|e| e.to_string())?;
        let me = self.me;
        let done = self
            .raft
            .wait(Some(Duration::from_secs(15)))
            .metrics(
                |m| {
                    m.state == ServerState::Leader
                        && m.current_leader == Some(me)
                        && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
                },
                "this site is primary and has committed in its term",
            )
            .await
            .map_err(|e| format!("{} did not become primary: {e}", self.site))?;
        Ok(ControlResponse::BecamePrimary {
            unavailable_ms: started.elapsed().as_millis() as u64,
            term: done.current_term,
        })
    }

    async fn handle(&self, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::Hello { .. } => PeerResponse::Refused("Hello only opens a connection".into()),
            PeerRequest::AppendEntries(rpc) => {
                let leader = rpc.vote.leader_id().voted_for();
                if let Some(refusal) = self.refuse_raft_from(leader) {
                    return PeerResponse::Refused(refusal);
                }
                let (term, committed) = (rpc.vote.leader_id().get_term(), rpc.leader_commit.map(|l| l.index));
                let response = self.raft.append_entries(rpc).await;
                if matches!(response, Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))) {
                    self.note_primary_contact(leader, term, committed);
                }
                PeerResponse::AppendEntries(response)
            }
            PeerRequest::Vote(rpc) => match self.refuse_raft_from(rpc.vote.leader_id().voted_for()) {
                Some(refusal) => PeerResponse::Refused(refusal),
                None => PeerResponse::Vote(self.raft.vote(rpc).await),
            },
            PeerRequest::InstallSnapshot(rpc) => match self.refuse_raft_from(rpc.vote.leader_id().voted_for()) {
                Some(refusal) => PeerResponse::Refused(refusal),
                None => PeerResponse::InstallSnapshot(self.raft.install_snapshot(rpc).await),
            },
            PeerRequest::Forward(command) => PeerResponse::Forward(self.commit_forwarded(command).await),
            PeerRequest::PutBody { hash, offset, last, bytes } => {
                PeerResponse::PutBody(self.receive_body(hash, offset, last, bytes).await)
            }
            PeerRequest::GetBody { hash, offset } => {
                let store = self.store();
                let piece = tokio::task::spawn_blocking(move || {
                    let body = store.blobs().get(&hash).ok()?;
                    let start = (offset as usize).min(body.len());
                    let end = (start + BODY_CHUNK_BYTES).min(body.len());
                    Some(BodyPiece { total_bytes: body.len() as u64, bytes: body[start..end].to_vec() })
                })
                .await
                .ok()
                .flatten();
                PeerResponse::GetBody(piece)
            }
            PeerRequest::Control(request) => PeerResponse::Control(self.control(request).await),
        }
    }

    async fn receive_body(&self, hash: BlobHash, offset: u64, last: bool, bytes: Vec<u8>) -> Result<(), String> {
        let body = {
            let mut partial = self.partial_bodies.lock().unwrap_or_else(|p| p.into_inner());
            let body = match (offset, partial.remove(&hash)) {
                (0, _) => bytes,
                (offset, Some(mut so_far)) if so_far.len() as u64 == offset => {
                    so_far.extend_from_slice(&bytes);
                    so_far
                }
                _ => return Err(format!("body {hash}: piece at offset {offset} does not follow what was received")),
            };
            if body.len() > 2 * 1024 * 1024 * 1024 {
                return Err("body larger than 2 GiB".into());
            }
            if !last {
                if partial.len() >= PARTIAL_BODIES_MAX {
                    let dropped = *partial.keys().next().expect("not empty");
                    partial.remove(&dropped);
                }
                partial.insert(hash, body);
                return Ok(());
            }
            body
        };
        let store = self.store();
        let stored = tokio::task::spawn_blocking(move || {
            let computed = maildr_store::blob::hash_body(&body);
            if computed != hash {
                return Err(format!("body announced as {hash} hashes to {computed}; not stored"));
            }
            store.blobs().put(&body).map_err(|e| e.to_string())
        });
        let stored = stored.await.map_err(|e| e.to_string())??;
        self.state_machine.body_arrived(&stored.hash);
        Ok(())
    }
}

/// Run futures concurrently and collect their outputs in order (a small stand-in
/// for `futures::future::join_all`, to keep the dependency set lean).
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("observation calls do not panic"));
    }
    out
}

/// A site whose Raft state is new must not be one the cluster already counts as a
/// member (openraft issue 898): ask the peers that answer.
async fn refuse_lost_data_under_old_id(directory: &PeerDirectory, me: NodeId) -> Result<(), StartError> {
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

/// A site that comes back with its old log must not rejoin a cluster that a forced
/// failover replaced (it and the other old sites could form the old quorum again):
/// ask the configured standbys, the only sites a forced failover promotes.
async fn refuse_after_forced_failover(
    directory: &PeerDirectory,
    members: &[ClusterMember],
    me: NodeId,
) -> Result<(), StartError> {
    let standbys = members.iter().filter(|m| m.role.is_learner() && m.node_id != me);
    for peer in standbys.filter_map(|m| directory.get(m.node_id)) {
        let request = PeerRequest::Control(ControlRequest::Status);
        if let Ok(PeerResponse::Control(Ok(ControlResponse::Status(status)))) =
            peer.call(&request, Duration::from_secs(2), true).await
        {
            if let Some(record) = status.forced_failover {
                if !status.voters.contains(&me) && !status.learners.contains(&me) {
                    return Err(StartError::SupersededByForcedFailover {
                        node_id: me,
                        peer: peer.site.clone(),
                        detail: record.event_detail(),
                    });
                }
            }
        }
    }
    Ok(())
}

enum Forwarded {
    Done(Result<Applied, WriteError>),
    TryPrimary(Option<NodeId>),
}

fn outcome(data: EntryOutcome) -> Result<Applied, WriteError> {
    match data {
        EntryOutcome::Command(Ok(applied)) => Ok(applied),
        EntryOutcome::Command(Err(refused)) => Err(WriteError::Refused(refused)),
        EntryOutcome::NoCommand => Err(WriteError::Unavailable("entry carried no command".into())),
    }
}

/// Wait a little before looking for the primary again, never past the deadline.
async fn pause_before_retry(deadline: Instant) {
    let pause = Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(pause).await;
}

async fn push_body(peer: &PeerClient, hash: BlobHash, body: &[u8], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut offset = 0usize;
    loop {
        let end = (offset + BODY_CHUNK_BYTES).min(body.len());
        let last = end == body.len();
        let request = PeerRequest::PutBody { hash, offset: offset as u64, last, bytes: body[offset..end].to_vec() };
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Pieces go in order, each acknowledged before the next; the receiver
        // assembles them by hash, whichever connection they come on.
        match peer.call(&request, remaining, offset == 0 && last).await.map_err(|e| e.to_string())? {
            PeerResponse::PutBody(Ok(())) if last => return Ok(()),
            PeerResponse::PutBody(Ok(())) => offset = end,
            PeerResponse::PutBody(Err(e)) => return Err(format!("{}: {e}", peer.site)),
            other => return Err(format!("{} answered PutBody with {other:?}", peer.site)),
        }
    }
}

async fn fetch_from(peer: &PeerClient, hash: &BlobHash, timeout: Duration) -> Result<Option<Vec<u8>>, PeerCallError> {
    let deadline = Instant::now() + timeout;
    let mut body = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let request = PeerRequest::GetBody { hash: *hash, offset: body.len() as u64 };
        match peer.call(&request, remaining, true).await? {
            PeerResponse::GetBody(None) => return Ok(None),
            PeerResponse::GetBody(Some(BodyPiece { total_bytes, bytes })) => {
                if bytes.is_empty() && (body.len() as u64) < total_bytes {
                    return Ok(None);
                }
                body.extend_from_slice(&bytes);
                if body.len() as u64 >= total_bytes {
                    return Ok(Some(body));
                }
            }
            _ => return Ok(None),
        }
    }
}

/// Accept peers (and `maildr cluster` commands) until told to stop.
async fn serve_peers(site: Arc<Replicated>, listener: TcpListener, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let site = Arc::clone(&site);
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(&site, stream).await {
                            tracing::debug!(%from, error = %e, "replication connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a replication connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Seconds a replication connection may wait for its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_connection(site: &Replicated, mut stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<PeerRequest>(&mut stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no Hello"))??;
    let peer = match hello {
        Some(PeerRequest::Hello { secret, to: Some(to), .. })
            if to != site.me && constant_time_eq(secret.as_bytes(), site.secret.as_bytes()) =>
        {
            let reason = format!("this is node {} ({}), not node {to}", site.me, site.site);
            write_frame(&mut stream, &PeerResponse::Refused(reason)).await?;
            return Ok(());
        }
        Some(PeerRequest::Hello { secret, from, .. })
            if constant_time_eq(secret.as_bytes(), site.secret.as_bytes()) =>
        {
            write_frame(&mut stream, &PeerResponse::Hello).await?;
            from.and_then(|id| site.directory.get(id))
        }
        Some(PeerRequest::Hello { .. }) => {
            write_frame(&mut stream, &PeerResponse::Refused("wrong cluster secret".into())).await?;
            return Ok(());
        }
        Some(_) => {
            write_frame(&mut stream, &PeerResponse::Refused("the first request must be Hello".into())).await?;
            return Ok(());
        }
        None => return Ok(()),
    };
    while let Some(request) = read_frame::<PeerRequest>(&mut stream).await? {
        if let Some(peer) = &peer {
            peer.mark_heard();
        }
        let response = site.handle(request).await;
        let restart = matches!(response, PeerResponse::Control(Ok(ControlResponse::ForcedFailover(_))));
        let written = write_frame(&mut stream, &response).await;
        if restart {
            // Only now that the operator has the answer: the restart ends this process.
            let _ = site.restart.send(true);
        }
        written?;
    }
    Ok(())
}

/// Read a forced-failover record (`None` when the file does not exist).
fn read_record(path: &Path) -> Result<Option<ForcedFailoverRecord>, StartError> {
    record_file::read(path).map_err(|e| StartError::ForcedFailover { path: path.into(), detail: e.to_string() })
}

/// Write a forced-failover record durably.
fn write_record(path: &Path, record: &ForcedFailoverRecord) -> Result<(), StartError> {
    record_file::write(path, record)
        .map_err(|e| StartError::ForcedFailover { path: path.into(), detail: e.to_string() })
}

/// Carry out an accepted forced failover before Raft starts: make this site the only
/// voter in its log, record the promotion in [`PROMOTED_FILE`], then remove the
/// marker. A crash anywhere in between repeats the steps on the next start (the
/// rewrite is idempotent).
async fn promote(
    data_dir: &Path,
    me: NodeId,
    member: &ClusterMember,
    log_store: &raft::LogStore,
    mut record: ForcedFailoverRecord,
    keep_through: Option<openraft::LogId<NodeId>>,
) -> Result<ForcedFailoverRecord, StartError> {
    let node = Replicated::site_node(member);
    let rewritten = {
        let log_store = log_store.clone();
        tokio::task::spawn_blocking(move || log_store.force_single_voter(me, node, keep_through))
            .await
            .map_err(|e| StartError::Raft(format!("rewriting the Raft log for the forced failover: {e}")))??
    };
    record.last_log_index = rewritten.previous_last.index;
    record.last_log_term = rewritten.previous_last.leader_id.term;
    record.event_recorded = false;
    let (promoted, marker) = (data_dir.join(PROMOTED_FILE), data_dir.join(FORCE_FAILOVER_FILE));
    write_record(&promoted, &record)?;
    std::fs::remove_file(&marker)
        .and_then(|()| record_file::sync_parent(&marker))
        .map_err(|e| StartError::ForcedFailover { path: marker.clone(), detail: format!("removing it: {e}") })?;
    tracing::warn!(
        site = %member.site,
        by = %record.by,
        last_log_index = record.last_log_index,
        membership = %rewritten.membership,
        "forced failover: this site is now the only voter of its cluster"
    );
    Ok(record)
}

/// On a promoted site: once it leads, commit the `forced_failover` event (once; the
/// flag in [`PROMOTED_FILE`] and a look at the event log keep it single).
async fn record_forced_failover(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    let mut metrics = site.raft.metrics();
    loop {
        let record = site.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(mut record) = record.filter(|r| !r.event_recorded) else { return };
        if site.is_primary() {
            let detail = record.event_detail();
            let already = already_recorded(&site.store(), &site.site, &detail);
            let written = match already {
                true => Ok(()),
                false => {
                    let command = Command::RecordEvent {
                        kind: ControlEventKind::ForcedFailover,
                        site: Some(site.site.clone()),
                        detail,
                        at_ms: record.at_ms,
                    };
                    site.write(command).await.map(drop).map_err(|e| e.to_string())
                }
            };
            match written {
                Ok(()) => {
                    record.event_recorded = true;
                    let path = site.data_dir.join(PROMOTED_FILE);
                    if let Err(e) = write_record(&path, &record) {
                        tracing::warn!(error = %e, "noting that the forced_failover event is recorded");
                    }
                    *site.forced_failover.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
                    tracing::info!(site = %site.site, "forced_failover event committed");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "recording the forced_failover event; will retry"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Whether the event log already holds this site's forced_failover event with `detail`.
fn already_recorded(store: &Store, site: &str, detail: &str) -> bool {
    const PAGE: usize = 1_000;
    let mut after = 0;
    loop {
        let Ok(events) = store.events(after, PAGE) else { return false };
        if events.iter().any(|e| {
            e.kind == ControlEventKind::ForcedFailover && e.site.as_deref() == Some(site) && e.detail == detail
        }) {
            return true;
        }
        match events.last() {
            Some(last) if events.len() == PAGE => after = last.id,
            _ => return false,
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Keep `caught_up_at` current on the primary, make configured standby sites
/// learners once this site leads, and, on a witness that leads, hand the lead to a
/// data site as soon as one has every entry.
async fn track_lag(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    let mut metrics = site.raft.metrics();
    let mut last_handover: Option<Instant> = None;
    loop {
        {
            let m = metrics.borrow_and_update().clone();
            if m.state == ServerState::Leader {
                let last = m.last_log_index.unwrap_or(0);
                let now = Instant::now();
                let mut caught_up = site.caught_up_at.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(replication) = &m.replication {
                    for (node, matched) in replication.iter() {
                        if matched.map(|l| l.index).unwrap_or(0) >= last {
                            caught_up.insert(*node, now);
                        }
                    }
                }
                drop(caught_up);
                if site.role == SiteRole::Witness && last_handover.is_none_or(|t| t.elapsed() >= HANDOVER_RETRY) {
                    let ready = m.replication.as_ref().and_then(|r| {
                        r.iter()
                            .filter(|(node, matched)| {
                                site.role_of(**node) == Some(SiteRole::Data)
                                    && matched.map(|l| l.index).unwrap_or(0) >= last
                            })
                            .map(|(node, _)| *node)
                            .next()
                    });
                    let busy = site.handing_over.load(std::sync::atomic::Ordering::SeqCst);
                    if let Some(node) = ready.filter(|_| !busy) {
                        last_handover = Some(Instant::now());
                        tracing::warn!(to = node, "this witness leads; handing the lead to a caught-up data site");
                        let site = Arc::clone(&site);
                        tokio::spawn(async move {
                            if let Err(e) = site.hand_over(node).await {
                                tracing::warn!(to = node, error = %e, "hand-over");
                            }
                        });
                    }
                }
                let membership = m.membership_config.membership();
                let known: Vec<u64> = membership.nodes().map(|(id, _)| *id).collect();
                for member in site.members.iter().filter(|m| m.role.is_learner()) {
                    if !known.contains(&member.node_id) {
                        let raft = site.raft.clone();
                        let (id, node) = (member.node_id, Replicated::site_node(member));
                        tokio::spawn(async move {
                            if let Err(e) = raft.add_learner(id, node, false).await {
                                tracing::warn!(node = id, error = %e, "adding a standby or lagged site as a learner");
                            }
                        });
                    }
                }
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// On a witness: drop each body once every data site among the voters holds it
/// durably. A witness keeps bodies only as the second copy a data site needs
/// before it may propose a message (and to hand them to the other data site); once
/// both data sites hold a body, that is two sites without it. A body the other data
/// site still lacks (it was down, or cut off) stays, and a round in which a data
/// site does not answer drops nothing.
async fn drop_bodies_the_data_sites_hold(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(WITNESS_BODY_SWEEP) => {}
        }
        match site.drop_bodies_held_elsewhere().await {
            Ok(0) => {}
            Ok(dropped) => tracing::debug!(dropped, "dropped bodies both data sites hold"),
            Err(e) => tracing::debug!(error = %e, "keeping bodies this round"),
        }
    }
}

impl Replicated {
    /// One round of [`drop_bodies_the_data_sites_hold`]; how many it dropped.
    async fn drop_bodies_held_elsewhere(&self) -> Result<usize, String> {
        let store = self.store();
        let held = {
            let store = Arc::clone(&store);
            tokio::task::spawn_blocking(move || store.blobs().list(HOLDS_BODIES_MAX))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?
        };
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
            let question = PeerRequest::Control(ControlRequest::HoldsBodies(held.clone()));
            let answer = peer.call(&question, Duration::from_secs(10), true).await.map_err(|e| e.to_string())?;
            let PeerResponse::Control(Ok(ControlResponse::HeldBodies(flags))) = answer else {
                return Err(format!("{} answered {answer:?}", peer.site));
            };
            if flags.len() != held.len() {
                return Err(format!("{} answered for {} bodies of {}", peer.site, flags.len(), held.len()));
            }
            everywhere.iter_mut().zip(flags).for_each(|(all, here)| *all &= here);
        }
        let droppable: Vec<BlobHash> =
            held.into_iter().zip(everywhere).filter(|(_, all)| *all).map(|(h, _)| h).collect();
        let dropped = tokio::task::spawn_blocking(move || -> Result<usize, String> {
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

/// Fetch bodies that applied entries refer to but this site lacks.
async fn fetch_missing_bodies(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    loop {
        let missing = site.state_machine.missing_bodies();
        let mut failed = false;
        for hash in &missing {
            if *stop.borrow() {
                return;
            }
            if site.store().blobs().contains(hash) {
                site.state_machine.body_arrived(hash);
                continue;
            }
            if let Err(e) = site.fetch_body(hash, Duration::from_secs(10)).await {
                tracing::debug!(error = %e, "fetching a missing body");
                failed = true;
            }
        }
        let pause = if failed { Duration::from_millis(500) } else { Duration::from_secs(5) };
        tokio::select! {
            _ = stop.changed() => return,
            _ = site.state_machine.missing_bodies_added() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}
