//! The client of the link-control API: what `maildr lab link`, the benchmarks and
//! (later) the drill engine use to put faults on the lab's inter-site links.
//!
//! One HTTP/1.1 request per call over a fresh connection, with a deadline; a
//! refusal comes back with the API's JSON error text.

use std::net::SocketAddr;

use hyper::Method;

use crate::fault_proxy::LinkFaults;
use crate::http_client::{HttpError, JsonApi};

/// Why a link-control request failed.
pub type LinkClientError = HttpError;

/// Client of one lab's link control, e.g. `127.0.99.1:2790`.
#[derive(Debug, Clone)]
pub struct LinkClient {
    api: JsonApi,
}

impl LinkClient {
    pub fn new(addr: SocketAddr) -> LinkClient {
        LinkClient { api: JsonApi { api: "link control", addr, bearer: None } }
    }

    /// Every link with its faults, as the API lists them.
    pub async fn list(&self) -> Result<serde_json::Value, LinkClientError> {
        self.api.json(Method::GET, "/links", None).await
    }

    /// Replace the faults of one link.
    pub async fn set_faults(&self, link: &str, faults: &LinkFaults) -> Result<(), LinkClientError> {
        let body = serde_json::to_vec(faults).expect("faults serialise");
        self.api.request(Method::PUT, &format!("/links/{link}/faults"), Some(body)).await.map(drop)
    }

    /// Clear every fault of one link.
    pub async fn heal(&self, link: &str) -> Result<(), LinkClientError> {
        self.api.request(Method::POST, &format!("/links/{link}/heal"), None).await.map(drop)
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
