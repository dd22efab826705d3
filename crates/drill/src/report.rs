//! The drill report: what happened, measured from the clients' side, judged
//! against the plan's objectives. `report.json` is this structure serialised; the
//! Markdown and HTML renderings (`render`) are views of the same value, so the
//! three never disagree.
//!
//! Times are milliseconds since the Unix epoch (`*_at_ms`) or durations from the
//! first fault (`*_ms` inside [`Rto`]); every field is named with its unit.

use serde::{Deserialize, Serialize};

use crate::plan::Phase;

/// The outcome of a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every objective met, every check passed.
    Passed,
    /// The drill ran to the end but an objective or check failed.
    Failed,
    /// An abort condition, an operator (Ctrl-C) or an error stopped the drill early;
    /// the rollback ran.
    Aborted,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Passed => "passed",
            Verdict::Failed => "failed",
            Verdict::Aborted => "aborted",
        }
    }
}

/// One objective of the plan with what was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveResult {
    /// The plan's key (`rto_smtp_ms`, `rpo_messages`, ...).
    pub name: String,
    pub target: u64,
    /// `None` when the drill could not measure it (which fails the objective).
    pub measured: Option<u64>,
    pub unit: String,
    pub met: bool,
}

/// Recovery time, broken into phases; each is milliseconds from the first fault
/// (`fault_at_ms`) to the moment the phase was seen, `None` when it never was (or
/// was not needed: a service that never failed has no recovery to measure, and
/// its `first_*` is the first success after the fault).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rto {
    /// When the first fault was injected (epoch ms).
    pub fault_at_ms: Option<u64>,
    /// The control plane judged a site down (`detected` event).
    pub detect_ms: Option<u64>,
    /// A new primary was elected (`elected` event).
    pub elect_ms: Option<u64>,
    /// The DNS change was committed (`dns_committed` event).
    pub dns_committed_ms: Option<u64>,
    /// A surviving DNS server served it (`dns_served` event).
    pub dns_served_ms: Option<u64>,
    /// First SMTP 250 through the MX once service had been lost.
    pub first_smtp_ok_ms: Option<u64>,
    /// First IMAP fetch through `mail.` once service had been lost.
    pub first_imap_ok_ms: Option<u64>,
    /// The latest of the phases above.
    pub total_ms: Option<u64>,
}

/// Recovery point: acknowledged mail against mail found afterwards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rpo {
    /// Messages a site answered 250 to.
    pub acknowledged: u64,
    /// Acknowledged messages found on every surviving data site.
    pub found: u64,
    /// Acknowledged messages missing on at least one surviving data site.
    pub lost: u64,
    /// Acknowledged messages present more than once in a mailbox.
    pub duplicated: u64,
    /// Messages that got a 4xx at least once (the sender's retry covers them).
    pub deferred: u64,
    /// Messages refused with 5xx.
    pub refused: u64,
    /// Messages never acknowledged within the retry time.
    pub given_up: u64,
    /// Tags of the lost messages (bounded), the evidence for a finding.
    pub lost_tags: Vec<String>,
    /// The data sites the reconciliation read.
    pub reconciled_at: Vec<String>,
    /// Acknowledged messages the surviving sites lacked when a check read them
    /// during the outage (`no_acknowledged_loss`), the most any such check found;
    /// absent when no check ran. Mail that comes back only once the failed site
    /// returns is lost for as long as it is away: the RPO objective counts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing_during_outage: Option<u64>,
}

/// The longest interruption one protocol saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceGap {
    pub protocol: Protocol,
    /// Longest time between two successes with failures in between (0: no failure).
    pub longest_ms: u64,
    pub from_at_ms: Option<u64>,
    pub to_at_ms: Option<u64>,
}

/// What a probe speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Mail to the domain's MX, as another MTA sends it.
    Smtp,
    /// Mail submitted with AUTH through `mail.`.
    Submission,
    /// Login and fetch through `mail.`.
    Imap,
    /// Questions to each DNS server of the target.
    Dns,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::Smtp, Protocol::Submission, Protocol::Imap, Protocol::Dns];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Smtp => "smtp",
            Protocol::Submission => "submission",
            Protocol::Imap => "imap",
            Protocol::Dns => "dns",
        }
    }
}

/// How one probe exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeOutcome {
    /// 250 / OK / an answer.
    Ok,
    /// A 4xx (or IMAP NO/BAD): try again later.
    Deferred,
    /// A 5xx: refused for good.
    Refused,
    /// Nothing within the deadline.
    Timeout,
    /// No connection (refused, reset, no address to connect to).
    Unreachable,
}

impl ProbeOutcome {
    pub fn is_ok(self) -> bool {
        self == ProbeOutcome::Ok
    }
}

