//! The client side of the replication channel: connections to peers, and openraft's
//! `RaftNetwork` over them.
//!
//! Each peer has a small pool of open connections; a call takes one (or opens one:
//! mutual TLS, then the Hello that answers the site's challenge, see `transport`),
//! sends one request, reads one response and puts the connection back. A pooled
//! connection unused for `transport::POOLED_IDLE_MAX` is dropped rather than reused,
//! well before the site closes it as idle. Every call has a deadline; a peer that does not answer in time
//! is unreachable for that call and its connection is dropped, so a partition (which
//! stalls rather than resets) never holds a caller longer than its deadline.
//!
//! Addresses come from this site's configuration, not from the replicated membership:
//! in the lab each site reaches its peers through its own fault-proxy links.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::transport::{self, exchange, ChannelSecurity, OpenError, PeerStream};
use super::wire::{PeerRequest, PeerResponse, RaftReply, RaftRpc};
use super::{NodeId, SiteNode, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};

/// Most idle connections kept per peer.
const IDLE_CONNECTIONS_MAX: usize = 64;

/// Most connections to one peer being opened at once: well under what a site
/// accepts unauthenticated from one address, which in the lab (every link through
/// one proxy address) all peers share.
const OPENING_CONNECTIONS_MAX: usize = 4;
const _: () = assert!(OPENING_CONNECTIONS_MAX * 3 <= super::transport::UNAUTHENTICATED_PER_SOURCE_MAX);

/// Why a call to a peer got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PeerCallError {
    #[error("site {site} ({addr}) did not answer within {timeout_ms} ms")]
    Timeout { site: String, addr: String, timeout_ms: u128 },
    #[error("site {site} ({addr}): {source}")]
    Io { site: String, addr: String, source: io::Error },
    #[error("site {site} ({addr}) refused: {reason}")]
    Refused { site: String, addr: String, reason: String },
}

/// Connections to one peer site.
pub struct PeerClient {
    pub node_id: NodeId,
    pub site: String,
    pub addr: String,
    security: ChannelSecurity,
    /// Our node id, or `None` for an operator's command.
    from: Option<NodeId>,
    /// Open connections not in use, with when each was last used.
    idle: Mutex<Vec<(PeerStream, Instant)>>,
    /// Turns to open a connection (see [`PeerClient::pooled_or_connect`]).
    opening: tokio::sync::Semaphore,
    /// Signalled when a connection goes back to the pool.
    returned: tokio::sync::Notify,
    last_heard: Mutex<Option<Instant>>,
}

impl PeerClient {
    pub fn new(
        node_id: NodeId,
        site: String,
        addr: String,
        security: ChannelSecurity,
        from: Option<NodeId>,
    ) -> PeerClient {
        PeerClient {
            node_id,
            site,
            addr,
            security,
            from,
            idle: Mutex::new(Vec::new()),
            opening: tokio::sync::Semaphore::new(OPENING_CONNECTIONS_MAX),
            returned: tokio::sync::Notify::new(),
            last_heard: Mutex::new(None),
        }
    }

    /// A pooled connection still young enough to use; older ones are closed.
    fn pooled(&self) -> Option<PeerStream> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.retain(|(_, since)| since.elapsed() < self.security.pooled_idle_max);
        idle.pop().map(|(stream, _)| stream)
    }

    /// When this site last heard from the peer (an answer, or a request from it).
    pub fn last_heard(&self) -> Option<Instant> {
        *self.last_heard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Note that the peer was heard from just now.
    pub fn mark_heard(&self) {
        *self.last_heard.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Send `request` and wait for its response, all within `timeout`. Requests that
    /// are safe to repeat (`idempotent`) are retried once on a fresh connection when a
    /// pooled one turns out to be dead; others are never sent twice by this call.
    pub async fn call(
        &self,
        request: &PeerRequest,
        timeout: Duration,
        idempotent: bool,
    ) -> Result<PeerResponse, PeerCallError> {
        let deadline = Instant::now() + timeout;
        let work = async {
            if let Some(mut stream) = self.pooled() {
                match exchange(&mut stream, request).await {
                    Ok(response) => return Ok((stream, response)),
                    Err(e) if !idempotent => return Err(self.io(e)),
                    Err(_) => {} // a stale pooled connection: try once on a new one
                }
            }
            let mut stream = self.pooled_or_connect().await?;
            let response = exchange(&mut stream, request).await.map_err(|e| self.io(e))?;
            Ok((stream, response))
        };
        let (stream, response) = match tokio::time::timeout_at(deadline.into(), work).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(PeerCallError::Timeout {
                    site: self.site.clone(),
                    addr: self.addr.clone(),
                    timeout_ms: timeout.as_millis(),
                })
            }
        };
        self.mark_heard();
        if let PeerResponse::Refused(reason) = response {
            return Err(PeerCallError::Refused { site: self.site.clone(), addr: self.addr.clone(), reason });
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_CONNECTIONS_MAX {
            idle.push((stream, Instant::now()));
            drop(idle);
            self.returned.notify_one();
        }
        Ok(response)
    }

    /// A connection returned to the pool meanwhile, else a new one: at most
    /// [`OPENING_CONNECTIONS_MAX`] are opened at once, so a burst of calls never
    /// opens more handshakes than the peer accepts from one address
    /// (`transport::UNAUTHENTICATED_PER_SOURCE_MAX`); the calls that wait mostly
    /// get a connection another call has put back.
    async fn pooled_or_connect(&self) -> Result<PeerStream, PeerCallError> {
        loop {
            if let Some(stream) = self.pooled() {
                return Ok(stream);
            }
            tokio::select! {
                turn = self.opening.acquire() => {
                    let _turn = turn.expect("the semaphore is never closed");
                    if let Some(stream) = self.pooled() {
                        return Ok(stream);
                    }
                    return self.connect().await;
                }
                () = self.returned.notified() => {}
            }
        }
    }

    async fn connect(&self) -> Result<PeerStream, PeerCallError> {
        // Sites name the node they mean; an operator's command reaches whoever
        // listens at the configured address.
        let to = self.from.map(|_| self.node_id);
        transport::open(&self.addr, &self.security, &self.site, self.from, to).await.map_err(|e| match e {
            OpenError::Io(source) => self.io(source),
            OpenError::Refused(reason) => {
                PeerCallError::Refused { site: self.site.clone(), addr: self.addr.clone(), reason }
            }
        })
    }

    fn io(&self, source: io::Error) -> PeerCallError {
        PeerCallError::Io { site: self.site.clone(), addr: self.addr.clone(), source }
    }
}

