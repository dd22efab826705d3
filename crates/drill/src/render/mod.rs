//! Views of a [`Report`]: Markdown for terminals and review tools, and one
//! self-contained HTML file (inline CSS and SVG charts, no scripts, nothing
//! fetched) for auditors.
//!
//! Both are organised the same way: a summary, the measurements, the findings,
//! then the six runbook phases with their steps, events and findings. The
//! grouping and the number formats live here so the two views never disagree.
//! Both render in a [`Lang`]: every word they print comes from the message
//! catalog (`i18n`), while report data and the formats of times and durations
//! are the same in every language.
//! Rendering never fails and never panics: every string of the report is
//! untrusted text and is escaped by the view that prints it, and every time
//! range is guarded against being empty.

mod charts;
mod html;
mod i18n;
mod markdown;
mod model;

pub use html::html;
pub use i18n::{Lang, UnknownLang};
pub use markdown::markdown;

use crate::plan::Phase;
use crate::regression::RtoPhase;
use crate::report::{
    Finding, ObjectiveResult, ProbeOutcome, Report, Severity, Source, StepOutcome, StepResult, TimelineEntry, Verdict,
};
use i18n::Msg;

/// One RTO phase as both views print it.
pub(crate) struct RtoRow<'a> {
    pub label: Msg,
    /// Milliseconds after the fault; `None`: never seen.
    pub value_ms: Option<u64>,
    /// The plan's objective that judges this phase, when it has one.
    pub objective: Option<&'a ObjectiveResult>,
}

/// The catalog's name of an RTO phase.
pub(crate) fn rto_label(phase: RtoPhase) -> Msg {
    match phase {
        RtoPhase::Detect => Msg::RtoDetect,
        RtoPhase::Elect => Msg::RtoElect,
        RtoPhase::DnsCommitted => Msg::RtoDnsCommitted,
        RtoPhase::DnsServed => Msg::RtoDnsServed,
        RtoPhase::FirstSmtpOk => Msg::RtoFirstSmtp,
        RtoPhase::FirstImapOk => Msg::RtoFirstImap,
        RtoPhase::Total => Msg::RtoTotal,
    }
}

/// The RTO phases in the order they happen in a failover.
pub(crate) fn rto_rows(report: &Report) -> Vec<RtoRow<'_>> {
    let objective = |name: &str| report.objectives.iter().find(|o| o.name == name);
    RtoPhase::ALL
        .into_iter()
        .map(|phase| RtoRow {
            label: rto_label(phase),
            value_ms: phase.of(&report.rto),
            objective: match phase {
                RtoPhase::FirstSmtpOk => objective("rto_smtp_ms"),
                RtoPhase::FirstImapOk => objective("rto_imap_ms"),
                RtoPhase::Total => objective("rto_total_ms"),
                _ => None,
            },
        })
        .collect()
}

/// What one runbook phase holds, for the per-phase sections.
pub(crate) struct PhaseView<'a> {
    /// `None`: the entries before the first step (steady state, probes starting).
    pub phase: Option<Phase>,
    pub steps: Vec<&'a StepResult>,
    pub timeline: Vec<&'a TimelineEntry>,
    /// With their number in the findings list (1-based).
    pub findings: Vec<(usize, &'a Finding)>,
}

impl PhaseView<'_> {
    pub fn title(&self, lang: Lang) -> &'static str {
        self.phase.map_or(lang.t(Msg::BeforeFirstStep), |p| phase_title(p, lang))
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty() && self.timeline.is_empty() && self.findings.is_empty()
    }
}

/// The report grouped by runbook phase: first what happened before any step
/// (only when there is something), then one view per phase of [`Phase::ALL`] in
/// order. A timeline entry without a phase of its own (cluster events,
/// probe transitions) belongs to the phase of the step that was running when it
/// happened, i.e. the step that started last at or before it.
pub(crate) fn by_phase(report: &Report) -> Vec<PhaseView<'_>> {
    let mut views: Vec<PhaseView<'_>> = Phase::ALL
        .iter()
        .map(|&p| PhaseView { phase: Some(p), steps: Vec::new(), timeline: Vec::new(), findings: Vec::new() })
        .chain(std::iter::once(PhaseView {
            phase: None,
            steps: Vec::new(),
            timeline: Vec::new(),
            findings: Vec::new(),
        }))
        .collect();
    let slot =
        |phase: Option<Phase>| phase.and_then(|p| Phase::ALL.iter().position(|&q| q == p)).unwrap_or(Phase::ALL.len());

    for step in &report.steps {
        views[slot(Some(step.phase))].steps.push(step);
    }
    let mut timeline: Vec<&TimelineEntry> = report.timeline.iter().collect();
    timeline.sort_by_key(|e| e.at_ms);
    for entry in timeline {
        let phase = entry.phase.or_else(|| running_phase(report, entry.at_ms));
        views[slot(phase)].timeline.push(entry);
    }
    for (i, finding) in report.findings.iter().enumerate() {
        if let Some(p) = finding.phase {
            views[slot(Some(p))].findings.push((i + 1, finding));
        }
    }
    if let Some(before) = views.pop().filter(|v| !v.is_empty()) {
        views.insert(0, before);
    }
    views
}

