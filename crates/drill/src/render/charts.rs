//! The two inline SVG charts of the HTML report: the RTO phases after the fault,
//! and what each probe saw over the drill.
//!
//! Both scale their time axis to the data and guard every division: a drill
//! with no fault, no sample, one sample or a zero-length span still draws a
//! sensible empty chart. The probe chart is drawn in pixel columns, so its size
//! is bounded by its width and not by the number of samples, and where several
//! samples share a column the worst outcome is drawn: a short outage is never
//! hidden by the successes around it. Titles, labels and legends are in the
//! report's [`Lang`]; tick labels are durations, the same in every language.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::esc;
use super::i18n::{Lang, Msg};
use super::{duration, outcome_word, rto_rows, Health};
use crate::report::{ProbeOutcome, ProbeSample, Protocol, Report};

/// Width of both charts in SVG user units (the page scales them).
const WIDTH: u32 = 1000;
/// Where the plot area starts and ends horizontally.
const PLOT_X0: u32 = 170;
const PLOT_X1: u32 = 860;
const PROBE_PLOT_X1: u32 = 960;
/// Targets of one protocol drawn as rows of their own; more share an "other" row.
const TARGET_ROWS_MAX: usize = 4;
/// A sample is drawn until the next one, but no longer than this many times the
/// row's usual interval (beyond that the probe was not looking).
const SAMPLE_SPAN_INTERVALS_MAX: u64 = 3;

pub(crate) const COLOUR_OK: &str = "#2da44e";
pub(crate) const COLOUR_DEFERRED: &str = "#d4a72c";
pub(crate) const COLOUR_FAILED: &str = "#cf222e";
const COLOUR_NEUTRAL: &str = "#54aeff";
const COLOUR_AXIS: &str = "#8c959f";
const COLOUR_GRID: &str = "#eaeef2";
const COLOUR_MUTED: &str = "#57606a";
const COLOUR_LANE: &str = "#f6f8fa";

fn health_colour(h: Health) -> &'static str {
    match h {
        Health::Ok => COLOUR_OK,
        Health::Deferred => COLOUR_DEFERRED,
        Health::Failed => COLOUR_FAILED,
    }
}

/// Steps that read well on a time axis, in milliseconds.
const TICK_STEPS_MS: [u64; 22] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 15_000, 30_000, 60_000, 120_000, 300_000, 600_000,
    900_000, 1_800_000, 3_600_000,
];
/// About this many ticks on an axis.
const TICKS_WANTED: u64 = 6;

/// A tick step for a span, and the axis end rounded up to a whole step.
fn axis(span_ms: u64) -> (u64, u64) {
    let span_ms = span_ms.max(1);
    let raw = span_ms.div_ceil(TICKS_WANTED);
    let hour = 3_600_000;
    let step = TICK_STEPS_MS.iter().copied().find(|&s| s >= raw).unwrap_or_else(|| raw.div_ceil(hour) * hour);
    (step, span_ms.div_ceil(step).saturating_mul(step))
}

/// A tick label: `0`, `500 ms`, `30 s`, `1 min 30 s`, `2 h`.
fn tick_label(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0 => "0".into(),
        _ if !ms.is_multiple_of(1000) => format!("{ms} ms"),
        _ if s < 60 => format!("{s} s"),
        _ if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{} min", s / 60),
        _ => format!("{} min {} s", s / 60, s % 60),
    }
}

/// Maps milliseconds onto `[x0, x1]` for an axis ending at `end_ms` (> 0).
struct Scale {
    x0: f64,
    x1: f64,
    end_ms: u64,
}

impl Scale {
    fn x(&self, ms: u64) -> f64 {
        let f = ms.min(self.end_ms) as f64 / self.end_ms.max(1) as f64;
        self.x0 + f * (self.x1 - self.x0)
    }
}

fn x_axis(out: &mut String, scale: &Scale, step: u64, y_top: u32, y_axis: u32, prefix: &str) {
    let mut t = 0;
    while t <= scale.end_ms {
        let x = scale.x(t);
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{y_top}" x2="{x:.1}" y2="{y_axis}" stroke="{COLOUR_GRID}"/><text x="{x:.1}" y="{}" text-anchor="middle" class="tick">{}{}</text>"#,
            y_axis + 14,
            if t == 0 { "" } else { prefix },
            tick_label(t)
        );
        match t.checked_add(step) {
            Some(next) => t = next,
            None => break,
        }
    }
    let _ = write!(
        out,
        r#"<line x1="{}" y1="{y_axis}" x2="{}" y2="{y_axis}" stroke="{COLOUR_AXIS}"/>"#,
        scale.x0, scale.x1
    );
}

