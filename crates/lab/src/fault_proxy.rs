//! A TCP fault proxy for one inter-site link, controlled by the drill engine.
//!
//! Each link listens on a local address and forwards to its upstream, applying the
//! faults currently set for each direction: added latency with jitter, a bandwidth
//! cap, a partition (`blackhole`: bytes stop flowing, connections stall the way TCP
//! stalls behind a broken route, and resume when healed), refused new connections
//! (`connection_loss_percent`), and an immediate reset of every open connection.
//! Faults change at run time and apply to open connections too. The proxy never
//! reorders or alters bytes: what arrives is what was sent, later or never.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Largest chunk forwarded at once; also the granularity of latency and bandwidth.
const CHUNK_BYTES: usize = 16 * 1024;
/// Chunks of one direction on their way at once (read, not yet due): 1 MiB.
const IN_FLIGHT_CHUNKS_MAX: usize = 64;
/// Upper bound on injected latency, so a typo cannot stall a drill for hours.
pub const LATENCY_MS_MAX: u64 = 60_000;
/// How long a connection to the upstream may take before the client is dropped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Faults of one direction of a link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectionFaults {
    /// Added one-way delay.
    pub latency_ms: u64,
    /// Uniform extra delay in 0..=jitter_ms (order is kept: a chunk never
    /// overtakes the one before it).
    pub jitter_ms: u64,
    /// Bandwidth cap in bytes per second; `None` is unlimited.
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Partition: nothing flows in this direction until healed.
    pub blackhole: bool,
    /// Percentage (0–100) of packets lost in this direction. Only the netns lab's
    /// packet wire can lose single packets; the TCP proxy refuses it.
    pub loss_percent: u8,
}

/// Faults of a whole link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkFaults {
    /// From the connecting side to the upstream.
    pub forward: DirectionFaults,
    /// From the upstream back to the connecting side.
    pub backward: DirectionFaults,
    /// Percentage (0–100) of new connections closed at once.
    pub connection_loss_percent: u8,
}

impl LinkFaults {
    /// Both directions cut: a network partition between the two sites.
    pub fn partition() -> Self {
        let cut = DirectionFaults { blackhole: true, ..Default::default() };
        LinkFaults { forward: cut, backward: cut, connection_loss_percent: 0 }
    }
    /// The same latency and jitter both ways (a WAN between two cities).
    pub fn wan(latency_ms: u64, jitter_ms: u64) -> Self {
        let d = DirectionFaults { latency_ms, jitter_ms, ..Default::default() };
        LinkFaults { forward: d, backward: d, connection_loss_percent: 0 }
    }
}

