//! The request handlers, one module per area; each reads through the cluster's
//! store on the blocking pool and changes state only through `Cluster::write`.

pub mod admin;
pub mod backup;
pub mod cluster;
pub mod control;
pub mod faults;
pub mod queue;
mod refusals;

use axum::Json;
use maildr_api_types::admin::Live;

/// Liveness: answers as long as the process serves HTTP; needs no token.
#[utoipa::path(get, path = "/api/health/live", tag = "health", security(()),
    responses((status = 200, description = "The process is up", body = Live)))]
pub async fn live() -> Json<Live> {
    Json(Live { live: true })
}
