//! What the report says, independent of how it is drawn: the key-value lists
//! and tables both views print, built once here. A view only decides how a
//! [`Table`] and a [`Cell`] look and escapes the text they carry.

use super::{
    by_phase, drill_duration_ms, duration, offset, offset_opt, quantity, rto_rows, step_outcome_word, utc, PhaseView,
};
use crate::report::{Report, Severity, Source, StepOutcome, Verdict};

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
    /// A short status word (`done`, `failed`, `critical`), drawn as a badge.
    Badge(&'static str, Mark),
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

const fn col(title: &'static str) -> Column {
    Column { title, numeric: false }
}

const fn num(title: &'static str) -> Column {
    Column { title, numeric: true }
}

pub(crate) struct Table {
    /// A style hook for the HTML view (fixed column widths).
    pub class: Option<&'static str>,
    pub columns: Vec<Column>,
    pub rows: Vec<Vec<Cell>>,
    /// Said instead of the table when it has no row.
    pub empty: &'static str,
}

pub(crate) fn verdict_note(v: Verdict) -> &'static str {
    match v {
        Verdict::Passed => "every objective met, every check passed",
        Verdict::Failed => "an objective or a check failed",
        Verdict::Aborted => "the drill stopped early and rolled back",
    }
}

pub(crate) fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    }
}

fn source_word(s: Source) -> &'static str {
    match s {
        Source::Drill => "drill",
        Source::Cluster => "cluster",
        Source::Probe => "probe",
    }
}

fn met(met: bool) -> Cell {
    if met {
        Cell::Marked(Mark::Good, "met".into())
    } else {
        Cell::Marked(Mark::Bad, "missed".into())
    }
}

fn count(n: u64, bad_when_nonzero: bool) -> Cell {
    if bad_when_nonzero && n > 0 {
        Cell::Marked(Mark::Bad, n.to_string())
    } else {
        Cell::text(n.to_string())
    }
}

pub(crate) fn summary(r: &Report) -> Vec<(&'static str, Cell)> {
    vec![
        ("Plan", Cell::Noted(r.plan.name.clone(), r.plan.origin.clone())),
        ("Plan SHA-256", Cell::Code(r.plan.sha256.clone())),
        ("Drill id", Cell::Code(r.drill_id.clone())),
        ("Started", Cell::text(utc(r.started_at_ms))),
        ("Finished", Cell::text(utc(r.finished_at_ms))),
        ("Duration", Cell::text(duration(drill_duration_ms(r)))),
    ]
}

pub(crate) fn objectives(r: &Report) -> Table {
    Table {
        class: None,
        columns: vec![col("Objective"), num("Target"), num("Measured"), col("Result")],
        rows: r
            .objectives
            .iter()
            .map(|o| {
                let measured = o.measured.map_or_else(|| "not measured".to_string(), |m| quantity(m, &o.unit));
                vec![
                    Cell::Code(o.name.clone()),
                    Cell::text(quantity(o.target, &o.unit)),
                    Cell::text(measured),
                    met(o.met),
                ]
            })
            .collect(),
        empty: "The plan sets no objectives.",
    }
}

/// The sentence before the RTO chart and table.
pub(crate) fn rto_intro(r: &Report) -> Option<String> {
    r.rto.fault_at_ms.map(|at| {
        format!(
            "Each phase in time after the first fault, injected at {} ({} into the drill).",
            utc(at),
            offset(at, r.started_at_ms)
        )
    })
}

pub(crate) const NO_FAULT: &str = "No fault was injected, so no recovery was measured.";

pub(crate) fn rto(r: &Report) -> Table {
    Table {
        class: None,
        columns: vec![col("Phase"), num("After the fault"), col("Objective")],
        rows: rto_rows(r)
            .into_iter()
            .map(|row| {
                let value = row
                    .value_ms
                    .map_or_else(|| Cell::Marked(Mark::Muted, "not seen".into()), |v| Cell::text(duration(v)));
                let objective = row.objective.map_or(Cell::Empty, |o| {
                    Cell::Marked(
                        if o.met { Mark::Good } else { Mark::Bad },
                        format!("{} {}", quantity(o.target, &o.unit), if o.met { "met" } else { "missed" }),
                    )
                });
                vec![Cell::text(row.label), value, objective]
            })
            .collect(),
        empty: "",
    }
}

pub(crate) fn rpo(r: &Report) -> Table {
    let p = &r.rpo;
    Table {
        class: None,
        columns: vec![
            num("Acknowledged"),
            num("Found"),
            num("Lost"),
            num("Duplicated"),
            num("Deferred (4xx)"),
            num("Refused (5xx)"),
            num("Given up"),
        ],
        rows: vec![vec![
            count(p.acknowledged, false),
            count(p.found, false),
            count(p.lost, true),
            count(p.duplicated, true),
            count(p.deferred, false),
            count(p.refused, false),
            count(p.given_up, true),
        ]],
        empty: "",
    }
}

