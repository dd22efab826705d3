//! The open admin HTTP API of a site: monitoring, automation and the drill engine
//! drive maildr through it.
//!
//! JSON over HTTP/1.1 (axum), described by an OpenAPI document generated from this
//! code (utoipa) and served at `GET /api/openapi.json`. Every route except that
//! document and `GET /api/health/live` needs `Authorization: Bearer <token>`;
//! `/metrics` needs it too (it names sites and peers; Prometheus sends it with
//! `authorization: { credentials: <token> }` in its scrape config).
//!
//! Changes are the same [`maildr_store::Command`]s the servers and `maildr admin`
//! use, validated completely first (addresses and domains parsed into
//! [`maildr_types`] values) and then written with one [`Cluster::write`], so a
//! refused request changes nothing. Cluster operations (members, switchover, verify)
//! are [`maildr_cluster::ops`], shared with `maildr cluster`.
//!
//! This crate must never write to the store except through [`Cluster::write`],
//! never answer an error with anything but the JSON error shape ([`error`]), never
//! log or echo a token or password it was given, and never panic on a request.

pub mod control;
pub mod error;
pub mod extract;
pub mod faults;
mod handlers;
mod metrics;
mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Router;
use maildr_cluster::ops::ControlClient;
use maildr_cluster::Cluster;
use maildr_config::ClusterSection;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Semaphore};

pub use control::{ControlFuture, ControlPlane, ControlPlaneError, FailoverRequest};
pub use error::{ErrorBody, Failure};
pub use faults::{FaultHooks, Service};
pub use handlers::queue::left_view as queue_left_view;
pub use handlers::queue::view as queued_message_view;
pub use openapi::openapi_json;

/// Largest request body accepted, in bytes (the biggest real body is a few hundred).
pub const BODY_BYTES_MAX: usize = 64 * 1024;

/// How long one request may take, end to end, before it is answered 503.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;

/// How long a switchover, verify or forced failover may take: verify alone may
/// retry for 60 s while writes keep coming.
pub const CLUSTER_OPERATION_TIMEOUT_MS: u64 = 150_000;

/// How long a backup, verification or restore may take through the API (a large
/// store's backup takes minutes; `maildr backup` has no such bound).
pub const BACKUP_OPERATION_TIMEOUT_MS: u64 = 3_600_000;

/// How long `GET /api/cluster/members` waits for each member's status.
pub const MEMBER_STATUS_TIMEOUT_MS: u64 = 3_000;

/// Requests served at once; more are answered 503 at once instead of queueing.
pub const REQUESTS_IN_FLIGHT_MAX: usize = 64;

/// Shortest bearer token accepted at start, in bytes.
pub const TOKEN_LEN_MIN_BYTES: usize = 16;

/// How long a stopping server waits for requests under way before it returns.
pub const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// What the binary fills in from the site's config.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Address the API listens on.
    pub listen: SocketAddr,
    /// The bearer token every protected request must present.
    pub token: String,
    /// This site's name.
    pub site: String,
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the admin API token is {0} bytes long; it must have at least {TOKEN_LEN_MIN_BYTES}")]
    TokenTooShort(usize),
    #[error("cluster configuration: {0}")]
    Cluster(#[from] maildr_cluster::ops::OpsError),
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
    control_plane: Option<Arc<dyn ControlPlane>>,
    fault_hooks: Option<Arc<dyn FaultHooks>>,
    backups: Option<Arc<maildr_backup::BackupService>>,
}

struct Inner {
    cluster: Cluster,
    site: String,
    node_id: u64,
    /// SHA-256 of the token: compared in constant time, and the same length whatever
    /// the caller sends, so neither timing nor length gives it away.
    token_sha256: [u8; 32],
    /// Reaches every member over the replication channel; `None` for a site alone.
    members: Option<ControlClient>,
    in_flight: Semaphore,
    /// Decides the times the admin commands carry (`at`, a new account's UIDVALIDITY).
    clock: maildr_types::SharedClock,
}

