//! Providers: where a built [`Zone`] goes to be served.
//!
//! The control plane publishes every zone it builds through an `Arc<dyn
//! DnsProvider>`, without knowing whether the records are served by our own server
//! ([`BuiltInProvider`]) or by a DNS server someone else runs ([`Rfc2136Provider`],
//! dynamic update with TSIG). A failed publish is an error naming the server, zone
//! and response code, so the control plane can retry and the drill can report it.
//!
//! **Never:** touch the SOA or NS records of a zone hosted elsewhere (they belong to
//! its owner), add records beside the old ones instead of replacing them, go back to
//! an older serial, or call a publish good before the server said so.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm as HickoryTsigAlgorithm;
use hickory_proto::rr::{DNSClass, Name, Record, RecordType, TSigner};
use maildr_types::Domain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::zone::{serial_older, Zone, ZoneSet, MAIL_LABEL};

/// Longest wait for each step of an RFC 2136 exchange (connect, send, reply), in
/// milliseconds.
pub const RFC2136_STEP_TIMEOUT_MS: u64 = 5_000;
/// TSIG fudge: the clock difference a server tolerates, in seconds (RFC 8945 §10
/// recommends 300).
pub const TSIG_FUDGE_SECS: u16 = 300;

/// What a publish returns.
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), ProviderError>> + Send + 'a>>;

/// Somewhere a zone can be published. Object safe: use it as `Arc<dyn DnsProvider>`.
pub trait DnsProvider: Send + Sync {
    /// A short description for logs and errors (`built-in`, `rfc2136 127.0.0.1:53`).
    fn describe(&self) -> String;
    /// Makes `zone` the records served for its domain, replacing what was there.
    fn publish<'a>(&'a self, zone: &'a Zone) -> PublishFuture<'a>;
    /// Whether zones of `domain` go to this provider (a server updated for one zone
    /// takes that zone and the ones below it); every domain unless said otherwise.
    fn covers(&self, _domain: &Domain) -> bool {
        true
    }
}

/// Why a publish failed; each names what the operator needs to find the fault.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("zone {domain}: serial {offered} is older than the served serial {served}; not published")]
    StaleSerial { domain: Domain, offered: u32, served: u32 },
    #[error("zone {domain} is not inside zone {server_zone} that {server} is updated for")]
    OutsideZone { domain: Domain, server_zone: Domain, server: SocketAddr },
    #[error("TSIG key {key}: {why}")]
    BadKey { key: String, why: String },
    #[error("RFC 2136 update of {zone} at {server}: {step}: {source}")]
    Io { zone: Domain, server: SocketAddr, step: &'static str, source: io::Error },
    #[error("RFC 2136 update of {zone} at {server}: no {step} within {RFC2136_STEP_TIMEOUT_MS} ms")]
    Timeout { zone: Domain, server: SocketAddr, step: &'static str },
    #[error("RFC 2136 update of {zone} at {server}: could not build the update: {why}")]
    Build { zone: Domain, server: SocketAddr, why: String },
    #[error("RFC 2136 update of {zone} at {server}: bad reply: {why}")]
    BadReply { zone: Domain, server: SocketAddr, why: String },
    #[error("RFC 2136 update of {zone} at {server} refused: {rcode}{}", tsig_error.as_ref().map(|e| format!(" (TSIG error {e})")).unwrap_or_default())]
    Refused { zone: Domain, server: SocketAddr, rcode: String, tsig_error: Option<String> },
    #[error("RFC 2136 update of {zone} at {server}: the reply's TSIG signature does not verify: {why}")]
    ReplyNotAuthentic { zone: Domain, server: SocketAddr, why: String },
}

/// Publishes into our own server's zone set (the `watch` channel it serves from).
#[derive(Clone)]
pub struct BuiltInProvider {
    zones: watch::Sender<Arc<ZoneSet>>,
}

impl BuiltInProvider {
    /// Publishes into `zones`, the sender whose receiver [`crate::DnsServer::serve`] reads.
    pub fn new(zones: watch::Sender<Arc<ZoneSet>>) -> BuiltInProvider {
        BuiltInProvider { zones }
    }

    /// Replaces the zone of `zone`'s domain; refuses a serial older than the one held.
    pub fn publish_now(&self, zone: &Zone) -> Result<(), ProviderError> {
        let mut refused = None;
        self.zones.send_if_modified(|set| {
            if let Some(held) = set.get(zone.origin()) {
                if serial_older(zone.serial(), held.serial()) {
                    refused = Some(held.serial());
                    return false;
                }
                if held == zone {
                    return false;
                }
            }
            let mut next = ZoneSet::clone(set);
            next.insert(zone.clone());
            *set = Arc::new(next);
            true
        });
        match refused {
            Some(served) => {
                Err(ProviderError::StaleSerial { domain: zone.origin().clone(), offered: zone.serial(), served })
            }
            None => Ok(()),
        }
    }
}

impl DnsProvider for BuiltInProvider {
    fn describe(&self) -> String {
        "built-in".to_string()
    }
    fn publish<'a>(&'a self, zone: &'a Zone) -> PublishFuture<'a> {
        Box::pin(std::future::ready(self.publish_now(zone)))
    }
}

/// TSIG MAC algorithms we sign with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TsigAlgorithm {
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl TsigAlgorithm {
    fn hickory(self) -> HickoryTsigAlgorithm {
        match self {
            TsigAlgorithm::HmacSha256 => HickoryTsigAlgorithm::HmacSha256,
            TsigAlgorithm::HmacSha384 => HickoryTsigAlgorithm::HmacSha384,
            TsigAlgorithm::HmacSha512 => HickoryTsigAlgorithm::HmacSha512,
        }
    }
}

impl FromStr for TsigAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().trim_end_matches('.') {
            "hmac-sha256" => Ok(TsigAlgorithm::HmacSha256),
            "hmac-sha384" => Ok(TsigAlgorithm::HmacSha384),
            "hmac-sha512" => Ok(TsigAlgorithm::HmacSha512),
            other => Err(format!("TSIG algorithm {other:?} is not one of hmac-sha256, hmac-sha384, hmac-sha512")),
        }
    }
}

