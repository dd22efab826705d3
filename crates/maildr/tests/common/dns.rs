//! A stub resolver for tests: one UDP query to one server, answered records as
//! text. Messages are built and parsed by hickory-proto, not by us.

use std::net::UdpSocket;
use std::time::Duration;

use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};

/// The answer records' data as text (`127.0.10.1`, `10 bj.example.test.`), or
/// `None` when the server did not answer within a second.
pub fn resolve(server_ip: &str, port: u16, name: &str, rtype: RecordType) -> Option<Vec<String>> {
    let socket = UdpSocket::bind("127.0.0.1:0").ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name).ok()?, rtype));
    socket.send_to(&query.to_vec().ok()?, (server_ip, port)).ok()?;
    let mut buf = [0u8; 4096];
    let (len, _) = socket.recv_from(&mut buf).ok()?;
    let reply = Message::from_vec(&buf[..len]).ok()?;
    let mut out: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    out.sort();
    Some(out)
}

/// MX targets in preference order (`["bj.example.test.", "sh.example.test."]`).
pub fn mx_hosts(server_ip: &str, port: u16, domain: &str) -> Option<Vec<String>> {
    let mut pairs: Vec<(u16, String)> = resolve(server_ip, port, domain, RecordType::MX)?
        .iter()
        .filter_map(|r| {
            let (pref, host) = r.split_once(' ')?;
            Some((pref.parse().ok()?, host.to_string()))
        })
        .collect();
    pairs.sort();
    Some(pairs.into_iter().map(|(_, h)| h).collect())
}
