//! The client of the link-control API: what `maildr lab link`, the benchmarks and
//! (later) the drill engine use to put faults on the lab's inter-site links.
//!
//! One HTTP/1.1 request per call over a fresh connection, with a deadline; a
//! refusal comes back with the API's JSON error text.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use crate::fault_proxy::LinkFaults;

/// Longest a control request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum LinkClientError {
    #[error("link control at {addr}: {detail}")]
    Transport { addr: SocketAddr, detail: String },
    #[error("link control at {addr} answered {status}: {body}")]
    Refused { addr: SocketAddr, status: u16, body: String },
}

/// Client of one lab's link control, e.g. `127.0.99.1:2790`.
#[derive(Debug, Clone, Copy)]
pub struct LinkClient {
    addr: SocketAddr,
}

impl LinkClient {
    pub fn new(addr: SocketAddr) -> LinkClient {
        LinkClient { addr }
    }

    /// Every link with its faults, as the API lists them.
    pub async fn list(&self) -> Result<serde_json::Value, LinkClientError> {
        let body = self.request(Method::GET, "/links", None).await?;
        serde_json::from_slice(&body)
            .map_err(|e| LinkClientError::Transport { addr: self.addr, detail: format!("bad JSON: {e}") })
    }

    /// Replace the faults of one link.
    pub async fn set_faults(&self, link: &str, faults: &LinkFaults) -> Result<(), LinkClientError> {
        let body = serde_json::to_vec(faults).expect("faults serialise");
        self.request(Method::PUT, &format!("/links/{link}/faults"), Some(body)).await.map(drop)
    }

    /// Clear every fault of one link.
    pub async fn heal(&self, link: &str) -> Result<(), LinkClientError> {
        self.request(Method::POST, &format!("/links/{link}/heal"), None).await.map(drop)
    }

    async fn request(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Bytes, LinkClientError> {
        let transport = |detail: String| LinkClientError::Transport { addr: self.addr, detail };
        let work = async {
            let stream = tokio::net::TcpStream::connect(self.addr).await.map_err(|e| transport(e.to_string()))?;
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| transport(e.to_string()))?;
            tokio::spawn(connection);
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, self.addr.to_string())
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| transport(e.to_string()))?;
            let response = sender.send_request(request).await.map_err(|e| transport(e.to_string()))?;
            let status = response.status();
            let bytes = response.into_body().collect().await.map_err(|e| transport(e.to_string()))?.to_bytes();
            if !status.is_success() {
                return Err(LinkClientError::Refused {
                    addr: self.addr,
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            Ok(bytes)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, work).await.map_err(|_| transport("no answer in time".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault_proxy::{DirectionFaults, Link};
    use crate::link_control::{router, LinkSet};
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_client_sets_and_heals_faults_and_reports_refusals() {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let links = Arc::new(LinkSet::default());
        links.insert(Link::start("a-b", "127.0.0.1:0".parse().unwrap(), upstream.local_addr().unwrap()).await.unwrap());
        let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = control.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(control, router(links)).await.unwrap() });
        let client = LinkClient::new(addr);
        let delay = DirectionFaults { latency_ms: 15, ..Default::default() };
        client
            .set_faults("a-b", &LinkFaults { forward: delay, backward: delay, connection_loss_percent: 0 })
            .await
            .unwrap();
        let listed = client.list().await.unwrap();
        assert!(listed.to_string().contains("\"latency_ms\":15"), "{listed}");
        client.heal("a-b").await.unwrap();
        assert!(!client.list().await.unwrap().to_string().contains("\"latency_ms\":15"));
        match client.heal("no-such-link").await {
            Err(LinkClientError::Refused { status: 404, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
