//! History and trend: every archived drill's RTO phases and RPO per scenario over
//! time, read from the report.json files of the drill archive, with what got
//! worse against the scenario's previous drill (the drill engine's rule, so the
//! trend and each drill's own report flag the same regressions); and an HTML
//! page with one SVG chart per scenario. Read-only: the archive is never
//! written here.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use maildr_drill::regression::{is_baseline, regressions, Figures};
use maildr_drill::report::{Rto, Verdict};
use serde::Deserialize;

use crate::model::{HistoryPoint, HistoryView, ScenarioHistory};

/// Drills read per history (the newest kept).
pub const DRILLS_MAX: usize = 2_000;

#[derive(Deserialize)]
struct Fields {
    drill_id: String,
    plan: PlanFields,
    verdict: Verdict,
    started_at_ms: u64,
    rto: Rto,
    rpo: RpoFields,
}

#[derive(Deserialize)]
struct PlanFields {
    name: String,
}

#[derive(Deserialize)]
struct RpoFields {
    acknowledged: u64,
    lost: u64,
}

/// The history of the drill archive under `drills_dir`.
pub fn read(drills_dir: &Path) -> HistoryView {
    let archive = maildr_drill::archive::Archive::new(drills_dir);
    let mut view = HistoryView::default();
    let rows = match archive.history() {
        Ok(h) => {
            view.unreadable.extend(h.skipped.iter().map(|s| format!("{}: {}", s.dir.display(), s.reason)));
            h.rows
        }
        Err(e) => {
            view.unreadable.push(e.to_string());
            return view;
        }
    };
    let mut by_scenario: BTreeMap<String, Vec<(HistoryPoint, Figures)>> = BTreeMap::new();
    // A tabletop exercise measured nothing: it is neither a point of the trend
    // nor a regression of the drill before it.
    let drills = rows.iter().filter(|r| r.mode != Some(maildr_drill::report::DrillMode::Tabletop));
    for row in drills.take(DRILLS_MAX) {
        let path = row.dir.join(maildr_drill::archive::JSON_FILE);
        let mut bytes = Vec::new();
        let read = std::fs::File::open(&path)
            .and_then(|f| f.take(maildr_drill::archive::REPORT_JSON_BYTES_MAX).read_to_end(&mut bytes));
        let fields = match read
            .map_err(|e| e.to_string())
            .and_then(|_| serde_json::from_slice::<Fields>(&bytes).map_err(|e| e.to_string()))
        {
            Ok(f) => f,
            Err(e) => {
                view.unreadable.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let figures = Figures { verdict: fields.verdict, rto: fields.rto.clone(), rpo_lost: fields.rpo.lost };
        by_scenario.entry(fields.plan.name.clone()).or_default().push((point(fields, &row.dir), figures));
    }
    for (scenario, mut runs) in by_scenario {
        runs.sort_by_key(|(p, _)| (p.started_at_ms, p.drill_id.clone()));
        // Each drill against the newest earlier one that measured something
        // (an aborted drill is compared, but is no baseline).
        let mut baseline: Option<usize> = None;
        for i in 0..runs.len() {
            if let Some(b) = baseline {
                let found = regressions(&runs[b].1, &runs[i].1);
                runs[i].0.regressions = found.iter().map(|r| r.to_string()).collect();
            }
            if is_baseline(runs[i].1.verdict, None) {
                baseline = Some(i);
            }
        }
        view.scenarios.push(ScenarioHistory { scenario, runs: runs.into_iter().map(|(p, _)| p).collect() });
    }
    view
}

fn point(f: Fields, dir: &Path) -> HistoryPoint {
    HistoryPoint {
        drill_id: f.drill_id,
        verdict: f.verdict.word().to_string(),
        started_at_ms: f.started_at_ms,
        rto_detect_ms: f.rto.detect_ms,
        rto_elect_ms: f.rto.elect_ms,
        rto_dns_committed_ms: f.rto.dns_committed_ms,
        rto_dns_served_ms: f.rto.dns_served_ms,
        rto_first_smtp_ok_ms: f.rto.first_smtp_ok_ms,
        rto_first_imap_ok_ms: f.rto.first_imap_ok_ms,
        rto_total_ms: f.rto.total_ms,
        rpo_acknowledged: f.rpo.acknowledged,
        rpo_lost: f.rpo.lost,
        regressions: Vec::new(),
        report_dir: dir.display().to_string(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The trend page: one SVG chart per scenario (total RTO and the SMTP and IMAP
/// phases per drill, a regressed drill's point in red), and a table.
pub fn trend_html(view: &HistoryView) -> String {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>maildr drill trends</title>\
         <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;\
         padding:2px 6px}.bad{color:#c00;font-weight:bold}</style></head><body>\n<h1>Drill trends</h1>\n",
    );
    if view.scenarios.is_empty() {
        html.push_str("<p>No drill archived yet.</p>\n");
    }
    for s in &view.scenarios {
        html.push_str(&format!("<h2>{}</h2>\n", escape(&s.scenario)));
        html.push_str(&chart(s));
        html.push_str(
            "<table><tr><th>drill</th><th>verdict</th><th>RTO total ms</th><th>SMTP ms</th><th>IMAP ms</th>\
                       <th>RPO lost / acknowledged</th><th>regressions</th></tr>\n",
        );
        for p in &s.runs {
            let ms = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
            html.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td class=\"{}\">{}</td></tr>\n",
                escape(&p.drill_id),
                escape(&p.verdict),
                ms(p.rto_total_ms),
                ms(p.rto_first_smtp_ok_ms),
                ms(p.rto_first_imap_ok_ms),
                p.rpo_lost,
                p.rpo_acknowledged,
                if p.regressions.is_empty() { "" } else { "bad" },
                escape(&p.regressions.join("; "))
            ));
        }
        html.push_str("</table>\n");
    }
    for u in &view.unreadable {
        html.push_str(&format!("<p>Unreadable: {}</p>\n", escape(u)));
    }
    html.push_str("</body></html>\n");
    html
}

/// One figure of a drill, for a chart line.
type Figure = fn(&HistoryPoint) -> Option<u64>;

const WIDTH: u64 = 640;
const HEIGHT: u64 = 200;
const MARGIN: u64 = 40;

fn chart(s: &ScenarioHistory) -> String {
    let series: [(&str, &str, Figure); 3] = [
        ("RTO total", "#333", |p| p.rto_total_ms),
        ("first SMTP 250", "#1f77b4", |p| p.rto_first_smtp_ok_ms),
        ("first IMAP fetch", "#2ca02c", |p| p.rto_first_imap_ok_ms),
    ];
    let max_ms = s.runs.iter().flat_map(|p| series.iter().filter_map(|(_, _, f)| f(p))).max().unwrap_or(0).max(1);
    let n = s.runs.len() as u64;
    let x =
        |i: usize| MARGIN + if n <= 1 { (WIDTH - 2 * MARGIN) / 2 } else { i as u64 * (WIDTH - 2 * MARGIN) / (n - 1) };
    let y = |ms: u64| HEIGHT - MARGIN + 10 - ms.min(max_ms) * (HEIGHT - MARGIN) / max_ms;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" \
         aria-label=\"RTO per drill of {}\">\n<text x=\"4\" y=\"14\" font-size=\"11\">{} ms</text>\n\
         <line x1=\"{MARGIN}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\n",
        escape(&s.scenario),
        max_ms,
        HEIGHT - MARGIN + 10,
        WIDTH - MARGIN,
        HEIGHT - MARGIN + 10
    );
    for (k, (name, colour, f)) in series.iter().enumerate() {
        let points: Vec<String> =
            s.runs.iter().enumerate().filter_map(|(i, p)| f(p).map(|v| format!("{},{}", x(i), y(v)))).collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n\
             <text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{colour}\">{name}</text>\n",
            points.join(" "),
            MARGIN + k as u64 * 150,
            HEIGHT - 8
        ));
    }
    for (i, p) in s.runs.iter().enumerate() {
        if let Some(v) = p.rto_total_ms {
            let (colour, r) = if p.regressions.is_empty() { ("#333", 3) } else { ("#c00", 5) };
            svg.push_str(&format!(
                "<circle cx=\"{}\" cy=\"{}\" r=\"{r}\" fill=\"{colour}\"><title>{}: {} ms{}</title></circle>\n",
                x(i),
                y(v),
                escape(&p.drill_id),
                v,
                if p.regressions.is_empty() {
                    String::new()
                } else {
                    format!(" — {}", escape(&p.regressions.join("; ")))
                }
            ));
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str, total: Option<u64>, lost: u64, verdict: &str) -> HistoryPoint {
        HistoryPoint {
            drill_id: id.into(),
            verdict: verdict.into(),
            started_at_ms: 0,
            rto_detect_ms: Some(1000),
            rto_elect_ms: None,
            rto_dns_committed_ms: None,
            rto_dns_served_ms: None,
            rto_first_smtp_ok_ms: None,
            rto_first_imap_ok_ms: None,
            rto_total_ms: total,
            rpo_acknowledged: 100,
            rpo_lost: lost,
            regressions: Vec::new(),
            report_dir: String::new(),
        }
    }

    #[test]
    fn the_trend_page_escapes_names_and_marks_regressions() {
        let mut bad = p("d2<script>", Some(20_000), 0, "passed");
        bad.regressions = vec!["rto total: 20000 ms, was 10000 ms".into()];
        let view = HistoryView {
            scenarios: vec![ScenarioHistory {
                scenario: "x&y".into(),
                runs: vec![p("d1", Some(10_000), 0, "passed"), bad],
            }],
            unreadable: Vec::new(),
        };
        let html = trend_html(&view);
        assert!(html.contains("<h2>x&amp;y</h2>"));
        assert!(!html.contains("d2<script>"));
        assert!(html.contains("fill=\"#c00\""));
        assert!(html.contains("<svg") && html.contains("<polyline"));
    }

    fn write_report(dir: &Path, id: &str, at: u64, mode: Option<&str>, verdict: &str, total_ms: Option<u64>) {
        let mut r = serde_json::json!({
            "drill_id": id, "plan": { "name": "site-outage", "sha256": "ab" }, "verdict": verdict,
            "started_at_ms": at, "finished_at_ms": at + 1,
            "rto": { "fault_at_ms": null, "detect_ms": null, "elect_ms": null, "dns_committed_ms": null,
                     "dns_served_ms": null, "first_smtp_ok_ms": null, "first_imap_ok_ms": null,
                     "total_ms": total_ms },
            "rpo": { "acknowledged": 10, "lost": 0, "deferred": 0 },
        });
        if let Some(mode) = mode {
            r["mode"] = mode.into();
        }
        let d = dir.join("reports").join(id);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("report.json"), r.to_string()).unwrap();
    }

    #[test]
    fn each_drill_is_compared_with_the_newest_earlier_one_that_was_not_aborted() {
        let dir = tempfile::tempdir().unwrap();
        write_report(dir.path(), "d1", 1_000, None, "passed", Some(10_000));
        write_report(dir.path(), "d2", 2_000, None, "aborted", None);
        write_report(dir.path(), "d3", 3_000, None, "passed", Some(25_000));
        write_report(dir.path(), "d4", 4_000, None, "passed", Some(25_100));
        let view = read(dir.path());
        assert!(view.unreadable.is_empty(), "{:?}", view.unreadable);
        let runs = &view.scenarios[0].runs;
        let found: Vec<(&str, Vec<String>)> =
            runs.iter().map(|r| (r.drill_id.as_str(), r.regressions.clone())).collect();
        assert_eq!(
            found,
            vec![
                ("d1", vec![]),
                ("d2", vec!["rto total: not reached, was 10000 ms".to_string(), "verdict: aborted, was passed".into()]),
                // Against d1, not the aborted d2 that measured nothing.
                ("d3", vec!["rto total: 25000 ms, was 10000 ms".to_string()]),
                ("d4", vec![]),
            ]
        );
    }

    #[test]
    fn a_tabletop_exercise_is_neither_a_point_nor_a_regression() {
        let dir = tempfile::tempdir().unwrap();
        let report = |id: &str, at: u64, mode: Option<&str>| {
            write_report(dir.path(), id, at, mode, "passed", if mode.is_some() { None } else { Some(9_000) });
        };
        report("d1", 1_000, None);
        report("t2", 2_000, Some("tabletop"));
        let view = read(dir.path());
        assert!(view.unreadable.is_empty(), "{:?}", view.unreadable);
        let runs = &view.scenarios[0].runs;
        assert_eq!(runs.iter().map(|r| r.drill_id.as_str()).collect::<Vec<_>>(), ["d1"]);
        report("d3", 3_000, None);
        let view = read(dir.path());
        let runs = &view.scenarios[0].runs;
        assert_eq!(runs.len(), 2);
        assert!(runs[1].regressions.is_empty(), "compared with d1, not the tabletop: {:?}", runs[1].regressions);
    }
}
