//! Runs a plan against a target and produces the report.
//!
//! The order is fixed: resolve who is primary, check the steady state, start the
//! client flows, run the steps (faults, waits, checks, manual confirmations) while
//! a monitor watches the abort conditions, run the rollback steps and undo every
//! fault still in place (always, also after an abort or Ctrl-C), drain the
//! senders' queues, wait for the sites to converge, reconcile acknowledged mail
//! over IMAP at every data site, read the control plane's event log, and measure.
//!
//! The runner must never leave a fault it injected in place when it returns, and
//! never report a figure it did not observe (an unmeasured objective is missed).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maildr_api_types::backup::{BackupList, BackupReport, RestoreReport, RestoreRequest};
use maildr_api_types::cluster::{
    ClusterStatus, MemberView, SwitchoverReport, SwitchoverRequest, VerifyReport, VerifyRequest,
};
use maildr_api_types::control::{EventList, HealthReport};
use maildr_api_types::queue::QueueList;
use maildr_client::dns;
use maildr_client::imap::Session;
use maildr_client::smtp::{self, Envelope, Login, Security};
use maildr_client::Tls;
use maildr_lab::http_client::{JsonApi, Method};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::flow::{self, now_ms, Counters, Flows, MailFlow, Message, TAG_HEADER};
use crate::measure::{self, ClusterEvent, Found, Measured};
use crate::plan::{
    FaultAction, Phase, Plan, PlanSource, Service, SiteRef, Step, StepKind, Verification, WaitCondition,
};
use crate::readiness;
use crate::report::{
    Approval, Environment, Finding, PlanInfo, ProbeSummary, Report, Severity, SiteInfo, Source, StepOutcome,
    StepResult, TimelineEntry, Verdict,
};
use crate::target::{ControlPlane, Fault, Ledger, SiteEndpoints, SiteRole, Target};

/// How often waits and the abort monitor look again.
const POLL: Duration = Duration::from_millis(200);
/// How many looks at the cluster the readiness gate takes before it aborts a drill.
const READINESS_LOOKS: u32 = 3;
/// The pause between two looks of the readiness gate.
const READINESS_LOOK_PAUSE_MS: u64 = 500;
/// Longest the flows keep retrying deferred mail after the last step.
const DRAIN_MS_MAX: u64 = 60_000;
/// Longest the sites get to converge before the reconciliation reads them.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(90);
/// Longest a switchover (or failback) is retried while the target catches up.
const SWITCHOVER_RETRY: Duration = Duration::from_secs(120);
/// Deadline of one switchover or verify request.
const SLOW_API: Duration = Duration::from_secs(150);
/// Deadline of the abort monitor's primary check.
const WATCHDOG_API: Duration = Duration::from_secs(2);
/// How long a check waits for the live data sites to apply what was committed.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a check waits for a message it sent to become readable.
const READBACK_TIMEOUT: Duration = Duration::from_secs(15);
/// How long taking a backup or restoring through the admin API may take.
const BACKUP_TIMEOUT: Duration = Duration::from_secs(600);
/// How long `site_refuses_mail` waits for the site's answer.
const REFUSAL_WAIT: Duration = Duration::from_secs(20);
/// Client traffic before the first step, as a baseline.
const WARMUP_MS: u64 = 1_000;
/// How often the abort monitor looks (a global stop is seen within this).
const MONITOR_EVERY: Duration = Duration::from_millis(500);
/// Most timeline entries kept from the cluster's event log.
const EVENTS_MAX: usize = 2_000;
/// Deadline of one DNS question or one connection when the deployment has no
/// control plane and the drill asks DNS and the sites themselves.
const NO_CONTROL_PLANE_ASK: Duration = Duration::from_secs(1);
/// How long a consistency check without a control plane waits for the sites'
/// own replication to bring the same mail to every site.
const CONVERGE_BY_READING: Duration = Duration::from_secs(60);

/// What the terminal shows while a drill runs.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub phase: Option<Phase>,
    pub step: String,
    pub counters: Counters,
}

/// Asks an operator to confirm a manual step; returns who confirmed, or why not.
pub type Confirm = Arc<dyn Fn(&str) -> Result<String, String> + Send + Sync>;
/// Appends one record to the audit log: (action, detail).
pub type Audit = Arc<dyn Fn(&str, Value) + Send + Sync>;
/// Told when the drill enters a phase, with the step that enters it. Called on
/// the drill's task: it must not block (writing a small file is the most).
pub type PhaseHook = Arc<dyn Fn(Phase, &str) + Send + Sync>;

pub struct RunOptions {
    pub drill_id: String,
    pub approvals: Vec<Approval>,
    pub confirm: Confirm,
    pub audit: Audit,
    /// Becomes true on Ctrl-C.
    pub interrupt: watch::Receiver<bool>,
    pub live: Arc<Mutex<Live>>,
    /// Told each time the live phase changes (see [`crate::progress`]).
    pub on_phase: Option<PhaseHook>,
    /// The global stop file (see [`crate::guard`]): while it exists no fault is
    /// injected, and a running drill aborts when it appears.
    pub stop_file: Option<std::path::PathBuf>,
    /// Set when another drill holds the data directory: this one is not ready.
    pub other_drill: Option<String>,
}

/// Why a drill could not start (nothing was touched).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the plan names site {0:?}, which the target does not have")]
    UnknownSite(String),
    #[error("the target has no {0} site")]
    MissingRole(&'static str),
    #[error("the deployment cannot {action}: add a `{hook}` hook to the deployment file")]
    MissingHook { action: String, hook: &'static str },
    #[error("no data site's admin API answered: {0}")]
    NoApi(String),
    #[error("no site is primary: {0}")]
    NoPrimary(String),
    #[error("{0}")]
    Setup(String),
}

/// The sites the plan's roles stand for, fixed at the start.
struct Cast {
    primary: String,
    secondary: String,
    witness: Option<String>,
}

impl Cast {
    fn name(&self, r: &SiteRef) -> Result<String, RunError> {
        match r {
            SiteRef::Primary => Ok(self.primary.clone()),
            SiteRef::Secondary => Ok(self.secondary.clone()),
            SiteRef::Witness => self.witness.clone().ok_or(RunError::MissingRole("witness")),
            SiteRef::Named(n) => Ok(n.clone()),
        }
    }
}

/// The cluster as a data site's API reports it.
#[derive(Debug, Clone)]
struct ClusterView {
    asked: String,
    leader: Option<String>,
    members: Vec<MemberView>,
}

struct Run<'a> {
    plan: &'a Plan,
    target: &'a Target,
    opts: &'a RunOptions,
    cast: Cast,
    tls: Option<Tls>,
    ledger: Arc<Mutex<Ledger>>,
    timeline: Vec<TimelineEntry>,
    steps: Vec<StepResult>,
    findings: Vec<Finding>,
    confirmations: Vec<String>,
    /// The first fault that interrupts service: RTO is measured from here.
    fault_at_ms: Option<u64>,
    /// The first fault of any kind (the RTO start when none interrupts service).
    first_fault_at_ms: Option<u64>,
    abort: watch::Receiver<Option<String>>,
    flows: Option<Flows>,
    check_seq: u32,
    /// The tamper drill: the moment just before the compromised client's first
    /// change, and the mailbox the restore wrote into.
    tamper_at_ms: Option<u64>,
    restored_mailbox: Option<String>,
    /// What the drill itself saw happen, as events, when the deployment has no
    /// control plane whose event log says it.
    observed: Vec<ClusterEvent>,
    /// The most acknowledged messages a `no_acknowledged_loss` check found missing.
    missing_during_outage: Option<u64>,
    /// The outbound queue at the primary just before the first fault (plans with
    /// a `queue_intact` check), or why it could not be read.
    queue_before: Option<Result<QueueSeen, String>>,
    /// What the last `queue_intact` check counted.
    queue_account: Option<crate::report::QueueAccount>,
    /// Where each reconciled mailbox stood at each data site before the drill
    /// sent anything: the reconciliation reads only what came after.
    marks: MailboxMarks,
}

/// (site, account, mailbox) → (UIDVALIDITY, UIDNEXT) before the drill's first
/// message. A message stored later has a UID at or above that UIDNEXT as long as
/// the UIDVALIDITY holds (RFC 3501 §2.3.1.1), so the reconciliation fetches the
/// drill's tags from there: on a mailbox of years of mail it reads what the
/// drill sent, not every message the users have (and the drill does not load
/// the system it measures with reads of everything, several times).
type MailboxMarks = BTreeMap<(String, String, String), (u32, u32)>;

/// The outbound queue as one site's admin API listed it.
struct QueueSeen {
    site: String,
    list: QueueList,
}

impl QueueSeen {
    fn ids(&self) -> BTreeSet<u64> {
        self.list.messages.iter().map(|m| m.id).collect()
    }
}

