//! The report views and the archive, through the public API: the Markdown and
//! HTML renderings of a realistic site-outage report, their escaping and size,
//! the edge cases (no samples, one sample, nothing measured), and the archive's
//! write-once directories and history.
//!
//! `MAILDR_DRILL_SAMPLE_HTML=/tmp/r.html cargo test -p maildr-drill --test
//! report_files` also writes the sample report's HTML there, to look at (and
//! its Chinese rendering beside it, `r.zh.html`).

use std::collections::HashSet;
use std::fs;

use maildr_drill::archive::{self, write_report_files, Archive, ArchiveError};
use maildr_drill::plan::Phase;
use maildr_drill::render::{self, Lang};
use maildr_drill::report::*;

const T0: u64 = 1_740_830_400_000; // 2025-03-01 12:00:00 UTC
const FAULT: u64 = T0 + 10_000;
const RESTORE: u64 = T0 + 60_000;

fn step(index: usize, phase: Phase, name: &str, at: u64, took: u64) -> StepResult {
    StepResult {
        index,
        phase,
        name: name.into(),
        description: format!("does {name}"),
        rollback: false,
        started_at_ms: Some(at),
        finished_at_ms: Some(at + took),
        outcome: StepOutcome::Done,
        detail: String::new(),
    }
}

fn entry(at_ms: u64, phase: Option<Phase>, source: Source, kind: &str, detail: &str) -> TimelineEntry {
    TimelineEntry { at_ms, phase, source, kind: kind.into(), detail: detail.into() }
}

/// What a probe of `protocol` at `target` saw at `t` in the sample outage.
fn outcome_at(protocol: Protocol, target: &str, t: u64) -> ProbeOutcome {
    let down = (FAULT..RESTORE).contains(&t);
    match (protocol, target) {
        (Protocol::Dns, "bj") if down => ProbeOutcome::Unreachable,
        (Protocol::Dns, _) => ProbeOutcome::Ok,
        (Protocol::Smtp | Protocol::Submission, _) if (FAULT..FAULT + 2_500).contains(&t) => ProbeOutcome::Timeout,
        (Protocol::Smtp | Protocol::Submission, _) if (FAULT + 2_500..FAULT + 5_100).contains(&t) => {
            ProbeOutcome::Deferred
        }
        (Protocol::Imap, _) if (FAULT..FAULT + 4_200).contains(&t) => ProbeOutcome::Unreachable,
        _ => ProbeOutcome::Ok,
    }
}

