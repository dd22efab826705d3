//! The service's operations and its scheduler loop.
//!
//! Every operation takes the caller (a person, authenticated by token) and
//! checks the caller's role before it reads or changes anything; a refused
//! operation changes no state (the refusal itself is written to the audit log,
//! naming the person). Every change is saved to the state file before it is
//! answered and written to the drill audit log (`DIR/drills/audit.jsonl`).
//! The state lock is never held across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use maildr_drill::audit::{AuditEvent, AuditLog};
use maildr_drill::guard;
use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::calendar::{self, Action, Decision, Situation};
use crate::child::{self, ChildSpec};
use crate::model::{
    skip, ApprovalAnswer, ApprovalRecord, Caller, Delivery, NewPerson, NewPersonAnswer, NewSchedule, NotifyTarget,
    PersonView, Role, RunRecord, RunVerdict, Schedule, StartRun, StopState,
};
use crate::notify::{self, event, Notice, Notifier};
use crate::now_ms;
use crate::state::{Person, State, StateError};

/// How often the scheduler looks at the clock.
pub const TICK: Duration = Duration::from_millis(250);
/// How often the state is saved when nothing changed (to keep `checked_until_ms`).
pub const IDLE_SAVE_EVERY_MS: u64 = 10_000;
/// The admin's token file under the data directory (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The name of the person created at first start.
pub const FIRST_ADMIN: &str = "admin";
/// People the service keeps.
pub const PEOPLE_MAX: usize = 1_000;
/// Schedules the service keeps.
pub const SCHEDULES_MAX: usize = 1_000;
/// Blackout windows per schedule.
pub const BLACKOUTS_MAX: usize = 64;
/// Approvals a schedule may require.
pub const APPROVALS_REQUIRED_MAX: u32 = 16;
/// Longest name, scenario, path or reason accepted.
pub const TEXT_BYTES_MAX: usize = 512;
/// Lead time of an announcement at most (a year).
pub const NOTIFY_BEFORE_SECS_MAX: u64 = 366 * 86_400;
/// Notification file written beside a run's report.
pub const NOTIFICATIONS_FILE: &str = "notifications.json";
/// How often a running drill's progress file is read for the phases it entered.
pub const PROGRESS_POLL: Duration = Duration::from_millis(250);
/// The actor of what the calendar does by itself.
pub const CALENDAR_ACTOR: &str = "drill-service";

/// Roles allowed to read (everyone with a token).
pub const READERS: &[Role] = &Role::ALL;
/// Roles that schedule, start and stop drills.
pub const OPERATORS: &[Role] = &[Role::Operator, Role::Admin];
/// Roles that approve runs.
pub const APPROVERS: &[Role] = &[Role::Approver];
/// Roles that manage people.
pub const ADMINS: &[Role] = &[Role::Admin];
/// Roles that read the audit log.
pub const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];

/// What the binary fills in.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// The `maildr` executable drills run as.
    pub exe: PathBuf,
    pub notifier: Notifier,
}

/// Why an operation was not done. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Internal(String),
}

impl From<StateError> for Refusal {
    fn from(e: StateError) -> Refusal {
        Refusal::Internal(e.to_string())
    }
}

/// The running service.
pub struct Service {
    config: Config,
    state: Mutex<State>,
    audit: AuditLog,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    last_save_ms: Mutex<u64>,
}

fn token_digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("mdt_{}", hex::encode(bytes))
}

fn check_text(field: &str, value: &str) -> Result<(), Refusal> {
    if value.is_empty() || value.len() > TEXT_BYTES_MAX || value.starts_with('-') || value.contains(char::is_control) {
        return Err(Refusal::Invalid(format!(
            "{field}: must be 1 to {TEXT_BYTES_MAX} bytes, not start with '-', and hold no control character"
        )));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), Refusal> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Refusal::Invalid("name: 1 to 64 of letters, digits, '.', '_', '-', '@' (not starting with '-')".into()))
    }
}

