//! The drill plan: a TOML file that says what to break, what to wait for, what to
//! check, and which objectives the deployment must meet. `docs/drills.md`
//! documents every field.
//!
//! Plans are parsed into typed values here, once: a step is exactly one of a fault
//! action, a wait, a verification or a manual confirmation, and every site it names
//! is a [`SiteRef`] resolved against the target when the drill starts. A plan that
//! parses is runnable; nothing downstream re-checks strings. The plan's identity
//! for approvals is the SHA-256 of its exact bytes ([`PlanSource::sha256`]).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::readiness::ReadinessPolicy;
use crate::render::Lang;

/// Most steps one plan may have (steps plus rollback steps).
pub const STEPS_MAX: usize = 64;
/// Longest a single wait may be configured to take.
pub const WAIT_TIMEOUT_MS_MAX: u64 = 30 * 60 * 1000;
/// Longest a whole drill may run before it is aborted.
pub const DRILL_DURATION_MS_MAX: u64 = 4 * 60 * 60 * 1000;
/// Shortest probe interval accepted (bounds the synthetic load).
pub const PROBE_INTERVAL_MS_MIN: u64 = 50;

/// The six phases of the switchover runbook. Steps carry one as a label, and the
/// report is organised by them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Event confirmation and notification: monitoring sees it, owners are told.
    Confirm,
    /// Decision and start of the switchover.
    Decide,
    /// Resource preparation and synchronisation.
    Prepare,
    /// DNS change: the domain's records point at the surviving site.
    Dns,
    /// Service verification and user notification.
    Verify,
    /// Review and archive: restore, fail back, verify the data, write the report.
    Review,
}

impl Phase {
    pub const ALL: [Phase; 6] =
        [Phase::Confirm, Phase::Decide, Phase::Prepare, Phase::Dns, Phase::Verify, Phase::Review];

    /// The runbook's name for the phase, for reports.
    pub fn title(self) -> &'static str {
        match self {
            Phase::Confirm => "1. Event confirmation and notification",
            Phase::Decide => "2. Decision and start of the switchover",
            Phase::Prepare => "3. Resource preparation and synchronisation",
            Phase::Dns => "4. DNS change",
            Phase::Verify => "5. Service verification and user notification",
            Phase::Review => "6. Review and archive",
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Phase::Confirm => "confirm",
            Phase::Decide => "decide",
            Phase::Prepare => "prepare",
            Phase::Dns => "dns",
            Phase::Verify => "verify",
            Phase::Review => "review",
        }
    }
}

/// A site as a plan names it: by name, or by the part it played when the drill
/// started (resolved once, at the start, so "primary" keeps meaning the site that
/// was primary even after it failed over).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SiteRef {
    /// The primary when the drill started.
    Primary,
    /// The other data site when the drill started.
    Secondary,
    /// The witness.
    Witness,
    Named(String),
}

impl TryFrom<String> for SiteRef {
    type Error = String;
    fn try_from(s: String) -> Result<SiteRef, String> {
        Ok(match s.as_str() {
            "primary" => SiteRef::Primary,
            "secondary" => SiteRef::Secondary,
            "witness" => SiteRef::Witness,
            "" => return Err("a site name is empty".into()),
            n if n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => SiteRef::Named(n.to_string()),
            n => return Err(format!("{n:?} is not a site name (letters, digits, '-') nor primary/secondary/witness")),
        })
    }
}

impl From<SiteRef> for String {
    fn from(s: SiteRef) -> String {
        s.to_string()
    }
}

impl fmt::Display for SiteRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SiteRef::Primary => f.write_str("primary"),
            SiteRef::Secondary => f.write_str("secondary"),
            SiteRef::Witness => f.write_str("witness"),
            SiteRef::Named(n) => f.write_str(n),
        }
    }
}

/// One service of a site that can be stopped alone: the admin API's own
/// [`maildr_api_types::Service`] (`smtp`, `submission`, `imap`, `dns`), so a plan
/// names services exactly as the fault hooks do.
pub use maildr_api_types::Service;

/// A fault injected into the target, or the operation that undoes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// SIGKILL the site's process: the whole site is down, DNS included.
    KillSite { site: SiteRef },
    /// SIGSTOP the site: its sockets stay open but nothing answers.
    PauseSite { site: SiteRef },
    /// Stop one service of a site (its listener closes); the rest keeps running.
    StopService { site: SiteRef, service: Service },
    /// The site's DNS server alone is down.
    DnsDown { site: SiteRef },
    /// Cut every replication link to and from the site (both directions).
    Partition { site: SiteRef },
    /// Add latency, jitter and loss to the links between two sites (both directions).
    DegradeLink {
        between: [SiteRef; 2],
        latency_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        loss_percent: u8,
    },
    /// Undo every fault on the site (start it if killed, resume it if paused, start
    /// its stopped services, heal its links); without a site, on every site.
    Restore {
        #[serde(default)]
        site: Option<SiteRef>,
    },
    /// Planned switchover of the primary role to a data site.
    Switchover { to: SiteRef },
    /// Switch the primary role back to the site that was primary when the drill
    /// started, once it has caught up.
    Failback,
    /// Take a backup now, through the primary's admin API (`POST /api/backups`);
    /// the deployment must have `[backup]` targets (`lab up --backup`).
    TakeBackup,
    /// A compromised client of the account the MX flow delivers to: it deletes
    /// every message its INBOX holds and appends `forged` messages in their place.
    /// The moment just before its first change is kept for the restore.
    Tamper {
        #[serde(default = "default_forged")]
        forged: u32,
    },
    /// Restore that account's INBOX from backups to the moment just before the
    /// tamper (`POST /api/restore`), into a new mailbox; the restore's duration is
    /// its RTO.
    RestoreFromBackup,
}

