//! The drill service (`maildr drill serve`): a long-running process outside the
//! deployment that keeps the drill calendar, runs due drills, tells people
//! before, at the start, at each phase and at the end, enforces roles and approvals, and keeps
//! history and trends, behind an HTTP API described by OpenAPI.
//!
//! - `model`: the API's contract (requests, answers, records).
//! - `state`: the state file (people, schedules, approvals, runs), written atomically.
//! - `calendar`: the pure decisions (what is due, run or skip and why).
//! - `child`: a drill as a child process, the phases it enters (its progress
//!   file), and its outcome from its report.
//! - `notify`: webhook (generic, DingTalk, Feishu, WeCom, Slack; http and https)
//!   and e-mail notices.
//! - `history`: RTO phases and RPO over time, regressions, the trend page.
//! - `service`: the operations, each checked against the caller's role and
//!   written to the drill audit log naming the person; the scheduler loop.
//! - `api`: the HTTP routes and the OpenAPI document.
//!
//! Never: run a drill inside this process (it must survive the faults it
//! injects: drills are child processes, known by pid), keep a token (only its
//! SHA-256), run a due drill late, or change anything for a caller whose role
//! does not allow it.

pub mod api;
pub mod calendar;
pub mod child;
pub mod history;
pub mod model;
pub mod notify;
pub mod service;
pub mod state;

pub use service::{Config, Service};

/// Audit records `GET /audit` shows.
pub const AUDIT_TAIL_RECORDS: usize = 200;

/// Milliseconds since the Unix epoch, from the system clock (the one place the
/// service reads it; the calendar's decisions take the time as an argument).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
