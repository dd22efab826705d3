//! A stub resolver: one question to one authoritative server over UDP, again over
//! TCP when the UDP answer comes back truncated — the way a sending MTA finds the MX
//! and a mail client finds `mail.<domain>`. Messages are built and parsed by
//! hickory-proto.
//!
//! Never: recurse, cache or follow CNAMEs; the callers ask the deployment's own
//! servers and want exactly what each one says.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use crate::ms;

/// Largest UDP answer accepted (no EDNS is offered, so servers stay under 512
/// bytes; a larger datagram is an error).
pub const UDP_MESSAGE_BYTES_MAX: usize = 4096;
/// Largest TCP answer read (the 2-byte length prefix cannot say more).
pub const TCP_MESSAGE_BYTES_MAX: usize = u16::MAX as usize;

/// The question got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS {server}: no answer within {ms} ms")]
    Timeout { server: SocketAddr, ms: u64 },
    #[error("DNS {server}: {transport}: {source}")]
    Io { server: SocketAddr, transport: &'static str, source: std::io::Error },
    #[error("DNS {server}: unparsable {transport} answer: {detail}")]
    Malformed { server: SocketAddr, transport: &'static str, detail: String },
    #[error("DNS {server}: a UDP answer larger than {UDP_MESSAGE_BYTES_MAX} bytes")]
    TooLarge { server: SocketAddr },
    #[error("DNS {server}: answered {code}")]
    Rcode { server: SocketAddr, code: ResponseCode },
    #[error("{0:?} is not a DNS name")]
    Name(String),
    #[error("no DNS server to ask for {0}")]
    NoServer(String),
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Addresses (A/AAAA).
    Addresses(Vec<IpAddr>),
    /// MX hosts sorted by preference, lowest first.
    Exchanges(Vec<String>),
}

/// Ask one server one question; the whole reply (NOERROR or NXDOMAIN), over UDP
/// and, if the UDP reply is truncated, over TCP. `timeout` bounds the whole lookup.
pub async fn lookup(server: SocketAddr, name: &str, rtype: RecordType, timeout: Duration) -> Result<Message, DnsError> {
    let reply = exchange(server, name, rtype, timeout).await?;
    let code = reply.metadata.response_code;
    if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
        return Err(DnsError::Rcode { server, code });
    }
    Ok(reply)
}

/// Like [`lookup`], but any reply is returned whatever its response code (REFUSED,
/// SERVFAIL…): for callers that judge the server's answer itself.
pub async fn exchange(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let fqdn = Name::from_ascii(name).map_err(|_| DnsError::Name(name.to_string()))?;
    let mut message = Message::query();
    message.metadata.id = rand::random();
    message.metadata.recursion_desired = false;
    message.add_query(Query::query(fqdn, rtype));
    let ask = async {
        let udp = over_udp(server, &message).await?;
        if udp.metadata.truncation {
            over_tcp(server, &message).await
        } else {
            Ok(udp)
        }
    };
    tokio::time::timeout(timeout, ask).await.map_err(|_| DnsError::Timeout { server, ms: ms(timeout) })?
}

async fn over_udp(server: SocketAddr, query: &Message) -> Result<Message, DnsError> {
    let io = |source| DnsError::Io { server, transport: "UDP", source };
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(bind).await.map_err(io)?;
    socket.send_to(&encode(server, query)?, server).await.map_err(io)?;
    // One byte more than the bound, to tell an answer at the bound from a cut one.
    let mut buf = vec![0u8; UDP_MESSAGE_BYTES_MAX + 1];
    loop {
        let (len, from) = socket.recv_from(&mut buf).await.map_err(io)?;
        if from != server {
            continue;
        }
        if len > UDP_MESSAGE_BYTES_MAX {
            return Err(DnsError::TooLarge { server });
        }
        let reply = Message::from_vec(&buf[..len]).map_err(|e| DnsError::Malformed {
            server,
            transport: "UDP",
            detail: e.to_string(),
        })?;
        if reply.metadata.id == query.metadata.id {
            return Ok(reply);
        }
    }
}

async fn over_tcp(server: SocketAddr, query: &Message) -> Result<Message, DnsError> {
    let io = |source| DnsError::Io { server, transport: "TCP", source };
    let mut stream = TcpStream::connect(server).await.map_err(io)?;
    let bytes = encode(server, query)?;
    let len = u16::try_from(bytes.len()).map_err(|_| {
        let detail = format!("a question of {} bytes", bytes.len());
        DnsError::Malformed { server, transport: "TCP", detail }
    })?;
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(&bytes);
    stream.write_all(&framed).await.map_err(io)?;
    // At most TCP_MESSAGE_BYTES_MAX by construction of the prefix.
    let len = usize::from(stream.read_u16().await.map_err(io)?);
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.map_err(io)?;
    let reply =
        Message::from_vec(&buf).map_err(|e| DnsError::Malformed { server, transport: "TCP", detail: e.to_string() })?;
    if reply.metadata.id != query.metadata.id {
        let detail = format!("answer id {} to question id {}", reply.metadata.id, query.metadata.id);
        return Err(DnsError::Malformed { server, transport: "TCP", detail });
    }
    Ok(reply)
}

fn encode(server: SocketAddr, query: &Message) -> Result<Vec<u8>, DnsError> {
    query.to_vec().map_err(|e| DnsError::Malformed { server, transport: "question", detail: e.to_string() })
}

/// Ask one server one question; the addresses or MX hosts it answered.
pub async fn query(server: SocketAddr, name: &str, rtype: RecordType, timeout: Duration) -> Result<Answer, DnsError> {
    let reply = lookup(server, name, rtype, timeout).await?;
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
    let mut last = DnsError::NoServer(name.to_string());
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