/// A site-outage drill of 90 s: bj killed at +10 s, sh takes over, bj restored
/// at +60 s, with `samples` probe samples spread over the four protocols.
fn sample_report(samples: usize) -> Report {
    let lanes: [(Protocol, &str); 5] = [
        (Protocol::Smtp, ""),
        (Protocol::Submission, ""),
        (Protocol::Imap, ""),
        (Protocol::Dns, "bj"),
        (Protocol::Dns, "sh"),
    ];
    let per_lane = samples / lanes.len();
    let mut probe_samples: Vec<ProbeSample> = Vec::with_capacity(samples);
    for (lane, (protocol, fixed_target)) in lanes.iter().enumerate() {
        let interval = 90_000 / per_lane.max(1) as u64;
        for i in 0..per_lane {
            let t = T0 + i as u64 * interval + lane as u64 * 7;
            let target = if fixed_target.is_empty() {
                if t < FAULT {
                    "bj"
                } else {
                    "sh"
                }
            } else {
                fixed_target
            };
            let outcome = outcome_at(*protocol, target, t);
            probe_samples.push(ProbeSample {
                at_ms: t,
                protocol: *protocol,
                target: target.into(),
                outcome,
                latency_ms: 3 + (i as u64 % 17),
                lookup_ms: None,
                detail: if outcome == ProbeOutcome::Deferred { "451 4.3.0 no quorum".into() } else { String::new() },
            });
        }
    }
    let extra = samples - probe_samples.len();
    for i in 0..extra {
        probe_samples.push(ProbeSample {
            at_ms: T0 + 85_000 + i as u64,
            protocol: Protocol::Smtp,
            target: "sh".into(),
            outcome: ProbeOutcome::Ok,
            latency_ms: 4,
            lookup_ms: None,
            detail: String::new(),
        });
    }
    let count = |p: Protocol| {
        let of: Vec<&ProbeSample> = probe_samples.iter().filter(|s| s.protocol == p).collect();
        let ok = of.iter().filter(|s| s.outcome.is_ok()).count() as u64;
        ProbeCount { protocol: p, ok, failed: of.len() as u64 - ok, p50_ms: Some(9), p99_ms: Some(19) }
    };
    let mut steps = vec![
        step(1, Phase::Confirm, "owners told", T0 + 1_000, 2_000),
        step(2, Phase::Decide, "primary site dies", FAULT, 40),
        step(3, Phase::Decide, "a new primary is elected", FAULT + 40, 2_460),
        step(4, Phase::Prepare, "survivors in sync", FAULT + 2_500, 500),
        step(5, Phase::Dns, "DNS follows the primary", FAULT + 3_000, 400),
        step(6, Phase::Verify, "mail flows", FAULT + 3_400, 1_700),
        step(7, Phase::Verify, "no acknowledged loss", FAULT + 5_200, 800),
        step(8, Phase::Review, "restore bj", RESTORE, 3_000),
        step(9, Phase::Review, "fail back", T0 + 70_000, 8_000),
        step(10, Phase::Review, "every site healthy", T0 + 78_000, 4_000),
    ];
    steps[6].outcome = StepOutcome::Failed;
    steps[6].detail = "2 messages missing on sh".into();
    steps[8].rollback = true;
    Report {
        drill_id: "20250301T120000Z-site-outage".into(),
        plan: PlanInfo {
            name: "site-outage".into(),
            description: "The whole primary site goes down, DNS included; sh takes over; bj is restored and fails back.".into(),
            origin: "scenarios/site-outage.toml".into(),
            sha256: "9f2c4e1d7a3b5c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d".into(),
        },
        verdict: Verdict::Failed,
        abort_reason: None,
        started_at_ms: T0,
        finished_at_ms: T0 + 90_000,
        objectives: vec![
            ObjectiveResult { name: "rto_smtp_ms".into(), target: 30_000, measured: Some(5_100), unit: "ms".into(), met: true },
            ObjectiveResult { name: "rto_imap_ms".into(), target: 4_000, measured: Some(4_200), unit: "ms".into(), met: false },
            ObjectiveResult { name: "rto_total_ms".into(), target: 60_000, measured: Some(5_100), unit: "ms".into(), met: true },
            ObjectiveResult { name: "rpo_messages".into(), target: 0, measured: Some(2), unit: "messages".into(), met: false },
        ],
        rto: Rto {
            fault_at_ms: Some(FAULT),
            detect_ms: Some(1_210),
            elect_ms: Some(2_480),
            dns_committed_ms: Some(3_020),
            dns_served_ms: Some(3_390),
            first_smtp_ok_ms: Some(5_100),
            first_imap_ok_ms: Some(4_200),
            total_ms: Some(5_100),
        },
        rpo: Rpo {
            acknowledged: 412,
            found: 410,
            lost: 2,
            duplicated: 0,
            deferred: 13,
            refused: 0,
            given_up: 0,
            lost_tags: vec!["drill-7f3a-0193".into(), "drill-7f3a-0194".into()],
            reconciled_at: vec!["bj".into(), "sh".into()],
            missing_during_outage: Some(2),
        },
        gaps: vec![
            ServiceGap { protocol: Protocol::Smtp, longest_ms: 5_300, from_at_ms: Some(FAULT - 200), to_at_ms: Some(FAULT + 5_100) },
            ServiceGap { protocol: Protocol::Imap, longest_ms: 4_400, from_at_ms: Some(FAULT - 200), to_at_ms: Some(FAULT + 4_200) },
            ServiceGap { protocol: Protocol::Dns, longest_ms: 0, from_at_ms: None, to_at_ms: None },
        ],
        steps,
        timeline: vec![
            entry(T0, None, Source::Drill, "started", "steady state checked"),
            entry(FAULT, Some(Phase::Decide), Source::Drill, "fault", "kill site bj"),
            entry(FAULT + 300, None, Source::Probe, "smtp_down", "first failure through the MX"),
            entry(FAULT + 1_210, None, Source::Cluster, "detected", "witness judged bj down"),
            entry(FAULT + 2_480, None, Source::Cluster, "elected", "sh is primary (term 4)"),
            entry(FAULT + 3_020, None, Source::Cluster, "dns_committed", "zone serial 2025030102"),
            entry(FAULT + 3_390, None, Source::Cluster, "dns_served", "sh answers mail. A 127.83.20.1"),
            entry(FAULT + 5_100, None, Source::Probe, "smtp_up", "250 2.0.0 queued as 7f3a"),
            entry(RESTORE, Some(Phase::Review), Source::Drill, "restore", "restore bj"),
        ],
        probes: ProbeSummary { counts: Protocol::ALL.iter().map(|&p| count(p)).collect(), samples: probe_samples },
        findings: vec![
            Finding {
                severity: Severity::Critical,
                phase: Some(Phase::Verify),
                title: "2 acknowledged messages are missing after the failover".into(),
                evidence: "drill-7f3a-0193: 250 from bj at +00:09.850, not on sh\ndrill-7f3a-0194: 250 from bj at +00:09.910, not on sh".into(),
            },
            Finding {
                severity: Severity::Critical,
                phase: None,
                title: "IMAP came back after 4.200 s, objective 4.000 s".into(),
                evidence: "first IMAP fetch via mail. at +00:14.200".into(),
            },
            Finding { severity: Severity::Warning, phase: Some(Phase::Dns), title: "bj's DNS stayed down until restore".into(), evidence: String::new() },
        ],
        approvals: vec![Approval { by: "Li Wei".into(), at_ms: T0 - 86_400_000, plan_sha256: "9f2c4e1d".into() }],
        confirmations: vec!["1: owners told — confirmed by Li Wei".into()],
        environment: Environment {
            target: "lab".into(),
            target_location: "/var/lib/maildr/lab".into(),
            domain: "example.test".into(),
            sites: vec![
                SiteInfo { name: "bj".into(), role: "primary".into(), address: "127.83.10.1".into() },
                SiteInfo { name: "sh".into(), role: "secondary".into(), address: "127.83.20.1".into() },
                SiteInfo { name: "gz".into(), role: "witness".into(), address: "127.83.30.1".into() },
            ],
            maildr_version: "0.1.0".into(),
            host: "drill-host".into(),
            os: "linux x86_64".into(),
        },
        load: None,
        outbound_queue: None,
        mode: None,
        tabletop: None,
        regressions: None,
    }
}

/// A report in which nothing was measured: no fault, no sample, no objective.
fn empty_report() -> Report {
    let mut r = sample_report(0);
    r.verdict = Verdict::Aborted;
    r.abort_reason = Some("steady state not reached within 60 s".into());
    r.finished_at_ms = r.started_at_ms;
    r.objectives.clear();
    r.rto = Rto::default();
    r.rpo = Rpo::default();
    r.gaps.clear();
    r.timeline.clear();
    r.probes = ProbeSummary::default();
    r.findings.clear();
    r.approvals.clear();
    r.confirmations.clear();
    for s in &mut r.steps {
        s.outcome = StepOutcome::Skipped;
        s.started_at_ms = None;
        s.finished_at_ms = None;
    }
    r
}

/// Checks that every element the renderer opens is closed in order (void
/// elements excepted), every attribute quote is closed, and `<style>` holds no
/// markup. Returns the element names seen.
fn check_balanced(html: &str) -> HashSet<String> {
    const VOID: [&str; 4] = ["meta", "br", "link", "hr"];
    let mut stack: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut rest = html;
    while let Some(open) = rest.find('<') {
        rest = &rest[open + 1..];
        if rest.starts_with("!DOCTYPE") {
            continue;
        }
        let close = rest.find('>').expect("a tag is closed");
        let tag = &rest[..close];
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in <{tag}>");
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let top = stack.pop().unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(top, name, "</{name}> closes <{top}>");
            continue;
        }
        let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        assert!(!name.is_empty(), "a stray '<' in the markup: <{tag}>");
        seen.insert(name.clone());
        if tag.ends_with('/') || VOID.contains(&name.as_str()) {
            continue;
        }
        if name == "style" {
            let end = rest.find("</style>").expect("style is closed");
            assert!(!rest[..end].contains('<'), "markup inside <style>");
            rest = &rest[end + "</style>".len()..];
            continue;
        }
        stack.push(name);
    }
    assert!(stack.is_empty(), "never closed: {stack:?}");
    seen
}

