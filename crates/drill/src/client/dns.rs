//! A stub resolver: questions over UDP to the target's authoritative servers, the
//! way a sending MTA finds the MX and a mail client finds `mail.<domain>`.
//! Messages are built and parsed by hickory-proto.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    #[error("{server}: no answer within {ms} ms")]
    Timeout { server: SocketAddr, ms: u64 },
    #[error("{server}: {detail}")]
    Transport { server: SocketAddr, detail: String },
    #[error("{server}: answered {code}")]
    Rcode { server: SocketAddr, code: String },
    #[error("{0:?} is not a DNS name")]
    Name(String),
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Addresses (A/AAAA).
    Addresses(Vec<IpAddr>),
    /// MX hosts sorted by preference, lowest first.
    Exchanges(Vec<String>),
}

/// Ask one server one question.
pub async fn query(server: SocketAddr, name: &str, rtype: RecordType, timeout: Duration) -> Result<Answer, DnsError> {
    let fqdn = Name::from_ascii(name).map_err(|_| DnsError::Name(name.to_string()))?;
    let ms = timeout.as_millis() as u64;
    let transport = |detail: String| DnsError::Transport { server, detail };
    let ask = async {
        let bind: SocketAddr =
            if server.is_ipv4() { "0.0.0.0:0".parse() } else { "[::]:0".parse() }.expect("a literal socket address");
        let socket = UdpSocket::bind(bind).await.map_err(|e| transport(e.to_string()))?;
        let mut message = Message::query();
        message.metadata.id = rand::random();
        message.metadata.recursion_desired = false;
        message.add_query(Query::query(fqdn.clone(), rtype));
        let id = message.metadata.id;
        let bytes = message.to_vec().map_err(|e| transport(e.to_string()))?;
        socket.send_to(&bytes, server).await.map_err(|e| transport(e.to_string()))?;
        let mut buf = vec![0u8; 4096];
        loop {
            let (len, from) = socket.recv_from(&mut buf).await.map_err(|e| transport(e.to_string()))?;
            if from != server {
                continue;
            }
            let reply = Message::from_vec(&buf[..len]).map_err(|e| transport(format!("unparsable reply: {e}")))?;
            if reply.metadata.id != id {
                continue;
            }
            return Ok(reply);
        }
    };
    let reply = tokio::time::timeout(timeout, ask).await.map_err(|_| DnsError::Timeout { server, ms })??;
    let code = reply.metadata.response_code;
    if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
        return Err(DnsError::Rcode { server, code: code.to_string() });
    }
    Ok(match rtype {
        RecordType::MX => {
            let mut mx: Vec<(u16, String)> = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                    _ => None,
                })
                .collect();
            mx.sort();
            Answer::Exchanges(mx.into_iter().map(|(_, h)| h).collect())
        }
        _ => Answer::Addresses(
            reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                })
                .collect(),
        ),
    })
}

/// Ask each server in turn until one answers, like a stub resolver with several
/// nameservers; the error of the last server when none does.
pub async fn resolve(
    servers: &[SocketAddr],
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Answer, DnsError> {
    let mut last = DnsError::Name(format!("{name} (no DNS server to ask)"));
    for server in servers {
        match query(*server, name, rtype, timeout).await {
            Ok(a) => return Ok(a),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The addresses of `name`, from the first server that answers.
pub async fn addresses(servers: &[SocketAddr], name: &str, timeout: Duration) -> Result<Vec<IpAddr>, DnsError> {
    match resolve(servers, name, RecordType::A, timeout).await? {
        Answer::Addresses(a) => Ok(a),
        Answer::Exchanges(_) => unreachable!("an A question gets addresses"),
    }
}

/// The MX hosts of `domain` in preference order.
pub async fn exchanges(servers: &[SocketAddr], domain: &str, timeout: Duration) -> Result<Vec<String>, DnsError> {
    match resolve(servers, domain, RecordType::MX, timeout).await? {
        Answer::Exchanges(h) => Ok(h),
        Answer::Addresses(_) => unreachable!("an MX question gets exchanges"),
    }
}