pub(crate) fn reconciled_at(r: &Report) -> String {
    if r.rpo.reconciled_at.is_empty() {
        "no site".into()
    } else {
        r.rpo.reconciled_at.join(", ")
    }
}

pub(crate) fn gaps(r: &Report) -> Table {
    Table {
        class: None,
        columns: vec![col("Protocol"), num("Longest gap"), col("From"), col("To")],
        rows: r
            .gaps
            .iter()
            .map(|g| {
                vec![
                    Cell::text(g.protocol.name()),
                    if g.longest_ms == 0 {
                        Cell::Marked(Mark::Muted, "no failure".into())
                    } else {
                        Cell::text(duration(g.longest_ms))
                    },
                    Cell::Mono(offset_opt(g.from_at_ms, r.started_at_ms)),
                    Cell::Mono(offset_opt(g.to_at_ms, r.started_at_ms)),
                ]
            })
            .collect(),
        empty: "No gap was measured.",
    }
}

pub(crate) fn probes(r: &Report) -> Table {
    let ms = |v: Option<u64>| Cell::text(v.map_or_else(|| "–".to_string(), |v| format!("{v} ms")));
    Table {
        class: None,
        columns: vec![col("Protocol"), num("OK"), num("Failed"), num("p50"), num("p99")],
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
        empty: "No probe ran.",
    }
}

pub(crate) const PHASES_INTRO: &str = "Times are relative to the start of the drill. Events of the target and of the probes are listed under the phase whose step was running when they happened.";

/// One runbook phase: its title, its steps and events as tables, its findings
/// as (number, severity, title).
pub(crate) struct PhaseSection {
    pub title: &'static str,
    pub steps: Option<Table>,
    pub events: Option<Table>,
    pub findings: Vec<(usize, Severity, String)>,
}

pub(crate) const NO_STEP: &str = "No step in this phase.";

pub(crate) fn phases(r: &Report) -> Vec<PhaseSection> {
    by_phase(r).into_iter().map(|view| phase(r, &view)).collect()
}

fn phase(r: &Report, view: &PhaseView<'_>) -> PhaseSection {
    let steps = (!view.steps.is_empty()).then(|| Table {
        class: Some("steps"),
        columns: vec![num("#"), col("Step"), col("Outcome"), col("Started"), col("Finished"), col("Detail")],
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
                        tag: s.rollback.then_some("rollback"),
                        what: s.description.clone(),
                    },
                    Cell::Badge(step_outcome_word(s.outcome), mark),
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
        columns: vec![col("At"), col("Source"), col("Event"), col("Detail")],
        rows: view
            .timeline
            .iter()
            .map(|e| {
                vec![
                    Cell::Mono(offset(e.at_ms, r.started_at_ms)),
                    Cell::text(source_word(e.source)),
                    Cell::Code(e.kind.clone()),
                    Cell::text(e.detail.clone()),
                ]
            })
            .collect(),
        empty: "",
    });
    PhaseSection {
        title: view.title(),
        steps,
        events,
        findings: view.findings.iter().map(|(n, f)| (*n, f.severity, f.title.clone())).collect(),
    }
}

pub(crate) fn approvals(r: &Report) -> Table {
    Table {
        class: None,
        columns: vec![col("Approved by"), col("At"), col("Plan SHA-256")],
        rows: r
            .approvals
            .iter()
            .map(|a| vec![Cell::text(a.by.clone()), Cell::text(utc(a.at_ms)), Cell::Code(a.plan_sha256.clone())])
            .collect(),
        empty: "No approval was recorded for this plan.",
    }
}

pub(crate) const NO_CONFIRMATION: &str = "No manual step was confirmed.";

pub(crate) fn environment(r: &Report) -> Vec<(&'static str, Cell)> {
    let e = &r.environment;
    [
        ("Target", &e.target),
        ("Location", &e.target_location),
        ("Domain", &e.domain),
        ("maildr version", &e.maildr_version),
        ("Host", &e.host),
        ("OS", &e.os),
    ]
    .into_iter()
    .map(|(k, v)| (k, Cell::text(v.clone())))
    .collect()
}

pub(crate) fn sites(r: &Report) -> Table {
    Table {
        class: None,
        columns: vec![col("Site"), col("Role"), col("Address")],
        rows: r
            .environment
            .sites
            .iter()
            .map(|s| vec![Cell::text(s.name.clone()), Cell::text(s.role.clone()), Cell::Mono(s.address.clone())])
            .collect(),
        empty: "",
    }
}
