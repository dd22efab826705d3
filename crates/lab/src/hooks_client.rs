//! The client of a site's fault hooks (`/api/faults/services` on its admin API,
//! served when the site's config says `[faults] hooks = true`, as lab sites do):
//! what `maildr lab stop-service|start-service` and the drill engine use to stop
//! and start one service of a running site. Answers are the admin API's own types
//! (`maildr_api_types::faults`).

use std::net::SocketAddr;

use hyper::Method;
use maildr_api_types::faults::{Service, ServiceState, ServiceSwitch, ServicesView};

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

    /// Every service of the site and whether it runs.
    pub async fn services(&self) -> Result<ServicesView, HttpError> {
        self.api.get("/api/faults/services").await
    }

    /// Stop (`running: false`) or start (`true`) `service`; answers once the change
    /// is in effect, with the service's state.
    pub async fn switch(&self, service: Service, running: bool) -> Result<ServiceState, HttpError> {
        let path = format!("/api/faults/services/{service}");
        self.api.call(Method::PUT, &path, &ServiceSwitch { running }).await
    }

    /// [`HooksClient::switch`] by the service's name, answering untyped JSON: kept
    /// only for `maildr lab stop-service|start-service` (crates/maildr/src/lab.rs)
    /// until it calls `switch`; new code must not use it.
    pub async fn set_running(&self, service: &str, running: bool) -> Result<serde_json::Value, HttpError> {
        let path = format!("/api/faults/services/{service}");
        self.api.call(Method::PUT, &path, &ServiceSwitch { running }).await
    }
}
