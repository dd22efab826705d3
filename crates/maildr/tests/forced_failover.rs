//! Forced failover to the standby when quorum is gone: a four-site lab (bj, sh data,
//! hz witness, lz standby) loses bj, sh and hz to SIGKILL, and the operator promotes
//! lz with `maildr cluster failover --force`.
//!
//! What must hold: the command refuses while a primary is alive, refuses without
//! `--accept-data-loss` (and then changes nothing), and with it lz becomes the
//! primary, serves SMTP and IMAP on its own address, accepts new mail, still holds
//! every message acknowledged before the disaster that it had applied, the event log
//! names the operator who forced it, and an old site restarted with its old log is
//! refused.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

use common::lab::{send_tagged, Lab, Told, ONE_LAB_AT_A_TIME};

/// Messages delivered before the disaster.
const MESSAGES: usize = 20;
const OPERATOR: &str = "test-operator";

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn failover(lab: &Lab, to: &str, extra: &[&str]) -> Output {
    let mut args = vec!["failover", "--to", to, "--by", OPERATOR];
    args.extend_from_slice(extra);
    lab.cluster("lz", &args)
}

/// Poll `lz`'s own status until `ok` holds (bounded); returns that status.
fn wait_for_lz(lab: &Lab, within: Duration, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let status = lab.site_status("lz");
        if ok(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "lz: {what} not within {within:?}: {status}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn serves_smtp(ip: &str) -> bool {
    let addr: SocketAddr = format!("{ip}:2525").parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

#[test]
fn the_standby_is_promoted_only_by_an_explicit_forced_failover_and_keeps_what_it_had() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_with("127.91", &["--standby"]);
    let primary = lab.wait_for_primary("bj", Duration::from_secs(10), None);
    let lz_ip = lab.ip("lz");
    assert!(!serves_smtp(&lz_ip), "a standby serves no mail");

    let mut acked = BTreeSet::new();
    for n in 0..MESSAGES {
        let tag = format!("before-{n:03}");
        assert_eq!(send_tagged(&lab.ip(&primary), &tag), Told::Accepted, "{tag} at the primary {primary}");
        acked.insert(tag);
    }
    let primary_applied = lab.site_status(&primary)["applied_index"].as_u64().expect("the primary's applied index");
    let standby = wait_for_lz(&lab, Duration::from_secs(30), "applied everything with every body", |s| {
        s["state"] == "Learner" && s["applied_index"].as_u64() >= Some(primary_applied) && s["missing_bodies"] == 0
    });
    assert!(standby["learners"].as_array().unwrap().contains(&4.into()), "lz is a learner: {standby}");

    // With the quorum alive, a forced failover is the wrong tool.
    let refused = failover(&lab, "lz", &["--force", "--accept-data-loss"]);
    assert!(!refused.status.success(), "refused while lz hears from the primary: {}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("switchover"), "{}", text(&refused));
    // Only a standby is promoted; and clap insists on --force.
    let refused = failover(&lab, "sh", &["--force", "--accept-data-loss"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only a standby"), "{}", text(&refused));
    let refused = failover(&lab, "lz", &["--accept-data-loss"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"), "{}", text(&refused));

    // The disaster: both cities and the witness are gone.
    for site in ["bj", "sh", "hz"] {
        lab.kill(site);
    }
    // Past two election timeouts (800 ms each in the lab) without a primary.
    wait_for_lz(&lab, Duration::from_secs(20), "silence from the primary", |s| {
        s["primary_contact"]["heard_ms_ago"].as_u64().is_some_and(|ms| ms > 2_000)
    });

    let refused = failover(&lab, "lz", &["--force"]);
    eprintln!("failover without --accept-data-loss:\n{}", text(&refused));
    assert!(!refused.status.success(), "refused without --accept-data-loss: {}", text(&refused));
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(stdout.contains("last log index") && stdout.contains("MAY BE LOST"), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--accept-data-loss"), "{}", text(&refused));
    std::thread::sleep(Duration::from_secs(1));
    let unchanged = lab.site_status("lz");
    assert_eq!(unchanged["state"], "Learner", "still a learner: {unchanged}");
    assert!(unchanged["forced_failover"].is_null(), "{unchanged}");
    assert!(!serves_smtp(&lz_ip), "still no mail served at lz");

    let promoted = failover(&lab, "lz", &["--force", "--accept-data-loss"]);
    assert!(promoted.status.success(), "forced failover: {}\n{}", text(&promoted), lab.logs());
    let status = wait_for_lz(&lab, Duration::from_secs(30), "leads and recorded the event", |s| {
        s["state"] == "Leader" && s["forced_failover"]["event_recorded"] == true
    });
    assert_eq!(status["voters"], serde_json::json!([4]), "lz is the only voter: {status}");
    assert_eq!(status["forced_failover"]["by"], OPERATOR);

    let deadline = Instant::now() + Duration::from_secs(30);
    while !serves_smtp(&lz_ip) {
        assert!(Instant::now() < deadline, "lz does not serve SMTP after its promotion:\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(send_tagged(&lz_ip, "after-failover"), Told::Accepted, "new mail at the promoted standby");
    let inbox: BTreeSet<String> = lab.inbox("lz").into_values().collect();
    for tag in &acked {
        assert!(inbox.contains(tag), "{tag} was acknowledged and applied at lz before the disaster, but is gone");
    }
    assert!(inbox.contains("after-failover"), "{inbox:?}");

    // An old site that comes back with its old log is refused: it must rejoin as a
    // new site, not pull the cluster back to the old membership.
    let restarted = lab.lab_cmd(&["start", "bj"]);
    assert!(!restarted.status.success(), "bj came back under its old id: {}", text(&restarted));
    let bj_log = std::fs::read_to_string(lab.lab_dir().join("sites/bj/serve.log")).unwrap_or_default();
    assert!(bj_log.contains("promoted by a forced failover"), "bj's log says why: {bj_log}");
    assert_eq!(lab.site_status("lz")["state"], "Leader", "lz still leads");

    // The event log, read from lz's store once it has stopped.
    let down = lab.lab_cmd(&["down", "--keep"]);
    assert!(down.status.success(), "{}", text(&down));
    let store = maildr_store::Store::open(&lab.data_dir("lz")).expect("opening lz's store after lab down");
    let events = store.events(0, 10_000).expect("reading the event log");
    let forced: Vec<_> = events.iter().filter(|e| e.kind == maildr_store::ControlEventKind::ForcedFailover).collect();
    assert_eq!(forced.len(), 1, "one forced_failover event: {events:?}");
    assert_eq!(forced[0].site.as_deref(), Some("lz"));
    assert!(forced[0].detail.contains(&format!("by {OPERATOR}")), "{:?}", forced[0]);
    assert!(forced[0].detail.contains("may be lost"), "{:?}", forced[0]);
}