// ------------------------------------------------------------------ RTO chart

const RTO_ROW_HEIGHT: u32 = 28;
const RTO_TOP: u32 = 26;

/// The RTO phases as bars from the fault, with the objective targets as dashed
/// lines across their row.
pub(crate) fn rto_chart(report: &Report, lang: Lang) -> String {
    let rows = rto_rows(report);
    let longest = rows.iter().flat_map(|r| [r.value_ms, r.objective.map(|o| o.target)]).flatten().max().unwrap_or(0);
    let (step, end_ms) = axis(longest.saturating_add(longest / 20));
    let scale = Scale { x0: PLOT_X0.into(), x1: PLOT_X1.into(), end_ms };
    // rto_rows gives a fixed handful of rows.
    #[allow(clippy::cast_possible_truncation)]
    let y_axis = RTO_TOP + RTO_ROW_HEIGHT * rows.len() as u32 + 6;
    let height = y_axis + 24;

    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="rto-chart-title" xmlns="http://www.w3.org/2000/svg"><title id="rto-chart-title">{}</title>"#,
        lang.t(Msg::RtoChartTitle)
    );
    x_axis(&mut out, &scale, step, RTO_TOP - 8, y_axis, "");
    let fault_x = scale.x(0);
    let _ = write!(
        out,
        r#"<line x1="{fault_x}" y1="{}" x2="{fault_x}" y2="{y_axis}" stroke="{COLOUR_FAILED}" stroke-width="2"/><text x="{fault_x}" y="{}" class="marker" fill="{COLOUR_FAILED}" text-anchor="middle">{}</text>"#,
        RTO_TOP - 8,
        RTO_TOP - 12,
        lang.t(Msg::FaultMarker)
    );
    for (i, row) in rows.iter().enumerate() {
        // rto_rows gives a fixed handful of rows.
        #[allow(clippy::cast_possible_truncation)]
        let y = RTO_TOP + RTO_ROW_HEIGHT * i as u32;
        let mid = y + RTO_ROW_HEIGHT / 2;
        let total = i + 1 == rows.len();
        let _ = write!(
            out,
            r#"<text x="{}" y="{}" text-anchor="end" class="{}">{}</text>"#,
            PLOT_X0 - 10,
            mid + 4,
            if total { "label strong" } else { "label" },
            lang.t(row.label)
        );
        let target_note = row.objective.map(|o| lang.fmt(Msg::TargetNote, &[&duration(o.target)])).unwrap_or_default();
        match row.value_ms {
            Some(v) => {
                let colour = match row.objective {
                    Some(o) if !o.met => COLOUR_FAILED,
                    Some(_) => COLOUR_OK,
                    None => COLOUR_NEUTRAL,
                };
                let x = scale.x(v);
                let _ = write!(
                    out,
                    r#"<rect x="{fault_x}" y="{}" width="{:.1}" height="12" rx="2" fill="{colour}" opacity="0.85"><title>{}{}{}</title></rect><circle cx="{x:.1}" cy="{}" r="4" fill="{colour}"/><text x="{:.1}" y="{}" class="value">{}{}</text>"#,
                    mid - 6,
                    (x - fault_x).max(0.0),
                    lang.t(row.label),
                    lang.t(Msg::Colon),
                    duration(v),
                    mid,
                    x + 8.0,
                    mid + 4,
                    duration(v),
                    esc(&target_note)
                );
            }
            None => {
                let _ = write!(
                    out,
                    r#"<text x="{:.1}" y="{}" class="missing">{}{}</text>"#,
                    fault_x + 8.0,
                    mid + 4,
                    lang.t(Msg::NotSeen),
                    esc(&target_note)
                );
            }
        }
        if let Some(o) = row.objective {
            let x = scale.x(o.target);
            let colour = if o.met { COLOUR_MUTED } else { COLOUR_FAILED };
            let _ = write!(
                out,
                r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="{colour}" stroke-width="2.5" stroke-dasharray="3 2"><title>{}</title></line>"#,
                y,
                y + RTO_ROW_HEIGHT,
                lang.fmt(Msg::ObjectiveLine, &[&esc(&o.name), &duration(o.target)])
            );
        }
    }
    out.push_str("</svg>");
    out
}

