//! HTTP control of the lab's links, for the drill engine, `maildr lab link` and
//! operators with curl: the TCP fault proxies of a loopback lab, or the packet
//! wire of a netns lab (`crate::wire`), behind one API.
//!
//! `GET /links` lists every link with its faults; `PUT /links/{name}/faults` sets
//! them (a JSON `LinkFaults`; omitted fields are "no fault"); `POST
//! /links/{name}/heal` clears them; `POST /links/{name}/reset` resets every open
//! connection (proxies only: the wire answers 501). A bad body gets 400 with a
//! JSON error naming the field, an unknown link 404; neither changes anything.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::fault_proxy::{FaultProxyError, Link, LinkFaults};
use crate::topology::LinkSpec;
use crate::wire::WireLinks;

/// The links a control API serves, whatever carries them.
pub trait LinkTable: Send + Sync + 'static {
    /// Every link: `name`, `faults`, and what else the carrier tells.
    fn list(&self) -> Vec<serde_json::Value>;
    /// Replace a link's faults; `None` when there is no such link.
    fn set(&self, name: &str, faults: LinkFaults) -> Option<Result<LinkFaults, FaultProxyError>>;
    /// Reset every open connection of a link; `Some(Err)` when the carrier cannot.
    fn reset(&self, name: &str) -> Option<Result<(), String>>;
}

impl LinkTable for LinkSet {
    fn list(&self) -> Vec<serde_json::Value> {
        let table = self.links.lock().expect("link table lock");
        table
            .values()
            .map(|l| json!({ "name": l.name(), "listen": l.local_addr().to_string(), "faults": l.faults() }))
            .collect()
    }

    fn set(&self, name: &str, faults: LinkFaults) -> Option<Result<LinkFaults, FaultProxyError>> {
        self.with(name, |l| l.set(faults).map(|_| l.faults()))
    }

    fn reset(&self, name: &str) -> Option<Result<(), String>> {
        self.with(name, |l| {
            l.reset_connections();
            Ok(())
        })
    }
}

impl LinkTable for WireLinks {
    fn list(&self) -> Vec<serde_json::Value> {
        WireLinks::list(self).into_iter().map(|(name, faults)| json!({ "name": name, "faults": faults })).collect()
    }

    fn set(&self, name: &str, faults: LinkFaults) -> Option<Result<LinkFaults, FaultProxyError>> {
        WireLinks::set(self, name, faults)
    }

    fn reset(&self, name: &str) -> Option<Result<(), String>> {
        self.get(name).map(|_| {
            Err("the netns lab's links carry packets, not connections: nothing to reset \
                 (a partition and heal breaks connections the way a WAN does)"
                .to_string())
        })
    }
}

type Links = Arc<dyn LinkTable>;

/// The links of a lab, by name.
#[derive(Default)]
pub struct LinkSet {
    links: Mutex<BTreeMap<String, Link>>,
}

impl LinkSet {
    pub fn insert(&self, link: Link) {
        self.links.lock().expect("link table lock").insert(link.name().to_string(), link);
    }

