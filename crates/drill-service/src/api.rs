//! The service's HTTP API: axum over HTTP/1.1, described by an OpenAPI document
//! generated from these handlers (utoipa) at `GET /openapi.json`, the only route
//! that needs no token. Every other route needs `Authorization: Bearer <token>`
//! (401 without a known one) and a role (403 otherwise, checked before the
//! request body is read, so a refused request changes nothing). Errors are JSON
//! `{"error": ...}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post, MethodRouter};
use axum::{Extension, Json, Router};
use maildr_api_types::openapi::BearerAuth;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use utoipa::OpenApi;

use crate::model::{
    ApprovalAnswer, AuditView, Caller, ErrorBody, HistoryView, NewPerson, NewPersonAnswer, NewSchedule, PersonView,
    Role, RunRecord, Schedule, StartRun, StopRequest, StopState,
};
use crate::service::{Refusal, Service, ADMINS, APPROVERS, AUDITORS, OPERATORS, READERS};

/// Largest request body, in bytes.
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// How long a stopping server waits for requests under way.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Svc = Arc<Service>;

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = match &self {
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
            Refusal::Conflict(_) => StatusCode::CONFLICT,
            Refusal::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, Json(ErrorBody { error: self.to_string() })).into_response()
    }
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, Json(ErrorBody { error: text.into() })).into_response()
}

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Refusal> {
    serde_json::from_slice(body).map_err(|e| Refusal::Invalid(format!("request body: {e}")))
}

/// The whole API.
pub fn router(service: Svc) -> Router {
    let protected = Router::new()
        .route("/whoami", guarded(get(whoami), READERS))
        .route("/users", guarded(get(list_users), ADMINS).merge(guarded(post(add_user), ADMINS)))
        .route("/users/{name}", guarded(delete(remove_user), ADMINS))
        .route("/schedules", guarded(get(list_schedules), READERS).merge(guarded(post(add_schedule), OPERATORS)))
        .route("/schedules/{id}", guarded(delete(remove_schedule), OPERATORS))
        .route("/schedules/{id}/approvals", guarded(post(approve), APPROVERS))
        .route("/runs", guarded(get(list_runs), READERS).merge(guarded(post(start_run), OPERATORS)))
        .route("/stop", guarded(post(stop), OPERATORS))
        .route("/release", guarded(post(release), OPERATORS))
        .route("/history", guarded(get(history), READERS))
        .route("/trend.html", guarded(get(trend), READERS))
        .route("/audit", guarded(get(audit), AUDITORS))
        .route_layer(middleware::from_fn_with_state(service.clone(), authenticate));
    Router::new()
        .merge(protected)
        .route("/openapi.json", get(document))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see /openapi.json") })
        .layer(middleware::from_fn(with_timeout))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(service)
}

/// `route` for callers holding one of `roles` only.
fn guarded(route: MethodRouter<Svc>, roles: &'static [Role]) -> MethodRouter<Svc> {
    route.route_layer(middleware::from_fn_with_state(roles, require_role))
}

async fn with_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "no answer in time; the request may still take effect"),
    }
}

async fn authenticate(State(service): State<Svc>, mut req: Request, next: Next) -> Response {
    let bytes = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes().to_vec());
    let token = match bytes.as_deref() {
        Some(b) if b.len() > 7 && b[..7].eq_ignore_ascii_case(b"bearer ") => b[7..].to_vec(),
        _ => return error(StatusCode::UNAUTHORIZED, "this route needs Authorization: Bearer <token>"),
    };
    let Some(caller) = service.authenticate(&token) else {
        return error(StatusCode::UNAUTHORIZED, "the bearer token is not valid");
    };
    req.extensions_mut().insert(service);
    req.extensions_mut().insert(caller);
    next.run(req).await
}

async fn require_role(State(roles): State<&'static [Role]>, req: Request, next: Next) -> Response {
    let (Some(caller), Some(service)) = (req.extensions().get::<Caller>(), req.extensions().get::<Svc>()) else {
        return error(StatusCode::UNAUTHORIZED, "not authenticated");
    };
    let what = format!("{} {}", req.method(), req.uri().path());
    if let Err(refusal) = service.require(caller, roles, &what) {
        return refusal.into_response();
    }
    next.run(req).await
}

/// Who the token belongs to.
#[utoipa::path(get, path = "/whoami", tag = "people", responses((status = 200, body = Caller)))]
async fn whoami(Extension(caller): Extension<Caller>) -> Json<Caller> {
    Json(caller)
}

/// Every person and role (admin).
#[utoipa::path(get, path = "/users", tag = "people",
    responses((status = 200, body = Vec<PersonView>), (status = 403, body = ErrorBody)))]
async fn list_users(State(s): State<Svc>) -> Json<Vec<PersonView>> {
    Json(s.people())
}

/// Add a person with a role; the answer holds their token, shown once (admin).
#[utoipa::path(post, path = "/users", tag = "people", request_body = NewPerson,
    responses((status = 200, body = NewPersonAnswer), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn add_user(
    State(s): State<Svc>,
    Extension(c): Extension<Caller>,
    body: Bytes,
) -> Result<Json<NewPersonAnswer>, Refusal> {
    s.add_person(&c, parse(&body)?).map(Json)
}

/// Remove a person (admin; never the last admin).
#[utoipa::path(delete, path = "/users/{name}", tag = "people", params(("name" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn remove_user(
    State(s): State<Svc>,
    Extension(c): Extension<Caller>,
    Path(name): Path<String>,
) -> Result<StatusCode, Refusal> {
    s.remove_person(&c, &name).map(|()| StatusCode::NO_CONTENT)
}