fn default_forged() -> u32 {
    5
}

impl FaultAction {
    /// Every site the action names, for validation against the target.
    pub fn sites(&self) -> Vec<&SiteRef> {
        match self {
            FaultAction::KillSite { site }
            | FaultAction::PauseSite { site }
            | FaultAction::StopService { site, .. }
            | FaultAction::DnsDown { site }
            | FaultAction::Partition { site } => vec![site],
            FaultAction::DegradeLink { between, .. } => between.iter().collect(),
            FaultAction::Restore { site } => site.iter().collect(),
            FaultAction::Switchover { to } => vec![to],
            FaultAction::Failback
            | FaultAction::TakeBackup
            | FaultAction::Tamper { .. }
            | FaultAction::RestoreFromBackup => vec![],
        }
    }

    /// Whether this action breaks something (the first one marks the fault time
    /// that RTO is measured from).
    pub fn is_fault(&self) -> bool {
        !matches!(
            self,
            FaultAction::Restore { .. }
                | FaultAction::Failback
                | FaultAction::TakeBackup
                | FaultAction::RestoreFromBackup
        )
    }

    /// The site the action takes out of the cluster (killed, paused or cut off),
    /// for the readiness gate.
    pub fn takes_out(&self) -> Option<&SiteRef> {
        match self {
            FaultAction::KillSite { site } | FaultAction::PauseSite { site } | FaultAction::Partition { site } => {
                Some(site)
            }
            _ => None,
        }
    }

    /// Whether the action needs backups on the target.
    pub fn needs_backups(&self) -> bool {
        matches!(self, FaultAction::TakeBackup | FaultAction::RestoreFromBackup)
    }

    /// Whether this fault interrupts service (RTO is measured from the first
    /// such fault; a degraded link slows service but does not stop it).
    pub fn starts_outage(&self) -> bool {
        self.is_fault() && !matches!(self, FaultAction::DegradeLink { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            FaultAction::KillSite { site } => format!("kill site {site}"),
            FaultAction::PauseSite { site } => format!("pause site {site}"),
            FaultAction::StopService { site, service } => format!("stop {} on {site}", service.name()),
            FaultAction::DnsDown { site } => format!("stop DNS on {site}"),
            FaultAction::Partition { site } => format!("cut {site} off from every other site"),
            FaultAction::DegradeLink { between, latency_ms, jitter_ms, loss_percent } => format!(
                "degrade links {}<->{}: {latency_ms} ms ± {jitter_ms} ms, {loss_percent}% loss",
                between[0], between[1]
            ),
            FaultAction::Restore { site: Some(site) } => format!("restore {site}"),
            FaultAction::Restore { site: None } => "restore every site and link".into(),
            FaultAction::Switchover { to } => format!("switch the primary role over to {to}"),
            FaultAction::Failback => "fail back to the original primary".into(),
            FaultAction::TakeBackup => "take a backup through the primary's admin API".into(),
            FaultAction::Tamper { forged } => {
                format!("a compromised client deletes the MX recipient's INBOX and appends {forged} forged messages")
            }
            FaultAction::RestoreFromBackup => {
                "restore the MX recipient's INBOX to the moment before the tamper, into a new mailbox".into()
            }
        }
    }
}

/// A condition a step waits for, until its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "until", rename_all = "snake_case", deny_unknown_fields)]
pub enum WaitCondition {
    /// A site other than the original primary is primary (seen by a live data site).
    NewPrimary,
    /// This site is primary.
    PrimaryIs { site: SiteRef },
    /// Every answering DNS server of the target shows `mail.` at the current primary
    /// and lists no MX host whose site is down.
    DnsFollowsPrimary,
    /// An SMTP 250 through the MX and an IMAP fetch through `mail.`, both after the
    /// step started.
    MailFlows,
    /// Every site answers, with replication lag at most `lag_entries_max`.
    AllHealthy {
        #[serde(default)]
        lag_entries_max: u64,
    },
    /// The given time passes (a soak under the current faults).
    Elapsed { ms: u64 },
}

impl WaitCondition {
    pub fn describe(&self) -> String {
        match self {
            WaitCondition::NewPrimary => "a new primary is elected".into(),
            WaitCondition::PrimaryIs { site } => format!("{site} is primary"),
            WaitCondition::DnsFollowsPrimary => "DNS shows mail. at the primary and only live MX hosts".into(),
            WaitCondition::MailFlows => "an SMTP 250 via MX and an IMAP fetch via mail.".into(),
            WaitCondition::AllHealthy { lag_entries_max } => {
                format!("every site healthy, replication lag at most {lag_entries_max} entries")
            }
            WaitCondition::Elapsed { ms } => format!("{ms} ms pass"),
        }
    }
}

/// A check at one point of the drill; a failed check is a finding, and the drill
/// goes on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "check", rename_all = "snake_case", deny_unknown_fields)]
pub enum Verification {
    /// A message submitted with AUTH through `mail.` is readable over IMAP through
    /// `mail.`.
    MailRoundTrip,
    /// The site refuses to acknowledge mail (it answers 4xx or not at all): a cut-off
    /// primary must not say 250.
    SiteRefusesMail { site: SiteRef },
    /// `cluster verify` over the admin API finds no diverging mailbox.
    ClusterConsistent,
    /// Every message acknowledged so far is present on every live data site.
    NoAcknowledgedLoss,
    /// Every message acknowledged before the tamper is back: in the restored
    /// mailbox or the INBOX, at the primary (the tamper drill's RPO, objective 0).
    NothingLostToTamper,
    /// Every message the primary's outbound queue held just before the first fault
    /// is still queued, or was counted as leaving it (delivered, bounced, deleted):
    /// none vanished with the site that queued it.
    QueueIntact,
}

impl Verification {
    pub fn describe(&self) -> String {
        match self {
            Verification::MailRoundTrip => "a submitted message is read back over IMAP via mail.".into(),
            Verification::SiteRefusesMail { site } => format!("{site} does not acknowledge mail"),
            Verification::ClusterConsistent => "every site holds identical mailboxes (cluster verify)".into(),
            Verification::NoAcknowledgedLoss => "every acknowledged message is on every live data site".into(),
            Verification::NothingLostToTamper => {
                "every message acknowledged before the tamper is back after the restore".into()
            }
            Verification::QueueIntact => {
                "every message queued for other domains before the fault is still queued or has left it".into()
            }
        }
    }
}

/// What a step does: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Fault(FaultAction),
    Wait {
        condition: WaitCondition,
        timeout_ms: u64,
    },
    Verify(Verification),
    /// Wait for an operator to confirm the text (recorded with who confirmed).
    Manual {
        prompt: String,
    },
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub phase: Phase,
    /// What the step is for, in the report.
    pub name: String,
    pub kind: StepKind,
    /// Who in the incident team answers for the step (a tabletop exercise
    /// presents it to them); `None`: the phase's default, [`Role::default_for`].
    pub role: Option<Role>,
}

