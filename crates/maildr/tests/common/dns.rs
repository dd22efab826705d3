//! DNS questions for tests, through maildr-client's stub resolver: one question to
//! one server, answered records as text.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;

/// How long a test waits for one DNS answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// The answer records' data as text (`127.0.10.1`, `10 bj.example.test.`) whatever
/// the response code, or `None` when the server did not answer within a second.
pub fn resolve(server_ip: &str, port: u16, name: &str, rtype: RecordType) -> Option<Vec<String>> {
    let server = SocketAddr::new(server_ip.parse().ok()?, port);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    let reply = runtime.block_on(maildr_client::dns::exchange(server, name, rtype, ANSWER_TIMEOUT)).ok()?;
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
