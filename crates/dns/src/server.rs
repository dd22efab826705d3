//! The authoritative DNS server every data site runs for its hosted domains.
//!
//! When a site dies, senders and clients find the survivor through these answers,
//! so the server answers only from the [`ZoneSet`] the control plane hands it, swaps
//! that set whole (a new set replaces every record set, nothing is merged), and says
//! through [`DnsServer::served`] when a serial is first served, so the control plane
//! can log `dns_served` and the drill can split the DNS part out of the RTO.
//!
//! It is our own tokio UDP + TCP loop over hickory-proto's message codec rather than
//! hickory-server: hickory-server's in-memory authority grows record sets on `upsert`
//! and is built for zones edited in place, while our zones are immutable values
//! swapped atomically through a `watch` channel; the whole query path here is one
//! pure function, [`respond`], that is easy to test and to bound. It also keeps
//! hickory-server's and hickory-net's dependency trees out of the build.
//!
//! Behaviour: AA set on every answer from a hosted zone, RA never set (no
//! recursion); NODATA and NXDOMAIN carry the zone's SOA in the authority section;
//! names outside every hosted zone get REFUSED; undecodable queries get FORMERR
//! (fewer than 12 bytes, or anything marked as a response, is dropped: there is no
//! header to answer to, or answering could loop); opcodes other than QUERY get
//! NOTIMP; zone transfers get REFUSED; EDNS versions above 0 get BADVERS. ANY is
//! answered minimally (RFC 8482): one record set of the name, the first in
//! canonical type order. Additional records (addresses of MX and NS targets in the
//! zone) are dropped first when a UDP answer is too big; if the answer itself does
//! not fit, the reply holds only the question with TC set, so the client retries
//! over TCP.
//!
//! **Never:** panic or allocate without bound on network input, recurse or forward,
//! answer for a name outside the hosted zones, or serve a mix of two zone sets.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hickory_proto::op::{Edns, Header, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use maildr_types::Domain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::zone::{Lookup, Zone, ZoneSet};

/// A UDP reply is never cut below this size (RFC 1035 §4.2.1), in bytes.
pub const UDP_RESPONSE_SIZE_MIN_BYTES: usize = 512;
/// Largest UDP reply we send even if the client offers more (the 2020 DNS flag day
/// value, which avoids IP fragmentation), in bytes. Also the size we advertise in EDNS.
pub const UDP_RESPONSE_SIZE_MAX_BYTES: usize = 1232;
/// Receive buffer for one UDP query, in bytes; a longer datagram is cut by the
/// kernel, fails to decode and gets FORMERR.
pub const UDP_QUERY_SIZE_MAX_BYTES: usize = 4096;
/// Pause after a failed UDP receive or TCP accept, so a persistent error cannot spin
/// the loop, in milliseconds.
pub const SOCKET_ERROR_PAUSE_MS: u64 = 20;
/// Concurrent TCP connections; one more is closed at once.
pub const TCP_CONNECTIONS_MAX: usize = 64;
/// A TCP connection that sends no complete query for this long is closed (RFC 7766
/// §6.2.3 suggests seconds, not minutes), in milliseconds.
pub const TCP_IDLE_TIMEOUT_MS: u64 = 10_000;
/// Longest wait for a TCP client to take a reply, in milliseconds.
pub const TCP_WRITE_TIMEOUT_MS: u64 = 5_000;
/// Queries answered on one TCP connection before it is closed.
pub const TCP_QUERIES_PER_CONNECTION_MAX: usize = 1_000;
/// Attempts to find a port free for both UDP and TCP when binding port 0.
pub const BIND_ATTEMPTS_MAX: usize = 16;

/// The server's bounds; [`ServerLimits::default`] holds the constants above.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Concurrent TCP connections.
    pub tcp_connections_max: usize,
    /// Idle time before a TCP connection is closed, in milliseconds.
    pub tcp_idle_timeout_ms: u64,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits { tcp_connections_max: TCP_CONNECTIONS_MAX, tcp_idle_timeout_ms: TCP_IDLE_TIMEOUT_MS }
    }
}