impl Service {
    /// Open (or create) the service's state in the data directory. On first start
    /// the admin is created; their token is returned (and written to
    /// `admin.token`, mode 0600) and never shown again.
    pub fn open(config: Config) -> Result<(Arc<Service>, Option<String>), Refusal> {
        let drills = config.data_dir.join(child::DRILLS_DIR);
        std::fs::create_dir_all(&drills)
            .map_err(|e| Refusal::Internal(format!("creating {}: {e}", drills.display())))?;
        let audit = AuditLog::open(drills.join(maildr_drill::audit::FILE_NAME))
            .map_err(|e| Refusal::Internal(e.to_string()))?;
        let mut state =
            State::load(&config.data_dir)?.unwrap_or(State { version: crate::state::VERSION, ..State::default() });
        let mut admin_token = None;
        if state.people.is_empty() {
            let token = new_token();
            write_token_file(&config.data_dir.join(ADMIN_TOKEN_FILE), &token)?;
            state.people.push(Person {
                name: FIRST_ADMIN.into(),
                role: Role::Admin,
                token_sha256: hex::encode(token_digest(token.as_bytes())),
                created_at_ms: now_ms(),
            });
            admin_token = Some(token);
        }
        // Drills that were running when the service stopped: their outcome is
        // whatever report they left.
        for run in state.runs.iter_mut().filter(|r| r.verdict == RunVerdict::Running) {
            let alive = run.pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let outcome = child::outcome(
                    &child::run_dir(&config.data_dir, &run.id),
                    "the service was not running when it ended",
                );
                apply_outcome(run, outcome);
            }
        }
        state.save(&config.data_dir)?;
        let service = Service {
            config,
            state: Mutex::new(state),
            audit,
            tasks: Mutex::new(Vec::new()),
            last_save_ms: Mutex::new(0),
        };
        service.record(CALENDAR_ACTOR, "service_started", json!({ "first_start": admin_token.is_some() }));
        Ok((Arc::new(service), admin_token))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the state lock is never held across a panic")
    }

    fn drills_dir(&self) -> PathBuf {
        self.config.data_dir.join(child::DRILLS_DIR)
    }

    /// Write an audit record; a failure is logged, the operation stands.
    fn record(&self, actor: &str, action: &str, detail: serde_json::Value) {
        if let Err(e) = self.audit.append(AuditEvent::new(actor, action).detail(detail)) {
            tracing::error!(error = %e, action, "the drill audit log could not be written");
        }
    }

    /// The person holding `token`, compared by SHA-256 in constant time.
    pub fn authenticate(&self, token: &[u8]) -> Option<Caller> {
        let presented = token_digest(token);
        let state = self.lock();
        let mut found = None;
        for p in &state.people {
            let Ok(stored) = hex::decode(&p.token_sha256) else { continue };
            if bool::from(stored.as_slice().ct_eq(&presented)) {
                found = Some(Caller { name: p.name.clone(), role: p.role });
            }
        }
        found
    }

    /// Refuse a caller whose role is not in `roles` (and record the refusal).
    pub fn require(&self, caller: &Caller, roles: &[Role], what: &str) -> Result<(), Refusal> {
        if roles.contains(&caller.role) {
            return Ok(());
        }
        self.record(&caller.name, "forbidden", json!({ "role": caller.role, "request": what }));
        let allowed: Vec<&str> = roles.iter().map(|r| r.word()).collect();
        Err(Refusal::Forbidden(format!(
            "{what} needs the role {}; {} is {}",
            allowed.join(" or "),
            caller.name,
            caller.role
        )))
    }

    fn save(&self, state: &State) -> Result<(), Refusal> {
        state.save(&self.config.data_dir)?;
        *self.last_save_ms.lock().expect("save time lock") = now_ms();
        Ok(())
    }

    // ------------------------------------------------------------ people

    pub fn people(&self) -> Vec<PersonView> {
        self.lock()
            .people
            .iter()
            .map(|p| PersonView { name: p.name.clone(), role: p.role, created_at_ms: p.created_at_ms })
            .collect()
    }

    pub fn add_person(&self, caller: &Caller, new: NewPerson) -> Result<NewPersonAnswer, Refusal> {
        check_name(&new.name)?;
        let token = new_token();
        let mut state = self.lock();
        if state.people.iter().any(|p| p.name == new.name) {
            return Err(Refusal::Conflict(format!("{} already exists", new.name)));
        }
        if state.people.len() >= PEOPLE_MAX {
            return Err(Refusal::Conflict(format!("the service keeps at most {PEOPLE_MAX} people")));
        }
        let mut next = state.clone();
        next.people.push(Person {
            name: new.name.clone(),
            role: new.role,
            token_sha256: hex::encode(token_digest(token.as_bytes())),
            created_at_ms: now_ms(),
        });
        self.save(&next)?;
        *state = next;
        drop(state);
        self.record(&caller.name, "person_added", json!({ "name": new.name, "role": new.role }));
        Ok(NewPersonAnswer { name: new.name, role: new.role, token })
    }

    pub fn remove_person(&self, caller: &Caller, name: &str) -> Result<(), Refusal> {
        let mut state = self.lock();
        let Some(i) = state.people.iter().position(|p| p.name == name) else {
            return Err(Refusal::NotFound(format!("no person named {name}")));
        };
        let admins = state.people.iter().filter(|p| p.role == Role::Admin).count();
        if state.people[i].role == Role::Admin && admins == 1 {
            return Err(Refusal::Conflict(format!("{name} is the last admin")));
        }
        let mut next = state.clone();
        let removed = next.people.remove(i);
        self.save(&next)?;
        *state = next;
        drop(state);
        self.record(&caller.name, "person_removed", json!({ "name": name, "role": removed.role }));
        Ok(())
    }

    // ---------------------------------------------------------- schedules

    /// Every schedule with its next due time.
    pub fn schedules(&self) -> Vec<Schedule> {
        let now = now_ms();
        let mut schedules = self.lock().schedules.clone();
        for s in &mut schedules {
            s.next_due_at_ms = calendar::parse_cron(&s.cron).ok().and_then(|c| calendar::next_after(&c, now));
        }
        schedules
    }

    pub fn add_schedule(&self, caller: &Caller, new: NewSchedule) -> Result<Schedule, Refusal> {
        check_text("scenario", &new.scenario)?;
        let source = maildr_drill::scenarios::load(&new.scenario).map_err(Refusal::Invalid)?;
        maildr_drill::plan::Plan::parse(&source)
            .map_err(|e| Refusal::Invalid(format!("scenario {}: {e}", new.scenario)))?;
        let cron = calendar::parse_cron(&new.cron).map_err(Refusal::Invalid)?;
        let now = now_ms();
        if calendar::next_after(&cron, now).is_none() {
            return Err(Refusal::Invalid(format!("cron {:?} is never due again", new.cron)));
        }
        for (field, value) in [("lab_dir", &new.lab_dir), ("net", &new.net)] {
            if let Some(v) = value {
                check_text(field, v)?;
            }
        }
        check_targets(&new.notify)?;
        if new.blackouts.len() > BLACKOUTS_MAX || new.blackouts.iter().any(|b| b.end_ms <= b.start_ms) {
            return Err(Refusal::Invalid(format!("blackouts: at most {BLACKOUTS_MAX}, each ending after it starts")));
        }
        if new.approvals > APPROVALS_REQUIRED_MAX {
            return Err(Refusal::Invalid(format!("approvals: at most {APPROVALS_REQUIRED_MAX}")));
        }
        if new.notify_before_secs > NOTIFY_BEFORE_SECS_MAX {
            return Err(Refusal::Invalid(format!("notify_before_secs: at most {NOTIFY_BEFORE_SECS_MAX}")));
        }
        let mut state = self.lock();
        if state.schedules.len() >= SCHEDULES_MAX {
            return Err(Refusal::Conflict(format!("the service keeps at most {SCHEDULES_MAX} schedules")));
        }
        let mut next = state.clone();
        let schedule = Schedule {
            id: next.new_schedule_id(),
            scenario: new.scenario,
            cron: new.cron,
            lab_dir: new.lab_dir,
            net: new.net,
            blackouts: new.blackouts,
            notify: new.notify,
            approvals: new.approvals,
            notify_before_secs: new.notify_before_secs,
            created_by: caller.name.clone(),
            created_at_ms: now,
            next_due_at_ms: calendar::next_after(&cron, now),
        };
        next.schedules.push(schedule.clone());
        self.save(&next)?;
        *state = next;
        drop(state);
        self.record(&caller.name, "schedule_added", serde_json::to_value(&schedule).unwrap_or_default());
        Ok(schedule)
    }

    pub fn remove_schedule(&self, caller: &Caller, id: &str) -> Result<(), Refusal> {
        let mut state = self.lock();
        let Some(i) = state.schedules.iter().position(|s| s.id == id) else {
            return Err(Refusal::NotFound(format!("no schedule {id}")));
        };
        let mut next = state.clone();
        let removed = next.schedules.remove(i);
        next.approvals.retain(|a| a.schedule_id != id);
        next.announced.remove(id);
        next.announcements.remove(id);
        self.save(&next)?;
        *state = next;
        drop(state);
        self.record(
            &caller.name,
            "schedule_removed",
            json!({ "id": id, "scenario": removed.scenario, "cron": removed.cron }),
        );
        Ok(())
    }

    /// Approve the next run of a schedule, as the caller (an approver).
    pub fn approve(&self, caller: &Caller, schedule_id: &str) -> Result<ApprovalAnswer, Refusal> {
        let now = now_ms();
        let mut state = self.lock();
        let Some(schedule) = state.schedules.iter().find(|s| s.id == schedule_id).cloned() else {
            return Err(Refusal::NotFound(format!("no schedule {schedule_id}")));
        };
        if schedule.approvals == 0 {
            return Err(Refusal::Conflict(format!("schedule {schedule_id} needs no approvals")));
        }
        let due = calendar::parse_cron(&schedule.cron)
            .ok()
            .and_then(|c| calendar::next_after(&c, now))
            .ok_or_else(|| Refusal::Conflict(format!("schedule {schedule_id} is never due again")))?;
        if calendar::approvers_of(&state.approvals, schedule_id, due).contains(&caller.name) {
            return Err(Refusal::Conflict(format!(
                "{} already approved the run of {schedule_id} due at {}; approvals count per distinct person",
                caller.name,
                calendar::rfc3339(due)
            )));
        }
        let mut next = state.clone();
        next.push_approval(ApprovalRecord {
            schedule_id: schedule_id.into(),
            due_at_ms: due,
            by: caller.name.clone(),
            at_ms: now,
        });
        self.save(&next)?;
        *state = next;
        let approved_by = calendar::approvers_of(&state.approvals, schedule_id, due);
        drop(state);
        self.record(&caller.name, "run_approved", json!({ "schedule_id": schedule_id, "due_at_ms": due, "approvals": approved_by.len(), "required": schedule.approvals }));
        Ok(ApprovalAnswer {
            schedule_id: schedule_id.into(),
            due_at_ms: due,
            approved_by,
            required: schedule.approvals,
        })
    }

    // --------------------------------------------------------------- runs

    pub fn runs(&self) -> Vec<RunRecord> {
        self.lock().runs.clone()
    }

    pub fn approvals(&self) -> Vec<ApprovalRecord> {
        self.lock().approvals.clone()
    }

    /// The drill in progress, described; `None` when none runs.
    fn busy(&self) -> Option<String> {
        if let Some(r) = self.lock().runs.iter().find(|r| r.verdict == RunVerdict::Running) {
            return Some(format!("run {} ({}) is still running", r.id, r.scenario));
        }
        guard::running(&self.drills_dir()).map(|d| format!("drill {} (pid {}) is running", d.drill_id, d.pid))
    }

    /// Start a scenario now (an operator's request).
    pub fn start_now(self: &Arc<Self>, caller: &Caller, request: StartRun) -> Result<RunRecord, Refusal> {
        check_text("scenario", &request.scenario)?;
        let source = maildr_drill::scenarios::load(&request.scenario).map_err(Refusal::Invalid)?;
        maildr_drill::plan::Plan::parse(&source)
            .map_err(|e| Refusal::Invalid(format!("scenario {}: {e}", request.scenario)))?;
        for (field, value) in [("lab_dir", &request.lab_dir), ("net", &request.net)] {
            if let Some(v) = value {
                check_text(field, v)?;
            }
        }
        check_targets(&request.notify)?;
        if let Some(stop) = guard::stopped(&self.drills_dir()) {
            return Err(Refusal::Conflict(stop.describe()));
        }
        if let Some(busy) = self.busy() {
            return Err(Refusal::Conflict(busy));
        }
        let launch = Launch {
            scenario: request.scenario,
            schedule_id: None,
            lab_dir: request.lab_dir,
            net: request.net,
            notify: request.notify,
            due_at_ms: now_ms(),
            started_by: caller.name.clone(),
            earlier: Vec::new(),
        };
        self.launch(launch)
    }

    fn launch(self: &Arc<Self>, launch: Launch) -> Result<RunRecord, Refusal> {
        let run_id = self.lock().new_run_id();
        let spec = ChildSpec {
            run_id: run_id.clone(),
            scenario: launch.scenario.clone(),
            lab_dir: launch.lab_dir.clone(),
            net: launch.net.clone(),
            confirm_as: format!("{} via drill-service", launch.started_by),
        };
        let now = now_ms();
        let mut record = RunRecord {
            id: run_id.clone(),
            scenario: launch.scenario.clone(),
            schedule_id: launch.schedule_id.clone(),
            due_at_ms: launch.due_at_ms,
            verdict: RunVerdict::Running,
            reason: None,
            detail: None,
            started_at_ms: Some(now),
            finished_at_ms: None,
            report_path: None,
            drill_id: None,
            pid: None,
            started_by: launch.started_by.clone(),
            notifications: launch.earlier.clone(),
        };
        let spawned = child::spawn(&self.config.exe, &self.config.data_dir, &spec);
        match &spawned {
            Ok(c) => record.pid = c.id(),
            Err(e) => {
                record.verdict = RunVerdict::Aborted;
                record.reason = Some(format!("the drill process could not start: {e}"));
                record.finished_at_ms = Some(now);
            }
        }
        {
            let mut state = self.lock();
            state.push_run(record.clone());
            self.save(&state)?;
        }
        self.record(
            &launch.started_by,
            "run_started",
            json!({ "run_id": run_id, "scenario": launch.scenario,
            "schedule_id": launch.schedule_id, "pid": record.pid, "error": record.reason }),
        );
        let me = self.clone();
        let task = match spawned {
            Ok(child) => tokio::spawn(async move { me.supervise(run_id, child, launch).await }),
            Err(_) => {
                let notice = me.notice(event::ABORTED, &record);
                let id = record.id.clone();
                tokio::spawn(async move { me.notify_run(&id, &launch.notify, notice).await })
            }
        };
        self.own(task);
        Ok(record)
    }

    fn own(&self, task: JoinHandle<()>) {
        let mut tasks = self.tasks.lock().expect("task list lock");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    fn notice(&self, event: &'static str, run: &RunRecord) -> Notice {
        Notice {
            event,
            scenario: run.scenario.clone(),
            run_id: Some(run.id.clone()),
            schedule_id: run.schedule_id.clone(),
            due_at_ms: run.due_at_ms,
            verdict: Some(run.verdict),
            reason: run.reason.clone(),
            detail: run.detail.clone(),
            report_path: run.report_path.clone(),
            phase: None,
            step: None,
        }
    }

    /// Tell `targets` about a run and record each delivery in it.
    async fn notify_run(&self, run_id: &str, targets: &[NotifyTarget], notice: Notice) {
        if targets.is_empty() {
            return;
        }
        let deliveries = notify::deliver_all(&self.config.notifier, targets, &notice, now_ms).await;
        self.record(CALENDAR_ACTOR, "notified", json!({ "run_id": run_id, "event": notice.event,
            "delivered": deliveries.iter().filter(|d| d.ok).count(), "failed": deliveries.iter().filter(|d| !d.ok).count() }));
        let mut state = self.lock();
        let Some(run) = state.run_mut(run_id) else { return };
        run.notifications.extend(deliveries);
        let all = run.notifications.clone();
        if let Err(e) = self.save(&state) {
            tracing::error!(error = %e, "saving a run's notifications");
        }
        drop(state);
        let dir = child::run_dir(&self.config.data_dir, run_id);
        if dir.is_dir() {
            let bytes = serde_json::to_vec_pretty(&all).unwrap_or_default();
            if let Err(e) = crate::state::write_atomic(&dir.join(NOTIFICATIONS_FILE), &bytes) {
                tracing::warn!(error = %e, "writing notifications.json");
            }
        }
    }

    async fn supervise(self: Arc<Self>, run_id: String, mut child: tokio::process::Child, launch: Launch) {
        let started = self.lock().runs.iter().find(|r| r.id == run_id).cloned();
        if let Some(run) = started {
            self.notify_run(&run_id, &launch.notify, self.notice(event::STARTED, &run)).await;
        }
        let exit = self.wait_telling_phases(&run_id, &mut child, &launch.notify).await;
        let outcome = child::outcome(&child::run_dir(&self.config.data_dir, &run_id), &exit);
        let finished = {
            let mut state = self.lock();
            let Some(run) = state.run_mut(&run_id) else { return };
            apply_outcome(run, outcome);
            let run = run.clone();
            if let Err(e) = self.save(&state) {
                tracing::error!(error = %e, "saving a finished run");
            }
            run
        };
        self.record(
            CALENDAR_ACTOR,
            "run_finished",
            json!({ "run_id": run_id, "verdict": finished.verdict,
            "reason": finished.reason, "drill_id": finished.drill_id, "exit": exit }),
        );
        let event = if finished.verdict == RunVerdict::Aborted { event::ABORTED } else { event::FINISHED };
        self.notify_run(&run_id, &launch.notify, self.notice(event, &finished)).await;
    }

    /// Wait for the drill to end (see [`child::wait`]) while telling `targets`
    /// each phase it enters, in order, as its progress file shows them; the
    /// phases entered just before it ended are told before this returns, so
    /// they come before the end's notice.
    async fn wait_telling_phases(
        &self,
        run_id: &str,
        child: &mut tokio::process::Child,
        targets: &[NotifyTarget],
    ) -> String {
        if targets.is_empty() {
            return child::wait(child).await;
        }
        let file = child::run_dir(&self.config.data_dir, run_id).join(maildr_drill::progress::FILE_NAME);
        let mut watch = PhaseWatch { file, told: 0, unreadable: false };
        let wait = child::wait(child);
        tokio::pin!(wait);
        let exit = loop {
            tokio::select! {
                exit = &mut wait => break exit,
                _ = tokio::time::sleep(PROGRESS_POLL) => self.tell_phases(run_id, targets, &mut watch).await,
            }
        };
        self.tell_phases(run_id, targets, &mut watch).await;
        exit
    }

    /// Tell `targets` of the phases in the progress file not told yet.
    async fn tell_phases(&self, run_id: &str, targets: &[NotifyTarget], watch: &mut PhaseWatch) {
        let progress = match maildr_drill::progress::Progress::read(&watch.file) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => {
                // Said once, not at every look.
                if !std::mem::replace(&mut watch.unreadable, true) {
                    tracing::warn!(error = %e, run_id, "a drill's progress file is unreadable");
                }
                return;
            }
        };
        let Some(run) = self.lock().runs.iter().find(|r| r.id == run_id).cloned() else { return };
        for entered in progress.phases.iter().skip(watch.told) {
            let mut notice = self.notice(event::PHASE, &run);
            notice.phase = Some(entered.phase);
            notice.step = Some(entered.step.clone());
            self.notify_run(run_id, targets, notice).await;
            watch.told += 1;
        }
    }

    // -------------------------------------------------------- global stop

    pub fn stop_all(&self, caller: &Caller, reason: Option<String>) -> Result<StopState, Refusal> {
        let reason = reason.unwrap_or_else(|| "global stop".into());
        if reason.len() > TEXT_BYTES_MAX {
            return Err(Refusal::Invalid(format!("reason: at most {TEXT_BYTES_MAX} bytes")));
        }
        let order = guard::StopOrder { by: caller.name.clone(), reason: reason.clone(), at_ms: now_ms() };
        guard::stop_all(&self.drills_dir(), &order).map_err(|e| Refusal::Internal(e.to_string()))?;
        self.record(&caller.name, "drills_stopped", json!({ "reason": reason }));
        Ok(StopState { stopped: true, by: Some(order.by), reason: Some(order.reason) })
    }

    pub fn release(&self, caller: &Caller) -> Result<StopState, Refusal> {
        let lifted = guard::release(&self.drills_dir()).map_err(|e| Refusal::Internal(e.to_string()))?;
        if let Some(order) = &lifted {
            self.record(&caller.name, "drills_released", json!({ "stopped_by": order.by, "reason": order.reason }));
        }
        Ok(StopState { stopped: false, by: lifted.as_ref().map(|o| o.by.clone()), reason: lifted.map(|o| o.reason) })
    }

    // ------------------------------------------------------ history, audit

    pub fn history(&self) -> crate::model::HistoryView {
        crate::history::read(&self.drills_dir())
    }

    pub fn audit_view(&self) -> Result<crate::model::AuditView, Refusal> {
        let path = self.drills_dir().join(maildr_drill::audit::FILE_NAME);
        let summary = maildr_drill::audit::verify(&path).map_err(|e| Refusal::Internal(e.to_string()))?;
        let text = std::fs::read_to_string(&path).map_err(|e| Refusal::Internal(format!("{}: {e}", path.display())))?;
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(crate::AUDIT_TAIL_RECORDS)..]
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        Ok(crate::model::AuditView { records: summary.records, head: summary.head, tail })
    }

    // ---------------------------------------------------------- scheduler

    /// Look at the calendar every [`TICK`] until `stop`; then interrupt running
    /// drills (SIGINT: they roll back and report) and wait for them, bounded.
    pub async fn run_scheduler(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            self.tick(now_ms());
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = stop.changed() => break,
            }
        }
        self.shutdown().await;
    }

    /// One look at the calendar at `now_ms`: decide, record, and start what is due.
    pub fn tick(self: &Arc<Self>, now_ms: u64) {
        let situation =
            Situation { stopped: guard::stopped(&self.drills_dir()).map(|o| o.describe()), busy: self.busy() };
        let (actions, schedules) = {
            let mut state = self.lock();
            let actions = calendar::look(
                &state.schedules,
                &state.approvals,
                &state.announced,
                state.checked_until_ms,
                now_ms,
                &situation,
            );
            state.checked_until_ms = now_ms;
            let idle_for = now_ms.saturating_sub(*self.last_save_ms.lock().expect("save time lock"));
            if !actions.is_empty() || idle_for >= IDLE_SAVE_EVERY_MS {
                if let Err(e) = self.save(&state) {
                    tracing::error!(error = %e, "saving the calendar position");
                }
            }
            (actions, state.schedules.clone())
        };
        let mut missed_notified = std::collections::BTreeSet::new();
        for action in actions {
            let schedule_of = |id: &str| schedules.iter().find(|s| s.id == id).cloned();
            match action {
                Action::Announce { schedule_id, due_at_ms } => {
                    if let Some(s) = schedule_of(&schedule_id) {
                        self.announce(s, due_at_ms);
                    }
                }
                Action::Due { schedule_id, due_at_ms, decision } => {
                    let Some(s) = schedule_of(&schedule_id) else { continue };
                    match decision {
                        Decision::Run => self.start_due(s, due_at_ms),
                        Decision::Skip { reason, detail } => {
                            // After an outage, one notice per schedule for its missed runs.
                            let tell = reason != skip::MISSED || missed_notified.insert(schedule_id.clone());
                            self.skipped(&s, due_at_ms, reason, detail, tell);
                        }
                    }
                }
                Action::MissedMore { schedule_id, count, from_ms, to_ms } => {
                    if let Some(s) = schedule_of(&schedule_id) {
                        let detail = format!(
                            "{count} more runs due between {} and {} were missed; the service was not running",
                            calendar::rfc3339(from_ms),
                            calendar::rfc3339(to_ms)
                        );
                        self.skipped(&s, to_ms, skip::MISSED, detail, false);
                    }
                }
            }
        }
    }

    fn take_announcements(&self, schedule_id: &str) -> Vec<Delivery> {
        self.lock().announcements.remove(schedule_id).unwrap_or_default()
    }

    fn start_due(self: &Arc<Self>, schedule: Schedule, due_at_ms: u64) {
        let launch = Launch {
            scenario: schedule.scenario.clone(),
            schedule_id: Some(schedule.id.clone()),
            lab_dir: schedule.lab_dir.clone(),
            net: schedule.net.clone(),
            notify: schedule.notify.clone(),
            due_at_ms,
            started_by: format!("schedule {} of {}", schedule.id, schedule.created_by),
            earlier: self.take_announcements(&schedule.id),
        };
        if let Err(e) = self.launch(launch) {
            tracing::error!(error = %e, schedule = schedule.id, "a due drill could not be recorded");
        }
    }

    fn skipped(self: &Arc<Self>, schedule: &Schedule, due_at_ms: u64, reason: &str, detail: String, tell: bool) {
        let record = {
            let mut state = self.lock();
            let notifications = state.announcements.remove(&schedule.id).unwrap_or_default();
            let record = RunRecord {
                id: state.new_run_id(),
                scenario: schedule.scenario.clone(),
                schedule_id: Some(schedule.id.clone()),
                due_at_ms,
                verdict: RunVerdict::Skipped,
                reason: Some(reason.to_string()),
                detail: Some(detail),
                started_at_ms: None,
                finished_at_ms: None,
                report_path: None,
                drill_id: None,
                pid: None,
                started_by: format!("schedule {} of {}", schedule.id, schedule.created_by),
                notifications,
            };
            state.push_run(record.clone());
            if let Err(e) = self.save(&state) {
                tracing::error!(error = %e, "saving a skipped run");
            }
            record
        };
        self.record(
            CALENDAR_ACTOR,
            "run_skipped",
            json!({ "run_id": record.id, "schedule_id": schedule.id,
            "due_at_ms": due_at_ms, "reason": reason, "detail": record.detail }),
        );
        if tell && !schedule.notify.is_empty() {
            let me = self.clone();
            let targets = schedule.notify.clone();
            let notice = self.notice(event::SKIPPED, &record);
            self.own(tokio::spawn(async move { me.notify_run(&record.id, &targets, notice).await }));
        }
    }

    fn announce(self: &Arc<Self>, schedule: Schedule, due_at_ms: u64) {
        self.lock().announced.insert(schedule.id.clone(), due_at_ms);
        let me = self.clone();
        let notice = Notice {
            event: event::UPCOMING,
            scenario: schedule.scenario.clone(),
            run_id: None,
            schedule_id: Some(schedule.id.clone()),
            due_at_ms,
            verdict: None,
            reason: None,
            detail: (schedule.approvals > 0).then(|| format!("needs {} approval(s)", schedule.approvals)),
            report_path: None,
            phase: None,
            step: None,
        };
        self.own(tokio::spawn(async move {
            let deliveries = notify::deliver_all(&me.config.notifier, &schedule.notify, &notice, now_ms).await;
            let mut state = me.lock();
            // Kept until the run comes due (then moved into its record).
            if state.schedules.iter().any(|s| s.id == schedule.id) {
                state.announcements.entry(schedule.id.clone()).or_default().extend(deliveries);
                if let Err(e) = me.save(&state) {
                    tracing::error!(error = %e, "saving announcements");
                }
            }
        }));
    }

    /// Interrupt running drills and wait (bounded) for them and every task.
    pub async fn shutdown(&self) {
        let pids: Vec<u32> =
            self.lock().runs.iter().filter(|r| r.verdict == RunVerdict::Running).filter_map(|r| r.pid).collect();
        for pid in &pids {
            tracing::warn!(pid, "interrupting a running drill: it rolls back and reports");
            child::signal(*pid, libc::SIGINT);
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().expect("task list lock"));
        let deadline = tokio::time::Instant::now() + child::ROLLBACK_WAIT;
        for mut task in tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
        let state = self.lock();
        if let Err(e) = self.save(&state) {
            tracing::error!(error = %e, "saving the state at shutdown");
        }
        drop(state);
        self.record(CALENDAR_ACTOR, "service_stopped", json!({ "interrupted_drills": pids }));
    }
}

