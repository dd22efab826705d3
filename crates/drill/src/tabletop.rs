//! Tabletop exercises (`maildr drill run SCENARIO --tabletop`): a drill plan
//! walked through by the people who would carry it out, with nothing touched.
//!
//! A failover depends on people as much as on the system: someone confirms the
//! outage, someone decides to switch, someone changes DNS, someone tells the
//! users. A tabletop presents each step of a plan (what a drill would do,
//! [`Step::describe`]) to the participants, lets the one holding the step's
//! role acknowledge it and record a decision, times both, and grades the
//! exercise against the plan's objectives as if the recovery took as long as
//! the people did: from the first fault step being presented to the decision of
//! the step that ends each recovery phase.
//!
//! The answers come from a [`Floor`]: a [`Terminal`] (people at a keyboard, the
//! wall clock) or an [`AnswerSheet`] (a file, for unattended runs and tests,
//! whose stated times are the clock, so one file always gives one report).
//!
//! **Never:** reach a deployment. This module gets no `Target` and no fault
//! injector (it does not use `target`, `runner` or `flow`), starts no probe and
//! reads no lab; its report says `mode: tabletop`, and its figures are the
//! participants' times, never measurements.

use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::path::Path;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::plan::{person_name, Phase, Plan, PlanSource, Role, Step, StepKind, WaitCondition};
use crate::report::{
    Approval, DrillMode, Environment, ExerciseClock, Finding, ObjectiveResult, Participant, ParticipantSource,
    PlanInfo, RecoveryMark, Report, Severity, Source, StepOutcome, StepResult, TabletopRecord, TabletopRecovery,
    TabletopStep, TimelineEntry, Verdict,
};

/// Longest decision or note kept for one step, in characters.
pub const DECISION_CHARS_MAX: usize = 2_000;
/// Latest an answer may come after its step was presented.
pub const ANSWER_AFTER_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// Largest answers file read.
pub const ANSWERS_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// Most answers one file may hold (one per step at most).
pub const ANSWERS_MAX: usize = crate::plan::STEPS_MAX;
/// Longest line read from the terminal.
pub const LINE_BYTES_MAX: u64 = 8 * 1024;
/// How often the terminal asks again for a name before the step counts as not
/// acknowledged.
pub const REPROMPTS_MAX: usize = 10;

/// The objective every tabletop is graded on: steps nobody acknowledged.
pub const STEPS_UNACKNOWLEDGED: &str = "steps_unacknowledged";

/// Why a tabletop exercise could not run (nothing was recorded).
#[derive(Debug, thiserror::Error)]
pub enum TabletopError {
    #[error("--participant {given:?}: {detail}")]
    BadParticipant { given: String, detail: String },
    #[error(
        "nobody holds role {role}, which step(s) {steps} need: add --participant NAME={role} (or a \
         [[tabletop.participants]] entry in the plan)"
    )]
    RoleUncovered { role: Role, steps: String },
    #[error("{file}: {detail}")]
    Answers { file: String, detail: String },
    #[error("{file}: step {index} ({name:?}): {detail}")]
    Answer { file: String, index: usize, name: String, detail: String },
    #[error("the terminal: {0}")]
    Terminal(String),
}

// ------------------------------------------------------------------ the roster

/// Who takes part, and the roles each holds. One person may hold several roles
/// and one role may be held by several people; names compare without case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roster {
    people: Vec<(String, Role, ParticipantSource)>,
}

impl Roster {
    /// The participants of `--participant NAME=ROLE` when any were given
    /// (they replace the plan's list: they are who is in the room), else the
    /// plan's `[[tabletop.participants]]`.
    pub fn choose(command_line: &[String], plan: &Plan) -> Result<Roster, TabletopError> {
        if command_line.is_empty() {
            let people = plan
                .tabletop
                .participants
                .iter()
                .map(|p| (p.name.clone(), p.role.clone(), ParticipantSource::Plan))
                .collect();
            return Ok(Roster { people });
        }
        if command_line.len() > crate::plan::PARTICIPANTS_MAX {
            return Err(TabletopError::BadParticipant {
                given: command_line.len().to_string(),
                detail: format!("at most {} participants", crate::plan::PARTICIPANTS_MAX),
            });
        }
        let mut roster = Roster { people: Vec::new() };
        for given in command_line {
            let bad = |detail: String| TabletopError::BadParticipant { given: given.clone(), detail };
            let (name, role) = given.rsplit_once('=').ok_or_else(|| bad("write NAME=ROLE".into()))?;
            let name = person_name(name).map_err(bad)?;
            let role = Role::parse(role).map_err(bad)?;
            if roster.people.iter().any(|(n, r, _)| same_person(n, &name) && *r == role) {
                return Err(bad(format!("{name} is already given role {role}")));
            }
            roster.people.push((name, role, ParticipantSource::CommandLine));
        }
        Ok(roster)
    }

    /// The people holding `role`, as recorded.
    pub fn holders(&self, role: &Role) -> Vec<&str> {
        self.people.iter().filter(|(_, r, _)| r == role).map(|(n, _, _)| n.as_str()).collect()
    }

    /// Whether `name` may acknowledge a step of `role`: the name as recorded,
    /// or a sentence saying why not and who may.
    pub fn may_acknowledge(&self, name: &str, role: &Role) -> Result<String, String> {
        let holders = self.holders(role).join(", ");
        let Ok(name) = person_name(name) else {
            return Err(format!("{name:?} is not a participant's name; {role} is held by {holders}"));
        };
        let theirs: Vec<&(String, Role, ParticipantSource)> =
            self.people.iter().filter(|(n, _, _)| same_person(n, &name)).collect();
        if theirs.is_empty() {
            let everyone: Vec<&str> = self.people.iter().map(|(n, _, _)| n.as_str()).collect();
            return Err(format!(
                "{name} is not a participant (participants: {}); {role} is held by {holders}",
                dedup(everyone).join(", ")
            ));
        }
        match theirs.iter().find(|(_, r, _)| r == role) {
            Some((recorded, _, _)) => Ok(recorded.clone()),
            None => {
                let roles: Vec<&str> = theirs.iter().map(|(_, r, _)| r.as_str()).collect();
                Err(format!(
                    "{} holds {}, not {role}: only {holders} may acknowledge this step",
                    theirs[0].0,
                    roles.join(" and ")
                ))
            }
        }
    }

    /// Every role a step of the plan needs is held by someone.
    pub fn covers(&self, plan: &Plan) -> Result<(), TabletopError> {
        let mut uncovered: BTreeMap<Role, Vec<String>> = BTreeMap::new();
        for (index, step, _) in plan_steps(plan) {
            let role = step.responsible_role();
            if self.holders(&role).is_empty() {
                uncovered.entry(role).or_default().push(index.to_string());
            }
        }
        match uncovered.into_iter().next() {
            Some((role, steps)) => Err(TabletopError::RoleUncovered { role, steps: steps.join(", ") }),
            None => Ok(()),
        }
    }

    /// The participants as the report lists them.
    pub fn participants(&self) -> Vec<Participant> {
        self.people
            .iter()
            .map(|(name, role, source)| Participant { name: name.clone(), role: role.to_string(), source: *source })
            .collect()
    }
}

fn same_person(a: &str, b: &str) -> bool {
    a.to_lowercase() == b.to_lowercase()
}