impl Step {
    /// The role responsible for the step: its own, or its phase's default.
    pub fn responsible_role(&self) -> Role {
        self.role.clone().unwrap_or_else(|| Role::default_for(self.phase))
    }

    pub fn describe(&self) -> String {
        match &self.kind {
            StepKind::Fault(a) => a.describe(),
            StepKind::Wait { condition, timeout_ms } => {
                format!("wait until {} (at most {timeout_ms} ms)", condition.describe())
            }
            StepKind::Verify(v) => format!("check that {}", v.describe()),
            StepKind::Manual { prompt } => format!("operator confirms: {prompt}"),
        }
    }
}

/// Longest role name, in characters.
pub const ROLE_CHARS_MAX: usize = 64;

/// A part someone plays in the incident team (`incident-commander`,
/// `mail-operator`, `dns-operator`, `communications`, ...). Written in a plan or
/// on the command line in any of `incident commander`, `Incident-Commander` or
/// `incident_commander`; kept as lower-case words joined by `-`, so the three
/// are one role.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Role(String);

impl Role {
    /// Confirms the event, prepares resources and verifies service.
    pub const MAIL_OPERATOR: &'static str = "mail-operator";
    /// Decides the switchover and closes the incident.
    pub const INCIDENT_COMMANDER: &'static str = "incident-commander";
    /// Changes and checks the domain's records.
    pub const DNS_OPERATOR: &'static str = "dns-operator";

    pub fn parse(raw: &str) -> Result<Role, String> {
        let words: Vec<&str> =
            raw.split(|c: char| c.is_whitespace() || c == '-' || c == '_').filter(|w| !w.is_empty()).collect();
        if words.is_empty() {
            return Err(format!("{raw:?} is not a role: it is empty"));
        }
        if let Some(c) = words.iter().flat_map(|w| w.chars()).find(|c| !c.is_alphanumeric()) {
            return Err(format!(
                "{raw:?} is not a role: {c:?} is not a letter, a digit or a separator (space, '-', '_')"
            ));
        }
        let role = words.join("-").to_lowercase();
        if role.chars().count() > ROLE_CHARS_MAX {
            return Err(format!("{raw:?} is not a role: longer than {ROLE_CHARS_MAX} characters"));
        }
        Ok(Role(role))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The role a step of `phase` falls to when the plan names none: the
    /// incident commander decides and closes, the DNS operator changes DNS, the
    /// mail operator does the rest.
    pub fn default_for(phase: Phase) -> Role {
        Role(
            match phase {
                Phase::Decide | Phase::Review => Role::INCIDENT_COMMANDER,
                Phase::Dns => Role::DNS_OPERATOR,
                Phase::Confirm | Phase::Prepare | Phase::Verify => Role::MAIL_OPERATOR,
            }
            .to_string(),
        )
    }
}

impl TryFrom<String> for Role {
    type Error = String;
    fn try_from(s: String) -> Result<Role, String> {
        Role::parse(&s)
    }
}

impl From<Role> for String {
    fn from(r: Role) -> String {
        r.0
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Most participants a tabletop exercise may have.
pub const PARTICIPANTS_MAX: usize = 64;

/// How a tabletop exercise of the plan runs (`[tabletop]`; `maildr drill run
/// --tabletop`, `docs/drills.md`): no fault, the steps presented to people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TabletopSettings {
    /// The people who usually take part and the role each holds;
    /// `--participant NAME=ROLE` on the command line replaces the whole list.
    pub participants: Vec<ParticipantSpec>,
    /// How long a step other than a timed wait may take to be acknowledged and
    /// decided (a timed wait has its own `timeout_ms`).
    pub ack_within_ms: u64,
}

/// The acknowledgement budget of a step without a timeout of its own.
pub const ACK_WITHIN_MS_DEFAULT: u64 = 5 * 60 * 1000;

impl Default for TabletopSettings {
    fn default() -> Self {
        TabletopSettings { participants: Vec::new(), ack_within_ms: ACK_WITHIN_MS_DEFAULT }
    }
}

/// One person and one role they hold (a person may be listed once per role).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ParticipantSpec {
    /// Trimmed, inner white space folded, printable (as an approver's name).
    pub name: String,
    pub role: Role,
}

/// The objectives the drill measures; each one absent is not judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// From the first fault to the first SMTP 250 through the MX after service was lost.
    pub rto_smtp_ms: Option<u64>,
    /// From the first fault to the first IMAP fetch through `mail.` after it was lost.
    pub rto_imap_ms: Option<u64>,
    /// From the first fault until every measured phase is done.
    pub rto_total_ms: Option<u64>,
    /// Acknowledged messages that may be missing afterwards (0 for every shipped scenario).
    #[serde(default)]
    pub rpo_messages: u64,
    /// Messages that may be deferred with a 4xx during the drill.
    pub max_deferred: Option<u64>,
    /// The 99th percentile of SMTP acknowledgement latency during the drill.
    pub smtp_p99_ms: Option<u64>,
}

