//! The HTML view: one self-contained HTML5 file. The style sheet and the two SVG
//! charts are inline; there is no script and nothing is fetched, so the file
//! can be archived, mailed and opened offline years later and look the same.
//!
//! Every report string is written through [`esc`], in text and in attributes.
//! The page declares its language (`lang="zh-CN"` or `lang="en"`), and its
//! fonts fall back to ones that draw Chinese in either language: an English
//! report still shows Chinese site names, replies and plan texts.

use std::fmt::Write as _;

use super::charts::{probe_chart, rto_chart};
use super::i18n::{Lang, Msg};
use super::model::{self, Cell, Mark, Table};
use super::{drill_duration_ms, duration, phase_title, severity_class, severity_word, verdict_note, verdict_word};
use crate::report::{Report, Severity, TabletopRecord};

const STYLE: &str = r#"
:root{--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:14px/1.5 -apple-system,"Segoe UI",Helvetica,Arial,"Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei","PingFang SC","Microsoft YaHei",sans-serif;color:var(--ink);background:#fff}
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
.chart text{font:12px -apple-system,"Segoe UI",Helvetica,Arial,"Noto Sans CJK SC","Source Han Sans SC","WenQuanYi Micro Hei","PingFang SC","Microsoft YaHei",sans-serif;fill:var(--ink)}
.chart .tick{font-size:11px;fill:var(--muted)}
.chart .strong{font-weight:700}
.chart .value{font-size:12px;font-weight:600}
.chart .missing{font-style:italic;fill:var(--muted)}
.chart .marker{font-size:11px;font-weight:600}
footer{max-width:1120px;margin:0 auto;padding:16px 28px 30px;color:var(--muted);font-size:12px;border-top:1px solid var(--line)}
@media (max-width:760px){.cards{grid-template-columns:repeat(2,1fr)}.kv{grid-template-columns:1fr}}
@media print{header.banner{-webkit-print-color-adjust:exact;print-color-adjust:exact}.phase,.finding{break-inside:avoid}}
"#;

/// The report as one self-contained HTML5 document, its words in `lang`.
pub fn html(report: &Report, lang: Lang) -> String {
    let r = report;
    let mut out = String::with_capacity(64 * 1024);
    // The verdict's style class is the same in every language.
    let class = r.verdict.word();
    let verdict = verdict_word(r.verdict, lang);
    let name = esc(&r.plan.name);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        lang.html_tag(),
        lang.fmt(if r.is_tabletop() { Msg::TabletopPageTitle } else { Msg::PageTitle }, &[verdict, &name])
    );
    let _ = write!(
        out,
        "<header class=\"banner {class}\"><div><div class=\"verdict\">{}<small>{}</small></div><h1>{}</h1>",
        verdict.to_uppercase(),
        verdict_note(r.verdict, lang),
        model::title(r, lang, &name)
    );
    if let Some(reason) = &r.abort_reason {
        let _ =
            write!(out, "<p><strong>{}</strong>{}{}</p>", lang.t(Msg::AbortReason), lang.t(Msg::Colon), esc(reason));
    }
    if !r.plan.description.trim().is_empty() {
        let _ = write!(out, "<p>{}</p>", esc(&r.plan.description));
    }
    out.push_str("</div></header>\n<main>\n");

    section(&mut out, "summary", lang.t(Msg::Summary));
    cards(&mut out, r, lang);
    key_values(&mut out, &model::summary(r, lang));
    out.push_str("</section>\n");

    section(&mut out, "objectives", lang.t(Msg::Objectives));
    table(&mut out, &model::objectives(r, lang));
    out.push_str("</section>\n");

    match &r.tabletop {
        Some(t) if r.is_tabletop() => tabletop(&mut out, r, t, lang),
        _ => measurements(&mut out, r, lang),
    }
    against_previous(&mut out, r, lang);

    findings(&mut out, r, lang);

    section(&mut out, "phases", lang.t(Msg::RunbookPhases));
    let _ = writeln!(out, "<p class=\"muted\">{}</p>", lang.t(Msg::PhasesIntro));
    for phase in model::phases(r, lang) {
        let _ = write!(out, "<div class=\"phase\"><h3>{}</h3>", phase.title);
        if phase.steps.is_none() && phase.events.is_none() && phase.findings.is_empty() {
            let _ = write!(out, "<p class=\"muted\">{}</p>", lang.t(Msg::NoStep));
        }
        for t in phase.steps.iter().chain(phase.events.iter()) {
            table(&mut out, t);
        }
        if !phase.findings.is_empty() {
            out.push_str("<p>");
            for (n, severity, title) in &phase.findings {
                let _ = write!(
                    out,
                    "<a href=\"#f{n}\">F{n}</a> <span class=\"pill {}\">{}</span> {}<br>",
                    severity_class(*severity),
                    severity_word(*severity, lang),
                    esc(title)
                );
            }
            out.push_str("</p>");
        }
        out.push_str("</div>\n");
    }
    out.push_str("</section>\n");

    section(&mut out, "approvals", lang.t(Msg::ApprovalsAndConfirmations));
    table(&mut out, &model::approvals(r, lang));
    if r.confirmations.is_empty() {
        let _ = writeln!(out, "<p class=\"muted\">{}</p>", lang.t(Msg::NoConfirmation));
    } else {
        let _ = write!(out, "<h3>{}</h3><ul>", lang.t(Msg::ManualStepsConfirmed));
        for c in &r.confirmations {
            let _ = write!(out, "<li>{}</li>", esc(c));
        }
        out.push_str("</ul>\n");
    }
    out.push_str("</section>\n");

    section(&mut out, "environment", lang.t(Msg::Environment));
    key_values(&mut out, &model::environment(r, lang));
    table(&mut out, &model::sites(r, lang));
    out.push_str("</section>\n</main>\n");
    let id = format!("<span class=\"mono\">{}</span>", esc(&r.drill_id));
    let _ = write!(
        out,
        "<footer>{}</footer>\n</body>\n</html>\n",
        lang.fmt(Msg::Footer, &[&esc(&r.environment.maildr_version), &id])
    );
    out
}

