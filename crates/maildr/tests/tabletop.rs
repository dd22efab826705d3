//! Tabletop exercises through the real binary: `maildr drill run site-outage
//! --tabletop --answers FILE --participant NAME=ROLE ...` with no lab anywhere.
//! The report records who acknowledged each step and when (on the answers
//! file's clock), grades the recovery against the plan's objectives, is
//! archived and audit-logged like a drill's, and renders in Chinese; a wrong
//! role is refused before anything is written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::lab::maildr;
use common::output_text;
use serde_json::Value;

/// site-outage's steps (14, then its rollback step) and who answers each by
/// role: the mail operator confirms, prepares and verifies, the incident
/// commander decides and reviews, the DNS operator changes DNS.
const ANSWERERS: [&str; 15] = [
    "bob", "alice", "bob", "dan", "bob", "bob", "bob", "alice", "alice", "alice", "alice", "alice", "alice", "alice",
    "alice",
];

const TEAM: [&str; 3] = ["alice=incident-commander", "bob=Mail Operator", "dan=dns_operator"];

/// Answers to every step, step `i` decided `delays[i - 1]` ms after it was presented.
fn answers(delays: &[u64; 15]) -> String {
    let mut out = String::new();
    for (i, (by, after)) in ANSWERERS.iter().zip(delays).enumerate() {
        let decision = if i == 1 { "fail over to the secondary" } else { "" };
        out.push_str(&format!(
            "[[answers]]\nstep = {}\nby = \"{by}\"\ndecision = \"{decision}\"\nafter_ms = {after}\n\n",
            i + 1
        ));
    }
    out
}

struct Exercise {
    output: Output,
    work: PathBuf,
}

impl Exercise {
    fn report(&self) -> Value {
        let bytes = std::fs::read(self.work.join("report/report.json"))
            .unwrap_or_else(|e| panic!("no report.json ({e})\n{}", output_text(&self.output)));
        serde_json::from_slice(&bytes).expect("report.json is JSON")
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }
}

/// `maildr drill run site-outage --tabletop` in `work` (its working directory,
/// where a lab started by mistake would appear as `.maildr/`).
fn tabletop(work: &Path, answers_text: &str, extra: &[&str]) -> Exercise {
    let file = work.join("answers.toml");
    std::fs::write(&file, answers_text).expect("writing the answers file");
    let mut cmd = maildr();
    cmd.current_dir(work).args(["drill", "run", "site-outage", "--tabletop", "--answers"]).arg(&file);
    for p in TEAM {
        cmd.args(["--participant", p]);
    }
    let output = cmd
        .arg("--data-dir")
        .arg(work.join("drills"))
        .arg("--report-dir")
        .arg(work.join("report"))
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("running maildr drill run --tabletop");
    Exercise { output, work: work.to_path_buf() }
}

const QUICK: [u64; 15] =
    [1_000, 4_000, 2_000, 5_000, 3_000, 1_000, 1_000, 1_000, 1_000, 2_000, 1_000, 1_000, 1_000, 1_000, 1_000];

