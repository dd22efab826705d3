//! The control-plane endpoints: health as every observer sees it, this site's probe
//! history, the failover event log, the DNS records this site serves, and forced
//! failover. They pass through to the [`crate::ControlPlane`] the binary installed,
//! and answer 503 when there is none. This module must never decide a failover itself.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use maildr_api_types::cluster::FailoverReport;
use maildr_api_types::control::{DnsRecords, EventList, HealthHistory, HealthReport};

use super::refusals::{ControlPlaneDown, Unauthorized};
use crate::control::{ControlPlane, ControlPlaneError, FailoverRequest, HISTORY_LIMIT_MAX};
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
            ControlPlaneError::Ops(e) => Failure::from(e),
        }
    }
}

#[utoipa::path(get, path = "/api/health", tag = "control",
    responses((status = 200, description = "Health of every site as seen by every observer", body = HealthReport),
        Unauthorized, ControlPlaneDown))]
pub async fn health(State(state): State<ApiState>) -> Result<Json<HealthReport>, Failure> {
    Ok(Json(plane(&state)?.health().await?))
}

/// Whose probe history to return, and how much of it.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this data site (default: every data site this site probes).
    pub site: Option<String>,
    /// At most this many samples per site, the most recent (default and maximum 10000).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<usize>,
}

#[utoipa::path(get, path = "/api/health/history", tag = "control", params(HistoryQuery),
    responses((status = 200, description = "This site's probe rounds against each data site it observes, oldest \
            first: at_ms, ok, smtp_ms, imap_ms, replication_ms and error (why a round failed)", body = HealthHistory),
        (status = 404, description = "This site observes no data site of that name", body = ErrorBody),
        (status = 422, description = "limit is not a number from 1 to 10000", body = ErrorBody),
        Unauthorized, ControlPlaneDown))]
pub async fn history(
    State(state): State<ApiState>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<HealthHistory>, Failure> {
    let limit = query.limit.unwrap_or(HISTORY_LIMIT_MAX);
    if limit == 0 {
        return Err(Failure::invalid("limit", format!("limit: a number from 1 to {HISTORY_LIMIT_MAX}")));
    }
    match plane(&state)?.history(query.site, limit.min(HISTORY_LIMIT_MAX)).await {
        Ok(history) => Ok(Json(history)),
        Err(e @ ControlPlaneError::NotFound(_)) => Err(Failure::from(e).at("site")),
        Err(e) => Err(e.into()),
    }
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
            timestamps in ms)", body = EventList),
        Unauthorized, ControlPlaneDown))]
pub async fn events(
    State(state): State<ApiState>,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<Json<EventList>, Failure> {
    let limit = query.limit.unwrap_or(crate::control::EVENTS_LIMIT_MAX).min(crate::control::EVENTS_LIMIT_MAX);
    Ok(Json(plane(&state)?.events(query.after_id, limit).await?))
}

#[utoipa::path(get, path = "/api/dns/records", tag = "control",
    responses((status = 200, description = "DNS records as served by this site", body = DnsRecords),
        (status = 501, description = "Not offered by this control plane yet", body = ErrorBody),
        Unauthorized, ControlPlaneDown))]
pub async fn dns_records(State(state): State<ApiState>) -> Result<Json<DnsRecords>, Failure> {
    Ok(Json(plane(&state)?.dns_records().await?))
}

#[utoipa::path(post, path = "/api/cluster/failover", tag = "control", request_body = FailoverRequest,
    responses((status = 200, description = "The standby accepted: it restarts as the only voter and leads once \
            back (poll its /api/cluster/status for state Leader). The report says what may be lost and who \
            forced it", body = FailoverReport),
        (status = 400, description = "Not JSON, or accept_data_loss is not true", body = ErrorBody),
        (status = 409, description = "Refused: the standby still hears from a primary (use switchover), or was \
            promoted already", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid, or `to` names no standby", body = ErrorBody),
        (status = 502, description = "The standby answered something unexpected", body = ErrorBody),
        (status = 503, description = "Control plane not running, or the standby did not answer", body = ErrorBody),
        Unauthorized))]
pub async fn failover(
    State(state): State<ApiState>,
    JsonBody(request): JsonBody<FailoverRequest>,
) -> Result<Json<FailoverReport>, Failure> {
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