/// What a drill measured: recovery time, recovery point, the service clients saw.
fn measurements(out: &mut String, r: &Report, lang: Lang) {
    section(out, "rto", lang.t(Msg::RecoveryTime));
    match model::rto_intro(r, lang) {
        Some(intro) => {
            let _ = writeln!(out, "<p>{}{}</p>", esc(&intro), lang.t(Msg::RtoObjectivesDashed));
        }
        None => {
            let _ = writeln!(out, "<p class=\"muted\">{}</p>", lang.t(Msg::NoFault));
        }
    }
    out.push_str(&rto_chart(r, lang));
    table(out, &model::rto(r, lang));
    out.push_str("</section>\n");

    section(out, "rpo", lang.t(Msg::RecoveryPoint));
    table(out, &model::rpo(r, lang));
    if !r.rpo.lost_tags.is_empty() {
        let tags: Vec<String> = r.rpo.lost_tags.iter().map(|t| format!("<code>{}</code>", esc(t))).collect();
        let _ =
            writeln!(out, "<p><strong>{}</strong>{}{}</p>", lang.t(Msg::LostTags), lang.t(Msg::Colon), tags.join(", "));
    }
    let reconciled = esc(&model::reconciled_at(r, lang));
    let _ = writeln!(out, "<p class=\"muted\">{}</p>", lang.fmt(Msg::ReconciledAt, &[&reconciled]));
    out.push_str("</section>\n");

    section(out, "service", lang.t(Msg::ServiceSeen));
    let samples = r.probes.samples.len().to_string();
    let _ = writeln!(out, "<p>{}</p>", lang.fmt(Msg::SamplesOverDrill, &[&samples]));
    out.push_str(&probe_chart(r, lang));
    let _ = writeln!(out, "\n<h3>{}</h3>", lang.t(Msg::LongestGapPerProtocol));
    table(out, &model::gaps(r, lang));
    let _ = writeln!(out, "<h3>{}</h3>", lang.t(Msg::Probes));
    table(out, &model::probes(r, lang));
    if r.load.is_some() {
        let _ = writeln!(out, "<h3>{}</h3>", lang.t(Msg::LoadHeading));
        for line in model::load_lines(r, lang) {
            let _ = writeln!(out, "<p class=\"muted\">{}</p>", esc(&line));
        }
        table(out, &model::load(r, lang));
    }
    out.push_str("</section>\n");
}