fn dedup(mut names: Vec<&str>) -> Vec<&str> {
    let mut seen = Vec::new();
    names.retain(|n| {
        let fresh = !seen.iter().any(|s: &&str| same_person(s, n));
        seen.push(*n);
        fresh
    });
    names
}

/// Every step of the plan in the order a drill runs them: (1-based index, the
/// step, whether it is a rollback step).
fn plan_steps(plan: &Plan) -> impl Iterator<Item = (usize, &Step, bool)> {
    let steps = plan.steps.iter().map(|s| (s, false));
    let rollback = plan.rollback.iter().map(|s| (s, true));
    steps.chain(rollback).enumerate().map(|(i, (s, rollback))| (i + 1, s, rollback))
}

// ------------------------------------------------------------- one step's rules

/// How long a step may take, and whether exceeding it fails the step: a timed
/// wait has its `timeout_ms` (a drill fails the wait past it); any other step,
/// an `elapsed` soak included, has the plan's `tabletop.ack_within_ms`.
fn budget(plan: &Plan, step: &Step) -> (u64, bool) {
    match &step.kind {
        StepKind::Wait { condition, timeout_ms } if !matches!(condition, WaitCondition::Elapsed { .. }) => {
            (*timeout_ms, true)
        }
        _ => (plan.tabletop.ack_within_ms, false),
    }
}

/// Whether a step needs a decision in words: the `decide` phase's steps and the
/// manual steps. Elsewhere a note is welcome but not required.
fn needs_decision(step: &Step) -> bool {
    step.phase == Phase::Decide || matches!(step.kind, StepKind::Manual { .. })
}

/// A decision as recorded: trimmed, control characters other than new lines
/// and tabs refused, bounded.
fn decision_text(raw: &str) -> Result<String, String> {
    let text = raw.trim();
    if let Some(c) = text.chars().find(|&c| c.is_control() && c != '\n' && c != '\t') {
        return Err(format!("the decision holds the control character U+{:04X}", u32::from(c)));
    }
    if text.chars().count() > DECISION_CHARS_MAX {
        return Err(format!("the decision is longer than {DECISION_CHARS_MAX} characters"));
    }
    Ok(text.to_string())
}

// ---------------------------------------------------------------- the floor

/// One step put to the participants.
#[derive(Debug)]
pub struct Presentation<'a> {
    /// 1-based; rollback steps after the steps.
    pub index: usize,
    pub total: usize,
    pub step: &'a Step,
    pub rollback: bool,
    pub role: &'a Role,
    pub holders: Vec<&'a str>,
    pub budget_ms: u64,
    /// Exceeding the budget fails the step (a timed wait).
    pub budget_binding: bool,
    pub decision_required: bool,
}

/// How the participants answered one step; times are after its presentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Answered(Answer),
    /// Nobody holding the role acknowledged it; the floor moved on after this long.
    Unanswered {
        waited_ms: u64,
    },
    /// The floor has no more answers (the terminal's input ended): the exercise
    /// stops here, and this step and the later ones are not acknowledged.
    Ended {
        waited_ms: u64,
        why: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// As the roster records the name; the person holds the step's role.
    pub by: String,
    pub acknowledged_after_ms: u64,
    pub decided_after_ms: u64,
    pub decision: String,
}