impl LinkFaults {
    /// Refuse faults no link can apply: latency beyond [`LATENCY_MS_MAX`], a
    /// percentage above 100.
    pub fn check(&self, link: &str) -> Result<(), FaultProxyError> {
        for d in [self.forward, self.backward] {
            if d.latency_ms.saturating_add(d.jitter_ms) > LATENCY_MS_MAX {
                return Err(FaultProxyError::LatencyTooLarge {
                    link: link.to_string(),
                    latency_ms: d.latency_ms.saturating_add(d.jitter_ms),
                });
            }
            if d.loss_percent > 100 {
                return Err(FaultProxyError::BadPercent { link: link.to_string(), percent: d.loss_percent });
            }
        }
        if self.connection_loss_percent > 100 {
            return Err(FaultProxyError::BadPercent { link: link.to_string(), percent: self.connection_loss_percent });
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FaultProxyError {
    #[error("fault proxy {link}: cannot listen on {addr}: {source}")]
    Bind { link: String, addr: SocketAddr, source: std::io::Error },
    #[error("fault proxy {link}: latency {latency_ms} ms exceeds the {LATENCY_MS_MAX} ms bound")]
    LatencyTooLarge { link: String, latency_ms: u64 },
    #[error("link {link}: {percent}% is not a percentage")]
    BadPercent { link: String, percent: u8 },
    #[error(
        "fault proxy {link}: a TCP proxy cannot lose single packets (loss_percent); \
         the netns lab (`maildr lab up --netns`) can, or use connection_loss_percent"
    )]
    PacketLossNeedsPackets { link: String },
}

/// A running link. Dropping it stops the proxy and closes its connections.
pub struct Link {
    name: String,
    local: SocketAddr,
    faults: watch::Sender<LinkFaults>,
    reset: broadcast::Sender<()>,
    tasks: JoinSet<()>,
}

impl Link {
    /// Listen on `listen` and forward to `upstream`.
    pub async fn start(name: &str, listen: SocketAddr, upstream: SocketAddr) -> Result<Link, FaultProxyError> {
        let listener = TcpListener::bind(listen).await.map_err(|source| FaultProxyError::Bind {
            link: name.to_string(),
            addr: listen,
            source,
        })?;
        let local = listener.local_addr().expect("bound listener has an address");
        let (faults, faults_rx) = watch::channel(LinkFaults::default());
        let (reset, _) = broadcast::channel(16);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(name.to_string(), listener, upstream, faults_rx, reset.clone()));
        Ok(Link { name: name.to_string(), local, faults, reset, tasks })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Replace the link's faults; open connections follow at their next chunk.
    pub fn set(&self, faults: LinkFaults) -> Result<(), FaultProxyError> {
        faults.check(&self.name)?;
        if faults.forward.loss_percent > 0 || faults.backward.loss_percent > 0 {
            return Err(FaultProxyError::PacketLossNeedsPackets { link: self.name.clone() });
        }
        tracing::info!(link = %self.name, ?faults, "fault proxy faults set");
        self.faults.send_replace(faults);
        Ok(())
    }

    /// Heal the link: no faults.
    pub fn heal(&self) {
        self.faults.send_replace(LinkFaults::default());
    }

    pub fn faults(&self) -> LinkFaults {
        *self.faults.borrow()
    }

