//! What the report says, independent of how it is drawn: the key-value lists
//! and tables both views print, built once here. A view only decides how a
//! [`Table`] and a [`Cell`] look and escapes the text they carry. Every word
//! here comes from the catalog in the report's [`Lang`].

use super::i18n::{Lang, Msg};
use super::{
    by_phase, drill_duration_ms, duration, offset, offset_opt, quantity, rto_label, rto_rows, source_word,
    step_outcome_class, step_outcome_word, utc, verdict_word, PhaseView,
};
use crate::regression::{Regression, RtoPhase, REGRESSION_MS_MIN, REGRESSION_PERCENT};
use crate::report::{
    ExerciseClock, ObjectiveResult, ParticipantSource, RecoveryMark, Report, Severity, StepOutcome, TabletopRecord,
};

/// How a cell's text is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Good,
    Bad,
    Muted,
}

/// One value. Every `String` here is report text, escaped by the view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cell {
    Text(String),
    /// A machine word or digest.
    Code(String),
    /// Clock-style times and addresses: monospace.
    Mono(String),
    Marked(Mark, String),
    /// A short status word drawn as a badge: its style class (`done`,
    /// `failed`, `critical`, the same in every language), its text and mark.
    Badge {
        class: &'static str,
        word: &'static str,
        mark: Mark,
    },
    /// A name with a muted note after it (`site-outage (scenarios/…)`).
    Noted(String, String),
    /// A step: its name, an optional tag (`rollback`), and what it does.
    Step {
        name: String,
        tag: Option<&'static str>,
        what: String,
    },
    Empty,
}

impl Cell {
    fn text(s: impl Into<String>) -> Cell {
        Cell::Text(s.into())
    }
}

pub(crate) struct Column {
    pub title: &'static str,
    /// Right-aligned figures.
    pub numeric: bool,
}

fn col(lang: Lang, title: Msg) -> Column {
    Column { title: lang.t(title), numeric: false }
}

fn num(lang: Lang, title: Msg) -> Column {
    Column { title: lang.t(title), numeric: true }
}

pub(crate) struct Table {
    /// A style hook for the HTML view (fixed column widths).
    pub class: Option<&'static str>,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// Said instead of the table when it has no row.
    pub empty: &'static str,
}

fn met_word(met: bool, lang: Lang) -> &'static str {
    lang.t(if met { Msg::Met } else { Msg::Missed })
}

fn met(met: bool, lang: Lang) -> Cell {
    Cell::Marked(if met { Mark::Good } else { Mark::Bad }, met_word(met, lang).into())
}

/// A latency in ms, or a dash when none was measured.
fn ms(v: Option<u64>) -> Cell {
    Cell::text(v.map_or_else(|| "–".to_string(), |v| format!("{v} ms")))
}

fn count(n: u64, bad_when_nonzero: bool) -> Cell {
    if bad_when_nonzero && n > 0 {
        Cell::Marked(Mark::Bad, n.to_string())
    } else {
        Cell::text(n.to_string())
    }
}

pub(crate) fn summary(r: &Report, lang: Lang) -> Vec<(&'static str, Cell)> {
    vec![
        (lang.t(Msg::Plan), Cell::Noted(r.plan.name.clone(), r.plan.origin.clone())),
        (lang.t(Msg::PlanSha256), Cell::Code(r.plan.sha256.clone())),
        (lang.t(Msg::DrillId), Cell::Code(r.drill_id.clone())),
        (lang.t(Msg::Started), Cell::text(utc(r.started_at_ms))),
        (lang.t(Msg::Finished), Cell::text(utc(r.finished_at_ms))),
        (lang.t(Msg::Duration), Cell::text(duration(drill_duration_ms(r)))),
    ]
}

pub(crate) fn objectives(r: &Report, lang: Lang) -> Table {
    Table {
        class: None,
        columns: vec![
            col(lang, Msg::Objective),
            num(lang, Msg::Target),
            num(lang, Msg::Measured),
            col(lang, Msg::Result),
        ],
        rows: r
            .objectives
            .iter()
            .map(|o| {
                let measured =
                    o.measured.map_or_else(|| lang.t(Msg::NotMeasured).to_string(), |m| quantity(m, &o.unit, lang));
                vec![
                    Cell::Code(o.name.clone()),
                    Cell::text(quantity(o.target, &o.unit, lang)),
                    Cell::text(measured),
                    met(o.met, lang),
                ]
            })
            .collect(),
        empty: lang.t(Msg::NoObjectives),
    }
}

