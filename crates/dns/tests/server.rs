//! The authoritative server over real sockets on 127.0.0.1, with hand-built queries.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::zone;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use maildr_dns::server::{DnsServer, ServerLimits, TCP_CONNECTIONS_MAX};
use maildr_dns::zone::{RecordView, SiteAddress, Zone, ZoneInput, ZoneSet};
use maildr_types::Domain;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const REPLY_TIMEOUT_MS: u64 = 2_000;

/// A running server; `stop` ends it and waits for `serve` to return.
struct Running {
    addr: SocketAddr,
    zones: watch::Sender<Arc<ZoneSet>>,
    served: watch::Receiver<maildr_dns::ServedState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn start_with(set: ZoneSet, limits: ServerLimits) -> Running {
    let server = DnsServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap().with_limits(limits);
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let served = server.served();
    let (zones, zones_rx) = watch::channel(Arc::new(set));
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(server.serve(zones_rx, stop_rx));
    Running { addr, zones, served, stop, task }
}

async fn start(set: ZoneSet) -> Running {
    start_with(set, ServerLimits::default()).await
}

impl Running {
    async fn stop(self) {
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.task).await.expect("serve returns after stop").unwrap();
    }
}

fn query(name: &str, rtype: RecordType) -> Message {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    msg
}

async fn udp_raw(addr: SocketAddr, bytes: &[u8]) -> Option<Vec<u8>> {
    udp_raw_within(addr, bytes, REPLY_TIMEOUT_MS).await
}

async fn udp_raw_within(addr: SocketAddr, bytes: &[u8], timeout_ms: u64) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(bytes, addr).await.unwrap();
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_millis(timeout_ms), socket.recv_from(&mut buf)).await {
        Ok(Ok((len, _))) => Some(buf[..len].to_vec()),
        _ => None,
    }
}

async fn udp(addr: SocketAddr, msg: &Message) -> (Message, usize) {
    let bytes = udp_raw(addr, &msg.to_vec().unwrap()).await.expect("a UDP reply");
    let reply = Message::from_vec(&bytes).unwrap();
    assert_eq!(reply.metadata.id, msg.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    (reply, bytes.len())
}

async fn tcp_exchange(stream: &mut TcpStream, msg: &Message) -> Message {
    let bytes = msg.to_vec().unwrap();
    // One write: a separate 2-byte write would meet Nagle and delayed ACKs (40 ms).
    let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.unwrap();
    let read = async {
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await.unwrap();
        let mut reply = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut reply).await.unwrap();
        reply
    };
    let reply = tokio::time::timeout(Duration::from_millis(REPLY_TIMEOUT_MS), read).await.expect("a TCP reply");
    Message::from_vec(&reply).unwrap()
}

fn data(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records.iter().map(|r| RecordView::of(r).data).collect()
}

