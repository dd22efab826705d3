//! The Markdown view: GitHub-flavoured tables, readable as plain text too.
//!
//! Every report string goes through [`text`] (or [`code`]/[`fence`]), so a plan
//! name or a reply text can neither break a table nor inject HTML into a viewer
//! that renders Markdown.

use std::fmt::Write as _;

use super::i18n::{Lang, Msg};
use super::model::{self, Cell, Mark, Table};
use super::{phase_title, severity_word, verdict_note, verdict_word};
use crate::report::{Report, TabletopRecord};

/// The report as Markdown, its words in `lang`.
pub fn markdown(report: &Report, lang: Lang) -> String {
    let r = report;
    let colon = lang.t(Msg::Colon);
    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(out, "# {}\n", model::title(r, lang, &text(&r.plan.name)));
    let verdict = format!("**{}**", verdict_word(r.verdict, lang).to_uppercase());
    let _ = writeln!(out, "## {}\n", lang.fmt(Msg::VerdictLine, &[&verdict, verdict_note(r.verdict, lang)]));
    if let Some(reason) = &r.abort_reason {
        let _ = writeln!(out, "{}{colon}{}\n", lang.t(Msg::AbortReason), text(reason));
    }
    if !r.plan.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", text(&r.plan.description));
    }
    key_values(&mut out, &model::summary(r, lang));

    heading(&mut out, 2, lang.t(Msg::Objectives));
    table(&mut out, &model::objectives(r, lang));

    match &r.tabletop {
        Some(t) if r.is_tabletop() => tabletop(&mut out, r, t, lang),
        _ => measurements(&mut out, r, lang),
    }
    against_previous(&mut out, r, lang);

    findings(&mut out, r, lang);

    heading(&mut out, 2, lang.t(Msg::RunbookPhases));
    let _ = writeln!(out, "{}\n", lang.t(Msg::PhasesIntro));
    for phase in model::phases(r, lang) {
        heading(&mut out, 3, phase.title);
        if phase.steps.is_none() && phase.events.is_none() && phase.findings.is_empty() {
            let _ = writeln!(out, "{}\n", lang.t(Msg::NoStep));
        }
        for t in phase.steps.iter().chain(phase.events.iter()) {
            table(&mut out, t);
        }
        for (n, severity, title) in &phase.findings {
            let _ = writeln!(out, "- F{n} ({}): {}", severity_word(*severity, lang), text(title));
        }
        if !phase.findings.is_empty() {
            out.push('\n');
        }
    }

    heading(&mut out, 2, lang.t(Msg::ApprovalsAndConfirmations));
    table(&mut out, &model::approvals(r, lang));
    if r.confirmations.is_empty() {
        let _ = writeln!(out, "{}\n", lang.t(Msg::NoConfirmation));
    } else {
        heading(&mut out, 3, lang.t(Msg::ManualStepsConfirmed));
        for c in &r.confirmations {
            let _ = writeln!(out, "- {}", text(c));
        }
        out.push('\n');
    }

    heading(&mut out, 2, lang.t(Msg::Environment));
    key_values(&mut out, &model::environment(r, lang));
    table(&mut out, &model::sites(r, lang));
    out
}

/// What a drill measured: recovery time, recovery point, the service clients saw.
fn measurements(out: &mut String, r: &Report, lang: Lang) {
    let colon = lang.t(Msg::Colon);
    heading(out, 2, lang.t(Msg::RecoveryTime));
    let _ = writeln!(out, "{}\n", model::rto_intro(r, lang).as_deref().unwrap_or(lang.t(Msg::NoFault)));
    table(out, &model::rto(r, lang));

    heading(out, 2, lang.t(Msg::RecoveryPoint));
    table(out, &model::rpo(r, lang));
    if !r.rpo.lost_tags.is_empty() {
        let tags: Vec<String> = r.rpo.lost_tags.iter().map(|t| code(t)).collect();
        let _ = writeln!(out, "{}{colon}{}\n", lang.t(Msg::LostTags), tags.join(", "));
    }
    let _ = writeln!(out, "{}\n", lang.fmt(Msg::ReconciledAt, &[&text(&model::reconciled_at(r, lang))]));

    heading(out, 2, lang.t(Msg::ServiceSeen));
    let samples = r.probes.samples.len().to_string();
    let _ = writeln!(out, "{}\n", lang.fmt(Msg::SamplesInJson, &[&samples, "`probes.samples`"]));
    heading(out, 3, lang.t(Msg::LongestGapPerProtocol));
    table(out, &model::gaps(r, lang));
    heading(out, 3, lang.t(Msg::Probes));
    table(out, &model::probes(r, lang));
    if r.load.is_some() {
        heading(out, 3, lang.t(Msg::LoadHeading));
        for line in model::load_lines(r, lang) {
            let _ = writeln!(out, "{}\n", text(&line));
        }
        table(out, &model::load(r, lang));
    }
}

