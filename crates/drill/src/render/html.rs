//! The HTML view: one self-contained HTML5 file. The style sheet and the two SVG
//! charts are inline; there is no script and nothing is fetched, so the file
//! can be archived, mailed and opened offline years later and look the same.
//!
//! Every report string is written through [`esc`], in text and in attributes.

use std::fmt::Write as _;

use super::charts::{probe_chart, rto_chart};
use super::{by_phase, drill_duration_ms, duration, offset, offset_opt, quantity, rto_rows, step_outcome_word, utc};
use crate::report::{Report, Severity, Source, StepOutcome, Verdict};

const STYLE: &str = r#"
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:var(--ink);background:#fff}
main{max-width:1120px;margin:0 auto;padding:0 28px 40px}
header.banner{color:#fff;padding:26px 28px 22px}
header.banner>div{max-width:1064px;margin:0 auto}
.passed{background:var(--ok)}.failed{background:var(--bad)}.aborted{background:var(--warn)}
.verdict{font-size:34px;font-weight:700;letter-spacing:.06em;line-height:1.1}
.verdict small{font-size:15px;font-weight:500;letter-spacing:0;opacity:.92;margin-left:14px}
header h1{font-size:20px;font-weight:600;margin:10px 0 0}
header p{margin:6px 0 0;opacity:.92}
h2{font-size:19px;margin:34px 0 12px;padding-bottom:6px;border-bottom:1px solid var(--line)}
h3{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;width:100%;margin:8px 0 14px;font-size:13px}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:var(--soft);font-weight:600;color:var(--muted)}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr{break-inside:avoid}
table.steps,table.events{table-layout:fixed}
.steps th:nth-child(1){width:44px}.steps th:nth-child(3){width:96px}.steps th:nth-child(4),.steps th:nth-child(5){width:112px}.steps th:nth-child(6){width:28%}
.events th:nth-child(1){width:112px}.events th:nth-child(2){width:80px}.events th:nth-child(3){width:150px}
td{overflow-wrap:anywhere}
code,.mono{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;word-break:break-all}
.kv{display:grid;grid-template-columns:170px 1fr;gap:4px 16px;margin:14px 0}
.kv dt{color:var(--muted)}.kv dd{margin:0}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin:18px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card .n{font-size:24px;font-weight:700;font-variant-numeric:tabular-nums}
.card .t{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card.bad{border-color:var(--bad)}.card.bad .n{color:var(--bad)}
.yes{color:var(--ok);font-weight:600}.no{color:var(--bad);font-weight:700}
.pill{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;background:var(--soft);border:1px solid var(--line)}
.pill.failed,.pill.critical{background:#ffebe9;border-color:#ff8182;color:var(--bad)}
.pill.done{background:#dafbe1;border-color:#6fdd8b;color:var(--ok)}
.pill.warning{background:#fff8c5;border-color:#d4a72c;color:var(--warn)}
.finding{border-left:4px solid var(--bad);background:#fff;padding:8px 14px;margin:10px 0;border-radius:0 6px 6px 0;box-shadow:0 0 0 1px var(--line)}
.finding.warning{border-left-color:#d4a72c}
.finding pre{background:var(--soft);padding:8px 10px;border-radius:6px;white-space:pre-wrap;word-break:break-word;margin:6px 0 2px;font-size:12px}
.muted{color:var(--muted)}
.phase{border:1px solid var(--line);border-radius:8px;padding:4px 16px 8px;margin:14px 0}
.phase h3{margin-top:12px}
.chart{width:100%;height:auto;display:block;margin:8px 0 4px}
.chart text{font:12px -apple-system,"Segoe UI",Helvetica,Arial,sans-serif;fill:var(--ink)}
.chart .tick{font-size:11px;fill:var(--muted)}
.chart .strong{font-weight:700}
.chart .value{font-size:12px;font-weight:600}
.chart .missing{font-style:italic;fill:var(--muted)}
.chart .marker{font-size:11px;font-weight:600}
footer{max-width:1120px;margin:0 auto;padding:16px 28px 30px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
@media (max-width:760px){.cards{grid-template-columns:repeat(2,1fr)}.kv{grid-template-columns:1fr}}
@media print{header.banner{-webkit-print-color-adjust:exact;print-color-adjust:exact}.phase,.finding{break-inside:avoid}}
"#;

/// The report as one self-contained HTML5 document.
pub fn html(report: &Report) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let r = report;
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Drill {}: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        r.verdict.word(),
        esc(&r.plan.name)
    );
    banner(&mut out, r);
    out.push_str("<main>\n");
    summary(&mut out, r);
    objectives(&mut out, r);
    rto(&mut out, r);
    rpo(&mut out, r);
    service(&mut out, r);
    findings(&mut out, r);
    phases(&mut out, r);
    approvals(&mut out, r);
    environment(&mut out, r);
    out.push_str("</main>\n");
    let _ = write!(
        out,
        "<footer>maildr {} drill report <span class=\"mono\">{}</span>. The machine-readable record is report.json beside this file.</footer>\n</body>\n</html>\n",
        esc(&r.environment.maildr_version),
        esc(&r.drill_id)
    );
    out
}

fn verdict_note(v: Verdict) -> &'static str {
    match v {
        Verdict::Passed => "every objective met, every check passed",
        Verdict::Failed => "an objective or a check failed",
        Verdict::Aborted => "the drill stopped early and rolled back",
    }
}

fn banner(out: &mut String, r: &Report) {
    let class = r.verdict.word();
    let _ = write!(
        out,
        "<header class=\"banner {class}\"><div><div class=\"verdict\">{}<small>{}</small></div><h1>Drill report: {}</h1>",
        class.to_uppercase(),
        verdict_note(r.verdict),
        esc(&r.plan.name)
    );
    if let Some(reason) = &r.abort_reason {
        let _ = write!(out, "<p><strong>Abort reason:</strong> {}</p>", esc(reason));
    }
    if !r.plan.description.trim().is_empty() {
        let _ = write!(out, "<p>{}</p>", esc(&r.plan.description));
    }
    out.push_str("</div></header>\n");
}

fn summary(out: &mut String, r: &Report) {
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n<div class=\"cards\">");
    let critical = r.findings.iter().filter(|f| f.severity == Severity::Critical).count();
    let cards = [
        ("Duration", duration(drill_duration_ms(r)), false),
        ("RTO total", r.rto.total_ms.map_or_else(|| "not seen".into(), duration), r.rto.fault_at_ms.is_some() && r.rto.total_ms.is_none()),
        ("Acknowledged mail lost", r.rpo.lost.to_string(), r.rpo.lost > 0),
        ("Critical findings", critical.to_string(), critical > 0),
    ];
    for (title, value, bad) in cards {
        let _ = write!(
            out,
            "<div class=\"card{}\"><div class=\"t\">{title}</div><div class=\"n\">{value}</div></div>",
            if bad { " bad" } else { "" }
        );
    }
    out.push_str("</div>\n<dl class=\"kv\">");
    let rows = [
        ("Plan", format!("{} <span class=\"muted\">({})</span>", esc(&r.plan.name), esc(&r.plan.origin))),
        ("Plan SHA-256", format!("<code>{}</code>", esc(&r.plan.sha256))),
        ("Drill id", format!("<code>{}</code>", esc(&r.drill_id))),
        ("Started", utc(r.started_at_ms)),
        ("Finished", utc(r.finished_at_ms)),
        ("Duration", duration(drill_duration_ms(r))),
    ];
    for (k, v) in rows {
        let _ = write!(out, "<dt>{k}</dt><dd>{v}</dd>");
    }
    out.push_str("</dl>\n</section>\n");
}

fn yes_no(met: bool) -> &'static str {
    if met {
        "<span class=\"yes\">met</span>"
    } else {
        "<span class=\"no\">missed</span>"
    }
}

fn objectives(out: &mut String, r: &Report) {
    out.push_str("<section id=\"objectives\">\n<h2>Objectives</h2>\n");
    if r.objectives.is_empty() {
        out.push_str("<p class=\"muted\">The plan sets no objectives.</p>\n</section>\n");
        return;
    }
    out.push_str("<table><thead><tr><th>Objective</th><th class=\"num\">Target</th><th class=\"num\">Measured</th><th>Result</th></tr></thead><tbody>");
    for o in &r.objectives {
        let measured = o.measured.map_or_else(|| "not measured".to_string(), |m| quantity(m, &o.unit));
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            esc(&o.name),
            esc(&quantity(o.target, &o.unit)),
            esc(&measured),
            yes_no(o.met)
        );
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn rto(out: &mut String, r: &Report) {
    out.push_str("<section id=\"rto\">\n<h2>Recovery time (RTO)</h2>\n");
    match r.rto.fault_at_ms {
        Some(at) => {
            let _ = writeln!(
                out,
                "<p>Each phase in time after the first fault, injected at {} ({} into the drill). Dashed lines are the plan's objectives.</p>",
                utc(at),
                offset(at, r.started_at_ms)
            );
        }
        None => out.push_str("<p class=\"muted\">No fault was injected, so no recovery was measured.</p>\n"),
    }
    out.push_str(&rto_chart(r));
    out.push_str("\n<table><thead><tr><th>Phase</th><th class=\"num\">After the fault</th><th>Objective</th></tr></thead><tbody>");
    for row in rto_rows(r) {
        let value = row.value_ms.map_or_else(|| "<span class=\"muted\">not seen</span>".to_string(), duration);
        let objective = row
            .objective
            .map_or_else(String::new, |o| format!("{} {}", esc(&quantity(o.target, &o.unit)), yes_no(o.met)));
        let _ = write!(out, "<tr><td>{}</td><td class=\"num\">{value}</td><td>{objective}</td></tr>", row.label);
    }
    out.push_str("</tbody></table>\n</section>\n");
}

fn rpo(out: &mut String, r: &Report) {
    let p = &r.rpo;
    out.push_str("<section id=\"rpo\">\n<h2>Recovery point (RPO)</h2>\n<table><thead><tr>");
    let cells = [
        ("Acknowledged", p.acknowledged, false),
        ("Found", p.found, false),
        ("Lost", p.lost, p.lost > 0),
        ("Duplicated", p.duplicated, p.duplicated > 0),
        ("Deferred (4xx)", p.deferred, false),
        ("Refused (5xx)", p.refused, false),
        ("Given up", p.given_up, p.given_up > 0),
    ];
    for (title, _, _) in cells {
        let _ = write!(out, "<th class=\"num\">{title}</th>");
    }
    out.push_str("</tr></thead><tbody><tr>");
    for (_, n, bad) in cells {
        let _ = write!(out, "<td class=\"num{}\">{n}</td>", if bad { " no" } else { "" });
    }
    out.push_str("</tr></tbody></table>\n");
    if !p.lost_tags.is_empty() {
        out.push_str("<p><strong>Lost messages (tags):</strong> ");
        let tags: Vec<String> = p.lost_tags.iter().map(|t| format!("<code>{}</code>", esc(t))).collect();
        out.push_str(&tags.join(", "));
        out.push_str("</p>\n");
    }
    let sites = if p.reconciled_at.is_empty() {
        "no site".to_string()
    } else {
        p.reconciled_at.iter().map(|s| esc(s)).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(out, "<p class=\"muted\">Reconciled over IMAP at: {sites}.</p>\n</section>");
}

fn service(out: &mut String, r: &Report) {
    out.push_str("<section id=\"service\">\n<h2>Service seen by clients</h2>\n");
    let _ = writeln!(
        out,
        "<p>{} probe samples over the drill; a mark per sample (merged where they meet), the worst outcome shown where several share a pixel.</p>",
        r.probes.samples.len()
    );
    out.push_str(&probe_chart(r));
    out.push_str("\n<h3>Longest gap per protocol</h3>\n");
    if r.gaps.is_empty() {
        out.push_str("<p class=\"muted\">No gap was measured.</p>\n");
    } else {
        out.push_str("<table><thead><tr><th>Protocol</th><th class=\"num\">Longest gap</th><th>From</th><th>To</th></tr></thead><tbody>");
        for g in &r.gaps {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                g.protocol.name(),
                if g.longest_ms == 0 { "no failure".to_string() } else { duration(g.longest_ms) },
                offset_opt(g.from_at_ms, r.started_at_ms),
                offset_opt(g.to_at_ms, r.started_at_ms)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("<h3>Probes</h3>\n");
    if r.probes.counts.is_empty() {
        out.push_str("<p class=\"muted\">No probe ran.</p>\n");
    } else {
        out.push_str("<table><thead><tr><th>Protocol</th><th class=\"num\">OK</th><th class=\"num\">Failed</th><th class=\"num\">p50</th><th class=\"num\">p99</th></tr></thead><tbody>");
        let ms = |v: Option<u64>| v.map_or_else(|| "–".to_string(), |v| format!("{v} ms"));
        for c in &r.probes.counts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                c.protocol.name(),
                c.ok,
                if c.failed > 0 { " no" } else { "" },
                c.failed,
                ms(c.p50_ms),
                ms(c.p99_ms)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");
}

fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    }
}

fn findings(out: &mut String, r: &Report) {
    out.push_str("<section id=\"findings\">\n<h2>Findings</h2>\n");
    if r.findings.is_empty() {
        out.push_str("<p class=\"yes\">None: every check passed and every objective was met.</p>\n</section>\n");
        return;
    }
    for (i, f) in r.findings.iter().enumerate() {
        let class = severity_class(f.severity);
        let _ = write!(
            out,
            "<div class=\"finding {class}\" id=\"f{n}\"><strong>F{n}</strong> <span class=\"pill {class}\">{class}</span> <strong>{}</strong> <span class=\"muted\">{}</span>",
            esc(&f.title),
            f.phase.map_or("no phase", |p| p.title()),
            n = i + 1
        );
        if !f.evidence.is_empty() {
            let _ = write!(out, "<pre>{}</pre>", esc(&f.evidence));
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

fn source_word(s: Source) -> &'static str {
    match s {
        Source::Drill => "drill",
        Source::Cluster => "cluster",
        Source::Probe => "probe",
    }
}

fn phases(out: &mut String, r: &Report) {
    out.push_str("<section id=\"phases\">\n<h2>Runbook phases</h2>\n<p class=\"muted\">Times are relative to the start of the drill. Events of the target and of the probes are listed under the phase whose step was running when they happened.</p>\n");
    for view in by_phase(r) {
        let _ = write!(out, "<div class=\"phase\"><h3>{}</h3>", view.title());
        if view.is_empty() {
            out.push_str("<p class=\"muted\">No step in this phase.</p></div>\n");
            continue;
        }
        if !view.steps.is_empty() {
            out.push_str("<table class=\"steps\"><thead><tr><th class=\"num\">#</th><th>Step</th><th>Outcome</th><th>Started</th><th>Finished</th><th>Detail</th></tr></thead><tbody>");
            for s in &view.steps {
                let word = step_outcome_word(s.outcome);
                let _ = write!(
                    out,
                    "<tr><td class=\"num\">{}</td><td><strong>{}</strong>{}<br><span class=\"muted\">{}</span></td><td><span class=\"pill {word}\">{word}</span></td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td>{}</td></tr>",
                    s.index,
                    esc(&s.name),
                    if s.rollback { " <span class=\"pill\">rollback</span>" } else { "" },
                    esc(&s.description),
                    offset_opt(s.started_at_ms, r.started_at_ms),
                    offset_opt(s.finished_at_ms, r.started_at_ms),
                    if s.outcome == StepOutcome::Failed { format!("<span class=\"no\">{}</span>", esc(&s.detail)) } else { esc(&s.detail) }
                );
            }
            out.push_str("</tbody></table>");
        }
        if !view.timeline.is_empty() {
            out.push_str("<table class=\"events\"><thead><tr><th>At</th><th>Source</th><th>Event</th><th>Detail</th></tr></thead><tbody>");
            for e in &view.timeline {
                let _ = write!(
                    out,
                    "<tr><td class=\"mono\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
                    offset(e.at_ms, r.started_at_ms),
                    source_word(e.source),
                    esc(&e.kind),
                    esc(&e.detail)
                );
            }
            out.push_str("</tbody></table>");
        }
        if !view.findings.is_empty() {
            out.push_str("<p>");
            for (n, f) in &view.findings {
                let class = severity_class(f.severity);
                let _ = write!(out, "<a href=\"#f{n}\">F{n}</a> <span class=\"pill {class}\">{class}</span> {}<br>", esc(&f.title));
            }
            out.push_str("</p>");
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");
}

fn approvals(out: &mut String, r: &Report) {
    out.push_str("<section id=\"approvals\">\n<h2>Approvals and confirmations</h2>\n");
    if r.approvals.is_empty() {
        out.push_str("<p class=\"muted\">No approval was recorded for this plan.</p>\n");
    } else {
        out.push_str("<table><thead><tr><th>Approved by</th><th>At</th><th>Plan SHA-256</th></tr></thead><tbody>");
        for a in &r.approvals {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&a.by),
                utc(a.at_ms),
                esc(&a.plan_sha256)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    if r.confirmations.is_empty() {
        out.push_str("<p class=\"muted\">No manual step was confirmed.</p>\n");
    } else {
        out.push_str("<h3>Manual steps confirmed</h3><ul>");
        for c in &r.confirmations {
            let _ = write!(out, "<li>{}</li>", esc(c));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");
}

fn environment(out: &mut String, r: &Report) {
    let e = &r.environment;
    out.push_str("<section id=\"environment\">\n<h2>Environment</h2>\n<dl class=\"kv\">");
    for (k, v) in [
        ("Target", &e.target),
        ("Location", &e.target_location),
        ("Domain", &e.domain),
        ("maildr version", &e.maildr_version),
        ("Host", &e.host),
        ("OS", &e.os),
    ] {
        let _ = write!(out, "<dt>{k}</dt><dd>{}</dd>", esc(v));
    }
    out.push_str("</dl>\n");
    if !e.sites.is_empty() {
        out.push_str("<table><thead><tr><th>Site</th><th>Role</th><th>Address</th></tr></thead><tbody>");
        for s in &e.sites {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td class=\"mono\">{}</td></tr>",
                esc(&s.name),
                esc(&s.role),
                esc(&s.address)
            );
        }
        out.push_str("</tbody></table>\n");
    }
    out.push_str("</section>\n");
}

/// Text for HTML content or a quoted attribute value. Characters HTML5 forbids
/// in a document (controls other than white space, noncharacters) become
/// U+FFFD so the page stays valid whatever the report holds.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            '\r' => out.push(' '),
            c if c.is_control() || is_noncharacter(c) => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

fn is_noncharacter(c: char) -> bool {
    let n = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&n) || n & 0xFFFE == 0xFFFE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_neutralises_markup_and_forbidden_characters() {
        assert_eq!(esc("<script>&\"'"), "&lt;script&gt;&amp;&quot;&#39;");
        assert_eq!(esc("a\u{0}b\u{7f}c\u{9f}d\u{fffe}e\u{fdd0}"), "a\u{fffd}b\u{fffd}c\u{fffd}d\u{fffd}e\u{fffd}");
        assert_eq!(esc("line\nnext\ttab\r"), "line\nnext\ttab ");
        assert_eq!(esc("北京 → 上海"), "北京 → 上海");
    }
}
