//! The lagged role, end to end: a four-site lab (bj, sh data, hz witness, lg
//! lagged by a few seconds) where logical corruption (a client
//! expunging the whole INBOX) is undone by holding the lagged site before the
//! corruption reaches it and promoting it with a forced failover.
//!
//! What must hold:
//! - lg stores every entry at once (its log keeps up) but applies each one only
//!   after its delay; it serves no mail.
//! - `maildr cluster hold-apply` stops lg applying: past the delay its applied index
//!   stays where the hold says, across a restart of lg too; `release-apply` lets
//!   the waiting entries through.
//! - Refusals change nothing: holding a data site, promoting lg while a primary is
//!   alive, promoting an unheld lagged site.
//! - With the old sites gone, a forced failover to the held lg discards the
//!   entries it did not apply, says so, and lg then serves the mail as it was
//!   before the corruption, and takes new mail.

mod common;

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::lab::{send_tagged, Lab, Told, ONE_LAB_AT_A_TIME};
use common::output_text as text;
use serde_json::Value;

/// lg's apply delay. Long enough that a status read right after a delivery sees
/// the entry still waiting even on a slow machine.
const DELAY_SECS: u64 = 8;
const OPERATOR: &str = "test-operator";

fn serves_smtp(ip: &str) -> bool {
    let addr: SocketAddr = format!("{ip}:2525").parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// The applied index in a site's status (0 before its first apply).
fn applied(status: &Value) -> u64 {
    assert!(status.is_object(), "no status: {status}");
    status["applied_index"].as_u64().unwrap_or(0)
}

/// Poll `site`'s own status until `ok` holds (bounded); returns that status.
fn wait_for(lab: &Lab, site: &str, within: Duration, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let status = lab.site_status(site);
        if ok(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "{site}: {what} not within {within:?}: {status}\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Python's imaplib, as a client no one here wrote: flag every message in alice's
/// INBOX at `ip` \Deleted and expunge them. Prints how many were there.
fn expunge_everything(lab: &Lab, ip: &str) -> usize {
    let script = r#"
import imaplib, sys
c = imaplib.IMAP4(sys.argv[1], 2143)
c.login(sys.argv[2], sys.argv[3])
typ, data = c.select("INBOX")
assert typ == "OK", data
n = int(data[0])
typ, data = c.store("1:*", "+FLAGS", "(\\Deleted)")
assert typ == "OK", data
typ, data = c.expunge()
assert typ == "OK", data
c.logout()
print(n)
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, ip, "alice@example.test", &lab.password("alice@example.test")])
        .output()
        .expect("running python3");
    assert!(out.status.success(), "imaplib expunge: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("a message count")
}

#[test]
fn a_held_lagged_site_keeps_the_state_from_before_a_corruption_and_a_forced_failover_restores_it() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_with("127.93", &["--lagged", &DELAY_SECS.to_string()]);
    let primary = lab.wait_for_primary("bj", Duration::from_secs(10), None);
    let (primary_ip, lg_ip) = (lab.ip(&primary), lab.ip("lg"));
    assert!(!serves_smtp(&lg_ip), "a lagged site serves no mail");
    let delay = Duration::from_secs(DELAY_SECS);

    // 1. Entries reach lg at once but are applied only after the delay.
    let mut before = BTreeSet::new();
    for n in 0..5 {
        let tag = format!("before-{n}");
        assert_eq!(send_tagged(&primary_ip, &tag), Told::Accepted, "{tag}");
        before.insert(tag);
    }
    let acked_at = Instant::now();
    let primary_applied = applied(&lab.site_status(&primary));
    let lg = wait_for(&lab, "lg", Duration::from_secs(5), "holds the new entries in its log", |s| {
        s["last_log_index"].as_u64() >= Some(primary_applied)
    });
    assert!(applied(&lg) < primary_applied, "lg applied the new mail at once: {lg}");
    assert_eq!(lg["role"], "lagged");
    assert_eq!(lg["apply_delay"]["delay_secs"], DELAY_SECS, "{lg}");
    assert!(lg["apply_delay"]["pending_entries"].as_u64() > Some(0), "{lg}");
    assert!(lg["apply_delay"]["hold"].is_null(), "{lg}");
    wait_for(&lab, "lg", delay + Duration::from_secs(20), "applied the new mail", |s| {
        s["applied_index"].as_u64() >= Some(primary_applied)
    });
    assert!(acked_at.elapsed() >= delay - Duration::from_secs(1), "applied before its delay: {:?}", acked_at.elapsed());

    // 2. A hold stops it; a release lets the waiting entries through.
    let held = lab.cluster("bj", &["hold-apply", "--site", "lg", "--by", OPERATOR]);
    assert!(held.status.success(), "hold-apply: {}", text(&held));
    let held_at = applied(&lab.site_status("lg"));
    assert!(
        String::from_utf8_lossy(&held.stdout).contains(&format!("holds at applied index {held_at}")),
        "{}",
        text(&held)
    );
    assert!(lab.data_dir("lg").join(maildr_cluster::raft::apply_delay::APPLY_HOLD_FILE).exists());
    assert_eq!(send_tagged(&primary_ip, "while-held"), Told::Accepted);
    std::thread::sleep(delay + Duration::from_secs(2));
    let lg = lab.site_status("lg");
    assert_eq!(applied(&lg), held_at, "a held site applied past its hold: {lg}");
    assert_eq!(lg["apply_delay"]["hold"]["by"], OPERATOR, "{lg}");
    assert_eq!(lg["apply_delay"]["hold"]["applied_index"], held_at, "{lg}");
    let human = lab.cluster("bj", &["status"]);
    assert!(
        String::from_utf8_lossy(&human.stdout).contains(&format!("HELD at applied index {held_at} by {OPERATOR}")),
        "{}",
        text(&human)
    );

    let released = lab.cluster("bj", &["release-apply", "--site", "lg"]);
    assert!(released.status.success(), "release-apply: {}", text(&released));
    assert!(String::from_utf8_lossy(&released.stdout).contains("applies again"), "{}", text(&released));
    let primary_applied = applied(&lab.site_status(&primary));
    wait_for(&lab, "lg", Duration::from_secs(10), "applied what waited (its delay had passed)", |s| {
        s["applied_index"].as_u64() >= Some(primary_applied) && s["apply_delay"]["hold"].is_null()
    });
    assert!(!lab.data_dir("lg").join(maildr_cluster::raft::apply_delay::APPLY_HOLD_FILE).exists());
    before.insert("while-held".to_string());
    let verified = lab.cluster("bj", &["verify"]);
    assert!(verified.status.success(), "verify with a lagged member: {}", text(&verified));
    let said = String::from_utf8_lossy(&verified.stdout);
    assert!(said.contains("not compared: lg is lagged") && said.contains("no divergence"), "{said}");

    // 3. Refusals change nothing.
    let refused = lab.cluster("bj", &["hold-apply", "--site", "sh", "--by", OPERATOR]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only a lagged site"), "{}", text(&refused));
    assert!(!lab.data_dir("sh").join(maildr_cluster::raft::apply_delay::APPLY_HOLD_FILE).exists());
    let refused = lab.cluster("lg", &["failover", "--force", "--to", "lg", "--by", OPERATOR, "--accept-data-loss"]);
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("hold-apply"), "unheld: {}", text(&refused));
    assert!(lab.site_status("lg")["forced_failover"].is_null());

    // 4. The corruption: a client expunges the whole INBOX. The operator notices
    //    within the delay and holds lg before it applies the expunge.
    let expunged = expunge_everything(&lab, &primary_ip);
    assert_eq!(expunged, before.len(), "the INBOX held every message before the corruption");
    let held = lab.cluster("bj", &["hold-apply", "--site", "lg", "--by", OPERATOR]);
    assert!(held.status.success(), "hold-apply: {}", text(&held));
    let held_at = applied(&lab.site_status("lg"));
    assert!(lab.inbox(&primary).is_empty(), "the corruption reached the primary");
    assert_eq!(send_tagged(&primary_ip, "after-corruption"), Told::Accepted);

    let refused = lab.cluster("lg", &["failover", "--force", "--to", "lg", "--by", OPERATOR, "--accept-data-loss"]);
    assert!(!refused.status.success(), "refused while a primary is alive: {}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("switchover"), "{}", text(&refused));

    // 5. A held site stays held across its own restart.
    lab.kill("lg");
    lab.start("lg");
    let lg = wait_for(&lab, "lg", Duration::from_secs(20), "back, and still held", |s| {
        s["apply_delay"]["hold"]["by"] == OPERATOR
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(applied(&lab.site_status("lg")), held_at, "applied past its hold after a restart: {lg}");

    // 6. The old cluster goes away, and lg is promoted with the state it held.
    for site in ["bj", "sh", "hz"] {
        lab.kill(site);
    }
    wait_for(&lab, "lg", Duration::from_secs(20), "silence from the primary", |s| {
        s["primary_contact"]["heard_ms_ago"].as_u64().is_some_and(|ms| ms > 2_000)
    });
    let promoted = lab.cluster("lg", &["failover", "--force", "--to", "lg", "--by", OPERATOR, "--accept-data-loss"]);
    assert!(promoted.status.success(), "forced failover to lg: {}\n{}", text(&promoted), lab.logs());
    let said = String::from_utf8_lossy(&promoted.stdout);
    assert!(said.contains(&format!("held by {OPERATOR} at applied index {held_at}")), "{said}");
    assert!(said.contains("DISCARDED"), "{said}");
    let status = wait_for(&lab, "lg", Duration::from_secs(30), "leads", |s| s["state"] == "Leader");
    assert_eq!(status["voters"], serde_json::json!([5]), "lg is the only voter: {status}");
    assert_eq!(status["forced_failover"]["last_log_index"], held_at, "{status}");

    let deadline = Instant::now() + Duration::from_secs(30);
    while !serves_smtp(&lg_ip) {
        assert!(Instant::now() < deadline, "lg does not serve SMTP after its promotion:\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let inbox: BTreeSet<String> = lab.inbox("lg").into_values().collect();
    assert_eq!(inbox, before, "lg serves the INBOX as it was before the expunge");
    assert_eq!(send_tagged(&lg_ip, "after-recovery"), Told::Accepted, "new mail at the promoted lagged site");
    let inbox: BTreeSet<String> = lab.inbox("lg").into_values().collect();
    assert!(inbox.contains("after-recovery") && !inbox.contains("after-corruption"), "{inbox:?}");
}