/// A TSIG key shared with the DNS server.
#[derive(Clone)]
pub struct TsigKey {
    /// Key name as the server knows it (`maildr-update`).
    pub name: String,
    /// MAC algorithm.
    pub algorithm: TsigAlgorithm,
    /// The shared secret (decoded, not base64).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey").field("name", &self.name).field("algorithm", &self.algorithm).finish_non_exhaustive()
    }
}

/// Publishes to a DNS server hosted elsewhere with RFC 2136 dynamic updates over TCP.
///
/// One UPDATE message carries the whole zone, and RFC 2136 §3.4 applies a message
/// all or nothing, so the server never serves half a failover. The records maildr
/// manages there are, for a zone of domain D with sites S:
/// - at D: MX and TXT (the SPF policy): the whole RRsets are replaced, so other TXT
///   records at the apex are removed too (put verification tokens elsewhere);
/// - `mail.D`: A and AAAA, always both deleted and the ones the zone holds added, so
///   `mail.` disappears when there is no primary and changes family cleanly;
/// - `s.D` for every site s in the zone: A and AAAA, the same way.
///
/// SOA and NS are never sent: they belong to the zone's owner. A site dropped from
/// the input is not known any more, so its address records stay until an operator
/// deletes them. No prerequisites are sent: the update is a replace, valid whatever
/// the server held before.
#[derive(Debug, Clone)]
pub struct Rfc2136Provider {
    server: SocketAddr,
    zone: Domain,
    key: Option<TsigKey>,
}

impl Rfc2136Provider {
    /// Updates zone `zone` at `server`, signing with `key`. Without a key the update
    /// goes unsigned, which only a server that trusts our address accepts.
    pub fn new(server: SocketAddr, zone: Domain, key: Option<TsigKey>) -> Result<Rfc2136Provider, ProviderError> {
        if let Some(key) = &key {
            signer(key)?;
        }
        Ok(Rfc2136Provider { server, zone, key })
    }

    /// The update message for `zone`, unsigned (for tests and for reading).
    pub fn update_message(&self, zone: &Zone) -> Result<Message, ProviderError> {
        let server_zone = name_of(&self.zone).map_err(|why| self.build_error(why))?;
        if !server_zone.zone_of(zone.origin_name()) {
            return Err(ProviderError::OutsideZone {
                domain: zone.origin().clone(),
                server_zone: self.zone.clone(),
                server: self.server,
            });
        }
        let mut message = Message::query();
        message.metadata.op_code = OpCode::Update;
        message.metadata.recursion_desired = false;
        let mut zone_section = Query::query(server_zone, RecordType::SOA);
        zone_section.set_query_class(DNSClass::IN);
        message.add_query(zone_section);

        let mut deletes = Vec::new();
        let mut adds = Vec::new();
        for (name, rtype) in managed_rrsets(zone).map_err(|why| self.build_error(why))? {
            let mut delete = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
            delete.dns_class = DNSClass::ANY;
            deletes.push(delete);
            if let Some(set) = zone.record_sets().get(&(name, rtype)) {
                adds.extend(set.iter().cloned());
            }
        }
        // The update section (RFC 2136 §2.5) travels where a query's authority
        // section is; deletes first, so the adds land in empty RRsets.
        message.authorities = deletes;
        message.authorities.extend(adds);
        Ok(message)
    }

