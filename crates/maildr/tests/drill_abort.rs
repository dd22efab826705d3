//! A drill that stops early still cleans up and still reports: Ctrl-C and an abort
//! condition both run the rollback, undo every fault, write the report with the
//! verdict `aborted`, and stop the lab the drill started.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::lab::{maildr, ONE_LAB_AT_A_TIME};
use serde_json::Value;

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn start_drill(work: &Path, plan: &str, net: &str) -> Child {
    maildr()
        .args(["drill", "run", plan, "--net", net, "--lab-dir"])
        .arg(work.join("lab"))
        .arg("--data-dir")
        .arg(work.join("drills"))
        .arg("--report-dir")
        .arg(work.join("report"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting maildr drill run")
}

/// Wait for the child, bounded; its stdout and exit code.
fn finish(mut child: Child, within: Duration) -> (Option<i32>, String) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
            return (status.code(), out);
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("the drill did not end within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn report(work: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(work.join("report").join("report.json")).expect("report.json written"))
        .unwrap()
}

fn assert_rolled_back_and_reported(work: &Path, r: &Value) {
    assert_eq!(r["verdict"], "aborted", "{:#}", r["abort_reason"]);
    let rollback: Vec<&Value> = r["steps"].as_array().unwrap().iter().filter(|s| s["rollback"] == true).collect();
    assert!(!rollback.is_empty() && rollback.iter().all(|s| s["outcome"] == "done"), "{rollback:#?}");
    let restored = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "restore" && e["detail"].as_str().unwrap_or_default().contains("bj killed undone"));
    assert!(restored, "the killed primary was started again: {:#}", r["timeline"]);
    assert!(r["steps"].as_array().unwrap().iter().any(|s| s["outcome"] == "skipped"), "later steps were skipped");
    assert_eq!(r["rpo"]["lost"], 0, "{}", r["rpo"]);
    assert!(!work.join("lab").join("lab.json").exists(), "the drill's lab was stopped");
    let audit = maildr().args(["audit", "verify", "--data-dir"]).arg(work.join("drills")).output().unwrap();
    assert!(audit.status.success());
    let log = std::fs::read_to_string(work.join("drills").join("audit.jsonl")).unwrap();
    assert!(log.contains("\"drill_aborted\""), "the abort is audited");
}

#[test]
fn ctrl_c_during_a_drill_runs_the_rollback_and_still_writes_the_report() {
    let _one = one_lab();
    let work = tempfile::tempdir().unwrap();
    let mut child = start_drill(work.path(), "node-failure", "127.111");
    // Progress lines go to stderr (not a terminal: one line per step). Interrupt
    // once the primary has been killed and the drill waits for the election.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    // Keep reading stderr to its end, so the drill never writes into a closed pipe.
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(120)) {
        seen.push(line.clone());
        if line.contains("The cluster elects a new primary") {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.contains("elects")), "the drill never reached the election: {seen:#?}");
    let sigint = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sigint.success());
    let (code, stdout) = finish(child, Duration::from_secs(300));
    let _ = reader.join();
    assert_eq!(code, Some(1), "an aborted drill exits 1:\n{stdout}");
    assert!(stdout.contains("ABORTED"), "{stdout}");
    let r = report(work.path());
    assert!(r["abort_reason"].as_str().unwrap().contains("Ctrl-C"), "{}", r["abort_reason"]);
    assert_rolled_back_and_reported(work.path(), &r);
}

#[test]
fn an_abort_condition_stops_the_drill_and_the_rollback_still_runs() {
    let _one = one_lab();
    let work = tempfile::tempdir().unwrap();
    // node-failure with a limit no failover can meet: no primary for 100 ms.
    let plan = maildr_drill_scenario("node-failure").replace("no_primary_for_ms = 60000", "no_primary_for_ms = 100");
    assert!(plan.contains("no_primary_for_ms = 100"));
    let path = work.path().join("impatient.toml");
    std::fs::write(&path, plan).unwrap();
    let child = start_drill(work.path(), path.to_str().unwrap(), "127.112");
    let (code, stdout) = finish(child, Duration::from_secs(300));
    assert_eq!(code, Some(1), "{stdout}");
    let r = report(work.path());
    assert!(r["abort_reason"].as_str().unwrap().contains("no_primary_for_ms = 100"), "{}", r["abort_reason"]);
    assert_rolled_back_and_reported(work.path(), &r);
}

fn maildr_drill_scenario(name: &str) -> String {
    std::fs::read_to_string(common::workspace_root().join("scenarios").join(format!("{name}.toml"))).unwrap()
}