/// The sentence before the RTO chart and table.
pub(crate) fn rto_intro(r: &Report, lang: Lang) -> Option<String> {
    r.rto.fault_at_ms.map(|at| lang.fmt(Msg::RtoIntro, &[&utc(at), &offset(at, r.started_at_ms)]))
}

pub(crate) fn rto(r: &Report, lang: Lang) -> Table {
    Table {
        class: None,
        columns: vec![col(lang, Msg::Phase), num(lang, Msg::AfterTheFault), col(lang, Msg::Objective)],
        rows: rto_rows(r)
            .into_iter()
            .map(|row| {
                let value = row.value_ms.map_or_else(
                    || Cell::Marked(Mark::Muted, lang.t(Msg::NotSeen).into()),
                    |v| Cell::text(duration(v)),
                );
                let objective = row.objective.map_or(Cell::Empty, |o| {
                    Cell::Marked(
                        if o.met { Mark::Good } else { Mark::Bad },
                        format!("{} {}", quantity(o.target, &o.unit, lang), met_word(o.met, lang)),
                    )
                });
                vec![Cell::text(lang.t(row.label)), value, objective]
            })
            .collect(),
        empty: "",
    }
}

pub(crate) fn rpo(r: &Report, lang: Lang) -> Table {
    let p = &r.rpo;
    let mut columns = vec![
        num(lang, Msg::Acknowledged),
        num(lang, Msg::Found),
        num(lang, Msg::Lost),
        num(lang, Msg::Duplicated),
        num(lang, Msg::Deferred4xx),
        num(lang, Msg::Refused5xx),
        num(lang, Msg::GivenUp),
    ];
    let mut row = vec![
        count(p.acknowledged, false),
        count(p.found, false),
        count(p.lost, true),
        count(p.duplicated, true),
        count(p.deferred, false),
        count(p.refused, false),
        count(p.given_up, true),
    ];
    // Only drills with a loss check during the outage have this figure.
    if let Some(missing) = p.missing_during_outage {
        columns.insert(3, num(lang, Msg::MissingDuringOutage));
        row.insert(3, count(missing, true));
    }
    Table { class: None, columns, rows: vec![row], empty: "" }
}

/// The sentence over the comparison with the previous drill: which drill, and
/// what counts as worse. `None` when the report holds no comparison.
pub(crate) fn previous_intro(r: &Report, lang: Lang) -> Option<String> {
    let c = r.regressions.as_ref()?;
    Some(lang.fmt(
        Msg::ComparedWith,
        &[
            &c.previous_drill_id,
            &utc(c.previous_started_at_ms),
            &REGRESSION_PERCENT.to_string(),
            &duration(REGRESSION_MS_MIN),
        ],
    ))
}

/// How many figures got worse, as a sentence.
pub(crate) fn previous_verdict_line(r: &Report, lang: Lang) -> Option<(bool, String)> {
    let c = r.regressions.as_ref()?;
    Some(if c.found.is_empty() {
        (false, lang.t(Msg::NothingWorse).to_string())
    } else {
        (true, lang.fmt(Msg::WorseCount, &[&c.found.len().to_string()]))
    })
}

