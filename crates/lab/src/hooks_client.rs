//! The client of a site's fault hooks (`/api/faults/services` on its admin API,
//! served when the site's config says `[faults] hooks = true`, as lab sites do):
//! what `maildr lab stop-service|start-service` and the drill engine use to stop
//! and start one service of a running site.

use std::net::SocketAddr;

use hyper::Method;

use crate::http_client::{HttpError, JsonApi};

/// Client of one site's fault hooks.
#[derive(Debug, Clone)]
pub struct HooksClient {
    api: JsonApi,
}

impl HooksClient {
    /// The admin API at `addr`, with its bearer token.
    pub fn new(addr: SocketAddr, token: &str) -> HooksClient {
        HooksClient { api: JsonApi { api: "admin API", addr, bearer: Some(token.to_string()) } }
    }

    /// `{"site": …, "services": [{"service", "running", "listen"}, …]}`.
    pub async fn services(&self) -> Result<serde_json::Value, HttpError> {
        self.api.json(Method::GET, "/api/faults/services", None).await
    }

    /// Stop (`false`) or start (`true`) `service` (`smtp`, `submission`, `imap`,
    /// `dns`); answers once the change is in effect, with the service's state.
    pub async fn set_running(&self, service: &str, running: bool) -> Result<serde_json::Value, HttpError> {
        let body = serde_json::to_vec(&serde_json::json!({ "running": running })).expect("a literal serialises");
        self.api.json(Method::PUT, &format!("/api/faults/services/{service}"), Some(body)).await
    }
}