/// Where the answers come from.
pub trait Floor {
    /// Whose times these are.
    fn clock(&self) -> ExerciseClock;
    /// The answers file, for the report.
    fn answers_file(&self) -> Option<String> {
        None
    }
    /// Present one step and collect its answer. An `Answered` must name a
    /// holder of the step's role (the exercise refuses anything else).
    fn take(&mut self, p: &Presentation<'_>, roster: &Roster) -> Result<Response, TabletopError>;
}

// ---------------------------------------------------------- the answers file

/// Answers written down beforehand (`--answers FILE`): TOML `[[answers]]`
/// tables, or JSON (a list, or `{"answers": [...]}`), each `{step, by,
/// decision, after_ms, acknowledged_after_ms}`. Checked whole before the
/// exercise starts: every answer names a step of the plan (its number or its
/// exact name) once, and a participant who holds that step's role.
#[derive(Debug, Clone)]
pub struct AnswerSheet {
    file: String,
    answers: BTreeMap<usize, Answer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerFile {
    step: StepRef,
    by: String,
    #[serde(default)]
    decision: String,
    /// From the step's presentation to its decision.
    #[serde(default)]
    after_ms: u64,
    /// From the presentation to the acknowledgement (default: `after_ms`).
    #[serde(default)]
    acknowledged_after_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StepRef {
    Index(u64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswersTable {
    answers: Vec<AnswerFile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnswersJson {
    List(Vec<AnswerFile>),
    Table(AnswersTable),
}

impl AnswerSheet {
    /// Read and check an answers file: JSON when its name ends in `.json`, TOML
    /// otherwise.
    pub fn read(path: &Path, plan: &Plan, roster: &Roster) -> Result<AnswerSheet, TabletopError> {
        let file = path.display().to_string();
        let io = |e: std::io::Error| TabletopError::Answers { file: file.clone(), detail: e.to_string() };
        let mut text = String::new();
        std::fs::File::open(path)
            .map_err(io)?
            .take(ANSWERS_FILE_BYTES_MAX + 1)
            .read_to_string(&mut text)
            .map_err(io)?;
        if text.len() as u64 > ANSWERS_FILE_BYTES_MAX {
            return Err(TabletopError::Answers { file, detail: format!("larger than {ANSWERS_FILE_BYTES_MAX} bytes") });
        }
        let json = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        AnswerSheet::parse(&file, &text, json, plan, roster)
    }

    /// Check `text` (named `file` in errors) against the plan and the roster.
    pub fn parse(
        file: &str,
        text: &str,
        json: bool,
        plan: &Plan,
        roster: &Roster,
    ) -> Result<AnswerSheet, TabletopError> {
        let whole = |detail: String| TabletopError::Answers { file: file.into(), detail };
        let raw = if json {
            match serde_json::from_str::<AnswersJson>(text) {
                Ok(AnswersJson::List(list)) => list,
                Ok(AnswersJson::Table(t)) => t.answers,
                Err(e) => {
                    return Err(whole(format!(
                        "not an answers list ([{{\"step\", \"by\", \"decision\", \"after_ms\"}}]): {e}"
                    )))
                }
            }
        } else {
            toml::from_str::<AnswersTable>(text).map_err(|e| whole(format!("not an answers file: {e}")))?.answers
        };
        if raw.len() > ANSWERS_MAX {
            return Err(whole(format!("{} answers; a plan has at most {ANSWERS_MAX} steps", raw.len())));
        }
        let steps: Vec<(usize, &Step, bool)> = plan_steps(plan).collect();
        let mut answers = BTreeMap::new();
        for (n, a) in raw.into_iter().enumerate() {
            let (index, step) = resolve_step(&steps, &a.step).map_err(|d| whole(format!("answer {}: {d}", n + 1)))?;
            let bad =
                |detail: String| TabletopError::Answer { file: file.into(), index, name: step.name.clone(), detail };
            let role = step.responsible_role();
            let by = roster.may_acknowledge(&a.by, &role).map_err(bad)?;
            if answers.contains_key(&index) {
                return Err(bad("answered twice in the file".into()));
            }
            let acknowledged_after_ms = a.acknowledged_after_ms.unwrap_or(a.after_ms);
            if a.after_ms > ANSWER_AFTER_MS_MAX {
                return Err(bad(format!("after_ms {} is above {ANSWER_AFTER_MS_MAX}", a.after_ms)));
            }
            if acknowledged_after_ms > a.after_ms {
                return Err(bad(format!(
                    "acknowledged_after_ms {acknowledged_after_ms} is after the decision (after_ms {})",
                    a.after_ms
                )));
            }
            let decision = decision_text(&a.decision).map_err(bad)?;
            answers.insert(index, Answer { by, acknowledged_after_ms, decided_after_ms: a.after_ms, decision });
        }
        Ok(AnswerSheet { file: file.into(), answers })
    }
}

fn resolve_step<'a>(steps: &[(usize, &'a Step, bool)], r: &StepRef) -> Result<(usize, &'a Step), String> {
    match r {
        StepRef::Index(i) => steps
            .iter()
            .find(|(index, _, _)| *index as u64 == *i)
            .map(|(index, step, _)| (*index, *step))
            .ok_or_else(|| format!("the plan has no step {i} (steps 1 to {})", steps.len())),
        StepRef::Name(name) => {
            let found: Vec<&(usize, &Step, bool)> = steps.iter().filter(|(_, s, _)| s.name == *name).collect();
            match found.as_slice() {
                [(index, step, _)] => Ok((*index, *step)),
                [] => Err(format!("the plan has no step named {name:?}")),
                _ => Err(format!("{} steps are named {name:?}: give the step's number", found.len())),
            }
        }
    }
}

impl Floor for AnswerSheet {
    fn clock(&self) -> ExerciseClock {
        ExerciseClock::Simulated
    }

    fn answers_file(&self) -> Option<String> {
        Some(self.file.clone())
    }

    fn take(&mut self, p: &Presentation<'_>, _roster: &Roster) -> Result<Response, TabletopError> {
        Ok(match self.answers.remove(&p.index) {
            Some(answer) => Response::Answered(answer),
            // Nobody answered: the facilitator waited the whole budget.
            None => Response::Unanswered { waited_ms: p.budget_ms },
        })
    }
}

// ---------------------------------------------------------------- the terminal

/// People at a terminal: each step is printed to `output`, the participant
/// holding its role types their name (asked again when the name does not hold
/// the role) and then their decision. Times are `now_ms`'s, a monotonic clock
/// in milliseconds.
pub struct Terminal<R, W, C> {
    input: R,
    output: W,
    now_ms: C,
}

impl<R: BufRead, W: Write, C: FnMut() -> u64> Terminal<R, W, C> {
    pub fn new(input: R, output: W, now_ms: C) -> Self {
        Terminal { input, output, now_ms }
    }

    /// One line, without its end; `None` at the end of the input.
    fn line(&mut self) -> Result<Option<String>, TabletopError> {
        let mut buf = Vec::new();
        let read = (&mut self.input)
            .take(LINE_BYTES_MAX)
            .read_until(b'\n', &mut buf)
            .map_err(|e| TabletopError::Terminal(e.to_string()))?;
        if read == 0 {
            return Ok(None);
        }
        Ok(Some(String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string()))
    }

    fn say(&mut self, text: &str) -> Result<(), TabletopError> {
        write!(self.output, "{text}")
            .and_then(|_| self.output.flush())
            .map_err(|e| TabletopError::Terminal(e.to_string()))
    }

    fn present(&mut self, p: &Presentation<'_>) -> Result<(), TabletopError> {
        let tag = if p.rollback { " (rollback)" } else { "" };
        let budget = if p.budget_binding {
            format!("{} ms, the wait's timeout (a drill fails the wait past it)", p.budget_ms)
        } else {
            format!("{} ms to acknowledge and decide", p.budget_ms)
        };
        let decision = if p.decision_required { "\n  A decision is expected for this step." } else { "" };
        self.say(&format!(
            "\n── Step {} of {}{tag} · {}\n{}\n  What would happen: {}\n  Role: {} (held by {})\n  Budget: {budget}{decision}\n",
            p.index,
            p.total,
            p.step.phase.title(),
            p.step.name,
            p.step.describe(),
            p.role,
            p.holders.join(", "),
        ))
    }
}

impl<R: BufRead, W: Write, C: FnMut() -> u64> Floor for Terminal<R, W, C> {
    fn clock(&self) -> ExerciseClock {
        ExerciseClock::Wall
    }

    fn take(&mut self, p: &Presentation<'_>, roster: &Roster) -> Result<Response, TabletopError> {
        self.present(p)?;
        let shown = (self.now_ms)();
        let mut by = None;
        for _ in 0..REPROMPTS_MAX {
            self.say("Acknowledge as (your name; empty: nobody acknowledges it): ")?;
            let Some(name) = self.line()? else {
                let waited_ms = (self.now_ms)().saturating_sub(shown);
                return Ok(Response::Ended { waited_ms, why: format!("the input ended at step {}", p.index) });
            };
            if name.trim().is_empty() {
                return Ok(Response::Unanswered { waited_ms: (self.now_ms)().saturating_sub(shown) });
            }
            match roster.may_acknowledge(&name, p.role) {
                Ok(recorded) => {
                    by = Some(recorded);
                    break;
                }
                Err(why) => self.say(&format!("  refused: {why}\n"))?,
            }
        }
        let Some(by) = by else {
            return Ok(Response::Unanswered { waited_ms: (self.now_ms)().saturating_sub(shown) });
        };
        let acknowledged_after_ms = (self.now_ms)().saturating_sub(shown);
        let decision = loop {
            let required = if p.decision_required { "required" } else { "optional" };
            self.say(&format!("Decision or notes, one line ({required}): "))?;
            let line = self.line()?.unwrap_or_default();
            match decision_text(&line) {
                Ok(text) => break text,
                Err(why) => self.say(&format!("  refused: {why}\n"))?,
            }
        };
        let decided_after_ms = (self.now_ms)().saturating_sub(shown).max(acknowledged_after_ms);
        Ok(Response::Answered(Answer { by, acknowledged_after_ms, decided_after_ms, decision }))
    }
}

// ---------------------------------------------------------------- the exercise

/// What an exercise needs besides its floor.
pub struct Exercise<'a> {
    pub plan: &'a Plan,
    pub source: &'a PlanSource,
    pub roster: &'a Roster,
    pub drill_id: String,
    /// The approvals the plan version has (a tabletop needs none; listed as for
    /// any drill).
    pub approvals: Vec<Approval>,
    /// When the exercise started (epoch ms): its clock's zero.
    pub started_at_ms: u64,
}

/// What was recorded so far, turned into the report at the end.
struct Record<'a> {
    ex: &'a Exercise<'a>,
    clock_ms: u64,
    steps: Vec<StepResult>,
    tabletop: Vec<TabletopStep>,
    timeline: Vec<TimelineEntry>,
    findings: Vec<Finding>,
    confirmations: Vec<String>,
}

impl Record<'_> {
    fn at(&self, ms: u64) -> u64 {
        self.ex.started_at_ms.saturating_add(ms)
    }

