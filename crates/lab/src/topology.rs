//! The shape of a lab: which sites it has, on which loopback address and ports each
//! one listens, and which fault-proxy links join them.
//!
//! This is pure data derived from one `--net A.B` choice, so the supervisor, the
//! links process and (later) the drill engine compute the same addresses without
//! asking each other. Nothing here opens a socket or touches a file.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The mail domain every lab hosts.
pub const DOMAIN: &str = "example.test";

/// Ports every site listens on, each on its own IP.
pub mod ports {
    /// Inbound SMTP (MX).
    pub const SMTP: u16 = 2525;
    /// Submission with STARTTLS.
    pub const SUBMISSION: u16 = 2587;
    /// Submission with implicit TLS.
    pub const SUBMISSIONS: u16 = 2465;
    /// Plain IMAP.
    pub const IMAP: u16 = 2143;
    /// IMAP with implicit TLS.
    pub const IMAPS: u16 = 2993;
    /// The replication (Raft) listener.
    pub const REPLICATION: u16 = 2700;
    /// The link-control HTTP API, on the control address.
    pub const LINK_CONTROL: u16 = 2790;
    /// Authoritative DNS (UDP and TCP) of a data site.
    pub const DNS: u16 = 5353;
    /// The admin HTTP API of a data site or the standby.
    pub const HTTP: u16 = 2780;
    /// The lab's S3 gateway (`lab up --backup` with SeaweedFS installed), on the
    /// control address.
    pub const S3: u16 = 2794;
    /// The S3 server's own master, volume and filer (each also uses its port +
    /// 10000 for gRPC).
    pub const S3_MASTER: u16 = 2795;
    pub const S3_VOLUME: u16 = 2796;
    pub const S3_FILER: u16 = 2797;
}

/// Third octet of the address the links process serves its control API on.
const CONTROL_OCTET: u8 = 99;

/// The first two octets of every lab address (`A.B` of `A.B.x.1`). Labs with
/// different nets run side by side on one machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Net {
    b: u8,
}

impl Net {
    /// The address `127.B.<third>.1`.
    pub fn host(self, third: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, self.b, third, 1)
    }
}

impl fmt::Display for Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "127.{}", self.b)
    }
}

/// Why a `--net` value was refused.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{0:?} is not two octets A.B (for example 127.0)")]
    Syntax(String),
    #[error("{0:?}: the lab runs on loopback addresses, so the first octet must be 127")]
    NotLoopback(String),
    #[error("{0:?} is not a /24 network A.B.C.0/24 (for example 198.18.0.0/24)")]
    WanSyntax(String),
    #[error("{0:?}: a WAN cannot be a loopback, multicast or reserved network; use 198.18.0.0/15")]
    WanReserved(String),
}

impl FromStr for Net {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Net, NetError> {
        let octets: Vec<&str> = s.split('.').collect();
        let parsed: Vec<u8> = octets.iter().filter_map(|o| o.parse().ok()).collect();
        let (2, [a, b]) = (octets.len(), parsed.as_slice()) else {
            return Err(NetError::Syntax(s.to_string()));
        };
        if *a != 127 {
            return Err(NetError::NotLoopback(s.to_string()));
        }
        Ok(Net { b: *b })
    }
}

impl TryFrom<String> for Net {
    type Error = NetError;
    fn try_from(s: String) -> Result<Net, NetError> {
        s.parse()
    }
}

impl From<Net> for String {
    fn from(n: Net) -> String {
        n.to_string()
    }
}

/// The virtual WAN of a netns lab: a /24 network, by default in 198.18.0.0/15
/// (RFC 2544's range for network test labs). Sites get `.10`, `.20`, ... as on
/// loopback; the client namespace gets `.1`. The addresses exist only inside the
/// lab's namespaces, so every netns lab may use the same network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Wan {
    prefix: [u8; 3],
}

impl Default for Wan {
    fn default() -> Wan {
        Wan { prefix: [198, 18, 0] }
    }
}

impl Wan {
    /// The address `A.B.C.<last>`.
    pub fn host(self, last: u8) -> Ipv4Addr {
        let [a, b, c] = self.prefix;
        Ipv4Addr::new(a, b, c, last)
    }

    /// The client namespace's address.
    pub fn client(self) -> Ipv4Addr {
        self.host(1)
    }

