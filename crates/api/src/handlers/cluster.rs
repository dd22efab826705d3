//! This site's status, every member's, planned switchover and verification: the
//! same operations as `maildr cluster` (`maildr_cluster::ops`).
//!
//! A site alone reports itself as its own primary and refuses switchover and
//! verify with 409 (there is nothing to switch to or compare with). This module
//! must never change cluster state except through the primary's own `HandOver`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use maildr_api_types::cluster::{
    ClusterStatus, MemberView, SwitchoverReport, SwitchoverRequest, VerifyReport, VerifyRequest,
};
use maildr_api_types::status::SiteStatus;
use maildr_cluster::ops;

use super::refusals::{NotJson, Unauthorized};
use crate::error::{ErrorBody, Failure};
use crate::extract::JsonBody;
use crate::ApiState;

/// This site's status: the replicated site's own view, or for a site alone, a
/// status that names it its own primary (term 0, no peers, no write metrics).
pub(crate) async fn local_status(state: &ApiState) -> Result<SiteStatus, Failure> {
    if let Some(replicated) = state.cluster().replication() {
        return Ok(replicated.status());
    }
    let store = state.cluster().store();
    let applied = tokio::task::spawn_blocking(move || store.commands_applied())
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the store failed: {e}")))?
        .map_err(|e| Failure::store("the applied count", e))?;
    Ok(SiteStatus {
        site: state.site().to_string(),
        node_id: state.node_id(),
        role: "data".into(),
        state: "Leader".into(),
        term: 0,
        leader: Some(state.node_id()),
        last_log_index: Some(applied),
        applied_index: Some(applied),
        snapshot_index: None,
        initialized: true,
        voters: vec![state.node_id()],
        learners: Vec::new(),
        peers: Vec::new(),
        missing_bodies: 0,
        metrics: Default::default(),
        primary_contact: None,
        forced_failover: None,
        apply_delay: None,
        certificate_expires_at: None,
    })
}

#[utoipa::path(get, path = "/api/cluster/status", tag = "cluster",
    responses((status = 200, description = "This site's own view", body = SiteStatus),
        Unauthorized))]
pub async fn status(State(state): State<ApiState>) -> Result<Json<SiteStatus>, Failure> {
    Ok(Json(local_status(&state).await?))
}

#[utoipa::path(get, path = "/api/cluster/members", tag = "cluster",
    responses((status = 200, description = "Every member with its role and, when it answered, its status",
            body = ClusterStatus),
        Unauthorized))]
pub async fn members(State(state): State<ApiState>) -> Result<Json<ClusterStatus>, Failure> {
    if let Some(client) = state.members() {
        return Ok(Json(ops::cluster_status(client, Duration::from_millis(crate::MEMBER_STATUS_TIMEOUT_MS)).await));
    }
    let s = local_status(&state).await?;
    let alone = MemberView {
        site: s.site.clone(),
        node_id: s.node_id,
        role: s.role.clone(),
        reachable: true,
        error: None,
        state: Some(s.state.clone()),
        term: Some(s.term),
        leader: Some(s.site.clone()),
        last_log_index: s.last_log_index,
        applied_index: s.applied_index,
        lag_entries: Some(0),
        lag_seconds: Some(0.0),
        lag_bytes: Some(0),
        lag_bytes_estimated: false,
        last_heard_ms_ago: Some(0),
        missing_bodies: Some(0),
        status: Some(s.clone()),
    };
    Ok(Json(ClusterStatus { leader: Some(s.site), term: Some(s.term), members: vec![alone] }))
}

#[utoipa::path(post, path = "/api/cluster/switchover", tag = "cluster", request_body = SwitchoverRequest,
    responses((status = 200, description = "The target is primary", body = SwitchoverReport),
        (status = 409, description = "Refused: not a cluster, or the target is not a caught-up data site",
            body = ErrorBody),
        (status = 422, description = "No member of that name", body = ErrorBody),
        (status = 503, description = "No primary known or a site unreachable; retry", body = ErrorBody),
        NotJson, Unauthorized))]
pub async fn switchover(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<SwitchoverRequest>,
) -> Result<Json<SwitchoverReport>, Failure> {
    let client = alone_refused(&state, "switch over to")?;
    Ok(Json(ops::switchover(client, &body.to).await?))
}

#[utoipa::path(post, path = "/api/cluster/verify", tag = "cluster", request_body = VerifyRequest,
    responses((status = 200, description = "Every mailbox's digest compared across sites at one applied index",
            body = VerifyReport),
        (status = 409, description = "Not a cluster", body = ErrorBody),
        (status = 503, description = "Fewer than two sites answered; retry", body = ErrorBody),
        NotJson, Unauthorized))]
pub async fn verify(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<VerifyRequest>,
) -> Result<Json<VerifyReport>, Failure> {
    let client = alone_refused(&state, "compare with")?;
    Ok(Json(ops::verify(client, body.messages).await?))
}

fn alone_refused<'a>(state: &'a ApiState, what: &str) -> Result<&'a ops::ControlClient, Failure> {
    state.members().ok_or_else(|| {
        Failure::new(
            StatusCode::CONFLICT,
            format!("site {} runs alone (no [[cluster.members]]): there is no other site to {what}", state.site()),
        )
    })
}
