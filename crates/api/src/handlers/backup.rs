//! Backups on the admin API: list, take, verify, and restore an account's messages
//! (the same operations as `maildr backup` and `maildr restore`).
//!
//! A site whose config has no `[backup]` targets answers 503 naming the cause.
//! This module must never write mail state except through the restore, which goes
//! through the cluster's write path.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use maildr_api_types::backup::{
    BackupList, BackupReport, BackupVerifyReport, RestoreReport, RestoreRequest, VerifyBackupRequest,
};
use maildr_backup::restore::{AccountRestore, Destination};
use maildr_backup::{BackupId, BackupService};
use maildr_types::{EmailAddress, MailboxName};

use super::refusals::{NotJson, Unauthorized};
use crate::error::{ErrorBody, Failure};
use crate::extract::JsonBody;
use crate::ApiState;

fn service(state: &ApiState) -> Result<&std::sync::Arc<BackupService>, Failure> {
    state.backups().ok_or_else(|| {
        Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("site {} takes no backups: its config has no [backup] key_file and targets", state.site()),
        )
    })
}

#[utoipa::path(get, path = "/api/backups", tag = "backup",
    responses((status = 200, description = "Every backup on every target, and the archived log", body = BackupList),
        (status = 503, description = "Backups are not configured on this site", body = ErrorBody),
        Unauthorized))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<BackupList>, Failure> {
    Ok(Json(maildr_backup::catalog::list(service(&state)?.backups()).await))
}

#[utoipa::path(post, path = "/api/backups", tag = "backup",
    responses((status = 200, description = "The backup taken; `ok` is false when a target failed", body = BackupReport),
        (status = 503, description = "Not configured, or the backup could not be taken", body = ErrorBody),
        Unauthorized))]
pub async fn run(State(state): State<ApiState>) -> Result<Json<BackupReport>, Failure> {
    service(&state)?
        .run_now()
        .await
        .map(Json)
        .map_err(|e| Failure::new(StatusCode::SERVICE_UNAVAILABLE, format!("the backup failed: {e}")))
}

#[utoipa::path(post, path = "/api/backups/verify", tag = "backup", request_body = VerifyBackupRequest,
    responses((status = 200, description = "What was checked and every problem found (`ok`)", body = BackupVerifyReport),
        (status = 422, description = "Not a backup id", body = ErrorBody),
        (status = 503, description = "Backups are not configured on this site", body = ErrorBody),
        NotJson, Unauthorized))]
pub async fn verify(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<VerifyBackupRequest>,
) -> Result<Json<BackupVerifyReport>, Failure> {
    let id = match &body.backup {
        Some(text) => Some(
            BackupId::parse(text)
                .ok_or_else(|| Failure::invalid("backup", format!("{text:?} is not a backup id (b-<time>-<index>)")))?,
        ),
        None => None,
    };
    let service = service(&state)?;
    let exe = std::env::current_exe().ok();
    let restore_test = if body.restore_test { exe.as_deref() } else { None };
    let (report, _) = maildr_backup::verify::verify(service.backups(), id.as_ref(), restore_test).await;
    service.record("backup_verify", serde_json::to_value(&report).unwrap_or_default());
    Ok(Json(report))
}

#[utoipa::path(post, path = "/api/restore", tag = "backup", request_body = RestoreRequest,
    responses((status = 200, description = "What was restored, into which new mailboxes", body = RestoreReport),
        (status = 409, description = "Refused: no backup that early, a destination exists, not a cluster", body = ErrorBody),
        (status = 422, description = "A field is not valid", body = ErrorBody),
        (status = 503, description = "Backups are not configured on this site", body = ErrorBody),
        NotJson, Unauthorized))]
pub async fn restore(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<RestoreRequest>,
) -> Result<Json<RestoreReport>, Failure> {
    let invalid = |field: &'static str, why: String| Failure::invalid(field, why);
    let account = EmailAddress::parse(&body.account).map_err(|e| invalid("account", e.to_string()))?;
    let at_ms = match (&body.at, body.at_ms) {
        (Some(at), None) => {
            maildr_backup::parse_moment(at).ok_or_else(|| invalid("at", format!("{at:?} is not an RFC 3339 time")))?
        }
        (None, Some(ms)) => ms,
        _ => return Err(invalid("at", "give the moment as `at` (RFC 3339) or `at_ms`, one of them".into())),
    };
    let mailbox =
        body.mailbox.as_deref().map(MailboxName::parse).transpose().map_err(|e| invalid("mailbox", e.to_string()))?;
    let into = match (&body.into_mailbox, &body.into_account) {
        (Some(_), Some(_)) => {
            return Err(invalid("into_account", "give into_mailbox or into_account, not both".into()))
        }
        (Some(name), None) => {
            Destination::Mailbox(MailboxName::parse(name).map_err(|e| invalid("into_mailbox", e.to_string()))?)
        }
        (None, Some(other)) => {
            Destination::Account(EmailAddress::parse(other).map_err(|e| invalid("into_account", e.to_string()))?)
        }
        (None, None) => Destination::Default,
    };
    let service = service(&state)?;
    let client = state.members().ok_or_else(|| {
        Failure::new(
            StatusCode::CONFLICT,
            "restores into a site alone are made with `maildr restore` while it is stopped",
        )
    })?;
    let scratch = service.backups().work_dir.join(format!("restore-{}", maildr_backup::now_ms()));
    let request = AccountRestore { account, at_ms, mailbox, into };
    let result = maildr_backup::restore::restore_account(service.backups(), client, &request, &scratch).await;
    let _ = tokio::fs::remove_dir_all(&scratch).await;
    match &result {
        Ok(report) => service.record("restore", serde_json::to_value(report).unwrap_or_default()),
        Err(e) => service.record("restore", serde_json::json!({ "ok": false, "error": e.to_string() })),
    }
    result.map(Json).map_err(|e| Failure::new(StatusCode::CONFLICT, format!("the restore failed: {e}")))
}
