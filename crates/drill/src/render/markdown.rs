//! The Markdown view: GitHub-flavoured tables, readable as plain text too.
//!
//! Every report string goes through [`text`] (or [`code`]/[`fence`]), so a plan
//! name or a reply text can neither break a table nor inject HTML into a viewer
//! that renders Markdown.

use std::fmt::Write as _;

use super::{by_phase, drill_duration_ms, duration, offset, offset_opt, quantity, rto_rows, step_outcome_word, utc};
use crate::report::{Report, Severity, Source, Verdict};

/// The report as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut out = String::with_capacity(16 * 1024);
    summary(&mut out, report);
    objectives(&mut out, report);
    rto(&mut out, report);
    rpo(&mut out, report);
    service(&mut out, report);
    findings(&mut out, report);
    phases(&mut out, report);
    approvals(&mut out, report);
    environment(&mut out, report);
    out
}

fn verdict_banner(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Passed => "PASSED: every objective met, every check passed",
        Verdict::Failed => "FAILED: an objective or a check failed",
        Verdict::Aborted => "ABORTED: the drill stopped early and rolled back",
    }
}

fn summary(out: &mut String, r: &Report) {
    let _ = writeln!(out, "# Drill report: {}\n", text(&r.plan.name));
    let _ = writeln!(out, "## Verdict: **{}**\n", verdict_banner(r.verdict));
    if let Some(reason) = &r.abort_reason {
        let _ = writeln!(out, "Abort reason: {}\n", text(reason));
    }
    if !r.plan.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", text(&r.plan.description));
    }
    let rows = [
        ("Plan", format!("{} ({})", text(&r.plan.name), text(&r.plan.origin))),
        ("Plan SHA-256", code(&r.plan.sha256)),
        ("Drill id", code(&r.drill_id)),
        ("Started", utc(r.started_at_ms)),
        ("Finished", utc(r.finished_at_ms)),
        ("Duration", duration(drill_duration_ms(r))),
    ];
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out.push('\n');
}

fn objectives(out: &mut String, r: &Report) {
    out.push_str("## Objectives\n\n");
    if r.objectives.is_empty() {
        out.push_str("The plan sets no objectives.\n\n");
        return;
    }
    out.push_str("| Objective | Target | Measured | Met |\n|---|---:|---:|---|\n");
    for o in &r.objectives {
        let measured = o.measured.map_or_else(|| "not measured".to_string(), |m| quantity(m, &o.unit));
        let met = if o.met { "yes" } else { "**NO**" };
        let _ = writeln!(out, "| {} | {} | {} | {met} |", code(&o.name), text(&quantity(o.target, &o.unit)), text(&measured));
    }
    out.push('\n');
}

fn rto(out: &mut String, r: &Report) {
    out.push_str("## Recovery time (RTO)\n\n");
    match r.rto.fault_at_ms {
        Some(at) => {
            let _ = writeln!(out, "Measured from the first fault, injected at {} ({} into the drill).\n", utc(at), offset(at, r.started_at_ms));
        }
        None => out.push_str("No fault was injected, so no recovery was measured.\n\n"),
    }
    out.push_str("| Phase | After the fault | Objective |\n|---|---:|---|\n");
    for row in rto_rows(r) {
        let value = row.value_ms.map_or_else(|| "not seen".to_string(), duration);
        let objective = row.objective.map_or_else(String::new, |o| {
            format!("{} {}", quantity(o.target, &o.unit), if o.met { "(met)" } else { "(**missed**)" })
        });
        let _ = writeln!(out, "| {} | {value} | {objective} |", row.label);
    }
    out.push('\n');
}

fn rpo(out: &mut String, r: &Report) {
    let p = &r.rpo;
    out.push_str("## Recovery point (RPO)\n\n");
    out.push_str("| Acknowledged | Found | Lost | Duplicated | Deferred (4xx) | Refused (5xx) | Given up |\n");
    out.push_str("|---:|---:|---:|---:|---:|---:|---:|\n");
    let lost = if p.lost > 0 { format!("**{}**", p.lost) } else { "0".into() };
    let _ = writeln!(
        out,
        "| {} | {} | {lost} | {} | {} | {} | {} |\n",
        p.acknowledged, p.found, p.duplicated, p.deferred, p.refused, p.given_up
    );
    if !p.lost_tags.is_empty() {
        let tags: Vec<String> = p.lost_tags.iter().map(|t| code(t)).collect();
        let _ = writeln!(out, "Lost messages (tags): {}\n", tags.join(", "));
    }
    let sites = if p.reconciled_at.is_empty() {
        "no site".to_string()
    } else {
        p.reconciled_at.iter().map(|s| text(s)).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(out, "Reconciled at: {sites}.\n");
}

fn service(out: &mut String, r: &Report) {
    out.push_str("## Service seen by clients\n\n### Longest gap per protocol\n\n");
    if r.gaps.is_empty() {
        out.push_str("No gap was measured.\n\n");
    } else {
        out.push_str("| Protocol | Longest gap | From | To |\n|---|---:|---|---|\n");
        for g in &r.gaps {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                g.protocol.name(),
                if g.longest_ms == 0 { "no failure".to_string() } else { duration(g.longest_ms) },
                offset_opt(g.from_at_ms, r.started_at_ms),
                offset_opt(g.to_at_ms, r.started_at_ms),
            );
        }
        out.push('\n');
    }
    out.push_str("### Probes\n\n");
    if r.probes.counts.is_empty() {
        out.push_str("No probe ran.\n\n");
        return;
    }
    out.push_str("| Protocol | OK | Failed | p50 | p99 |\n|---|---:|---:|---:|---:|\n");
    let ms = |v: Option<u64>| v.map_or_else(|| "–".to_string(), |v| format!("{v} ms"));
    for c in &r.probes.counts {
        let _ = writeln!(out, "| {} | {} | {} | {} | {} |", c.protocol.name(), c.ok, c.failed, ms(c.p50_ms), ms(c.p99_ms));
    }
    let _ = writeln!(out, "\n{} samples in report.json (`probes.samples`).\n", r.probes.samples.len());
}