    async fn exchange(&self, zone: &Zone) -> Result<(), ProviderError> {
        let mut message = self.update_message(zone)?;
        let mut verifier = None;
        if let Some(key) = &self.key {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            verifier = message.finalize(&signer(key)?, now).map_err(|e| self.build_error(e.to_string()))?;
        }
        let bytes = message.to_vec().map_err(|e| self.build_error(e.to_string()))?;
        let len = u16::try_from(bytes.len()).map_err(|_| self.build_error("update larger than 65535 bytes".into()))?;
        let step = Duration::from_millis(RFC2136_STEP_TIMEOUT_MS);
        let mut stream = self.step("connect", step, TcpStream::connect(self.server)).await?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        self.step("send", step, stream.write_all(&framed)).await?;
        let mut reply_len = [0u8; 2];
        self.step("reply", step, stream.read_exact(&mut reply_len)).await?;
        let mut reply = vec![0u8; usize::from(u16::from_be_bytes(reply_len))];
        self.step("reply", step, stream.read_exact(&mut reply)).await?;

        let parsed = Message::from_vec(&reply).map_err(|e| self.bad_reply(e.to_string()))?;
        if parsed.metadata.id != message.metadata.id
            || parsed.metadata.message_type != MessageType::Response
            || parsed.metadata.op_code != OpCode::Update
        {
            return Err(self.bad_reply(format!(
                "not the reply to our update (id {} / {:?} / {:?})",
                parsed.metadata.id, parsed.metadata.message_type, parsed.metadata.op_code
            )));
        }
        let rcode = parsed.metadata.response_code;
        if rcode != ResponseCode::NoError {
            let tsig_error = parsed.signature().and_then(|sig| sig.data.error).map(|e| format!("{e:?}").to_uppercase());
            return Err(ProviderError::Refused {
                zone: self.zone.clone(),
                server: self.server,
                rcode: rcode_name(rcode),
                tsig_error,
            });
        }
        if let Some(verifier) = verifier.as_mut() {
            verifier.verify(&reply).map_err(|e| ProviderError::ReplyNotAuthentic {
                zone: self.zone.clone(),
                server: self.server,
                why: e.to_string(),
            })?;
        }
        Ok(())
    }

    async fn step<T>(
        &self,
        step: &'static str,
        within: Duration,
        fut: impl Future<Output = io::Result<T>>,
    ) -> Result<T, ProviderError> {
        match tokio::time::timeout(within, fut).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(ProviderError::Io { zone: self.zone.clone(), server: self.server, step, source }),
            Err(_) => Err(ProviderError::Timeout { zone: self.zone.clone(), server: self.server, step }),
        }
    }

    fn build_error(&self, why: String) -> ProviderError {
        ProviderError::Build { zone: self.zone.clone(), server: self.server, why }
    }

    fn bad_reply(&self, why: String) -> ProviderError {
        ProviderError::BadReply { zone: self.zone.clone(), server: self.server, why }
    }
}

impl DnsProvider for Rfc2136Provider {
    fn describe(&self) -> String {
        format!("rfc2136 {} zone {}", self.server, self.zone)
    }
    fn publish<'a>(&'a self, zone: &'a Zone) -> PublishFuture<'a> {
        Box::pin(self.exchange(zone))
    }
    fn covers(&self, domain: &Domain) -> bool {
        matches!((name_of(&self.zone), name_of(domain)), (Ok(server_zone), Ok(name)) if server_zone.zone_of(&name))
    }
}

/// The (name, type) pairs maildr owns at an external server for `zone`, in a stable
/// order; see [`Rfc2136Provider`] for the rule.
pub fn managed_rrsets(zone: &Zone) -> Result<Vec<(Name, RecordType)>, String> {
    let apex = zone.origin_name().clone();
    let mut managed = vec![(apex.clone(), RecordType::MX), (apex.clone(), RecordType::TXT)];
    let mut hosts =
        vec![Name::from_ascii(MAIL_LABEL).and_then(|m| m.append_domain(&apex)).map_err(|e| e.to_string())?];
    for (name, rtype) in zone.record_sets().keys() {
        if matches!(rtype, RecordType::A | RecordType::AAAA) && !hosts.contains(name) {
            hosts.push(name.clone());
        }
    }
    for host in hosts {
        managed.push((host.clone(), RecordType::A));
        managed.push((host, RecordType::AAAA));
    }
    Ok(managed)
}

fn signer(key: &TsigKey) -> Result<TSigner, ProviderError> {
    let bad = |why: String| ProviderError::BadKey { key: key.name.clone(), why };
    if key.secret.is_empty() {
        return Err(bad("the secret is empty".into()));
    }
    let name = Name::from_ascii(&key.name).map_err(|e| bad(format!("not a DNS name: {e}")))?;
    TSigner::new(key.secret.clone(), key.algorithm.hickory(), name, TSIG_FUDGE_SECS).map_err(|e| bad(e.to_string()))
}

fn name_of(domain: &Domain) -> Result<Name, String> {
    let mut name = Name::from_utf8(format!("{domain}.")).map_err(|e| e.to_string())?.to_lowercase();
    name.set_fqdn(true);
    Ok(name)
}

/// The rcode's mnemonic as servers and dig print it (`NOTAUTH`, `REFUSED`).
fn rcode_name(rcode: ResponseCode) -> String {
    match rcode {
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::NXDomain => "NXDOMAIN".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        other => format!("{other} (rcode {})", u16::from(other)),
    }
}