/// Run `plan` against `target`. `Err` only when the drill could not start;
/// everything after the start ends in a report, aborted or not.
pub async fn run(plan: &Plan, source: &PlanSource, target: &Target, opts: RunOptions) -> Result<Report, RunError> {
    let started_at_ms = now_ms();
    preflight(plan, target)?;
    let view = cluster_view(target, &[]).await.map_err(RunError::NoApi)?;
    let primary = view.leader.clone().ok_or_else(|| RunError::NoPrimary(format!("{} knows no leader", view.asked)))?;
    let secondary = target
        .data_sites()
        .map(|s| s.name.clone())
        .find(|n| *n != primary)
        .ok_or(RunError::MissingRole("second data site"))?;
    let witness = target.sites.iter().find(|s| s.role == SiteRole::Witness).map(|s| s.name.clone());
    let cast = Cast { primary, secondary, witness };
    for r in plan.named_sites() {
        let name = cast.name(r)?;
        if target.site(&name).is_none() {
            return Err(RunError::UnknownSite(name));
        }
    }
    let tls = target.ca_pem.as_deref().map(Tls::from_ca_pem).transpose().map_err(|e| RunError::Setup(e.to_string()))?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let (abort_tx, abort_rx) = watch::channel(None);
    let mut run = Run {
        plan,
        target,
        opts: &opts,
        cast,
        tls,
        ledger: ledger.clone(),
        timeline: Vec::new(),
        steps: Vec::new(),
        findings: Vec::new(),
        confirmations: Vec::new(),
        fault_at_ms: None,
        first_fault_at_ms: None,
        abort: abort_rx,
        flows: None,
        check_seq: 0,
        tamper_at_ms: None,
        restored_mailbox: None,
        observed: Vec::new(),
        missing_during_outage: None,
        queue_before: None,
        queue_account: None,
        marks: MailboxMarks::new(),
    };
    (opts.audit)(
        "drill_started",
        json!({ "drill_id": opts.drill_id, "plan": plan.name, "plan_sha256": source.sha256(), "target": target.kind,
                "primary": run.cast.primary }),
    );
    let named_by = match target.control {
        ControlPlane::AdminApi => String::new(),
        ControlPlane::None => format!(
            " (named by {}: the deployment has no control plane, so DNS says who is primary and sites are judged by what clients see)",
            view.asked
        ),
    };
    run.note(None, Source::Drill, "drill_started", format!("primary at start: {}{named_by}", run.cast.primary));

    let monitor = tokio::spawn(monitor(
        plan.clone(),
        started_at_ms,
        target_snapshot(target),
        ledger,
        opts.interrupt.clone(),
        opts.stop_file.clone(),
        abort_tx,
    ));
    run.mark_mailboxes().await;
    let steady = run.steady_state().await;
    let mut abort_reason: Option<String> = None;
    if let Err(why) = steady {
        run.finding(Severity::Critical, None, "The steady state was not reached before the first fault", why.clone());
        abort_reason = Some(format!("steady state not reached: {why}"));
    } else {
        match Flows::start(target, &opts.drill_id, &plan.probes, &plan.load) {
            Ok(flows) => run.flows = Some(flows),
            Err(e) => abort_reason = Some(format!("client flows could not start: {e}")),
        }
    }
    if abort_reason.is_none() {
        run.sleep_watching(WARMUP_MS).await;
        abort_reason = run.steps(&plan.steps, false).await;
    } else {
        run.skip(&plan.steps, false, 0);
    }
    if let Some(why) = &abort_reason {
        run.note(None, Source::Drill, "abort", why.clone());
        (opts.audit)("drill_aborted", json!({ "drill_id": opts.drill_id, "reason": why }));
    }
    // Rollback runs whatever happened, and nothing aborts it.
    run.steps(&plan.rollback, true).await;
    run.undo_all("left in place after the rollback").await;
    monitor.abort();

    let flows_ran = run.flows.is_some();
    let finished = match run.flows.take() {
        Some(flows) => {
            run.set_live(Some(Phase::Review), "draining the senders' queues");
            flows.finish(plan.probes.retry_for_ms.min(DRAIN_MS_MAX)).await
        }
        None => flow::Finished::default(),
    };
    let (samples, messages, idle) = (finished.samples, finished.messages, finished.idle);
    run.set_live(Some(Phase::Review), "waiting for the sites to converge");
    let converged = run.wait_converged().await;
    if let Err(why) = &converged {
        run.finding(
            Severity::Warning,
            Some(Phase::Review),
            "The sites did not converge before the reconciliation",
            why.clone(),
        );
    }
    run.set_live(Some(Phase::Review), "reconciling acknowledged mail over IMAP");
    let found = run.reconcile(&messages, None).await;
    let events = run.cluster_events(started_at_ms).await;
    for e in &events {
        run.timeline.push(TimelineEntry {
            at_ms: e.at_ms,
            phase: None,
            source: Source::Cluster,
            kind: e.kind.clone(),
            detail: format!("{}{}", e.site.as_deref().map(|s| format!("{s}: ")).unwrap_or_default(), e.detail),
        });
    }
    let finished_at_ms = now_ms();
    let idle = flows_ran.then_some(idle);
    Ok(run.report(source, started_at_ms, finished_at_ms, abort_reason, samples, messages, idle, found, events))
}

fn preflight(plan: &Plan, target: &Target) -> Result<(), RunError> {
    let need = |hook: &'static str, action: &str| -> Result<(), RunError> {
        if target.injector.supports(hook) {
            Ok(())
        } else {
            Err(RunError::MissingHook { action: action.into(), hook })
        }
    };
    for step in plan.steps.iter().chain(&plan.rollback) {
        if let StepKind::Fault(a) = &step.kind {
            let d = a.describe();
            match a {
                FaultAction::KillSite { .. } => (need("kill_site", &d)?, need("start_site", &d)?),
                FaultAction::PauseSite { .. } => (need("pause_site", &d)?, need("resume_site", &d)?),
                FaultAction::StopService { .. } | FaultAction::DnsDown { .. } => {
                    (need("stop_service", &d)?, need("start_service", &d)?)
                }
                FaultAction::Partition { .. } => (need("partition", &d)?, need("heal_partition", &d)?),
                FaultAction::DegradeLink { .. } => (need("degrade_link", &d)?, need("heal_link", &d)?),
                FaultAction::Switchover { .. } | FaultAction::Failback if target.control == ControlPlane::None => {
                    (need("switchover", &d)?, ())
                }
                FaultAction::TakeBackup | FaultAction::Tamper { .. } | FaultAction::RestoreFromBackup
                    if target.control == ControlPlane::None =>
                {
                    return Err(needs_admin_api(&d));
                }
                FaultAction::Restore { .. }
                | FaultAction::Switchover { .. }
                | FaultAction::Failback
                | FaultAction::TakeBackup
                | FaultAction::Tamper { .. }
                | FaultAction::RestoreFromBackup => ((), ()),
            };
        }
        if let StepKind::Verify(Verification::NothingLostToTamper) = &step.kind {
            if target.control == ControlPlane::None {
                return Err(needs_admin_api(&Verification::NothingLostToTamper.describe()));
            }
        }
    }
    if target.control == ControlPlane::None && plan.readiness.backup_age_max_s.is_some() {
        return Err(needs_admin_api("check the backup age (readiness.backup_age_max_s)"));
    }
    if target.dns_servers().is_empty() {
        return Err(RunError::Setup("the target has no DNS server: the drill resolves MX and mail. through it".into()));
    }
    Ok(())
}

fn needs_admin_api(what: &str) -> RunError {
    RunError::Setup(format!(
        "the plan would {what}, which needs maildr's admin API; the deployment has `control = \"none\"`"
    ))
}

/// What the abort monitor needs of the target (it outlives no borrow).
#[derive(Clone)]
struct TargetSnapshot {
    apis: Vec<(String, SocketAddr)>,
    token: String,
    control: ControlPlane,
    dns: Vec<SocketAddr>,
    mail_name: String,
}

fn target_snapshot(t: &Target) -> TargetSnapshot {
    TargetSnapshot {
        apis: t.data_sites().filter_map(|s| s.api.map(|a| (s.name.clone(), a))).collect(),
        token: t.api_token.clone(),
        control: t.control,
        dns: t.dns_servers(),
        mail_name: format!("mail.{}.", t.domain),
    }
}

impl TargetSnapshot {
    /// Whether some site is primary now, as the control plane (or, without one,
    /// DNS) says; `down` sites are not asked.
    async fn has_primary(&self, down: &[String]) -> bool {
        match self.control {
            ControlPlane::AdminApi => {
                for (_, addr) in self.apis.iter().filter(|(s, _)| !down.contains(s)) {
                    let api = JsonApi { api: "admin API", addr: *addr, bearer: Some(self.token.clone()) };
                    if let Ok(members) = api.get_within::<ClusterStatus>(WATCHDOG_API, "/api/cluster/members").await {
                        return members.leader.is_some();
                    }
                }
                false
            }
            ControlPlane::None => {
                dns::addresses(&self.dns, &self.mail_name, NO_CONTROL_PLANE_ASK).await.is_ok_and(|a| !a.is_empty())
            }
        }
    }
}