fn severity_word(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "Critical",
        Severity::Warning => "Warning",
    }
}

fn findings(out: &mut String, r: &Report) {
    out.push_str("## Findings\n\n");
    if r.findings.is_empty() {
        out.push_str("None: every check passed and every objective was met.\n\n");
        return;
    }
    for (i, f) in r.findings.iter().enumerate() {
        let phase = f.phase.map_or_else(|| "no phase".to_string(), |p| p.title().to_string());
        let _ = writeln!(out, "**F{}. {}** ({phase}): {}\n", i + 1, severity_word(f.severity), text(&f.title));
        if !f.evidence.is_empty() {
            out.push_str(&fence(&f.evidence));
            out.push('\n');
        }
    }
}

fn source_word(s: Source) -> &'static str {
    match s {
        Source::Drill => "drill",
        Source::Cluster => "cluster",
        Source::Probe => "probe",
    }
}

fn phases(out: &mut String, r: &Report) {
    out.push_str("## Runbook phases\n\n");
    out.push_str("Times are relative to the start of the drill. Events of the target and of the probes are listed under the phase whose step was running when they happened.\n\n");
    for view in by_phase(r) {
        let _ = writeln!(out, "### {}\n", view.title());
        if view.is_empty() {
            out.push_str("No step in this phase.\n\n");
            continue;
        }
        if !view.steps.is_empty() {
            out.push_str("| # | Step | What it does | Outcome | Started | Finished | Detail |\n|---:|---|---|---|---|---|---|\n");
            for s in &view.steps {
                let name = if s.rollback { format!("{} (rollback)", text(&s.name)) } else { text(&s.name) };
                let outcome = step_outcome_word(s.outcome);
                let outcome = if outcome == "failed" { "**failed**" } else { outcome };
                let _ = writeln!(
                    out,
                    "| {} | {name} | {} | {outcome} | {} | {} | {} |",
                    s.index,
                    text(&s.description),
                    offset_opt(s.started_at_ms, r.started_at_ms),
                    offset_opt(s.finished_at_ms, r.started_at_ms),
                    text(&s.detail),
                );
            }
            out.push('\n');
        }
        if !view.timeline.is_empty() {
            out.push_str("| At | Source | Event | Detail |\n|---|---|---|---|\n");
            for e in &view.timeline {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} |",
                    offset(e.at_ms, r.started_at_ms),
                    source_word(e.source),
                    code(&e.kind),
                    text(&e.detail)
                );
            }
            out.push('\n');
        }
        for (n, f) in &view.findings {
            let _ = writeln!(out, "- F{n} ({}): {}", severity_word(f.severity), text(&f.title));
        }
        if !view.findings.is_empty() {
            out.push('\n');
        }
    }
}

fn approvals(out: &mut String, r: &Report) {
    out.push_str("## Approvals and confirmations\n\n");
    if r.approvals.is_empty() {
        out.push_str("No approval was recorded for this plan.\n\n");
    } else {
        out.push_str("| Approved by | At | Plan SHA-256 |\n|---|---|---|\n");
        for a in &r.approvals {
            let _ = writeln!(out, "| {} | {} | {} |", text(&a.by), utc(a.at_ms), code(&a.plan_sha256));
        }
        out.push('\n');
    }
    if r.confirmations.is_empty() {
        out.push_str("No manual step was confirmed.\n\n");
    } else {
        out.push_str("Manual steps confirmed:\n\n");
        for c in &r.confirmations {
            let _ = writeln!(out, "- {}", text(c));
        }
        out.push('\n');
    }
}

fn environment(out: &mut String, r: &Report) {
    let e = &r.environment;
    out.push_str("## Environment\n\n| | |\n|---|---|\n");
    for (k, v) in [
        ("Target", &e.target),
        ("Location", &e.target_location),
        ("Domain", &e.domain),
        ("maildr version", &e.maildr_version),
        ("Host", &e.host),
        ("OS", &e.os),
    ] {
        let _ = writeln!(out, "| {k} | {} |", text(v));
    }
    out.push('\n');
    if !e.sites.is_empty() {
        out.push_str("| Site | Role | Address |\n|---|---|---|\n");
        for s in &e.sites {
            let _ = writeln!(out, "| {} | {} | {} |", text(&s.name), text(&s.role), text(&s.address));
        }
        out.push('\n');
    }
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
    let body: String = s.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{fffd}' } else { c }).collect();
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