/// This drill's figures beside the previous drill's: every RTO phase either
/// saw, the acknowledged mail lost and the verdict, with what got worse marked.
pub(crate) fn against_previous(r: &Report, lang: Lang) -> Option<Table> {
    let c = r.regressions.as_ref()?;
    let worse = Cell::Marked(Mark::Bad, lang.t(Msg::Worse).into());
    let phase_value = |v: Option<u64>| {
        v.map_or_else(|| Cell::Marked(Mark::Muted, lang.t(Msg::NotSeen).into()), |v| Cell::text(duration(v)))
    };
    let mut rows = Vec::new();
    for phase in RtoPhase::ALL {
        let (now, was) = (phase.of(&r.rto), phase.of(&c.previous_rto));
        if now.is_none() && was.is_none() {
            continue;
        }
        let regressed = c.found.iter().any(|f| f.phase() == Some(phase));
        let now_cell = match now {
            None if was.is_some() => Cell::Marked(Mark::Bad, lang.t(Msg::NotReached).into()),
            v => phase_value(v),
        };
        rows.push(vec![
            Cell::text(lang.t(rto_label(phase))),
            now_cell,
            phase_value(was),
            if regressed { worse.clone() } else { Cell::Empty },
        ]);
    }
    let more_lost = c.found.iter().any(|f| matches!(f, Regression::MoreLost { .. }));
    rows.push(vec![
        Cell::text(lang.t(Msg::CardLost)),
        count(r.rpo.lost, true),
        count(c.previous_rpo_lost, true),
        if more_lost { worse.clone() } else { Cell::Empty },
    ]);
    let no_longer_passed = c.found.iter().any(|f| matches!(f, Regression::NoLongerPassed { .. }));
    rows.push(vec![
        Cell::text(lang.t(Msg::VerdictKey)),
        Cell::text(verdict_word(r.verdict, lang)),
        Cell::text(verdict_word(c.previous_verdict, lang)),
        if no_longer_passed { worse } else { Cell::Empty },
    ]);
    Some(Table {
        class: None,
        columns: vec![
            col(lang, Msg::Figure),
            num(lang, Msg::ThisDrill),
            num(lang, Msg::PreviousDrill),
            col(lang, Msg::Change),
        ],
        rows,
        empty: "",
    })
}

pub(crate) fn reconciled_at(r: &Report, lang: Lang) -> String {
    if r.rpo.reconciled_at.is_empty() {
        lang.t(Msg::NoSite).into()
    } else {
        r.rpo.reconciled_at.join(", ")
    }
}

pub(crate) fn gaps(r: &Report, lang: Lang) -> Table {
    Table {
        class: None,
        columns: vec![col(lang, Msg::Protocol), num(lang, Msg::LongestGap), col(lang, Msg::From), col(lang, Msg::To)],
        rows: r
            .gaps
            .iter()
            .map(|g| {
                vec![
                    Cell::text(g.protocol.name()),
                    if g.longest_ms == 0 {
                        Cell::Marked(Mark::Muted, lang.t(Msg::NoFailure).into())
                    } else {
                        Cell::text(duration(g.longest_ms))
                    },
                    Cell::Mono(offset_opt(g.from_at_ms, r.started_at_ms)),
                    Cell::Mono(offset_opt(g.to_at_ms, r.started_at_ms)),
                ]
            })
            .collect(),
        empty: lang.t(Msg::NoGap),
    }
}

pub(crate) fn probes(r: &Report, lang: Lang) -> Table {
    Table {
        class: None,
        columns: vec![
            col(lang, Msg::Protocol),
            num(lang, Msg::Ok),
            num(lang, Msg::Failed),
            num(lang, Msg::P50),
            num(lang, Msg::P99),
        ],
        rows: r
            .probes
            .counts
            .iter()
            .map(|c| {
                vec![
                    Cell::text(c.protocol.name()),
                    count(c.ok, false),
                    count(c.failed, true),
                    ms(c.p50_ms),
                    ms(c.p99_ms),
                ]
            })
            .collect(),
        empty: lang.t(Msg::NoProbe),
    }
}

/// Throughput and latency of each mail flow before, during and after the fault.
pub(crate) fn load(r: &Report, lang: Lang) -> Table {
    let rows = r
        .load
        .iter()
        .flat_map(|l| l.windows.iter())
        .flat_map(|w| {
            let window = lang.t(match w.window {
                crate::report::WindowName::Before => Msg::WindowBefore,
                crate::report::WindowName::During => Msg::WindowDuring,
                crate::report::WindowName::After => Msg::WindowAfter,
            });
            w.flows.iter().map(move |f| {
                vec![
                    Cell::text(window),
                    Cell::text(f.protocol.name()),
                    count(f.acknowledged, false),
                    Cell::text(format!("{:.1}", f.per_second)),
                    count(f.failed_attempts, false),
                    ms(f.p50_ms),
                    ms(f.p90_ms),
                    ms(f.p99_ms),
                ]
            })
        })
        .collect();
    Table {
        class: None,
        columns: vec![
            col(lang, Msg::Window),
            col(lang, Msg::Protocol),
            num(lang, Msg::Acknowledged),
            num(lang, Msg::PerSecond),
            num(lang, Msg::FailedAttempts),
            num(lang, Msg::P50),
            num(lang, Msg::P90),
            num(lang, Msg::P99),
        ],
        rows,
        empty: lang.t(Msg::NoLoad),
    }
}