impl ApiState {
    /// The API of the site whose write path is `cluster`; `cluster_config` is the
    /// site's `[cluster]` section (no members: a site alone).
    pub fn new(
        settings: &ApiSettings,
        cluster: Cluster,
        cluster_config: &ClusterSection,
    ) -> Result<ApiState, ApiError> {
        if settings.token.len() < TOKEN_LEN_MIN_BYTES {
            return Err(ApiError::TokenTooShort(settings.token.len()));
        }
        let members = if cluster_config.members.is_empty() {
            None
        } else {
            Some(ControlClient::from_cluster(&settings.site, cluster_config.clone())?)
        };
        Ok(ApiState {
            inner: Arc::new(Inner {
                cluster,
                site: settings.site.clone(),
                node_id: cluster_config.node_id,
                token_sha256: Sha256::digest(settings.token.as_bytes()).into(),
                members,
                in_flight: Semaphore::new(REQUESTS_IN_FLIGHT_MAX),
                clock: maildr_types::system_clock(),
            }),
            control_plane: None,
            fault_hooks: None,
            backups: None,
        })
    }

    /// Serve the control-plane endpoints (health, events, DNS records, forced
    /// failover) from `plane`; without one they answer 503.
    pub fn with_control_plane(self, plane: Arc<dyn ControlPlane>) -> ApiState {
        ApiState { control_plane: Some(plane), ..self }
    }

    /// Serve the fault-hook routes (`/api/faults/...`) from `hooks`; without them
    /// those routes answer 404. Only for sites whose config turns hooks on.
    pub fn with_fault_hooks(self, hooks: Arc<dyn FaultHooks>) -> ApiState {
        ApiState { fault_hooks: Some(hooks), ..self }
    }

    /// Serve the backup routes (`/api/backups`, `/api/restore`) from `service`;
    /// without it they answer 503.
    pub fn with_backups(self, service: Arc<maildr_backup::BackupService>) -> ApiState {
        ApiState { backups: Some(service), ..self }
    }

    pub(crate) fn backups(&self) -> Option<&Arc<maildr_backup::BackupService>> {
        self.backups.as_ref()
    }

    pub(crate) fn fault_hooks(&self) -> Option<&Arc<dyn FaultHooks>> {
        self.fault_hooks.as_ref()
    }

    /// The current time, as the admin commands record it.
    pub(crate) fn now(&self) -> maildr_types::UnixSeconds {
        self.inner.clock.now()
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    pub(crate) fn site(&self) -> &str {
        &self.inner.site
    }

    pub(crate) fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    pub(crate) fn members(&self) -> Option<&ControlClient> {
        self.inner.members.as_ref()
    }

    pub(crate) fn control_plane(&self) -> Option<&Arc<dyn ControlPlane>> {
        self.control_plane.as_ref()
    }

    fn token_matches(&self, presented: &[u8]) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented).into();
        presented.ct_eq(&self.inner.token_sha256).into()
    }
}

