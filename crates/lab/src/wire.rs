//! The netns lab's virtual WAN: a learning Ethernet switch in user space whose
//! ports are TAP devices, one inside each lab namespace, and whose links between
//! sites delay, jitter, rate-limit, lose and drop real packets.
//!
//! The kernel a lab runs on may have no `sch_netem` (this project's CI kernel has
//! none, and no module loading), and `tbf` alone cannot delay. So the lab shapes
//! packets itself, as netem would: every frame a site's kernel sends out of its
//! `wan0` comes here, is queued on the link to the site it is addressed to, and is
//! written into that site's `wan0` when its time comes. The sites' TCP stacks see
//! real loss, real reordering-free delay and real retransmissions; nothing above
//! the Ethernet layer is touched.
//!
//! Faults are set per link with the same [`LinkFaults`] as the loopback lab's TCP
//! proxy, under the same names (`bj-sh`, `sh-bj`). A packet link joins two sites
//! whichever side opened a connection, so the packets from `a` to `b` get the
//! larger of `a-b`'s `forward` and `b-a`'s `backward` faults: setting both links
//! the same way (as drills do) gives exactly that fault on each direction.
//! `connection_loss_percent` loses that share of connection-opening TCP SYNs.
//! Traffic between a site and the client namespace is never shaped.
//!
//! TAP devices made here are not persistent: when this process exits, for any
//! reason, the kernel removes them with their addresses.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::fault_proxy::{DirectionFaults, FaultProxyError, LinkFaults};

/// Frames waiting on one direction of one link; more are dropped, as a full
/// router queue drops them (netem's default limit is 1,000 packets).
pub const LINK_QUEUE_FRAMES_MAX: usize = 10_000;
/// Source addresses the switch remembers; beyond this it forgets them all and
/// floods until it has learned again.
pub const MAC_TABLE_MAX: usize = 1_024;
/// Largest frame read from a TAP device (the devices' MTU is 1500; without
/// offloads no frame is larger, but a short read must never truncate one).
const FRAME_BYTES_MAX: usize = 65_536;
/// The TAP device's name inside every lab namespace.
pub const WAN_DEVICE: &str = "wan0";

/// The faults that apply to packets from one site to another: the larger of the
/// two links' faults for that direction.
pub fn direction_faults(a_to_b: &LinkFaults, b_to_a: &LinkFaults) -> (DirectionFaults, u8) {
    let (f, g) = (a_to_b.forward, b_to_a.backward);
    let bandwidth = match (f.bandwidth_bytes_per_sec, g.bandwidth_bytes_per_sec) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    };
    (
        DirectionFaults {
            latency_ms: f.latency_ms.max(g.latency_ms),
            jitter_ms: f.jitter_ms.max(g.jitter_ms),
            bandwidth_bytes_per_sec: bandwidth,
            blackhole: f.blackhole || g.blackhole,
            loss_percent: f.loss_percent.max(g.loss_percent),
        },
        a_to_b.connection_loss_percent.max(b_to_a.connection_loss_percent),
    )
}

/// When a frame leaves one direction of a link, or that it is lost. Pure
/// arithmetic over a clock the caller passes in, so it is tested without devices.
#[derive(Debug, Default)]
pub struct Shaper {
    /// When the link finishes sending what it has accepted (the rate limit).
    busy_until: Option<Instant>,
    /// When the last accepted frame is released: no frame overtakes another.
    last_release: Option<Instant>,
}

/// What the shaper decided for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver at this moment.
    At(Instant),
    /// Dropped: a partition, random loss, or a lost connection attempt.
    Lost,
}

impl Shaper {
    /// Decide for a frame of `len` bytes arriving at `now`; `random` draws a number
    /// in `0..n` (the caller's generator), `opens_connection` marks a TCP SYN.
    pub fn admit(
        &mut self,
        now: Instant,
        len: usize,
        faults: &DirectionFaults,
        connection_loss_percent: u8,
        opens_connection: bool,
        mut random: impl FnMut(u64) -> u64,
    ) -> Verdict {
        if faults.blackhole {
            return Verdict::Lost;
        }
        if faults.loss_percent > 0 && random(100) < u64::from(faults.loss_percent) {
            return Verdict::Lost;
        }
        if opens_connection && connection_loss_percent > 0 && random(100) < u64::from(connection_loss_percent) {
            return Verdict::Lost;
        }
        let mut depart = now;
        if let Some(rate) = faults.bandwidth_bytes_per_sec.filter(|r| *r > 0) {
            depart = self.busy_until.map_or(now, |b| b.max(now));
            let nanos = u64::try_from(len as u128 * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX);
            self.busy_until = Some(depart + Duration::from_nanos(nanos));
        }
        let jitter = if faults.jitter_ms > 0 { random(faults.jitter_ms + 1) } else { 0 };
        let mut release = depart + Duration::from_millis(faults.latency_ms + jitter);
        if let Some(last) = self.last_release {
            release = release.max(last);
        }
        self.last_release = Some(release);
        Verdict::At(release)
    }
}