#[test]
fn both_views_walk_the_six_runbook_phases_in_order() {
    let r = sample_report(500);
    for view in [render::markdown(&r, Lang::En), render::html(&r, Lang::En)] {
        let mut from = 0;
        for phase in Phase::ALL {
            let at =
                view[from..].find(phase.title()).unwrap_or_else(|| panic!("{} missing or out of order", phase.title()));
            from += at + phase.title().len();
        }
        // Each section holds its steps and events: the election (a cluster event
        // with no phase of its own) is under phase 2, where the wait step was
        // running; the restore under phase 6.
        let decide = view.find(Phase::Decide.title()).unwrap();
        let prepare = view.find(Phase::Prepare.title()).unwrap();
        let review = view.find(Phase::Review.title()).unwrap();
        let elected = view.rfind("sh is primary (term 4)").unwrap();
        assert!(decide < elected && elected < prepare, "the election is listed under phase 2");
        assert!(view.rfind("restore bj").unwrap() > review);
    }
}

#[test]
fn the_summary_shows_the_verdict_plan_measurements_and_findings() {
    let r = sample_report(500);
    let md = render::markdown(&r, Lang::En);
    let html = render::html(&r, Lang::En);
    for view in [&md, &html] {
        for needle in [
            "FAILED",
            "9f2c4e1d7a3b5c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d",
            "20250301T120000Z-site-outage",
            "2025-03-01 12:00:00.000 UTC",
            "2025-03-01 12:01:30.000 UTC",
            "1 min 30 s",
            "1.210 s",
            "DNS served",
            "3.390 s",
            "First IMAP fetch",
            "4.200 s",
            "drill-7f3a-0193",
            "2 acknowledged messages are missing after the failover",
            "250 from bj at +00:09.850, not on sh",
            "Li Wei",
            "owners told — confirmed by Li Wei",
            "127.83.30.1",
        ] {
            assert!(view.contains(needle), "missing {needle:?}");
        }
    }
    // The missed objective says so in both views.
    assert!(md.contains("| `rto_imap_ms` | 4 s | 4.200 s | **missed** |"), "{md}");
    assert!(html.contains("<td><code>rto_imap_ms</code></td><td class=\"num\">4 s</td><td class=\"num\">4.200 s</td><td><span class=\"no\">missed</span></td>"));
    assert!(html.contains("<header class=\"banner failed\">"));
}

/// The sample report with markup, quotes, pipes, backticks and a control
/// character in every string a plan, a target or an operator can set.
fn hostile_report() -> Report {
    let mut r = sample_report(50);
    let evil = EVIL;
    r.plan.name = evil.into();
    r.plan.description = evil.into();
    r.plan.origin = evil.into();
    r.drill_id = evil.into();
    r.abort_reason = Some(evil.into());
    r.steps[0].name = evil.into();
    r.steps[0].detail = evil.into();
    r.timeline[1].detail = evil.into();
    r.timeline[1].kind = evil.into();
    r.findings[0].evidence = format!("{evil}\n```\nnot closed");
    r.findings[0].title = evil.into();
    r.probes.samples[0].target = evil.into();
    r.environment.sites[0].name = evil.into();
    r.approvals[0].by = evil.into();
    r.confirmations[0] = evil.into();
    r.objectives[0].name = evil.into();
    r.rpo.lost_tags[0] = evil.into();
    r
}

const EVIL: &str = "<script>alert('x')</script> & \"co\" | `x` \u{7}";

#[test]
fn every_report_string_is_escaped_in_both_views() {
    let r = hostile_report();
    let html = render::html(&r, Lang::En);
    assert!(!html.to_lowercase().contains("<script"), "raw <script> in the HTML");
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;co&quot;"));
    assert!(!html.contains('\u{7}'), "a control character reached the HTML");
    check_balanced(&html);

    let md = render::markdown(&r, Lang::En);
    // Outside fenced evidence blocks (which no viewer interprets), nothing is raw.
    let mut in_fence = false;
    for line in md.lines() {
        if line.starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            let raw = line.char_indices().any(|(i, c)| c == '<' && !line[..i].ends_with('\\'));
            assert!(!raw, "an unescaped '<' in the Markdown: {line}");
        }
    }
    assert!(md.contains("\\<script\\>"));
    assert!(md.contains("\\&"));
    // The evidence's own fence cannot end the block it is printed in.
    assert!(md.contains("````text\n"), "the fence outgrows the evidence's backticks");
    // Table rows keep their column count whatever the strings hold.
    for line in md.lines().filter(|l| l.starts_with("| 1 |")) {
        let cells = line.replace("\\|", "").matches('|').count();
        assert_eq!(cells, 7, "{line}");
    }
}

