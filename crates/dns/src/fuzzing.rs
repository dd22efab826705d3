//! Entry points for fuzzing the DNS server's query path: the bytes of a received
//! query, answered by [`respond`] (the function the server's UDP and TCP loops
//! call) from a small fixed zone set, over UDP and over TCP.
//! Used by `fuzz/` (cargo-fuzz) and by ordinary tests; never by the server.
//!
//! The zone set holds `example.test` (three sites, one of them IPv6, a primary and
//! two MX), the nested `eu.example.test`, and `many.test`, whose 40 name servers do
//! not fit a 512-byte answer, so the truncation path is reached too. What every
//! reply must be is checked here, as the module doc of `server` promises it.

use std::sync::OnceLock;

use hickory_proto::op::{Message, MessageType};
use maildr_types::Domain;

use crate::server::{
    respond, Transport, UDP_QUERY_SIZE_MAX_BYTES, UDP_RESPONSE_SIZE_MAX_BYTES, UDP_RESPONSE_SIZE_MIN_BYTES,
};
use crate::zone::{SiteAddress, Zone, ZoneInput, ZoneSet};

/// One received query, answered as a UDP datagram (cut to the receive buffer,
/// as the kernel cuts it) and as a TCP message. Panics when a reply breaks what
/// the server promises.
pub fn query(bytes: &[u8]) {
    let datagram = &bytes[..bytes.len().min(UDP_QUERY_SIZE_MAX_BYTES)];
    check(datagram, respond(zones(), datagram, Transport::Udp), Transport::Udp);
    check(bytes, respond(zones(), bytes, Transport::Tcp), Transport::Tcp);
}

/// The zone set every query is answered from.
pub fn zones() -> &'static ZoneSet {
    static ZONES: OnceLock<ZoneSet> = OnceLock::new();
    ZONES.get_or_init(|| {
        let site = |site: &str, ip: &str| SiteAddress {
            site: site.into(),
            ip: ip.parse().expect("sample site addresses are valid"),
        };
        let zone = |domain: &str, sites: Vec<SiteAddress>, primary: Option<&str>, mx: &[&str]| {
            Zone::build(&ZoneInput {
                domain: Domain::parse(domain).expect("sample domains are valid"),
                serial: 7,
                ttl_secs: 60,
                sites,
                primary: primary.map(String::from),
                mx: mx.iter().map(|s| s.to_string()).collect(),
                dkim: None,
            })
            .expect("the sample zones are consistent")
        };
        let many = (0..40).map(|i| site(&format!("site{i}"), &format!("127.0.{}.1", i + 1))).collect();
        ZoneSet::from_zones([
            zone(
                "example.test",
                vec![site("bj", "127.0.10.1"), site("sh", "127.0.20.1"), site("v6", "::1")],
                Some("sh"),
                &["sh", "bj"],
            ),
            zone("eu.example.test", vec![site("fra", "127.0.30.1")], Some("fra"), &["fra"]),
            zone("many.test", many, Some("site0"), &["site0", "site1", "site2"]),
        ])
    })
}

/// What the server promises of a reply to `query`: none only when there is no
/// header to answer or the message is itself a response; else a response to the
/// same id, naming only records of hosted zones, that fits the transport.
fn check(query: &[u8], reply: Option<Vec<u8>>, transport: Transport) {
    let unanswerable = query.len() < 12 || query[2] & 0x80 != 0;
    let Some(reply) = reply else {
        assert!(unanswerable, "a query with a header got no reply over {transport:?}");
        return;
    };
    assert!(!unanswerable, "a response or a headerless message got a reply over {transport:?}");
    let message = match Message::from_vec(&reply) {
        Ok(message) => message,
        Err(e) => panic!("a reply over {transport:?} does not decode: {e}"),
    };
    // Over UDP: the size the client offers, within the server's bounds; a query
    // that does not decode gets a bare FORMERR. A reply never repeats more than one
    // question, so every reply fits.
    let limit = match (transport, Message::from_vec(query)) {
        (Transport::Udp, Ok(request)) => {
            usize::from(request.max_payload()).clamp(UDP_RESPONSE_SIZE_MIN_BYTES, UDP_RESPONSE_SIZE_MAX_BYTES)
        }
        (Transport::Udp, Err(_)) => UDP_RESPONSE_SIZE_MIN_BYTES,
        (Transport::Tcp, _) => usize::from(u16::MAX),
    };
    assert!(message.queries.len() <= 1, "a reply repeats {} questions", message.queries.len());
    assert!(reply.len() <= limit, "a reply of {} bytes over {transport:?} (limit {limit})", reply.len());
    assert_eq!(message.metadata.message_type, MessageType::Response, "a reply that is not a response");
    assert_eq!(message.metadata.id, u16::from_be_bytes([query[0], query[1]]), "a reply to another id");
    assert!(!message.metadata.recursion_available, "recursion is never offered");
    for record in message.all_sections() {
        assert!(zones().zone_for(&record.name).is_some(), "a reply names {} outside every hosted zone", record.name);
    }
    if transport == Transport::Tcp {
        assert!(!message.metadata.truncation, "a TCP reply was truncated");
    }
}
