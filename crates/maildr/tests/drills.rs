//! Drills as tests: every shipped scenario runs through `maildr drill run` against
//! a lab of real site processes and must pass with nothing acknowledged lost; a
//! deliberately broken lab makes the matching drill fail with a finding naming the
//! cause; a dry run touches nothing; approvals bind to the plan's exact bytes; the
//! audit log's chain verifies and an edit is caught.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::lab::{maildr, Lab, ONE_LAB_AT_A_TIME};
use serde_json::Value;

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

struct Drill {
    output: Output,
    report: Option<Value>,
    dir: PathBuf,
}

impl Drill {
    fn stdout(&self) -> String {
        format!(
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.output.status.code(),
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

/// `maildr drill run` with an ephemeral lab on `net` and everything under `work`.
fn drill(work: &Path, scenario: &str, net: &str, extra: &[&str]) -> Drill {
    let report_dir = work.join("report");
    let output = maildr()
        .args(["drill", "run", scenario, "--net", net, "--confirm-manual", "drill-test", "--lab-dir"])
        .arg(work.join("lab"))
        .arg("--data-dir")
        .arg(work.join("drills"))
        .arg("--report-dir")
        .arg(&report_dir)
        .args(extra)
        .output()
        .expect("running maildr drill run");
    let report = std::fs::read(report_dir.join("report.json")).ok().map(|b| serde_json::from_slice(&b).unwrap());
    Drill { output, report, dir: work.to_path_buf() }
}

/// What every passing failover drill must show.
fn assert_passed_with_nothing_lost(d: &Drill, failover: bool) {
    let r = d.report.as_ref().unwrap_or_else(|| panic!("no report.json\n{}", d.stdout()));
    assert_eq!(d.output.status.code(), Some(0), "{}\nfindings: {:#}", d.stdout(), r["findings"]);
    assert_eq!(r["verdict"], "passed");
    let rpo = &r["rpo"];
    assert!(rpo["acknowledged"].as_u64().unwrap() > 0, "the drill sent mail: {rpo}");
    assert_eq!(rpo["lost"], 0, "{rpo}");
    assert_eq!(rpo["found"], rpo["acknowledged"], "{rpo}");
    assert_eq!(rpo["reconciled_at"].as_array().unwrap().len(), 2, "both data sites were read back: {rpo}");
    for o in r["objectives"].as_array().unwrap() {
        assert_eq!(o["met"], true, "{o}");
    }
    assert!(r["objectives"].as_array().unwrap().iter().any(|o| o["name"] == "rpo_messages"));
    let steps = r["steps"].as_array().unwrap();
    assert!(steps.iter().all(|s| s["outcome"] == "done"), "{steps:#?}");
    let rto = &r["rto"];
    let at = |k: &str| rto[k].as_u64().unwrap_or_else(|| panic!("no {k} in {rto}"));
    assert!(rto["fault_at_ms"].as_u64().is_some());
    assert!(at("first_smtp_ok_ms") <= at("total_ms") && at("first_imap_ok_ms") <= at("total_ms"), "{rto}");
    if failover {
        assert!(at("elect_ms") <= at("dns_committed_ms"), "elected before the DNS change: {rto}");
        assert!(at("dns_committed_ms") <= at("dns_served_ms"), "committed before served: {rto}");
        assert!(at("dns_served_ms") <= at("total_ms"), "{rto}");
    }
    let times: Vec<u64> = r["timeline"].as_array().unwrap().iter().map(|e| e["at_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "the timeline is in time order");
    // The lab started for the drill is gone, with its processes.
    assert!(!d.dir.join("lab").join("lab.json").exists(), "the drill's lab was stopped and removed");
    // The archive and the audit log.
    let audit = maildr().args(["audit", "verify", "--data-dir"]).arg(d.dir.join("drills")).output().unwrap();
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
}

fn scenario_passes(scenario: &str, net: &str, failover: bool) {
    let _one = one_lab();
    let work = tempfile::tempdir().unwrap();
    let d = drill(work.path(), scenario, net, &[]);
    assert_passed_with_nothing_lost(&d, failover);
}

/// Also the drill whose report is asked for in Chinese: report.md and
/// report.html in Chinese, here and in the archive, and report.json the same
/// as `drill report` writes for the English rendering.
#[test]
fn node_failure_drill_passes_with_nothing_lost() {
    let _one = one_lab();
    let work = tempfile::tempdir().unwrap();
    let d = drill(work.path(), "node-failure", "127.101", &["--lang", "zh"]);
    assert_passed_with_nothing_lost(&d, true);
    let id = d.report.as_ref().unwrap()["drill_id"].as_str().unwrap().to_string();
    let archived = work.path().join("drills/reports").join(&id);
    for dir in [work.path().join("report"), archived] {
        let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
        assert!(
            html.contains("<html lang=\"zh-CN\">") && html.contains("<h2>恢复时间 (RTO)</h2>"),
            "{}",
            dir.display()
        );
        assert!(std::fs::read_to_string(dir.join("report.md")).unwrap().starts_with("# 演练报告："));
    }
    let en = work.path().join("en");
    let out = maildr()
        .args(["drill", "report", &id, "--lang", "en", "--data-dir"])
        .arg(work.path().join("drills"))
        .arg("--out")
        .arg(&en)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = |dir: &Path| std::fs::read(dir.join("report.json")).unwrap();
    assert_eq!(json(&work.path().join("report")), json(&en), "report.json is the same in both languages");
    assert!(std::fs::read_to_string(en.join("report.html")).unwrap().contains("<h2>Recovery time (RTO)</h2>"));
    // A report.json with a field this maildr does not know is not rewritten without it.
    let mut future: Value = serde_json::from_slice(&json(&en)).unwrap();
    future["from_a_later_version"] = Value::from(1);
    let future_file = work.path().join("future.json");
    std::fs::write(&future_file, serde_json::to_vec(&future).unwrap()).unwrap();
    let refused = maildr()
        .args(["drill", "report", "--lang", "zh", "--json"])
        .arg(&future_file)
        .arg("--out")
        .arg(work.path().join("future"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("does not know"));
}

#[test]
fn site_outage_drill_fails_over_and_back_with_nothing_lost() {
    scenario_passes("site-outage", "127.102", true);
}

#[test]
fn partition_drill_shows_the_cut_off_primary_refusing_and_nothing_lost() {
    scenario_passes("partition", "127.103", true);
}

#[test]
fn wan_degradation_drill_keeps_mail_flowing_within_the_latency_objective() {
    scenario_passes("wan-degradation", "127.104", false);
}

#[test]
fn dns_failure_drill_keeps_mail_flowing_through_the_other_dns_server() {
    scenario_passes("dns-failure", "127.105", false);
}

#[test]
fn planned_switchover_drill_moves_the_primary_and_back() {
    scenario_passes("planned-switchover", "127.106", true);
}

#[test]
fn combined_drill_fails_over_across_a_degraded_wan() {
    scenario_passes("combined", "127.107", true);
}

#[test]
fn tamper_drill_restores_the_deleted_inbox_from_backups_with_nothing_lost() {
    let _one = one_lab();
    let work = tempfile::tempdir().unwrap();
    let d = drill(work.path(), "tamper", "127.144", &[]);
    assert_passed_with_nothing_lost(&d, false);
    let r = d.report.as_ref().unwrap();
    let steps = r["steps"].as_array().unwrap();
    let evidence = |name: &str| {
        let step = steps.iter().find(|s| s["name"].as_str().is_some_and(|n| n.starts_with(name))).unwrap();
        step["detail"].as_str().unwrap_or_default().to_string()
    };
    let attack = evidence("A compromised client");
    let deleted: u64 = attack.split("deleted ").nth(1).and_then(|t| t.split(' ').next()).unwrap().parse().unwrap();
    assert!(deleted > 0, "the attack deleted mail: {attack}");
    let restore = evidence("The operator restores");
    assert!(restore.contains(&format!("restored {deleted} messages")), "every deleted message restored: {restore}");
    assert!(restore.contains("restore RTO"), "{restore}");
    assert!(evidence("Every message from before the attack").contains("RPO 0"));
}

/// A deployment file describing the running `lab` with hooks that drive it
/// through `maildr lab`, the way an operator's hooks would drive real hosts.
fn deployment_for(lab: &Lab, dir: &Path) -> PathBuf {
    let status = lab.read_status();
    std::fs::write(dir.join("api-token"), status["api_token"].as_str().unwrap()).unwrap();
    for user in ["probe", "alice", "bob"] {
        std::fs::write(dir.join(format!("{user}.pw")), lab.password(&format!("{user}@example.test"))).unwrap();
    }
    std::fs::copy(status["ca"].as_str().unwrap(), dir.join("ca.pem")).unwrap();
    let exe = env!("CARGO_BIN_EXE_maildr");
    let lab_dir = lab.lab_dir().display().to_string();
    let hook = |what: &str| format!("[\"{exe}\", \"lab\", \"{what}\", \"{{site}}\", \"--dir\", \"{lab_dir}\"]");
    let mut file = format!(
        "domain = \"example.test\"\napi_token_file = \"api-token\"\nca_file = \"ca.pem\"\n\n[accounts]\n\
         sender = {{ address = \"probe@example.test\", password_file = \"probe.pw\" }}\n\
         mx_recipient = {{ address = \"alice@example.test\", password_file = \"alice.pw\" }}\n\
         submission_recipient = {{ address = \"bob@example.test\", password_file = \"bob.pw\" }}\n\n\
         [hooks]\nkill_site = {}\nstart_site = {}\n",
        hook("kill"),
        hook("start")
    );
    for site in status["sites"].as_array().unwrap() {
        let p = &site["ports"];
        file.push_str(&format!(
            "\n[[sites]]\nname = {}\nrole = {}\nip = {}\nsmtp_port = {}\nsubmission_port = {}\nimap_port = {}\n",
            site["site"], site["role"], site["ip"], p["smtp"], p["submission"], p["imap"]
        ));
        if !p["dns"].is_null() {
            file.push_str(&format!("dns_port = {}\napi_port = {}\n", p["dns"], p["http"]));
        }
    }
    let path = dir.join("deploy.toml");
    std::fs::write(&path, file).unwrap();
    path
}

const WITNESS_PLAN: &str = r#"name = "witness-loss"
description = "The witness dies; the data sites keep a quorum and mail keeps flowing."
target = { kind = "deployment", file = "deploy.toml" }

[approvals]
required = 1

[objectives]
rto_smtp_ms = 10000
rpo_messages = 0

[[steps]]
phase = "confirm"
name = "The witness dies"
action = "kill_site"
site = "witness"

[[steps]]
phase = "verify"
name = "Mail flows without it"
until = "mail_flows"
timeout_ms = 15000

[[steps]]
phase = "review"
name = "The witness comes back"
action = "restore"

[[rollback]]
phase = "review"
name = "Undo every fault"
action = "restore"
"#;

fn run_plan(work: &Path, plan: &Path) -> Output {
    maildr()
        .args(["drill", "run"])
        .arg(plan)
        .arg("--data-dir")
        .arg(work.join("drills"))
        .arg("--report-dir")
        .arg(work.join("report"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_dry_run_touches_nothing_and_a_deployment_drill_runs_only_with_approval_of_the_exact_plan() {
    let _one = one_lab();
    let lab = Lab::up("127.108");
    let work = tempfile::tempdir().unwrap();
    let state_before = std::fs::read(lab.lab_dir().join("lab.json")).unwrap();
    let primary_before = lab.wait_for_primary("bj", std::time::Duration::from_secs(10), None);

    // Dry run: the plan, its checks and its rollback are printed; nothing changes.
    let dry = maildr().args(["drill", "plan", "site-outage"]).output().unwrap();
    assert!(dry.status.success(), "{}", text(&dry));
    let shown = text(&dry);
    for needle in ["kill site primary", "wait until DNS shows mail.", "Rollback", "RPO", "nothing was touched"] {
        assert!(shown.contains(needle), "{needle:?} missing from the dry run:\n{shown}");
    }
    assert_eq!(std::fs::read(lab.lab_dir().join("lab.json")).unwrap(), state_before, "lab.json unchanged");
    assert!(lab.lab_cmd(&["status"]).status.success(), "every lab process still runs");
    assert_eq!(lab.wait_for_primary("bj", std::time::Duration::from_secs(5), None), primary_before);
    assert!(!work.path().join("drills").exists(), "a dry run writes no audit log or archive");

    // A deployment drill without approval is refused before anything runs.
    deployment_for(&lab, work.path());
    let plan = work.path().join("witness-loss.toml");
    std::fs::write(&plan, WITNESS_PLAN).unwrap();
    let refused = run_plan(work.path(), &plan);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("maildr drill approve"), "{}", text(&refused));
    assert!(lab.lab_cmd(&["status"]).status.success(), "the refused drill touched no site");
    assert!(!work.path().join("report").join("report.json").exists());

    // Approved, then changed: the approval was for other bytes.
    let approve = |by: &str| {
        let o = maildr()
            .args(["drill", "approve"])
            .arg(&plan)
            .args(["--by", by, "--data-dir"])
            .arg(work.path().join("drills"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
    };
    approve("Alice Approver");
    std::fs::write(&plan, format!("{WITNESS_PLAN}# changed after approval\n")).unwrap();
    let stale = run_plan(work.path(), &plan);
    assert_eq!(stale.status.code(), Some(2), "a changed plan needs new approval: {}", text(&stale));
    assert!(lab.lab_cmd(&["status"]).status.success());

    // Approved as it is now: it runs against the deployment through its hooks.
    approve("Alice Approver");
    let ran = run_plan(work.path(), &plan);
    let report: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("report").join("report.json")).unwrap()).unwrap();
    assert_eq!(ran.status.code(), Some(0), "{}\n{:#}", text(&ran), report["findings"]);
    assert_eq!(report["verdict"], "passed");
    assert_eq!(report["environment"]["target"], "deployment");
    assert_eq!(report["approvals"][0]["by"], "Alice Approver");
    assert_eq!(report["approvals"][0]["plan_sha256"], report["plan"]["sha256"]);
    assert_eq!(report["rpo"]["lost"], 0);
    assert!(report["steps"][0]["detail"].as_str().unwrap().contains("lab kill hz"), "{:#}", report["steps"]);
    assert!(lab.lab_cmd(&["status"]).status.success(), "the drill restored the witness and left the lab running");

    // The audit log holds the approvals and the drill, chained; an edit is caught.
    let data = work.path().join("drills");
    let verify = || maildr().args(["audit", "verify", "--data-dir"]).arg(&data).output().unwrap();
    let ok = verify();
    assert!(ok.status.success(), "{}", text(&ok));
    let log_path = data.join("audit.jsonl");
    let log = std::fs::read_to_string(&log_path).unwrap();
    for action in
        ["\"approval\"", "\"drill_started\"", "\"fault\"", "\"restore\"", "\"drill_finished\"", "\"report_archived\""]
    {
        assert!(log.contains(action), "{action} not audited:\n{log}");
    }
    let edited = log.replacen("Alice Approver", "Mallory Approver", 1);
    assert_ne!(edited, log);
    std::fs::write(&log_path, edited).unwrap();
    let caught = verify();
    assert_eq!(caught.status.code(), Some(1), "{}", text(&caught));
    assert!(text(&caught).contains("line 1"), "the first approval's line is named: {}", text(&caught));

    // History lists the drill.
    let history = maildr().args(["drill", "history", "--json", "--data-dir"]).arg(&data).output().unwrap();
    let rows: Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(rows[0]["plan_name"], "witness-loss");
    assert_eq!(rows[0]["verdict"], "passed");

    // The first drill of the plan had nothing to be compared with; the second
    // is compared with it, in report.json, report.md and the summary printed.
    assert!(report.get("regressions").is_none(), "{:#}", report["regressions"]);
    let again = run_plan(work.path(), &plan);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let second: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("report").join("report.json")).unwrap()).unwrap();
    assert_ne!(second["drill_id"], report["drill_id"]);
    let compared = &second["regressions"];
    assert_eq!(compared["previous_drill_id"], report["drill_id"], "{compared:#}");
    assert_eq!(compared["previous_rto"], report["rto"], "{compared:#}");
    let found = compared["found"].as_array().expect("what got worse, maybe nothing");
    let md = std::fs::read_to_string(work.path().join("report").join("report.md")).unwrap();
    assert!(md.contains("## Against the previous drill"), "{md}");
    assert_eq!(md.matches("**worse**").count(), found.len(), "one mark per regression: {found:?}\n{md}");
    let previous_line = format!("Against the previous drill {}", report["drill_id"].as_str().unwrap());
    assert!(text(&again).contains(&previous_line), "{}", text(&again));
}

#[test]
fn a_lab_without_dns_steering_fails_the_site_outage_drill_with_a_finding_naming_stale_dns() {
    let _one = one_lab();
    let work = tempfile::tempdir().unwrap();
    let d = drill(work.path(), "site-outage", "127.109", &["--lab-without-steering"]);
    let r = d.report.as_ref().unwrap_or_else(|| panic!("no report.json\n{}", d.stdout()));
    assert_eq!(d.output.status.code(), Some(1), "a missed objective exits 1: {}", d.stdout());
    assert_eq!(r["verdict"], "failed", "{:#}", r["findings"]);
    let dns_step = r["steps"].as_array().unwrap().iter().find(|s| s["phase"] == "dns").unwrap().clone();
    assert_eq!(dns_step["outcome"], "failed", "{dns_step:#}");
    // The finding names the cause: DNS still sends clients to the dead primary.
    let findings = r["findings"].as_array().unwrap();
    let stale = findings
        .iter()
        .find(|f| f["phase"] == "dns" && f["severity"] == "critical")
        .unwrap_or_else(|| panic!("no DNS finding in {findings:#?}"));
    let evidence = stale["evidence"].as_str().unwrap();
    assert!(evidence.contains("mail. → bj") && evidence.contains("the primary is sh"), "{evidence}");
    // Nothing acknowledged was lost even so, and the rollback restored the site.
    assert_eq!(r["rpo"]["lost"], 0, "{}", r["rpo"]);
    let restore = r["steps"].as_array().unwrap().iter().find(|s| s["rollback"] == true).unwrap().clone();
    assert_eq!(restore["outcome"], "done", "{restore:#}");
    assert!(restore["detail"].as_str().unwrap().contains("bj killed undone"), "{restore:#}");
    let skipped = r["steps"].as_array().unwrap().iter().filter(|s| s["outcome"] == "skipped").count();
    assert!(skipped > 0, "the steps after the failed wait were skipped");
    assert!(!d.dir.join("lab").join("lab.json").exists(), "the drill's lab was stopped");
}

#[test]
fn approvals_from_many_processes_at_once_land_in_one_verified_chain() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("drills");
    let approvers: Vec<String> = (0..8).map(|i| format!("approver {i}")).collect();
    let children: Vec<_> = approvers
        .iter()
        .map(|by| {
            maildr()
                .args(["drill", "approve", "site-outage", "--by", by, "--data-dir"])
                .arg(&data)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let verify = maildr().args(["audit", "verify", "--data-dir"]).arg(&data).output().unwrap();
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(text(&verify).contains("8 record(s)"), "{}", text(&verify));
    let approvals = std::fs::read_to_string(data.join("approvals.json")).unwrap();
    for by in &approvers {
        assert!(approvals.contains(by.as_str()), "{by} missing from {approvals}");
    }
}

/// `maildr drill run SCENARIO` against the running `lab`, with data under `work`.
fn drill_on(lab: &Lab, work: &Path, scenario: &str) -> Drill {
    let report_dir = work.join("report");
    let output = maildr()
        .args(["drill", "run", scenario, "--confirm-manual", "drill-test", "--lab-dir"])
        .arg(lab.lab_dir())
        .arg("--data-dir")
        .arg(work.join("drills"))
        .arg("--report-dir")
        .arg(&report_dir)
        .output()
        .expect("running maildr drill run");
    let report = std::fs::read(report_dir.join("report.json")).ok().map(|b| serde_json::from_slice(&b).unwrap());
    Drill { output, report, dir: work.to_path_buf() }
}

fn site_pid(lab: &Lab, site: &str) -> u64 {
    let status = lab.read_status();
    let s = status["sites"].as_array().unwrap().iter().find(|s| s["site"] == site).unwrap().clone();
    assert_eq!(s["alive"], true, "{site} is alive: {s}");
    s["pid"].as_u64().unwrap()
}

#[test]
fn a_drill_whose_survivor_is_cut_off_from_the_witness_aborts_before_its_first_fault() {
    let _one = one_lab();
    let lab = Lab::up("127.113");
    let primary = lab.wait_for_primary("bj", std::time::Duration::from_secs(30), None);
    let survivor = if primary == "bj" { "sh" } else { "bj" };
    let primary_pid = site_pid(&lab, &primary);
    let cut = r#"{"forward":{"blackhole":true},"backward":{"blackhole":true}}"#;
    lab.set_link(&format!("{survivor}-hz"), cut);
    lab.set_link(&format!("hz-{survivor}"), cut);
    // Longer than readiness.heard_within_ms (5 s by default).
    std::thread::sleep(std::time::Duration::from_secs(7));

    let work = tempfile::tempdir().unwrap();
    let d = drill_on(&lab, work.path(), "site-outage");
    let r = d.report.as_ref().unwrap_or_else(|| panic!("no report.json\n{}", d.stdout()));
    assert_eq!(d.output.status.code(), Some(1), "{}", d.stdout());
    assert_eq!(r["verdict"], "aborted", "{}", d.stdout());
    let reason = r["abort_reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains(&format!("{survivor} has not heard from hz for"))
            && reason.contains(&format!("after killing {primary} no majority remains")),
        "the abort names the cause: {reason}"
    );
    let timeline = r["timeline"].as_array().unwrap();
    assert!(!timeline.iter().any(|e| e["kind"] == "fault"), "no fault was injected: {timeline:#?}");
    // The primary's process was never touched, and it still leads.
    assert_eq!(site_pid(&lab, &primary), primary_pid);
    assert_eq!(lab.wait_for_primary("bj", std::time::Duration::from_secs(5), None), primary);
    lab.heal_all();
}

#[test]
fn a_global_stop_aborts_the_running_drill_rolls_it_back_and_holds_until_released() {
    let _one = one_lab();
    let lab = Lab::up("127.110");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("drills");
    let running = {
        let report_dir = work.path().join("report");
        maildr()
            .args(["drill", "run", "site-outage", "--confirm-manual", "drill-test", "--lab-dir"])
            .arg(lab.lab_dir())
            .arg("--data-dir")
            .arg(&data)
            .arg("--report-dir")
            .arg(&report_dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Stop once the primary has been killed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = lab.read_status();
        let dead = status["sites"].as_array().unwrap().iter().any(|s| s["alive"] == false);
        if dead {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the drill never killed a site");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let stop = maildr()
        .args(["drill", "stop", "--by", "Ops Lead", "--reason", "a real incident", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(stop.status.success(), "{}", text(&stop));
    assert!(text(&stop).contains("has rolled back"), "{}", text(&stop));
    let out = running.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("report/report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "aborted");
    assert!(report["abort_reason"].as_str().unwrap().contains("stopped by Ops Lead (a real incident)"), "{report:#}");
    // Rolled back: every site runs again.
    let status = lab.read_status();
    assert!(status["sites"].as_array().unwrap().iter().all(|s| s["alive"] == true), "{status:#}");

    // While stopped, a new drill touches nothing.
    let work2 = tempfile::tempdir().unwrap();
    let pids: Vec<u64> = ["bj", "sh", "hz"].iter().map(|s| site_pid(&lab, s)).collect();
    let d = maildr()
        .args(["drill", "run", "node-failure", "--confirm-manual", "drill-test", "--lab-dir"])
        .arg(lab.lab_dir())
        .arg("--data-dir")
        .arg(&data)
        .arg("--report-dir")
        .arg(work2.path())
        .output()
        .unwrap();
    assert_eq!(d.status.code(), Some(1), "{}", text(&d));
    let refused: Value = serde_json::from_slice(&std::fs::read(work2.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(refused["verdict"], "aborted");
    assert!(refused["abort_reason"].as_str().unwrap().contains("drills are stopped by Ops Lead"), "{refused:#}");
    assert_eq!(pids, ["bj", "sh", "hz"].iter().map(|s| site_pid(&lab, s)).collect::<Vec<_>>());

    let release = maildr().args(["drill", "release", "--by", "Ops Lead", "--data-dir"]).arg(&data).output().unwrap();
    assert!(release.status.success() && text(&release).contains("lifted"), "{}", text(&release));
    let audit = std::fs::read_to_string(data.join("audit.jsonl")).unwrap();
    assert!(audit.contains("drills_stopped") && audit.contains("drills_released"), "{audit}");
}

/// When a protocol came back after `fault_at_ms`, as observations
/// `[at_ms, ok, _, began_ms]` show it: the first success of an exchange begun after
/// the first failure after the fault was seen (the definition the drill's report
/// uses), in ms after the fault.
fn observed_rto(samples: &[Value], fault_at_ms: u64) -> Option<u64> {
    let after: Vec<(u64, bool, u64)> = samples
        .iter()
        .map(|s| (s[0].as_u64().unwrap(), s[1].as_bool().unwrap(), s[3].as_u64().unwrap()))
        .filter(|(at, _, _)| *at >= fault_at_ms)
        .collect();
    match after.iter().find(|(_, ok, _)| !ok) {
        Some((failed_at, _, _)) => after
            .iter()
            .filter(|(at, ok, began)| *ok && at >= failed_at && began >= failed_at)
            .map(|(at, _, _)| at - fault_at_ms)
            .min(),
        None => after.iter().find(|(_, ok, _)| *ok).map(|(at, _, _)| at - fault_at_ms),
    }
}

/// Submit `count` messages from alice to bob@remote.test at `site` (STARTTLS,
/// AUTH), each answered 250.
fn queue_outbound(lab: &Lab, site: &str, count: usize) {
    let script = r#"
import json, smtplib, ssl, sys
lab = json.load(open(sys.argv[1]))
site = next(s for s in lab["sites"] if s["site"] == sys.argv[2])
ctx = ssl.create_default_context(cafile=lab["ca"])
ctx.check_hostname = False
s = smtplib.SMTP(site["ip"], site["ports"]["submission"], timeout=30)
s.starttls(context=ctx)
s.login("alice@example.test", sys.argv[3])
for i in range(int(sys.argv[4])):
    s.sendmail("alice@example.test", ["bob@remote.test"],
               f"Subject: queued {i}\r\nMessage-ID: <queued-{i}@example.test>\r\n\r\nx\r\n")
s.quit()
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(lab.lab_dir().join("lab.json"))
        .args([site, &lab.password("alice@example.test"), &count.to_string()])
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_site_outage_drill_s_rto_agrees_with_an_independent_observer_and_its_load_proves_the_rpo() {
    let _one = one_lab();
    // remote.test's route leads nowhere (nothing listens on port 9), so mail for it
    // waits in the outbound queue: the drill's queue check follows it through the
    // loss of the primary that queued it.
    let lab = Lab::up_with("127.115", &["--outbound-route", "remote.test=127.0.0.1:9"]);
    let primary = lab.wait_for_primary("bj", std::time::Duration::from_secs(30), None);
    const QUEUED: usize = 25;
    queue_outbound(&lab, &primary, QUEUED);
    assert_eq!(lab.api_get(&primary, "/api/queue")["total"], QUEUED as u64);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("observer.json");
    // The observer logs in as the drill's IMAP probe does (alice), so both meet the
    // same state of the survivor's credential cache; its mail goes to probe@.
    let (probe, alice) = ("probe@example.test", "alice@example.test");
    let mut observer = std::process::Command::new("python3")
        .arg(common::workspace_root().join("tests/interop/observer.py"))
        .args(["--dns", &format!("{}:5353", lab.ip("bj")), "--dns", &format!("{}:5353", lab.ip("sh"))])
        .args(["--domain", "example.test", "--mx-port", "2525", "--imap-port", "2143"])
        .args(["--user", alice, "--password", &lab.password(alice), "--to", probe, "--interval", "0.1"])
        .arg("--out")
        .arg(&out)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let d = drill_on(&lab, work.path(), "site-outage");
    drop(observer.stdin.take());
    let status = observer.wait().unwrap();
    assert!(status.success(), "the observer failed");
    let r = d.report.as_ref().unwrap_or_else(|| panic!("no report.json\n{}", d.stdout()));
    assert_eq!(r["verdict"], "passed", "{}\nfindings: {:#}", d.stdout(), r["findings"]);

    // Thousands of acknowledged messages, every one found at both data sites.
    let rpo = &r["rpo"];
    assert!(rpo["acknowledged"].as_u64().unwrap() >= 1000, "{rpo}");
    assert_eq!(rpo["lost"], 0, "{rpo}");
    assert_eq!(rpo["found"], rpo["acknowledged"], "{rpo}");
    let windows = r["load"]["windows"].as_array().unwrap();
    let names: Vec<&str> = windows.iter().map(|w| w["window"].as_str().unwrap()).collect();
    assert_eq!(names, ["before", "during", "after"], "{windows:#?}");

    // What the lost primary had queued for another domain is all queued at the
    // survivor, counted by the drill's check.
    let queue = &r["outbound_queue"];
    assert_eq!(queue["before_site"], primary.as_str(), "{queue}");
    assert_ne!(queue["after_site"], primary.as_str(), "read at the new primary: {queue}");
    assert_eq!(queue["before_messages"], QUEUED as u64, "{queue}");
    assert_eq!(queue["still_queued"], QUEUED as u64, "{queue}");
    assert_eq!(queue["unaccounted"], 0, "{queue}");
    let steps = r["steps"].as_array().unwrap();
    let check = steps.iter().find(|s| s["name"].as_str().unwrap().contains("queued for other domains")).unwrap();
    assert_eq!(check["outcome"], "done", "{check}");

    // The drill's SMTP and IMAP RTO agree with the observer's within 10 %.
    let observed: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    // The observer probed all along: none of its probes waited for a free slot.
    assert_eq!(observed["skipped"], serde_json::json!({ "smtp": 0, "imap": 0 }), "the observer skipped probes");
    let fault = r["rto"]["fault_at_ms"].as_u64().unwrap();
    for (protocol, key) in [("smtp", "first_smtp_ok_ms"), ("imap", "first_imap_ok_ms")] {
        let drill = r["rto"][key].as_u64().unwrap_or_else(|| panic!("the drill measured no {key}: {}", r["rto"]));
        let seen = observed_rto(observed[protocol].as_array().unwrap(), fault)
            .unwrap_or_else(|| panic!("the observer saw no {protocol} recovery"));
        let diff = drill.abs_diff(seen);
        println!("{protocol}: drill {drill} ms, observer {seen} ms, difference {diff} ms");
        assert!(
            diff * 10 <= seen.max(drill),
            "{protocol} RTO: the drill measured {drill} ms, the independent observer {seen} ms (more than 10 % apart)"
        );
    }
}