/// The phase of the step that started last at or before `at_ms`.
fn running_phase(report: &Report, at_ms: u64) -> Option<Phase> {
    report
        .steps
        .iter()
        .filter_map(|s| s.started_at_ms.filter(|&t| t <= at_ms).map(|t| (t, s.index, s.phase)))
        .max_by_key(|&(t, index, _)| (t, index))
        .map(|(_, _, phase)| phase)
}

/// How an outcome is drawn: the colour classes of the probe chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Health {
    Ok,
    Deferred,
    Failed,
}

impl Health {
    pub fn of(outcome: ProbeOutcome) -> Health {
        match outcome {
            ProbeOutcome::Ok => Health::Ok,
            ProbeOutcome::Deferred => Health::Deferred,
            ProbeOutcome::Refused | ProbeOutcome::Timeout | ProbeOutcome::Unreachable => Health::Failed,
        }
    }
}

/// The runbook's name for a phase, in the report's language.
pub(crate) fn phase_title(phase: Phase, lang: Lang) -> &'static str {
    lang.t(match phase {
        Phase::Confirm => Msg::PhaseConfirm,
        Phase::Decide => Msg::PhaseDecide,
        Phase::Prepare => Msg::PhasePrepare,
        Phase::Dns => Msg::PhaseDns,
        Phase::Verify => Msg::PhaseVerify,
        Phase::Review => Msg::PhaseReview,
    })
}

pub(crate) fn verdict_word(verdict: Verdict, lang: Lang) -> &'static str {
    lang.t(match verdict {
        Verdict::Passed => Msg::VerdictPassed,
        Verdict::Failed => Msg::VerdictFailed,
        Verdict::Aborted => Msg::VerdictAborted,
    })
}

pub(crate) fn verdict_note(verdict: Verdict, lang: Lang) -> &'static str {
    lang.t(match verdict {
        Verdict::Passed => Msg::VerdictNotePassed,
        Verdict::Failed => Msg::VerdictNoteFailed,
        Verdict::Aborted => Msg::VerdictNoteAborted,
    })
}

pub(crate) fn outcome_word(outcome: ProbeOutcome, lang: Lang) -> &'static str {
    lang.t(match outcome {
        ProbeOutcome::Ok => Msg::OutcomeOk,
        ProbeOutcome::Deferred => Msg::OutcomeDeferred,
        ProbeOutcome::Refused => Msg::OutcomeRefused,
        ProbeOutcome::Timeout => Msg::OutcomeTimeout,
        ProbeOutcome::Unreachable => Msg::OutcomeUnreachable,
    })
}

/// The style class of a step outcome (the same in every language).
pub(crate) fn step_outcome_class(outcome: StepOutcome) -> &'static str {
    match outcome {
        StepOutcome::Done => "done",
        StepOutcome::Failed => "failed",
        StepOutcome::Skipped => "skipped",
    }
}

pub(crate) fn step_outcome_word(outcome: StepOutcome, lang: Lang) -> &'static str {
    lang.t(match outcome {
        StepOutcome::Done => Msg::StepDone,
        StepOutcome::Failed => Msg::StepFailed,
        StepOutcome::Skipped => Msg::StepSkipped,
    })
}

/// The style class of a severity (the same in every language).
pub(crate) fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    }
}

pub(crate) fn severity_word(s: Severity, lang: Lang) -> &'static str {
    lang.t(match s {
        Severity::Critical => Msg::SeverityCritical,
        Severity::Warning => Msg::SeverityWarning,
    })
}

pub(crate) fn source_word(s: Source, lang: Lang) -> &'static str {
    lang.t(match s {
        Source::Drill => Msg::SourceDrill,
        Source::Cluster => Msg::SourceCluster,
        Source::Probe => Msg::SourceProbe,
    })
}

/// A measured or target value with its unit: durations for `ms`, a count
/// otherwise. The units the engine writes are words of the catalog; any other
/// is report data and printed as it is.
pub(crate) fn quantity(value: u64, unit: &str, lang: Lang) -> String {
    match unit {
        "ms" => duration(value),
        "" => value.to_string(),
        "messages" => format!("{value} {}", lang.t(Msg::UnitMessages)),
        "steps" => format!("{value} {}", lang.t(Msg::UnitSteps)),
        unit => format!("{value} {unit}"),
    }
}

// ------------------------------------------------------------------ time formats

const MS_PER_DAY: u64 = 86_400_000;
/// Days in 400 Gregorian years: the calendar repeats after this.
const DAYS_PER_400_YEARS: u64 = 146_097;
/// Later instants are printed as raw milliseconds: no report is that far out.
const YEAR_PRINTED_MAX: u64 = 9999;