    /// The prefix length of every address on the WAN.
    pub const PREFIX_LEN: u8 = 24;
}

impl fmt::Display for Wan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host(0), Wan::PREFIX_LEN)
    }
}

impl FromStr for Wan {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Wan, NetError> {
        let bad = || NetError::WanSyntax(s.to_string());
        let (addr, len) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let [a, b, c, d] = addr.octets();
        if len != "24" || d != 0 {
            return Err(bad());
        }
        if addr.is_loopback() || addr.is_multicast() || addr.is_unspecified() || a >= 240 {
            return Err(NetError::WanReserved(s.to_string()));
        }
        Ok(Wan { prefix: [a, b, c] })
    }
}

impl TryFrom<String> for Wan {
    type Error = NetError;
    fn try_from(s: String) -> Result<Wan, NetError> {
        s.parse()
    }
}

impl From<Wan> for String {
    fn from(w: Wan) -> String {
        w.to_string()
    }
}

/// What a site is in the lab's cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Serves mail and holds a full voting replica.
    Data,
    /// Votes and keeps the log; serves no mail.
    Witness,
    /// A far-away asynchronous replica (Raft learner); serves mail only once a
    /// forced failover promoted it.
    Standby,
    /// A Raft learner that applies the log a fixed delay late (`lab up --lagged`):
    /// the copy logical corruption has not reached yet. Serves no mail.
    Lagged,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Data => "data",
            Role::Witness => "witness",
            Role::Standby => "standby",
            Role::Lagged => "lagged",
        }
    }

    /// Whether a lab site of this role serves the admin HTTP API: data sites, and
    /// the standby, through which a forced failover is asked when the rest is lost.
    pub fn has_api(self) -> bool {
        matches!(self, Role::Data | Role::Standby)
    }
}

/// One site of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSpec {
    /// Site name, also its host name's first label (`bj.example.test`).
    pub name: String,
    /// Raft node id.
    pub node_id: u64,
    pub role: Role,
    /// The site's own loopback address.
    pub ip: Ipv4Addr,
    /// Third octet of `ip`; a tenth of it picks the site's link ports.
    octet: u8,
}

impl SiteSpec {
    /// Where the site's replication listener binds.
    pub fn replication_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, ports::REPLICATION))
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }
}

/// One direction of replication traffic through the fault proxy: `from` dials
/// `listen` (on its own IP) and reaches `to`'s replication listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSpec {
    /// `<from>-<to>`, e.g. `bj-sh`.
    pub name: String,
    pub from: String,
    pub to: String,
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
}

/// Every site and link of one lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub net: Net,
    pub sites: Vec<SiteSpec>,
    /// `Some`: a netns lab, every site in its own namespace on this WAN, with no
    /// proxy between them (faults act on packets).
    pub wan: Option<Wan>,
}

impl Topology {
    /// The standard lab: data sites bj (node 1, `A.B.10.1`) and sh (node 2,
    /// `A.B.20.1`), witness hz (node 3, `A.B.30.1`).
    pub fn three_sites(net: Net) -> Topology {
        let site = |name: &str, node_id, role, octet| SiteSpec {
            name: name.to_string(),
            node_id,
            role,
            ip: net.host(octet),
            octet,
        };
        Topology {
            net,
            sites: vec![site("bj", 1, Role::Data, 10), site("sh", 2, Role::Data, 20), site("hz", 3, Role::Witness, 30)],
            wan: None,
        }
    }

    /// The same lab with every site in its own network namespace on `wan`.
    pub fn on_wan(mut self, wan: Wan) -> Topology {
        for site in &mut self.sites {
            site.ip = wan.host(site.octet);
        }
        self.wan = Some(wan);
        self
    }

    /// The site's address for a new site of this lab.
    fn ip_for(&self, octet: u8) -> Ipv4Addr {
        match self.wan {
            Some(wan) => wan.host(octet),
            None => self.net.host(octet),
        }
    }

    /// The standard lab plus the standby lz (node 4, `A.B.40.1`), for forced
    /// failover drills.
    pub fn with_standby(net: Net) -> Topology {
        let mut topology = Topology::three_sites(net);
        let octet = 40;
        topology.sites.push(SiteSpec {
            name: "lz".into(),
            node_id: 4,
            role: Role::Standby,
            ip: net.host(octet),
            octet,
        });
        topology
    }