/// One probe exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSample {
    pub at_ms: u64,
    pub protocol: Protocol,
    /// The site or server it reached (`bj`, `sh`, an address).
    pub target: String,
    pub outcome: ProbeOutcome,
    /// The exchange itself, from connect to the answer (name lookup not included).
    pub latency_ms: u64,
    /// The client's own name lookup before the exchange (absent where none was made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_ms: Option<u64>,
    /// The reply or error text (bounded).
    pub detail: String,
}

/// Counts per protocol, and every sample for the charts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSummary {
    pub counts: Vec<ProbeCount>,
    pub samples: Vec<ProbeSample>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeCount {
    pub protocol: Protocol,
    pub ok: u64,
    pub failed: u64,
    pub p50_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// Where a timeline entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The drill engine itself (steps, faults, checks).
    Drill,
    /// The target's event log (`/api/events`).
    Cluster,
    /// A client probe (first failure, first recovery).
    Probe,
}

/// One timestamped thing that happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub at_ms: u64,
    pub phase: Option<Phase>,
    pub source: Source,
    /// Short machine word: `fault`, `restore`, `wait_done`, `elected`, `smtp_down`, ...
    pub kind: String,
    pub detail: String,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepOutcome {
    Done,
    Failed,
    /// Not run: the drill was aborted before it.
    Skipped,
}

/// One plan step as it ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    /// 1-based, rollback steps numbered after the steps.
    pub index: usize,
    pub phase: Phase,
    pub name: String,
    /// What the step does, in words.
    pub description: String,
    pub rollback: bool,
    pub started_at_ms: Option<u64>,
    pub finished_at_ms: Option<u64>,
    pub outcome: StepOutcome,
    pub detail: String,
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// An objective missed, mail lost, a check failed.
    Critical,
    /// Something to look at that did not fail the drill.
    Warning,
}

/// A failed check or objective, with the evidence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub severity: Severity,
    pub phase: Option<Phase>,
    pub title: String,
    pub evidence: String,
}

/// A recorded approval of this exact plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    pub by: String,
    pub at_ms: u64,
    pub plan_sha256: String,
}

/// Where and with what the drill ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// `lab` or `deployment`.
    pub target: String,
    /// The lab directory or deployment file.
    pub target_location: String,
    pub domain: String,
    pub sites: Vec<SiteInfo>,
    pub maildr_version: String,
    pub host: String,
    pub os: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteInfo {
    pub name: String,
    pub role: String,
    pub address: String,
}

/// The plan the report is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanInfo {
    pub name: String,
    pub description: String,
    /// Library name or file path.
    pub origin: String,
    pub sha256: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Unique id of this drill run (`<utc timestamp>-<plan name>`).
    pub drill_id: String,
    pub plan: PlanInfo,
    pub verdict: Verdict,
    /// Why the drill was aborted, when it was.
    pub abort_reason: Option<String>,
    pub started_at_ms: u64,
    pub finished_at_ms: u64,
    pub objectives: Vec<ObjectiveResult>,
    pub rto: Rto,
    pub rpo: Rpo,
    pub gaps: Vec<ServiceGap>,
    pub steps: Vec<StepResult>,
    pub timeline: Vec<TimelineEntry>,
    pub probes: ProbeSummary,
    pub findings: Vec<Finding>,
    pub approvals: Vec<Approval>,
    /// Who confirmed the manual steps (`step index: name`).
    pub confirmations: Vec<String>,
    pub environment: Environment,
    /// The client load and what it got before, during and after the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadReport>,
}

/// The load the drill put on the deployment, and what it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The plan's `[load]`.
    pub profile: crate::plan::LoadProfile,
    /// Before the first fault, during the outage (fault to recovery), and after.
    pub windows: Vec<LoadWindow>,
    pub idle: IdleSummary,
}

/// Which part of the drill a window covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowName {
    /// From the start to the first fault.
    Before,
    /// From the fault to the recovery (the latest of the first SMTP and IMAP
    /// successes after it).
    During,
    /// From the recovery to the end.
    After,
}

/// One window of the drill: throughput and latency per mail flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadWindow {
    pub window: WindowName,
    pub from_ms: u64,
    pub to_ms: u64,
    pub flows: Vec<FlowWindow>,
}

/// One mail flow in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowWindow {
    pub protocol: Protocol,
    /// Messages acknowledged (250) in the window, and per second.
    pub acknowledged: u64,
    pub per_second: f64,
    /// Attempts that did not end in a 250 or 5xx.
    pub failed_attempts: u64,
    /// Latency of the acknowledged attempts (connect to 250).
    pub p50_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

/// The IMAP sessions held open with IDLE.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleSummary {
    pub sessions: u32,
    /// New-message notifications (`EXISTS`) pushed to them.
    pub pushes: u64,
    /// Times a session lost its site (connect, login or IDLE failed).
    pub failures: u64,
    /// Times a session got back in after losing its site.
    pub reconnects: u64,
    /// The longest a session was without a site.
    pub longest_reconnect_ms: u64,
    /// The last failure's text (bounded).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_error: String,
}