// ---------------------------------------------------------------- probe chart

const PROBE_TOP: u32 = 40;
const PROBE_ROW_HEIGHT: u32 = 18;
const PROBE_LANE_GAP: u32 = 12;

/// One row of marks: a protocol and the target its samples reached.
struct ProbeRow<'a> {
    protocol: Protocol,
    target: String,
    samples: Vec<&'a ProbeSample>,
}

/// Rows per protocol in [`Protocol::ALL`] order; a protocol without samples
/// keeps one empty row so its absence shows.
fn probe_rows(samples: &[ProbeSample], lang: Lang) -> Vec<ProbeRow<'_>> {
    let mut rows = Vec::new();
    for protocol in Protocol::ALL {
        let mut by_target: BTreeMap<&str, Vec<&ProbeSample>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.protocol == protocol) {
            by_target.entry(s.target.as_str()).or_default().push(s);
        }
        if by_target.is_empty() {
            rows.push(ProbeRow { protocol, target: String::new(), samples: Vec::new() });
            continue;
        }
        let mut targets: Vec<(&str, Vec<&ProbeSample>)> = by_target.into_iter().collect();
        // The busiest targets get rows of their own.
        targets.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
        let mut own: Vec<ProbeRow<'_>> = Vec::new();
        let mut other: Vec<&ProbeSample> = Vec::new();
        let extra = targets.len() > TARGET_ROWS_MAX;
        for (i, (target, samples)) in targets.into_iter().enumerate() {
            if extra && i + 1 >= TARGET_ROWS_MAX {
                other.extend(samples);
            } else {
                own.push(ProbeRow { protocol, target: target.to_string(), samples });
            }
        }
        for row in &mut own {
            row.samples.sort_by_key(|s| s.at_ms);
        }
        // Shown in the order the targets were first reached (bj, then sh after
        // the failover).
        own.sort_by_key(|row| row.samples.first().map(|s| s.at_ms));
        rows.extend(own);
        if extra {
            other.sort_by_key(|s| s.at_ms);
            rows.push(ProbeRow { protocol, target: lang.t(Msg::OtherTargets).into(), samples: other });
        }
    }
    rows
}

/// What one pixel column of a row saw.
#[derive(Clone, Copy, Default)]
struct Column {
    worst: Option<Health>,
    /// Samples that started in this column, by [`outcome_index`].
    started: [u32; 5],
}

fn outcome_index(o: ProbeOutcome) -> usize {
    match o {
        ProbeOutcome::Ok => 0,
        ProbeOutcome::Deferred => 1,
        ProbeOutcome::Refused => 2,
        ProbeOutcome::Timeout => 3,
        ProbeOutcome::Unreachable => 4,
    }
}

const OUTCOMES: [ProbeOutcome; 5] =
    [ProbeOutcome::Ok, ProbeOutcome::Deferred, ProbeOutcome::Refused, ProbeOutcome::Timeout, ProbeOutcome::Unreachable];

/// The usual interval between two samples of a row (the median), 0 with fewer
/// than two samples.
fn usual_interval_ms(samples: &[&ProbeSample]) -> u64 {
    let mut gaps: Vec<u64> = samples.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    if gaps.is_empty() {
        return 0;
    }
    gaps.sort_unstable();
    gaps[gaps.len() / 2]
}

/// Paint a row's samples into `width` pixel columns of the span `[t0, t0+span)`.
fn paint(samples: &[&ProbeSample], t0: u64, span_ms: u64, width: usize) -> Vec<Column> {
    let mut cols = vec![Column::default(); width];
    if width == 0 {
        return cols;
    }
    let span = u128::from(span_ms.max(1));
    let col = |t: u64, round_up: bool| -> usize {
        let num = u128::from(t.saturating_sub(t0)) * width as u128;
        let c = if round_up { num.div_ceil(span) } else { num / span };
        usize::try_from(c).unwrap_or(usize::MAX).min(width)
    };
    let reach = usual_interval_ms(samples).saturating_mul(SAMPLE_SPAN_INTERVALS_MAX);
    for (i, s) in samples.iter().enumerate() {
        let until = samples.get(i + 1).map_or(s.at_ms, |next| next.at_ms.min(s.at_ms.saturating_add(reach)));
        let first = col(s.at_ms, false).min(width - 1);
        let last = col(until, true).max(first + 1).min(width);
        let health = Health::of(s.outcome);
        for c in &mut cols[first..last] {
            c.worst = c.worst.max(Some(health));
        }
        cols[first].started[outcome_index(s.outcome)] += 1;
    }
    cols
}