#[tokio::test]
async fn answers_a_mx_ns_soa_and_txt_authoritatively_without_recursion() {
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj", "sh"])])).await;
    let (reply, _) = udp(server.addr, &query("mail.example.test.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(!reply.metadata.recursion_available);
    assert!(reply.metadata.recursion_desired, "RD is copied from the query");
    assert_eq!(data(&reply.answers), vec!["127.0.10.1"]);
    assert_eq!(reply.queries[0].name().to_ascii(), "mail.example.test.");

    let (reply, _) = udp(server.addr, &query("Example.TEST.", RecordType::MX)).await;
    assert_eq!(data(&reply.answers), vec!["10 bj.example.test.", "20 sh.example.test."]);
    assert_eq!(data(&reply.additionals), vec!["127.0.10.1", "127.0.20.1"], "MX targets' addresses as additional data");
    let (reply, _) = udp(server.addr, &query("example.test.", RecordType::NS)).await;
    assert_eq!(data(&reply.answers), vec!["bj.example.test.", "sh.example.test."]);
    let (reply, _) = udp(server.addr, &query("example.test.", RecordType::SOA)).await;
    match &reply.answers[0].data {
        RData::SOA(soa) => assert_eq!(soa.serial, 7),
        other => panic!("SOA answer is {other:?}"),
    }
    let (reply, _) = udp(server.addr, &query("example.test.", RecordType::TXT)).await;
    assert_eq!(data(&reply.answers), vec!["\"v=spf1 mx -all\""]);
    let (reply, _) = udp(server.addr, &query("sh.example.test.", RecordType::ANY)).await;
    assert_eq!(data(&reply.answers), vec!["127.0.20.1"], "ANY is answered with one record set");
    server.stop().await;
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa_and_foreign_names_are_refused() {
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj"])])).await;
    let (reply, _) = udp(server.addr, &query("nobody.example.test.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.metadata.authoritative);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authorities.len(), 1);
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);

    let (reply, _) = udp(server.addr, &query("mail.example.test.", RecordType::AAAA)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);

    for outside in ["example.org.", "test.", "."] {
        let (reply, _) = udp(server.addr, &query(outside, RecordType::A)).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::Refused, "{outside}");
        assert!(!reply.metadata.authoritative, "{outside}");
        assert!(reply.answers.is_empty() && reply.authorities.is_empty(), "{outside}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_zone_swap_replaces_mx_and_mail_and_reports_the_new_serial() {
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj", "sh"])])).await;
    let domain = Domain::parse("example.test").unwrap();
    let mut served = server.served.clone();
    tokio::time::timeout(
        Duration::from_secs(2),
        served.wait_for(|s| s.zones.get(&domain).map(|z| z.serial) == Some(7)),
    )
    .await
    .expect("the first zone set is reported as served")
    .unwrap();

    let before = SystemTime::now();
    server.zones.send_replace(Arc::new(ZoneSet::from_zones([zone(8, Some("sh"), &["sh"])])));
    tokio::time::timeout(
        Duration::from_secs(2),
        served.wait_for(|s| s.zones.get(&domain).map(|z| z.serial) == Some(8)),
    )
    .await
    .expect("serial 8 reported as served")
    .unwrap();
    let since = served.borrow().zones[&domain].since;
    assert!(since >= before, "served since {since:?}, swap at {before:?}");

    let (reply, _) = udp(server.addr, &query("example.test.", RecordType::MX)).await;
    assert_eq!(data(&reply.answers), vec!["10 sh.example.test."], "bj is gone, not kept beside sh");
    let (reply, _) = udp(server.addr, &query("mail.example.test.", RecordType::A)).await;
    assert_eq!(data(&reply.answers), vec!["127.0.20.1"]);
    let (reply, _) = udp(server.addr, &query("example.test.", RecordType::SOA)).await;
    assert!(matches!(&reply.answers[0].data, RData::SOA(soa) if soa.serial == 8));

    // No primary: mail. disappears altogether; an empty set refuses everything.
    server.zones.send_replace(Arc::new(ZoneSet::from_zones([zone(9, None, &["sh"])])));
    tokio::time::timeout(
        Duration::from_secs(2),
        served.wait_for(|s| s.zones.get(&domain).map(|z| z.serial) == Some(9)),
    )
    .await
    .unwrap()
    .unwrap();
    let (reply, _) = udp(server.addr, &query("mail.example.test.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    server.zones.send_replace(Arc::new(ZoneSet::new()));
    tokio::time::timeout(Duration::from_secs(2), served.wait_for(|s| s.zones.is_empty())).await.unwrap().unwrap();
    let (reply, _) = udp(server.addr, &query("example.test.", RecordType::SOA)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    server.stop().await;
}

#[tokio::test]
async fn tcp_answers_several_queries_on_one_connection() {
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj", "sh"])])).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let reply = tcp_exchange(&mut stream, &query("mail.example.test.", RecordType::A)).await;
    assert_eq!(data(&reply.answers), vec!["127.0.10.1"]);
    assert!(reply.metadata.authoritative);
    let reply = tcp_exchange(&mut stream, &query("example.test.", RecordType::MX)).await;
    assert_eq!(reply.answers.len(), 2);
    let reply = tcp_exchange(&mut stream, &query("gone.example.test.", RecordType::MX)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    drop(stream);
    server.stop().await;
}

fn many_sites_zone(count: usize) -> Zone {
    Zone::build(&ZoneInput {
        domain: Domain::parse("example.test").unwrap(),
        serial: 1,
        ttl_secs: 5,
        sites: (0..count)
            .map(|i| SiteAddress { site: format!("site{i}"), ip: format!("127.0.{}.1", i + 1).parse().unwrap() })
            .collect(),
        primary: None,
        mx: vec![],
        dkim: None,
    })
    .unwrap()
}

#[tokio::test]
async fn udp_replies_are_truncated_above_512_bytes_or_the_offered_edns_size() {
    let server = start(ZoneSet::from_zones([many_sites_zone(40)])).await;
    let plain = query("example.test.", RecordType::NS);
    let (reply, len) = udp(server.addr, &plain).await;
    assert!(reply.metadata.truncation, "40 NS records do not fit in 512 bytes");
    assert!(reply.answers.is_empty());
    assert!(len <= 512);

    let mut edns = plain.clone();
    edns.metadata.id = edns.metadata.id.wrapping_add(1);
    let mut opt = Edns::new();
    opt.set_max_payload(4096);
    edns.set_edns(opt);
    let (reply, len) = udp(server.addr, &edns).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 40);
    assert!(reply.additionals.is_empty(), "glue is dropped before the answer is cut");
    assert!(len > 512 && len <= maildr_dns::server::UDP_RESPONSE_SIZE_MAX_BYTES, "{len}");
    assert!(reply.edns.is_some(), "EDNS is answered with EDNS");

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let reply = tcp_exchange(&mut stream, &plain).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 40);
    assert_eq!(reply.additionals.len(), 40, "TCP carries the glue too");
    drop(stream);
    server.stop().await;
}

#[tokio::test]
async fn bad_opcodes_question_counts_and_edns_versions_get_their_error_codes() {
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj"])])).await;
    let mut notify = query("example.test.", RecordType::SOA);
    notify.metadata.op_code = OpCode::Notify;
    assert_eq!(udp(server.addr, &notify).await.0.metadata.response_code, ResponseCode::NotImp);
    let mut update = query("example.test.", RecordType::SOA);
    update.metadata.op_code = OpCode::Update;
    assert_eq!(udp(server.addr, &update).await.0.metadata.response_code, ResponseCode::NotImp);

    let mut two = query("example.test.", RecordType::SOA);
    two.add_query(Query::query(Name::from_ascii("mail.example.test.").unwrap(), RecordType::A));
    assert_eq!(udp(server.addr, &two).await.0.metadata.response_code, ResponseCode::FormErr);
    let none = Message::query();
    assert_eq!(udp(server.addr, &none).await.0.metadata.response_code, ResponseCode::FormErr);

    let mut v1 = query("example.test.", RecordType::SOA);
    let mut opt = Edns::new();
    opt.set_version(1);
    v1.set_edns(opt);
    // BADVERS shares code 16 with BADSIG, and hickory decodes 16 as BADSIG.
    assert_eq!(u16::from(udp(server.addr, &v1).await.0.metadata.response_code), 16, "BADVERS");

    let mut chaos = query("version.bind.", RecordType::TXT);
    chaos.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(udp(server.addr, &chaos).await.0.metadata.response_code, ResponseCode::Refused);
    let axfr = query("example.test.", RecordType::AXFR);
    assert_eq!(udp(server.addr, &axfr).await.0.metadata.response_code, ResponseCode::Refused);
    server.stop().await;
}

#[tokio::test]
async fn garbage_gets_formerr_or_nothing_and_the_server_keeps_answering() {
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj"])])).await;
    // Too short for a header: dropped.
    assert_eq!(udp_raw_within(server.addr, &[0xde, 0xad, 0xbe], 300).await, None);
    // A header promising a question that is not there: FORMERR with the same id.
    let header_only = [0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    let reply = Message::from_vec(&udp_raw(server.addr, &header_only).await.expect("FORMERR")).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // A response is never answered (no reflection loops).
    let mut as_response = query("example.test.", RecordType::SOA);
    as_response.metadata.message_type = MessageType::Response;
    assert_eq!(udp_raw_within(server.addr, &as_response.to_vec().unwrap(), 300).await, None);
    // Deterministic pseudo-random junk of many lengths, over UDP.
    let mut seed: u32 = 0x9e37_79b9;
    for len in (12..600).step_by(37) {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed & 0xff) as u8
            })
            .collect();
        if let Some(reply) = udp_raw_within(server.addr, &junk, 200).await {
            let reply = Message::from_vec(&reply).expect("whatever comes back is a DNS message");
            assert_eq!(reply.metadata.message_type, MessageType::Response);
        }
    }
    // Over TCP: a frame of junk, then a frame longer than what is sent before close.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&[0, 5, 1, 2, 3, 4, 5]).await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_millis(REPLY_TIMEOUT_MS), stream.read_to_end(&mut sink)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(&[0xff, 0xff, 1, 2]).await.unwrap();
    drop(stream);

    let (reply, _) = udp(server.addr, &query("mail.example.test.", RecordType::A)).await;
    assert_eq!(data(&reply.answers), vec!["127.0.10.1"], "still answering after the garbage");
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(tcp_exchange(&mut stream, &query("mail.example.test.", RecordType::A)).await.answers.len(), 1);
    drop(stream);
    server.stop().await;
}

async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(within, stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let limits = ServerLimits { tcp_idle_timeout_ms: 300, ..ServerLimits::default() };
    let server = start_with(ZoneSet::from_zones([zone(7, Some("bj"), &["bj"])]), limits).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut idle, Duration::from_secs(3)).await, "idle connection closed");
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let reply = tcp_exchange(&mut busy, &query("mail.example.test.", RecordType::A)).await;
        assert_eq!(reply.answers.len(), 1, "a connection in use stays open");
    }
    server.stop().await;
}

#[tokio::test]
async fn tcp_connections_are_bounded() {
    // The default idle timeout (seconds) is far longer than this test needs.
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj"])])).await;
    let ask = query("mail.example.test.", RecordType::A);
    let mut open = Vec::new();
    for _ in 0..TCP_CONNECTIONS_MAX {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(tcp_exchange(&mut stream, &ask).await.answers.len(), 1);
        open.push(stream);
    }
    let mut extra = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_by_server(&mut extra, Duration::from_secs(2)).await, "connection over the limit closed");
    // Closing one frees its slot.
    drop(open.pop());
    let mut served = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Ok(mut stream) = TcpStream::connect(server.addr).await else { continue };
        let bytes = ask.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).await.is_err() {
            continue;
        }
        let mut len = [0u8; 2];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(500), stream.read_exact(&mut len)).await {
            served = true;
            break;
        }
    }
    assert!(served, "a new connection is served once one closed");
    drop(open);
    server.stop().await;
}