#[test]
fn the_html_is_one_self_contained_page_without_scripts() {
    let html = render::html(&sample_report(2_000), Lang::En);
    assert!(html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    assert!(html.contains("<meta charset=\"utf-8\">"));
    for forbidden in ["<script", "<link", "src=", "@import", "url(", "href=\"http"] {
        assert!(!html.contains(forbidden), "{forbidden} in the page");
    }
    let elements = check_balanced(&html);
    for needed in ["style", "svg", "rect", "line", "table"] {
        assert!(elements.contains(needed), "no <{needed}>");
    }
    assert_eq!(html.matches("<svg").count(), 2, "the RTO chart and the probe chart");
}

#[test]
fn the_charts_show_phases_targets_lanes_outcomes_and_faults() {
    let html = render::html(&sample_report(2_000), Lang::En);
    let rto = &html[html.find("rto-chart-title").unwrap()..];
    let rto = &rto[..rto.find("</svg>").unwrap()];
    for label in ["Detect", "Elect", "DNS committed", "DNS served", "First SMTP 250", "First IMAP fetch", "Total"] {
        assert!(rto.contains(&format!(">{label}</text>")), "no row {label}");
    }
    assert_eq!(rto.matches("objective rto_").count(), 3, "a dashed line per RTO objective");
    assert!(rto.contains("4.200 s (target 4 s)"));

    let probes = &html[html.find("probe-chart-title").unwrap()..];
    let probes = &probes[..probes.find("</svg>").unwrap()];
    for lane in ["smtp", "submission", "imap", "dns"] {
        assert!(probes.contains(&format!("class=\"label strong\">{lane}</text>")), "no lane {lane}");
    }
    for colour in ["#2da44e", "#d4a72c", "#cf222e"] {
        assert!(probes.contains(&format!("fill=\"{colour}\"><title>")), "no mark coloured {colour}");
    }
    assert!(probes.contains("<title>fault at +00:10.000: kill site bj</title>"));
    assert!(probes.contains("<title>restore at +01:00.000: restore bj</title>"));
    // bj's DNS was unreachable from the fault to the restore: one merged red run.
    let outage: Vec<&str> = probes
        .split("<title>dns bj: ")
        .skip(1)
        .map(|t| &t[..t.find("</title>").unwrap()])
        .filter(|t| t.contains("unreachable"))
        .collect();
    assert_eq!(outage.len(), 1, "{probes}");
    assert!(outage[0].contains(", +00:10.") && outage[0].contains(" to +01:00."), "{}", outage[0]);
}

#[test]
fn five_thousand_samples_make_a_page_of_reasonable_size() {
    let html = render::html(&sample_report(5_000), Lang::En);
    assert!(html.len() < 120_000, "{} bytes", html.len());
    // Even when every sample differs from the one before, the chart is bounded
    // by its width, not by the number of samples.
    let mut r = sample_report(5_000);
    for (i, s) in r.probes.samples.iter_mut().enumerate() {
        s.outcome = if i % 2 == 0 { ProbeOutcome::Ok } else { ProbeOutcome::Timeout };
    }
    let flicker = render::html(&r, Lang::En);
    assert!(flicker.len() < 400_000, "{} bytes", flicker.len());
    check_balanced(&flicker);
}

#[test]
fn a_drill_with_nothing_measured_still_renders() {
    let r = empty_report();
    let html = render::html(&r, Lang::En);
    check_balanced(&html);
    assert!(html.contains("ABORTED"));
    assert!(html.contains("steady state not reached within 60 s"));
    assert!(html.contains("no samples"));
    assert_eq!(html.matches("not seen").count(), 7 + 7 + 1, "chart rows, table rows and the RTO card");
    assert!(!html.contains("NaN") && !html.contains("inf"), "a division by zero reached the page");
    let md = render::markdown(&r, Lang::En);
    assert!(md.contains("No fault was injected"));
    assert!(md.contains("| Total | not seen |  |"));
    assert!(md.contains("No probe ran."));
}

#[test]
fn a_single_sample_and_a_sample_before_the_start_are_drawn() {
    let mut r = empty_report();
    r.probes.samples.push(ProbeSample {
        at_ms: r.started_at_ms,
        protocol: Protocol::Imap,
        target: "sh".into(),
        outcome: ProbeOutcome::Refused,
        latency_ms: 2,
        lookup_ms: None,
        detail: "NO".into(),
    });
    let html = render::html(&r, Lang::En);
    assert!(html.contains("<title>imap sh: 1 refused, +00:00.000 to"), "one red mark");
    r.probes.samples[0].at_ms = r.started_at_ms - 5_000;
    r.rto.fault_at_ms = Some(r.started_at_ms);
    r.rto.detect_ms = Some(0);
    let html = render::html(&r, Lang::En);
    assert!(html.contains("imap sh: 1 refused, -00:05.000 to"));
    assert!(!html.contains("NaN"));
    check_balanced(&html);
}

#[test]
fn write_sample_html_when_asked() {
    let Some(path) = std::env::var_os("MAILDR_DRILL_SAMPLE_HTML") else { return };
    fs::write(&path, render::html(&sample_report(2_000), Lang::En)).unwrap();
    let path = std::path::Path::new(&path);
    fs::write(path.with_extension("md"), render::markdown(&sample_report(2_000), Lang::En)).unwrap();
    fs::write(path.with_extension("hostile.html"), render::html(&hostile_report(), Lang::En)).unwrap();
    fs::write(path.with_extension("zh.html"), render::html(&sample_report(2_000), Lang::Zh)).unwrap();
    fs::write(path.with_extension("zh.md"), render::markdown(&sample_report(2_000), Lang::Zh)).unwrap();
}

// -------------------------------------------------------------------- archive

fn report_started(id: &str, started_at_ms: u64) -> Report {
    let mut r = sample_report(40);
    r.drill_id = id.into();
    r.started_at_ms = started_at_ms;
    r.finished_at_ms = started_at_ms + 90_000;
    r
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn saving_writes_the_three_files_and_the_digest_of_report_json() {
    let data = tempfile::tempdir().unwrap();
    let archive = Archive::new(data.path());
    let report = sample_report(300);
    let saved = archive.save(&report, Lang::En).unwrap();
    assert_eq!(saved.dir, data.path().join("reports").join("20250301T120000Z-site-outage"));
    let json = fs::read(saved.dir.join("report.json")).unwrap();
    assert_eq!(saved.json_sha256, sha256_hex(&json));
    let back: Report = serde_json::from_slice(&json).unwrap();
    assert_eq!(back, report, "report.json is the report");
    assert_eq!(archive.load(&report.drill_id).unwrap(), report);
    assert_eq!(fs::read_to_string(saved.dir.join("report.html")).unwrap(), render::html(&report, Lang::En));
    assert_eq!(fs::read_to_string(saved.dir.join("report.md")).unwrap(), render::markdown(&report, Lang::En));
    let names: Vec<String> =
        fs::read_dir(&saved.dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 3, "no temporary file left behind: {names:?}");
}

#[test]
fn an_archived_drill_is_never_replaced() {
    let data = tempfile::tempdir().unwrap();
    let archive = Archive::new(data.path());
    let report = sample_report(10);
    let first = archive.save(&report, Lang::En).unwrap();
    let mut changed = report.clone();
    changed.verdict = Verdict::Passed;
    let err = archive.save(&changed, Lang::En).unwrap_err();
    assert!(matches!(err, ArchiveError::AlreadyArchived { .. }), "{err}");
    assert_eq!(sha256_hex(&fs::read(first.dir.join("report.json")).unwrap()), first.json_sha256);

    // Another id that maps to the same directory name is told apart.
    let mut other = report.clone();
    other.drill_id = "20250301T120000Z site/outage".into();
    assert_eq!(archive.dir_for(&other.drill_id).unwrap(), first.dir);
    let err = archive.save(&other, Lang::En).unwrap_err();
    assert!(matches!(err, ArchiveError::Collision { .. }), "{err}");

    // A save that died before report.json was renamed into place is completed.
    let mut interrupted = report.clone();
    interrupted.drill_id = "20250302T000000Z-site-outage".into();
    let dir = archive.dir_for(&interrupted.drill_id).unwrap();
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("report.md"), "partial").unwrap();
    archive.save(&interrupted, Lang::En).unwrap();
    assert_eq!(archive.load(&interrupted.drill_id).unwrap(), interrupted);

    for bad in ["", "../..", "/"] {
        let mut r = report.clone();
        r.drill_id = bad.into();
        assert!(matches!(archive.save(&r, Lang::En), Err(ArchiveError::BadDrillId(_))), "{bad:?}");
    }
}

#[test]
fn history_lists_drills_newest_first_and_names_what_it_skipped() {
    let data = tempfile::tempdir().unwrap();
    let archive = Archive::new(data.path());
    assert_eq!(archive.history().unwrap(), archive::History::default(), "no archive yet");

    let mut a = report_started("a-site-outage", T0);
    a.verdict = Verdict::Passed;
    a.rpo.lost = 0;
    let b = report_started("b-site-outage", T0 + 86_400_000);
    let mut c = report_started("c-partition", T0 + 3_600_000);
    c.plan.name = "partition".into();
    c.rto.total_ms = None;
    for r in [&a, &b, &c] {
        archive.save(r, Lang::En).unwrap();
    }
    let reports = archive.reports_dir();
    fs::create_dir_all(reports.join("broken")).unwrap();
    fs::write(reports.join("broken/report.json"), "{ not json").unwrap();
    fs::create_dir_all(reports.join("interrupted")).unwrap();
    fs::write(reports.join("stray.txt"), "x").unwrap();
    fs::create_dir_all(reports.join(".tmp-something")).unwrap();

    let history = archive.history().unwrap();
    let ids: Vec<&str> = history.rows.iter().map(|r| r.drill_id.as_str()).collect();
    assert_eq!(ids, ["b-site-outage", "c-partition", "a-site-outage"]);
    let c_row = &history.rows[1];
    assert_eq!(c_row.plan_name, "partition");
    assert_eq!((c_row.verdict, c_row.rto_total_ms, c_row.rpo_lost, c_row.deferred), (Verdict::Failed, None, 2, 13));
    assert_eq!(history.rows[2].verdict, Verdict::Passed);
    assert_eq!(history.rows[0].rto_total_ms, Some(5_100));

    let skipped: Vec<(String, &str)> = history
        .skipped
        .iter()
        .map(|s| (s.dir.file_name().unwrap().to_string_lossy().into_owned(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:?}");
    assert!(skipped[0].0 == "broken" && skipped[0].1.contains("not a drill report"), "{skipped:?}");
    assert!(skipped[1].0 == "interrupted" && skipped[1].1.contains("no report.json"), "{skipped:?}");
    assert!(skipped[2].0 == "stray.txt" && skipped[2].1.contains("not a directory"), "{skipped:?}");
}

#[test]
fn report_files_can_be_written_to_any_directory_and_rewritten() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("my/report/dir");
    let report = sample_report(20);
    let first = write_report_files(&report, &dir, Lang::En).unwrap();
    let mut again = report.clone();
    again.verdict = Verdict::Passed;
    let second = write_report_files(&again, &dir, Lang::En).unwrap();
    assert_ne!(first.json_sha256, second.json_sha256);
    assert_eq!(second.json, dir.join("report.json"));
    let back: Report = serde_json::from_slice(&fs::read(&second.json).unwrap()).unwrap();
    assert_eq!(back.verdict, Verdict::Passed);
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 3);
}

#[test]
fn extreme_times_render_without_panicking() {
    for (start, finish) in [(0, u64::MAX), (u64::MAX, 0), (u64::MAX, u64::MAX), (T0, T0 - 1)] {
        let mut r = sample_report(20);
        r.started_at_ms = start;
        r.finished_at_ms = finish;
        r.probes.samples[0].at_ms = 0;
        r.probes.samples[1].at_ms = u64::MAX;
        r.rto.fault_at_ms = Some(u64::MAX);
        r.rto.detect_ms = Some(u64::MAX);
        r.rto.total_ms = Some(u64::MAX - 1);
        r.objectives[0].target = u64::MAX;
        r.timeline[1].at_ms = u64::MAX;
        r.timeline[2].at_ms = 0;
        r.steps[0].started_at_ms = Some(u64::MAX);
        r.gaps[0].longest_ms = u64::MAX;
        let html = render::html(&r, Lang::En);
        check_balanced(&html);
        assert!(!html.contains("NaN"));
        assert!(!render::markdown(&r, Lang::En).is_empty());
    }
}

// ------------------------------------------------------------------ languages

/// The runbook phases as the Chinese report names them.
const PHASES_ZH: [&str; 6] = [
    "1. 事件确认与通知",
    "2. 决策与启动切换",
    "3. 资源准备与同步",
    "4. DNS 切换",
    "5. 服务验证与用户通知",
    "6. 复盘与归档",
];

/// Words the English views print that are not report data.
const ENGLISH_WORDS: [&str; 28] = [
    "Drill report",
    "Verdict",
    "Summary",
    "Objectives",
    "Recovery time (RTO)",
    "Recovery point (RPO)",
    "Service seen by clients",
    "Longest gap per protocol",
    "Findings",
    "Runbook phases",
    "Approvals and confirmations",
    "Environment",
    "Before the first step",
    "Event confirmation",
    "Plan SHA-256",
    "Drill id",
    "After the fault",
    "Acknowledged",
    "Given up",
    "Approved by",
    "maildr version",
    "First SMTP 250",
    "DNS committed",
    "Reconciled over IMAP",
    "Dashed lines",
    "probe samples",
    "refused, timeout, unreachable",
    "machine-readable",
];

#[test]
fn one_report_json_renders_in_chinese_and_in_english() {
    let report = sample_report(500);
    let out = tempfile::tempdir().unwrap();
    let zh = write_report_files(&report, &out.path().join("zh"), Lang::Zh).unwrap();
    let en = write_report_files(&report, &out.path().join("en"), Lang::En).unwrap();

    // The record is language-neutral: the same bytes, the same model.
    let (zh_json, en_json) = (fs::read(&zh.json).unwrap(), fs::read(&en.json).unwrap());
    assert_eq!(zh_json, en_json, "report.json does not depend on the language");
    assert_eq!(zh.json_sha256, en.json_sha256);
    let back: Report = serde_json::from_slice(&zh_json).unwrap();
    assert_eq!(back, report);
    let model: serde_json::Value = serde_json::from_slice(&zh_json).unwrap();
    assert!(!serde_json::to_string(&model).unwrap().contains("lang"), "report.json names no language");

    let zh_html = fs::read_to_string(&zh.html).unwrap();
    let en_html = fs::read_to_string(&en.html).unwrap();
    assert!(zh_html.starts_with("<!DOCTYPE html>\n<html lang=\"zh-CN\">"));
    assert!(en_html.starts_with("<!DOCTYPE html>\n<html lang=\"en\">"));
    for heading in
        ["概要", "目标", "恢复时间 (RTO)", "恢复点 (RPO)", "客户端看到的服务", "发现", "预案阶段", "审批与确认", "环境"]
    {
        assert!(zh_html.contains(&format!("<h2>{heading}</h2>")), "no Chinese heading {heading}");
    }
    for heading in
        ["Summary", "Objectives", "Recovery time (RTO)", "Recovery point (RPO)", "Findings", "Runbook phases"]
    {
        assert!(en_html.contains(&format!("<h2>{heading}</h2>")), "no English heading {heading}");
    }
    assert!(zh_html.contains("<h1>演练报告：site-outage</h1>"));
    assert!(zh_html.contains("<div class=\"verdict\">未通过<small>有目标未达成或检查未通过</small>"));
    // The style classes stay the same whatever the words.
    assert!(zh_html.contains("<header class=\"banner failed\">"));
    assert!(zh_html.contains("<span class=\"pill critical\">严重</span>"));
    assert!(zh_html.contains("<span class=\"pill done\">完成</span>"));
    assert!(zh_html.contains("<td><span class=\"no\">未达成</span></td>"));
    let zh_md = fs::read_to_string(&zh.markdown).unwrap();
    let en_md = fs::read_to_string(&en.markdown).unwrap();
    for word in ENGLISH_WORDS {
        assert!(en_html.contains(word) || en_md.contains(word), "no English view has {word:?} (the list is stale)");
        assert!(!zh_html.contains(word), "English {word:?} in the Chinese page");
        assert!(!zh_md.contains(word), "English {word:?} in the Chinese Markdown");
    }
    assert!(zh_md.starts_with("# 演练报告：site-outage\n"));
    check_balanced(&zh_html);
}

#[test]
fn report_data_dates_and_durations_are_the_same_in_both_languages() {
    let r = sample_report(500);
    for lang in Lang::ALL {
        for view in [render::markdown(&r, lang), render::html(&r, lang)] {
            for data in [
                "site-outage",
                "scenarios/site-outage.toml",
                "2 acknowledged messages are missing after the failover",
                "250 from bj at +00:09.850, not on sh",
                "drill-7f3a-0193",
                "sh is primary (term 4)",
                "Li Wei",
                "127.83.30.1",
                "2025-03-01 12:00:00.000 UTC",
                "1 min 30 s",
                "1.210 s",
                "+00:10.000",
                "rto_imap_ms",
            ] {
                assert!(view.contains(data), "{lang}: {data:?} missing");
            }
        }
    }
}

#[test]
fn both_chinese_views_walk_the_six_runbook_phases_in_order() {
    let r = sample_report(500);
    for view in [render::markdown(&r, Lang::Zh), render::html(&r, Lang::Zh)] {
        let mut from = 0;
        for title in PHASES_ZH {
            let at = view[from..].find(title).unwrap_or_else(|| panic!("{title} missing or out of order"));
            from += at + title.len();
        }
        assert!(!view.contains(Phase::Decide.title()), "an English phase title in the Chinese view");
    }
}

#[test]
fn the_chinese_markdown_has_chinese_headings_and_escaped_data() {
    let md = render::markdown(&hostile_report(), Lang::Zh);
    assert!(md.starts_with("# 演练报告：\\<script\\>"), "{}", &md[..80]);
    assert!(md.contains("## 结论：**未通过**，有目标未达成或检查未通过"));
    for heading in ["## 目标", "## 恢复时间 (RTO)", "## 发现", "## 预案阶段", "### 各协议最长中断", "## 环境"]
    {
        assert!(md.lines().any(|l| l == heading), "no {heading}");
    }
    assert!(md.contains("| `rto_imap_ms` | 4 s | 4.200 s | **未达成** |"));
    assert!(md.contains("| 0 封邮件 | 2 封邮件 | **未达成** |"), "the unit of an RPO objective is a word too");
    assert!(md.contains("\\<script\\>"));
}

#[test]
fn the_chinese_charts_have_chinese_titles_labels_and_legends() {
    let html = render::html(&sample_report(2_000), Lang::Zh);
    let rto = &html[html.find("rto-chart-title").unwrap()..];
    let rto = &rto[..rto.find("</svg>").unwrap()];
    assert!(rto.contains(">恢复时间：各阶段在故障后的毫秒数</title>"));
    for label in
        ["检测到故障", "选出新主站点", "DNS 变更已提交", "DNS 已生效", "首次 SMTP 250", "首次 IMAP 读取", "合计"]
    {
        assert!(rto.contains(&format!(">{label}</text>")), "no row {label}");
    }
    assert!(rto.contains("4.200 s（目标 4 s）"));
    assert!(rto.contains(">故障</text>"));
    let probes = &html[html.find("probe-chart-title").unwrap()..];
    let probes = &probes[..probes.find("</svg>").unwrap()];
    assert!(probes.contains(">演练期间的探测结果，每个协议一条泳道</title>"));
    assert!(probes.contains("<title>fault 于 +00:10.000：kill site bj</title>"), "event kinds are data");
    assert!(probes.contains("class=\"marker\" fill=\"#cf222e\">故障</text>"), "the fault line is labelled in Chinese");
    assert!(probes.contains("class=\"marker\" fill=\"#2da44e\">恢复</text>"));
    for legend in ["成功", "延迟 (4xx)", "拒绝、超时、不可达", "故障", "恢复"] {
        assert!(probes.contains(&format!("text-anchor=\"start\">{legend}</text>")), "no legend {legend}");
    }
    assert!(probes.contains("不可达"), "outcome words in the tooltips");
    assert!(!probes.contains("unreachable"));
}

#[test]
fn both_languages_declare_fonts_that_draw_chinese() {
    // An English report still shows Chinese data (site names, replies).
    for lang in Lang::ALL {
        let html = render::html(&sample_report(20), lang);
        let style = &html[html.find("<style>").unwrap()..html.find("</style>").unwrap()];
        for font in ["\"Noto Sans CJK SC\"", "\"WenQuanYi Micro Hei\""] {
            assert_eq!(style.matches(font).count(), 2, "{lang}: {font} for the page and the charts");
        }
    }
}

#[test]
fn an_empty_and_a_hostile_report_render_in_chinese() {
    let empty = render::html(&empty_report(), Lang::Zh);
    check_balanced(&empty);
    assert!(empty.contains("已中止") && empty.contains("中止原因"));
    assert!(empty.contains("无样本"));
    assert_eq!(empty.matches("未观测到").count(), 7 + 7 + 1, "chart rows, table rows and the RTO card");
    let hostile = render::html(&hostile_report(), Lang::Zh);
    assert!(!hostile.to_lowercase().contains("<script"));
    check_balanced(&hostile);
}

#[test]
fn the_load_windows_and_idle_sessions_are_shown_in_both_languages() {
    let mut r = sample_report(50);
    let flow = |protocol, acknowledged, per_second| FlowWindow {
        protocol,
        acknowledged,
        per_second,
        failed_attempts: 7,
        p50_ms: Some(41),
        p90_ms: Some(93),
        p99_ms: Some(187),
    };
    r.load = Some(LoadReport {
        profile: maildr_drill::plan::LoadProfile::default(),
        windows: [WindowName::Before, WindowName::During, WindowName::After]
            .into_iter()
            .zip([(1234, 39.5), (56, 11.2), (4321, 40.1)])
            .map(|(window, (acked, rate))| LoadWindow {
                window,
                from_ms: T0,
                to_ms: T0 + 1000,
                flows: vec![flow(Protocol::Smtp, acked, rate), flow(Protocol::Submission, 3, 0.5)],
            })
            .collect(),
        idle: IdleSummary {
            sessions: 4,
            pushes: 812,
            failures: 9,
            reconnects: 4,
            longest_reconnect_ms: 3125,
            last_error: String::new(),
        },
    });
    for lang in Lang::ALL {
        for view in [render::markdown(&r, lang), render::html(&r, lang)] {
            for figure in ["1234", "39.5", "4321", "40.1", "187 ms", "812", "3125 ms"] {
                assert!(view.contains(figure), "{lang:?}: {figure} is shown");
            }
        }
    }
    assert!(render::html(&r, Lang::En).contains("throughput and latency before, during and after the fault"));
    assert!(render::html(&r, Lang::Zh).contains("故障前") && render::html(&r, Lang::Zh).contains("故障中"));
    // Without load (an older report), no section and no panic.
    r.load = None;
    assert!(!render::markdown(&r, Lang::En).contains("throughput and latency"));
}

/// A tabletop exercise of site-outage run from answers, one of them hostile
/// text, and one step left unanswered.
fn tabletop_report() -> Report {
    use maildr_drill::plan::{Plan, PlanSource};
    use maildr_drill::tabletop::{self, AnswerSheet, Exercise, Roster};
    let source: PlanSource = maildr_drill::scenarios::load("site-outage").expect("site-outage is in the library");
    let plan = Plan::parse(&source).expect("the shipped plan parses");
    let team = ["li=incident-commander", "wang=mail-operator", "zhao=dns-operator"].map(String::from);
    let roster = Roster::choose(&team, &plan).expect("the team is well formed");
    let evil = EVIL.replace('\u{7}', "");
    let answers = format!(
        "[[answers]]\nstep = 1\nby = \"wang\"\nafter_ms = 1000\n\
         [[answers]]\nstep = 2\nby = \"li\"\ndecision = {evil:?}\nafter_ms = 4000\n\
         [[answers]]\nstep = 3\nby = \"wang\"\nafter_ms = 1000\n"
    );
    let mut sheet =
        AnswerSheet::parse("answers <1>.toml", &answers, false, &plan, &roster).expect("the answers fit the plan");
    let ex = Exercise {
        plan: &plan,
        source: &source,
        roster: &roster,
        drill_id: "20250301T120000Z-site-outage".into(),
        approvals: Vec::new(),
        started_at_ms: T0,
    };
    tabletop::run(&ex, &mut sheet, &|_, _| {}).expect("the team covers every role")
}

#[test]
fn a_tabletop_report_shows_roles_acknowledgements_and_decisions_escaped_in_both_languages() {
    let r = tabletop_report();
    assert_eq!(r.verdict, Verdict::Failed, "steps 4 to 15 were never acknowledged");
    for lang in Lang::ALL {
        let html = render::html(&r, lang);
        check_balanced(&html);
        assert!(!html.to_lowercase().contains("<script"), "raw <script> in the HTML");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)"), "the decision is escaped");
        assert!(html.contains("answers &lt;1&gt;.toml"), "the answers file is escaped");
        assert!(
            !html.contains("id=\"rto\"") && !html.contains("id=\"rpo\""),
            "nothing measured, nothing shown as measured"
        );
        assert!(html.contains("id=\"tabletop\""));
        let md = render::markdown(&r, lang);
        assert!(md.contains("\\<script\\>"));
        let raw = md.lines().find(|l| l.char_indices().any(|(i, c)| c == '<' && !l[..i].ends_with('\\')));
        assert_eq!(raw, None, "an unescaped '<' in the Markdown");
        let (title, participants, nobody) = match lang {
            Lang::En => ("# Tabletop exercise report: site-outage", "### Participants", "**nobody**"),
            Lang::Zh => ("# 桌面推演报告：site-outage", "### 参与者", "**无人确认**"),
        };
        for needle in [title, participants, nobody, "`dns-operator`", "zhao"] {
            assert!(md.contains(needle), "{lang}: {needle:?} missing:\n{md}");
        }
        // The tabletop's step rows keep their nine columns whatever the decision holds.
        let row = md.lines().find(|l| l.starts_with("| 2 |") && l.contains("`incident-commander`")).unwrap();
        assert_eq!(row.replace("\\|", "").matches('|').count(), 10, "{row}");
    }
}