/// The probe results over the drill: a lane per protocol, a row per target,
/// marks coloured by outcome, faults and restores as vertical lines.
pub(crate) fn probe_chart(report: &Report, lang: Lang) -> String {
    let samples = &report.probes.samples;
    let first = samples.iter().map(|s| s.at_ms).min().unwrap_or(report.started_at_ms);
    let last = samples.iter().map(|s| s.at_ms).max().unwrap_or(report.finished_at_ms);
    let t0 = report.started_at_ms.min(first);
    let t_end = report.finished_at_ms.max(last).max(t0.saturating_add(1));
    let (step, end_ms) = axis(t_end - t0);
    let scale = Scale { x0: PLOT_X0.into(), x1: PROBE_PLOT_X1.into(), end_ms };
    let width = (PROBE_PLOT_X1 - PLOT_X0) as usize;

    let rows = probe_rows(samples, lang);
    // A few protocols, each with at most TARGET_ROWS_MAX rows.
    #[allow(clippy::cast_possible_truncation)]
    let lanes = Protocol::ALL.len() as u32;
    #[allow(clippy::cast_possible_truncation)]
    let y_axis = PROBE_TOP + PROBE_ROW_HEIGHT * rows.len() as u32 + PROBE_LANE_GAP * lanes;
    let height = y_axis + 48;

    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" aria-labelledby="probe-chart-title" xmlns="http://www.w3.org/2000/svg"><title id="probe-chart-title">{}</title>"#,
        lang.t(Msg::ProbeChartTitle)
    );
    x_axis(&mut out, &scale, step, PROBE_TOP - 6, y_axis, "+");

    let mut y = PROBE_TOP;
    let mut previous: Option<Protocol> = None;
    for row in &rows {
        if previous != Some(row.protocol) {
            if previous.is_some() {
                y += PROBE_LANE_GAP;
            }
            let _ = write!(out, r#"<text x="8" y="{}" class="label strong">{}</text>"#, y + 13, row.protocol.name());
            previous = Some(row.protocol);
        }
        let _ = write!(
            out,
            r#"<rect x="{PLOT_X0}" y="{}" width="{width}" height="{}" fill="{COLOUR_LANE}"/><text x="{}" y="{}" text-anchor="end" class="tick">{}</text>"#,
            y + 2,
            PROBE_ROW_HEIGHT - 4,
            PLOT_X0 - 8,
            y + 13,
            esc(&truncate(&row.target, 14))
        );
        if row.samples.is_empty() {
            let _ = write!(
                out,
                r#"<text x="{}" y="{}" class="missing">{}</text>"#,
                PLOT_X0 + 8,
                y + 13,
                lang.t(Msg::NoSamples)
            );
        }
        let cols = paint(&row.samples, t0, end_ms, width);
        marks(&mut out, row, &cols, (t0, end_ms), report.started_at_ms, y, lang);
        y += PROBE_ROW_HEIGHT;
    }

    fault_lines(&mut out, report, &scale, t0, (PROBE_TOP - 6, y_axis), lang);
    legend(&mut out, y_axis + 34, lang);
    out.push_str("</svg>");
    out
}