/// An instant as `2025-03-01 12:00:03.250 UTC`.
pub(crate) fn utc(at_ms: u64) -> String {
    let days = at_ms / MS_PER_DAY;
    let in_day = at_ms % MS_PER_DAY;
    let (year, month, day) = civil_date(days);
    if year > YEAR_PRINTED_MAX {
        return format!("{at_ms} ms after 1970-01-01 UTC");
    }
    let (h, m, s, ms) = (in_day / 3_600_000, in_day / 60_000 % 60, in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02}.{ms:03} UTC")
}

/// Year, month (1-12), day (1-31) of the day `days` after 1970-01-01.
fn civil_date(days: u64) -> (u64, u64, u64) {
    let is_leap = |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let mut year = 1970 + 400 * (days / DAYS_PER_400_YEARS);
    let mut left = days % DAYS_PER_400_YEARS;
    loop {
        let len = if is_leap(year) { 366 } else { 365 };
        if left < len {
            break;
        }
        left -= len;
        year += 1;
    }
    let feb = if is_leap(year) { 29 } else { 28 };
    let mut month = 1;
    for len in [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if left < len {
            break;
        }
        left -= len;
        month += 1;
    }
    (year, month, left + 1)
}

/// A duration, exact to the millisecond, without a fraction when it has none:
/// `850 ms`, `12.345 s`, `30 s`, `2 min 05.300 s`, `1 min`, `1 h 02 min 05 s`.
pub(crate) fn duration(ms: u64) -> String {
    let (s, frac) = (ms / 1000, ms % 1000);
    let seconds = |s: u64, width: usize| {
        if frac == 0 {
            format!("{s:0width$} s")
        } else {
            format!("{s:0width$}.{frac:03} s")
        }
    };
    match ms {
        0..1000 => format!("{ms} ms"),
        1000..60_000 => seconds(s, 1),
        60_000..3_600_000 if s % 60 == 0 && frac == 0 => format!("{} min", s / 60),
        60_000..3_600_000 => format!("{} min {}", s / 60, seconds(s % 60, 2)),
        _ => format!("{} h {:02} min {:02} s", s / 3600, s / 60 % 60, s % 60),
    }
}

/// An instant relative to an origin, clock style: `+02:05.300`, `+1:02:05.300`,
/// `-00:00.200` before the origin.
pub(crate) fn offset(at_ms: u64, origin_ms: u64) -> String {
    let (sign, ms) = if at_ms >= origin_ms { ('+', at_ms - origin_ms) } else { ('-', origin_ms - at_ms) };
    let (s, frac) = (ms / 1000, ms % 1000);
    if s >= 3600 {
        format!("{sign}{}:{:02}:{:02}.{frac:03}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{sign}{:02}:{:02}.{frac:03}", s / 60, s % 60)
    }
}

/// A drill-relative instant, or a dash when there is none.
pub(crate) fn offset_opt(at_ms: Option<u64>, origin_ms: u64) -> String {
    at_ms.map_or_else(|| "–".to_string(), |t| offset(t, origin_ms))
}

/// Duration of the drill, robust to a finish recorded before the start.
pub(crate) fn drill_duration_ms(report: &Report) -> u64 {
    report.finished_at_ms.saturating_sub(report.started_at_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_prints_calendar_dates_across_leap_years_and_centuries() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        // 2000-02-29 was a leap day (divisible by 400); 2100-03-01 follows a
        // February without one.
        assert_eq!(utc(951_782_400_000 + 1), "2000-02-29 00:00:00.001 UTC");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01 00:00:00.000 UTC");
        assert_eq!(utc(1_735_689_599_999), "2024-12-31 23:59:59.999 UTC");
        assert_eq!(utc(1_740_830_403_250), "2025-03-01 12:00:03.250 UTC");
        assert!(utc(u64::MAX).contains("ms after 1970"), "{}", utc(u64::MAX));
    }

    #[test]
    fn durations_and_offsets_keep_the_millisecond() {
        assert_eq!(duration(0), "0 ms");
        assert_eq!(duration(999), "999 ms");
        assert_eq!(duration(12_345), "12.345 s");
        assert_eq!(duration(30_000), "30 s");
        assert_eq!(duration(60_000), "1 min");
        assert_eq!(duration(65_000), "1 min 05 s");
        assert_eq!(duration(125_300), "2 min 05.300 s");
        assert_eq!(duration(3_725_000), "1 h 02 min 05 s");
        assert_eq!(offset(1_125_300, 1_000_000), "+02:05.300");
        assert_eq!(offset(1_000_000 + 3_725_001, 1_000_000), "+1:02:05.001");
        assert_eq!(offset(999_800, 1_000_000), "-00:00.200");
        assert_eq!(offset_opt(None, 5), "–");
    }
}