// ------------------------------------------------- against the previous drill

/// A drill of `plan` archived with its total RTO, lost mail and verdict.
fn archived_drill(
    archive: &Archive,
    id: &str,
    plan: &str,
    at: u64,
    total_ms: Option<u64>,
    lost: u64,
    verdict: Verdict,
) -> Report {
    let mut r = report_started(id, at);
    r.plan.name = plan.into();
    r.rto.total_ms = total_ms;
    r.rpo.lost = lost;
    r.verdict = verdict;
    archive.save(&r, Lang::En).unwrap();
    r
}

#[test]
fn a_drill_is_compared_with_the_newest_earlier_drill_of_its_scenario_that_was_not_aborted() {
    use maildr_drill::regression::{compare_with_previous, Regression, RtoPhase};
    let data = tempfile::tempdir().unwrap();
    let archive = Archive::new(data.path());
    let first = report_started("d0-first", T0);
    assert_eq!(compare_with_previous(&archive, &first).unwrap(), None, "nothing archived: nothing to compare");

    let d1 = archived_drill(&archive, "d1", "site-outage", T0, Some(10_000), 0, Verdict::Passed);
    archived_drill(&archive, "d2-other-plan", "dns-failure", T0 + 1_000, Some(1_000), 0, Verdict::Passed);
    archived_drill(&archive, "d3-aborted", "site-outage", T0 + 2_000, None, 0, Verdict::Aborted);
    let mut t = tabletop_report();
    t.drill_id = "d4-tabletop".into();
    t.started_at_ms = T0 + 3_000;
    archive.save(&t, Lang::En).unwrap();
    assert_eq!(compare_with_previous(&archive, &t).unwrap(), None, "a tabletop exercise is compared with nothing");
    // A drill started later than the one compared is no baseline.
    archived_drill(&archive, "d9-later", "site-outage", T0 + 9_000, Some(1), 0, Verdict::Passed);

    let mut now = report_started("d5", T0 + 5_000);
    now.rto.total_ms = Some(25_000);
    now.rpo.lost = 2;
    now.verdict = Verdict::Failed;
    let c = compare_with_previous(&archive, &now).unwrap().expect("d1 is the baseline");
    assert_eq!(c.previous_drill_id, "d1", "not the other plan, the aborted drill, the tabletop or the later one");
    assert_eq!(c.previous_rto, d1.rto);
    let slower = now.rto.first_smtp_ok_ms != d1.rto.first_smtp_ok_ms;
    assert!(!slower, "the sample reports share their other phases");
    assert_eq!(
        c.found,
        vec![
            Regression::Slower { phase: RtoPhase::Total, now_ms: 25_000, was_ms: 10_000 },
            Regression::MoreLost { now: 2, was: d1.rpo.lost },
            Regression::NoLongerPassed { now: Verdict::Failed },
        ]
    );

    // The comparison is part of report.json and both renderings.
    now.regressions = Some(c);
    let saved = archive.save(&now, Lang::Zh).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&fs::read(&saved.files.json).unwrap()).unwrap();
    assert_eq!(json["regressions"]["previous_drill_id"], "d1");
    assert_eq!(
        json["regressions"]["found"][0],
        serde_json::json!({"kind": "slower", "phase": "total", "now_ms": 25000, "was_ms": 10000})
    );
    assert_eq!(archive.load("d5").unwrap(), now, "the comparison reads back");
    for lang in Lang::ALL {
        let html = render::html(&now, lang);
        check_balanced(&html);
        assert!(html.contains("id=\"previous\""), "{lang}");
        let md = render::markdown(&now, lang);
        let (heading, count, worse, total_row) = match lang {
            Lang::En => (
                "## Against the previous drill",
                "**3 worse than in the previous drill.**",
                "**worse**",
                "| Total | 25 s | 10 s |",
            ),
            Lang::Zh => ("## 与上次演练对比", "**3 项比上次演练差。**", "**变差**", "| 合计 | 25 s | 10 s |"),
        };
        for needle in [heading, count, worse, total_row, "d1"] {
            assert!(md.contains(needle), "{lang}: {needle:?} missing:\n{md}");
        }
        assert_eq!(md.matches(worse).count(), 3, "{lang}: one mark per regression");
    }

    // Nothing worse is said too; a report without the comparison has no section.
    let mut same = report_started("d6", T0 + 6_000);
    same.regressions = compare_with_previous(&archive, &same).unwrap();
    assert_eq!(same.regressions.as_ref().map(|c| c.previous_drill_id.as_str()), Some("d5"));
    let mut same_as_d1 = report_started("d7", T0 + 1_500);
    (same_as_d1.rto.total_ms, same_as_d1.rpo.lost, same_as_d1.verdict) = (Some(10_000), 0, Verdict::Passed);
    same_as_d1.regressions = compare_with_previous(&archive, &same_as_d1).unwrap();
    let c = same_as_d1.regressions.as_ref().unwrap();
    assert_eq!((c.previous_drill_id.as_str(), c.found.len()), ("d1", 0));
    assert!(render::markdown(&same_as_d1, Lang::En).contains("Nothing got worse than in the previous drill."));
    assert!(!render::markdown(&first, Lang::En).contains("Against the previous drill"));
    assert!(!render::html(&first, Lang::Zh).contains("id=\"previous\""));
}