/// The rects of one row: runs of columns with the same colour.
fn marks(
    out: &mut String,
    row: &ProbeRow<'_>,
    cols: &[Column],
    (t0, span_ms): (u64, u64),
    origin_ms: u64,
    y: u32,
    lang: Lang,
) {
    let width = cols.len().max(1) as u64;
    let at = |c: usize| {
        t0.saturating_add(u64::try_from(c as u128 * u128::from(span_ms) / u128::from(width)).unwrap_or(u64::MAX))
    };
    let mut c = 0;
    while c < cols.len() {
        let Some(health) = cols[c].worst else {
            c += 1;
            continue;
        };
        let start = c;
        let mut counts = [0u32; 5];
        while c < cols.len() && cols[c].worst == Some(health) {
            for (k, n) in cols[c].started.iter().enumerate() {
                counts[k] += n;
            }
            c += 1;
        }
        let what: Vec<String> = OUTCOMES
            .iter()
            .zip(counts)
            .filter(|(_, n)| *n > 0)
            .map(|(o, n)| format!("{n} {}", outcome_word(*o, lang)))
            .collect();
        let what = if what.is_empty() { lang.t(Msg::Continuing).to_string() } else { what.join(", ") };
        let _ = write!(
            out,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>"#,
            PLOT_X0 as usize + start,
            y + 3,
            c - start,
            PROBE_ROW_HEIGHT - 6,
            health_colour(health),
            lang.fmt(
                Msg::MarkRun,
                &[
                    row.protocol.name(),
                    &esc(&row.target),
                    &what,
                    &super::offset(at(start), origin_ms),
                    &super::offset(at(c), origin_ms),
                ]
            ),
        );
    }
}

/// Faults and restores from the timeline (kinds `fault*`, `restore*`), as
/// labelled vertical lines.
fn fault_lines(out: &mut String, report: &Report, scale: &Scale, t0: u64, (y_top, y_axis): (u32, u32), lang: Lang) {
    let mut entries: Vec<_> =
        report.timeline.iter().filter(|e| e.kind.starts_with("fault") || e.kind.starts_with("restore")).collect();
    entries.sort_by_key(|e| e.at_ms);
    for (i, e) in entries.iter().enumerate() {
        let x = scale.x(e.at_ms.saturating_sub(t0));
        // Labelled with the catalog's word for what the line is; the kind itself
        // (report data) is in the tooltip.
        let (colour, label) = if e.kind.starts_with("fault") {
            (COLOUR_FAILED, Msg::FaultMarker)
        } else {
            (COLOUR_OK, Msg::RestoreMarker)
        };
        // Labels alternate between two heights so close events stay legible.
        let label_y = y_top - 4 - if i % 2 == 0 { 14 } else { 0 };
        let _ = write!(
            out,
            r#"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{y_axis}" stroke="{colour}" stroke-width="1.5" stroke-dasharray="5 3"><title>{}</title></line><text x="{x:.1}" y="{label_y}" text-anchor="middle" class="marker" fill="{colour}">{}</text>"#,
            label_y + 4,
            lang.fmt(Msg::EventLine, &[&esc(&e.kind), &super::offset(e.at_ms, report.started_at_ms), &esc(&e.detail)]),
            lang.t(label),
        );
    }
}

fn legend(out: &mut String, y: u32, lang: Lang) {
    let items =
        [(COLOUR_OK, Msg::LegendOk), (COLOUR_DEFERRED, Msg::LegendDeferred), (COLOUR_FAILED, Msg::LegendFailed)];
    let mut x = PLOT_X0;
    for (colour, label) in items {
        let label = lang.t(label);
        let _ = write!(
            out,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{y}" class="tick" text-anchor="start">{label}</text>"#,
            y - 10,
            x + 18
        );
        x += 40 + LEGEND_PX_PER_COLUMN * text_columns(label);
    }
    let fault = lang.t(Msg::FaultMarker);
    let restore_x = x + 40 + LEGEND_PX_PER_COLUMN * text_columns(fault);
    let _ = write!(
        out,
        r#"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="{COLOUR_FAILED}" stroke-dasharray="5 3"/><text x="{}" y="{y}" class="tick" text-anchor="start">{fault}</text><line x1="{restore_x}" y1="{}" x2="{restore_x}" y2="{}" stroke="{COLOUR_OK}" stroke-dasharray="5 3"/><text x="{}" y="{y}" class="tick" text-anchor="start">{}</text>"#,
        y - 12,
        y + 2,
        x + 8,
        y - 12,
        y + 2,
        restore_x + 8,
        lang.t(Msg::RestoreMarker)
    );
}

/// Room per text column in the legend's 11 px type.
const LEGEND_PX_PER_COLUMN: u32 = 7;

/// How many columns a legend label takes: a Chinese character as wide as two
/// Latin ones. Labels are short catalog texts, so the count fits.
fn text_columns(s: &str) -> u32 {
    let columns: usize = s.chars().map(|c| if u32::from(c) >= 0x1100 { 2 } else { 1 }).sum();
    u32::try_from(columns).unwrap_or(u32::MAX / LEGEND_PX_PER_COLUMN / 2)
}

