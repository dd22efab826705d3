//! The control-plane endpoints: health as every observer sees it, the failover
//! event log, the DNS records this site serves, and forced failover. They pass
//! through to the [`crate::ControlPlane`] the binary installed, and answer 503 when
//! there is none. This module must never decide a failover itself.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use crate::control::{ControlPlane, ControlPlaneError, FailoverRequest};
use crate::error::{ErrorBody, Failure};
use crate::extract::{JsonBody, QueryParams};
use crate::ApiState;

/// Longest name in `by`, in bytes (it goes into the event log).
pub const FAILOVER_BY_LEN_MAX_BYTES: usize = 256;

fn plane(state: &ApiState) -> Result<&Arc<dyn ControlPlane>, Failure> {
    state.control_plane().ok_or_else(|| Failure::unavailable("control plane not running"))
}

impl From<ControlPlaneError> for Failure {
    fn from(e: ControlPlaneError) -> Failure {
        match e {
            ControlPlaneError::NotFound(m) => Failure::new(StatusCode::NOT_FOUND, m),
            ControlPlaneError::Refused(m) => Failure::new(StatusCode::CONFLICT, m),
            ControlPlaneError::Unavailable(m) => Failure::unavailable(m),
            ControlPlaneError::NotImplemented(m) => Failure::new(StatusCode::NOT_IMPLEMENTED, m),
        }
    }
}

#[utoipa::path(get, path = "/api/health", tag = "control",
    responses((status = 200, description = "Health of every site as seen by every observer", body = Object),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "Control plane not running", body = ErrorBody)))]
pub async fn health(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, Failure> {
    Ok(Json(plane(&state)?.health().await?))
}

/// Which events to return.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only replicated events with a larger id (local events are always included).
    #[serde(default)]
    pub after_id: u64,
    /// At most this many, the most recent (default and maximum 10000).
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/events", tag = "control", params(EventsQuery),
    responses((status = 200, description = "The failover event log (detected, elected, dns_committed, dns_served; \
            timestamps in ms)", body = Object),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 503, description = "Control plane not running", body = ErrorBody)))]
pub async fn events(
    State(state): State<ApiState>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<serde_json::Value>, Failure> {
    let limit = query.limit.unwrap_or(crate::control::EVENTS_LIMIT_MAX).min(crate::control::EVENTS_LIMIT_MAX);
    Ok(Json(plane(&state)?.events(query.after_id, limit).await?))
}

#[utoipa::path(get, path = "/api/dns/records", tag = "control",
    responses((status = 200, description = "DNS records as served by this site", body = Object),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 501, description = "Not offered by this control plane yet", body = ErrorBody),
        (status = 503, description = "Control plane not running", body = ErrorBody)))]
pub async fn dns_records(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, Failure> {
    Ok(Json(plane(&state)?.dns_records().await?))
}

#[utoipa::path(post, path = "/api/cluster/failover", tag = "control", request_body = FailoverRequest,
    responses((status = 200, description = "Failover done", body = Object),
        (status = 400, description = "Not JSON, or accept_data_loss is not true", body = ErrorBody),
        (status = 401, description = "No or wrong token", body = ErrorBody),
        (status = 404, description = "No such site", body = ErrorBody),
        (status = 409, description = "Refused by the control plane", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid", body = ErrorBody),
        (status = 501, description = "Not offered by this control plane yet", body = ErrorBody),
        (status = 503, description = "Control plane not running", body = ErrorBody)))]
pub async fn failover(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<FailoverRequest>,
) -> Result<Json<serde_json::Value>, Failure> {
    if !request.accept_data_loss {
        return Err(Failure::bad_request(
            "a forced failover may lose what the target had not received: say accept_data_loss: true",
        )
        .at("accept_data_loss"));
    }
    if request.to.is_empty() {
        return Err(Failure::invalid("to", "to: name the site to promote"));
    }
    if request.by.trim().is_empty() || request.by.len() > FAILOVER_BY_LEN_MAX_BYTES {
        return Err(Failure::invalid("by", format!("by: a name of 1 to {FAILOVER_BY_LEN_MAX_BYTES} bytes")));
    }
    Ok(Json(plane(&state)?.failover(request).await?))
}
