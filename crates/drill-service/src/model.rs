//! The service's API contract: every request and response body, shared by the
//! server (`api`) and the command line (`maildr drill schedule|user|runs`), and
//! the records kept in the state file. The JSON shape is what scripts read:
//! change a field name only with care.

use maildr_drill::plan::Phase;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a person may do. Each person has exactly one role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads schedules, runs, history and trends.
    Viewer,
    /// Adds and removes schedules, starts a drill now, stops and releases drills.
    Operator,
    /// Approves a schedule's next run (approvals count per distinct approver).
    Approver,
    /// Reads everything and the audit log.
    Auditor,
    /// Manages people; everything an operator does; reads the audit log. Never
    /// approves (approvals come from approvers only).
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Operator, Role::Approver, Role::Auditor, Role::Admin];

    pub fn word(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.word() == s)
            .ok_or_else(|| format!("unknown role {s:?}: one of viewer, operator, approver, auditor, admin"))
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// A person as the API shows them (never their token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PersonView {
    pub name: String,
    pub role: Role,
    pub created_at_ms: u64,
}

/// `POST /users`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPerson {
    pub name: String,
    pub role: Role,
}

/// The answer to `POST /users`: the only time the token is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NewPersonAnswer {
    pub name: String,
    pub role: Role,
    pub token: String,
}

/// `GET /whoami`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// A time window in which no scheduled drill runs (epoch ms, end excluded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Blackout {
    pub start_ms: u64,
    pub end_ms: u64,
}

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A generic JSON webhook (POST of the event as JSON).
    Webhook,
    Dingtalk,
    Feishu,
    Wecom,
    Slack,
    /// E-mail through the service's SMTP relay.
    Email,
}

impl Channel {
    pub const ALL: [Channel; 6] =
        [Channel::Webhook, Channel::Dingtalk, Channel::Feishu, Channel::Wecom, Channel::Slack, Channel::Email];

    pub fn word(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Dingtalk => "dingtalk",
            Channel::Feishu => "feishu",
            Channel::Wecom => "wecom",
            Channel::Slack => "slack",
            Channel::Email => "email",
        }
    }
}

/// One notification target: `webhook=URL`, `email=ADDR`, ...
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct NotifyTarget {
    pub channel: Channel,
    /// A URL (`http://` or `https://host:port/path?query`) or, for e-mail, an address.
    pub to: String,
}

/// `POST /schedules`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSchedule {
    /// A scenario name from the library or a plan file path (as the service sees it).
    pub scenario: String,
    /// Cron expression, UTC, with or without a seconds field (`0 0 3 1 */3 *`: quarterly).
    pub cron: String,
    /// The lab to drill (`drill run --lab-dir`); default the drill's own default.
    #[serde(default)]
    pub lab_dir: Option<String>,
    /// Addresses of a lab the drill starts itself (`drill run --net`).
    #[serde(default)]
    pub net: Option<String>,
    #[serde(default)]
    pub blackouts: Vec<Blackout>,
    #[serde(default)]
    pub notify: Vec<NotifyTarget>,
    /// Approvals from distinct approvers each run needs (0: none).
    #[serde(default)]
    pub approvals: u32,
    /// Seconds before each run that the targets are told it is coming (0: not told).
    #[serde(default)]
    pub notify_before_secs: u64,
}

/// A schedule as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Schedule {
    pub id: String,
    pub scenario: String,
    pub cron: String,
    pub lab_dir: Option<String>,
    pub net: Option<String>,
    pub blackouts: Vec<Blackout>,
    pub notify: Vec<NotifyTarget>,
    pub approvals: u32,
    pub notify_before_secs: u64,
    pub created_by: String,
    pub created_at_ms: u64,
    /// The next time it is due (epoch ms), when there is one.
    #[serde(default)]
    pub next_due_at_ms: Option<u64>,
}

/// One approval of one run of a schedule (the run due at `due_at_ms`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ApprovalRecord {
    pub schedule_id: String,
    pub due_at_ms: u64,
    pub by: String,
    pub at_ms: u64,
}

/// The answer to `POST /schedules/{id}/approvals`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApprovalAnswer {
    pub schedule_id: String,
    /// The run approved: the schedule's next one.
    pub due_at_ms: u64,
    /// Every distinct approver of that run so far.
    pub approved_by: Vec<String>,
    pub required: u32,
}

