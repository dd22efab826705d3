//! The transport under the replication channel: connections, and the Hello with the
//! cluster secret that opens each one, on both ends.
//!
//! Everything that touches a socket of the channel goes through here: a caller opens
//! a connection with [`open`] and exchanges frames with [`exchange`]; a site takes
//! connections from a [`PeerListener`] and lets [`accept_hello`] decide whether to
//! serve them. Nothing else names the socket type ([`PeerStream`]), so securing the
//! channel (mutual TLS) changes this module only.
//!
//! This module must never look at a request beyond the Hello, and never compare the
//! secret in a way whose time depends on where it differs.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::wire::{read_frame, write_frame, PeerRequest, PeerResponse};
use super::NodeId;

/// One connection of the replication channel.
pub(crate) type PeerStream = TcpStream;

/// How long an accepted connection may wait for its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a connection could not be opened.
#[derive(Debug)]
pub(crate) enum OpenError {
    Io(io::Error),
    /// The site answered the Hello with a refusal.
    Refused(String),
}

/// Connect to `addr` and say Hello: `from` is our node id (`None` for an operator's
/// command), `to` the node id we mean to reach.
pub(crate) async fn open(
    addr: &str,
    secret: &str,
    from: Option<NodeId>,
    to: Option<NodeId>,
) -> Result<PeerStream, OpenError> {
    let mut stream = TcpStream::connect(addr).await.map_err(OpenError::Io)?;
    let _ = stream.set_nodelay(true);
    let hello = PeerRequest::Hello { secret: secret.to_string(), from, to };
    match exchange(&mut stream, &hello).await.map_err(OpenError::Io)? {
        PeerResponse::Hello => Ok(stream),
        PeerResponse::Refused(reason) => Err(OpenError::Refused(reason)),
        other => {
            Err(OpenError::Io(io::Error::new(io::ErrorKind::InvalidData, format!("answered Hello with {other:?}"))))
        }
    }
}

/// Send one request and read its response.
pub(crate) async fn exchange(stream: &mut PeerStream, request: &PeerRequest) -> io::Result<PeerResponse> {
    write_frame(stream, request).await?;
    read_frame(stream)
        .await?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before the answer"))
}

/// The next request on an accepted connection; `None` once the caller closed it.
pub(crate) async fn next_request(stream: &mut PeerStream) -> io::Result<Option<PeerRequest>> {
    read_frame(stream).await
}

/// Answer the request just read.
pub(crate) async fn answer(stream: &mut PeerStream, response: &PeerResponse) -> io::Result<()> {
    write_frame(stream, response).await
}

/// Where a site accepts connections of the replication channel.
pub(crate) struct PeerListener {
    listener: TcpListener,
}

impl PeerListener {
    pub(crate) async fn bind(addr: SocketAddr) -> io::Result<PeerListener> {
        Ok(PeerListener { listener: TcpListener::bind(addr).await? })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub(crate) async fn accept(&self) -> io::Result<(PeerStream, SocketAddr)> {
        let (stream, from) = self.listener.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, from))
    }
}

/// The site that says Hello on an accepted connection.
pub(crate) struct Caller {
    /// Its node id, or `None` for an operator's command.
    pub from: Option<NodeId>,
}

/// Wait (a bounded time) for the Hello of an accepted connection and answer it:
/// refused for a wrong secret, for a connection meant for another node id than `me`
/// (`site` names this site in the refusal), or for any other first request. `None`
/// when the connection is not to be served.
pub(crate) async fn accept_hello(
    stream: &mut PeerStream,
    me: NodeId,
    site: &str,
    secret: &str,
) -> io::Result<Option<Caller>> {
    let hello = tokio::time::timeout(HELLO_TIMEOUT, read_frame::<PeerRequest>(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no Hello"))??;
    let refusal = match hello {
        Some(PeerRequest::Hello { secret: offered, from, to })
            if constant_time_eq(offered.as_bytes(), secret.as_bytes()) =>
        {
            match to {
                Some(to) if to != me => format!("this is node {me} ({site}), not node {to}"),
                _ => {
                    write_frame(stream, &PeerResponse::Hello).await?;
                    return Ok(Some(Caller { from }));
                }
            }
        }
        Some(PeerRequest::Hello { .. }) => "wrong cluster secret".into(),
        Some(_) => "the first request must be Hello".into(),
        None => return Ok(None),
    };
    write_frame(stream, &PeerResponse::Refused(refusal)).await?;
    Ok(None)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn hello_answer(secret: &str, to: Option<NodeId>) -> (PeerResponse, Option<Option<NodeId>>) {
        let listener = PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            accept_hello(&mut stream, 1, "bj", "right secret").await.unwrap().map(|c| c.from)
        });
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let hello = PeerRequest::Hello { secret: secret.into(), from: Some(2), to };
        let answer = exchange(&mut stream, &hello).await.unwrap();
        (answer, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_hello_is_served_only_with_the_secret_and_for_this_node() {
        let (answer, caller) = hello_answer("right secret", Some(1)).await;
        assert!(matches!(answer, PeerResponse::Hello), "{answer:?}");
        assert_eq!(caller, Some(Some(2)));
        let (answer, caller) = hello_answer("wrong secret", Some(1)).await;
        assert!(matches!(&answer, PeerResponse::Refused(r) if r == "wrong cluster secret"), "{answer:?}");
        assert_eq!(caller, None);
        let (answer, caller) = hello_answer("right secret", Some(7)).await;
        assert!(matches!(&answer, PeerResponse::Refused(r) if r.contains("not node 7")), "{answer:?}");
        assert_eq!(caller, None);
    }
}
