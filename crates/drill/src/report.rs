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

/// The outbound queue through a fault (`queue_intact`): what the primary held just
/// before the first fault, and what became of each of those messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAccount {
    /// The site read before the fault (the primary).
    pub before_site: String,
    /// Messages (and their recipients still waiting) queued before the fault.
    pub before_messages: u64,
    pub before_recipients: u64,
    /// The site read after (the primary then).
    pub after_site: String,
    /// Messages the queue held then, in all.
    pub after_messages: u64,
    /// Of the messages queued before the fault, those still queued.
    pub still_queued: u64,
    /// Of the messages queued before the fault, those gone from the queue.
    pub gone: u64,
    /// Messages the store counted as leaving the queue between the two readings
    /// (finished: delivered or bounced to every recipient; deleted by an operator).
    pub counted_as_left: u64,
    /// Gone without being counted as left: lost with the site. Mail queued after
    /// the first reading and gone by the second also counts as left, so this is
    /// a lower bound of what was lost; 0 when nothing was.
    pub unaccounted: u64,
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

impl Environment {
    /// Where this process runs (maildr version, host, OS), with no target yet.
    pub fn here() -> Environment {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        Environment {
            maildr_version: env!("CARGO_PKG_VERSION").to_string(),
            host: read("/etc/hostname").trim().to_string(),
            os,
            ..Environment::default()
        }
    }
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
    /// The outbound queue before and after the fault (a `queue_intact` check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_queue: Option<QueueAccount>,
    /// `tabletop` for a tabletop exercise; absent for a drill that injected
    /// faults (whose report.json keeps the shape it always had).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<DrillMode>,
    /// What a tabletop exercise recorded (with `mode: tabletop` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tabletop: Option<TabletopRecord>,
    /// This drill against the previous drill of its scenario in the archive,
    /// with what got worse; absent for the first drill of a scenario and for a
    /// tabletop exercise (see [`crate::regression`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regressions: Option<crate::regression::Comparison>,
}

impl Report {
    /// Whether the report is of a tabletop exercise (nothing was injected or
    /// measured; the times are the participants').
    pub fn is_tabletop(&self) -> bool {
        self.mode == Some(DrillMode::Tabletop)
    }
}

/// How a drill ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrillMode {
    /// Faults injected into a target, recovery measured by clients (what a
    /// report without `mode` is).
    Live,
    /// Nothing touched: each step presented to people in their roles, their
    /// acknowledgements and decisions timed (`maildr drill run --tabletop`).
    Tabletop,
}

/// Where the times of a tabletop exercise come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExerciseClock {
    /// The participants answered at a terminal; the times are the wall clock's.
    Wall,
    /// The answers came from a file; the times are the ones it states, so the
    /// same file gives the same times.
    Simulated,
}

/// Where a participant was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantSource {
    /// `--participant NAME=ROLE`.
    CommandLine,
    /// The plan's `[[tabletop.participants]]`.
    Plan,
}

/// One person and one role they held in the exercise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    pub name: String,
    pub role: String,
    pub source: ParticipantSource,
}

/// One step as the participants handled it. Times are milliseconds after the
/// exercise started, on its clock (`TabletopRecord::clock`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabletopStep {
    /// The step's index in `steps[]` (1-based, rollback steps after the steps).
    pub index: usize,
    pub phase: Phase,
    pub name: String,
    /// What the step would do in a drill, in words.
    pub description: String,
    pub rollback: bool,
    /// The role responsible for the step (the plan's, or the phase's default).
    pub role: String,
    /// Whether the step needs a decision in words (a `decide` or a manual step).
    pub decision_required: bool,
    /// How long the step may take: a timed wait's `timeout_ms`, otherwise the
    /// plan's `tabletop.ack_within_ms`.
    pub budget_ms: u64,
    /// Whether exceeding the budget fails the step (a timed wait, as it would in
    /// a drill) rather than being a warning.
    pub budget_binding: bool,
    pub presented_ms: u64,
    /// `None`: nobody holding the role acknowledged the step.
    pub acknowledged_ms: Option<u64>,
    pub decided_ms: Option<u64>,
    pub acknowledged_by: Option<String>,
    /// The decision or notes recorded (bounded); empty when none was.
    pub decision: String,
    /// Acknowledged and decided within `budget_ms` of being presented.
    pub within_budget: bool,
}

/// When the exercise reached a recovery phase: the step that ends it (its
/// decision) and the time after the first fault step was presented.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecoveryMark {
    /// The first step after the fault that ends the phase, when the plan has one.
    pub step: Option<usize>,
    /// `None`: the plan has no such step, or it was not acknowledged.
    pub after_fault_ms: Option<u64>,
}

/// The recovery a tabletop exercise walked through, timed by its decisions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabletopRecovery {
    /// The first step that would interrupt service (else the first fault step).
    pub fault_step: Option<usize>,
    /// When it was presented (ms after the exercise started).
    pub fault_presented_ms: Option<u64>,
    /// A `new_primary` or `primary_is` wait decided.
    pub elect: RecoveryMark,
    /// A `dns_follows_primary` wait decided.
    pub dns: RecoveryMark,
    /// A `mail_flows` wait decided: what `rto_smtp_ms` and `rto_imap_ms` judge.
    pub mail: RecoveryMark,
    /// The latest of the three (`rto_total_ms` judges it).
    pub total_ms: Option<u64>,
}

/// What a tabletop exercise recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TabletopRecord {
    pub clock: ExerciseClock,
    /// The answers file, when the answers came from one.
    pub answers_file: Option<String>,
    pub participants: Vec<Participant>,
    pub steps: Vec<TabletopStep>,
    pub recovery: TabletopRecovery,
    /// The plan's objectives a tabletop cannot judge (nothing ran, so no mail
    /// was counted and no latency measured).
    pub not_graded: Vec<String>,
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
