//! The Markdown view: GitHub-flavoured tables, readable as plain text too.
//!
//! Every report string goes through [`text`] (or [`code`]/[`fence`]), so a plan
//! name or a reply text can neither break a table nor inject HTML into a viewer
//! that renders Markdown.

use std::fmt::Write as _;

use super::model::{self, Cell, Mark, Table};
use crate::report::{Report, Verdict};

/// The report as Markdown.
pub fn markdown(report: &Report) -> String {
    let r = report;
    let mut out = String::with_capacity(16 * 1024);
    let _ = writeln!(out, "# Drill report: {}\n", text(&r.plan.name));
    let _ = writeln!(out, "## Verdict: **{}**, {}\n", verdict_word(r.verdict), model::verdict_note(r.verdict));
    if let Some(reason) = &r.abort_reason {
        let _ = writeln!(out, "Abort reason: {}\n", text(reason));
    }
    if !r.plan.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", text(&r.plan.description));
    }
    key_values(&mut out, &model::summary(r));

    out.push_str("## Objectives\n\n");
    table(&mut out, &model::objectives(r));

    out.push_str("## Recovery time (RTO)\n\n");
    let _ = writeln!(out, "{}\n", model::rto_intro(r).as_deref().unwrap_or(model::NO_FAULT));
    table(&mut out, &model::rto(r));

    out.push_str("## Recovery point (RPO)\n\n");
    table(&mut out, &model::rpo(r));
    if !r.rpo.lost_tags.is_empty() {
        let tags: Vec<String> = r.rpo.lost_tags.iter().map(|t| code(t)).collect();
        let _ = writeln!(out, "Lost messages (tags): {}\n", tags.join(", "));
    }
    let _ = writeln!(out, "Reconciled over IMAP at: {}.\n", text(&model::reconciled_at(r)));

    out.push_str("## Service seen by clients\n\n");
    let _ = writeln!(out, "{} probe samples in report.json (`probes.samples`).\n", r.probes.samples.len());
    out.push_str("### Longest gap per protocol\n\n");
    table(&mut out, &model::gaps(r));
    out.push_str("### Probes\n\n");
    table(&mut out, &model::probes(r));

    findings(&mut out, r);

    out.push_str("## Runbook phases\n\n");
    let _ = writeln!(out, "{}\n", model::PHASES_INTRO);
    for phase in model::phases(r) {
        let _ = writeln!(out, "### {}\n", phase.title);
        if phase.steps.is_none() && phase.events.is_none() && phase.findings.is_empty() {
            let _ = writeln!(out, "{}\n", model::NO_STEP);
        }
        for t in phase.steps.iter().chain(phase.events.iter()) {
            table(&mut out, t);
        }
        for (n, severity, title) in &phase.findings {
            let _ = writeln!(out, "- F{n} ({}): {}", model::severity_word(*severity), text(title));
        }
        if !phase.findings.is_empty() {
            out.push('\n');
        }
    }

    out.push_str("## Approvals and confirmations\n\n");
    table(&mut out, &model::approvals(r));
    if r.confirmations.is_empty() {
        let _ = writeln!(out, "{}\n", model::NO_CONFIRMATION);
    } else {
        out.push_str("Manual steps confirmed:\n\n");
        for c in &r.confirmations {
            let _ = writeln!(out, "- {}", text(c));
        }
        out.push('\n');
    }

    out.push_str("## Environment\n\n");
    key_values(&mut out, &model::environment(r));
    table(&mut out, &model::sites(r));
    out
}

fn verdict_word(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Passed => "PASSED",
        Verdict::Failed => "FAILED",
        Verdict::Aborted => "ABORTED",
    }
}

fn findings(out: &mut String, r: &Report) {
    out.push_str("## Findings\n\n");
    if r.findings.is_empty() {
        out.push_str("None: every check passed and every objective was met.\n\n");
        return;
    }
    for (i, f) in r.findings.iter().enumerate() {
        let phase = f.phase.map_or("no phase", |p| p.title());
        let _ = writeln!(out, "**F{}. {}** ({phase}): {}\n", i + 1, model::severity_word(f.severity), text(&f.title));
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
        Cell::Badge(word, Mark::Bad) => format!("**{word}**"),
        Cell::Badge(word, _) => (*word).to_string(),
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