/// The load profile and the IDLE sessions in a sentence each (none without load).
pub(crate) fn load_lines(r: &Report, lang: Lang) -> Vec<String> {
    let Some(l) = &r.load else { return Vec::new() };
    let p = &l.profile;
    vec![
        lang.fmt(
            Msg::LoadProfileLine,
            &[
                &p.smtp_per_second.to_string(),
                &p.submissions_per_second.to_string(),
                &p.imap_idle_sessions.to_string(),
                &p.message_bytes.to_string(),
                &p.concurrency.to_string(),
            ],
        ),
        lang.fmt(
            Msg::IdleLine,
            &[
                &l.idle.pushes.to_string(),
                &l.idle.failures.to_string(),
                &l.idle.reconnects.to_string(),
                &format!("{} ms", l.idle.longest_reconnect_ms),
            ],
        ),
    ]
}

/// One runbook phase: its title, its steps and events as tables, its findings
/// as (number, severity, title).
pub(crate) struct PhaseSection {
    pub title: &'static str,
    pub steps: Option<Table>,
    pub events: Option<Table>,
    pub findings: Vec<(usize, Severity, String)>,
}

pub(crate) fn phases(r: &Report, lang: Lang) -> Vec<PhaseSection> {
    by_phase(r).into_iter().map(|view| phase(r, &view, lang)).collect()
}

fn phase(r: &Report, view: &PhaseView<'_>, lang: Lang) -> PhaseSection {
    let steps = (!view.steps.is_empty()).then(|| Table {
        class: Some("steps"),
        columns: vec![
            num(lang, Msg::StepNumber),
            col(lang, Msg::Step),
            col(lang, Msg::Outcome),
            col(lang, Msg::Started),
            col(lang, Msg::Finished),
            col(lang, Msg::Detail),
        ],
        rows: view
            .steps
            .iter()
            .map(|s| {
                let mark = match s.outcome {
                    StepOutcome::Done => Mark::Good,
                    StepOutcome::Failed => Mark::Bad,
                    StepOutcome::Skipped => Mark::Muted,
                };
                vec![
                    Cell::text(s.index.to_string()),
                    Cell::Step {
                        name: s.name.clone(),
                        tag: s.rollback.then_some(lang.t(Msg::RollbackTag)),
                        what: s.description.clone(),
                    },
                    Cell::Badge {
                        class: step_outcome_class(s.outcome),
                        word: step_outcome_word(s.outcome, lang),
                        mark,
                    },
                    Cell::Mono(offset_opt(s.started_at_ms, r.started_at_ms)),
                    Cell::Mono(offset_opt(s.finished_at_ms, r.started_at_ms)),
                    if s.outcome == StepOutcome::Failed {
                        Cell::Marked(Mark::Bad, s.detail.clone())
                    } else {
                        Cell::text(s.detail.clone())
                    },
                ]
            })
            .collect(),
        empty: "",
    });
    let events = (!view.timeline.is_empty()).then(|| Table {
        class: Some("events"),
        columns: vec![col(lang, Msg::At), col(lang, Msg::Source), col(lang, Msg::Event), col(lang, Msg::Detail)],
        rows: view
            .timeline
            .iter()
            .map(|e| {
                vec![
                    Cell::Mono(offset(e.at_ms, r.started_at_ms)),
                    Cell::text(source_word(e.source, lang)),
                    Cell::Code(e.kind.clone()),
                    Cell::text(e.detail.clone()),
                ]
            })
            .collect(),
        empty: "",
    });
    PhaseSection {
        title: view.title(lang),
        steps,
        events,
        findings: view.findings.iter().map(|(n, f)| (*n, f.severity, f.title.clone())).collect(),
    }
}

pub(crate) fn approvals(r: &Report, lang: Lang) -> Table {
    Table {
        class: None,
        columns: vec![col(lang, Msg::ApprovedBy), col(lang, Msg::At), col(lang, Msg::PlanSha256)],
        rows: r
            .approvals
            .iter()
            .map(|a| vec![Cell::text(a.by.clone()), Cell::text(utc(a.at_ms)), Cell::Code(a.plan_sha256.clone())])
            .collect(),
        empty: lang.t(Msg::NoApproval),
    }
}