/// Which port each source address was last seen on, for at most
/// [`MAC_TABLE_MAX`] addresses (a full table is forgotten at once, and the switch
/// floods until it has learned again).
#[derive(Debug, Default)]
pub struct MacTable {
    ports: HashMap<[u8; 6], usize>,
}

impl MacTable {
    /// Learn that `src` is behind `port` (group addresses are never sources).
    pub fn learn(&mut self, src: [u8; 6], port: usize) {
        if src[0] & 1 == 1 {
            return;
        }
        if self.ports.len() >= MAC_TABLE_MAX && !self.ports.contains_key(&src) {
            self.ports.clear();
        }
        self.ports.insert(src, port);
    }

    /// The ports a frame from `from` to `dst` goes out of, among `ports`.
    pub fn out_ports(&self, dst: [u8; 6], from: usize, ports: usize) -> Vec<usize> {
        let known = if dst[0] & 1 == 0 { self.ports.get(&dst).copied() } else { None };
        match known {
            Some(to) if to != from => vec![to],
            Some(_) => Vec::new(),
            None => (0..ports).filter(|t| *t != from).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ports.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

/// Frames waiting on one direction of a link, in release order, at most
/// [`LINK_QUEUE_FRAMES_MAX`].
#[derive(Debug, Default)]
pub struct LinkQueue {
    frames: VecDeque<(Instant, Vec<u8>)>,
}

impl LinkQueue {
    /// Queue a frame; `false` (and the frame dropped) when the queue is full.
    pub fn push(&mut self, at: Instant, frame: Vec<u8>) -> bool {
        if self.frames.len() >= LINK_QUEUE_FRAMES_MAX {
            return false;
        }
        self.frames.push_back((at, frame));
        true
    }

    /// When the first frame is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.frames.front().map(|(at, _)| *at)
    }

    /// Take the next frame if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.next_due()? <= now {
            self.frames.pop_front().map(|(_, f)| f)
        } else {
            None
        }
    }

    /// Lose everything queued (a partition cuts what was on the wire too).
    pub fn clear(&mut self) {
        self.frames.clear();
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }
}

/// Whether an Ethernet frame carries an IPv4 TCP SYN without ACK.
pub fn is_tcp_syn(frame: &[u8]) -> bool {
    const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
    const TCP: u8 = 6;
    if frame.len() < 14 + 20 || frame[12..14] != ETHERTYPE_IPV4 || frame[14 + 9] != TCP {
        return false;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let flags = 14 + ihl + 13;
    ihl >= 20 && frame.len() > flags && frame[flags] & 0x12 == 0x02
}

/// Why the wire could not start.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("opening network namespace {ns}: {source}")]
    Namespace { ns: String, source: std::io::Error },
    #[error("creating TAP device {WAN_DEVICE} in namespace {ns}: {source}")]
    Tap { ns: String, source: std::io::Error },
    #[error("configuring {WAN_DEVICE} in namespace {ns}: {reason}")]
    Configure { ns: String, reason: String },
    #[error(transparent)]
    Faults(#[from] FaultProxyError),
}

/// One port of the switch: a namespace's `wan0` and the address it gets.
#[derive(Debug, Clone)]
pub struct PortSpec {
    /// A site name, or `client`.
    pub name: String,
    /// The network namespace the TAP device is made in.
    pub netns: String,
    /// `A.B.C.D/len` given to the device.
    pub address: String,
}

/// Make `wan0` inside namespace `ns` and return its file descriptor.
///
/// The calling thread enters `ns` for the `open` of `/dev/net/tun` (the device is
/// made in the namespace of that moment) and comes back to where it was.
fn open_tap(ns: &str) -> Result<OwnedFd, WireError> {
    use std::fs::File;
    let io = |source| WireError::Tap { ns: ns.to_string(), source };
    let home =
        File::open("/proc/thread-self/ns/net").map_err(|source| WireError::Namespace { ns: "(own)".into(), source })?;
    let target = crate::netns::open(ns).map_err(|source| WireError::Namespace { ns: ns.to_string(), source })?;
    crate::netns::set_thread(&target).map_err(|source| WireError::Namespace { ns: ns.to_string(), source })?;
    let made = File::options().read(true).write(true).open("/dev/net/tun").map_err(io).and_then(|tun| {
        tun_set_iff(&tun).map_err(io)?;
        Ok(OwnedFd::from(tun))
    });
    crate::netns::set_thread(&home).map_err(|source| WireError::Namespace { ns: "(own)".into(), source })?;
    let fd = made?;
    // SAFETY: fcntl on a descriptor we own.
    let nonblocking = unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
    };
    if !nonblocking {
        return Err(io(std::io::Error::last_os_error()));
    }
    Ok(fd)
}

