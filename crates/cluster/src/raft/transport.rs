//! The transport under the replication channel: connections, mutual TLS, and the
//! challenge and Hello that open each one, on both ends.
//!
//! Everything that touches a socket of the channel goes through here: a caller opens
//! a connection with [`open`] and exchanges frames with [`exchange`]; a site takes
//! connections from a [`PeerListener`] and lets [`handshake`] decide whether to serve
//! them. Nothing else names the socket type ([`PeerStream`]).
//!
//! How a connection is opened (client, then server):
//! 1. TCP; the server takes it only while it has room for another unauthenticated
//!    connection ([`UNAUTHENTICATED_MAX`] in all, [`UNAUTHENTICATED_PER_SOURCE_MAX`]
//!    per source address), else closes it at once.
//! 2. With `[cluster]` certificates: TLS 1.3 where each side presents its site
//!    certificate and verifies the other's against the cluster CAs; the client checks
//!    that the server is the site it means to reach.
//! 3. The server sends a fresh random challenge; the client answers with a Hello
//!    carrying its node id, the node id it means to reach and, when the cluster has a
//!    shared secret, an HMAC of the challenge under that secret: the secret itself
//!    never crosses the link.
//! 4. The server checks the proof, that the certificate names the site the claimed
//!    node id belongs to, and that the connection is meant for it, then says Hello.
//!
//! Steps 2–4 run under [`HANDSHAKE_TIMEOUT`] with frames of at most
//! [`HANDSHAKE_FRAME_MAX_BYTES`]; after them a connection that carries no request for
//! [`IDLE_TIMEOUT`] is closed. Without certificates (loopback only: the config check
//! refuses anything else) steps 1, 3 and 4 still apply.
//!
//! This module must never look at a request beyond the Hello, and never compare a
//! proof in a way whose time depends on where it differs.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maildr_config::ClusterSection;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::wire::{read_frame, read_frame_within, write_frame, PeerRequest, PeerResponse, CHALLENGE_BYTES};
use super::NodeId;
use crate::certs::{self, CertError};

mod tls;
use tls::ReloadingTls;
#[cfg(test)]
use tls::CERT_RELOAD_CHECK_INTERVAL;

/// One connection of the replication channel (TCP, or TLS over TCP).
pub(crate) type PeerStream = Box<dyn PeerIo>;

/// What a connection of the channel is: a byte stream both ways.
pub(crate) trait PeerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> PeerIo for T {}

/// How long the TLS handshake, the challenge and the Hello may take together.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest frame read before the peer is authenticated (challenge and Hello).
pub(crate) const HANDSHAKE_FRAME_MAX_BYTES: u32 = 4096;
/// Most connections a site holds that have not yet said a valid Hello.
pub(crate) const UNAUTHENTICATED_MAX: usize = 256;
/// Most of those from one source address: a stranger cannot take the room a
/// member needs to reconnect.
pub(crate) const UNAUTHENTICATED_PER_SOURCE_MAX: usize = 16;
/// An authenticated connection that carries no request for this long is closed.
/// Callers pool connections for at most [`POOLED_IDLE_MAX`], well under it.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a caller keeps an unused connection for reuse.
pub(crate) const POOLED_IDLE_MAX: Duration = Duration::from_secs(120);

const HELLO_CONTEXT: &[u8] = b"maildr replication hello v1";

/// How this site proves itself on the channel and checks others: the cluster's
/// certificates (when configured) and its shared secret (when set). Cheap to clone.
///
/// The certificate, key and CA files are read again when they change (size or
/// modification time), so a certificate is renewed, or a second CA trusted during a
/// rollover, without restarting the site; files that do not load (half written, a
/// key that does not match) leave the last good ones in use, with a warning.
#[derive(Clone)]
pub struct ChannelSecurity {
    tls: Option<Arc<ReloadingTls>>,
    secret: Option<hmac::Key>,
    /// Every configured member's site, by node id (this site included).
    member_sites: Arc<BTreeMap<NodeId, String>>,
    /// How long an accepted connection may stay silent ([`IDLE_TIMEOUT`]).
    pub(crate) idle_timeout: Duration,
    /// How long a caller keeps an unused connection for reuse ([`POOLED_IDLE_MAX`]).
    pub(crate) pooled_idle_max: Duration,
}

