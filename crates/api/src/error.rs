//! Every 4xx and 5xx answer of the API: one JSON shape, `{"error": …, "field": …}`.
//!
//! Handlers turn what went wrong (a bad body, a refusal of the state, an unavailable
//! write path) into a [`Failure`] here, so the status codes follow one rule across
//! the API. This module must never answer with a body that is not JSON, and never
//! put a secret (token, password) into a message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maildr_cluster::ops::OpsError;
use maildr_cluster::WriteError;
use maildr_store::{CommandError, StoreError};

/// Seconds a client is asked to wait before retrying an unavailable write.
pub const RETRY_AFTER_SECONDS: u64 = 2;

pub use maildr_api_types::ErrorBody;

/// An error answer on its way out.
#[derive(Debug)]
pub struct Failure {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
    retry_after_s: Option<u64>,
    challenge: bool,
}

impl Failure {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Failure {
        Failure { status, error: error.into(), field: None, retry_after_s: None, challenge: false }
    }

    /// 400: the request cannot be read at all (not JSON, not UTF-8).
    pub fn bad_request(error: impl Into<String>) -> Failure {
        Failure::new(StatusCode::BAD_REQUEST, error)
    }

    /// 422: the request is readable but a value in it is not acceptable.
    pub fn invalid(field: &str, error: impl Into<String>) -> Failure {
        Failure::new(StatusCode::UNPROCESSABLE_ENTITY, error).at(field)
    }

    /// 503 with `Retry-After`: nothing was done; try again later.
    pub fn unavailable(error: impl Into<String>) -> Failure {
        Failure { retry_after_s: Some(RETRY_AFTER_SECONDS), ..Failure::new(StatusCode::SERVICE_UNAVAILABLE, error) }
    }

    /// 401 with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(error: impl Into<String>) -> Failure {
        Failure { challenge: true, ..Failure::new(StatusCode::UNAUTHORIZED, error) }
    }

    /// 500: the site's own storage failed; the message names what was being read.
    pub fn store(what: &str, e: StoreError) -> Failure {
        tracing::error!(error = %e, what, "admin API read failed");
        Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {what} failed: {e}"))
    }

    /// Name the request field at fault.
    pub fn at(mut self, field: &str) -> Failure {
        self.field = Some(field.to_string());
        self
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(ErrorBody { error: self.error, field: self.field })).into_response();
        if let Some(s) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// What the state's refusal means for the client: the thing named does not exist
/// (404), or it conflicts with what exists (409).
pub fn refusal_status(e: &CommandError) -> StatusCode {
    match e {
        CommandError::DomainUnknown(_)
        | CommandError::AccountUnknown(_)
        | CommandError::AliasUnknown(_)
        | CommandError::AliasTargetUnknown { .. }
        | CommandError::MailboxUnknown(_)
        | CommandError::QueuedUnknown(_)
        | CommandError::NotQueuedFor { .. } => StatusCode::NOT_FOUND,
        CommandError::DomainExists(_)
        | CommandError::DomainNotEmpty { .. }
        | CommandError::AccountExists(_)
        | CommandError::AddressIsAlias(_)
        | CommandError::AddressIsAccount(_)
        | CommandError::AliasTargetNotLocal(_)
        | CommandError::AliasTargetExists { .. }
        | CommandError::OverQuota(_)
        | CommandError::NoRecipients
        | CommandError::MailboxExists(_)
        | CommandError::InboxUndeletable
        | CommandError::RenameIntoSelf
        | CommandError::RemoteIsLocal(_)
        | CommandError::BadDkimSelector(_) => StatusCode::CONFLICT,
    }
}

impl From<WriteError> for Failure {
    fn from(e: WriteError) -> Failure {
        match e {
            WriteError::Refused(refusal) => Failure::new(refusal_status(&refusal), refusal.to_string()),
            WriteError::Unavailable(why) => Failure::unavailable(format!("write not acknowledged: {why}")),
        }
    }
}

impl From<OpsError> for Failure {
    fn from(e: OpsError) -> Failure {
        let message = e.to_string();
        match e {
            OpsError::NotACluster(_)
            | OpsError::NotADataSite { .. }
            | OpsError::Refused { .. }
            | OpsError::PrimaryNotConfigured(_)
            | OpsError::AlreadyPromoted { .. }
            | OpsError::PrimaryAlive { .. }
            | OpsError::QuorumAlive { .. } => Failure::new(StatusCode::CONFLICT, message),
            OpsError::UnknownMember { .. } | OpsError::NotAStandby { .. } => Failure::invalid("to", message),
            OpsError::NotLagged { .. } => Failure::invalid("site", message),
            OpsError::NoOperator => Failure::invalid("by", message),
            OpsError::DataLossNotAccepted { .. } => Failure::bad_request(message).at("accept_data_loss"),
            OpsError::NoPrimary
            | OpsError::Unreachable(_)
            | OpsError::TooFewSites(_)
            | OpsError::KeptApplying(_)
            | OpsError::Starting(_)
            | OpsError::NotPromoted { .. } => Failure::unavailable(message),
            OpsError::Unexpected { .. } => Failure::new(StatusCode::BAD_GATEWAY, message),
            // This site's own certificate files: nothing the caller can change.
            OpsError::Certificates(_) => Failure::new(StatusCode::INTERNAL_SERVER_ERROR, message),
        }
    }
}