/// Every schedule with its next due time.
#[utoipa::path(get, path = "/schedules", tag = "calendar", responses((status = 200, body = Vec<Schedule>)))]
async fn list_schedules(State(s): State<Svc>) -> Json<Vec<Schedule>> {
    Json(s.schedules())
}

/// Add a schedule (operator, admin).
#[utoipa::path(post, path = "/schedules", tag = "calendar", request_body = NewSchedule,
    responses((status = 200, body = Schedule), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn add_schedule(
    State(s): State<Svc>,
    Extension(c): Extension<Caller>,
    body: Bytes,
) -> Result<Json<Schedule>, Refusal> {
    s.add_schedule(&c, parse(&body)?).map(Json)
}

/// Remove a schedule and its approvals (operator, admin).
#[utoipa::path(delete, path = "/schedules/{id}", tag = "calendar", params(("id" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn remove_schedule(
    State(s): State<Svc>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, Refusal> {
    s.remove_schedule(&c, &id).map(|()| StatusCode::NO_CONTENT)
}

/// Approve the schedule's next run, as the caller (approver only; counted once per person).
#[utoipa::path(post, path = "/schedules/{id}/approvals", tag = "calendar", params(("id" = String, Path)),
    responses((status = 200, body = ApprovalAnswer), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)))]
async fn approve(
    State(s): State<Svc>,
    Extension(c): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalAnswer>, Refusal> {
    s.approve(&c, &id).map(Json)
}

/// Every run started or skipped, oldest first.
#[utoipa::path(get, path = "/runs", tag = "runs", responses((status = 200, body = Vec<RunRecord>)))]
async fn list_runs(State(s): State<Svc>) -> Json<Vec<RunRecord>> {
    Json(s.runs())
}

/// Start a scenario now (operator, admin); 409 while drills are stopped or one runs.
#[utoipa::path(post, path = "/runs", tag = "runs", request_body = StartRun,
    responses((status = 200, body = RunRecord), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
async fn start_run(
    State(s): State<Svc>,
    Extension(c): Extension<Caller>,
    body: Bytes,
) -> Result<Json<RunRecord>, Refusal> {
    s.start_now(&c, parse(&body)?).map(Json)
}

/// Global stop: every running drill aborts and rolls back; none starts until released.
#[utoipa::path(post, path = "/stop", tag = "runs", request_body = StopRequest,
    responses((status = 200, body = StopState), (status = 403, body = ErrorBody)))]
async fn stop(State(s): State<Svc>, Extension(c): Extension<Caller>, body: Bytes) -> Result<Json<StopState>, Refusal> {
    let request: StopRequest = if body.is_empty() { StopRequest { reason: None } } else { parse(&body)? };
    s.stop_all(&c, request.reason).map(Json)
}

/// Lift the global stop.
#[utoipa::path(post, path = "/release", tag = "runs", responses((status = 200, body = StopState), (status = 403, body = ErrorBody)))]
async fn release(State(s): State<Svc>, Extension(c): Extension<Caller>) -> Result<Json<StopState>, Refusal> {
    s.release(&c).map(Json)
}

/// RTO phases and RPO of every archived drill per scenario, oldest first, with regressions.
#[utoipa::path(get, path = "/history", tag = "history", responses((status = 200, body = HistoryView)))]
async fn history(State(s): State<Svc>) -> Json<HistoryView> {
    Json(tokio::task::spawn_blocking(move || s.history()).await.unwrap_or_default())
}

/// The history as an HTML page with one SVG chart per scenario.
#[utoipa::path(get, path = "/trend.html", tag = "history", responses((status = 200, content_type = "text/html", body = String)))]
async fn trend(State(s): State<Svc>) -> Html<String> {
    let view = tokio::task::spawn_blocking(move || s.history()).await.unwrap_or_default();
    Html(crate::history::trend_html(&view))
}

/// The audit log's check and newest records (auditor, admin).
#[utoipa::path(get, path = "/audit", tag = "audit", responses((status = 200, body = AuditView), (status = 403, body = ErrorBody)))]
async fn audit(State(s): State<Svc>) -> Result<Json<AuditView>, Refusal> {
    s.audit_view().map(Json)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "maildr drill service", description = "The drill calendar, runs, roles, notifications and history. \
        Every route but /openapi.json needs `Authorization: Bearer <token>` and a role; errors are JSON `{\"error\": ...}`."),
    paths(whoami, list_users, add_user, remove_user, list_schedules, add_schedule, remove_schedule, approve,
        list_runs, start_run, stop, release, history, trend, audit, openapi_document),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// The OpenAPI document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the generated OpenAPI document serialises")
}

/// This document; needs no token.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()), responses((status = 200, body = Object)))]
#[allow(dead_code)] // only its annotation is used: the route is `document`
fn openapi_document() {}

async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

/// Serve the API on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: Svc,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (stopping_tx, mut stopping) = watch::channel(false);
    let server = axum::serve(listener, router(service)).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
        let _ = stopping_tx.send(true);
    });
    // Idle keep-alive connections would hold a graceful stop forever.
    let grace = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        served = server => served,
        _ = grace => Ok(()),
    }
}
