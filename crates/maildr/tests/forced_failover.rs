//! Forced failover to the standby when quorum is gone: a four-site lab (bj, sh data,
//! hz witness, lz standby) loses bj, sh and hz to SIGKILL, and the operator promotes
//! lz with `maildr cluster failover --force`, or through lz's admin API
//! (`POST /api/cluster/failover`).
//!
//! What must hold: both refuse while a primary is alive, refuse without accepting the
//! data loss, refuse anything but a standby (and then change nothing), and otherwise
//! lz becomes the primary, serves SMTP and IMAP on its own address, accepts new mail,
//! still holds every message acknowledged before the disaster that it had applied,
//! the event log names the operator who forced it, and an old site restarted with
//! its old log is refused.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::process::Output;
use std::time::{Duration, Instant};

use common::lab::{send_tagged, Lab, Told, ONE_LAB_AT_A_TIME};
use common::output_text as text;
use serde_json::Value;

/// Messages delivered before the disaster.
const MESSAGES: usize = 20;
const OPERATOR: &str = "test-operator";

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

/// A lab with the standby, `MESSAGES` messages acknowledged at the primary and
/// applied at lz with every body; the acknowledged tags.
fn lab_with_a_caught_up_standby(net: &str) -> (Lab, BTreeSet<String>) {
    let lab = Lab::up_with(net, &["--standby"]);
    let primary = lab.wait_for_primary("bj", Duration::from_secs(10), None);
    assert!(!serves_smtp(&lab.ip("lz")), "a standby serves no mail");
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
    (lab, acked)
}

/// The disaster: both cities and the witness are gone, and lz has heard nothing
/// from a primary for more than two election timeouts (800 ms each in the lab).
fn lose_the_quorum(lab: &Lab) {
    for site in ["bj", "sh", "hz"] {
        lab.kill(site);
    }
    wait_for_lz(lab, Duration::from_secs(20), "silence from the primary", |s| {
        s["primary_contact"]["heard_ms_ago"].as_u64().is_some_and(|ms| ms > 2_000)
    });
}

/// lz is still an unpromoted learner that serves no mail.
fn assert_lz_unchanged(lab: &Lab, after: &str) {
    let status = lab.site_status("lz");
    assert_eq!(status["state"], "Learner", "still a learner after {after}: {status}");
    assert!(status["forced_failover"].is_null(), "after {after}: {status}");
    assert!(
        !lab.data_dir("lz").join(maildr_cluster::replicated::FORCE_FAILOVER_FILE).exists(),
        "no promotion under way after {after}"
    );
    assert!(!serves_smtp(&lab.ip("lz")), "still no mail served at lz after {after}");
}