    fn with<T>(&self, name: &str, f: impl FnOnce(&Link) -> T) -> Option<T> {
        self.links.lock().expect("link table lock").get(name).map(f)
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn unknown(name: &str) -> Response {
    error(StatusCode::NOT_FOUND, format!("no link named {name:?}"))
}

async fn list(State(links): State<Links>) -> Response {
    Json(json!({ "links": links.list() })).into_response()
}

async fn set_faults(State(links): State<Links>, Path(name): Path<String>, body: axum::body::Bytes) -> Response {
    // Parse by hand so the error names the offending field.
    let mut de = serde_json::Deserializer::from_slice(&body);
    let faults: LinkFaults = match serde_path_to_error::deserialize(&mut de) {
        Ok(f) => f,
        Err(e) => {
            let field = e.path().to_string();
            let inner = e.into_inner();
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": format!("invalid faults: {inner}"), "field": field })),
            )
                .into_response();
        }
    };
    match links.set(&name, faults) {
        None => unknown(&name),
        Some(Err(e)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Some(Ok(now)) => Json(json!({ "name": name, "faults": now })).into_response(),
    }
}

async fn heal(State(links): State<Links>, Path(name): Path<String>) -> Response {
    match links.set(&name, LinkFaults::default()) {
        None => unknown(&name),
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Some(Ok(now)) => Json(json!({ "name": name, "faults": now })).into_response(),
    }
}

async fn reset(State(links): State<Links>, Path(name): Path<String>) -> Response {
    match links.reset(&name) {
        None => unknown(&name),
        Some(Err(e)) => error(StatusCode::NOT_IMPLEMENTED, e),
        Some(Ok(())) => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The control API's routes.
pub fn router(links: Arc<dyn LinkTable>) -> Router {
    Router::new()
        .route("/links", get(list))
        .route("/links/{name}/faults", put(set_faults))
        .route("/links/{name}/heal", post(heal))
        .route("/links/{name}/reset", post(reset))
        .with_state(links)
}

/// Why a lab's links could not be served.
#[derive(Debug, thiserror::Error)]
pub enum ServeLinksError {
    #[error(transparent)]
    Link(#[from] FaultProxyError),
    #[error("link control: cannot listen on {addr}: {source}")]
    ControlBind { addr: SocketAddr, source: std::io::Error },
    #[error("link control on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Wire(#[from] crate::wire::WireError),
}

/// Start the packet wire of a netns lab (a `wan0` in every port's namespace) and
/// serve its links' control API on `control` until `shutdown` completes. The
/// control address is on the client port, so the wire is up before it answers.
pub async fn serve_wire(
    ports: &[crate::wire::PortSpec],
    sites: Vec<String>,
    control: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeLinksError> {
    let wire = crate::wire::Wire::start(ports, sites)?;
    let listener = bind_when_up(control).await?;
    tracing::info!(%control, ports = ports.len(), "wire control serving");
    axum::serve(listener, router(Arc::clone(&wire.links) as Arc<dyn LinkTable>))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeLinksError::Serve { addr: control, source })
}

/// Bind `addr`, retrying for a moment while a just-added address is still
/// tentative.
async fn bind_when_up(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeLinksError> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) if tokio::time::Instant::now() < deadline && e.kind() == std::io::ErrorKind::AddrNotAvailable => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await
            }
            Err(source) => return Err(ServeLinksError::ControlBind { addr, source }),
        }
    }
}

/// Start every link in `specs` and serve their control API on `control` until
/// `shutdown` completes; then the links stop and their connections close.
///
/// Every listener is bound before the first request is served, so once `control`
/// accepts connections every link is up.
pub async fn serve_links(
    specs: &[LinkSpec],
    control: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeLinksError> {
    let links = Arc::new(LinkSet::default());
    for spec in specs {
        links.insert(Link::start(&spec.name, spec.listen, spec.upstream).await?);
        tracing::info!(link = %spec.name, listen = %spec.listen, upstream = %spec.upstream, "link up");
    }
    let listener = tokio::net::TcpListener::bind(control)
        .await
        .map_err(|source| ServeLinksError::ControlBind { addr: control, source })?;
    tracing::info!(%control, links = specs.len(), "link control serving");
    axum::serve(listener, router(links as Arc<dyn LinkTable>))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeLinksError::Serve { addr: control, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        let status = out[9..12].parse().unwrap();
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    async fn lab() -> (std::net::SocketAddr, Arc<LinkSet>) {
        let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = upstream.local_addr().unwrap();
        std::mem::forget(upstream);
        let links = Arc::new(LinkSet::default());
        links.insert(Link::start("bj-sh", "127.0.0.1:0".parse().unwrap(), up).await.unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(Arc::clone(&links) as Arc<dyn LinkTable>);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, links)
    }

    #[tokio::test]
    async fn faults_are_set_listed_and_healed_over_http() {
        let (addr, links) = lab().await;
        let (status, body) = request(
            addr,
            "PUT",
            "/links/bj-sh/faults",
            r#"{"forward":{"latency_ms":40,"jitter_ms":5},"backward":{"blackhole":true}}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let now = links.with("bj-sh", |l| l.faults()).unwrap();
        assert_eq!(now.forward.latency_ms, 40);
        assert!(now.backward.blackhole);
        let (status, body) = request(addr, "GET", "/links", "").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"latency_ms\":40") && body.contains("bj-sh"), "{body}");
        let (status, _) = request(addr, "POST", "/links/bj-sh/heal", "").await;
        assert_eq!(status, 200);
        assert_eq!(links.with("bj-sh", |l| l.faults()).unwrap(), LinkFaults::default());
        let (status, _) = request(addr, "POST", "/links/bj-sh/reset", "").await;
        assert_eq!(status, 204);
    }

    #[tokio::test]
    async fn bad_requests_name_the_problem_and_change_nothing() {
        let (addr, links) = lab().await;
        request(addr, "PUT", "/links/bj-sh/faults", r#"{"forward":{"latency_ms":10}}"#).await;
        let before = links.with("bj-sh", |l| l.faults()).unwrap();
        for (path, body, status, says) in [
            ("/links/bj-sh/faults", r#"{"forward":{"latency":10}}"#, 400, "latency"),
            ("/links/bj-sh/faults", r#"{"connection_loss_percent":"many"}"#, 400, "connection_loss_percent"),
            ("/links/bj-sh/faults", r#"{"forward":{"latency_ms":99999999}}"#, 400, "exceeds"),
            ("/links/bj-sh/faults", "not json", 400, "invalid faults"),
            ("/links/nowhere/faults", "{}", 404, "nowhere"),
        ] {
            let (got, text) = request(addr, "PUT", path, body).await;
            assert_eq!(got, status, "{path} {body}: {text}");
            assert!(text.contains(says), "{body}: {text}");
        }
        assert_eq!(links.with("bj-sh", |l| l.faults()).unwrap(), before);
    }
}
