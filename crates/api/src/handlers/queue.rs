//! The outbound queue: list it, make messages due now, remove one. The queue is
//! replicated state, so any site lists the same; changes go through the write
//! path like every admin change.

use axum::http::StatusCode;
use axum::Json;
use maildr_api_types::queue::{
    QueueLeft, QueueList, QueuedMessageView, QueuedRecipientView, RetryReport, RetryRequest,
};
use maildr_store::{Applied, Command, QueueTotals, QueuedMessage};

use super::refusals::{NotAcknowledged, NotJson, Unauthorized};
use crate::error::{ErrorBody, Failure};
use crate::extract::{JsonBody, PathText};
use crate::ApiState;

/// Most messages one listing returns.
pub const QUEUE_LIST_MAX: usize = 10_000;

/// A queued message as the API and `maildr queue list --json` show it.
pub fn view(m: &QueuedMessage) -> QueuedMessageView {
    let rfc3339 =
        |ms: i64| chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339()).unwrap_or_else(|| ms.to_string());
    QueuedMessageView {
        id: m.id,
        from: m.from.as_ref().map(|a| a.to_string()),
        submitted_by: m.submitted_by.as_ref().map(|a| a.to_string()),
        size_bytes: m.body.size_bytes,
        queued_at: rfc3339(m.queued_at_ms),
        next_attempt_at: rfc3339(m.next_attempt_at_ms),
        expires_at: rfc3339(m.expires_at_ms),
        attempts: m.attempts,
        recipients: m
            .recipients
            .iter()
            .map(|r| QueuedRecipientView { address: r.address.to_string(), last_error: r.last_error.clone() })
            .collect(),
    }
}

#[utoipa::path(get, path = "/api/queue", tag = "queue",
    responses((status = 200, description = "The outbound queue (at most 10,000 messages listed)", body = QueueList),
        Unauthorized))]
pub async fn list(state: axum::extract::State<ApiState>) -> Result<Json<QueueList>, Failure> {
    let store = state.cluster().store();
    let (queued, left) = tokio::task::spawn_blocking(move || {
        Ok::<_, maildr_store::StoreError>((store.queued()?, store.queue_totals()?))
    })
    .await
    .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the queue failed: {e}")))?
    .map_err(|e| Failure::store("the queue", e))?;
    let total = queued.len() as u64;
    Ok(Json(QueueList {
        total,
        messages: queued.iter().take(QUEUE_LIST_MAX).map(view).collect(),
        left: left_view(&left),
    }))
}

/// How messages left the queue, as the API shows it.
pub fn left_view(t: &QueueTotals) -> QueueLeft {
    QueueLeft {
        recipients_delivered: t.recipients_delivered,
        recipients_bounced: t.recipients_bounced,
        messages_finished: t.messages_finished,
        messages_deleted: t.messages_deleted,
    }
}

#[utoipa::path(post, path = "/api/queue/retry", tag = "queue", request_body = RetryRequest,
    responses((status = 200, description = "Messages made due now", body = RetryReport),
        (status = 404, description = "No such queued message", body = ErrorBody),
        NotJson, Unauthorized, NotAcknowledged))]
pub async fn retry(
    state: axum::extract::State<ApiState>,
    JsonBody(body): JsonBody<RetryRequest>,
) -> Result<Json<RetryReport>, Failure> {
    let at_ms = chrono::Utc::now().timestamp_millis();
    match state.cluster().write(Command::RetryQueued { id: body.id, at_ms }).await? {
        Applied::QueueRetried { count } => Ok(Json(RetryReport { count: count as u64 })),
        other => Err(Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("unexpected answer {other:?}"))),
    }
}

#[utoipa::path(delete, path = "/api/queue/{id}", tag = "queue",
    params(("id" = u64, Path, description = "The queue id", example = 7)),
    responses((status = 204, description = "Removed without delivery"),
        (status = 404, description = "No such queued message", body = ErrorBody),
        (status = 422, description = "Not a queue id", body = ErrorBody),
        Unauthorized, NotAcknowledged))]
pub async fn remove(state: axum::extract::State<ApiState>, PathText(id): PathText) -> Result<StatusCode, Failure> {
    let id: u64 = id.parse().map_err(|_| Failure::invalid("id", format!("{id:?} is not a queue id")))?;
    state.cluster().write(Command::RemoveQueued { id }).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The queue's size and age for `/metrics`.
pub fn render_metrics(queued: &[QueuedMessage], left: &QueueTotals, now_ms: i64) -> String {
    let recipients: usize = queued.iter().map(|m| m.recipients.len()).sum();
    let oldest = queued.iter().map(|m| m.queued_at_ms).min().map_or(0.0, |at| (now_ms - at).max(0) as f64 / 1000.0);
    let deferred = queued.iter().filter(|m| m.attempts > 0).count();
    format!(
        "# HELP maildr_outbound_queue_messages Messages in the outbound queue.\n\
         # TYPE maildr_outbound_queue_messages gauge\nmaildr_outbound_queue_messages {}\n\
         # HELP maildr_outbound_queue_recipients Recipients still waiting in the outbound queue.\n\
         # TYPE maildr_outbound_queue_recipients gauge\nmaildr_outbound_queue_recipients {recipients}\n\
         # HELP maildr_outbound_queue_deferred_messages Queued messages tried at least once.\n\
         # TYPE maildr_outbound_queue_deferred_messages gauge\nmaildr_outbound_queue_deferred_messages {deferred}\n\
         # HELP maildr_outbound_queue_oldest_age_seconds Age of the oldest queued message (0: empty).\n\
         # TYPE maildr_outbound_queue_oldest_age_seconds gauge\nmaildr_outbound_queue_oldest_age_seconds {oldest}\n\
         # HELP maildr_outbound_recipients_total Recipients that left the outbound queue, by outcome.\n\
         # TYPE maildr_outbound_recipients_total counter\n\
         maildr_outbound_recipients_total{{outcome=\"delivered\"}} {}\n\
         maildr_outbound_recipients_total{{outcome=\"bounced\"}} {}\n\
         # HELP maildr_outbound_messages_left_total Messages that left the outbound queue, by how.\n\
         # TYPE maildr_outbound_messages_left_total counter\n\
         maildr_outbound_messages_left_total{{how=\"finished\"}} {}\n\
         maildr_outbound_messages_left_total{{how=\"deleted\"}} {}\n",
        queued.len(),
        left.recipients_delivered,
        left.recipients_bounced,
        left.messages_finished,
        left.messages_deleted,
    )
}
