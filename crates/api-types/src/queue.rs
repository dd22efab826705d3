//! The outbound queue as the admin API and `maildr queue list --json` show it
//! (keep these fields stable: scripts read them).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The queue: the messages listed (by queue id) and how many it holds in all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    pub total: u64,
    pub messages: Vec<QueuedMessageView>,
    /// How messages and recipients have left the queue since the store began
    /// (replicated: the same on every site).
    #[serde(default)]
    pub left: QueueLeft,
}

/// How messages and recipients left the outbound queue, counted since the store
/// began: a message gone from the queue is in one of the message counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueueLeft {
    /// Recipients the remote side accepted.
    pub recipients_delivered: u64,
    /// Recipients refused for good or expired (each with a notification).
    pub recipients_bounced: u64,
    /// Messages that left because no recipient was still waiting.
    pub messages_finished: u64,
    /// Messages an operator deleted.
    pub messages_deleted: u64,
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueuedMessageView {
    pub id: u64,
    /// The reverse path; `None` for `<>`.
    pub from: Option<String>,
    /// The submitting account (delivery status notifications go to it).
    pub submitted_by: Option<String>,
    pub size_bytes: u64,
    /// RFC 3339.
    pub queued_at: String,
    pub next_attempt_at: String,
    pub expires_at: String,
    pub attempts: u32,
    /// Recipients still waiting.
    pub recipients: Vec<QueuedRecipientView>,
}

/// A recipient still waiting, with the last temporary failure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QueuedRecipientView {
    pub address: String,
    pub last_error: Option<String>,
}

/// Make one queued message (or every one, without `id`) due now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    pub id: Option<u64>,
}

/// How many messages were made due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RetryReport {
    pub count: u64,
}
