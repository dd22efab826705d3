//! The refusals many routes share, as OpenAPI response sets, so each route's
//! `#[utoipa::path]` lists only what is its own (its success and the refusals that
//! depend on what it is asked) and names the shared ones by type.
//!
//! The descriptions here are what the OpenAPI document tells a client; the answers
//! themselves come from `crate::error::Failure`. This module must never grow a
//! refusal that only one route gives.

// The types exist for their OpenAPI schema only; no value of them is ever built.
#![allow(dead_code)]

use maildr_api_types::ErrorBody;
use utoipa::IntoResponses;

/// 401: the route needs the admin token.
#[derive(IntoResponses)]
#[response(status = 401, description = "No or wrong token")]
pub struct Unauthorized(#[to_schema] ErrorBody);

/// 400: the request body is not the JSON the route takes.
#[derive(IntoResponses)]
#[response(status = 400, description = "Not JSON")]
pub struct NotJson(#[to_schema] ErrorBody);

/// 503: a write the cluster did not acknowledge; nothing is known to have changed.
#[derive(IntoResponses)]
#[response(status = 503, description = "Write not acknowledged; retry")]
pub struct NotAcknowledged(#[to_schema] ErrorBody);

/// 503: a control-plane route at a site whose control plane does not run.
#[derive(IntoResponses)]
#[response(status = 503, description = "Control plane not running")]
pub struct ControlPlaneDown(#[to_schema] ErrorBody);