#[test]
fn a_tabletop_runs_without_a_lab_and_records_who_acknowledged_each_step_and_when() {
    let work = tempfile::tempdir().unwrap();
    let ex = tabletop(work.path(), &answers(&QUICK), &[]);
    assert_eq!(ex.output.status.code(), Some(0), "{}", output_text(&ex.output));
    assert!(!work.path().join(".maildr").exists(), "no lab was started or looked for");
    assert!(ex.stderr().contains("no fault is injected"), "{}", ex.stderr());

    let r = ex.report();
    assert_eq!(r["mode"], "tabletop");
    assert_eq!(r["verdict"], "passed", "{:#}", r["findings"]);
    assert_eq!(r["rto"]["fault_at_ms"], Value::Null, "nothing was injected or measured");
    assert_eq!(r["environment"]["target"], "none");
    let t = &r["tabletop"];
    assert_eq!(t["clock"], "simulated");
    assert!(t["answers_file"].as_str().unwrap().ends_with("answers.toml"));
    assert_eq!(t["participants"].as_array().unwrap().len(), 3);
    assert_eq!(t["participants"][1]["role"], "mail-operator", "roles are kept in one spelling");

    let steps = t["steps"].as_array().unwrap();
    assert_eq!(steps.len(), ANSWERERS.len());
    let mut clock = 0;
    for ((s, by), delay) in steps.iter().zip(ANSWERERS).zip(QUICK) {
        assert_eq!(s["acknowledged_by"], by, "{s}");
        let role = match by {
            "alice" => "incident-commander",
            "bob" => "mail-operator",
            _ => "dns-operator",
        };
        assert_eq!(s["role"], role, "{s}");
        assert_eq!(s["presented_ms"], clock, "a step is presented when the one before was decided: {s}");
        clock += delay;
        assert_eq!(s["decided_ms"], clock, "{s}");
        assert_eq!(s["acknowledged_ms"], clock, "{s}");
        assert_eq!(s["within_budget"], true, "{s}");
    }
    assert_eq!(steps[1]["decision"], "fail over to the secondary");
    assert_eq!(steps[3]["budget_ms"], 20_000, "a wait's budget is its timeout");

    // Recovery: the kill (step 1) presented at 0; the new primary decided at
    // step 2, DNS at step 4, mail flowing at step 5.
    let at = |n: usize| QUICK[..n].iter().sum::<u64>();
    let rec = &t["recovery"];
    assert_eq!(rec["fault_step"], 1);
    assert_eq!(rec["elect"]["after_fault_ms"], at(2));
    assert_eq!(rec["dns"]["after_fault_ms"], at(4));
    assert_eq!(rec["mail"]["after_fault_ms"], at(5));
    assert_eq!(rec["total_ms"], at(5));
    let objectives = r["objectives"].as_array().unwrap();
    let graded: Vec<&str> = objectives.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(graded, ["rto_smtp_ms", "rto_imap_ms", "rto_total_ms", "steps_unacknowledged"]);
    assert!(objectives.iter().all(|o| o["met"] == true), "{objectives:#?}");
    assert_eq!(objectives[0]["measured"], at(5));
    assert_eq!(t["not_graded"], serde_json::json!(["rpo_messages", "max_deferred"]));
    assert_eq!(r["finished_at_ms"].as_u64().unwrap() - r["started_at_ms"].as_u64().unwrap(), at(15));

    // Archived and audit-logged like a drill, each acknowledgement under its person.
    let archived = work.path().join("drills/reports").read_dir().unwrap().next().unwrap().unwrap().path();
    assert_eq!(
        std::fs::read(archived.join("report.json")).unwrap(),
        std::fs::read(work.path().join("report/report.json")).unwrap()
    );
    let audit = std::fs::read_to_string(work.path().join("drills/audit.jsonl")).unwrap();
    let records: Vec<Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let actions: Vec<&str> = records.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions.first(), Some(&"drill_started"));
    assert_eq!(actions.iter().filter(|a| **a == "tabletop_acknowledged").count(), 15);
    assert_eq!(&actions[actions.len() - 2..], ["drill_finished", "report_archived"]);
    assert!(!actions.contains(&"fault"), "{actions:?}");
    let dns_ack = records.iter().find(|r| r["action"] == "tabletop_acknowledged" && r["detail"]["step"] == 4).unwrap();
    assert_eq!(dns_ack["actor"], "dan");
    assert_eq!(records[records.len() - 2]["detail"]["mode"], "tabletop");
    let verify =
        maildr().args(["audit", "verify", "--file"]).arg(work.path().join("drills/audit.jsonl")).output().unwrap();
    assert!(verify.status.success(), "{}", output_text(&verify));

    let md = std::fs::read_to_string(work.path().join("report/report.md")).unwrap();
    for needle in [
        "# Tabletop exercise report: site-outage",
        "Steps, acknowledgements and decisions",
        "answers.toml",
        "fail over to the secondary",
    ] {
        assert!(md.contains(needle), "{needle:?} missing from report.md:\n{md}");
    }
    let history = maildr().args(["drill", "history", "--data-dir"]).arg(work.path().join("drills")).output().unwrap();
    assert!(String::from_utf8_lossy(&history.stdout).contains("tabletop"), "{}", output_text(&history));
}

#[test]
fn an_answer_from_someone_without_the_role_is_refused_before_anything_is_written() {
    let work = tempfile::tempdir().unwrap();
    let text = answers(&QUICK).replace("step = 4\nby = \"dan\"", "step = 4\nby = \"bob\"");
    let ex = tabletop(work.path(), &text, &[]);
    assert_eq!(ex.output.status.code(), Some(2), "{}", output_text(&ex.output));
    let err = ex.stderr();
    assert!(
        err.contains("answers.toml: step 4 (\"The surviving DNS points mail. and MX at the new primary\")"),
        "{err}"
    );
    assert!(err.contains("bob holds mail-operator, not dns-operator: only dan may acknowledge this step"), "{err}");
    assert!(!work.path().join("drills").exists(), "no audit log, no archive");

    // A role nobody holds is refused the same way, naming the role and its steps.
    let file = work.path().join("answers.toml");
    let lone = maildr()
        .args(["drill", "run", "site-outage", "--tabletop", "--participant", "alice=incident-commander", "--answers"])
        .arg(&file)
        .arg("--data-dir")
        .arg(work.path().join("drills"))
        .output()
        .unwrap();
    assert_eq!(lone.status.code(), Some(2), "{}", output_text(&lone));
    assert!(String::from_utf8_lossy(&lone.stderr).contains("nobody holds role dns-operator"), "{}", output_text(&lone));
    assert!(!work.path().join("drills").exists());
}