/// The whole API as an axum router (what [`serve`] serves; tests may drive it).
pub fn router(state: ApiState) -> Router {
    let timeout = |ms: u64| middleware::from_fn(move |req: Request, next: Next| with_timeout(ms, req, next));
    let slow = Router::new()
        .route("/api/cluster/switchover", post(handlers::cluster::switchover))
        .route("/api/cluster/verify", post(handlers::cluster::verify))
        .route("/api/cluster/failover", post(handlers::control::failover))
        .layer(timeout(CLUSTER_OPERATION_TIMEOUT_MS));
    let backup = Router::new()
        .route("/api/backups", get(handlers::backup::list).post(handlers::backup::run))
        .route("/api/backups/verify", post(handlers::backup::verify))
        .route("/api/restore", post(handlers::backup::restore))
        .layer(timeout(BACKUP_OPERATION_TIMEOUT_MS));
    let protected = Router::new()
        .route("/api/cluster/status", get(handlers::cluster::status))
        .route("/api/cluster/members", get(handlers::cluster::members))
        .route("/api/health", get(handlers::control::health))
        .route("/api/health/history", get(handlers::control::history))
        .route("/api/events", get(handlers::control::events))
        .route("/api/dns/records", get(handlers::control::dns_records))
        .route("/api/domains", get(handlers::admin::list_domains).post(handlers::admin::add_domain))
        .route("/api/domains/{domain}", delete(handlers::admin::remove_domain))
        .route("/api/accounts", get(handlers::admin::list_accounts).post(handlers::admin::add_account))
        .route("/api/accounts/{address}", get(handlers::admin::get_account).delete(handlers::admin::remove_account))
        .route("/api/accounts/{address}/password", put(handlers::admin::set_password))
        .route("/api/accounts/{address}/quota", put(handlers::admin::set_quota))
        .route("/api/aliases", get(handlers::admin::list_aliases).post(handlers::admin::add_alias))
        .route("/api/aliases/{address}", delete(handlers::admin::remove_alias))
        .route("/api/queue", get(handlers::queue::list))
        .route("/api/queue/retry", post(handlers::queue::retry))
        .route("/api/queue/{id}", delete(handlers::queue::remove))
        .route("/metrics", get(metrics::metrics))
        .merge(handlers::faults::routes(&state))
        .layer(timeout(REQUEST_TIMEOUT_MS))
        .merge(slow)
        .merge(backup)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let open = Router::new()
        .route("/api/openapi.json", get(openapi::serve_document))
        .route("/api/health/live", get(handlers::live))
        .layer(timeout(REQUEST_TIMEOUT_MS));
    Router::new()
        .merge(protected)
        .merge(open)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), limit_in_flight))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// Serve the API on `listener` until `stop` turns true (or its sender is dropped):
/// then no new connections, and requests under way get [`SHUTDOWN_GRACE_MS`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = router(state);
    let (stopping_tx, mut stopping) = watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        // An error means the sender is gone: that is a stop too.
        let _ = stop.wait_for(|s| *s).await;
        let _ = stopping_tx.send(true);
    });
    let grace = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(Duration::from_millis(SHUTDOWN_GRACE_MS)).await;
    };
    tokio::select! {
        served = server => served,
        _ = grace => {
            tracing::warn!(grace_ms = SHUTDOWN_GRACE_MS, "admin API stopped with requests still under way");
            Ok(())
        }
    }
}

async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Failure::unauthorized("this endpoint needs Authorization: Bearer <token>").into_response();
    };
    let bytes = value.as_bytes();
    // RFC 6750: the scheme is case-insensitive; one space before the token.
    let token = match bytes.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &bytes[7..],
        _ => return Failure::unauthorized("the Authorization header must use the Bearer scheme").into_response(),
    };
    if !state.token_matches(token) {
        return Failure::unauthorized("the bearer token is not valid").into_response();
    }
    next.run(req).await
}

async fn limit_in_flight(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    match state.inner.in_flight.try_acquire() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            Failure::unavailable(format!("more than {REQUESTS_IN_FLIGHT_MAX} requests under way")).into_response()
        }
    }
}

async fn with_timeout(timeout_ms: u64, req: Request, next: Next) -> Response {
    match tokio::time::timeout(Duration::from_millis(timeout_ms), next.run(req)).await {
        Ok(response) => response,
        // A write under way may still commit, as with any unacknowledged write.
        Err(_) => Failure::unavailable(format!("no answer within {timeout_ms} ms; the request may still take effect"))
            .into_response(),
    }
}

async fn not_found() -> Failure {
    Failure::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/openapi.json")
}

async fn method_not_allowed() -> Failure {
    Failure::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this endpoint; see /api/openapi.json")
}