#[test]
fn the_standby_is_promoted_only_by_an_explicit_forced_failover_and_keeps_what_it_had() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (lab, acked) = lab_with_a_caught_up_standby("127.91");
    let lz_ip = lab.ip("lz");

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

    lose_the_quorum(&lab);

    let refused = failover(&lab, "lz", &["--force"]);
    eprintln!("failover without --accept-data-loss:\n{}", text(&refused));
    assert!(!refused.status.success(), "refused without --accept-data-loss: {}", text(&refused));
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert!(stdout.contains("last log index") && stdout.contains("MAY BE LOST"), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--accept-data-loss"), "{}", text(&refused));
    std::thread::sleep(Duration::from_secs(1));
    assert_lz_unchanged(&lab, "a failover without --accept-data-loss");

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

/// The failover request body, as an operator's automation would send it.
fn failover_body(to: &str, by: &str, accept_data_loss: &str) -> String {
    format!(r#"{{"to":"{to}","by":"{by}","accept_data_loss":{accept_data_loss}}}"#)
}

#[test]
fn the_api_promotes_the_standby_only_when_asked_rightly_and_its_refusals_change_nothing() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (lab, acked) = lab_with_a_caught_up_standby("127.92");
    let failover = |body: &str| lab.api_call("lz", "POST", "/api/cluster/failover", Some(body));
    let forced_events = |lab: &Lab| -> Vec<Value> {
        let events = lab.api_get("lz", "/api/events")["events"].as_array().cloned().expect("an event list");
        events.into_iter().filter(|e| e["kind"] == "forced_failover").collect()
    };

    // With the quorum alive, the API refuses like the command line.
    let (status, body) = failover(&failover_body("lz", OPERATOR, "true"));
    assert_eq!(status, 409, "refused while lz hears from the primary: {body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("switchover"), "{body}");
    assert_lz_unchanged(&lab, "a failover while the quorum is alive");

    lose_the_quorum(&lab);
    let refusals: [(String, u16, &str, &str); 7] = [
        (format!(r#"{{"to":"lz","by":"{OPERATOR}"}}"#), 400, "accept_data_loss", "accept_data_loss"),
        (failover_body("lz", OPERATOR, "false"), 400, "accept_data_loss", "accept_data_loss"),
        (failover_body("lz", OPERATOR, r#""yes""#), 422, "accept_data_loss", ""),
        (failover_body("sh", OPERATOR, "true"), 422, "to", "only a standby"),
        (failover_body("hz", OPERATOR, "true"), 422, "to", "only a standby"),
        (failover_body("nowhere", OPERATOR, "true"), 422, "to", "no member site"),
        (failover_body("lz", " ", "true"), 422, "by", "by"),
    ];
    for (request, want_status, field, says) in &refusals {
        let (status, body) = failover(request);
        assert_eq!(status, *want_status, "{request}: {body}");
        assert_eq!(body["field"], *field, "{request}: the refusal names the field: {body}");
        assert!(body["error"].as_str().unwrap_or_default().contains(says), "{request}: {body}");
        assert_lz_unchanged(&lab, request);
    }
    assert!(forced_events(&lab).is_empty(), "no forced_failover event after the refusals");

    let (status, report) = failover(&failover_body("lz", OPERATOR, "true"));
    eprintln!("POST /api/cluster/failover: {status} {report:#}");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["accepted"]["by"], OPERATOR, "who did it: {report}");
    let loss = &report["loss"];
    assert_eq!(loss["site"], "lz", "{report}");
    let last_index = loss["last_log_index"].as_u64().expect("the standby's last index");
    assert_eq!(report["accepted"]["last_log_index"], last_index, "{report}");
    assert!(loss["primary_contact"]["heard_ms_ago"].as_u64().is_some_and(|ms| ms > 2_000), "{report}");
    assert!(loss["lag_entries_at_contact"].as_u64().is_some(), "the lag at the last contact: {report}");

    // lz restarts in place as the only voter; its API comes back and says it leads.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (code, status) = lab.api_call("lz", "GET", "/api/cluster/status", None);
        if code == 200 && status["state"] == "Leader" && status["forced_failover"]["event_recorded"] == true {
            break status;
        }
        assert!(Instant::now() < deadline, "lz does not lead after the API failover: {code} {status}\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["voters"], serde_json::json!([4]), "lz is the only voter: {status}");
    let forced = forced_events(&lab);
    assert_eq!(forced.len(), 1, "one forced_failover event at /api/events: {forced:?}");
    assert_eq!(forced[0]["site"], "lz");
    let detail = forced[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&format!("by {OPERATOR}")) && detail.contains(&last_index.to_string()), "{detail}");

    // Promoted once: a second request is refused, and lz serves what it had.
    let (status, body) = failover(&failover_body("lz", OPERATOR, "true"));
    assert_eq!(status, 409, "{body}");
    assert!(body["error"].as_str().unwrap_or_default().contains("already promoted"), "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serves_smtp(&lab.ip("lz")) {
        assert!(Instant::now() < deadline, "lz does not serve SMTP after its promotion:\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let inbox: BTreeSet<String> = lab.inbox("lz").into_values().collect();
    assert!(acked.is_subset(&inbox), "lz lost acknowledged messages it had applied: {:?}", acked.difference(&inbox));
}

#[test]
fn a_standby_cut_off_from_both_cities_is_not_promoted_while_they_keep_their_quorum() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (lab, acked) = lab_with_a_caught_up_standby("127.95");
    let primary = lab.wait_for_primary("bj", Duration::from_secs(10), None);
    // lz loses both cities; its link to the witness stays.
    for link in ["lz-bj", "bj-lz", "lz-sh", "sh-lz"] {
        let cut = lab.lab_cmd(&["link", "set", link, "--partition"]);
        assert!(cut.status.success(), "{}", text(&cut));
    }
    // Past two election timeouts (800 ms each in the lab). A status call through
    // lz's config waits for the cut members, so lz is asked once, after the wait.
    std::thread::sleep(Duration::from_millis(2_500));
    let status = lab.site_status("lz");
    assert!(status["primary_contact"]["heard_ms_ago"].as_u64().is_some_and(|ms| ms > 2_000), "{status}");
    // The silence alone would have let it through; the witness still has a primary.
    let refused = failover(&lab, "lz", &["--force", "--accept-data-loss"]);
    assert!(!refused.status.success(), "promoted while the cities had a quorum: {}", text(&refused));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("hz answers that node") && stderr.contains("quorum is alive"), "{}", text(&refused));
    std::thread::sleep(Duration::from_secs(1));
    assert_lz_unchanged(&lab, "a failover refused for a live quorum");
    assert_eq!(send_tagged(&lab.ip(&primary), "cities-still-serve"), Told::Accepted);

    // What lz last heard from the primary survives a restart of lz.
    assert!(lab.data_dir("lz").join(maildr_cluster::replicated::PRIMARY_CONTACT_FILE).exists());
    lab.kill("lz");
    assert!(lab.lab_cmd(&["start", "lz"]).status.success());
    let status = lab.site_status("lz");
    let primary_id = lab.site_status(&primary)["node_id"].as_u64();
    assert_eq!(status["primary_contact"]["primary"].as_u64(), primary_id, "after a restart: {status}");

    // A real loss of both cities and the witness: now it may be promoted.
    lose_the_quorum(&lab);
    let promoted = failover(&lab, "lz", &["--force", "--accept-data-loss"]);
    assert!(promoted.status.success(), "forced failover after the real loss: {}", text(&promoted));
    wait_for_lz(&lab, Duration::from_secs(30), "leads", |s| s["state"] == "Leader");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !serves_smtp(&lab.ip("lz")) {
        assert!(Instant::now() < deadline, "lz does not serve SMTP after its promotion:\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let inbox: BTreeSet<String> = lab.inbox("lz").into_values().collect();
    for tag in &acked {
        assert!(inbox.contains(tag), "{tag} lost");
    }
    // The old primary, back with its data where it reaches lz, is refused: it does
    // not serve mail.
    for link in ["lz-bj", "bj-lz", "lz-sh", "sh-lz"] {
        assert!(lab.lab_cmd(&["link", "heal", link]).status.success());
    }
    let restarted = lab.lab_cmd(&["start", &primary]);
    assert!(!restarted.status.success(), "{primary} came back into the old cluster: {}", text(&restarted));
    assert!(!serves_smtp(&lab.ip(&primary)));
}

#[test]
fn old_sites_that_learn_of_a_promotion_without_them_stop_serving_until_rejoined() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let (lab, _acked) = lab_with_a_caught_up_standby("127.96");
    let primary = lab.wait_for_primary("bj", Duration::from_secs(10), None);
    // lz is cut off from everyone: from where it stands, the quorum is lost, and
    // the operator at lz promotes it. The cities meanwhile still serve: two clusters.
    let links: Vec<String> = ["bj", "sh", "hz"].iter().flat_map(|s| [format!("lz-{s}"), format!("{s}-lz")]).collect();
    for link in &links {
        assert!(lab.lab_cmd(&["link", "set", link, "--partition"]).status.success());
    }
    std::thread::sleep(Duration::from_millis(2_500));
    let promoted = failover(&lab, "lz", &["--force", "--accept-data-loss"]);
    assert!(promoted.status.success(), "{}", text(&promoted));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !serves_smtp(&lab.ip("lz")) {
        assert!(Instant::now() < deadline, "lz does not serve SMTP after its promotion:\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(serves_smtp(&lab.ip(&primary)), "the old primary still serves while cut off from lz");
    // Once the network heals, the old sites learn of the promotion and stop serving.
    for link in &links {
        assert!(lab.lab_cmd(&["link", "heal", link]).status.success());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while serves_smtp(&lab.ip("bj")) || serves_smtp(&lab.ip("sh")) {
        assert!(Instant::now() < deadline, "the old cities still serve mail after they could learn of the promotion");
        std::thread::sleep(Duration::from_millis(500));
    }
    // Each old site's process ends (after its sessions had their few seconds).
    let pids: Vec<u64> = lab.read_status()["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["site"] != "lz")
        .filter_map(|s| s["pid"].as_u64())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while pids.iter().any(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists()) {
        assert!(Instant::now() < deadline, "a fenced site's process did not end: {pids:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    for site in ["bj", "sh", "hz"] {
        let log = std::fs::read_to_string(lab.lab_dir().join(format!("sites/{site}/serve.log"))).unwrap_or_default();
        // Fenced while running, or (if it happened to restart meanwhile) at start.
        assert!(log.contains("promoted by a forced failover"), "{site}: {log}");
        assert!(lab.data_dir(site).join(maildr_cluster::replicated::FENCED_FILE).exists(), "{site}");
    }
    // Cut off from lz again, an old site still does not come back on its own.
    for link in ["bj-lz", "lz-bj"] {
        assert!(lab.lab_cmd(&["link", "set", link, "--partition"]).status.success());
    }
    let restarted = lab.lab_cmd(&["start", "bj"]);
    assert!(!restarted.status.success(), "bj came back while fenced: {}", text(&restarted));
    assert!(!serves_smtp(&lab.ip("bj")));
    assert_eq!(send_tagged(&lab.ip("lz"), "after-fencing"), Told::Accepted);
}