#[test]
fn a_too_slow_simulated_answer_fails_the_rto_objective() {
    let work = tempfile::tempdir().unwrap();
    let mut slow = QUICK;
    slow[3] = 19_000; // DNS, within its own 20 s wait
    slow[4] = 19_000; // mail flows, within its own 20 s wait
    let ex = tabletop(work.path(), &answers(&slow), &[]);
    assert_eq!(ex.output.status.code(), Some(1), "{}", output_text(&ex.output));
    let r = ex.report();
    assert_eq!(r["verdict"], "failed");
    let mail_ms: u64 = slow[..5].iter().sum();
    assert_eq!(r["tabletop"]["recovery"]["total_ms"], mail_ms);
    let objective =
        |name: &str| r["objectives"].as_array().unwrap().iter().find(|o| o["name"] == name).unwrap().clone();
    for name in ["rto_smtp_ms", "rto_imap_ms", "rto_total_ms"] {
        let o = objective(name);
        assert_eq!(
            (o["measured"].as_u64(), o["met"].as_bool()),
            (Some(mail_ms), Some(mail_ms <= o["target"].as_u64().unwrap())),
            "{o}"
        );
    }
    assert_eq!(objective("rto_total_ms")["met"], false, "{mail_ms} ms is past the 30 s objective");
    assert!(
        r["tabletop"]["steps"].as_array().unwrap().iter().all(|s| s["within_budget"] == true),
        "every step kept its own budget"
    );
    let titles: Vec<&str> = r["findings"].as_array().unwrap().iter().map(|f| f["title"].as_str().unwrap()).collect();
    assert!(titles.contains(&"Objective rto_total_ms missed"), "{titles:?}");
}

#[test]
fn a_tabletop_report_renders_in_chinese_from_the_same_json() {
    let work = tempfile::tempdir().unwrap();
    let ex = tabletop(work.path(), &answers(&QUICK), &["--lang", "zh"]);
    assert_eq!(ex.output.status.code(), Some(0), "{}", output_text(&ex.output));
    let md = std::fs::read_to_string(work.path().join("report/report.md")).unwrap();
    for needle in ["# 桌面推演报告：site-outage", "## 桌面推演", "### 参与者", "按决策计时的恢复", "时间为模拟时间"]
    {
        assert!(md.contains(needle), "{needle:?} missing from the Chinese report.md:\n{md}");
    }
    let html = std::fs::read_to_string(work.path().join("report/report.html")).unwrap();
    assert!(html.contains("<html lang=\"zh-CN\">") && html.contains("桌面推演"), "the Chinese page");
    let json = std::fs::read(work.path().join("report/report.json")).unwrap();
    assert!(!String::from_utf8_lossy(&json).contains("桌面推演"), "report.json has no language");

    // The same report.json in English: byte for byte the same record.
    let out = work.path().join("en");
    let again = maildr()
        .args(["drill", "report", "--lang", "en", "--json"])
        .arg(work.path().join("report/report.json"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(again.status.success(), "{}", output_text(&again));
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), json);
    let en = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(en.contains("# Tabletop exercise report: site-outage") && !en.contains("桌面推演"), "{en}");
}

#[test]
fn a_tabletop_without_a_terminal_needs_an_answers_file_and_never_a_lab() {
    let work = tempfile::tempdir().unwrap();
    let mut cmd = maildr();
    cmd.current_dir(work.path()).args(["drill", "run", "site-outage", "--tabletop"]);
    for p in TEAM {
        cmd.args(["--participant", p]);
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--answers FILE"), "{}", output_text(&out));
    let with_lab = maildr().args(["drill", "run", "site-outage", "--tabletop", "--lab-dir", "x"]).output().unwrap();
    assert_eq!(with_lab.status.code(), Some(2), "a tabletop takes no lab: {}", output_text(&with_lab));
    assert!(!work.path().join(".maildr").exists());
}