/// Where the drill runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum TargetSpec {
    /// The lab on this machine (`maildr lab`); no approvals needed.
    Lab,
    /// A deployment described by a file (sites, endpoints, admin API, fault hooks).
    Deployment { file: PathBuf },
}

/// The continuous synthetic client traffic of a drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSettings {
    /// Older plans' pause between two messages to the MX; when set, it gives
    /// `load.smtp_per_second` (1000 / it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp_interval_ms: Option<u64>,
    /// Older plans' pause between two submissions; when set, it gives
    /// `load.submissions_per_second`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submission_interval_ms: Option<u64>,
    /// Pause between the starts of two IMAP login+fetch rounds through `mail.`
    /// (rounds overlap when one waits on a dead site).
    #[serde(default = "default_imap_interval_ms")]
    pub imap_interval_ms: u64,
    /// Pause between two rounds of DNS questions to every DNS server.
    #[serde(default = "default_dns_interval_ms")]
    pub dns_interval_ms: u64,
    /// Deadline of one probe exchange (connect to final reply).
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: u64,
    /// How long a deferred message is retried before it counts as given up.
    #[serde(default = "default_retry_for_ms")]
    pub retry_for_ms: u64,
    /// For this long after each fault, IMAP and DNS probes start every
    /// [`DENSE_INTERVAL_MS`] (denser samples where the RTO is measured).
    #[serde(default = "default_dense_for_ms")]
    pub dense_for_ms: u64,
}

/// The probe interval right after a fault.
pub const DENSE_INTERVAL_MS: u64 = 100;

fn default_imap_interval_ms() -> u64 {
    500
}
fn default_dns_interval_ms() -> u64 {
    500
}
fn default_probe_timeout_ms() -> u64 {
    3000
}
fn default_retry_for_ms() -> u64 {
    120_000
}
fn default_dense_for_ms() -> u64 {
    30_000
}

impl Default for ProbeSettings {
    fn default() -> Self {
        ProbeSettings {
            smtp_interval_ms: None,
            submission_interval_ms: None,
            imap_interval_ms: default_imap_interval_ms(),
            dns_interval_ms: default_dns_interval_ms(),
            timeout_ms: default_probe_timeout_ms(),
            retry_for_ms: default_retry_for_ms(),
            dense_for_ms: default_dense_for_ms(),
        }
    }
}

/// Most messages per second one flow may send (bounds the synthetic load).
pub const LOAD_PER_SECOND_MAX: u32 = 1_000;
/// Most IMAP sessions held open with IDLE.
pub const IDLE_SESSIONS_MAX: u32 = 200;
/// Most connections one mail flow keeps in flight.
pub const LOAD_CONCURRENCY_MAX: u32 = 256;
/// Smallest and largest synthetic message.
pub const MESSAGE_BYTES_MIN: u32 = 512;
pub const MESSAGE_BYTES_MAX: u32 = 1024 * 1024;

/// The client load a drill puts on the deployment while it runs (`[load]`): enough
/// acknowledged mail to make an RPO meaningful (thousands of messages in a
/// site-outage drill), bounded in rate, connections, size and (`flow::MESSAGES_MAX`)
/// count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadProfile {
    /// Messages per second to the domain's MX, as other mail servers send them.
    #[serde(default = "default_smtp_per_second")]
    pub smtp_per_second: u32,
    /// Messages per second submitted with AUTH through `mail.`.
    #[serde(default = "default_submissions_per_second")]
    pub submissions_per_second: u32,
    /// IMAP sessions held open through `mail.`, each IDLE on the INBOX the MX flow
    /// delivers to (they reconnect when their site goes away).
    #[serde(default = "default_imap_idle_sessions")]
    pub imap_idle_sessions: u32,
    /// Size of each synthetic message in bytes.
    #[serde(default = "default_message_bytes")]
    pub message_bytes: u32,
    /// Most connections each mail flow keeps in flight; messages beyond wait in the
    /// sender's queue.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
}

fn default_smtp_per_second() -> u32 {
    40
}
fn default_submissions_per_second() -> u32 {
    5
}
fn default_imap_idle_sessions() -> u32 {
    4
}
fn default_message_bytes() -> u32 {
    4096
}
fn default_concurrency() -> u32 {
    32
}

impl Default for LoadProfile {
    fn default() -> Self {
        LoadProfile {
            smtp_per_second: default_smtp_per_second(),
            submissions_per_second: default_submissions_per_second(),
            imap_idle_sessions: default_imap_idle_sessions(),
            message_bytes: default_message_bytes(),
            concurrency: default_concurrency(),
        }
    }
}