/// What a tabletop exercise recorded, in place of the measurements.
fn tabletop(out: &mut String, r: &Report, t: &TabletopRecord, lang: Lang) {
    heading(out, 2, lang.t(Msg::TabletopHeading));
    for line in model::tabletop_lines(t, lang, &|s| text(s)) {
        let _ = writeln!(out, "{line}\n");
    }
    heading(out, 3, lang.t(Msg::Participants));
    table(out, &model::tabletop_participants(t, lang));
    heading(out, 3, lang.t(Msg::StepsAndDecisions));
    table(out, &model::tabletop_steps(r, t, lang));
    heading(out, 3, lang.t(Msg::RecoveryByDecisions));
    let _ = writeln!(out, "{}\n", model::tabletop_recovery_intro(t, lang));
    table(out, &model::tabletop_recovery(r, t, lang));
}

/// This drill beside the previous drill of its scenario, when the report
/// holds that comparison.
fn against_previous(out: &mut String, r: &Report, lang: Lang) {
    let (Some(intro), Some((worse, line)), Some(t)) =
        (model::previous_intro(r, lang), model::previous_verdict_line(r, lang), model::against_previous(r, lang))
    else {
        return;
    };
    heading(out, 2, lang.t(Msg::AgainstPrevious));
    let line = if worse { format!("**{line}**") } else { line };
    let _ = writeln!(out, "{line}\n\n{}\n", text(&intro));
    table(out, &t);
}

fn heading(out: &mut String, level: usize, title: &str) {
    let _ = writeln!(out, "{} {title}\n", "#".repeat(level));
}

fn findings(out: &mut String, r: &Report, lang: Lang) {
    heading(out, 2, lang.t(Msg::Findings));
    if r.findings.is_empty() {
        let _ = writeln!(out, "{}\n", lang.t(Msg::NoFindings));
        return;
    }
    for (i, f) in r.findings.iter().enumerate() {
        let phase = f.phase.map_or(lang.t(Msg::NoPhase), |p| phase_title(p, lang));
        let _ = writeln!(out, "**F{}. {}** ({phase}): {}\n", i + 1, severity_word(f.severity, lang), text(&f.title));
        if !f.evidence.is_empty() {
            out.push_str(&fence(&f.evidence));
            out.push('\n');
        }
    }
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Text(s) | Cell::Mono(s) | Cell::Marked(Mark::Good | Mark::Muted, s) => text(s),
        Cell::Code(s) => code(s),
        Cell::Marked(Mark::Bad, s) if !s.is_empty() => format!("**{}**", text(s)),
        Cell::Marked(Mark::Bad, _) | Cell::Empty => String::new(),
        Cell::Badge { word, mark: Mark::Bad, .. } => format!("**{word}**"),
        Cell::Badge { word, .. } => (*word).to_string(),
        Cell::Noted(main, note) => format!("{} ({})", text(main), text(note)),
        Cell::Step { name, tag, what } => match tag {
            Some(tag) => format!("{} ({tag}): {}", text(name), text(what)),
            None => format!("{}: {}", text(name), text(what)),
        },
    }
}

fn table(out: &mut String, t: &Table) {
    if t.rows.is_empty() {
        if !t.empty.is_empty() {
            let _ = writeln!(out, "{}\n", t.empty);
        }
        return;
    }
    let titles: Vec<&str> = t.columns.iter().map(|c| c.title).collect();
    let rules: Vec<&str> = t.columns.iter().map(|c| if c.numeric { "---:" } else { "---" }).collect();
    let _ = writeln!(out, "| {} |\n|{}|", titles.join(" | "), rules.join("|"));
    for row in &t.rows {
        let cells: Vec<String> = row.iter().map(cell).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn key_values(out: &mut String, rows: &[(&str, Cell)]) {
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {} |", cell(v));
    }
    out.push('\n');
}

// ------------------------------------------------------------------- escaping

/// Report text for a paragraph or a table cell: one line, with every character
/// that Markdown or an HTML-rendering viewer would interpret escaped.
pub(crate) fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '|' | '&' | '~' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// A machine word (objective key, digest, event kind) in a code span when that
/// is safe, escaped text otherwise.
pub(crate) fn code(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/')) {
        format!("`{s}`")
    } else {
        text(s)
    }
}

/// Multi-line evidence as a fenced block whose fence is longer than any run of
/// backticks inside it, so the evidence cannot close it.
pub(crate) fn fence(s: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in s.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let bar = "`".repeat((longest + 1).max(3));
    let body: String =
        s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{fffd}' } else { c }).collect();
    format!("{bar}text\n{}\n{bar}\n", body.trim_end_matches('\n'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_cannot_break_a_table_or_inject_html() {
        assert_eq!(text("a|b<script>&c\nd"), "a\\|b\\<script\\>\\&c d");
        assert_eq!(code("rto_smtp_ms"), "`rto_smtp_ms`");
        assert_eq!(code("a`b"), "a\\`b");
    }

    #[test]
    fn a_fence_outgrows_the_backticks_of_its_evidence() {
        let f = fence("x ```` y\n");
        assert!(f.starts_with("`````text\n"), "{f}");
        assert!(f.ends_with("\n`````\n"), "{f}");
        assert!(fence("plain").starts_with("```text\n"));
    }
}