/// Watches the abort conditions; says why when one holds.
async fn monitor(
    plan: Plan,
    started_at_ms: u64,
    target: TargetSnapshot,
    ledger: Arc<Mutex<Ledger>>,
    mut interrupt: watch::Receiver<bool>,
    stop_file: Option<std::path::PathBuf>,
    abort: watch::Sender<Option<String>>,
) {
    let mut primary_seen_at = now_ms();
    loop {
        if *interrupt.borrow() {
            let _ = abort.send(Some("interrupted by the operator (Ctrl-C)".into()));
            return;
        }
        if let Some(order) = stop_file.as_deref().and_then(crate::guard::stopped_at) {
            let _ = abort.send(Some(format!("global stop: {}", order.describe())));
            return;
        }
        let now = now_ms();
        if now - started_at_ms > plan.abort.max_duration_ms {
            let _ = abort.send(Some(format!(
                "the drill ran longer than abort.max_duration_ms = {}",
                plan.abort.max_duration_ms
            )));
            return;
        }
        if let Some(limit) = plan.abort.no_primary_for_ms {
            let down = down_sites(&ledger);
            if target.has_primary(&down).await {
                primary_seen_at = now_ms();
            } else if now_ms() - primary_seen_at > limit {
                let _ =
                    abort.send(Some(format!("no site was primary for more than abort.no_primary_for_ms = {limit}")));
                return;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(MONITOR_EVERY) => {}
            _ = interrupt.changed() => {}
        }
    }
}

/// Sites that cannot be asked anything: killed, paused or cut off.
fn down_sites(ledger: &Mutex<Ledger>) -> Vec<String> {
    ledger.lock().expect("ledger lock").unreachable()
}

/// Ask the data sites (skipping `skip`) for the cluster's members; the first answer.
/// Without a control plane: the primary is the site DNS names for `mail.`, and a
/// member is reachable when it answers SMTP and IMAP.
async fn cluster_view(target: &Target, skip: &[String]) -> Result<ClusterView, String> {
    if target.control == ControlPlane::None {
        return view_without_control_plane(target, skip).await;
    }
    let mut errors = Vec::new();
    for site in target.data_sites().filter(|s| !skip.contains(&s.name)) {
        let Some(api) = target.api(site) else { continue };
        match api.get::<ClusterStatus>("/api/cluster/members").await {
            Ok(status) => {
                return Ok(ClusterView { asked: site.name.clone(), leader: status.leader, members: status.members });
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(if errors.is_empty() { "no data site to ask".into() } else { errors.join("; ") })
}

/// The primary as DNS names it (the first server that answers for `mail.`) and
/// each site as a client finds it.
async fn view_without_control_plane(target: &Target, skip: &[String]) -> Result<ClusterView, String> {
    let mail = format!("mail.{}.", target.domain);
    let mut answer = None;
    let mut errors = Vec::new();
    for server in target.dns_servers() {
        match dns::addresses(&[server], &mail, NO_CONTROL_PLANE_ASK).await {
            Ok(ips) => {
                answer = Some((server, ips));
                break;
            }
            Err(e) => errors.push(format!("DNS {server}: {e}")),
        }
    }
    let (server, ips) = answer.ok_or_else(|| format!("no DNS server answered for {mail}: {}", errors.join("; ")))?;
    let leader = match ips.as_slice() {
        [ip] => target.site_at(*ip).map(|s| s.name.clone()),
        _ => None,
    };
    let mut members = Vec::new();
    for site in &target.sites {
        let asked = !skip.contains(&site.name);
        let error = if asked { answers_clients(site).await.err() } else { Some("not asked (down)".into()) };
        members.push(MemberView {
            site: site.name.clone(),
            node_id: 0,
            role: site.role.name().into(),
            reachable: error.is_none(),
            error,
            state: None,
            term: None,
            leader: leader.clone(),
            last_log_index: None,
            applied_index: None,
            lag_entries: None,
            lag_seconds: None,
            lag_bytes: None,
            lag_bytes_estimated: false,
            last_heard_ms_ago: None,
            missing_bodies: None,
            status: None,
        });
    }
    Ok(ClusterView { asked: format!("DNS {server}"), leader, members })
}

/// Whether a site greets SMTP clients and accepts IMAP connections.
async fn answers_clients(site: &SiteEndpoints) -> Result<(), String> {
    for (what, addr) in [("SMTP", site.smtp), ("IMAP", site.imap)] {
        let mut stream = tokio::time::timeout(NO_CONTROL_PLANE_ASK, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| format!("{what} {addr}: no connection within {NO_CONTROL_PLANE_ASK:?}"))?
            .map_err(|e| format!("{what} {addr}: {e}"))?;
        let mut greeting = [0u8; 4];
        let read =
            tokio::time::timeout(NO_CONTROL_PLANE_ASK, tokio::io::AsyncReadExt::read(&mut stream, &mut greeting))
                .await
                .map_err(|_| format!("{what} {addr}: no greeting within {NO_CONTROL_PLANE_ASK:?}"))?
                .map_err(|e| format!("{what} {addr}: {e}"))?;
        let good = match what {
            "SMTP" => greeting[..read].starts_with(b"220"),
            _ => greeting[..read].starts_with(b"* OK"),
        };
        if !good {
            return Err(format!("{what} {addr} greeted {:?}", String::from_utf8_lossy(&greeting[..read])));
        }
    }
    Ok(())
}

impl Run<'_> {
    fn note(&mut self, phase: Option<Phase>, source: Source, kind: &str, detail: String) {
        self.timeline.push(TimelineEntry { at_ms: now_ms(), phase, source, kind: kind.into(), detail });
    }

    fn finding(&mut self, severity: Severity, phase: Option<Phase>, title: &str, evidence: String) {
        self.findings.push(Finding { severity, phase, title: title.into(), evidence });
    }

    /// Show `phase` and `step`; a change of phase is told to the phase hook.
    fn set_live(&self, phase: Option<Phase>, step: &str) {
        let counters = self.flows.as_ref().map(Flows::counters);
        let entered = {
            let mut live = self.opts.live.lock().expect("live lock");
            let entered = phase.filter(|p| live.phase != Some(*p));
            live.phase = phase;
            live.step = step.to_string();
            if let Some(c) = counters {
                live.counters = c;
            }
            entered
        };
        if let (Some(phase), Some(hook)) = (entered, &self.opts.on_phase) {
            hook(phase, step);
        }
    }

    /// Update the probe counters of the progress line.
    fn refresh_live(&self) {
        if let Some(f) = &self.flows {
            let counters = f.counters();
            self.opts.live.lock().expect("live lock").counters = counters;
        }
    }

    fn aborted(&self) -> Option<String> {
        self.abort.borrow().clone()
    }

    fn down(&self) -> Vec<String> {
        down_sites(&self.ledger)
    }

    async fn sleep_watching(&mut self, ms: u64) {
        let until = now_ms() + ms;
        while now_ms() < until && self.aborted().is_none() {
            self.refresh_live();
            tokio::time::sleep(POLL.min(Duration::from_millis(until.saturating_sub(now_ms())))).await;
        }
    }

    fn skip(&mut self, steps: &[Step], rollback: bool, from: usize) {
        let base = if rollback { self.plan.steps.len() } else { 0 };
        for (i, step) in steps.iter().enumerate().skip(from) {
            let detail = "not run: the drill stopped before this step".to_string();
            self.steps.push(step_result(base + i + 1, step, rollback, None, StepOutcome::Skipped, detail));
        }
    }

    /// Run steps in order; the abort reason when the drill must stop.
    async fn steps(&mut self, steps: &[Step], rollback: bool) -> Option<String> {
        let base = if rollback { self.plan.steps.len() } else { 0 };
        for (i, step) in steps.iter().enumerate() {
            if !rollback {
                if let Some(why) = self.aborted() {
                    self.skip(steps, rollback, i);
                    return Some(why);
                }
            }
            self.set_live(Some(step.phase), &step.name);
            let started = now_ms();
            let result = self.step(step).await;
            let (outcome, detail) = match &result {
                Ok(d) => (StepOutcome::Done, d.clone()),
                Err(StepFailure::NotApplicable(why)) => (StepOutcome::Skipped, format!("not run: {why}")),
                Err(StepFailure::Failed(d)) | Err(StepFailure::Abort(d)) => (StepOutcome::Failed, d.clone()),
            };
            self.note(
                Some(step.phase),
                Source::Drill,
                match outcome {
                    StepOutcome::Done => "step_done",
                    StepOutcome::Skipped => "step_skipped",
                    StepOutcome::Failed => "step_failed",
                },
                format!("{}: {detail}", step.name),
            );
            self.steps.push(step_result(base + i + 1, step, rollback, Some(started), outcome, detail.clone()));
            if let Err(failure) = result {
                if matches!(failure, StepFailure::NotApplicable(_)) {
                    continue;
                }
                let title = format!("Step {} failed: {}", base + i + 1, step.name);
                self.finding(Severity::Critical, Some(step.phase), &title, format!("{}: {detail}", step.describe()));
                if !rollback {
                    match failure {
                        StepFailure::Abort(why) => {
                            self.skip(steps, rollback, i + 1);
                            return Some(why);
                        }
                        // A wait that timed out leaves the later steps without their
                        // premise: skip them and go to the rollback.
                        StepFailure::Failed(_) if matches!(step.kind, StepKind::Wait { .. } | StepKind::Fault(_)) => {
                            self.skip(steps, rollback, i + 1);
                            return None;
                        }
                        StepFailure::Failed(_) | StepFailure::NotApplicable(_) => {}
                    }
                }
            }
        }
        None
    }

    async fn step(&mut self, step: &Step) -> Result<String, StepFailure> {
        match &step.kind {
            StepKind::Fault(action) => {
                if action.is_fault() {
                    self.ready_for(step.phase, action).await.map_err(StepFailure::Abort)?;
                    if self.queue_before.is_none() && self.plan_checks_queue() {
                        let primary = self.cast.primary.clone();
                        let seen = self.read_queue(&primary).await;
                        let what = match &seen {
                            Ok(q) => format!(
                                "the outbound queue at {} holds {} messages before the first fault",
                                q.site, q.list.total
                            ),
                            Err(e) => format!("the outbound queue could not be read before the first fault: {e}"),
                        };
                        self.note(Some(step.phase), Source::Drill, "queue", what);
                        self.queue_before = Some(seen);
                    }
                    // Dense samples from just before the fault.
                    if let Some(flows) = &self.flows {
                        flows.fault_injected();
                    }
                }
                self.act(step.phase, action).await.map_err(StepFailure::Failed)
            }
            StepKind::Wait { condition, timeout_ms } => self.wait(condition, *timeout_ms).await,
            StepKind::Verify(check) => self.verify(check).await,
            StepKind::Manual { prompt } => {
                let confirm = self.opts.confirm.clone();
                let prompt = prompt.clone();
                let answer = tokio::task::spawn_blocking(move || confirm(&prompt))
                    .await
                    .map_err(|e| StepFailure::Abort(format!("the confirmation prompt failed: {e}")))?;
                match answer {
                    Ok(by) => {
                        self.confirmations.push(format!("{}: {} (confirmed by {by})", step.name, step.describe()));
                        (self.opts.audit)(
                            "manual_confirmed",
                            json!({ "drill_id": self.opts.drill_id, "step": step.name, "by": by }),
                        );
                        Ok(format!("confirmed by {by}"))
                    }
                    Err(why) => Err(StepFailure::Abort(format!("manual step not confirmed: {why}"))),
                }
            }
        }
    }

    // ------------------------------------------------------------- faults

    /// The readiness gate before `action` (see [`readiness`]): `Err` names why the
    /// deployment cannot take it now, and the drill aborts without injecting it.
    async fn ready_for(&mut self, phase: Phase, action: &FaultAction) -> Result<(), String> {
        let not_ready = |why: String| format!("not ready for \"{}\": {why}", action.describe());
        if let Some(other) = &self.opts.other_drill {
            return Err(not_ready(other.clone()));
        }
        if let Some(order) = self.opts.stop_file.as_deref().and_then(crate::guard::stopped_at) {
            return Err(not_ready(order.describe()));
        }
        let takes_out = action.takes_out().map(|r| self.cast.name(r)).transpose().map_err(|e| e.to_string())?;
        let doing = match (&takes_out, action) {
            (Some(site), FaultAction::KillSite { .. }) => format!("killing {site}"),
            (Some(site), FaultAction::PauseSite { .. }) => format!("pausing {site}"),
            (Some(site), _) => format!("cutting {site} off"),
            (None, _) => action.describe(),
        };
        let intended = readiness::Intended { doing, takes_out };
        let down = self.down();
        // A verdict of "not ready" is confirmed by fresh looks before the drill
        // aborts: one status request lost on a link an earlier step of this drill
        // made lossy says nothing about whether the deployment can take the fault.
        let mut look = 1;
        loop {
            let verdict = match cluster_view(self.target, &down).await {
                Err(e) => Err(format!("no data site answered: {e}")),
                Ok(view) => match self.target.control {
                    ControlPlane::AdminApi => readiness::check(&view.members, &down, &intended, &self.plan.readiness),
                    ControlPlane::None => readiness::check_sites_answer(&view.members, &down, &intended),
                }
                .map_err(|e| e.0),
            };
            match verdict {
                Ok(()) => break,
                Err(why) if look >= READINESS_LOOKS => return Err(not_ready(why)),
                Err(why) => {
                    self.note(Some(phase), Source::Drill, "ready", format!("look {look} of {READINESS_LOOKS}: {why}"));
                    look += 1;
                    tokio::time::sleep(Duration::from_millis(READINESS_LOOK_PAUSE_MS)).await;
                }
            }
        }
        if self.plan.readiness.backup_age_max_s.is_some() {
            let api = self.primary_api().map_err(&not_ready)?;
            let list: BackupList =
                api.get("/api/backups").await.map_err(|e| not_ready(format!("listing backups: {e}")))?;
            let newest = list.backups.iter().map(|b| b.taken_at_ms).max();
            let age_s = newest.map(|at| now_ms().saturating_sub(at) / 1000);
            readiness::check_backup_age(age_s, &self.plan.readiness).map_err(|e| not_ready(e.0))?;
        }
        self.note(Some(phase), Source::Drill, "ready", format!("the deployment can take: {}", intended.doing));
        Ok(())
    }

    async fn act(&mut self, phase: Phase, action: &FaultAction) -> Result<String, String> {
        let name = |r: &SiteRef| self.cast.name(r).map_err(|e| e.to_string());
        let started = now_ms();
        let (fault, result) = match action {
            FaultAction::KillSite { site } => {
                let s = name(site)?;
                (Some(Fault::Killed(s.clone())), self.target.injector.kill(&s).await)
            }
            FaultAction::PauseSite { site } => {
                let s = name(site)?;
                (Some(Fault::Paused(s.clone())), self.target.injector.pause(&s).await)
            }
            FaultAction::StopService { site, service } => {
                let s = name(site)?;
                (
                    Some(Fault::ServiceStopped(s.clone(), *service)),
                    self.target.injector.stop_service(&s, *service).await,
                )
            }
            FaultAction::DnsDown { site } => {
                let s = name(site)?;
                (
                    Some(Fault::ServiceStopped(s.clone(), Service::Dns)),
                    self.target.injector.stop_service(&s, Service::Dns).await,
                )
            }
            FaultAction::Partition { site } => {
                let s = name(site)?;
                (Some(Fault::Partitioned(s.clone())), self.target.injector.partition(&s).await)
            }
            FaultAction::DegradeLink { between, latency_ms, jitter_ms, loss_percent } => {
                let (a, b) = (name(&between[0])?, name(&between[1])?);
                (
                    Some(Fault::Degraded(a.clone(), b.clone())),
                    self.target.injector.degrade(&a, &b, *latency_ms, *jitter_ms, *loss_percent).await,
                )
            }
            FaultAction::Restore { site } => {
                let only = site.as_ref().map(name).transpose()?;
                return Ok(self.restore(phase, only.as_deref()).await);
            }
            FaultAction::Switchover { to } => {
                let to = name(to)?;
                return self.switchover(phase, &to, false).await;
            }
            FaultAction::Failback => {
                let to = self.cast.primary.clone();
                return self.switchover(phase, &to, true).await;
            }
            FaultAction::TakeBackup => return self.take_backup(phase).await,
            FaultAction::Tamper { forged } => return self.tamper(phase, *forged).await,
            FaultAction::RestoreFromBackup => return self.restore_from_backup(phase).await,
        };
        let fault = fault.expect("every remaining action puts a fault on");
        match result {
            Ok(evidence) => {
                if action.is_fault() {
                    self.first_fault_at_ms.get_or_insert(started);
                }
                if action.starts_outage() && self.fault_at_ms.is_none() {
                    self.fault_at_ms = Some(started);
                }
                self.ledger.lock().expect("ledger lock").active.push(fault.clone());
                self.note(Some(phase), Source::Drill, "fault", format!("{}: {evidence}", fault.describe()));
                (self.opts.audit)(
                    "fault",
                    json!({ "drill_id": self.opts.drill_id, "action": action.describe(), "fault": fault.describe() }),
                );
                Ok(evidence)
            }
            Err(e) => {
                // A failed injection may have half-happened (a link set, the next
                // not): keep it in the ledger so the rollback undoes it.
                self.ledger.lock().expect("ledger lock").active.push(fault);
                Err(e)
            }
        }
    }

    /// Undo the faults on `site` (all faults without one), newest first.
    async fn restore(&mut self, phase: Phase, site: Option<&str>) -> String {
        let todo: Vec<Fault> = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            let (undo, keep): (Vec<Fault>, Vec<Fault>) =
                ledger.active.drain(..).partition(|f| site.is_none_or(|s| f.involves(s)));
            ledger.active = keep;
            undo
        };
        let mut done = Vec::new();
        for fault in todo.iter().rev() {
            match self.target.injector.undo(fault).await {
                Ok(_) => done.push(format!("{} undone", fault.describe())),
                Err(e) => {
                    done.push(format!("{} NOT undone: {e}", fault.describe()));
                    self.finding(
                        Severity::Critical,
                        Some(phase),
                        "A fault could not be undone",
                        format!("{}: {e}", fault.describe()),
                    );
                }
            }
        }
        let detail = if done.is_empty() { "nothing to restore".to_string() } else { done.join("; ") };
        self.note(Some(phase), Source::Drill, "restore", detail.clone());
        (self.opts.audit)("restore", json!({ "drill_id": self.opts.drill_id, "detail": detail }));
        detail
    }

    async fn undo_all(&mut self, why: &str) {
        if !self.ledger.lock().expect("ledger lock").active.is_empty() {
            let detail = self.restore(Phase::Review, None).await;
            self.note(Some(Phase::Review), Source::Drill, "restore", format!("{why}: {detail}"));
        }
    }

    async fn switchover(&mut self, phase: Phase, to: &str, failback: bool) -> Result<String, String> {
        if self.target.control == ControlPlane::None {
            return self.switchover_by_hook(phase, to, failback).await;
        }
        let started = now_ms();
        let deadline = started + u64::try_from(SWITCHOVER_RETRY.as_millis()).unwrap_or(u64::MAX);
        let mut last = String::new();
        let mut refusals = Vec::new();
        while now_ms() < deadline {
            let down = self.down();
            for site in self.target.data_sites().filter(|s| !down.contains(&s.name)) {
                let Some(api) = self.target.api(site) else { continue };
                let request = SwitchoverRequest { to: to.to_string() };
                let answer: Result<SwitchoverReport, _> =
                    api.call_within(SLOW_API, Method::POST, "/api/cluster/switchover", &request).await;
                match answer {
                    Ok(report) => {
                        if !failback && self.fault_at_ms.is_none() {
                            self.fault_at_ms = Some(started);
                        }
                        let detail = format!(
                            "{to} is primary in term {} after {} ms; writes unavailable for {} ms (measured by the old primary){}",
                            report.term,
                            now_ms() - started,
                            report.unavailable_ms,
                            if refusals.is_empty() {
                                String::new()
                            } else {
                                format!("; refused {} time(s) first, last: {}", refusals.len(), refusals.join(" | "))
                            }
                        );
                        self.note(
                            Some(phase),
                            Source::Drill,
                            if failback { "failback" } else { "switchover" },
                            detail.clone(),
                        );
                        (self.opts.audit)(
                            if failback { "failback" } else { "switchover" },
                            json!({ "drill_id": self.opts.drill_id, "to": to, "report": report }),
                        );
                        return Ok(detail);
                    }
                    Err(e) => {
                        last = e.to_string();
                        if refusals.len() < 5 {
                            refusals.push(format!("{} ms: {last}", now_ms() - started));
                        }
                    }
                }
            }
            // Refused while the target catches up: ask again.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("switchover to {to} refused for {} s: {last}", SWITCHOVER_RETRY.as_secs()))
    }

    /// A planned switchover through the deployment's `switchover` hook.
    async fn switchover_by_hook(&mut self, phase: Phase, to: &str, failback: bool) -> Result<String, String> {
        let started = now_ms();
        let evidence = self.target.injector.switchover(to).await?;
        if !failback && self.fault_at_ms.is_none() {
            self.fault_at_ms = Some(started);
        }
        let kind = if failback { "failback" } else { "switchover" };
        let detail = format!("{to} made primary by the deployment's hook in {} ms: {evidence}", now_ms() - started);
        self.note(Some(phase), Source::Drill, kind, detail.clone());
        (self.opts.audit)(kind, json!({ "drill_id": self.opts.drill_id, "to": to, "hook": evidence }));
        Ok(detail)
    }

    // ------------------------------------------------------------- waits

    async fn wait(&mut self, condition: &WaitCondition, timeout_ms: u64) -> Result<String, StepFailure> {
        let started = now_ms();
        if let WaitCondition::Elapsed { ms } = condition {
            self.sleep_watching(*ms).await;
            return match self.aborted() {
                Some(why) => Err(StepFailure::Abort(why)),
                None => Ok(format!("{ms} ms passed")),
            };
        }
        loop {
            if let Some(why) = self.aborted() {
                return Err(StepFailure::Abort(why));
            }
            let last = match self.holds(condition, started).await {
                Ok(evidence) => {
                    if self.target.control == ControlPlane::None && *condition == WaitCondition::NewPrimary {
                        // No event log says when the deployment moved: what the
                        // drill saw is the evidence (polled every POLL).
                        self.observed.push(ClusterEvent {
                            at_ms: now_ms(),
                            kind: "dns_served".into(),
                            site: None,
                            detail: format!("seen by the drill: {evidence}"),
                        });
                    }
                    return Ok(format!("after {} ms: {evidence}", now_ms() - started));
                }
                Err(why) => why,
            };
            if now_ms() - started >= timeout_ms {
                return Err(StepFailure::Failed(format!("not within {timeout_ms} ms; last seen: {last}")));
            }
            self.refresh_live();
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the condition holds now: the evidence, or what is missing.
    async fn holds(&self, condition: &WaitCondition, since_ms: u64) -> Result<String, String> {
        match condition {
            WaitCondition::NewPrimary => {
                let view = cluster_view(self.target, &self.down()).await?;
                match view.leader {
                    Some(l) if l != self.cast.primary && self.down().contains(&l) => {
                        Err(format!("{} names {l}, which is down", view.asked))
                    }
                    Some(l) if l != self.cast.primary => Ok(format!("{l} is primary (asked {})", view.asked)),
                    Some(l) => Err(format!("{} still reports {l} as primary", view.asked)),
                    None => Err(format!("{} knows no primary", view.asked)),
                }
            }
            WaitCondition::PrimaryIs { site } => {
                let want = self.cast.name(site).map_err(|e| e.to_string())?;
                let view = cluster_view(self.target, &self.down()).await?;
                match view.leader {
                    Some(l) if l == want => Ok(format!("{l} is primary (asked {})", view.asked)),
                    other => Err(format!("{} reports primary {other:?}", view.asked)),
                }
            }
            WaitCondition::DnsFollowsPrimary => self.dns_follows_primary().await,
            WaitCondition::MailFlows => {
                let (samples, _) = self.flows.as_ref().map(Flows::snapshot).unwrap_or_default();
                let ok = |p| samples.iter().any(|s| s.protocol == p && s.at_ms >= since_ms && s.outcome.is_ok());
                match (ok(crate::report::Protocol::Smtp), ok(crate::report::Protocol::Imap)) {
                    (true, true) => Ok("an SMTP 250 via MX and an IMAP fetch via mail. since the step began".into()),
                    (smtp, imap) => {
                        Err(format!("since the step began: SMTP 250 via MX {smtp}, IMAP fetch via mail. {imap}"))
                    }
                }
            }
            WaitCondition::AllHealthy { lag_entries_max } if self.target.control == ControlPlane::None => {
                let view = cluster_view(self.target, &[]).await?;
                let bad: Vec<String> =
                    view.members.iter().filter_map(|m| m.error.as_ref().map(|e| format!("{}: {e}", m.site))).collect();
                match (&view.leader, bad.is_empty()) {
                    (Some(primary), true) => Ok(format!(
                        "every site answers SMTP and IMAP, {} names {primary} primary; replication lag is not \
                         measurable without a control plane (lag_entries_max = {lag_entries_max} not judged)",
                        view.asked
                    )),
                    (None, _) => Err(format!("{} names no single site for mail.", view.asked)),
                    (Some(_), false) => Err(format!("not answering: {}", bad.join(", "))),
                }
            }
            WaitCondition::AllHealthy { lag_entries_max } => {
                let view = cluster_view(self.target, &[]).await?;
                let bad: Vec<String> = view
                    .members
                    .iter()
                    .filter(|m| !m.reachable || m.lag_entries.is_none_or(|l| l > *lag_entries_max))
                    .map(|m| format!("{} (reachable {}, lag {:?})", m.site, m.reachable, m.lag_entries))
                    .collect();
                if view.leader.is_some() && bad.is_empty() && !view.members.is_empty() {
                    Ok(format!("every member reachable with lag at most {lag_entries_max} (asked {})", view.asked))
                } else {
                    Err(format!("primary {:?}; not healthy: {}", view.leader, bad.join(", ")))
                }
            }
            WaitCondition::Elapsed { .. } => Ok(String::new()),
        }
    }

    async fn dns_follows_primary(&self) -> Result<String, String> {
        let down = self.down();
        let view = cluster_view(self.target, &down).await?;
        let primary = view.leader.ok_or_else(|| format!("{} knows no primary", view.asked))?;
        let primary_ip =
            self.target.site(&primary).map(|s| s.ip).ok_or_else(|| format!("unknown primary {primary}"))?;
        let (dns_down, dead) = {
            let ledger = self.ledger.lock().expect("ledger lock");
            // A cut-off site still answers clients; only a dead one must leave the MX.
            (ledger.dns_stopped(), ledger.dead())
        };
        if dead.contains(&primary) {
            return Err(format!("{} names {primary} primary, which is down", view.asked));
        }
        // Killed or paused sites answer nothing; a cut-off site still answers
        // clients, so its DNS must either be silent or agree with the majority.
        // Servers outside the sites (a provider's) must always answer.
        let mut servers: Vec<(String, SocketAddr, bool)> = self
            .target
            .data_sites()
            .filter(|s| !dead.contains(&s.name) && !dns_down.contains(&s.name))
            .filter_map(|s| s.dns.map(|d| (format!("{}'s DNS", s.name), d, down.contains(&s.name))))
            .collect();
        servers.extend(self.target.extra_dns.iter().map(|d| (format!("DNS {d}"), *d, false)));
        let mut seen = Vec::new();
        for (label, server, cut_off) in servers {
            let timeout = Duration::from_secs(1);
            let mail = match dns::addresses(&[server], &format!("mail.{}.", self.target.domain), timeout).await {
                Ok(m) => m,
                Err(e) if cut_off => {
                    seen.push(format!("{label} (cut off) withdrawn: {e}"));
                    continue;
                }
                Err(e) => return Err(format!("{label}: {e}")),
            };
            let mx = dns::exchanges(&[server], &format!("{}.", self.target.domain), timeout)
                .await
                .map_err(|e| format!("{label}: {e}"))?;
            let mut mx_sites = Vec::new();
            for host in &mx {
                let ips = dns::addresses(&[server], host, timeout).await.map_err(|e| format!("{label}: {e}"))?;
                mx_sites.extend(
                    ips.iter().map(|ip| self.target.site_at(*ip).map(|s| s.name.clone()).unwrap_or(ip.to_string())),
                );
            }
            let mail_sites: Vec<String> = mail
                .iter()
                .map(|ip| self.target.site_at(*ip).map(|s| s.name.clone()).unwrap_or(ip.to_string()))
                .collect();
            let shown = format!("{label}: mail. → {}, MX → {}", mail_sites.join(","), mx_sites.join(","));
            if mail != [primary_ip] {
                return Err(format!("{shown}; the primary is {primary}"));
            }
            if mx_sites.first() != Some(&primary) {
                return Err(format!("{shown}; the first MX should be the primary {primary}"));
            }
            if let Some(dead) = mx_sites.iter().find(|s| dead.contains(s)) {
                return Err(format!("{shown}; {dead} is down"));
            }
            seen.push(shown);
        }
        if seen.is_empty() {
            return Err("no DNS server of a live data site, nor of the deployment, to ask".into());
        }
        Ok(seen.join("; "))
    }

    // ------------------------------------------------------------- checks

    async fn verify(&mut self, check: &Verification) -> Result<String, StepFailure> {
        match check {
            Verification::MailRoundTrip => self.mail_round_trip().await.map_err(StepFailure::Failed),
            Verification::SiteRefusesMail { site } => {
                let name = self.cast.name(site).map_err(|e| StepFailure::Failed(e.to_string()))?;
                self.site_refuses_mail(&name).await.map_err(StepFailure::Failed)
            }
            Verification::ClusterConsistent if self.target.control == ControlPlane::None => {
                self.same_mail_everywhere().await.map_err(StepFailure::Failed)
            }
            Verification::ClusterConsistent => self.cluster_consistent().await.map_err(StepFailure::Failed),
            Verification::NothingLostToTamper => self.nothing_lost_to_tamper().await.map_err(StepFailure::Failed),
            Verification::QueueIntact if self.target.control == ControlPlane::None => Err(StepFailure::NotApplicable(
                "the deployment has no control plane through which the drill can read its outbound queue".into(),
            )),
            Verification::QueueIntact => self.queue_intact().await.map_err(StepFailure::Failed),
            Verification::NoAcknowledgedLoss => {
                let (_, messages) = self.flows.as_ref().map(Flows::snapshot).unwrap_or_default();
                let acked: Vec<Message> = messages.into_iter().filter(|m| m.acknowledged.is_some()).collect();
                // A follower behind a slow link applies what was acknowledged later
                // than the primary: wait until every live site has applied what was
                // committed now, then read. (Without a control plane there is no
                // log to wait for: the read is what the sites hold.)
                if self.target.control == ControlPlane::AdminApi {
                    self.wait_applied_everywhere().await.map_err(StepFailure::Failed)?;
                }
                let deadline = now_ms() + u64::try_from(READBACK_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
                loop {
                    let down = self.down();
                    let found = self.reconcile(&acked, Some(&down)).await;
                    let rpo = measure::rpo(&acked, &found);
                    if rpo.lost == 0 && !found.is_empty() {
                        self.missing_during_outage.get_or_insert(0);
                        return Ok(format!(
                            "all {} acknowledged messages present at {}",
                            rpo.acknowledged,
                            rpo.reconciled_at.join(", ")
                        ));
                    }
                    if now_ms() > deadline {
                        let most = self.missing_during_outage.unwrap_or(0).max(rpo.lost);
                        self.missing_during_outage = Some(most);
                        let why = format!(
                            "{} of {} acknowledged messages missing at {} (e.g. {})",
                            rpo.lost,
                            rpo.acknowledged,
                            rpo.reconciled_at.join(", "),
                            rpo.lost_tags.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
                        );
                        return Err(if self.plan.abort.acknowledged_lost {
                            StepFailure::Abort(format!("acknowledged mail lost: {why}"))
                        } else {
                            StepFailure::Failed(why)
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }

    /// Wait until every live data site has applied the log up to the primary's last
    /// index as it stands now, for at most [`CATCH_UP_TIMEOUT`].
    async fn wait_applied_everywhere(&self) -> Result<(), String> {
        let down = self.down();
        let view = cluster_view(self.target, &down).await?;
        let Some(leader) = view.leader.clone() else { return Ok(()) };
        let Some(target) = view.members.iter().find(|m| m.site == leader).and_then(|m| m.last_log_index) else {
            return Ok(());
        };
        let deadline = now_ms() + u64::try_from(CATCH_UP_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        loop {
            let view = cluster_view(self.target, &down).await?;
            let behind: Vec<String> = view
                .members
                .iter()
                .filter(|m| m.role == "data" && !down.contains(&m.site))
                .filter(|m| m.applied_index.is_none_or(|a| a < target))
                .map(|m| format!("{} at {:?}", m.site, m.applied_index))
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if now_ms() > deadline {
                return Err(format!(
                    "not every live data site applied index {target} within {CATCH_UP_TIMEOUT:?}: {}",
                    behind.join(", ")
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The primary's admin API (as cast at the start).
    fn primary_api(&self) -> Result<JsonApi, String> {
        let site = self.target.site(&self.cast.primary).ok_or_else(|| format!("no site {}", self.cast.primary))?;
        self.target.api(site).ok_or_else(|| format!("site {} has no admin API", site.name))
    }

    async fn take_backup(&mut self, phase: Phase) -> Result<String, String> {
        let api = self.primary_api()?;
        let body = api
            .request_within(BACKUP_TIMEOUT, Method::POST, "/api/backups", None)
            .await
            .map_err(|e| format!("taking a backup: {e}"))?;
        let report: BackupReport = serde_json::from_slice(&body).map_err(|e| format!("the backup report: {e}"))?;
        let targets: Vec<String> =
            report.targets.iter().map(|t| format!("{} {}", t.target, if t.ok { "ok" } else { "FAILED" })).collect();
        let evidence = format!(
            "backup {} at log index {}: {} messages in {} ms ({})",
            report.id,
            report.applied_index,
            report.messages,
            report.duration_ms,
            targets.join(", ")
        );
        self.note(Some(phase), Source::Drill, "backup", evidence.clone());
        (self.opts.audit)("backup", json!({ "drill_id": self.opts.drill_id, "backup": report.id, "ok": report.ok }));
        if report.ok {
            Ok(evidence)
        } else {
            Err(evidence)
        }
    }

    /// The attack: log in as the MX recipient at the primary, delete every message
    /// the INBOX holds (by UID: mail arriving meanwhile is left alone) and append
    /// forged messages.
    async fn tamper(&mut self, phase: Phase, forged: u32) -> Result<String, String> {
        let site = self.target.site(&self.cast.primary).ok_or("no primary site")?.clone();
        let account = self.target.mx_recipient.clone();
        let timeout = Duration::from_millis(self.plan.probes.timeout_ms.max(5_000));
        let mail_name = format!("mail.{}", self.target.domain);
        let tls = self.tls.clone();
        let (addr, over_tls) = site.imap_endpoint(tls.is_some());
        let tls = tls.as_ref().map(|t| (t, mail_name.as_str())).filter(|_| over_tls);
        let mut session = Session::connect(addr, tls, timeout).await.map_err(|e| e.to_string())?;
        session.login(&account.address, &account.password).await.map_err(|e| e.to_string())?;
        session.select("INBOX").await.map_err(|e| e.to_string())?;
        let uids = session.uid_search("ALL").await.map_err(|e| e.to_string())?;
        let started = now_ms();
        self.tamper_at_ms = Some(started);
        self.first_fault_at_ms.get_or_insert(started);
        self.fault_at_ms.get_or_insert(started);
        let set: Vec<String> = uids.iter().map(u32::to_string).collect();
        if !set.is_empty() {
            session
                .run(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", set.join(",")))
                .await
                .map_err(|e| e.to_string())?;
            session.run("EXPUNGE").await.map_err(|e| e.to_string())?;
        }
        for i in 0..forged {
            let message = format!(
                "From: ceo@{domain}\r\nTo: {to}\r\nSubject: Forged {i}\r\n\r\nThis message replaced yours.\r\n",
                domain = self.target.domain,
                to = account.address
            );
            session
                .run(&format!("APPEND INBOX {{{}+}}\r\n{message}", message.len()))
                .await
                .map_err(|e| format!("appending a forged message: {e}"))?;
        }
        session.logout().await;
        let evidence = format!(
            "{} logged in at {}, deleted {} messages of its INBOX and appended {forged} forged ones",
            account.address,
            site.name,
            uids.len()
        );
        self.note(Some(phase), Source::Drill, "fault", evidence.clone());
        (self.opts.audit)(
            "fault",
            json!({ "drill_id": self.opts.drill_id, "action": "tamper", "deleted": uids.len() }),
        );
        Ok(evidence)
    }

    async fn restore_from_backup(&mut self, phase: Phase) -> Result<String, String> {
        let at_ms = self.tamper_at_ms.ok_or("no tamper happened before the restore")?.saturating_sub(1);
        let api = self.primary_api()?;
        let into = format!("Restored by drill {}", self.opts.drill_id);
        let request = RestoreRequest {
            account: self.target.mx_recipient.address.clone(),
            at: None,
            at_ms: Some(at_ms),
            mailbox: Some("INBOX".into()),
            into_mailbox: Some(into.clone()),
            into_account: None,
        };
        // The archive must hold the moment: wait until every target's archive reaches
        // past the attack (the attack's own changes are archived after it).
        let deadline = now_ms() + u64::try_from(BACKUP_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        loop {
            let list: BackupList = api.get("/api/backups").await.map_err(|e| format!("listing backups: {e}"))?;
            let behind: Vec<&str> = list
                .archives
                .iter()
                .filter(|a| a.last_at_ms.is_none_or(|ms| ms <= at_ms))
                .map(|a| a.target.as_str())
                .collect();
            if behind.is_empty() && !list.archives.is_empty() {
                break;
            }
            if now_ms() > deadline {
                return Err(format!("the archive on {} never reached the moment of the attack", behind.join(", ")));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let started = now_ms();
        let report: RestoreReport = api
            .call_within(BACKUP_TIMEOUT, Method::POST, "/api/restore", &request)
            .await
            .map_err(|e| format!("the restore: {e}"))?;
        let done = now_ms();
        self.restored_mailbox = Some(into.clone());
        let since_attack = done.saturating_sub(self.tamper_at_ms.unwrap_or(done));
        let evidence = format!(
            "restored {} messages into {into:?} as of log index {} ({}) from backup {} plus {} archived entries: the \
             restore took {} ms, {} ms after the attack (restore RTO)",
            report.messages,
            report.applied_index,
            report.stands_at,
            report.backup,
            report.archived_entries_replayed,
            done - started,
            since_attack
        );
        self.note(Some(phase), Source::Drill, "restore", evidence.clone());
        (self.opts.audit)(
            "restore",
            json!({ "drill_id": self.opts.drill_id, "into": into, "messages": report.messages, "rto_ms": since_attack }),
        );
        Ok(evidence)
    }

    /// Every message acknowledged to the MX recipient before the tamper is in the
    /// restored mailbox or the INBOX at the primary.
    async fn nothing_lost_to_tamper(&mut self) -> Result<String, String> {
        let tamper_at = self.tamper_at_ms.ok_or("no tamper happened")?;
        let restored = self.restored_mailbox.clone().ok_or("nothing was restored")?;
        let (_, messages) = self.flows.as_ref().map(Flows::snapshot).unwrap_or_default();
        let before: Vec<&Message> = messages
            .iter()
            .filter(|m| m.recipient == self.target.mx_recipient.address)
            .filter(|m| m.acknowledged.as_ref().is_some_and(|(at, _)| *at < tamper_at))
            .collect();
        let site = self.target.site(&self.cast.primary).ok_or("no primary site")?.clone();
        let account = self.target.mx_recipient.clone();
        let timeout = Duration::from_millis(self.plan.probes.timeout_ms.max(5_000));
        let mail_name = format!("mail.{}", self.target.domain);
        let tls = self.tls.as_ref().map(|t| (t, mail_name.as_str()));
        let inbox_mark = self.marks.get(&(site.name.clone(), account.address.clone(), "INBOX".into())).copied();
        let found = read_tags_in(
            &site,
            tls,
            (&account.address, &account.password),
            timeout,
            &self.opts.drill_id,
            &["INBOX", restored.as_str()],
            &[inbox_mark, None],
        )
        .await?;
        let missing: Vec<&str> =
            before.iter().filter(|m| !found.contains_key(&m.tag)).map(|m| m.tag.as_str()).collect();
        if missing.is_empty() {
            Ok(format!(
                "all {} messages acknowledged before the attack are back (RPO 0), read over IMAP at {}",
                before.len(),
                site.name
            ))
        } else {
            Err(format!(
                "{} of {} messages acknowledged before the attack are missing after the restore (RPO {}), e.g. {}",
                missing.len(),
                before.len(),
                missing.len(),
                missing.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            ))
        }
    }

    fn plan_checks_queue(&self) -> bool {
        self.plan.steps.iter().any(|s| matches!(s.kind, StepKind::Verify(Verification::QueueIntact)))
            && self.target.control == ControlPlane::AdminApi
    }

    /// The outbound queue as `site`'s admin API lists it.
    async fn read_queue(&self, site: &str) -> Result<QueueSeen, String> {
        let endpoints = self.target.site(site).ok_or_else(|| format!("no site {site}"))?;
        let api = self.target.api(endpoints).ok_or_else(|| format!("site {site} has no admin API"))?;
        let list: QueueList = api.get("/api/queue").await.map_err(|e| format!("GET /api/queue at {site}: {e}"))?;
        if list.total > list.messages.len() as u64 {
            return Err(format!(
                "{site}'s queue holds {} messages, more than one listing shows ({}): the drill cannot follow each",
                list.total,
                list.messages.len()
            ));
        }
        Ok(QueueSeen { site: site.to_string(), list })
    }

    /// Every message queued at the primary before the first fault is queued at the
    /// primary now, or the store counted it as leaving the queue.
    async fn queue_intact(&mut self) -> Result<String, String> {
        let before = match &self.queue_before {
            Some(Ok(seen)) => seen,
            Some(Err(e)) => return Err(format!("the queue before the fault is unknown: {e}")),
            None => return Err("no fault was injected before this check: nothing to compare".into()),
        };
        let down = self.down();
        let view = cluster_view(self.target, &down).await?;
        let primary = view.leader.ok_or_else(|| format!("{} knows no primary", view.asked))?;
        let after = self.read_queue(&primary).await?;
        let (ids_before, ids_after) = (before.ids(), after.ids());
        let still_queued = ids_before.intersection(&ids_after).count() as u64;
        let gone = ids_before.len() as u64 - still_queued;
        let left = |l: &maildr_api_types::queue::QueueLeft| l.messages_finished + l.messages_deleted;
        let counted_as_left = left(&after.list.left).saturating_sub(left(&before.list.left));
        let unaccounted = gone.saturating_sub(counted_as_left);
        let account = crate::report::QueueAccount {
            before_site: before.site.clone(),
            before_messages: ids_before.len() as u64,
            before_recipients: before.list.messages.iter().map(|m| m.recipients.len() as u64).sum(),
            after_site: after.site.clone(),
            after_messages: after.list.total,
            still_queued,
            gone,
            counted_as_left,
            unaccounted,
        };
        let summary = format!(
            "the queue at {} held {} messages ({} recipients) before the fault; at {} now: {} of them still \
             queued, {} gone, {} counted as left ({} finished, {} deleted since the store began), {} unaccounted",
            account.before_site,
            account.before_messages,
            account.before_recipients,
            account.after_site,
            account.still_queued,
            account.gone,
            account.counted_as_left,
            after.list.left.messages_finished,
            after.list.left.messages_deleted,
            account.unaccounted
        );
        self.queue_account = Some(account);
        if unaccounted == 0 {
            Ok(summary)
        } else {
            Err(format!("queued mail vanished: {summary}"))
        }
    }

    fn next_tag(&mut self, what: &str) -> String {
        self.check_seq += 1;
        format!("{}-{what}-{:03}", self.opts.drill_id, self.check_seq)
    }

    /// Submit through `mail.` with AUTH, then read it back through `mail.`.
    async fn mail_round_trip(&mut self) -> Result<String, String> {
        let tag = self.next_tag("roundtrip");
        let timeout = Duration::from_millis(self.plan.probes.timeout_ms);
        let servers = self.target.dns_servers();
        let mail_name = format!("mail.{}", self.target.domain);
        let ips = dns::Resolver::new(servers)
            .addresses(&format!("{mail_name}."), timeout)
            .await
            .map_err(|e| e.to_string())?
            .answer;
        let site = ips
            .iter()
            .find_map(|ip| self.target.site_at(*ip))
            .ok_or_else(|| format!("{mail_name} resolves to {ips:?}, no site"))?
            .clone();
        let recipient = self.target.submission_recipient.clone();
        let data = flow::probe_message(&self.opts.drill_id, &self.target.domain, &tag, &recipient.address);
        let security = match &self.tls {
            Some(tls) => Security::StartTls { tls: tls.clone(), server_name: mail_name.clone() },
            None => Security::Plain,
        };
        let login = Login { user: self.target.sender.address.clone(), password: self.target.sender.password.clone() };
        let to = [recipient.address.clone()];
        let envelope = Envelope { helo: "drill.maildr.invalid", from: &login.user, to: &to, data: &data };
        // A 4xx is retried for a while, as any submitting client would.
        let give_up_at = now_ms() + u64::try_from(READBACK_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let reply = loop {
            let reply = smtp::send(site.submission, &security, Some(&login), &envelope, timeout)
                .await
                .map_err(|e| format!("submission at {}: {e}", site.name))?;
            if reply.is_transient() && now_ms() < give_up_at {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            break reply;
        };
        if !reply.is_success() {
            return Err(format!("submission at {} answered {} {}", site.name, reply.code, reply.text));
        }
        let acked_at = now_ms();
        self.record_check_message(&tag, MailFlow::Submission, &recipient.address, &site.name, acked_at);
        let deadline = acked_at + u64::try_from(READBACK_TIMEOUT.as_millis()).unwrap_or(u64::MAX);
        let mark = self.marks.get(&(site.name.clone(), recipient.address.clone(), "INBOX".into())).copied();
        loop {
            let tls = self.tls.as_ref().map(|t| (t, mail_name.as_str()));
            let login = (recipient.address.as_str(), recipient.password.as_str());
            let copies = read_tags_in(&site, tls, login, timeout, &tag, &["INBOX"], &[mark]).await;
            match copies {
                Ok(tags) if tags.contains_key(&tag) => {
                    return Ok(format!(
                        "submitted at {} ({} {}), read back over IMAP after {} ms",
                        site.name,
                        reply.code,
                        reply.text,
                        now_ms() - acked_at
                    ))
                }
                Ok(_) | Err(_) if now_ms() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
                Ok(_) => {
                    return Err(format!(
                        "acknowledged at {} but not readable over IMAP within {READBACK_TIMEOUT:?}",
                        site.name
                    ))
                }
                Err(e) => return Err(format!("acknowledged at {} but IMAP failed: {e}", site.name)),
            }
        }
    }

    fn record_check_message(&self, tag: &str, flow: MailFlow, recipient: &str, site: &str, at_ms: u64) {
        if let Some(flows) = &self.flows {
            flows.record_message(Message {
                tag: tag.into(),
                flow,
                recipient: recipient.into(),
                first_attempt_at_ms: at_ms,
                attempts: 1,
                acknowledged: Some((at_ms, site.into())),
                deferred: false,
                refused: None,
                given_up: false,
                last_reply: "250 (sent by a check)".into(),
            });
        }
    }

    /// Send one message straight to the site's MX listener: it must not say 250.
    async fn site_refuses_mail(&mut self, site: &str) -> Result<String, String> {
        let endpoints = self.target.site(site).ok_or_else(|| format!("no site {site}"))?.clone();
        let tag = self.next_tag("refusal");
        let recipient = self.target.mx_recipient.address.clone();
        let data = flow::probe_message(&self.opts.drill_id, &self.target.domain, &tag, &recipient);
        let to = [recipient.clone()];
        let envelope =
            Envelope { helo: "drill.maildr.invalid", from: "drill-sender@drill.maildr.invalid", to: &to, data: &data };
        let started = now_ms();
        match smtp::send(endpoints.smtp, &Security::Plain, None, &envelope, REFUSAL_WAIT).await {
            Ok(r) if r.is_success() => {
                self.record_check_message(&tag, MailFlow::Mx, &recipient, site, now_ms());
                Err(format!("{site} acknowledged a message ({} {}) while it should not have", r.code, r.text))
            }
            Ok(r) => Ok(format!("{site} answered {} {} after {} ms", r.code, r.text, now_ms() - started)),
            Err(e) => Ok(format!("{site} did not acknowledge: {e}")),
        }
    }

    async fn cluster_consistent(&mut self) -> Result<String, String> {
        let down = self.down();
        let mut last = String::from("no data site to ask");
        for site in self.target.data_sites().filter(|s| !down.contains(&s.name)) {
            let Some(api) = self.target.api(site) else { continue };
            let answer: Result<VerifyReport, _> =
                api.call_within(SLOW_API, Method::POST, "/api/cluster/verify", &VerifyRequest::default()).await;
            match answer {
                Ok(report) => {
                    // The report as the API sent it, for the drill's evidence.
                    let as_sent = || serde_json::to_string(&report).unwrap_or_default();
                    return if report.diverging.is_empty() && report.unreachable.is_empty() {
                        Ok(format!(
                            "{} mailboxes identical on {} at applied index {}",
                            report.mailboxes,
                            serde_json::to_string(&report.sites).unwrap_or_default(),
                            report.applied_index
                        ))
                    } else {
                        Err(format!(
                            "{} diverging mailboxes, unreachable {:?}: {}",
                            report.diverging.len(),
                            report.unreachable,
                            as_sent()
                        ))
                    };
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    }

    /// Without a control plane: every data site holds the same drill messages that
    /// were acknowledged (read over IMAP), within [`CONVERGE_BY_READING`] for the
    /// deployment's own replication to catch up.
    async fn same_mail_everywhere(&mut self) -> Result<String, String> {
        let (_, messages) = self.flows.as_ref().map(Flows::snapshot).unwrap_or_default();
        let acked: Vec<Message> = messages.into_iter().filter(|m| m.acknowledged.is_some()).collect();
        let deadline = now_ms() + u64::try_from(CONVERGE_BY_READING.as_millis()).unwrap_or(u64::MAX);
        loop {
            let down = self.down();
            let found = self.reconcile(&acked, Some(&down)).await;
            let held: Vec<(String, std::collections::BTreeSet<&str>)> = found
                .iter()
                .map(|(site, tags)| {
                    let tags = acked.iter().map(|m| m.tag.as_str()).filter(|t| tags.contains_key(*t)).collect();
                    (site.clone(), tags)
                })
                .collect();
            let differ = held.windows(2).find(|w| w[0].1 != w[1].1);
            match differ {
                None if held.len() >= 2 => {
                    let sites: Vec<&str> = held.iter().map(|(s, _)| s.as_str()).collect();
                    return Ok(format!(
                        "the same {} of {} acknowledged drill messages at {} (read over IMAP)",
                        held[0].1.len(),
                        acked.len(),
                        sites.join(", ")
                    ));
                }
                _ if now_ms() < deadline => tokio::time::sleep(Duration::from_millis(1_000)).await,
                None => return Err(format!("only {} data site(s) could be read", held.len())),
                Some(w) => {
                    let (a, b) = (&w[0], &w[1]);
                    let only_a: Vec<&&str> = a.1.difference(&b.1).take(5).collect();
                    let only_b: Vec<&&str> = b.1.difference(&a.1).take(5).collect();
                    return Err(format!(
                        "after {} s {} holds {} and {} holds {} acknowledged drill messages (only at {}: {only_a:?}; only at {}: {only_b:?})",
                        CONVERGE_BY_READING.as_secs(),
                        a.0,
                        a.1.len(),
                        b.0,
                        b.1.len(),
                        a.0,
                        b.0
                    ));
                }
            }
        }
    }

    // ------------------------------------------------------------- the end

    async fn steady_state(&mut self) -> Result<(), String> {
        let s = self.plan.steady_state.clone();
        self.set_live(Some(Phase::Confirm), "checking the steady state");
        let started = now_ms();
        let mut last = String::new();
        while now_ms() - started < s.timeout_ms {
            if let Some(why) = self.aborted() {
                return Err(why);
            }
            let healthy = if s.all_sites_healthy {
                match self.holds(&WaitCondition::AllHealthy { lag_entries_max: s.lag_entries_max }, started).await {
                    Ok(_) => self.dns_settled().await,
                    Err(e) => Err(e),
                }
            } else {
                Ok(String::new())
            };
            match healthy {
                Ok(_) => {
                    if !s.mail_round_trip {
                        self.note(Some(Phase::Confirm), Source::Drill, "steady_state", "every site healthy".into());
                        return Ok(());
                    }
                    match self.mail_round_trip().await {
                        Ok(e) => {
                            self.note(
                                Some(Phase::Confirm),
                                Source::Drill,
                                "steady_state",
                                format!("every site healthy; {e}"),
                            );
                            return Ok(());
                        }
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("not within {} ms: {last}", s.timeout_ms))
    }

    /// The committed DNS steering names the primary and no site down. A drill on
    /// a lab just started would otherwise see the steering change in the middle
    /// of its first fault, when the site the first steering called down is
    /// re-added after its hold-down. Only with a control plane that steers.
    async fn dns_settled(&self) -> Result<String, String> {
        if self.target.control == ControlPlane::None {
            return Ok(String::new());
        }
        let view = cluster_view(self.target, &[]).await?;
        let api = self.target.site(&view.asked).and_then(|s| self.target.api(s));
        let health = match api {
            Some(api) => api.get::<HealthReport>("/api/health").await.map_err(|e| e.to_string())?,
            None => return Err(format!("{} has no admin API", view.asked)),
        };
        match health.steering {
            Some(s) if s.primary == view.leader && s.down.is_empty() => {
                Ok(format!("DNS steering serial {} names {:?} primary and no site down", s.serial, s.primary))
            }
            Some(s) => Err(format!(
                "DNS steering not settled yet: serial {} names {:?} primary, {:?} down ({})",
                s.serial, s.primary, s.down, s.reason
            )),
            None => Err("no DNS steering committed yet".into()),
        }
    }

    async fn wait_converged(&self) -> Result<String, String> {
        if self.target.control == ControlPlane::None {
            return Ok("no control plane: what each site holds is read in the reconciliation".into());
        }
        let started = std::time::Instant::now();
        let mut last = String::new();
        while started.elapsed() < CONVERGE_TIMEOUT {
            match cluster_view(self.target, &[]).await {
                Ok(v) => {
                    let indexes: Vec<Option<u64>> = v.members.iter().map(|m| m.applied_index).collect();
                    let all_same = indexes.iter().all(|i| i.is_some() && *i == indexes[0]);
                    if v.leader.is_some() && v.members.iter().all(|m| m.reachable) && all_same {
                        return Ok(format!("every member at applied index {:?}", indexes[0]));
                    }
                    last = format!("primary {:?}, applied indexes {indexes:?}", v.leader);
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(format!("after {} s: {last}", CONVERGE_TIMEOUT.as_secs()))
    }

    /// Note where every reconciled INBOX stands at every data site before the
    /// drill sends anything ([`MailboxMarks`]). A site that cannot be read now is
    /// read whole later.
    async fn mark_mailboxes(&mut self) {
        let timeout = Duration::from_millis(self.plan.probes.timeout_ms.max(5_000));
        let mail_name = format!("mail.{}", self.target.domain);
        let sites: Vec<SiteEndpoints> = self.target.data_sites().cloned().collect();
        for site in sites {
            for account in self.target.reconciled_accounts() {
                let tls = self.tls.as_ref().map(|t| (t, mail_name.as_str()));
                // Without a mark the reconciliation reads the whole mailbox.
                let mark = mailbox_mark(&site, tls, &account.address, &account.password, timeout, "INBOX").await;
                if let Ok(Some(mark)) = mark {
                    self.marks.insert((site.name.clone(), account.address.clone(), "INBOX".into()), mark);
                }
            }
        }
    }

    /// Count the drill's tags in the recipients' INBOXes at every data site
    /// (except `skip`); a site that cannot be read is a finding and left out.
    async fn reconcile(&mut self, messages: &[Message], skip: Option<&[String]>) -> Found {
        let timeout = Duration::from_millis(self.plan.probes.timeout_ms.max(5_000));
        let mut found = Found::new();
        let recipients = measure::recipients(messages);
        let accounts: Vec<_> = self
            .target
            .reconciled_accounts()
            .into_iter()
            .filter(|a| recipients.iter().any(|(r, _)| *r == a.address))
            .collect();
        let sites: Vec<SiteEndpoints> =
            self.target.data_sites().filter(|s| skip.is_none_or(|skip| !skip.contains(&s.name))).cloned().collect();
        let mail_name = format!("mail.{}", self.target.domain);
        let ca = self.tls.clone();
        let tls = ca.as_ref().map(|t| (t, mail_name.as_str()));
        for site in sites {
            let mut tags = BTreeMap::new();
            let mut failed = None;
            for account in &accounts {
                let mut mailboxes = vec!["INBOX"];
                if account.address == self.target.mx_recipient.address {
                    mailboxes.extend(self.restored_mailbox.as_deref());
                }
                let marks: Vec<Option<(u32, u32)>> = mailboxes
                    .iter()
                    .map(|m| self.marks.get(&(site.name.clone(), account.address.clone(), (*m).to_string())).copied())
                    .collect();
                let read = read_tags_in(
                    &site,
                    tls,
                    (&account.address, &account.password),
                    timeout,
                    &self.opts.drill_id,
                    &mailboxes,
                    &marks,
                )
                .await;
                match read {
                    Ok(t) => {
                        for (tag, n) in t {
                            *tags.entry(tag).or_insert(0) += n;
                        }
                    }
                    Err(e) => failed = Some(format!("{} at {}: {e}", account.address, site.name)),
                }
            }
            match failed {
                None => {
                    found.insert(site.name.clone(), tags);
                }
                Some(e) if skip.is_none() => {
                    self.finding(Severity::Warning, Some(Phase::Review), "A data site could not be reconciled", e);
                }
                Some(_) => {}
            }
        }
        found
    }

    /// The control plane's events since the drill began, from every data site
    /// that answers (replicated events once, each site's own `dns_served`).
    async fn cluster_events(&self, since_ms: u64) -> Vec<ClusterEvent> {
        if self.target.control == ControlPlane::None {
            return self.observed.clone();
        }
        let mut out: Vec<ClusterEvent> = Vec::new();
        for site in self.target.data_sites() {
            let Some(api) = self.target.api(site) else { continue };
            let Ok(list) = api.get::<EventList>("/api/events").await else { continue };
            for e in list.events {
                let at_ms = e.at_ms.max(0) as u64;
                if at_ms < since_ms {
                    continue;
                }
                let event = ClusterEvent { at_ms, kind: e.kind, site: e.site, detail: e.detail };
                if !out.contains(&event) && out.len() < EVENTS_MAX {
                    out.push(event);
                }
            }
        }
        out.sort_by_key(|e| e.at_ms);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        mut self,
        source: &PlanSource,
        started_at_ms: u64,
        finished_at_ms: u64,
        abort_reason: Option<String>,
        samples: Vec<crate::report::ProbeSample>,
        messages: Vec<Message>,
        idle: Option<crate::report::IdleSummary>,
        found: Found,
        events: Vec<ClusterEvent>,
    ) -> Report {
        let rto = measure::rto(self.fault_at_ms.or(self.first_fault_at_ms), &events, &samples);
        let load = idle.map(|idle| {
            let fault = rto.fault_at_ms;
            let recovered =
                fault.map(|f| f + rto.first_smtp_ok_ms.into_iter().chain(rto.first_imap_ok_ms).max().unwrap_or(0));
            crate::report::LoadReport {
                profile: self.plan.load.clone(),
                windows: measure::load_windows(&samples, started_at_ms, fault, recovered, finished_at_ms),
                idle,
            }
        });
        let mut rpo = measure::rpo(&messages, &found);
        rpo.missing_during_outage = self.missing_during_outage;
        let gaps: Vec<_> =
            crate::report::Protocol::ALL.iter().map(|p| measure::longest_gap(&samples, *p, finished_at_ms)).collect();
        let mut smtp_latencies: Vec<u64> = samples
            .iter()
            .filter(|s| s.protocol == crate::report::Protocol::Smtp && s.outcome.is_ok())
            .map(|s| s.latency_ms)
            .collect();
        let smtp_p99_ms = measure::percentile(&mut smtp_latencies, 0.99);
        let objectives = measure::objectives(
            &self.plan.objectives,
            &Measured { rto: &rto, rpo: &rpo, reconciled: !found.is_empty(), smtp_p99_ms },
        );
        for o in objectives.iter().filter(|o| !o.met) {
            let evidence = match o.measured {
                Some(m) => format!("measured {m} {} against a target of {} {}", o.unit, o.target, o.unit),
                None => {
                    format!("never measured (target {} {}): the event or recovery was not observed", o.target, o.unit)
                }
            };
            let evidence = format!("{evidence}{}", self.objective_evidence(&o.name, &rto, &rpo, &samples));
            self.finding(Severity::Critical, None, &format!("Objective {} missed", o.name), evidence);
        }
        if rpo.lost > 0 {
            self.finding(
                Severity::Critical,
                Some(Phase::Review),
                "Acknowledged mail was lost",
                format!(
                    "{} of {} messages answered 250 are missing at {} (reconciled at {}): {}",
                    rpo.lost,
                    rpo.acknowledged,
                    "one or more data sites",
                    rpo.reconciled_at.join(", "),
                    rpo.lost_tags.iter().take(10).cloned().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if rpo.duplicated > 0 {
            self.finding(
                Severity::Warning,
                Some(Phase::Review),
                "Messages were delivered more than once",
                format!("{} acknowledged messages have more than one copy", rpo.duplicated),
            );
        }
        if rpo.given_up > 0 {
            self.finding(
                Severity::Warning,
                Some(Phase::Verify),
                "Some messages were never acknowledged",
                format!(
                    "{} messages got no 250 within the senders' retry time; they were never promised",
                    rpo.given_up
                ),
            );
        }
        // Without a control plane there is no election to record: DNS moving is
        // the evidence (dns_served, seen by the drill).
        let has_event_log = self.target.control == ControlPlane::AdminApi;
        if has_event_log && self.fault_at_ms.is_some() && rto.elect_ms.is_none() && self.injected_primary_fault() {
            self.finding(
                Severity::Warning,
                Some(Phase::Decide),
                "No election was recorded after the fault",
                "the event log shows no `elected` event after the first fault".into(),
            );
        }
        self.timeline.sort_by_key(|e| e.at_ms);
        let critical = self.findings.iter().any(|f| f.severity == Severity::Critical);
        let verdict = if abort_reason.is_some() {
            Verdict::Aborted
        } else if critical || objectives.iter().any(|o| !o.met) {
            Verdict::Failed
        } else {
            Verdict::Passed
        };
        Report {
            drill_id: self.opts.drill_id.clone(),
            plan: PlanInfo {
                name: self.plan.name.clone(),
                description: self.plan.description.clone(),
                origin: source.origin.clone(),
                sha256: source.sha256(),
            },
            verdict,
            abort_reason,
            started_at_ms,
            finished_at_ms,
            objectives,
            rto,
            rpo,
            gaps,
            steps: self.steps,
            timeline: self.timeline,
            probes: ProbeSummary { counts: measure::probe_counts(&samples), samples },
            findings: self.findings,
            approvals: self.opts.approvals.clone(),
            confirmations: self.confirmations,
            environment: environment(self.target),
            load,
            outbound_queue: self.queue_account,
            mode: None,
            tabletop: None,
            regressions: None,
        }
    }

    fn injected_primary_fault(&self) -> bool {
        self.plan.steps.iter().any(|s| {
            matches!(&s.kind, StepKind::Fault(FaultAction::KillSite { site } | FaultAction::PauseSite { site } | FaultAction::Partition { site })
                if self.cast.name(site).ok().as_deref() == Some(self.cast.primary.as_str()))
        })
    }

    /// Where to look when an objective was missed.
    fn objective_evidence(
        &self,
        name: &str,
        rto: &crate::report::Rto,
        rpo: &crate::report::Rpo,
        samples: &[crate::report::ProbeSample],
    ) -> String {
        let last_failure = |p| {
            samples
                .iter()
                .rev()
                .find(|s| s.protocol == p && !s.outcome.is_ok())
                .map(|s| format!("; last failure at {} ({}): {}", s.target, s.at_ms, s.detail))
                .unwrap_or_default()
        };
        match name {
            "rto_smtp_ms" => last_failure(crate::report::Protocol::Smtp),
            "rto_imap_ms" => {
                let dns = samples
                    .iter()
                    .rev()
                    .find(|s| s.protocol == crate::report::Protocol::Dns && s.outcome.is_ok())
                    .map(|s| format!("; DNS last answered at {}: {}", s.target, s.detail))
                    .unwrap_or_default();
                let steering = if rto.dns_committed_ms.is_none() {
                    "; no dns_committed event after the fault: DNS steering did not move mail. to the new primary"
                } else {
                    ""
                };
                format!("{}{dns}{steering}", last_failure(crate::report::Protocol::Imap))
            }
            "max_deferred" => format!("; {} messages got a 4xx or no answer at least once", rpo.deferred),
            _ => String::new(),
        }
    }
}

/// One step's line in the report; `started_at_ms` is `None` for a step not run
/// (it then has no finish time either).
fn step_result(
    index: usize,
    step: &Step,
    rollback: bool,
    started_at_ms: Option<u64>,
    outcome: StepOutcome,
    detail: String,
) -> StepResult {
    StepResult {
        index,
        phase: step.phase,
        name: step.name.clone(),
        description: step.describe(),
        rollback,
        started_at_ms,
        finished_at_ms: started_at_ms.map(|_| now_ms()),
        outcome,
        detail,
    }
}

enum StepFailure {
    /// The step failed; the drill goes on (checks) or skips to the rollback (waits).
    Failed(String),
    /// An abort condition holds: stop and roll back.
    Abort(String),
    /// The check cannot apply to this target (recorded as skipped, with why).
    NotApplicable(String),
}

/// A mailbox's (UIDVALIDITY, UIDNEXT) at a site, `None` when the server names
/// neither.
async fn mailbox_mark(
    site: &SiteEndpoints,
    tls: Option<(&Tls, &str)>,
    user: &str,
    password: &str,
    timeout: Duration,
    mailbox: &str,
) -> Result<Option<(u32, u32)>, String> {
    let (addr, over_tls) = site.imap_endpoint(tls.is_some());
    let mut session = Session::connect(addr, tls.filter(|_| over_tls), timeout).await.map_err(|e| e.to_string())?;
    session.login(user, password).await.map_err(|e| e.to_string())?;
    let examined = session.examine(mailbox).await.map_err(|e| e.to_string())?;
    session.logout().await;
    Ok(examined.uid_validity.zip(examined.uid_next))
}

/// The drill's tags (those starting with `prefix`) in `mailboxes` of one account,
/// with how often each appears in them together; each mailbox read from its
/// mark's UIDNEXT when its UIDVALIDITY is still the one marked, else whole.
async fn read_tags_in(
    site: &SiteEndpoints,
    tls: Option<(&Tls, &str)>,
    (user, password): (&str, &str),
    timeout: Duration,
    prefix: &str,
    mailboxes: &[&str],
    marks: &[Option<(u32, u32)>],
) -> Result<BTreeMap<String, u32>, String> {
    let (addr, over_tls) = site.imap_endpoint(tls.is_some());
    let mut session = Session::connect(addr, tls.filter(|_| over_tls), timeout).await.map_err(|e| e.to_string())?;
    session.login(user, password).await.map_err(|e| e.to_string())?;
    let mut out = BTreeMap::new();
    for (i, mailbox) in mailboxes.iter().enumerate() {
        let examined = session.examine(mailbox).await.map_err(|e| e.to_string())?;
        let from_uid = match (marks.get(i).copied().flatten(), examined.uid_validity) {
            (Some((validity, next)), Some(now)) if validity == now => next,
            _ => 1,
        };
        if examined.exists > 0 {
            let tags = session.header_field_by_uid(TAG_HEADER, from_uid).await.map_err(|e| e.to_string())?;
            for (_, tag) in tags {
                if tag.starts_with(prefix) {
                    *out.entry(tag).or_insert(0) += 1;
                }
            }
        }
    }
    session.logout().await;
    Ok(out)
}

fn environment(target: &Target) -> Environment {
    Environment {
        target: target.kind.to_string(),
        target_location: target.location.display().to_string(),
        domain: target.domain.clone(),
        sites: target
            .sites
            .iter()
            .map(|s| SiteInfo { name: s.name.clone(), role: s.role.name().into(), address: s.ip.to_string() })
            .collect(),
        ..Environment::here()
    }
}