/// What a tabletop exercise recorded, in place of the measurements.
fn tabletop(out: &mut String, r: &Report, t: &TabletopRecord, lang: Lang) {
    section(out, "tabletop", lang.t(Msg::TabletopHeading));
    for line in model::tabletop_lines(t, lang, &|s| format!("<code>{}</code>", esc(s))) {
        let _ = writeln!(out, "<p>{line}</p>");
    }
    let _ = writeln!(out, "<h3>{}</h3>", lang.t(Msg::Participants));
    table(out, &model::tabletop_participants(t, lang));
    let _ = writeln!(out, "<h3>{}</h3>", lang.t(Msg::StepsAndDecisions));
    table(out, &model::tabletop_steps(r, t, lang));
    let _ = writeln!(out, "<h3>{}</h3>", lang.t(Msg::RecoveryByDecisions));
    let _ = writeln!(out, "<p>{}</p>", model::tabletop_recovery_intro(t, lang));
    table(out, &model::tabletop_recovery(r, t, lang));
    out.push_str("</section>\n");
}

/// This drill beside the previous drill of its scenario, when the report
/// holds that comparison.
fn against_previous(out: &mut String, r: &Report, lang: Lang) {
    let (Some(intro), Some((worse, line)), Some(t)) =
        (model::previous_intro(r, lang), model::previous_verdict_line(r, lang), model::against_previous(r, lang))
    else {
        return;
    };
    section(out, "previous", lang.t(Msg::AgainstPrevious));
    let _ = writeln!(out, "<p class=\"{}\">{}</p>", if worse { "no" } else { "yes" }, esc(&line));
    let _ = writeln!(out, "<p class=\"muted\">{}</p>", esc(&intro));
    table(out, &t);
    out.push_str("</section>\n");
}

fn section(out: &mut String, id: &str, title: &str) {
    let _ = writeln!(out, "<section id=\"{id}\">\n<h2>{title}</h2>");
}

/// The four figures an auditor looks at first.
fn cards(out: &mut String, r: &Report, lang: Lang) {
    let critical = r.findings.iter().filter(|f| f.severity == Severity::Critical).count();
    let rto_missing = r.rto.fault_at_ms.is_some() && r.rto.total_ms.is_none();
    let cards = match &r.tabletop {
        Some(t) if r.is_tabletop() => {
            let (acknowledged, all) = model::tabletop_acknowledged(r, t);
            let total = t.recovery.total_ms;
            [
                (Msg::CardDuration, duration(drill_duration_ms(r)), false),
                (
                    Msg::CardRecoveryParticipants,
                    total.map_or_else(|| lang.t(Msg::NotReached).into(), duration),
                    total.is_none() && t.recovery.fault_step.is_some(),
                ),
                (Msg::CardStepsAcknowledged, format!("{acknowledged} / {all}"), acknowledged < all),
                (Msg::CardCritical, critical.to_string(), critical > 0),
            ]
        }
        _ => [
            (Msg::CardDuration, duration(drill_duration_ms(r)), false),
            (Msg::CardRtoTotal, r.rto.total_ms.map_or_else(|| lang.t(Msg::NotSeen).into(), duration), rto_missing),
            (Msg::CardLost, r.rpo.lost.to_string(), r.rpo.lost > 0),
            (Msg::CardCritical, critical.to_string(), critical > 0),
        ],
    };
    out.push_str("<div class=\"cards\">");
    for (title, value, bad) in cards {
        let _ = write!(
            out,
            "<div class=\"card{}\"><div class=\"t\">{}</div><div class=\"n\">{value}</div></div>",
            if bad { " bad" } else { "" },
            lang.t(title)
        );
    }
    out.push_str("</div>\n");
}

fn findings(out: &mut String, r: &Report, lang: Lang) {
    section(out, "findings", lang.t(Msg::Findings));
    if r.findings.is_empty() {
        let _ = write!(out, "<p class=\"yes\">{}</p>\n</section>\n", lang.t(Msg::NoFindings));
        return;
    }
    for (i, f) in r.findings.iter().enumerate() {
        let class = severity_class(f.severity);
        let _ = write!(
            out,
            "<div class=\"finding {class}\" id=\"f{n}\"><strong>F{n}</strong> <span class=\"pill {class}\">{}</span> <strong>{}</strong> <span class=\"muted\">{}</span>",
            severity_word(f.severity, lang),
            esc(&f.title),
            f.phase.map_or(lang.t(Msg::NoPhase), |p| phase_title(p, lang)),
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
        Cell::Badge { class, word, .. } => format!("<span class=\"pill {class}\">{word}</span>"),
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