    fn note(&mut self, ms: u64, phase: Option<Phase>, kind: &str, detail: String) {
        let at_ms = self.at(ms);
        self.timeline.push(TimelineEntry { at_ms, phase, source: Source::Drill, kind: kind.into(), detail });
    }

    fn finding(&mut self, severity: Severity, phase: Option<Phase>, title: String, evidence: String) {
        self.findings.push(Finding { severity, phase, title, evidence });
    }

    fn not_reached(&mut self, index: usize, step: &Step, rollback: bool) {
        self.steps.push(step_result(
            index,
            step,
            rollback,
            None,
            None,
            StepOutcome::Skipped,
            "not presented: the exercise ended before this step".into(),
        ));
    }
}

fn step_result(
    index: usize,
    step: &Step,
    rollback: bool,
    started_at_ms: Option<u64>,
    finished_at_ms: Option<u64>,
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
        finished_at_ms,
        outcome,
        detail,
    }
}

/// Run the exercise: every step of the plan (rollback steps last) is put to
/// `floor`, in order; `audit` records the start and each acknowledgement
/// (action, detail). Refuses to start when a role the plan needs has nobody.
pub fn run(ex: &Exercise<'_>, floor: &mut dyn Floor, audit: &dyn Fn(&str, Value)) -> Result<Report, TabletopError> {
    ex.roster.covers(ex.plan)?;
    let clock = floor.clock();
    let answers_file = floor.answers_file();
    audit(
        crate::audit::action::DRILL_STARTED,
        json!({ "drill_id": ex.drill_id, "mode": "tabletop", "clock": clock_word(clock),
                "answers_file": answers_file, "participants": ex.roster.participants() }),
    );
    let mut rec = Record {
        ex,
        clock_ms: 0,
        steps: Vec::new(),
        tabletop: Vec::new(),
        timeline: Vec::new(),
        findings: Vec::new(),
        confirmations: Vec::new(),
    };
    let clock_note = match &answers_file {
        Some(file) => format!("no fault injected; times simulated from the answers in {file}"),
        None => "no fault injected; times from the wall clock at the terminal".to_string(),
    };
    rec.note(0, None, "exercise_started", clock_note);
    let all: Vec<(usize, &Step, bool)> = plan_steps(ex.plan).collect();
    let mut abort_reason = None;
    for &(index, step, rollback) in &all {
        if abort_reason.is_some() {
            rec.not_reached(index, step, rollback);
            continue;
        }
        let role = step.responsible_role();
        let (budget_ms, budget_binding) = budget(ex.plan, step);
        let p = Presentation {
            index,
            total: all.len(),
            step,
            rollback,
            role: &role,
            holders: ex.roster.holders(&role),
            budget_ms,
            budget_binding,
            decision_required: needs_decision(step),
        };
        let response = floor.take(&p, ex.roster)?;
        if let Response::Ended { why, .. } = &response {
            abort_reason = Some(format!("tabletop exercise stopped: {why}"));
        }
        handle(&mut rec, &p, response, audit)?;
    }
    Ok(report(rec, clock, answers_file, abort_reason))
}

/// Record one step's response: its lines in the report, its findings, its audit
/// record; the exercise clock moves on to its end.
fn handle(
    rec: &mut Record<'_>,
    p: &Presentation<'_>,
    response: Response,
    audit: &dyn Fn(&str, Value),
) -> Result<(), TabletopError> {
    let line = TabletopStep {
        index: p.index,
        phase: p.step.phase,
        name: p.step.name.clone(),
        description: p.step.describe(),
        rollback: p.rollback,
        role: p.role.to_string(),
        decision_required: p.decision_required,
        budget_ms: p.budget_ms,
        budget_binding: p.budget_binding,
        presented_ms: rec.clock_ms,
        acknowledged_ms: None,
        decided_ms: None,
        acknowledged_by: None,
        decision: String::new(),
        within_budget: false,
    };
    match response {
        Response::Answered(answer) => answered(rec, p, line, answer, audit),
        Response::Unanswered { waited_ms } | Response::Ended { waited_ms, .. } => {
            unanswered(rec, p, line, waited_ms);
            Ok(())
        }
    }
}

/// Nobody holding the role acknowledged the step: a critical finding, and the
/// clock moves on by the time the floor waited.
fn unanswered(rec: &mut Record<'_>, p: &Presentation<'_>, line: TabletopStep, waited_ms: u64) {
    let step = p.step;
    let presented_ms = line.presented_ms;
    rec.clock_ms = presented_ms.saturating_add(waited_ms);
    let nobody = format!("nobody holding {} ({}) acknowledged it", p.role, p.holders.join(", "));
    rec.note(rec.clock_ms, Some(step.phase), "not_acknowledged", format!("{}: {nobody}", step.name));
    rec.finding(
        Severity::Critical,
        Some(step.phase),
        format!("Step {} not acknowledged: {}", p.index, step.name),
        format!("{}: {nobody}", step.describe()),
    );
    let (from, to) = (rec.at(presented_ms), rec.at(rec.clock_ms));
    let detail = format!("not acknowledged by {}", p.role);
    rec.steps.push(step_result(p.index, step, p.rollback, Some(from), Some(to), StepOutcome::Failed, detail));
    rec.tabletop.push(line);
}

/// The step was acknowledged and decided: judged against its budget and its
/// need of a decision, and audited under the participant's name.
fn answered(
    rec: &mut Record<'_>,
    p: &Presentation<'_>,
    mut line: TabletopStep,
    answer: Answer,
    audit: &dyn Fn(&str, Value),
) -> Result<(), TabletopError> {
    let step = p.step;
    // The floor promised a holder of the role; an answer from anyone else is a
    // bug in the floor and must not be recorded as the role's.
    let by = rec.ex.roster.may_acknowledge(&answer.by, p.role).map_err(|detail| TabletopError::Answer {
        file: rec.ex.source.origin.clone(),
        index: p.index,
        name: step.name.clone(),
        detail,
    })?;
    let presented_ms = line.presented_ms;
    let acknowledged_ms = presented_ms.saturating_add(answer.acknowledged_after_ms);
    let decided_ms = presented_ms.saturating_add(answer.decided_after_ms.max(answer.acknowledged_after_ms));
    rec.clock_ms = decided_ms;
    line.acknowledged_ms = Some(acknowledged_ms);
    line.decided_ms = Some(decided_ms);
    line.acknowledged_by = Some(by.clone());
    line.decision = answer.decision;
    line.within_budget = decided_ms - presented_ms <= p.budget_ms;
    let failed = judge(rec, p, &line, &by);
    if matches!(step.kind, StepKind::Manual { .. }) {
        rec.confirmations.push(format!("{}: {} (confirmed by {by})", step.name, step.describe()));
    }
    let decision = if line.decision.is_empty() { "(no decision recorded)" } else { line.decision.as_str() };
    let detail = format!(
        "acknowledged by {by} ({}) {} ms after it was presented, decided after {} ms: {decision}{}",
        p.role,
        acknowledged_ms - presented_ms,
        decided_ms - presented_ms,
        if failed.is_empty() { String::new() } else { format!(" ({})", failed.join("; ")) },
    );
    rec.note(acknowledged_ms, Some(step.phase), "acknowledged", format!("{}: {by} ({})", step.name, p.role));
    rec.note(decided_ms, Some(step.phase), "decided", format!("{}: {decision}", step.name));
    let outcome = if failed.is_empty() { StepOutcome::Done } else { StepOutcome::Failed };
    let (from, to) = (rec.at(presented_ms), rec.at(decided_ms));
    rec.steps.push(step_result(p.index, step, p.rollback, Some(from), Some(to), outcome, detail));
    audit(
        crate::audit::action::TABLETOP_ACKNOWLEDGED,
        json!({ "drill_id": rec.ex.drill_id, "step": p.index, "name": step.name, "role": p.role.as_str(), "by": by,
                "decision": line.decision, "presented_ms": presented_ms, "acknowledged_ms": acknowledged_ms,
                "decided_ms": decided_ms }),
    );
    rec.tabletop.push(line);
    Ok(())
}