impl ChannelSecurity {
    /// From a site's `[cluster]` section: reads the CA, certificate and key files.
    pub fn from_config(cluster: &ClusterSection) -> Result<ChannelSecurity, CertError> {
        let tls = match (&cluster.cert_file, &cluster.key_file) {
            (Some(cert), Some(key)) => Some(Arc::new(ReloadingTls::load(&cluster.ca_files, cert, key)?)),
            _ => None,
        };
        let secret = cluster.secret.as_deref().filter(|s| !s.is_empty());
        Ok(ChannelSecurity {
            tls,
            secret: secret.map(|s| hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes())),
            member_sites: Arc::new(cluster.members.iter().map(|m| (m.node_id, m.site.clone())).collect()),
            idle_timeout: IDLE_TIMEOUT,
            pooled_idle_max: POOLED_IDLE_MAX,
        })
    }

    /// The same channel with other idle limits (tests hold a connection idle for
    /// the limit without waiting minutes).
    #[cfg(test)]
    pub(crate) fn with_idle_limits(mut self, idle_timeout: Duration, pooled_idle_max: Duration) -> ChannelSecurity {
        assert!(pooled_idle_max < idle_timeout, "a pooled connection must be dropped before the server closes it");
        self.idle_timeout = idle_timeout;
        self.pooled_idle_max = pooled_idle_max;
        self
    }

    /// When this site's own certificate expires (seconds since the Unix epoch);
    /// `None` without certificates.
    pub fn certificate_expires_at(&self) -> Option<i64> {
        self.tls.as_ref().map(|t| t.current().own.not_after_unix)
    }

    fn proof(&self, challenge: &[u8], from: Option<NodeId>, to: Option<NodeId>) -> Option<Vec<u8>> {
        let key = self.secret.as_ref()?;
        Some(hmac::sign(key, &hello_message(challenge, from, to)).as_ref().to_vec())
    }
}

fn hello_message(challenge: &[u8], from: Option<NodeId>, to: Option<NodeId>) -> Vec<u8> {
    let mut m = Vec::with_capacity(HELLO_CONTEXT.len() + challenge.len() + 18);
    m.extend_from_slice(HELLO_CONTEXT);
    m.extend_from_slice(challenge);
    for id in [from, to] {
        m.push(u8::from(id.is_some()));
        m.extend_from_slice(&id.unwrap_or(0).to_be_bytes());
    }
    m
}

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Io(io::Error),
    /// The site answered the Hello with a refusal.
    Refused(String),
}