/// Checked before any fault: the drill starts only from a healthy steady state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteadyState {
    /// Every site answers its status.
    #[serde(default = "yes")]
    pub all_sites_healthy: bool,
    /// Replication lag of every member at most this many entries.
    #[serde(default = "default_lag_entries_max")]
    pub lag_entries_max: u64,
    /// A probe message round-trips (submission, then IMAP) before the first fault.
    #[serde(default = "yes")]
    pub mail_round_trip: bool,
    /// How long the steady state may take to show.
    #[serde(default = "default_steady_timeout_ms")]
    pub timeout_ms: u64,
}

fn yes() -> bool {
    true
}
fn default_lag_entries_max() -> u64 {
    100
}
fn default_steady_timeout_ms() -> u64 {
    60_000
}

impl Default for SteadyState {
    fn default() -> Self {
        SteadyState {
            all_sites_healthy: true,
            lag_entries_max: default_lag_entries_max(),
            mail_round_trip: true,
            timeout_ms: default_steady_timeout_ms(),
        }
    }
}

/// When the drill stops early (then runs its rollback and still reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortConditions {
    /// Abort when a message acknowledged with 250 is found missing by a check.
    #[serde(default = "yes")]
    pub acknowledged_lost: bool,
    /// Abort when no site is primary for this long.
    pub no_primary_for_ms: Option<u64>,
    /// Abort when the drill runs longer than this.
    #[serde(default = "default_max_duration_ms")]
    pub max_duration_ms: u64,
}

fn default_max_duration_ms() -> u64 {
    30 * 60 * 1000
}

impl Default for AbortConditions {
    fn default() -> Self {
        AbortConditions { acknowledged_lost: true, no_primary_for_ms: None, max_duration_ms: default_max_duration_ms() }
    }
}

/// Approvals a non-lab drill needs before it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// Distinct approvers required (`maildr drill approve PLAN --by NAME`).
    #[serde(default)]
    pub required: u32,
}

/// A parsed, checked drill plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub name: String,
    pub description: String,
    /// The language of report.md and report.html (`zh` or `en`; `drill run
    /// --lang` overrides it). report.json is the same in every language.
    pub lang: Lang,
    pub target: TargetSpec,
    pub objectives: Objectives,
    pub approvals: ApprovalPolicy,
    pub probes: ProbeSettings,
    pub load: LoadProfile,
    pub steady_state: SteadyState,
    pub readiness: ReadinessPolicy,
    pub steps: Vec<Step>,
    pub abort: AbortConditions,
    pub rollback: Vec<Step>,
    /// How a tabletop exercise of this plan runs (`[tabletop]`).
    pub tabletop: TabletopSettings,
}

/// The plan as it was read, for approvals and the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanSource {
    /// A library name (`site-outage`) or the file's path.
    pub origin: String,
    pub text: String,
}

impl PlanSource {
    /// SHA-256 of the exact plan text, hex: what an approval is bound to.
    pub fn sha256(&self) -> String {
        hex::encode(Sha256::digest(self.text.as_bytes()))
    }
}

/// Why a plan was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("{origin}: not a valid drill plan: {detail}")]
    Syntax { origin: String, detail: String },
    #[error("{origin}: step {index} ({name:?}): {detail}")]
    Step { origin: String, index: usize, name: String, detail: String },
    #[error("{origin}: {field}: {detail}")]
    Field { origin: String, field: String, detail: String },
}

