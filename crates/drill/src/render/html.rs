//! The HTML view: one self-contained HTML5 file. The style sheet and the two SVG
//! charts are inline; there is no script and nothing is fetched, so the file
//! can be archived, mailed and opened offline years later and look the same.
//!
//! Every report string is written through [`esc`], in text and in attributes.

use std::fmt::Write as _;

use super::charts::{probe_chart, rto_chart};
use super::model::{self, Cell, Mark, Table};
use super::{drill_duration_ms, duration};
use crate::report::{Report, Severity};

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
    let r = report;
    let mut out = String::with_capacity(64 * 1024);
    let verdict = r.verdict.word();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>Drill {verdict}: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        esc(&r.plan.name)
    );
    let _ = write!(
        out,
        "<header class=\"banner {verdict}\"><div><div class=\"verdict\">{}<small>{}</small></div><h1>Drill report: {}</h1>",
        verdict.to_uppercase(),
        model::verdict_note(r.verdict),
        esc(&r.plan.name)
    );
    if let Some(reason) = &r.abort_reason {
        let _ = write!(out, "<p><strong>Abort reason:</strong> {}</p>", esc(reason));
    }
    if !r.plan.description.trim().is_empty() {
        let _ = write!(out, "<p>{}</p>", esc(&r.plan.description));
    }
    out.push_str("</div></header>\n<main>\n");

    section(&mut out, "summary", "Summary");
    cards(&mut out, r);
    key_values(&mut out, &model::summary(r));
    out.push_str("</section>\n");

    section(&mut out, "objectives", "Objectives");
    table(&mut out, &model::objectives(r));
    out.push_str("</section>\n");

    section(&mut out, "rto", "Recovery time (RTO)");
    match model::rto_intro(r) {
        Some(intro) => {
            let _ = writeln!(out, "<p>{} Dashed lines are the plan's objectives.</p>", esc(&intro));
        }
        None => {
            let _ = writeln!(out, "<p class=\"muted\">{}</p>", model::NO_FAULT);
        }
    }
    out.push_str(&rto_chart(r));
    table(&mut out, &model::rto(r));
    out.push_str("</section>\n");

    section(&mut out, "rpo", "Recovery point (RPO)");
    table(&mut out, &model::rpo(r));
    if !r.rpo.lost_tags.is_empty() {
        let tags: Vec<String> = r.rpo.lost_tags.iter().map(|t| format!("<code>{}</code>", esc(t))).collect();
        let _ = writeln!(out, "<p><strong>Lost messages (tags):</strong> {}</p>", tags.join(", "));
    }
    let _ = writeln!(out, "<p class=\"muted\">Reconciled over IMAP at: {}.</p>", esc(&model::reconciled_at(r)));
    out.push_str("</section>\n");

    section(&mut out, "service", "Service seen by clients");
    let _ = writeln!(
        out,
        "<p>{} probe samples over the drill; a mark per sample (merged where they meet), the worst outcome shown where several share a pixel.</p>",
        r.probes.samples.len()
    );
    out.push_str(&probe_chart(r));
    out.push_str("\n<h3>Longest gap per protocol</h3>\n");
    table(&mut out, &model::gaps(r));
    out.push_str("<h3>Probes</h3>\n");
    table(&mut out, &model::probes(r));
    out.push_str("</section>\n");

    findings(&mut out, r);

    section(&mut out, "phases", "Runbook phases");
    let _ = writeln!(out, "<p class=\"muted\">{}</p>", model::PHASES_INTRO);
    for phase in model::phases(r) {
        let _ = write!(out, "<div class=\"phase\"><h3>{}</h3>", phase.title);
        if phase.steps.is_none() && phase.events.is_none() && phase.findings.is_empty() {
            let _ = write!(out, "<p class=\"muted\">{}</p>", model::NO_STEP);
        }
        for t in phase.steps.iter().chain(phase.events.iter()) {
            table(&mut out, t);
        }
        if !phase.findings.is_empty() {
            out.push_str("<p>");
            for (n, severity, title) in &phase.findings {
                let word = model::severity_word(*severity);
                let _ = write!(
                    out,
                    "<a href=\"#f{n}\">F{n}</a> <span class=\"pill {word}\">{word}</span> {}<br>",
                    esc(title)
                );
            }
            out.push_str("</p>");
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");

    section(&mut out, "approvals", "Approvals and confirmations");
    table(&mut out, &model::approvals(r));
    if r.confirmations.is_empty() {
        let _ = writeln!(out, "<p class=\"muted\">{}</p>", model::NO_CONFIRMATION);
    } else {
        out.push_str("<h3>Manual steps confirmed</h3><ul>");
        for c in &r.confirmations {
            let _ = write!(out, "<li>{}</li>", esc(c));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");

    section(&mut out, "environment", "Environment");
    key_values(&mut out, &model::environment(r));
    table(&mut out, &model::sites(r));
    out.push_str("</section>\n</main>\n");
    let _ = write!(
        out,
        "<footer>maildr {} drill report <span class=\"mono\">{}</span>. The machine-readable record is report.json beside this file.</footer>\n</body>\n</html>\n",
        esc(&r.environment.maildr_version),
        esc(&r.drill_id)
    );
    out
}

fn section(out: &mut String, id: &str, title: &str) {
    let _ = writeln!(out, "<section id=\"{id}\">\n<h2>{title}</h2>");
}

/// The four figures an auditor looks at first.
fn cards(out: &mut String, r: &Report) {
    let critical = r.findings.iter().filter(|f| f.severity == Severity::Critical).count();
    let rto_missing = r.rto.fault_at_ms.is_some() && r.rto.total_ms.is_none();
    let cards = [
        ("Duration", duration(drill_duration_ms(r)), false),
        ("RTO total", r.rto.total_ms.map_or_else(|| "not seen".into(), duration), rto_missing),
        ("Acknowledged mail lost", r.rpo.lost.to_string(), r.rpo.lost > 0),
        ("Critical findings", critical.to_string(), critical > 0),
    ];
    out.push_str("<div class=\"cards\">");
    for (title, value, bad) in cards {
        let _ = write!(
            out,
            "<div class=\"card{}\"><div class=\"t\">{title}</div><div class=\"n\">{value}</div></div>",
            if bad { " bad" } else { "" }
        );
    }
    out.push_str("</div>\n");
}

fn findings(out: &mut String, r: &Report) {
    section(out, "findings", "Findings");
    if r.findings.is_empty() {
        out.push_str("<p class=\"yes\">None: every check passed and every objective was met.</p>\n</section>\n");
        return;
    }
    for (i, f) in r.findings.iter().enumerate() {
        let word = model::severity_word(f.severity);
        let _ = write!(
            out,
            "<div class=\"finding {word}\" id=\"f{n}\"><strong>F{n}</strong> <span class=\"pill {word}\">{word}</span> <strong>{}</strong> <span class=\"muted\">{}</span>",
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

fn mark_class(m: Mark) -> &'static str {
    match m {
        Mark::Good => "yes",
        Mark::Bad => "no",
        Mark::Muted => "muted",
    }
}

fn cell(c: &Cell) -> String {
    match c {
        Cell::Text(s) => esc(s),
        Cell::Code(s) => format!("<code>{}</code>", esc(s)),
        Cell::Mono(s) => format!("<span class=\"mono\">{}</span>", esc(s)),
        Cell::Marked(m, s) => format!("<span class=\"{}\">{}</span>", mark_class(*m), esc(s)),
        Cell::Badge(word, _) => format!("<span class=\"pill {word}\">{word}</span>"),
        Cell::Noted(main, note) => format!("{} <span class=\"muted\">({})</span>", esc(main), esc(note)),
        Cell::Step { name, tag, what } => format!(
            "<strong>{}</strong>{}<br><span class=\"muted\">{}</span>",
            esc(name),
            tag.map(|t| format!(" <span class=\"pill\">{t}</span>")).unwrap_or_default(),
            esc(what)
        ),
        Cell::Empty => String::new(),
    }
}

fn table(out: &mut String, t: &Table) {
    if t.rows.is_empty() {
        if !t.empty.is_empty() {
            let _ = writeln!(out, "<p class=\"muted\">{}</p>", t.empty);
        }
        return;
    }
    match t.class {
        Some(class) => {
            let _ = write!(out, "<table class=\"{class}\">");
        }
        None => out.push_str("<table>"),
    }
    out.push_str("<thead><tr>");
    let num = |numeric: bool| if numeric { " class=\"num\"" } else { "" };
    for c in &t.columns {
        let _ = write!(out, "<th{}>{}</th>", num(c.numeric), c.title);
    }
    out.push_str("</tr></thead><tbody>");
    for row in &t.rows {
        out.push_str("<tr>");
        for (c, column) in row.iter().zip(&t.columns) {
            let _ = write!(out, "<td{}>{}</td>", num(column.numeric), cell(c));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>\n");
}

fn key_values(out: &mut String, rows: &[(&str, Cell)]) {
    out.push_str("<dl class=\"kv\">");
    for (k, v) in rows {
        let _ = write!(out, "<dt>{k}</dt><dd>{}</dd>", cell(v));
    }
    out.push_str("</dl>\n");
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
