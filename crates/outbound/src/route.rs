//! Where mail for a domain goes: its own `[[outbound.routes]]` entry, else the
//! smarthost (`outbound.relay_host`), else the domain's MX hosts in preference
//! order through a real resolver (hickory), falling back to the domain's own
//! addresses when it publishes no MX (RFC 5321 §5.1). A null MX (RFC 7505) and a
//! domain that does not exist are permanent: the mail bounces at once.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use maildr_config::OutboundSection;

/// Addresses tried for one domain at most (MX hosts times their addresses).
pub const DESTINATIONS_MAX: usize = 10;
/// The SMTP port of MX hosts.
const SMTP_PORT: u16 = 25;

/// One address to hand mail to, and the name it was found under (for TLS SNI
/// and for the notification's Remote-MTA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub addr: SocketAddr,
}

/// Why no destination was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// The domain cannot receive mail (it does not exist, or says so).
    #[error("{0}")]
    Permanent(String),
    /// The lookup failed for now.
    #[error("{0}")]
    Temporary(String),
}

/// Finds destinations; holds the resolver and the configured routes.
pub struct Router {
    resolver: TokioResolver,
    section: OutboundSection,
}

impl Router {
    /// A router with `resolvers`, or the system's when there are none.
    pub fn new(section: &OutboundSection, resolvers: &[std::net::SocketAddr]) -> Result<Router, String> {
        let builder = if resolvers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| format!("the system resolver configuration: {e}"))?
        } else {
            let servers = resolvers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    NameServerConfig::new(s.ip(), true, vec![udp, tcp])
                })
                .collect();
            let config = ResolverConfig::from_parts(None, Vec::new(), servers);
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        let resolver = builder.build().map_err(|e| format!("building the resolver: {e}"))?;
        Ok(Router { resolver, section: section.clone() })
    }

    /// Where mail for `domain` goes, in the order to try.
    pub async fn destinations(&self, domain: &str) -> Result<Vec<Destination>, RouteError> {
        if let Some(host_port) = self.section.route_for(domain) {
            let (host, port) = host_port.rsplit_once(':').expect("checked as HOST:PORT when the config was read");
            let port: u16 = port.parse().expect("checked as HOST:PORT when the config was read");
            return self.addresses(host, port).await;
        }
        let fqdn = format!("{}.", domain.trim_end_matches('.'));
        match self.resolver.mx_lookup(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut hosts: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect();
                hosts.sort();
                if hosts.len() == 1 && (hosts[0].1 == "." || hosts[0].1.is_empty()) {
                    return Err(RouteError::Permanent(format!("{domain} accepts no mail (null MX, RFC 7505)")));
                }
                let mut out = Vec::new();
                let mut last = None;
                for (_, host) in hosts {
                    match self.addresses(&host, SMTP_PORT).await {
                        Ok(found) => out.extend(found),
                        Err(e) => last = Some(e),
                    }
                    if out.len() >= DESTINATIONS_MAX {
                        break;
                    }
                }
                out.truncate(DESTINATIONS_MAX);
                if out.is_empty() {
                    let why = last.map(|e| e.to_string()).unwrap_or_default();
                    return Err(RouteError::Temporary(format!("no MX host of {domain} has an address: {why}")));
                }
                Ok(out)
            }
            Err(e) if e.is_nx_domain() => Err(RouteError::Permanent(format!("domain {domain} does not exist"))),
            // No MX: the domain itself is the mail host.
            Err(e) if e.is_no_records_found() => self.addresses(domain, SMTP_PORT).await,
            Err(e) => Err(RouteError::Temporary(format!("MX lookup for {domain}: {e}"))),
        }
    }

    /// The addresses of `host` (an address literal or a name) at `port`.
    async fn addresses(&self, host: &str, port: u16) -> Result<Vec<Destination>, RouteError> {
        let name = host.trim_end_matches('.').to_string();
        if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return Ok(vec![Destination { host: name, addr: SocketAddr::new(ip, port) }]);
        }
        match self.resolver.lookup_ip(format!("{name}.").as_str()).await {
            Ok(ips) => {
                let out: Vec<Destination> = ips
                    .iter()
                    .take(DESTINATIONS_MAX)
                    .map(|ip| Destination { host: name.clone(), addr: SocketAddr::new(ip, port) })
                    .collect();
                if out.is_empty() {
                    Err(RouteError::Temporary(format!("{name} has no address")))
                } else {
                    Ok(out)
                }
            }
            Err(e) if e.is_nx_domain() => Err(RouteError::Permanent(format!("host {name} does not exist"))),
            Err(e) => Err(RouteError::Temporary(format!("address lookup for {name}: {e}"))),
        }
    }
}