/// The findings of an answered step; returns why the step failed (empty: it
/// did not). A non-binding budget exceeded is only a warning.
fn judge(rec: &mut Record<'_>, p: &Presentation<'_>, line: &TabletopStep, by: &str) -> Vec<&'static str> {
    let step = p.step;
    let mut failed = Vec::new();
    if !line.within_budget {
        let took_ms = line.decided_ms.unwrap_or(line.presented_ms) - line.presented_ms;
        let (severity, title, why) = if p.budget_binding {
            failed.push("past its timeout");
            (Severity::Critical, "took longer than its wait allows", "a drill would have failed the wait here")
        } else {
            (Severity::Warning, "took longer than its budget", "tabletop.ack_within_ms")
        };
        rec.finding(
            severity,
            Some(step.phase),
            format!("Step {} {title}: {}", p.index, step.name),
            format!("decided {took_ms} ms after it was presented, against {} ms ({why})", p.budget_ms),
        );
    }
    if p.decision_required && line.decision.is_empty() {
        failed.push("no decision recorded");
        rec.finding(
            Severity::Critical,
            Some(step.phase),
            format!("Step {}: no decision recorded: {}", p.index, step.name),
            format!("{by} ({}) acknowledged it without recording the decision this step needs", p.role),
        );
    }
    failed
}

fn clock_word(clock: ExerciseClock) -> &'static str {
    match clock {
        ExerciseClock::Wall => "wall",
        ExerciseClock::Simulated => "simulated",
    }
}

/// The recovery timed by the participants' decisions: from the presentation of
/// the first step that would interrupt service (else the first fault step) to
/// the decision of the first step after it that ends each phase. A phase whose
/// step was not acknowledged is not reached, and then neither is the total.
pub fn recovery(plan: &Plan, steps: &[TabletopStep]) -> TabletopRecovery {
    let all: Vec<(usize, &Step, bool)> = plan_steps(plan).collect();
    let fault = |outage: bool| {
        all.iter().find(|(_, s, rollback)| {
            !rollback && matches!(&s.kind, StepKind::Fault(a) if if outage { a.starts_outage() } else { a.is_fault() })
        })
    };
    let Some(&(fault_index, _, _)) = fault(true).or_else(|| fault(false)) else {
        return TabletopRecovery::default();
    };
    let line = |index: usize| steps.iter().find(|s| s.index == index);
    let fault_presented_ms = line(fault_index).map(|l| l.presented_ms);
    let mark = |ends: &dyn Fn(&WaitCondition) -> bool| {
        let found = all.iter().find(|(i, s, _)| {
            *i > fault_index && matches!(&s.kind, StepKind::Wait { condition, .. } if ends(condition))
        });
        match found {
            None => RecoveryMark::default(),
            Some(&(index, _, _)) => RecoveryMark {
                step: Some(index),
                after_fault_ms: line(index)
                    .and_then(|l| l.decided_ms)
                    .zip(fault_presented_ms)
                    .map(|(decided, fault)| decided.saturating_sub(fault)),
            },
        }
    };
    let elect = mark(&|c| matches!(c, WaitCondition::NewPrimary | WaitCondition::PrimaryIs { .. }));
    let dns = mark(&|c| matches!(c, WaitCondition::DnsFollowsPrimary));
    let mail = mark(&|c| matches!(c, WaitCondition::MailFlows));
    let phases = [&elect, &dns, &mail];
    let planned: Vec<&&RecoveryMark> = phases.iter().filter(|m| m.step.is_some()).collect();
    let total_ms = if planned.is_empty() || planned.iter().any(|m| m.after_fault_ms.is_none()) {
        None
    } else {
        planned.iter().filter_map(|m| m.after_fault_ms).max()
    };
    TabletopRecovery { fault_step: Some(fault_index), fault_presented_ms, elect, dns, mail, total_ms }
}

/// The plan's objectives judged on the exercise: the RTO objectives on the
/// participants' times, and every step acknowledged by its role. The rest (RPO,
/// deferred mail, latency) cannot be judged without traffic: listed apart.
pub fn grade(plan: &Plan, recovery: &TabletopRecovery, unacknowledged: u64) -> (Vec<ObjectiveResult>, Vec<String>) {
    let mut out = Vec::new();
    let o = &plan.objectives;
    let mut push = |name: &str, target: Option<u64>, measured: Option<u64>, unit: &str| {
        if let Some(target) = target {
            let met = measured.is_some_and(|v| v <= target);
            out.push(ObjectiveResult { name: name.into(), target, measured, unit: unit.into(), met });
        }
    };
    push("rto_smtp_ms", o.rto_smtp_ms, recovery.mail.after_fault_ms, "ms");
    push("rto_imap_ms", o.rto_imap_ms, recovery.mail.after_fault_ms, "ms");
    push("rto_total_ms", o.rto_total_ms, recovery.total_ms, "ms");
    push(STEPS_UNACKNOWLEDGED, Some(0), Some(unacknowledged), "steps");
    let mut not_graded = vec!["rpo_messages".to_string()];
    if o.max_deferred.is_some() {
        not_graded.push("max_deferred".into());
    }
    if o.smtp_p99_ms.is_some() {
        not_graded.push("smtp_p99_ms".into());
    }
    (out, not_graded)
}