/// The peers of a site, by node id, as its configuration addresses them.
#[derive(Clone, Default)]
pub struct PeerDirectory {
    peers: Arc<BTreeMap<NodeId, Arc<PeerClient>>>,
}

impl PeerDirectory {
    pub fn new(peers: impl IntoIterator<Item = PeerClient>) -> PeerDirectory {
        PeerDirectory { peers: Arc::new(peers.into_iter().map(|p| (p.node_id, Arc::new(p))).collect()) }
    }

    pub fn get(&self, node_id: NodeId) -> Option<Arc<PeerClient>> {
        self.peers.get(&node_id).cloned()
    }

    /// The configured peer of this site name, whatever its node id (a site that
    /// rejoined under a new node id keeps its name and address).
    pub fn by_site(&self, site: &str) -> Option<Arc<PeerClient>> {
        self.peers.values().find(|p| p.site == site).cloned()
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<PeerClient>> {
        self.peers.values()
    }
}

/// openraft's network factory: one [`PeerConnection`] per replication target.
#[derive(Clone)]
pub struct Network {
    pub directory: PeerDirectory,
    pub security: ChannelSecurity,
    pub me: NodeId,
    /// Set when a voter refused this site's vote because its log is longer.
    pub greater_log: GreaterLogSeen,
}

/// When a voter last refused this site's vote request because the voter's log is
/// longer: a candidate that cannot win waits before it campaigns again, so it does
/// not keep raising the term over the site that can (see `replicated::campaign`).
#[derive(Clone, Default)]
pub struct GreaterLogSeen(Arc<std::sync::Mutex<Option<std::time::Instant>>>);

impl GreaterLogSeen {
    pub fn note(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
    }

    /// A primary was heard from: the longer log has reached this site, or is
    /// being sent to it, so there is no reason to hold back any more.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// How long ago, if ever.
    pub fn ago(&self) -> Option<Duration> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).map(|at| at.elapsed())
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerConnection;

    async fn new_client(&mut self, target: NodeId, node: &SiteNode) -> PeerConnection {
        // A member is reached at the address our configuration gives its node id,
        // else its site name (it rejoined under a new id), else the address the
        // membership records.
        let addr = match self.directory.get(target).or_else(|| self.directory.by_site(&node.site)) {
            Some(configured) if configured.node_id == target => {
                return PeerConnection { target, client: configured, greater_log: self.greater_log.clone() };
            }
            Some(configured) => configured.addr.clone(),
            None => node.addr.clone(),
        };
        let client = Arc::new(PeerClient::new(target, node.site.clone(), addr, self.security.clone(), Some(self.me)));
        PeerConnection { target, client, greater_log: self.greater_log.clone() }
    }
}

/// openraft's view of one peer.
pub struct PeerConnection {
    target: NodeId,
    client: Arc<PeerClient>,
    greater_log: GreaterLogSeen,
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, SiteNode, RaftError<NodeId, E>>>;

impl PeerConnection {
    async fn rpc(&self, request: RaftRpc, option: &RPCOption) -> Result<PeerResponse, Unreachable> {
        let request = PeerRequest::Raft(request);
        self.client.call(&request, option.hard_ttl(), true).await.map_err(|e| Unreachable::new(&e))
    }

    fn unexpected<E: std::error::Error>(&self, what: &str, response: PeerResponse) -> RPCError<NodeId, SiteNode, E> {
        RPCError::Network(NetworkError::new(&io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} answered {what} with {response:?}", self.client.site),
        )))
    }
}

impl RaftNetwork<TypeConfig> for PeerConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        match self.rpc(RaftRpc::AppendEntries(rpc), &option).await? {
            PeerResponse::Raft(RaftReply::AppendEntries(Ok(response))) => Ok(response),
            PeerResponse::Raft(RaftReply::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected("AppendEntries", other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        match self.rpc(RaftRpc::InstallSnapshot(rpc), &option).await? {
            PeerResponse::Raft(RaftReply::InstallSnapshot(Ok(response))) => Ok(response),
            PeerResponse::Raft(RaftReply::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            other => Err(self.unexpected("InstallSnapshot", other)),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let mine = rpc.last_log_id;
        match self.rpc(RaftRpc::Vote(rpc), &option).await? {
            PeerResponse::Raft(RaftReply::Vote(Ok(response))) => {
                if !response.vote_granted && response.last_log_id > mine {
                    self.greater_log.note();
                }
                Ok(response)
            }
            PeerResponse::Raft(RaftReply::Vote(Err(e))) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            other => Err(self.unexpected("Vote", other)),
        }
    }

    fn backoff(&self) -> Backoff {
        // A peer that is down is retried often enough to notice its return within a
        // heartbeat or two of lab timings, without spinning.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