fn invalid_data(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Connect to `addr`, where `to_site` listens, and open the channel: `from` is our
/// node id (`None` for an operator's command), `to` the node id we mean to reach.
pub(crate) async fn open(
    addr: &str,
    security: &ChannelSecurity,
    to_site: &str,
    from: Option<NodeId>,
    to: Option<NodeId>,
) -> Result<PeerStream, OpenError> {
    let tcp = TcpStream::connect(addr).await.map_err(OpenError::Io)?;
    let _ = tcp.set_nodelay(true);
    let mut stream: PeerStream = match security.tls.as_ref().map(|t| t.current()) {
        Some(tls) => {
            let name = ServerName::try_from(certs::site_identity(to_site))
                .map_err(|e| OpenError::Io(invalid_data(format!("site name {to_site:?}: {e}"))))?;
            Box::new(tls.connector.connect(name, tcp).await.map_err(OpenError::Io)?)
        }
        None => Box::new(tcp),
    };
    let challenge = match read_frame_within(&mut stream, HANDSHAKE_FRAME_MAX_BYTES).await.map_err(OpenError::Io)? {
        Some(PeerResponse::Challenge(challenge)) => challenge,
        Some(PeerResponse::Refused(reason)) => return Err(OpenError::Refused(reason)),
        Some(other) => return Err(OpenError::Io(invalid_data(format!("opened with {other:?}, not a challenge")))),
        None => return Err(OpenError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a challenge"))),
    };
    let hello = PeerRequest::Hello { proof: security.proof(&challenge, from, to), from, to };
    write_frame(&mut stream, &hello).await.map_err(OpenError::Io)?;
    match read_frame_within(&mut stream, HANDSHAKE_FRAME_MAX_BYTES).await.map_err(OpenError::Io)? {
        Some(PeerResponse::Hello) => Ok(stream),
        Some(PeerResponse::Refused(reason)) => Err(OpenError::Refused(reason)),
        Some(other) => Err(OpenError::Io(invalid_data(format!("answered Hello with {other:?}")))),
        None => Err(OpenError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before answering Hello"))),
    }
}

/// Send one request and read its response.
pub(crate) async fn exchange(stream: &mut PeerStream, request: &PeerRequest) -> io::Result<PeerResponse> {
    write_frame(stream, request).await?;
    read_frame(stream)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the answer"))
}

/// The next request on an accepted connection; `None` once the caller closed it.
/// A connection idle for `idle` ([`IDLE_TIMEOUT`] on a site) ends with `TimedOut`.
pub(crate) async fn next_request(stream: &mut PeerStream, idle: Duration) -> io::Result<Option<PeerRequest>> {
    tokio::time::timeout(idle, read_frame(stream)).await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "idle"))?
}

/// Answer the request just read.
pub(crate) async fn answer(stream: &mut PeerStream, response: &PeerResponse) -> io::Result<()> {
    write_frame(stream, response).await
}

/// Where a site accepts connections of the replication channel, with the room it
/// keeps for connections that have not authenticated yet.
pub(crate) struct PeerListener {
    listener: TcpListener,
    unauthenticated: Arc<Semaphore>,
    per_source: Arc<Mutex<BTreeMap<IpAddr, usize>>>,
}

/// A connection taken but not yet authenticated; holds its place in the limits
/// until it is dropped or authenticated.
pub(crate) struct Unauthenticated {
    tcp: TcpStream,
    pub from: SocketAddr,
    _permit: OwnedSemaphorePermit,
    _source: SourceSlot,
}

struct SourceSlot {
    ip: IpAddr,
    per_source: Arc<Mutex<BTreeMap<IpAddr, usize>>>,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl PeerListener {
    pub(crate) async fn bind(addr: SocketAddr) -> io::Result<PeerListener> {
        Ok(PeerListener {
            listener: TcpListener::bind(addr).await?,
            unauthenticated: Arc::new(Semaphore::new(UNAUTHENTICATED_MAX)),
            per_source: Arc::new(Mutex::new(BTreeMap::new())),
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection there is room for; connections beyond the limits are
    /// closed at once (`Ok(None)`).
    pub(crate) async fn accept(&self) -> io::Result<Option<Unauthenticated>> {
        let (tcp, from) = self.listener.accept().await?;
        let Ok(permit) = Arc::clone(&self.unauthenticated).try_acquire_owned() else {
            tracing::warn!(%from, limit = UNAUTHENTICATED_MAX, "replication connection closed: too many unauthenticated");
            return Ok(None);
        };
        {
            let mut map = self.per_source.lock().unwrap_or_else(|p| p.into_inner());
            let n = map.entry(from.ip()).or_insert(0);
            if *n >= UNAUTHENTICATED_PER_SOURCE_MAX {
                tracing::warn!(%from, limit = UNAUTHENTICATED_PER_SOURCE_MAX, "replication connection closed: too many unauthenticated from one address");
                return Ok(None);
            }
            *n += 1;
        }
        let _ = tcp.set_nodelay(true);
        let source = SourceSlot { ip: from.ip(), per_source: Arc::clone(&self.per_source) };
        Ok(Some(Unauthenticated { tcp, from, _permit: permit, _source: source }))
    }
}

/// The member that opened an accepted connection.
#[derive(Debug)]
pub(crate) struct Caller {
    /// Its node id, or `None` for an operator's command.
    pub from: Option<NodeId>,
    /// The site its certificate names (`None` without certificates).
    pub site: Option<String>,
}

/// Authenticate an accepted connection, all within [`HANDSHAKE_TIMEOUT`]: the TLS
/// handshake, the challenge, the Hello. Refused (with the reason sent where the
/// caller can read it) for a missing or wrong proof, a certificate that does not
/// name the claimed member's site, or a connection meant for another node id than
/// `me` (`site` names this site in the refusal). `None` when the connection is not
/// to be served; its place in the limits is freed either way.
pub(crate) async fn handshake(
    connection: Unauthenticated,
    security: &ChannelSecurity,
    me: NodeId,
    site: &str,
) -> io::Result<Option<(PeerStream, Caller)>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake_unbounded(connection, security, me, site))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake not finished in time"))?
}

async fn handshake_unbounded(
    connection: Unauthenticated,
    security: &ChannelSecurity,
    me: NodeId,
    site: &str,
) -> io::Result<Option<(PeerStream, Caller)>> {
    // The limits' places are held until the handshake ends either way.
    let Unauthenticated { tcp, from: _, _permit, _source } = connection;
    let (mut stream, cert_site): (PeerStream, Option<String>) = match security.tls.as_ref().map(|t| t.current()) {
        Some(tls) => {
            let tls_stream = tls.acceptor.accept(tcp).await?;
            let peer = tls_stream.get_ref().1.peer_certificates().and_then(|c| c.first().cloned());
            let peer = peer.ok_or_else(|| invalid_data("no client certificate"))?;
            let named = certs::identity(&peer).map_err(|e| invalid_data(e.to_string()))?.site;
            (Box::new(tls_stream), named)
        }
        None => (Box::new(tcp), None),
    };
    let mut challenge = [0u8; CHALLENGE_BYTES];
    SystemRandom::new().fill(&mut challenge).map_err(|_| io::Error::other("no randomness for a challenge"))?;
    write_frame(&mut stream, &PeerResponse::Challenge(challenge.to_vec())).await?;
    let hello = read_frame_within::<PeerRequest>(&mut stream, HANDSHAKE_FRAME_MAX_BYTES).await?;
    let refusal = match hello {
        Some(PeerRequest::Hello { proof, from, to }) => {
            match check_hello(security, &challenge, proof.as_deref(), from, to, cert_site.as_deref(), me, site) {
                Ok(()) => {
                    write_frame(&mut stream, &PeerResponse::Hello).await?;
                    return Ok(Some((stream, Caller { from, site: cert_site })));
                }
                Err(refusal) => refusal,
            }
        }
        Some(_) => "the first request must be Hello".into(),
        None => return Ok(None),
    };
    write_frame(&mut stream, &PeerResponse::Refused(refusal)).await?;
    Ok(None)
}

#[allow(clippy::too_many_arguments)]
fn check_hello(
    security: &ChannelSecurity,
    challenge: &[u8],
    proof: Option<&[u8]>,
    from: Option<NodeId>,
    to: Option<NodeId>,
    cert_site: Option<&str>,
    me: NodeId,
    site: &str,
) -> Result<(), String> {
    if let Some(key) = &security.secret {
        let message = hello_message(challenge, from, to);
        if proof.is_none_or(|proof| hmac::verify(key, &message, proof).is_err()) {
            return Err("wrong cluster secret".into());
        }
    }
    if security.tls.is_some() {
        let Some(cert_site) = cert_site else {
            return Err("the certificate names no site".into());
        };
        if !security.member_sites.values().any(|s| s == cert_site) {
            return Err(format!("the certificate names site {cert_site}, not a member of this cluster"));
        }
        // A configured node id belongs to one site; a node id this site does not
        // know is a member that rejoined under a new id and keeps its site's name.
        if let Some(claimed) = from.and_then(|id| security.member_sites.get(&id)) {
            if claimed != cert_site {
                return Err(format!(
                    "the certificate names site {cert_site}, but node {} is site {claimed}",
                    from.unwrap_or_default()
                ));
            }
        }
    }
    match to {
        Some(to) if to != me => Err(format!("this is node {me} ({site}), not node {to}")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