    /// Reset every open connection (RST to both sides).
    pub fn reset_connections(&self) {
        let _ = self.reset.send(());
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn accept_loop(
    name: String,
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    reset: broadcast::Sender<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, peer)) = accepted else { continue };
                let loss = faults.borrow().connection_loss_percent;
                if loss > 0 && rand::random::<u8>() % 100 < loss {
                    tracing::debug!(link = %name, %peer, "connection dropped by injected loss");
                    drop(client);
                    continue;
                }
                connections.spawn(proxy_connection(client, upstream, faults.clone(), reset.subscribe()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn proxy_connection(
    client: TcpStream,
    upstream: SocketAddr,
    faults: watch::Receiver<LinkFaults>,
    mut reset: broadcast::Receiver<()>,
) {
    // A partitioned link does not even let the connection through.
    let mut waiting = faults.clone();
    let server = tokio::select! {
        _ = reset.recv() => {
            rst(&client);
            return;
        }
        healed = async { waiting.wait_for(|f| !f.forward.blackhole).await.is_ok() } => {
            if !healed { return; }
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
                Ok(Ok(s)) => s,
                _ => return,
            }
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let forward = pump(client_read, server_write, faults.clone(), |f| f.forward, reset.resubscribe());
    let backward = pump(server_read, client_write, faults, |f| f.backward, reset);
    tokio::join!(forward, backward);
}

/// Copy one direction, applying that direction's faults chunk by chunk. On reset,
/// the socket written to is closed with RST (linger 0) rather than FIN.
///
/// Latency is a delay on the way, not a pause of the pump: a reader stamps each
/// chunk with when it is due (its arrival plus the latency) and a writer sends it
/// then, so chunks that arrive close together arrive close together, as on a
/// long line. (Reading the next chunk only after the last one was delivered
/// would charge a request written in two pieces the latency twice.) At most
/// [`IN_FLIGHT_CHUNKS_MAX`] chunks are on their way; beyond that the reader
/// stops and TCP holds the sender back.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    mut faults: watch::Receiver<LinkFaults>,
    pick: fn(&LinkFaults) -> DirectionFaults,
    mut reset: broadcast::Receiver<()>,
) {
    let (on_the_way, mut arriving) = tokio::sync::mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS_MAX);
    let mut read_faults = faults.clone();
    let reader = async move {
        let mut not_before = Instant::now();
        loop {
            // Wait until this direction is not cut, then read (TCP backpressure
            // holds the sender while we are partitioned, as a broken route would).
            read_faults.wait_for(|f| !pick(f).blackhole).await.ok().map(drop)?;
            let mut chunk = vec![0u8; CHUNK_BYTES];
            let n = tokio::select! {
                n = from.read(&mut chunk) => n.ok()?,
                // The writer gave up (its side closed): stop reading too.
                () = on_the_way.closed() => return None,
            };
            if n == 0 {
                // Half-close: the writer sends what is on its way, then EOF.
                return None;
            }
            chunk.truncate(n);
            let f = pick(&read_faults.borrow());
            let jitter = if f.jitter_ms > 0 { rand::random::<u64>() % (f.jitter_ms + 1) } else { 0 };
            // Never before an earlier chunk: jitter delays, it does not reorder.
            not_before = not_before.max(Instant::now() + Duration::from_millis(f.latency_ms + jitter));
            on_the_way.send((not_before, chunk)).await.ok()?;
        }
        #[allow(unreachable_code)]
        Some(())
    };
    let writer = async {
        let delivered = async {
            while let Some((due, chunk)) = arriving.recv().await {
                tokio::time::sleep_until(due).await;
                // A partition that began while the chunk was in flight holds it too.
                faults.wait_for(|f| !pick(f).blackhole).await.ok().map(drop)?;
                to.write_all(&chunk).await.ok()?;
                let rate = pick(&faults.borrow()).bandwidth_bytes_per_sec;
                if let Some(rate) = rate.filter(|r| *r > 0) {
                    tokio::time::sleep(Duration::from_secs_f64(chunk.len() as f64 / rate as f64)).await;
                }
            }
            Some(())
        }
        .await;
        // Whatever ended the delivery, the reader stops too (a write that
        // failed would otherwise leave it reading into a channel nobody empties).
        arriving.close();
        if delivered.is_some() {
            // The reader saw EOF and everything on its way is delivered: the
            // other side sees EOF, the reverse direction lives on.
            let _ = to.shutdown().await;
        }
    };
    tokio::select! {
        _ = reset.recv() => {
            rst(to.as_ref());
        }
        _ = async { tokio::join!(reader, writer) } => {}
    }
}

/// Make the coming close an RST. Linger 0 never blocks on drop (it is the
/// blocking non-zero linger that tokio deprecates), so the deprecation does not apply.
#[allow(deprecated)]
fn rst(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An upstream that echoes every byte back.
    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.unwrap();
        let mut out = vec![0u8; msg.len()];
        s.read_exact(&mut out).await.unwrap();
        out
    }

    async fn link() -> Link {
        Link::start("bj-sh", "127.0.0.1:0".parse().unwrap(), echo_server().await).await.unwrap()
    }

    #[tokio::test]
    async fn a_healthy_link_forwards_bytes_unchanged_both_ways() {
        let link = link().await;
        let mut s = TcpStream::connect(link.local_addr()).await.unwrap();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (mut r, mut w) = s.split();
        let sent = payload.clone();
        let (_, got) = tokio::join!(async { w.write_all(&sent).await.unwrap() }, async {
            let mut got = vec![0u8; payload.len()];
            r.read_exact(&mut got).await.unwrap();
            got
        });
        assert_eq!(got, payload);
    }

    #[tokio::test]
    async fn latency_delays_each_direction_and_keeps_order() {
        let link = link().await;
        link.set(LinkFaults::wan(100, 20)).unwrap();
        let mut s = TcpStream::connect(link.local_addr()).await.unwrap();
        let t = std::time::Instant::now();
        assert_eq!(round_trip(&mut s, b"ping-1 ping-2 ping-3").await, b"ping-1 ping-2 ping-3");
        // A lower bound only: two directions of at least 100 ms each.
        assert!(t.elapsed() >= Duration::from_millis(200), "{:?}", t.elapsed());
    }

    /// A request written in two pieces a little apart costs the latency once, as
    /// on a real line, not once per piece.
    #[tokio::test]
    async fn pieces_sent_close_together_arrive_close_together() {
        let link = link().await;
        link.set(LinkFaults::wan(300, 0)).unwrap();
        let mut s = TcpStream::connect(link.local_addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        let t = std::time::Instant::now();
        s.write_all(b"head ").await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.write_all(b"body").await.unwrap();
        let mut got = [0u8; 9];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"head body");
        let took = t.elapsed();
        // 300 ms each way plus the 20 ms between the pieces; a pump that paused
        // for each piece took 903 ms here (the bound leaves 160 ms for a busy machine).
        assert!(took >= Duration::from_millis(620), "{took:?}");
        assert!(took < Duration::from_millis(780), "the latency was charged per piece: {took:?}");
    }

    /// What is on its way is bounded ([`IN_FLIGHT_CHUNKS_MAX`]): with a long
    /// latency the proxy stops reading and TCP holds the sender, instead of the
    /// proxy taking in whatever the sender writes.
    #[tokio::test]
    async fn bytes_on_their_way_are_bounded_and_the_sender_is_held() {
        let link = link().await;
        link.set(LinkFaults::wan(30_000, 0)).unwrap();
        let mut s = TcpStream::connect(link.local_addr()).await.unwrap();
        // Far more than the chunks on their way plus both sockets' buffers.
        let much = vec![7u8; 64 * 1024 * 1024];
        let written = tokio::time::timeout(Duration::from_secs(2), s.write_all(&much)).await;
        assert!(written.is_err(), "64 MiB went into a link whose bytes take 30 s to arrive");
        assert!(IN_FLIGHT_CHUNKS_MAX * CHUNK_BYTES < much.len() / 16);
    }

    #[tokio::test]
    async fn a_partition_stalls_traffic_until_healed_and_loses_nothing() {
        let link = link().await;
        let mut s = TcpStream::connect(link.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"before").await, b"before");
        link.set(LinkFaults::partition()).unwrap();
        s.write_all(b"during").await.unwrap();
        let mut buf = [0u8; 6];
        let stalled = tokio::time::timeout(Duration::from_millis(300), s.read_exact(&mut buf)).await;
        assert!(stalled.is_err(), "bytes crossed a partition");
        // New connections are held too.
        let mut held = TcpStream::connect(link.local_addr()).await.unwrap();
        held.write_all(b"new").await.unwrap();
        link.heal();
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"during");
        let mut buf3 = [0u8; 3];
        held.read_exact(&mut buf3).await.unwrap();
        assert_eq!(&buf3, b"new");
    }