pub(crate) fn environment(r: &Report, lang: Lang) -> Vec<(&'static str, Cell)> {
    let e = &r.environment;
    [
        (Msg::EnvTarget, &e.target),
        (Msg::Location, &e.target_location),
        (Msg::Domain, &e.domain),
        (Msg::MaildrVersion, &e.maildr_version),
        (Msg::Host, &e.host),
        (Msg::Os, &e.os),
    ]
    .into_iter()
    .map(|(k, v)| (lang.t(k), Cell::text(v.clone())))
    .collect()
}

pub(crate) fn sites(r: &Report, lang: Lang) -> Table {
    Table {
        class: None,
        columns: vec![col(lang, Msg::Site), col(lang, Msg::Role), col(lang, Msg::Address)],
        rows: r
            .environment
            .sites
            .iter()
            .map(|s| vec![Cell::text(s.name.clone()), Cell::text(s.role.clone()), Cell::Mono(s.address.clone())])
            .collect(),
        empty: "",
    }
}

// -------------------------------------------------------------------- tabletop

/// The title of the report: a drill's, or a tabletop exercise's.
pub(crate) fn title(r: &Report, lang: Lang, name: &str) -> String {
    lang.fmt(if r.is_tabletop() { Msg::TabletopReportTitle } else { Msg::ReportTitle }, &[name])
}

/// The sentences that open a tabletop's section: what it was, whose times
/// these are (the answers file's name is report text: `file` formats it for
/// the view), and what it could not judge.
pub(crate) fn tabletop_lines(t: &TabletopRecord, lang: Lang, file: &dyn Fn(&str) -> String) -> Vec<String> {
    let clock = match (t.clock, &t.answers_file) {
        (ExerciseClock::Simulated, Some(name)) => lang.fmt(Msg::ClockSimulated, &[&file(name)]),
        (ExerciseClock::Simulated, None) => lang.fmt(Msg::ClockSimulated, &["–"]),
        (ExerciseClock::Wall, _) => lang.t(Msg::ClockWall).to_string(),
    };
    let mut out = vec![lang.t(Msg::TabletopIntro).to_string(), clock];
    if !t.not_graded.is_empty() {
        out.push(lang.fmt(Msg::NotGraded, &[&file(&t.not_graded.join(", "))]));
    }
    out
}

pub(crate) fn tabletop_participants(t: &TabletopRecord, lang: Lang) -> Table {
    Table {
        class: None,
        columns: vec![col(lang, Msg::Name), col(lang, Msg::Role), col(lang, Msg::NamedIn)],
        rows: t
            .participants
            .iter()
            .map(|p| {
                let source = lang.t(match p.source {
                    ParticipantSource::CommandLine => Msg::FromCommandLine,
                    ParticipantSource::Plan => Msg::FromPlan,
                });
                vec![Cell::text(p.name.clone()), Cell::Code(p.role.clone()), Cell::text(source)]
            })
            .collect(),
        empty: "",
    }
}

/// Every step presented: its role, who acknowledged it, when, and the decision.
pub(crate) fn tabletop_steps(r: &Report, t: &TabletopRecord, lang: Lang) -> Table {
    let at = |ms: Option<u64>| Cell::Mono(offset_opt(ms.map(|m| r.started_at_ms.saturating_add(m)), r.started_at_ms));
    Table {
        class: None,
        columns: vec![
            num(lang, Msg::StepNumber),
            col(lang, Msg::Step),
            col(lang, Msg::Role),
            col(lang, Msg::AcknowledgedBy),
            col(lang, Msg::Presented),
            col(lang, Msg::AcknowledgedAt),
            col(lang, Msg::Decided),
            col(lang, Msg::Budget),
            col(lang, Msg::Decision),
        ],
        rows: t
            .steps
            .iter()
            .map(|s| {
                let by = s
                    .acknowledged_by
                    .as_ref()
                    .map_or_else(|| Cell::Marked(Mark::Bad, lang.t(Msg::Nobody).into()), |by| Cell::text(by.clone()));
                let budget = if s.budget_binding {
                    lang.fmt(Msg::BudgetOfWait, &[&duration(s.budget_ms)])
                } else {
                    duration(s.budget_ms)
                };
                let budget = if s.within_budget || s.acknowledged_by.is_none() {
                    Cell::text(budget)
                } else {
                    Cell::Marked(if s.budget_binding { Mark::Bad } else { Mark::Muted }, budget)
                };
                let decision = match (s.decision.is_empty(), s.decision_required) {
                    (false, _) => Cell::text(s.decision.clone()),
                    (true, true) => Cell::Marked(
                        Mark::Bad,
                        format!("{} ({})", lang.t(Msg::NoDecision), lang.t(Msg::DecisionRequired)),
                    ),
                    (true, false) => Cell::Marked(Mark::Muted, lang.t(Msg::NoDecision).into()),
                };
                vec![
                    Cell::text(s.index.to_string()),
                    Cell::Step {
                        name: s.name.clone(),
                        tag: s.rollback.then_some(lang.t(Msg::RollbackTag)),
                        what: s.description.clone(),
                    },
                    Cell::Code(s.role.clone()),
                    by,
                    at(Some(s.presented_ms)),
                    at(s.acknowledged_ms),
                    at(s.decided_ms),
                    budget,
                    decision,
                ]
            })
            .collect(),
        empty: lang.t(Msg::NoStep),
    }
}