/// How a run ended (or that it did not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunVerdict {
    /// The drill process is still running.
    Running,
    Passed,
    Failed,
    Aborted,
    /// Not run: see `reason`.
    Skipped,
}

impl RunVerdict {
    pub fn word(self) -> &'static str {
        match self {
            RunVerdict::Running => "running",
            RunVerdict::Passed => "passed",
            RunVerdict::Failed => "failed",
            RunVerdict::Aborted => "aborted",
            RunVerdict::Skipped => "skipped",
        }
    }
}

/// Why a due run was skipped (the `reason` of a skipped run).
pub mod skip {
    /// The service was not running at the due time; never run late.
    pub const MISSED: &str = "missed";
    /// The due time fell in a blackout window.
    pub const BLACKOUT: &str = "blackout";
    /// Fewer distinct approvals than the schedule requires.
    pub const NO_APPROVALS: &str = "no_approvals";
    /// A global stop was in force.
    pub const STOPPED: &str = "stopped";
    /// Another drill was running.
    pub const BUSY: &str = "busy";
}

/// What happened to one notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delivery {
    /// `upcoming`, `started`, `phase`, `finished`, `aborted` or `skipped`.
    pub event: String,
    /// For a `phase` event, the phase the run entered (`confirm`, `decide`,
    /// `prepare`, `dns`, `verify`, `review`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub phase: Option<Phase>,
    pub channel: Channel,
    /// The target without its query string (webhook URLs carry secrets there).
    pub to: String,
    pub at_ms: u64,
    pub ok: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// One run the service started or skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RunRecord {
    pub id: String,
    pub scenario: String,
    /// The schedule that made it due; `None` for a run started by hand.
    pub schedule_id: Option<String>,
    /// When it was due (scheduled runs) or asked for (runs started by hand).
    pub due_at_ms: u64,
    pub verdict: RunVerdict,
    /// A skipped run's reason (see [`skip`]), or an aborted or failed drill's cause.
    pub reason: Option<String>,
    /// More words on the reason.
    #[serde(default)]
    pub detail: Option<String>,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    /// The drill's report.html (the directory also holds report.json).
    pub report_path: Option<String>,
    /// The drill engine's id of the drill (its archive directory name).
    #[serde(default)]
    pub drill_id: Option<String>,
    /// The drill process, while it runs.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Who started it: a person, or `schedule` for the calendar.
    pub started_by: String,
    pub notifications: Vec<Delivery>,
}

/// `POST /runs`: start a scenario now.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    pub scenario: String,
    #[serde(default)]
    pub lab_dir: Option<String>,
    #[serde(default)]
    pub net: Option<String>,
    #[serde(default)]
    pub notify: Vec<NotifyTarget>,
}

/// `POST /stop`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopRequest {
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to `POST /stop` and `POST /release`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StopState {
    pub stopped: bool,
    pub by: Option<String>,
    pub reason: Option<String>,
}

/// One drill's figures in `GET /history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPoint {
    pub drill_id: String,
    pub verdict: String,
    pub started_at_ms: u64,
    pub rto_detect_ms: Option<u64>,
    pub rto_elect_ms: Option<u64>,
    pub rto_dns_committed_ms: Option<u64>,
    pub rto_dns_served_ms: Option<u64>,
    pub rto_first_smtp_ok_ms: Option<u64>,
    pub rto_first_imap_ok_ms: Option<u64>,
    pub rto_total_ms: Option<u64>,
    pub rpo_acknowledged: u64,
    pub rpo_lost: u64,
    /// What got worse against the previous drill of the scenario.
    pub regressions: Vec<String>,
    pub report_dir: String,
}

/// Every drill of one scenario, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ScenarioHistory {
    pub scenario: String,
    pub runs: Vec<HistoryPoint>,
}

/// `GET /history`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HistoryView {
    pub scenarios: Vec<ScenarioHistory>,
    /// Archive entries that could not be read, with the reason.
    pub unreadable: Vec<String>,
}

/// `GET /audit`: the audit log's check and its newest records.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AuditView {
    pub records: u64,
    pub head: String,
    /// The newest records (at most [`crate::AUDIT_TAIL_RECORDS`]), oldest first.
    #[schema(value_type = Vec<Object>)]
    pub tail: Vec<serde_json::Value>,
}

/// Every error answer: `{"error": ..}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}