#[tokio::test]
async fn serve_returns_when_stopped_and_when_the_stop_sender_is_dropped() {
    let server = start(ZoneSet::new()).await;
    let addr = server.addr;
    server.stop().await;
    assert!(TcpStream::connect(addr).await.is_err(), "nothing listens after stop");

    let running = start(ZoneSet::new()).await;
    let Running { stop, task, .. } = running;
    drop(stop);
    tokio::time::timeout(Duration::from_secs(5), task).await.expect("serve returns").unwrap();
}

#[tokio::test]
async fn the_built_in_provider_publishes_to_the_running_server() {
    let server = start(ZoneSet::new()).await;
    let provider: Arc<dyn maildr_dns::DnsProvider> = Arc::new(maildr_dns::BuiltInProvider::new(server.zones.clone()));
    provider.publish(&zone(3, Some("bj"), &["bj", "sh"])).await.unwrap();
    provider.publish(&zone(4, Some("sh"), &["sh", "bj"])).await.unwrap();
    let refused = provider.publish(&zone(2, Some("bj"), &["bj"])).await;
    assert!(refused.is_err(), "an older serial is refused");
    let domain = Domain::parse("example.test").unwrap();
    let mut served = server.served.clone();
    tokio::time::timeout(
        Duration::from_secs(2),
        served.wait_for(|s| s.zones.get(&domain).map(|z| z.serial) == Some(4)),
    )
    .await
    .unwrap()
    .unwrap();
    let (reply, _) = udp(server.addr, &query("mail.example.test.", RecordType::A)).await;
    assert_eq!(data(&reply.answers), vec!["127.0.20.1"]);
    let (reply, _) = udp(server.addr, &query("example.test.", RecordType::MX)).await;
    assert_eq!(data(&reply.answers), vec!["10 sh.example.test.", "20 bj.example.test."]);
    server.stop().await;
}

#[tokio::test]
async fn a_tcp_connection_is_closed_after_its_query_limit() {
    use maildr_dns::server::TCP_QUERIES_PER_CONNECTION_MAX;
    let server = start(ZoneSet::from_zones([zone(7, Some("bj"), &["bj"])])).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let ask = query("mail.example.test.", RecordType::A);
    for _ in 0..TCP_QUERIES_PER_CONNECTION_MAX {
        assert_eq!(tcp_exchange(&mut stream, &ask).await.answers.len(), 1);
    }
    assert!(closed_by_server(&mut stream, Duration::from_secs(2)).await, "closed after the last allowed query");
    server.stop().await;
}