    #[tokio::test]
    async fn reset_closes_open_connections_and_new_ones_still_work() {
        let link = link().await;
        let mut s = TcpStream::connect(link.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"x").await, b"x");
        link.reset_connections();
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            let _ = s.write_all(b"y").await;
            s.read(&mut buf).await
        })
        .await
        .expect("a reset connection must not hang");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        let mut s2 = TcpStream::connect(link.local_addr()).await.unwrap();
        assert_eq!(round_trip(&mut s2, b"z").await, b"z");
    }

    #[tokio::test]
    async fn total_connection_loss_refuses_every_new_connection() {
        let link = link().await;
        link.set(LinkFaults { connection_loss_percent: 100, ..Default::default() }).unwrap();
        let mut s = TcpStream::connect(link.local_addr()).await.unwrap();
        let _ = s.write_all(b"x").await;
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed, not hung");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
    }

    #[tokio::test]
    async fn out_of_range_faults_are_refused_and_leave_the_link_as_it_was() {
        let link = link().await;
        link.set(LinkFaults::wan(10, 0)).unwrap();
        assert!(link.set(LinkFaults::wan(LATENCY_MS_MAX + 1, 0)).is_err());
        assert!(link.set(LinkFaults { connection_loss_percent: 101, ..Default::default() }).is_err());
        assert_eq!(link.faults(), LinkFaults::wan(10, 0));
    }
}