    /// This lab plus the lagged site lg (node 5, `A.B.50.1`).
    pub fn with_lagged(mut self) -> Topology {
        let octet = 50;
        self.sites.push(SiteSpec { name: "lg".into(), node_id: 5, role: Role::Lagged, ip: self.ip_for(octet), octet });
        self
    }

    /// The lab whose sites have these roles: with the standby when one is a standby,
    /// with the lagged site when one is lagged.
    pub fn for_roles(net: Net, roles: impl IntoIterator<Item = Role>) -> Topology {
        let roles: Vec<Role> = roles.into_iter().collect();
        let topology =
            if roles.contains(&Role::Standby) { Topology::with_standby(net) } else { Topology::three_sites(net) };
        if roles.contains(&Role::Lagged) {
            topology.with_lagged()
        } else {
            topology
        }
    }

    pub fn site(&self, name: &str) -> Option<&SiteSpec> {
        self.sites.iter().find(|s| s.name == name)
    }

    /// The link from `from` to `to`: it listens on `from`'s IP, port
    /// `2700 + 10 * (to's third octet / 10)`, and forwards to `to`'s replication port.
    pub fn link(&self, from: &SiteSpec, to: &SiteSpec) -> LinkSpec {
        assert_ne!(from.name, to.name, "a site has no link to itself");
        let port = ports::REPLICATION + 10 * u16::from(to.octet / 10);
        LinkSpec {
            name: format!("{}-{}", from.name, to.name),
            from: from.name.clone(),
            to: to.name.clone(),
            listen: SocketAddr::from((from.ip, port)),
            upstream: to.replication_addr(),
        }
    }

    /// Every ordered pair of distinct sites, in site order.
    pub fn links(&self) -> Vec<LinkSpec> {
        let mut out = Vec::new();
        for from in &self.sites {
            for to in self.sites.iter().filter(|s| s.name != from.name) {
                out.push(self.link(from, to));
            }
        }
        out
    }

    /// Where the links process serves the link-control API: on the client
    /// namespace's WAN address in a netns lab.
    pub fn control_addr(&self) -> SocketAddr {
        let ip = match self.wan {
            Some(wan) => wan.client(),
            None => self.net.host(CONTROL_OCTET),
        };
        SocketAddr::from((ip, ports::LINK_CONTROL))
    }

    /// Where site `to` is reached from site `from`: through the fault-proxy link on
    /// loopback, directly over the WAN in a netns lab.
    pub fn peer_addr(&self, from: &SiteSpec, to: &SiteSpec) -> SocketAddr {
        if from.name == to.name || self.wan.is_some() {
            to.replication_addr()
        } else {
            self.link(from, to).listen
        }
    }

    /// Every address the lab binds, for a conflict check at a glance.
    pub fn bound_addrs(&self) -> Vec<SocketAddr> {
        let mut out = vec![self.control_addr()];
        for s in &self.sites {
            for p in [ports::SMTP, ports::SUBMISSION, ports::SUBMISSIONS, ports::IMAP, ports::IMAPS, ports::REPLICATION]
            {
                out.push(s.addr(p));
            }
            if s.role == Role::Data {
                out.push(s.addr(ports::DNS));
            }
            if s.role.has_api() {
                out.push(s.addr(ports::HTTP));
            }
        }
        out.extend(self.links().into_iter().map(|l| l.listen));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_only_as_two_loopback_octets() {
        assert_eq!("127.61".parse::<Net>().unwrap().host(10), Ipv4Addr::new(127, 61, 10, 1));
        assert_eq!(Net::default().to_string(), "127.0");
        for bad in ["127", "127.0.0", "127.256", "x.1", "", "127.-1"] {
            assert!(matches!(bad.parse::<Net>(), Err(NetError::Syntax(_))), "{bad}");
        }
        assert!(matches!("10.0".parse::<Net>(), Err(NetError::NotLoopback(_))));
    }

    #[test]
    fn each_site_reaches_each_other_site_through_its_own_link() {
        let t = Topology::three_sites("127.5".parse().unwrap());
        let links = t.links();
        let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["bj-sh", "bj-hz", "sh-bj", "sh-hz", "hz-bj", "hz-sh"]);
        let bj_sh = &links[0];
        assert_eq!(bj_sh.listen, "127.5.10.1:2720".parse().unwrap());
        assert_eq!(bj_sh.upstream, "127.5.20.1:2700".parse().unwrap());
        let hz_bj = &links[4];
        assert_eq!(hz_bj.listen, "127.5.30.1:2710".parse().unwrap());
        assert_eq!(hz_bj.upstream, "127.5.10.1:2700".parse().unwrap());
        assert_eq!(t.control_addr(), "127.5.99.1:2790".parse().unwrap());
        assert_eq!(t.site("hz").unwrap().role, Role::Witness);
    }