/// How far the phases of a running drill have been told.
struct PhaseWatch {
    /// The drill's progress file.
    file: PathBuf,
    /// Phase entries told so far (the file's first ones).
    told: usize,
    /// Whether the file was found unreadable (said once).
    unreadable: bool,
}

/// A run about to start.
struct Launch {
    scenario: String,
    schedule_id: Option<String>,
    lab_dir: Option<String>,
    net: Option<String>,
    notify: Vec<NotifyTarget>,
    due_at_ms: u64,
    started_by: String,
    /// Deliveries made before the run (the lead-time announcement).
    earlier: Vec<Delivery>,
}

fn apply_outcome(run: &mut RunRecord, outcome: child::Outcome) {
    run.verdict = outcome.verdict;
    run.reason = outcome.reason;
    run.drill_id = outcome.drill_id;
    run.started_at_ms = outcome.started_at_ms.or(run.started_at_ms);
    run.finished_at_ms = Some(outcome.finished_at_ms.unwrap_or_else(now_ms));
    run.report_path = outcome.report_path;
    run.pid = None;
}

fn check_targets(targets: &[NotifyTarget]) -> Result<(), Refusal> {
    if targets.len() > notify::TARGETS_MAX {
        return Err(Refusal::Invalid(format!("notify: at most {} targets", notify::TARGETS_MAX)));
    }
    for t in targets {
        notify::check_target(t).map_err(Refusal::Invalid)?;
    }
    Ok(())
}

/// Write the first admin's token, readable by the owner only.
fn write_token_file(path: &Path, token: &str) -> Result<(), Refusal> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e: std::io::Error| Refusal::Internal(format!("{}: {e}", path.display()));
    // A file left by a start that died before saving its state is replaced.
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    file.write_all(format!("{token}\n").as_bytes()).and_then(|()| file.sync_all()).map_err(io)
}