/// `ioctl(TUNSETIFF)`: make the descriptor a TAP device named [`WAN_DEVICE`],
/// without the packet-information header.
fn tun_set_iff(tun: &std::fs::File) -> std::io::Result<()> {
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: libc::c_short::try_from(libc::IFF_TAP | libc::IFF_NO_PI).expect("the TAP flags fit a short"),
        _pad: [0; 22],
    };
    for (slot, byte) in req.name.iter_mut().zip(WAN_DEVICE.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which IfReq lays out.
    let rc = unsafe { libc::ioctl(tun.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `ip -n NS ARGS...`, failing with what it printed.
fn ip(ns: &str, args: &[&str]) -> Result<(), WireError> {
    let out = std::process::Command::new("ip").arg("-n").arg(ns).args(args).output().map_err(|e| {
        WireError::Configure { ns: ns.to_string(), reason: format!("running ip {}: {e}", args.join(" ")) }
    })?;
    if !out.status.success() {
        return Err(WireError::Configure {
            ns: ns.to_string(),
            reason: format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// A TAP device ready for async reads and writes.
struct Tap {
    fd: AsyncFd<OwnedFd>,
}

impl Tap {
    async fn read(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            // SAFETY: reading into a buffer we own, of its length.
            match guard.try_io(|fd| {
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write(&self, frame: &[u8]) -> std::io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            // SAFETY: writing a buffer we own, of its length.
            match guard.try_io(|fd| {
                let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            }) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The fault settings of every named link, shared by the control API and the
/// shapers.
pub struct WireLinks {
    /// Site names, in port order.
    sites: Vec<String>,
    links: Mutex<HashMap<String, LinkFaults>>,
    /// Bumped on every change, so the shapers re-read.
    changed: watch::Sender<u64>,
}

impl WireLinks {
    fn new(sites: Vec<String>) -> WireLinks {
        let mut links = HashMap::new();
        for a in &sites {
            for b in sites.iter().filter(|b| *b != a) {
                links.insert(format!("{a}-{b}"), LinkFaults::default());
            }
        }
        WireLinks { sites, links: Mutex::new(links), changed: watch::channel(0).0 }
    }

    /// Every link name with its faults, sorted.
    pub fn list(&self) -> Vec<(String, LinkFaults)> {
        let table = self.links.lock().expect("wire link table");
        let mut out: Vec<(String, LinkFaults)> = table.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    }

    pub fn get(&self, name: &str) -> Option<LinkFaults> {
        self.links.lock().expect("wire link table").get(name).copied()
    }

    /// Set a link's faults. `None`: no such link.
    pub fn set(&self, name: &str, faults: LinkFaults) -> Option<Result<LinkFaults, FaultProxyError>> {
        let mut table = self.links.lock().expect("wire link table");
        let slot = table.get_mut(name)?;
        if let Err(e) = faults.check(name) {
            return Some(Err(e));
        }
        *slot = faults;
        drop(table);
        tracing::info!(link = %name, ?faults, "wire faults set");
        self.changed.send_modify(|n| *n += 1);
        Some(Ok(faults))
    }

    /// The faults on packets from site `a` to site `b`.
    fn between(&self, a: &str, b: &str) -> (DirectionFaults, u8) {
        let table = self.links.lock().expect("wire link table");
        let get = |n: String| table.get(&n).copied().unwrap_or_default();
        direction_faults(&get(format!("{a}-{b}")), &get(format!("{b}-{a}")))
    }
}

/// A running wire. Dropping it stops the switch; the TAP devices go when the
/// process exits (or when every descriptor is closed).
pub struct Wire {
    pub links: Arc<WireLinks>,
    _tasks: JoinSet<()>,
}

impl Wire {
    /// Make a `wan0` in every port's namespace, address it, bring it up, and start
    /// switching. `sites` names the ports whose links carry faults (all but the
    /// client). Must run inside a tokio runtime.
    pub fn start(ports: &[PortSpec], sites: Vec<String>) -> Result<Wire, WireError> {
        let mut taps = Vec::new();
        for port in ports {
            let fd = open_tap(&port.netns)?;
            ip(&port.netns, &["link", "set", "lo", "up"])?;
            ip(&port.netns, &["addr", "add", &port.address, "dev", WAN_DEVICE])?;
            ip(&port.netns, &["link", "set", WAN_DEVICE, "up"])?;
            // SAFETY: an OwnedFd's descriptor stays open and the same until it is dropped.
            let fd = unsafe { AsyncFd::register(fd) }
                .map_err(|e| WireError::Tap { ns: port.netns.clone(), source: std::io::Error::other(e.to_string()) })?;
            taps.push(Arc::new(Tap { fd }));
            tracing::info!(port = %port.name, netns = %port.netns, address = %port.address, "wire port up");
        }
        let links = Arc::new(WireLinks::new(sites));
        let names: Vec<String> = ports.iter().map(|p| p.name.clone()).collect();
        let mut tasks = JoinSet::new();
        // One shaper per ordered pair of ports.
        let mut queues: Vec<Vec<Option<mpsc::Sender<Vec<u8>>>>> = vec![vec![None; ports.len()]; ports.len()];
        for from in 0..ports.len() {
            for to in (0..ports.len()).filter(|t| *t != from) {
                let (tx, rx) = mpsc::channel(LINK_QUEUE_FRAMES_MAX);
                queues[from][to] = Some(tx);
                let shaped = links.sites.contains(&names[from]) && links.sites.contains(&names[to]);
                let pair = shaped.then(|| (names[from].clone(), names[to].clone()));
                tasks.spawn(shape(rx, Arc::clone(&taps[to]), Arc::clone(&links), pair));
            }
        }
        let macs: Arc<Mutex<MacTable>> = Arc::default();
        for (port, tap) in taps.iter().enumerate() {
            let out: Vec<Option<mpsc::Sender<Vec<u8>>>> = queues[port].clone();
            tasks.spawn(switch_port(port, Arc::clone(tap), out, Arc::clone(&macs)));
        }
        Ok(Wire { links, _tasks: tasks })
    }
}

/// Read frames from one port and queue each on the link to the port its
/// destination address was learned on (or on every link, to flood).
async fn switch_port(port: usize, tap: Arc<Tap>, out: Vec<Option<mpsc::Sender<Vec<u8>>>>, macs: Arc<Mutex<MacTable>>) {
    let mut buf = vec![0u8; FRAME_BYTES_MAX];
    loop {
        let n = match tap.read(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(port, error = %e, "wire port read failed; the port stops");
                return;
            }
        };
        if n < 14 {
            continue;
        }
        let frame = &buf[..n];
        let (dst, src): ([u8; 6], [u8; 6]) =
            (frame[0..6].try_into().expect("six bytes"), frame[6..12].try_into().expect("six bytes"));
        let targets = {
            let mut table = macs.lock().expect("mac table");
            table.learn(src, port);
            table.out_ports(dst, port, out.len())
        };
        for to in targets {
            if let Some(tx) = &out[to] {
                // A full queue drops the frame, as a router's full queue does.
                let _ = tx.try_send(frame.to_vec());
            }
        }
    }
}

/// Deliver the frames of one direction of one link to `tap` at the times its
/// faults give; `pair` is `None` for unshaped links (to or from the client).
async fn shape(mut rx: mpsc::Receiver<Vec<u8>>, tap: Arc<Tap>, links: Arc<WireLinks>, pair: Option<(String, String)>) {
    let Some((from, to)) = pair else {
        while let Some(frame) = rx.recv().await {
            let _ = tap.write(&frame).await;
        }
        return;
    };
    let mut changed = links.changed.subscribe();
    let mut faults = links.between(&from, &to);
    let mut shaper = Shaper::default();
    let mut waiting = LinkQueue::default();
    let mut rng = rand::rngs::StdRng::from_entropy();
    loop {
        let next = waiting.next_due();
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { return };
                let verdict = shaper.admit(Instant::now(), frame.len(), &faults.0, faults.1, is_tcp_syn(&frame), |n| rng.gen_range(0..n));
                if let Verdict::At(at) = verdict {
                    // A full queue drops the frame.
                    let _ = waiting.push(at, frame);
                }
            }
            _ = changed.changed() => {
                faults = links.between(&from, &to);
                if faults.0.blackhole {
                    // A partition also loses what was on the wire.
                    waiting.clear();
                }
                if faults.0 == DirectionFaults::default() {
                    shaper = Shaper::default();
                }
            }
            _ = sleep_until(next), if next.is_some() => {
                let now = Instant::now();
                while let Some(frame) = waiting.pop_due(now) {
                    let _ = tap.write(&frame).await;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(latency_ms: u64, jitter_ms: u64) -> DirectionFaults {
        DirectionFaults { latency_ms, jitter_ms, ..Default::default() }
    }

    #[test]
    fn a_link_set_both_ways_gives_its_fault_once_in_each_direction() {
        let both = LinkFaults::wan(30, 5);
        let (f, _) = direction_faults(&both, &both);
        assert_eq!((f.latency_ms, f.jitter_ms), (30, 5));
        let one = LinkFaults { forward: d(40, 0), ..Default::default() };
        assert_eq!(direction_faults(&one, &LinkFaults::default()).0.latency_ms, 40);
        assert_eq!(direction_faults(&LinkFaults::default(), &one).0.latency_ms, 0, "b-a forward is not a→b");
        let (cut, _) = direction_faults(&LinkFaults::default(), &LinkFaults::partition());
        assert!(cut.blackhole, "b-a's backward cut is the a→b direction");
        let slow = |r| LinkFaults {
            forward: DirectionFaults { bandwidth_bytes_per_sec: Some(r), ..Default::default() },
            backward: DirectionFaults { bandwidth_bytes_per_sec: Some(r), ..Default::default() },
            connection_loss_percent: 7,
        };
        let (f, c) = direction_faults(&slow(1000), &slow(500));
        assert_eq!((f.bandwidth_bytes_per_sec, c), (Some(500), 7));
    }

    #[test]
    fn frames_leave_after_the_latency_in_order_and_at_the_rate() {
        let t0 = Instant::now();
        let mut s = Shaper::default();
        let mut jitter = [10u64, 0].into_iter().cycle();
        let f = d(30, 10);
        let a = s.admit(t0, 100, &f, 0, false, |_| jitter.next().unwrap());
        let b = s.admit(t0 + Duration::from_millis(1), 100, &f, 0, false, |_| jitter.next().unwrap());
        assert_eq!(a, Verdict::At(t0 + Duration::from_millis(40)));
        // 31 ms after t0 would overtake the first frame: it waits for it.
        assert_eq!(b, Verdict::At(t0 + Duration::from_millis(40)));
        let mut s = Shaper::default();
        let rate = DirectionFaults { bandwidth_bytes_per_sec: Some(1_000), ..Default::default() };
        assert_eq!(s.admit(t0, 500, &rate, 0, false, |_| 0), Verdict::At(t0));
        assert_eq!(s.admit(t0, 500, &rate, 0, false, |_| 0), Verdict::At(t0 + Duration::from_millis(500)));
        assert_eq!(s.admit(t0, 1, &rate, 0, false, |_| 0), Verdict::At(t0 + Duration::from_millis(1000)));
    }

    #[test]
    fn partitions_and_loss_drop_frames() {
        let t0 = Instant::now();
        let mut s = Shaper::default();
        let cut = DirectionFaults { blackhole: true, ..Default::default() };
        assert_eq!(s.admit(t0, 60, &cut, 0, false, |_| 99), Verdict::Lost);
        let lossy = DirectionFaults { loss_percent: 10, ..Default::default() };
        assert_eq!(s.admit(t0, 60, &lossy, 0, false, |_| 9), Verdict::Lost);
        assert_eq!(s.admit(t0, 60, &lossy, 0, false, |_| 10), Verdict::At(t0));
        let none = DirectionFaults::default();
        assert_eq!(s.admit(t0, 60, &none, 50, true, |_| 49), Verdict::Lost, "a SYN is lost");
        assert_eq!(s.admit(t0, 60, &none, 50, false, |_| 0), Verdict::At(t0), "other packets are not");
        let all = DirectionFaults { loss_percent: 100, ..Default::default() };
        assert_eq!(s.admit(t0, 60, &all, 0, false, |_| 99), Verdict::Lost);
    }

    #[test]
    fn the_switch_learns_up_to_its_limit_then_forgets_and_floods() {
        let mut t = MacTable::default();
        let mac = |i: usize| [2, 0, 0, 0, (i >> 8) as u8, i as u8];
        assert_eq!(t.out_ports(mac(1), 0, 3), [1, 2], "unknown: flood");
        t.learn(mac(1), 2);
        assert_eq!(t.out_ports(mac(1), 0, 3), [2]);
        assert!(t.out_ports(mac(1), 2, 3).is_empty(), "never back out of the port it came in");
        assert_eq!(t.out_ports([0xff; 6], 0, 3), [1, 2], "broadcast floods");
        t.learn([0xff; 6], 1);
        assert_eq!(t.len(), 1, "a group address is never learned");
        for i in 2..=MAC_TABLE_MAX {
            t.learn(mac(i), 1);
        }
        assert_eq!(t.len(), MAC_TABLE_MAX);
        t.learn(mac(1), 0);
        assert_eq!(t.len(), MAC_TABLE_MAX, "a known address moves without forgetting");
        t.learn(mac(MAC_TABLE_MAX + 1), 1);
        assert_eq!(t.len(), 1, "one more address than the limit: the table starts again");
        assert_eq!(t.out_ports(mac(1), 1, 3), [0, 2]);
    }

    #[test]
    fn a_link_queue_holds_its_limit_and_drops_the_next_frame() {
        let t0 = Instant::now();
        let mut q = LinkQueue::default();
        for i in 0..LINK_QUEUE_FRAMES_MAX {
            assert!(q.push(t0 + Duration::from_millis(i as u64 % 7), vec![1]));
        }
        assert!(!q.push(t0, vec![2]), "the queue is full");
        assert_eq!(q.len(), LINK_QUEUE_FRAMES_MAX);
        assert_eq!(q.pop_due(t0), Some(vec![1]));
        assert!(q.push(t0, vec![3]), "room again");
        assert_eq!(q.pop_due(t0), None, "the next frame is not due yet");
        q.clear();
        assert!(q.is_empty() && q.next_due().is_none());
    }

    #[test]
    fn only_an_ipv4_tcp_syn_without_ack_opens_a_connection() {
        let mut frame = vec![0u8; 14 + 20 + 20];
        frame[12] = 0x08;
        frame[14] = 0x45;
        frame[14 + 9] = 6;
        frame[14 + 20 + 13] = 0x02;
        assert!(is_tcp_syn(&frame));
        frame[14 + 20 + 13] = 0x12;
        assert!(!is_tcp_syn(&frame), "SYN-ACK");
        frame[14 + 20 + 13] = 0x02;
        frame[14 + 9] = 17;
        assert!(!is_tcp_syn(&frame), "UDP");
        assert!(!is_tcp_syn(&frame[..20]), "short");
        frame[14] = 0x41;
        frame[14 + 9] = 6;
        assert!(!is_tcp_syn(&frame), "a header shorter than 20 bytes");
    }

    #[test]
    fn the_wire_refuses_faults_no_link_can_apply_and_unknown_links() {
        let links = WireLinks::new(vec!["bj".into(), "sh".into()]);
        assert!(links.set("bj-hz", LinkFaults::default()).is_none());
        let bad =
            LinkFaults { forward: DirectionFaults { loss_percent: 101, ..Default::default() }, ..Default::default() };
        assert!(matches!(links.set("bj-sh", bad), Some(Err(FaultProxyError::BadPercent { .. }))));
        assert_eq!(links.get("bj-sh"), Some(LinkFaults::default()), "a refusal changes nothing");
        let lossy =
            LinkFaults { forward: DirectionFaults { loss_percent: 5, ..Default::default() }, ..Default::default() };
        assert!(matches!(links.set("bj-sh", lossy), Some(Ok(_))));
        assert_eq!(links.between("bj", "sh").0.loss_percent, 5);
        assert_eq!(links.between("sh", "bj").0.loss_percent, 0);
    }
}
