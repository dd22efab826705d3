//! The fault-hook routes: list a site's services, stop or start one. They are
//! served only when the binary installed hooks (`[faults] hooks = true`); otherwise
//! they answer 404 before reading anything, so a site without hooks cannot be
//! told apart from one without the routes, and nothing changes.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};

use super::refusals::{NotJson, Unauthorized};
use crate::error::{ErrorBody, Failure};
use crate::extract::{JsonBody, PathText};
use crate::faults::{FaultHookError, Service, ServiceState, ServiceSwitch, ServicesView};
use crate::ApiState;

/// The fault routes, guarded by [`require_hooks`].
pub fn routes(state: &ApiState) -> Router<ApiState> {
    Router::new()
        .route("/api/faults/services", get(list))
        .route("/api/faults/services/{service}", put(set))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_hooks))
}

async fn require_hooks(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    if state.fault_hooks().is_none() {
        return Failure::new(StatusCode::NOT_FOUND, "fault hooks are off at this site ([faults] hooks = false)")
            .into_response();
    }
    next.run(req).await
}

impl From<FaultHookError> for Failure {
    fn from(e: FaultHookError) -> Failure {
        match e {
            FaultHookError::NotHere { .. } => Failure::new(StatusCode::NOT_FOUND, e.to_string()).at("service"),
            FaultHookError::Failed(m) => Failure::unavailable(m),
        }
    }
}

#[utoipa::path(get, path = "/api/faults/services", tag = "faults",
    responses((status = 200, description = "Every service of this site and whether it runs", body = ServicesView),
        (status = 404, description = "Fault hooks are off at this site", body = ErrorBody),
        Unauthorized))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<ServicesView>, Failure> {
    let hooks = state.fault_hooks().expect("require_hooks lets requests through only with hooks");
    Ok(Json(ServicesView { site: state.site().to_string(), services: hooks.services() }))
}

#[utoipa::path(put, path = "/api/faults/services/{service}", tag = "faults", request_body = ServiceSwitch,
    params(("service" = String, Path, description = "smtp, submission, imap or dns")),
    responses((status = 200, description = "The service as it is now", body = ServiceState),
        (status = 404, description = "Fault hooks are off, or no such service at this site", body = ErrorBody),
        (status = 422, description = "running is missing or not a boolean", body = ErrorBody),
        (status = 503, description = "The change could not be made", body = ErrorBody),
        NotJson, Unauthorized))]
pub async fn set(
    State(state): State<ApiState>,
    PathText(name): PathText,
    JsonBody(switch): JsonBody<ServiceSwitch>,
) -> Result<Json<ServiceState>, Failure> {
    let hooks = state.fault_hooks().expect("require_hooks lets requests through only with hooks");
    let Some(service) = Service::parse(&name) else {
        let known: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
        return Err(Failure::new(
            StatusCode::NOT_FOUND,
            format!(
                "no service {:?}: the services are {}",
                name.chars().take(64).collect::<String>(),
                known.join(", ")
            ),
        )
        .at("service"));
    };
    Ok(Json(hooks.set_running(service, switch.running).await?))
}