/// Why the server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum DnsServerError {
    #[error("DNS server: cannot bind UDP {addr}: {source}")]
    BindUdp { addr: SocketAddr, source: io::Error },
    #[error("DNS server: cannot bind TCP {addr}: {source}")]
    BindTcp { addr: SocketAddr, source: io::Error },
    #[error("DNS server: no port free for both UDP and TCP on {ip} after {BIND_ATTEMPTS_MAX} attempts: {source}")]
    NoCommonPort { ip: std::net::IpAddr, source: io::Error },
}

/// A zone's serial and when this server began to answer from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServedZone {
    /// The SOA serial being served.
    pub serial: u32,
    /// When this serial was first served (taken right after the swap, so it is never
    /// earlier than the first answer from the new zone set could go out).
    pub since: SystemTime,
}

/// What the server answers from now: each hosted domain's serial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServedState {
    /// By domain; a domain no longer hosted is absent.
    pub zones: BTreeMap<Domain, ServedZone>,
}

/// Which transport a query came over; it decides the reply size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Replies are cut to 512 bytes or the EDNS size the client offers.
    Udp,
    /// Replies may use the full 65535 bytes of the length prefix.
    Tcp,
}

/// An authoritative server bound to one address on UDP and TCP; [`DnsServer::serve`]
/// answers until told to stop.
pub struct DnsServer {
    udp: UdpSocket,
    tcp: TcpListener,
    local_addr: SocketAddr,
    limits: ServerLimits,
    served_tx: watch::Sender<ServedState>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr`. With port 0 both get the same ephemeral port.
    pub async fn bind(addr: SocketAddr) -> Result<DnsServer, DnsServerError> {
        Self::bind_reporting(addr, watch::channel(ServedState::default()).0).await
    }

    /// Binds like [`DnsServer::bind`], reporting what is served to `served` (from
    /// [`DnsServer::served_reporter`] of an earlier server on this address), so a
    /// server stopped and bound again continues that record: serving a serial
    /// again is not a new serial served.
    pub async fn bind_reporting(
        addr: SocketAddr,
        served_tx: watch::Sender<ServedState>,
    ) -> Result<DnsServer, DnsServerError> {
        let mut last_error = None;
        let attempts = if addr.port() == 0 { BIND_ATTEMPTS_MAX } else { 1 };
        for _ in 0..attempts {
            let udp = UdpSocket::bind(addr).await.map_err(|source| DnsServerError::BindUdp { addr, source })?;
            let local_addr = udp.local_addr().map_err(|source| DnsServerError::BindUdp { addr, source })?;
            match TcpListener::bind(local_addr).await {
                Ok(tcp) => {
                    return Ok(DnsServer { udp, tcp, local_addr, limits: ServerLimits::default(), served_tx });
                }
                // Someone holds this port on TCP only; try another ephemeral port.
                Err(source) if addr.port() == 0 => last_error = Some(source),
                Err(source) => return Err(DnsServerError::BindTcp { addr: local_addr, source }),
            }
        }
        let source = last_error.unwrap_or_else(|| io::Error::other("no attempt made"));
        Err(DnsServerError::NoCommonPort { ip: addr.ip(), source })
    }

    /// Replaces the default bounds (tests use a short idle timeout).
    pub fn with_limits(mut self, limits: ServerLimits) -> DnsServer {
        self.limits = limits;
        self
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Follows which serial of each domain is being served, and since when.
    pub fn served(&self) -> watch::Receiver<ServedState> {
        self.served_tx.subscribe()
    }

    /// Where this server reports what it serves, for [`DnsServer::bind_reporting`].
    pub fn served_reporter(&self) -> watch::Sender<ServedState> {
        self.served_tx.clone()
    }

    /// Answers queries from the latest value of `zones` until `stop` turns true or
    /// its sender is dropped. If the `zones` sender is dropped the last set stays
    /// served. Every TCP connection task is ended before this returns.
    pub async fn serve(self, mut zones: watch::Receiver<Arc<ZoneSet>>, mut stop: watch::Receiver<bool>) {
        let DnsServer { udp, tcp, local_addr, limits, served_tx } = self;
        let initial = zones.borrow_and_update().clone();
        let (current_tx, current_rx) = watch::channel(initial.clone());
        note_served(&served_tx, &initial);
        let mut connections: JoinSet<()> = JoinSet::new();
        let mut buf = vec![0u8; UDP_QUERY_SIZE_MAX_BYTES];
        let mut zones_open = true;
        let pause = Duration::from_millis(SOCKET_ERROR_PAUSE_MS);
        tracing::info!(%local_addr, "DNS server answering");
        loop {
            if *stop.borrow_and_update() {
                break;
            }
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                changed = zones.changed(), if zones_open => match changed {
                    Ok(()) => {
                        let set = zones.borrow_and_update().clone();
                        current_tx.send_replace(set.clone());
                        note_served(&served_tx, &set);
                    }
                    Err(_) => zones_open = false,
                },
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            tracing::error!(%local_addr, "DNS TCP connection task panicked: {e}");
                        }
                    }
                }
                received = udp.recv_from(&mut buf) => match received {
                    Ok((len, peer)) => {
                        let set = current_rx.borrow().clone();
                        if let Some(reply) = respond(&set, &buf[..len], Transport::Udp) {
                            if let Err(e) = udp.send_to(&reply, peer).await {
                                tracing::debug!(%local_addr, %peer, "DNS UDP reply not sent: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%local_addr, "DNS UDP receive failed: {e}");
                        tokio::time::sleep(pause).await;
                    }
                },
                accepted = tcp.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if connections.len() >= limits.tcp_connections_max {
                            tracing::debug!(%local_addr, %peer, "DNS TCP connection refused: {} open", connections.len());
                            drop(stream);
                        } else {
                            connections.spawn(serve_tcp(stream, current_rx.clone(), limits.tcp_idle_timeout_ms));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(%local_addr, "DNS TCP accept failed: {e}");
                        tokio::time::sleep(pause).await;
                    }
                },
            }
        }
        connections.shutdown().await;
        tracing::info!(%local_addr, "DNS server stopped");
    }
}

fn note_served(served_tx: &watch::Sender<ServedState>, set: &ZoneSet) {
    let now = SystemTime::now();
    served_tx.send_if_modified(|state| {
        let mut next = BTreeMap::new();
        for (domain, serial) in set.serials() {
            let since = match state.zones.get(&domain) {
                Some(old) if old.serial == serial => old.since,
                _ => now,
            };
            next.insert(domain, ServedZone { serial, since });
        }
        if next == state.zones {
            return false;
        }
        for (domain, zone) in &next {
            if state.zones.get(domain).map(|old| old.serial) != Some(zone.serial) {
                tracing::info!(%domain, serial = zone.serial, "DNS zone served");
            }
        }
        state.zones = next;
        true
    });
}

async fn serve_tcp(mut stream: TcpStream, zones: watch::Receiver<Arc<ZoneSet>>, idle_timeout_ms: u64) {
    // Each reply is one write; without Nagle it leaves at once.
    let _ = stream.set_nodelay(true);
    let idle = Duration::from_millis(idle_timeout_ms);
    let write = Duration::from_millis(TCP_WRITE_TIMEOUT_MS);
    for _ in 0..TCP_QUERIES_PER_CONNECTION_MAX {
        let mut len = [0u8; 2];
        if !matches!(tokio::time::timeout(idle, stream.read_exact(&mut len)).await, Ok(Ok(_))) {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(tokio::time::timeout(idle, stream.read_exact(&mut query)).await, Ok(Ok(_))) {
            return;
        }
        let set = zones.borrow().clone();
        let Some(reply) = respond(&set, &query, Transport::Tcp) else {
            return;
        };
        let Ok(reply_len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&reply_len.to_be_bytes());
        framed.extend_from_slice(&reply);
        if !matches!(tokio::time::timeout(write, stream.write_all(&framed)).await, Ok(Ok(()))) {
            return;
        }
    }
}

/// Answers one query message from `zones`; `None` means send nothing (the input is
/// too short to have a header, or is itself a response). Pure: no I/O, no clock.
pub fn respond(zones: &ZoneSet, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let request = match Message::from_vec(query) {
        Ok(request) => request,
        Err(_) => return encode(error_reply(&header.metadata, ResponseCode::FormErr), UDP_RESPONSE_SIZE_MIN_BYTES),
    };
    let limit = match transport {
        Transport::Udp => {
            usize::from(request.max_payload()).clamp(UDP_RESPONSE_SIZE_MIN_BYTES, UDP_RESPONSE_SIZE_MAX_BYTES)
        }
        Transport::Tcp => usize::from(u16::MAX),
    };
    encode(answer(zones, &request), limit)
}

fn error_reply(request: &Metadata, code: ResponseCode) -> Message {
    let mut reply = Message::response(request.id, request.op_code);
    reply.metadata = Metadata::response_from_request(request);
    reply.metadata.response_code = code;
    reply
}

fn answer(zones: &ZoneSet, request: &Message) -> Message {
    let mut reply = error_reply(&request.metadata, ResponseCode::NoError);
    // The question is echoed only when there is exactly one: the FORMERR to a
    // query of many would otherwise repeat them all, past the UDP size limit
    // (found by the dns_query fuzz target's harness).
    if request.queries.len() == 1 {
        reply.add_queries(request.queries.iter().cloned());
    }
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        // UDP_RESPONSE_SIZE_MAX_BYTES is 1232, well inside u16.
        #[allow(clippy::cast_possible_truncation)]
        ours.set_max_payload(UDP_RESPONSE_SIZE_MAX_BYTES as u16).set_version(0);
        reply.set_edns(ours);
        if edns.version() > 0 {
            reply.metadata.response_code = ResponseCode::BADVERS;
            return reply;
        }
    }
    if request.metadata.op_code != OpCode::Query {
        reply.metadata.response_code = ResponseCode::NotImp;
        return reply;
    }
    let [question] = request.queries.as_slice() else {
        reply.metadata.response_code = ResponseCode::FormErr;
        return reply;
    };
    let qtype = question.query_type();
    if question.query_class() != DNSClass::IN || matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
        reply.metadata.response_code = ResponseCode::Refused;
        return reply;
    }
    let Some(zone) = zones.zone_for(question.name()) else {
        reply.metadata.response_code = ResponseCode::Refused;
        return reply;
    };
    reply.metadata.authoritative = true;
    let lookup =
        if qtype == RecordType::ANY { lookup_any(zone, question.name()) } else { zone.lookup(question.name(), qtype) };
    match lookup {
        Lookup::Records(set) => {
            reply.answers = set.to_vec();
            reply.additionals = additional_addresses(zone, set);
        }
        Lookup::NoData => reply.authorities.push(zone.soa().clone()),
        Lookup::NxDomain => {
            reply.metadata.response_code = ResponseCode::NXDomain;
            reply.authorities.push(zone.soa().clone());
        }
    }
    reply
}

/// RFC 8482 minimal ANY: the first record set at the name in canonical type order.
fn lookup_any<'z>(zone: &'z Zone, name: &hickory_proto::rr::Name) -> Lookup<'z> {
    let mut lower = name.to_lowercase();
    lower.set_fqdn(true);
    let first = zone.record_sets().iter().find(|((owner, _), _)| *owner == lower);
    match first {
        Some((_, set)) => Lookup::Records(set),
        None => zone.lookup(name, RecordType::ANY),
    }
}

/// Addresses of the MX and NS targets that live in this zone, so a resolver need not
/// ask again.
fn additional_addresses(zone: &Zone, answers: &[Record]) -> Vec<Record> {
    let mut extra = Vec::new();
    for record in answers {
        let target = match &record.data {
            RData::MX(mx) => &mx.exchange,
            RData::NS(ns) => &ns.0,
            _ => continue,
        };
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Lookup::Records(set) = zone.lookup(target, rtype) {
                extra.extend(set.iter().cloned());
            }
        }
    }
    extra
}

/// Encodes `reply` within `limit` bytes: all of it, else without additional
/// records, else only the question with TC set.
fn encode(mut reply: Message, limit: usize) -> Option<Vec<u8>> {
    match reply.to_vec() {
        Ok(bytes) if bytes.len() <= limit => return Some(bytes),
        Ok(_) => {}
        Err(e) => tracing::warn!("DNS reply could not be encoded: {e}"),
    }
    if !reply.additionals.is_empty() {
        reply.additionals.clear();
        if let Ok(bytes) = reply.to_vec() {
            if bytes.len() <= limit {
                return Some(bytes);
            }
        }
    }
    match reply.truncate().to_vec() {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            tracing::warn!("DNS truncated reply could not be encoded: {e}");
            None
        }
    }
}