/// At most `max` characters, with an ellipsis when cut.
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, outcome: ProbeOutcome) -> ProbeSample {
        ProbeSample {
            at_ms,
            protocol: Protocol::Smtp,
            target: "bj".into(),
            outcome,
            latency_ms: 1,
            lookup_ms: None,
            detail: String::new(),
        }
    }

    #[test]
    fn axes_end_on_a_whole_step_and_survive_a_zero_span() {
        assert_eq!(axis(0), (1, 1));
        assert_eq!(axis(59_000), (10_000, 60_000));
        assert_eq!(axis(600_000), (120_000, 600_000));
        let (step, end) = axis(u64::MAX / 2);
        assert!(step > 0 && end >= u64::MAX / 2);
        assert_eq!(tick_label(90_000), "1 min 30 s");
        assert_eq!(tick_label(500), "500 ms");
        assert_eq!(tick_label(7_200_000), "2 h");
    }

    #[test]
    fn a_failure_between_successes_keeps_its_column() {
        // 1000 samples in 10 columns: the single timeout must colour its column red.
        let samples: Vec<ProbeSample> =
            (0..1000).map(|i| sample(i, if i == 555 { ProbeOutcome::Timeout } else { ProbeOutcome::Ok })).collect();
        let refs: Vec<&ProbeSample> = samples.iter().collect();
        let cols = paint(&refs, 0, 1000, 10);
        let colours: Vec<Option<Health>> = cols.iter().map(|c| c.worst).collect();
        assert_eq!(colours[5], Some(Health::Failed));
        assert_eq!(colours.iter().filter(|c| **c == Some(Health::Failed)).count(), 1, "{colours:?}");
        assert_eq!(cols.iter().map(|c| c.started.iter().sum::<u32>()).sum::<u32>(), 1000);
    }

    #[test]
    fn targets_beyond_the_row_limit_share_an_other_row() {
        let targets = |n: usize| -> Vec<ProbeSample> {
            (0..n).map(|i| ProbeSample { target: format!("t{i}"), ..sample(i as u64, ProbeOutcome::Ok) }).collect()
        };
        let at_limit = targets(TARGET_ROWS_MAX);
        let rows = probe_rows(&at_limit, Lang::En);
        let smtp: Vec<&str> = rows.iter().filter(|r| r.protocol == Protocol::Smtp).map(|r| r.target.as_str()).collect();
        assert_eq!(smtp, ["t0", "t1", "t2", "t3"], "in the order first reached");
        assert_eq!(rows.len(), TARGET_ROWS_MAX + 3, "and one empty row for each other protocol");

        let over = targets(TARGET_ROWS_MAX + 2);
        let rows = probe_rows(&over, Lang::En);
        let smtp: Vec<(&str, usize)> = rows
            .iter()
            .filter(|r| r.protocol == Protocol::Smtp)
            .map(|r| (r.target.as_str(), r.samples.len()))
            .collect();
        assert_eq!(smtp.len(), TARGET_ROWS_MAX);
        assert_eq!(smtp.last(), Some(&("other", 3)));
    }

    #[test]
    fn one_sample_or_none_paints_without_dividing_by_zero() {
        let one = [sample(5, ProbeOutcome::Deferred)];
        let refs: Vec<&ProbeSample> = one.iter().collect();
        let cols = paint(&refs, 5, 0, 100);
        assert_eq!(cols[0].worst, Some(Health::Deferred));
        assert!(cols[1..].iter().all(|c| c.worst.is_none()));
        assert!(paint(&[], 0, 0, 100).iter().all(|c| c.worst.is_none()));
        assert!(paint(&refs, 0, 10, 0).is_empty());
    }

    #[test]
    fn a_sample_is_drawn_until_the_next_but_not_across_a_long_silence() {
        // Samples every 10 ms, then nothing for 500 ms: the last one before the
        // silence reaches 30 ms at most.
        let samples: Vec<ProbeSample> = [0, 10, 20, 30, 530].iter().map(|&t| sample(t, ProbeOutcome::Ok)).collect();
        let refs: Vec<&ProbeSample> = samples.iter().collect();
        let cols = paint(&refs, 0, 1000, 100);
        assert!(cols[..6].iter().all(|c| c.worst.is_some()));
        assert!(cols[7..53].iter().all(|c| c.worst.is_none()));
        assert!(cols[53].worst.is_some());
    }
}
