//! The OpenAPI document, generated from the handlers' annotations and the request
//! and response types, so it cannot drift from the code. It must never list a
//! route the router does not serve (the tests compare the two).

use axum::http::header;
use axum::response::IntoResponse;
use maildr_api_types::openapi::BearerAuth;
use utoipa::OpenApi;

use crate::handlers;

#[derive(OpenApi)]
#[openapi(
    info(title = "maildr admin API", description = "The admin HTTP API of one maildr site. Every endpoint but \
        /api/openapi.json and /api/health/live needs `Authorization: Bearer <token>`; errors are JSON \
        `{\"error\": ..., \"field\": ...}`."),
    paths(
        handlers::live,
        handlers::cluster::status,
        handlers::cluster::members,
        handlers::cluster::switchover,
        handlers::cluster::verify,
        handlers::control::health,
        handlers::control::history,
        handlers::control::events,
        handlers::control::dns_records,
        handlers::control::failover,
        handlers::admin::list_domains,
        handlers::admin::add_domain,
        handlers::admin::remove_domain,
        handlers::admin::list_accounts,
        handlers::admin::add_account,
        handlers::admin::get_account,
        handlers::admin::remove_account,
        handlers::admin::set_password,
        handlers::admin::set_quota,
        handlers::admin::list_aliases,
        handlers::admin::add_alias,
        handlers::admin::remove_alias,
        handlers::backup::list,
        handlers::backup::run,
        handlers::backup::verify,
        handlers::backup::restore,
        handlers::faults::list,
        handlers::faults::set,
        handlers::queue::list,
        handlers::queue::retry,
        handlers::queue::remove,
        crate::metrics::metrics,
        document,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// The OpenAPI document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().expect("the generated OpenAPI document serialises")
}

/// This document; needs no token.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
#[allow(dead_code)] // only its annotation is used: the route is `serve_document`
fn document() {}

pub async fn serve_document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}
