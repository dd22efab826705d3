//! The stub resolver against scripted DNS peers: TCP after a truncated UDP answer,
//! a datagram above the size bound, silence and refusals.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use maildr_client::dns::{self, DnsError, UDP_MESSAGE_BYTES_MAX};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};

const T: Duration = Duration::from_secs(5);

/// The answer to `query`: `addresses` as A records, truncated if asked.
fn answer(query: &Message, addresses: &[Ipv4Addr], truncated: bool, code: ResponseCode) -> Vec<u8> {
    let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.truncation = truncated;
    reply.metadata.response_code = code;
    let name = query.queries[0].name().clone();
    for ip in addresses {
        reply.add_answer(Record::from_rdata(name.clone(), 5, RData::A(A(*ip))));
    }
    reply.to_vec().expect("encodable answer")
}

/// A UDP peer answering every question with `reply(question bytes)`.
async fn udp_peer(reply: fn(&Message) -> Vec<u8>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("address");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
            let _ = socket.send_to(&reply(&query), from).await;
        }
    });
    addr
}

#[tokio::test]
async fn a_truncated_udp_answer_is_asked_again_over_tcp() {
    let addr = udp_peer(|q| answer(q, &[], true, ResponseCode::NoError)).await;
    let tcp = TcpListener::bind(addr).await.expect("TCP on the same port");
    tokio::spawn(async move {
        let Ok((mut stream, _)) = tcp.accept().await else { return };
        let len = usize::from(stream.read_u16().await.unwrap_or(0));
        let mut buf = vec![0u8; len];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        let Ok(query) = Message::from_vec(&buf) else { return };
        let ips: Vec<Ipv4Addr> = (1..=40).map(|i| Ipv4Addr::new(127, 0, 10, i)).collect();
        let bytes = answer(&query, &ips, false, ResponseCode::NoError);
        let _ = stream.write_all(&(bytes.len() as u16).to_be_bytes()).await;
        let _ = stream.write_all(&bytes).await;
    });
    let ips = dns::addresses(&[addr], "mail.example.test.", T).await.unwrap();
    assert_eq!(ips.len(), 40);
}

#[tokio::test]
async fn a_datagram_above_the_bound_is_an_error_not_a_bigger_buffer() {
    let addr = udp_peer(|q| {
        let mut bytes = answer(q, &[Ipv4Addr::LOCALHOST], false, ResponseCode::NoError);
        bytes.resize(UDP_MESSAGE_BYTES_MAX + 500, 0);
        bytes
    })
    .await;
    let err = dns::lookup(addr, "mail.example.test.", RecordType::A, T).await.unwrap_err();
    assert!(matches!(err, DnsError::TooLarge { .. }), "{err}");
}

#[tokio::test]
async fn refusals_and_silence_are_errors_that_name_the_server() {
    let addr = udp_peer(|q| answer(q, &[], false, ResponseCode::ServFail)).await;
    let err = dns::query(addr, "example.test.", RecordType::MX, T).await.unwrap_err();
    assert!(matches!(err, DnsError::Rcode { .. }) && err.to_string().contains(&addr.to_string()), "{err}");
    let reply = dns::exchange(addr, "example.test.", RecordType::MX, T).await.unwrap();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail, "exchange hands back any answer");
    let silent = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("address");
    let err = dns::addresses(&[silent_addr], "mail.example.test.", Duration::from_millis(200)).await.unwrap_err();
    assert!(matches!(err, DnsError::Timeout { ms: 200, .. }), "{err}");
    assert!(matches!(dns::addresses(&[], "x.test.", T).await, Err(DnsError::NoServer(_))));
}