/// The sentence before the recovery table.
pub(crate) fn tabletop_recovery_intro(t: &TabletopRecord, lang: Lang) -> String {
    match t.recovery.fault_step {
        Some(step) => lang.fmt(Msg::RecoveryIntro, &[&step.to_string()]),
        None => lang.t(Msg::NoFaultStep).into(),
    }
}

/// Each recovery phase: the step that ends it, the participants' time after the
/// fault step, and the objective that judges it.
pub(crate) fn tabletop_recovery(r: &Report, t: &TabletopRecord, lang: Lang) -> Table {
    let objective = |name: &str| r.objectives.iter().find(|o| o.name == name);
    let rec = &t.recovery;
    let rows: [(Msg, &RecoveryMark, Option<&ObjectiveResult>); 4] = [
        (Msg::RtoElect, &rec.elect, None),
        (Msg::RecoveryDns, &rec.dns, None),
        (Msg::RtoFirstSmtp, &rec.mail, objective("rto_smtp_ms")),
        (Msg::RtoFirstImap, &rec.mail, objective("rto_imap_ms")),
    ];
    let mut out: Vec<Vec<Cell>> = rows
        .iter()
        .map(|(label, mark, objective)| {
            let step = mark.step.map_or_else(
                || Cell::Marked(Mark::Muted, lang.t(Msg::NoSuchStep).into()),
                |s| Cell::text(s.to_string()),
            );
            let value = match (mark.step, mark.after_fault_ms) {
                (_, Some(ms)) => Cell::text(duration(ms)),
                (Some(_), None) => Cell::Marked(Mark::Bad, lang.t(Msg::NotReached).into()),
                (None, None) => Cell::Empty,
            };
            vec![Cell::text(lang.t(*label)), step, value, objective_cell(*objective, lang)]
        })
        .collect();
    let total = rec.total_ms.map_or_else(
        || {
            if rec.fault_step.is_some() {
                Cell::Marked(Mark::Bad, lang.t(Msg::NotReached).into())
            } else {
                Cell::Empty
            }
        },
        |ms| Cell::text(duration(ms)),
    );
    out.push(vec![
        Cell::text(lang.t(Msg::RtoTotal)),
        Cell::Empty,
        total,
        objective_cell(objective("rto_total_ms"), lang),
    ]);
    Table {
        class: None,
        columns: vec![
            col(lang, Msg::Phase),
            num(lang, Msg::EndedByStep),
            num(lang, Msg::AfterTheFault),
            col(lang, Msg::Objective),
        ],
        rows: out,
        empty: "",
    }
}

fn objective_cell(o: Option<&ObjectiveResult>, lang: Lang) -> Cell {
    o.map_or(Cell::Empty, |o| {
        Cell::Marked(
            if o.met { Mark::Good } else { Mark::Bad },
            format!("{} {}", quantity(o.target, &o.unit, lang), met_word(o.met, lang)),
        )
    })
}

/// Steps acknowledged by their role, of all the plan's steps: `(acknowledged, all)`.
pub(crate) fn tabletop_acknowledged(r: &Report, t: &TabletopRecord) -> (usize, usize) {
    (t.steps.iter().filter(|s| s.acknowledged_by.is_some()).count(), r.steps.len())
}