// -------------------------------------------------------------- the file format

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    lang: Lang,
    target: TargetSpec,
    #[serde(default)]
    objectives: Objectives,
    #[serde(default)]
    approvals: ApprovalPolicy,
    #[serde(default)]
    probes: ProbeSettings,
    #[serde(default)]
    load: LoadProfile,
    #[serde(default)]
    steady_state: SteadyState,
    #[serde(default)]
    readiness: ReadinessPolicy,
    #[serde(default)]
    steps: Vec<StepFile>,
    #[serde(default)]
    abort: AbortConditions,
    #[serde(default)]
    rollback: Vec<StepFile>,
    #[serde(default)]
    tabletop: TabletopFile,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TabletopFile {
    #[serde(default)]
    participants: Vec<ParticipantFile>,
    #[serde(default)]
    ack_within_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParticipantFile {
    name: String,
    role: Role,
}

/// A step as written: a phase, a name, and exactly one of `action`, `until`,
/// `check`, `manual` with that kind's own fields alongside.
#[derive(Deserialize)]
struct StepFile {
    phase: Phase,
    name: String,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    manual: Option<String>,
    #[serde(default)]
    role: Option<Role>,
    #[serde(flatten)]
    rest: toml::Table,
}

impl Plan {
    /// Parse and check a plan; every refusal names the step or field.
    pub fn parse(source: &PlanSource) -> Result<Plan, PlanError> {
        let origin = source.origin.clone();
        let file: PlanFile = toml::from_str(&source.text)
            .map_err(|e| PlanError::Syntax { origin: origin.clone(), detail: e.to_string() })?;
        let field =
            |field: &str, detail: String| PlanError::Field { origin: origin.clone(), field: field.into(), detail };
        if file.name.trim().is_empty() {
            return Err(field("name", "must not be empty".into()));
        }
        if file.steps.is_empty() {
            return Err(field("steps", "a drill needs at least one step".into()));
        }
        if file.steps.len() + file.rollback.len() > STEPS_MAX {
            return Err(field("steps", format!("at most {STEPS_MAX} steps and rollback steps together")));
        }
        let p = &file.probes;
        for (name, v) in [
            ("probes.smtp_interval_ms", p.smtp_interval_ms.unwrap_or(PROBE_INTERVAL_MS_MIN)),
            ("probes.submission_interval_ms", p.submission_interval_ms.unwrap_or(PROBE_INTERVAL_MS_MIN)),
            ("probes.imap_interval_ms", p.imap_interval_ms),
            ("probes.dns_interval_ms", p.dns_interval_ms),
        ] {
            if v < PROBE_INTERVAL_MS_MIN {
                return Err(field(name, format!("{v} is below the minimum of {PROBE_INTERVAL_MS_MIN} ms")));
            }
        }
        if p.timeout_ms == 0 {
            return Err(field("probes.timeout_ms", "must be above 0".into()));
        }
        let mut load = file.load.clone();
        if let Some(ms) = p.smtp_interval_ms {
            load.smtp_per_second = u32::try_from((1000 / ms).max(1)).unwrap_or(1);
        }
        if let Some(ms) = p.submission_interval_ms {
            load.submissions_per_second = u32::try_from((1000 / ms).max(1)).unwrap_or(1);
        }
        for (name, v, max) in [
            ("load.smtp_per_second", load.smtp_per_second, LOAD_PER_SECOND_MAX),
            ("load.submissions_per_second", load.submissions_per_second, LOAD_PER_SECOND_MAX),
            ("load.imap_idle_sessions", load.imap_idle_sessions, IDLE_SESSIONS_MAX),
            ("load.concurrency", load.concurrency, LOAD_CONCURRENCY_MAX),
        ] {
            if v > max {
                return Err(field(name, format!("{v} is above the maximum of {max}")));
            }
        }
        if load.concurrency == 0 {
            return Err(field("load.concurrency", "must be above 0".into()));
        }
        if !(MESSAGE_BYTES_MIN..=MESSAGE_BYTES_MAX).contains(&load.message_bytes) {
            return Err(field(
                "load.message_bytes",
                format!("{} is not between {MESSAGE_BYTES_MIN} and {MESSAGE_BYTES_MAX}", load.message_bytes),
            ));
        }
        if file.abort.max_duration_ms == 0 || file.abort.max_duration_ms > DRILL_DURATION_MS_MAX {
            return Err(field("abort.max_duration_ms", format!("must be between 1 and {DRILL_DURATION_MS_MAX}")));
        }
        let steps = convert_steps(&origin, file.steps, 0)?;
        let rollback = convert_steps(&origin, file.rollback, steps.len())?;
        if !steps.iter().any(|s| matches!(&s.kind, StepKind::Fault(a) if a.is_fault())) {
            return Err(field("steps", "no step injects a fault; a drill must break something".into()));
        }
        Ok(Plan {
            name: file.name,
            description: file.description,
            lang: file.lang,
            target: file.target,
            objectives: file.objectives,
            approvals: file.approvals,
            probes: file.probes,
            load,
            steady_state: file.steady_state,
            readiness: file.readiness,
            steps,
            abort: file.abort,
            rollback,
            tabletop: tabletop_settings(&origin, file.tabletop)?,
        })
    }

    /// Every site the plan names, for checking against the target.
    pub fn named_sites(&self) -> Vec<&SiteRef> {
        let mut out = Vec::new();
        for step in self.steps.iter().chain(&self.rollback) {
            match &step.kind {
                StepKind::Fault(a) => out.extend(a.sites()),
                StepKind::Wait { condition: WaitCondition::PrimaryIs { site }, .. } => out.push(site),
                StepKind::Verify(Verification::SiteRefusesMail { site }) => out.push(site),
                _ => {}
            }
        }
        out
    }

    /// Whether running the plan needs recorded approvals first.
    pub fn needs_approval(&self) -> bool {
        !matches!(self.target, TargetSpec::Lab) && self.approvals.required > 0
    }

    /// Whether a step takes or restores backups (a lab for it starts with `--backup`).
    pub fn needs_backups(&self) -> bool {
        self.steps.iter().chain(&self.rollback).any(|s| matches!(&s.kind, StepKind::Fault(a) if a.needs_backups()))
    }
}

fn tabletop_settings(origin: &str, file: TabletopFile) -> Result<TabletopSettings, PlanError> {
    let field = |field: &str, detail: String| PlanError::Field { origin: origin.into(), field: field.into(), detail };
    let ack_within_ms = file.ack_within_ms.unwrap_or(ACK_WITHIN_MS_DEFAULT);
    if ack_within_ms == 0 || ack_within_ms > WAIT_TIMEOUT_MS_MAX {
        return Err(field("tabletop.ack_within_ms", format!("must be between 1 and {WAIT_TIMEOUT_MS_MAX}")));
    }
    if file.participants.len() > PARTICIPANTS_MAX {
        return Err(field("tabletop.participants", format!("at most {PARTICIPANTS_MAX} participants")));
    }
    let mut participants = Vec::with_capacity(file.participants.len());
    for (i, p) in file.participants.into_iter().enumerate() {
        let name = person_name(&p.name).map_err(|why| field(&format!("tabletop.participants[{}].name", i + 1), why))?;
        participants.push(ParticipantSpec { name: name.as_str().to_string(), role: p.role });
    }
    Ok(TabletopSettings { participants, ack_within_ms })
}

/// A participant's name as it is recorded (the rules of an approver's name:
/// trimmed, white space folded, printable, bounded), or why it is refused.
pub fn person_name(raw: &str) -> Result<String, String> {
    match crate::approval::ApproverName::parse(raw) {
        Ok(name) => Ok(name.as_str().to_string()),
        Err(crate::approval::ApprovalError::BadName { why, .. }) => Err(format!("name {raw:?} refused: {why}")),
        Err(other) => Err(other.to_string()),
    }
}

fn convert_steps(origin: &str, steps: Vec<StepFile>, first_index: usize) -> Result<Vec<Step>, PlanError> {
    steps.into_iter().enumerate().map(|(i, s)| convert_step(origin, first_index + i + 1, s)).collect()
}

fn convert_step(origin: &str, index: usize, s: StepFile) -> Result<Step, PlanError> {
    let err = |detail: String| PlanError::Step { origin: origin.into(), index, name: s.name.clone(), detail };
    if s.name.trim().is_empty() {
        return Err(err("the step's name must not be empty".into()));
    }
    let kinds = ["action", "until", "check"].iter().filter(|k| s.rest.contains_key(**k)).count()
        + usize::from(s.manual.is_some());
    if kinds != 1 {
        return Err(err("a step has exactly one of `action`, `until`, `check` or `manual`".into()));
    }
    let fields = || toml::Value::Table(s.rest.clone());
    let kind = if let Some(prompt) = &s.manual {
        if !s.rest.is_empty() || s.timeout_ms.is_some() {
            return Err(err("a manual step takes only `phase`, `name`, `role` and `manual`".into()));
        }
        if prompt.trim().is_empty() {
            return Err(err("`manual` must say what the operator confirms".into()));
        }
        StepKind::Manual { prompt: prompt.clone() }
    } else if s.rest.contains_key("action") {
        if s.timeout_ms.is_some() {
            return Err(err("`timeout_ms` belongs to `until` steps".into()));
        }
        let action: FaultAction = fields().try_into().map_err(|e: toml::de::Error| err(e.to_string()))?;
        if let FaultAction::DegradeLink { between, loss_percent, latency_ms, .. } = &action {
            if between[0] == between[1] {
                return Err(err("`between` names two different sites".into()));
            }
            if *loss_percent > 100 {
                return Err(err(format!("loss_percent {loss_percent} is above 100")));
            }
            if *latency_ms > 10_000 {
                return Err(err(format!("latency_ms {latency_ms} is above 10000")));
            }
        }
        StepKind::Fault(action)
    } else if s.rest.contains_key("until") {
        let condition: WaitCondition = fields().try_into().map_err(|e: toml::de::Error| err(e.to_string()))?;
        let timeout_ms = match (&condition, s.timeout_ms) {
            (WaitCondition::Elapsed { ms }, None) => *ms,
            (WaitCondition::Elapsed { .. }, Some(_)) => {
                return Err(err("an `elapsed` wait takes no `timeout_ms`".into()))
            }
            (_, Some(t)) => t,
            (_, None) => return Err(err("a wait needs `timeout_ms`".into())),
        };
        if timeout_ms == 0 || timeout_ms > WAIT_TIMEOUT_MS_MAX {
            return Err(err(format!("timeout_ms must be between 1 and {WAIT_TIMEOUT_MS_MAX}")));
        }
        StepKind::Wait { condition, timeout_ms }
    } else {
        if s.timeout_ms.is_some() {
            return Err(err("`timeout_ms` belongs to `until` steps".into()));
        }
        let check: Verification = fields().try_into().map_err(|e: toml::de::Error| err(e.to_string()))?;
        StepKind::Verify(check)
    };
    Ok(Step { phase: s.phase, name: s.name, kind, role: s.role })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> PlanSource {
        PlanSource { origin: "test.toml".into(), text: text.into() }
    }

    const HEAD: &str = "name = \"t\"\ntarget = { kind = \"lab\" }\n";

    #[test]
    fn a_plan_with_every_kind_of_step_parses_into_typed_steps() {
        let text = format!(
            "{HEAD}
[[steps]]
phase = \"confirm\"
name = \"owners told\"
manual = \"the owners of example.test were told\"
[[steps]]
phase = \"decide\"
name = \"primary dies\"
action = \"kill_site\"
site = \"primary\"
[[steps]]
phase = \"decide\"
name = \"election\"
until = \"new_primary\"
timeout_ms = 20000
[[steps]]
phase = \"prepare\"
name = \"slow wan\"
action = \"degrade_link\"
between = [\"bj\", \"sh\"]
latency_ms = 30
[[steps]]
phase = \"verify\"
name = \"cut off\"
check = \"site_refuses_mail\"
site = \"primary\"
[[rollback]]
phase = \"review\"
name = \"restore\"
action = \"restore\"
"
        );
        let plan = Plan::parse(&src(&text)).unwrap();
        assert_eq!(plan.steps.len(), 5);
        assert_eq!(plan.steps[1].kind, StepKind::Fault(FaultAction::KillSite { site: SiteRef::Primary }));
        assert_eq!(plan.steps[2].kind, StepKind::Wait { condition: WaitCondition::NewPrimary, timeout_ms: 20000 });
        assert!(matches!(
            &plan.steps[3].kind,
            StepKind::Fault(FaultAction::DegradeLink { latency_ms: 30, jitter_ms: 0, loss_percent: 0, between })
                if between == &[SiteRef::Named("bj".into()), SiteRef::Named("sh".into())]
        ));
        assert_eq!(plan.rollback[0].kind, StepKind::Fault(FaultAction::Restore { site: None }));
        assert_eq!(plan.probes, ProbeSettings::default());
        assert!(!plan.needs_approval(), "the lab needs no approval");
        assert_eq!(plan.lang, Lang::En, "reports are in English unless the plan says otherwise");
    }

    #[test]
    fn a_step_may_name_its_role_and_otherwise_falls_to_its_phase_default() {
        let text = format!(
            "{HEAD}
[[steps]]
phase = \"confirm\"
name = \"users told\"
manual = \"the users were told\"
role = \"Communications\"
[[steps]]
phase = \"decide\"
name = \"primary dies\"
action = \"kill_site\"
site = \"primary\"
[[steps]]
phase = \"dns\"
name = \"dns\"
until = \"dns_follows_primary\"
timeout_ms = 1000
role = \"incident commander\"
"
        );
        let plan = Plan::parse(&src(&text)).unwrap();
        let roles: Vec<String> = plan.steps.iter().map(|s| s.responsible_role().to_string()).collect();
        assert_eq!(roles, ["communications", "incident-commander", "incident-commander"]);
        assert_eq!(plan.steps[1].role, None);
        assert_eq!(plan.tabletop, TabletopSettings::default());
        let bad = format!("{HEAD}[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\nrole = \"a/b\"\n");
        let err = Plan::parse(&src(&bad)).unwrap_err().to_string();
        assert!(err.contains("not a role"), "{err}");
        for (tabletop, needle) in [
            ("[tabletop]\nack_within_ms = 0\n", "tabletop.ack_within_ms"),
            ("[[tabletop.participants]]\nname = \" \"\nrole = \"x\"\n", "tabletop.participants[1].name"),
            ("[tabletop]\nseats = 3\n", "seats"),
        ] {
            let text = format!(
                "{HEAD}{tabletop}[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\n"
            );
            let err = Plan::parse(&src(&text)).unwrap_err().to_string();
            assert!(err.contains(needle), "{tabletop} => {err}");
        }
    }

    #[test]
    fn a_plan_may_ask_for_its_reports_in_chinese_or_english_only() {
        let body = "[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\n";
        for (line, lang) in [("lang = \"zh\"\n", Lang::Zh), ("lang = \"en\"\n", Lang::En)] {
            let plan = Plan::parse(&src(&format!("{HEAD}{line}{body}"))).unwrap();
            assert_eq!(plan.lang, lang);
        }
        let err = Plan::parse(&src(&format!("{HEAD}lang = \"fr\"\n{body}"))).unwrap_err().to_string();
        assert!(err.contains("fr") && err.contains("zh") && err.contains("en"), "{err}");
    }

    #[test]
    fn refusals_name_the_step_and_what_is_wrong() {
        let cases = [
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"primary\"\nuntil = \"new_primary\"\n", "exactly one of"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"burn_site\"\nsite = \"bj\"\n", "burn_site"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\n", "site"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"b j\"\n", "not a site name"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\nuntil = \"new_primary\"\n", "timeout_ms"),
            ("[[steps]]\nphase = \"lunch\"\nname = \"x\"\naction = \"failback\"\n", "lunch"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\ncolour = 1\n", "colour"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\nuntil = \"elapsed\"\nms = 0\n", "timeout_ms must be"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"degrade_link\"\nbetween = [\"bj\", \"bj\"]\nlatency_ms = 5\n", "two different"),
            ("[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"failback\"\n", "no step injects a fault"),
            ("[probes]\nsmtp_interval_ms = 1\n[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\n", "probes.smtp_interval_ms"),
        ];
        for (body, needle) in cases {
            let err = Plan::parse(&src(&format!("{HEAD}{body}"))).unwrap_err().to_string();
            assert!(err.contains(needle), "{body}\n=> {err}\n(wanted {needle:?})");
        }
        let err = Plan::parse(&src("name = \"t\"\n")).unwrap_err().to_string();
        assert!(err.contains("target"), "{err}");
    }

    #[test]
    fn load_limits_accept_the_limit_and_refuse_one_more() {
        let step = "[[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\n";
        for (key, max) in [
            ("smtp_per_second", LOAD_PER_SECOND_MAX),
            ("submissions_per_second", LOAD_PER_SECOND_MAX),
            ("imap_idle_sessions", IDLE_SESSIONS_MAX),
            ("concurrency", LOAD_CONCURRENCY_MAX),
            ("message_bytes", MESSAGE_BYTES_MAX),
        ] {
            let at = Plan::parse(&src(&format!("{HEAD}[load]\n{key} = {max}\n{step}"))).unwrap();
            assert!(serde_json::to_string(&at.load).unwrap().contains(&format!("\"{key}\":{max}")));
            let err = Plan::parse(&src(&format!("{HEAD}[load]\n{key} = {}\n{step}", max + 1))).unwrap_err();
            assert!(err.to_string().contains(&format!("load.{key}")), "{err}");
        }
        for (key, v) in [("concurrency", 0), ("message_bytes", MESSAGE_BYTES_MIN - 1)] {
            let err = Plan::parse(&src(&format!("{HEAD}[load]\n{key} = {v}\n{step}"))).unwrap_err();
            assert!(err.to_string().contains(&format!("load.{key}")), "{err}");
        }
        // Older plans' intervals give the rate.
        let old = Plan::parse(&src(&format!("{HEAD}[probes]\nsmtp_interval_ms = 200\n{step}"))).unwrap();
        assert_eq!(old.load.smtp_per_second, 5);
    }

    #[test]
    fn the_plan_digest_changes_with_any_byte_of_the_plan() {
        let a = src("name = \"t\"");
        let b = src("name = \"t\" ");
        assert_eq!(a.sha256().len(), 64);
        assert_ne!(a.sha256(), b.sha256());
        assert_eq!(a.sha256(), src("name = \"t\"").sha256());
    }

    #[test]
    fn a_deployment_target_with_required_approvals_needs_approval() {
        let text =
            "name = \"t\"\ntarget = { kind = \"deployment\", file = \"prod.toml\" }\n[approvals]\nrequired = 2\n\
                    [[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\n";
        let plan = Plan::parse(&src(text)).unwrap();
        assert!(plan.needs_approval());
        assert_eq!(plan.target, TargetSpec::Deployment { file: "prod.toml".into() });
    }
}
