//! Forwarded writes: a data site that is not primary sends its client's command to the
//! primary, which commits it and answers with the entry's log index.
//!
//! This is the write path's own conversation (`replicated/write.rs` sends and answers
//! it). A forwarded write is sent at most once per attempt: it must never be retried
//! blindly on another connection, since the first may have committed.

use maildr_store::{Applied, CommandError};
use serde::{Deserialize, Serialize};

use crate::raft::NodeId;

/// A write committed by the primary on behalf of another site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedWrite {
    /// Log index of the entry; the forwarding site waits until it has applied it.
    pub log_index: u64,
    pub outcome: Result<Applied, CommandError>,
}

/// Why the primary did not commit a forwarded write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the primary (any more); it names the one it knows.
    NotPrimary { primary: Option<NodeId> },
    /// The primary could not commit in time (no quorum, shutting down).
    Unavailable(String),
}