    #[test]
    fn a_netns_lab_puts_every_site_on_the_wan_and_joins_them_without_proxies() {
        assert_eq!("198.18.7.0/24".parse::<Wan>().unwrap().host(10), Ipv4Addr::new(198, 18, 7, 10));
        assert_eq!(Wan::default().to_string(), "198.18.0.0/24");
        for bad in ["198.18.0.0", "198.18.0.1/24", "198.18.0.0/16", "x/24", ""] {
            assert!(matches!(bad.parse::<Wan>(), Err(NetError::WanSyntax(_))), "{bad}");
        }
        for reserved in ["127.0.0.0/24", "224.1.1.0/24", "0.0.0.0/24", "250.0.0.0/24"] {
            assert!(matches!(reserved.parse::<Wan>(), Err(NetError::WanReserved(_))), "{reserved}");
        }
        let t = Topology::with_standby(Net::default()).with_lagged().on_wan(Wan::default());
        let ips: Vec<String> = t.sites.iter().map(|s| s.ip.to_string()).collect();
        assert_eq!(ips, ["198.18.0.10", "198.18.0.20", "198.18.0.30", "198.18.0.40", "198.18.0.50"]);
        let (bj, sh) = (t.site("bj").unwrap(), t.site("sh").unwrap());
        assert_eq!(t.peer_addr(bj, sh), "198.18.0.20:2700".parse().unwrap());
        assert_eq!(t.control_addr(), "198.18.0.1:2790".parse().unwrap());
        let lo = Topology::three_sites(Net::default());
        assert_eq!(lo.peer_addr(&lo.sites[0], &lo.sites[1]), lo.link(&lo.sites[0], &lo.sites[1]).listen);
    }

    #[test]
    fn no_two_listeners_of_a_lab_share_an_address() {
        for topology in [
            Topology::three_sites(Net::default()),
            Topology::with_standby(Net::default()),
            Topology::with_standby(Net::default()).with_lagged(),
        ] {
            let addrs = topology.bound_addrs();
            let unique: std::collections::BTreeSet<_> = addrs.iter().collect();
            assert_eq!(unique.len(), addrs.len());
        }
    }

    #[test]
    fn the_standby_is_a_fourth_site_linked_like_the_others() {
        let t = Topology::with_standby("127.5".parse().unwrap());
        let lz = t.site("lz").unwrap();
        assert_eq!((lz.node_id, lz.role, lz.ip), (4, Role::Standby, Ipv4Addr::new(127, 5, 40, 1)));
        let links = t.links();
        assert_eq!(links.len(), 12);
        let bj_lz = links.iter().find(|l| l.name == "bj-lz").unwrap();
        assert_eq!(bj_lz.listen, "127.5.10.1:2740".parse().unwrap());
        assert_eq!(bj_lz.upstream, "127.5.40.1:2700".parse().unwrap());
        assert_eq!(Topology::for_roles(t.net, [Role::Data, Role::Standby]), t);
        let lagged = Topology::three_sites(t.net).with_lagged();
        let lg = lagged.site("lg").unwrap();
        assert_eq!((lg.node_id, lg.role, lg.ip), (5, Role::Lagged, Ipv4Addr::new(127, 5, 50, 1)));
        assert_eq!(Topology::for_roles(t.net, [Role::Data, Role::Witness, Role::Lagged]), lagged);
        assert_eq!(lagged.link(lg, lagged.site("bj").unwrap()).listen.port(), 2710);
        assert_eq!(Topology::for_roles(t.net, [Role::Data, Role::Witness]).sites.len(), 3);
    }
}