fn report(
    mut rec: Record<'_>,
    clock: ExerciseClock,
    answers_file: Option<String>,
    abort_reason: Option<String>,
) -> Report {
    let ex = rec.ex;
    let recovery = recovery(ex.plan, &rec.tabletop);
    let unacknowledged = rec
        .steps
        .iter()
        .filter(|s| !rec.tabletop.iter().any(|t| t.index == s.index && t.acknowledged_by.is_some()))
        .count() as u64;
    let (objectives, not_graded) = grade(ex.plan, &recovery, unacknowledged);
    for o in objectives.iter().filter(|o| !o.met) {
        let evidence = match (o.name.as_str(), o.measured) {
            (STEPS_UNACKNOWLEDGED, Some(n)) => format!("{n} step(s) were not acknowledged by the role responsible"),
            (_, Some(m)) => format!(
                "the participants took {m} ms from step {} being presented to the recovery, against a target of {} ms",
                recovery.fault_step.map_or_else(|| "?".into(), |s| s.to_string()),
                o.target
            ),
            (_, None) => format!(
                "not reached (target {} {}): the step that ends the phase was not acknowledged, or the plan has none",
                o.target, o.unit
            ),
        };
        rec.finding(Severity::Critical, None, format!("Objective {} missed", o.name), evidence);
    }
    let finished_ms = rec.clock_ms;
    rec.note(finished_ms, None, "exercise_ended", format!("{} step(s) presented", rec.tabletop.len()));
    rec.timeline.sort_by_key(|e| e.at_ms);
    let critical = rec.findings.iter().any(|f| f.severity == Severity::Critical);
    let verdict = if abort_reason.is_some() {
        Verdict::Aborted
    } else if critical || objectives.iter().any(|o| !o.met) {
        Verdict::Failed
    } else {
        Verdict::Passed
    };
    Report {
        drill_id: ex.drill_id.clone(),
        plan: PlanInfo {
            name: ex.plan.name.clone(),
            description: ex.plan.description.clone(),
            origin: ex.source.origin.clone(),
            sha256: ex.source.sha256(),
        },
        verdict,
        abort_reason,
        started_at_ms: ex.started_at_ms,
        finished_at_ms: rec.at(finished_ms),
        objectives,
        rto: Default::default(),
        rpo: Default::default(),
        gaps: Vec::new(),
        steps: rec.steps,
        timeline: rec.timeline,
        probes: Default::default(),
        findings: rec.findings,
        approvals: ex.approvals.clone(),
        confirmations: rec.confirmations,
        environment: Environment { target: "none".into(), ..Environment::here() },
        load: None,
        outbound_queue: None,
        mode: Some(DrillMode::Tabletop),
        tabletop: Some(TabletopRecord {
            clock,
            answers_file,
            participants: ex.roster.participants(),
            steps: rec.tabletop,
            recovery,
            not_graded,
        }),
        regressions: None,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::{Cell, RefCell};
    use std::io::Cursor;

    use super::*;

    const T0: u64 = 1_740_830_400_000;

    fn site_outage() -> (PlanSource, Plan) {
        let source = crate::scenarios::load("site-outage").expect("site-outage is in the library");
        let plan = Plan::parse(&source).expect("the shipped plan parses");
        (source, plan)
    }

    fn team() -> Vec<String> {
        ["Alice=incident commander", "bob=mail-operator", "dan=dns_operator"].iter().map(|s| s.to_string()).collect()
    }

    /// Answers as TOML: (step, by, decision, after_ms).
    fn toml_answers(answers: &[(usize, &str, &str, u64)]) -> String {
        answers
            .iter()
            .map(|(step, by, decision, after)| {
                format!("[[answers]]\nstep = {step}\nby = {by:?}\ndecision = {decision:?}\nafter_ms = {after}\n")
            })
            .collect()
    }

    /// Every step of site-outage answered by its role, with these delays.
    fn all_answered(delays: &[u64; 15]) -> String {
        let by = |i: usize| match i {
            1 | 3 | 5 | 6 | 7 => "bob",
            4 => "dan",
            _ => "alice",
        };
        let answers: Vec<(usize, &str, &str, u64)> =
            (1..=15).map(|i| (i, by(i), if i == 2 { "fail over to sh" } else { "" }, delays[i - 1])).collect();
        toml_answers(&answers)
    }

    const QUICK: [u64; 15] =
        [1_000, 4_000, 2_000, 5_000, 3_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000, 1_000];

    struct Run {
        report: Report,
        audit: Vec<(String, Value)>,
    }

    fn run_with(
        plan: &Plan,
        source: &PlanSource,
        roster: &Roster,
        floor: &mut dyn Floor,
    ) -> Result<Run, TabletopError> {
        let ex = Exercise {
            plan,
            source,
            roster,
            drill_id: "20250301T120000.000Z-site-outage".into(),
            approvals: Vec::new(),
            started_at_ms: T0,
        };
        let audit = RefCell::new(Vec::new());
        let report =
            run(&ex, floor, &|action: &str, detail: Value| audit.borrow_mut().push((action.to_string(), detail)))?;
        Ok(Run { report, audit: audit.into_inner() })
    }

    fn run_sheet(text: &str) -> Result<Run, TabletopError> {
        let (source, plan) = site_outage();
        let roster = Roster::choose(&team(), &plan)?;
        let mut sheet = AnswerSheet::parse("answers.toml", text, false, &plan, &roster)?;
        run_with(&plan, &source, &roster, &mut sheet)
    }

    fn objective<'a>(r: &'a Report, name: &str) -> &'a ObjectiveResult {
        r.objectives
            .iter()
            .find(|o| o.name == name)
            .unwrap_or_else(|| panic!("no objective {name}: {:?}", r.objectives))
    }

    #[test]
    fn an_answer_sheet_times_every_step_on_its_own_clock_and_grades_the_recovery() {
        let run = run_sheet(&all_answered(&QUICK)).unwrap();
        let r = &run.report;
        let t = r.tabletop.as_ref().unwrap();
        assert_eq!(r.mode, Some(DrillMode::Tabletop));
        assert_eq!(t.clock, ExerciseClock::Simulated);
        assert_eq!(t.steps.len(), 15);
        // Each step is presented when the one before was decided.
        let mut clock = 0;
        for (s, delay) in t.steps.iter().zip(QUICK) {
            assert_eq!(s.presented_ms, clock, "{s:?}");
            clock += delay;
            assert_eq!(s.decided_ms, Some(clock), "{s:?}");
            assert_eq!(s.acknowledged_ms, Some(clock), "acknowledged when decided unless the file says otherwise");
        }
        let by: Vec<(&str, &str)> =
            t.steps.iter().map(|s| (s.role.as_str(), s.acknowledged_by.as_deref().unwrap())).collect();
        assert_eq!(by[0], ("mail-operator", "bob"));
        assert_eq!(by[1], ("incident-commander", "Alice"), "the name as the roster has it");
        assert_eq!(by[3], ("dns-operator", "dan"));
        assert_eq!(t.steps[1].budget_ms, 20_000);
        assert!(t.steps[1].budget_binding && t.steps[1].decision_required);
        assert!(!t.steps[6].budget_binding, "an elapsed soak is not a deadline");
        assert_eq!(t.steps[6].budget_ms, crate::plan::ACK_WITHIN_MS_DEFAULT);
        // Fault at step 1 (presented at 0); elect at step 2, DNS at 4, mail at 5.
        let rec = &t.recovery;
        assert_eq!((rec.fault_step, rec.fault_presented_ms), (Some(1), Some(0)));
        assert_eq!((rec.elect.step, rec.elect.after_fault_ms), (Some(2), Some(5_000)));
        assert_eq!((rec.dns.step, rec.dns.after_fault_ms), (Some(4), Some(12_000)));
        assert_eq!((rec.mail.step, rec.mail.after_fault_ms), (Some(5), Some(15_000)));
        assert_eq!(rec.total_ms, Some(15_000));
        assert_eq!(objective(r, "rto_smtp_ms").measured, Some(15_000));
        assert!(objective(r, "rto_smtp_ms").met, "at the objective is within it");
        assert_eq!(objective(r, STEPS_UNACKNOWLEDGED).measured, Some(0));
        assert!(r.objectives.iter().all(|o| o.met), "{:?}", r.objectives);
        assert_eq!(t.not_graded, ["rpo_messages", "max_deferred"]);
        assert_eq!(r.verdict, Verdict::Passed, "{:?}", r.findings);
        assert!(r.findings.is_empty());
        assert!(r.steps.iter().all(|s| s.outcome == StepOutcome::Done));
        assert_eq!(r.steps[4].started_at_ms, Some(T0 + 12_000));
        assert_eq!(r.finished_at_ms, T0 + QUICK.iter().sum::<u64>());
        assert_eq!(r.rto, crate::report::Rto::default(), "nothing was measured");
        assert_eq!(r.environment.target, "none");
        // Audited: the start, then every acknowledgement under the participant's name.
        assert_eq!(run.audit[0].0, crate::audit::action::DRILL_STARTED);
        assert_eq!(run.audit[0].1["mode"], "tabletop");
        let acks: Vec<&Value> = run
            .audit
            .iter()
            .filter(|(a, _)| a == crate::audit::action::TABLETOP_ACKNOWLEDGED)
            .map(|(_, d)| d)
            .collect();
        assert_eq!(acks.len(), 15);
        assert_eq!(acks[3]["by"], "dan");
        assert_eq!(acks[1]["decision"], "fail over to sh");
    }

    #[test]
    fn the_same_answers_give_the_same_report_data() {
        let a = run_sheet(&all_answered(&QUICK)).unwrap().report;
        let b = run_sheet(&all_answered(&QUICK)).unwrap().report;
        assert_eq!(a.tabletop, b.tabletop);
        assert_eq!(a.objectives, b.objectives);
        assert_eq!(a.steps, b.steps);
    }

    #[test]
    fn a_slow_decision_within_every_budget_still_misses_the_rto() {
        let mut slow = QUICK;
        slow[3] = 19_000; // DNS decided just inside its 20 s wait
        let r = run_sheet(&all_answered(&slow)).unwrap().report;
        let rec = &r.tabletop.as_ref().unwrap().recovery;
        assert_eq!(rec.mail.after_fault_ms, Some(29_000));
        let smtp = objective(&r, "rto_smtp_ms");
        assert_eq!((smtp.measured, smtp.met), (Some(29_000), false));
        assert!(!objective(&r, "rto_imap_ms").met);
        assert!(objective(&r, "rto_total_ms").met, "29 s is within the 30 s total");
        assert_eq!(r.verdict, Verdict::Failed);
        assert!(r
            .findings
            .iter()
            .any(|f| f.title == "Objective rto_smtp_ms missed" && f.evidence.contains("29000 ms")));
    }

    #[test]
    fn a_wait_decided_past_its_timeout_fails_the_step_and_a_late_note_is_a_warning() {
        let mut late = QUICK;
        late[1] = 25_000; // the election wait allows 20 s
        late[6] = 400_000; // the soak, past the 5 min budget
        let r = run_sheet(&all_answered(&late)).unwrap().report;
        let t = r.tabletop.as_ref().unwrap();
        assert!(!t.steps[1].within_budget && !t.steps[6].within_budget);
        assert_eq!(r.steps[1].outcome, StepOutcome::Failed);
        assert_eq!(r.steps[6].outcome, StepOutcome::Done);
        let severity = |prefix: &str| r.findings.iter().find(|f| f.title.starts_with(prefix)).map(|f| f.severity);
        assert_eq!(severity("Step 2 took longer than its wait allows"), Some(Severity::Critical));
        assert_eq!(severity("Step 7 took longer than its budget"), Some(Severity::Warning));
        assert_eq!(r.verdict, Verdict::Failed);
    }

    #[test]
    fn an_unanswered_step_and_an_empty_decision_are_findings() {
        let mut answers: Vec<(usize, &str, &str, u64)> = (1..=15)
            .filter(|i| *i != 4)
            .map(|i| (i, if i == 1 || (3..=7).contains(&i) { "bob" } else { "alice" }, "", 1_000))
            .collect();
        answers[1].2 = ""; // step 2 needs a decision
        let r = run_sheet(&toml_answers(&answers)).unwrap().report;
        let t = r.tabletop.as_ref().unwrap();
        let dns = &t.steps[3];
        assert_eq!((dns.acknowledged_by.as_ref(), dns.decided_ms), (None, None));
        assert_eq!(t.steps[4].presented_ms, dns.presented_ms + 20_000, "the facilitator waited the wait's timeout");
        assert_eq!(t.recovery.dns.after_fault_ms, None);
        assert_eq!(t.recovery.total_ms, None, "a phase not reached leaves the total unreached");
        assert_eq!(objective(&r, STEPS_UNACKNOWLEDGED).measured, Some(1));
        let titles: Vec<&str> = r.findings.iter().map(|f| f.title.as_str()).collect();
        assert!(
            titles.contains(&"Step 4 not acknowledged: The surviving DNS points mail. and MX at the new primary"),
            "{titles:?}"
        );
        assert!(titles.iter().any(|t| t.starts_with("Step 2: no decision recorded")), "{titles:?}");
        assert!(titles.contains(&"Objective rto_total_ms missed"), "{titles:?}");
        assert_eq!(r.steps[3].outcome, StepOutcome::Failed);
        assert_eq!(r.verdict, Verdict::Failed);
    }

    #[test]
    fn an_answer_from_someone_without_the_role_is_refused_naming_step_and_person() {
        let err = run_sheet(&toml_answers(&[(4, "bob", "", 1_000)])).err().unwrap().to_string();
        assert!(err.contains("step 4") && err.contains("The surviving DNS"), "{err}");
        assert!(err.contains("bob holds mail-operator, not dns-operator") && err.contains("only dan"), "{err}");
        let err = run_sheet(&toml_answers(&[(2, "carol", "", 0)])).err().unwrap().to_string();
        assert!(err.contains("carol is not a participant") && err.contains("step 2"), "{err}");
        for (text, needle) in [
            (toml_answers(&[(16, "bob", "", 0)]), "no step 16"),
            ("[[answers]]\nstep = \"No such step\"\nby = \"bob\"\n".to_string(), "no step named"),
            (toml_answers(&[(1, "bob", "", 0), (1, "bob", "", 0)]), "answered twice"),
            (toml_answers(&[(1, "bob", "", ANSWER_AFTER_MS_MAX + 1)]), "after_ms"),
            (
                "[[answers]]\nstep = 1\nby = \"bob\"\nafter_ms = 5\nacknowledged_after_ms = 6\n".into(),
                "after the decision",
            ),
            ("[[answers]]\nstep = 1\nby = \"bob\"\nmood = \"calm\"\n".into(), "mood"),
            ("[[answers]]\nstep = 1\nby = \"bob\"\ndecision = \"x\\u0007\"\n".into(), "control character"),
        ] {
            let err = run_sheet(&text).err().unwrap_or_else(|| panic!("accepted {text}")).to_string();
            assert!(err.contains(needle), "{text}\n=> {err}\n(wanted {needle:?})");
        }
    }

    #[test]
    fn answers_name_steps_by_number_or_name_in_toml_or_json() {
        let (_, plan) = site_outage();
        let roster = Roster::choose(&team(), &plan).unwrap();
        let json =
            r#"[{"step": "The surviving sites elect a new primary", "by": "ALICE", "decision": "go", "after_ms": 7}]"#;
        let mut sheet = AnswerSheet::parse("a.json", json, true, &plan, &roster).unwrap();
        let role = Role::parse("incident-commander").unwrap();
        let p = Presentation {
            index: 2,
            total: 15,
            step: &plan.steps[1],
            rollback: false,
            role: &role,
            holders: roster.holders(&role),
            budget_ms: 20_000,
            budget_binding: true,
            decision_required: true,
        };
        let answered = sheet.take(&p, &roster).unwrap();
        assert_eq!(
            answered,
            Response::Answered(Answer {
                by: "Alice".into(),
                acknowledged_after_ms: 7,
                decided_after_ms: 7,
                decision: "go".into()
            })
        );
        assert_eq!(sheet.take(&p, &roster).unwrap(), Response::Unanswered { waited_ms: 20_000 }, "answered once");
        let wrapped = r#"{"answers": [{"step": 1, "by": "bob"}]}"#;
        assert!(AnswerSheet::parse("a.json", wrapped, true, &plan, &roster).is_ok());
        let err = AnswerSheet::parse("a.json", "{", true, &plan, &roster).unwrap_err().to_string();
        assert!(err.starts_with("a.json: not an answers list"), "{err}");
    }

    #[test]
    fn every_role_the_plan_needs_must_be_held_before_the_exercise_starts() {
        let (source, plan) = site_outage();
        let roster = Roster::choose(&["alice=incident-commander".into(), "bob=mail-operator".into()], &plan).unwrap();
        let mut sheet = AnswerSheet::parse("a.toml", "answers = []", false, &plan, &roster).unwrap();
        let err = run_with(&plan, &source, &roster, &mut sheet).err().unwrap().to_string();
        assert!(
            err.contains("dns-operator")
                && err.contains("step(s) 4")
                && err.contains("--participant NAME=dns-operator"),
            "{err}"
        );
    }

    #[test]
    fn participants_come_from_the_command_line_or_else_from_the_plan() {
        let text = "name = \"t\"\ntarget = { kind = \"lab\" }\n[tabletop]\nack_within_ms = 1000\n\
                    [[tabletop.participants]]\nname = \"  Li   Wei \"\nrole = \"Incident Commander\"\n\
                    [[steps]]\nphase = \"decide\"\nname = \"x\"\naction = \"kill_site\"\nsite = \"bj\"\n";
        let plan = Plan::parse(&PlanSource { origin: "t.toml".into(), text: text.into() }).unwrap();
        assert_eq!(plan.tabletop.ack_within_ms, 1000);
        let from_plan = Roster::choose(&[], &plan).unwrap();
        assert_eq!(from_plan.participants()[0].name, "Li Wei");
        assert_eq!(from_plan.participants()[0].role, "incident-commander");
        assert_eq!(from_plan.participants()[0].source, ParticipantSource::Plan);
        assert!(from_plan.covers(&plan).is_ok());
        let given = Roster::choose(&["zhang=incident-commander".into()], &plan).unwrap();
        assert_eq!(
            given.holders(&Role::parse("incident commander").unwrap()),
            ["zhang"],
            "the command line replaces the plan's list"
        );
        for (bad, needle) in [
            ("alice", "NAME=ROLE"),
            ("=mail-operator", "empty"),
            ("alice=mail/operator", "not a letter"),
            ("alice=", "empty"),
        ] {
            let err = Roster::choose(&[bad.to_string()], &plan).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        let twice = Roster::choose(&["a=x".into(), "A=x".into()], &plan).unwrap_err().to_string();
        assert!(twice.contains("already"), "{twice}");
    }

    /// A terminal whose clock moves 500 ms every time it is read.
    fn terminal(input: &str) -> Terminal<Cursor<Vec<u8>>, Vec<u8>, impl FnMut() -> u64> {
        let ticks = Cell::new(0u64);
        Terminal::new(Cursor::new(input.as_bytes().to_vec()), Vec::new(), move || {
            ticks.set(ticks.get() + 500);
            ticks.get()
        })
    }

    #[test]
    fn the_terminal_asks_again_when_the_name_does_not_hold_the_role_and_times_on_its_clock() {
        let (source, plan) = site_outage();
        let roster = Roster::choose(&team(), &plan).unwrap();
        // Step 1: alice tries (she is the commander), bob acknowledges; then
        // every later step is skipped with an empty name until the input ends.
        let mut floor = terminal("alice\nbob\nsite down confirmed\n\n");
        let r = run_with(&plan, &source, &roster, &mut floor).unwrap().report;
        let shown = String::from_utf8(floor.output.clone()).unwrap();
        assert!(shown.contains("Step 1 of 15") && shown.contains("What would happen: kill site primary"), "{shown}");
        assert!(shown.contains("Role: mail-operator (held by bob)"), "{shown}");
        assert!(shown.contains("refused: Alice holds incident-commander, not mail-operator: only bob"), "{shown}");
        let t = r.tabletop.as_ref().unwrap();
        assert_eq!(t.clock, ExerciseClock::Wall);
        let first = &t.steps[0];
        assert_eq!(first.acknowledged_by.as_deref(), Some("bob"));
        assert_eq!(first.decision, "site down confirmed");
        // Clock reads: shown 500, ack 1000, decided 1500.
        assert_eq!((first.acknowledged_ms, first.decided_ms), (Some(500), Some(1_000)));
        assert_eq!(t.steps[1].acknowledged_by, None, "an empty name: nobody acknowledged step 2");
        // Step 3: the input ended; the exercise stops and the rest is not presented.
        assert_eq!(t.steps.len(), 3);
        assert_eq!(r.verdict, Verdict::Aborted);
        assert!(r.abort_reason.as_deref().unwrap().contains("input ended at step 3"), "{:?}", r.abort_reason);
        assert_eq!(r.steps.len(), 15);
        assert!(r.steps[3..].iter().all(|s| s.outcome == StepOutcome::Skipped && s.started_at_ms.is_none()));
        assert_eq!(objective(&r, STEPS_UNACKNOWLEDGED).measured, Some(14));
    }

    #[test]
    fn the_terminal_gives_up_on_a_step_after_bounded_wrong_names() {
        let (_, plan) = site_outage();
        let roster = Roster::choose(&team(), &plan).unwrap();
        let role = plan.steps[0].responsible_role();
        let p = Presentation {
            index: 1,
            total: 15,
            step: &plan.steps[0],
            rollback: false,
            role: &role,
            holders: roster.holders(&role),
            budget_ms: 1,
            budget_binding: false,
            decision_required: false,
        };
        let mut floor = terminal(&"mallory\n".repeat(REPROMPTS_MAX + 5));
        assert!(matches!(floor.take(&p, &roster).unwrap(), Response::Unanswered { .. }));
    }

    #[test]
    fn roles_are_one_whatever_their_spelling_and_phases_have_defaults() {
        let a = Role::parse("Incident Commander").unwrap();
        assert_eq!(a, Role::parse("incident-commander").unwrap());
        assert_eq!(a, Role::parse(" incident__commander ").unwrap());
        assert_eq!(a.as_str(), "incident-commander");
        assert_eq!(Role::parse("值班 经理").unwrap().as_str(), "值班-经理");
        assert!(Role::parse(&"x".repeat(crate::plan::ROLE_CHARS_MAX + 1)).is_err());
        assert_eq!(Role::default_for(Phase::Dns).as_str(), "dns-operator");
        assert_eq!(Role::default_for(Phase::Decide).as_str(), "incident-commander");
        assert_eq!(Role::default_for(Phase::Verify).as_str(), "mail-operator");
    }
}
