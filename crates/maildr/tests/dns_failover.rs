//! DNS follows the primary: lab tests of the control plane with three real site
//! processes. Clients find sites only through the lab's own DNS servers, the way
//! external senders and mail clients do.

mod common;

use std::time::{Duration, Instant};

use common::dns::{mx_hosts, resolve};
use common::lab::{imap_subjects, send_tagged, Lab, Told, ONE_LAB_AT_A_TIME};
use hickory_proto::rr::RecordType;

/// The lab's DNS port on every data site.
const DNS_PORT: u16 = 5353;

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the DNS server of `site` says: (`mail.` addresses, MX hosts in order).
fn steering_seen_at(lab: &Lab, site: &str) -> Option<(Vec<String>, Vec<String>)> {
    let ip = lab.ip(site);
    let mail = resolve(&ip, DNS_PORT, "mail.example.test.", RecordType::A)?;
    let mx = mx_hosts(&ip, DNS_PORT, "example.test.")?;
    Some((mail, mx))
}

/// Wait until `site`'s DNS shows `mail.` at `mail_site` and MX `mx` (site names).
fn wait_for_dns(lab: &Lab, site: &str, mail_site: &str, mx: &[&str], within: Duration) -> Duration {
    let started = Instant::now();
    let want = (vec![lab.ip(mail_site)], mx.iter().map(|s| format!("{s}.example.test.")).collect::<Vec<_>>());
    let mut last = None;
    while started.elapsed() < within {
        last = steering_seen_at(lab, site);
        if last.as_ref() == Some(&want) {
            return started.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{site}'s DNS never showed {want:?} within {within:?}; last {last:?}\n{}", lab.logs());
}

/// Resolve like a sending MTA: the first MX host, then its address.
fn mx_address(lab: &Lab, dns_site: &str) -> String {
    let ip = lab.ip(dns_site);
    let hosts = mx_hosts(&ip, DNS_PORT, "example.test.").expect("an MX answer");
    let first = hosts.first().expect("at least one MX host");
    resolve(&ip, DNS_PORT, first, RecordType::A).expect("an A answer for the MX host").remove(0)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Wait until `observer`'s last probe round of `site` succeeded.
fn wait_until_probed_healthy(lab: &Lab, observer: &str, site: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let last = lab.api_get(observer, &format!("/api/health/history?site={site}&limit=1"));
        if last["sites"][0]["samples"][0]["ok"] == true {
            return;
        }
        assert!(Instant::now() < deadline, "{observer} never probed {site} healthy within {within:?}: {last:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `GET /api/health/history` at sh: bj's samples are good before `killed_at_ms` and
/// failed, with a reason, from a probe round after it; sh sees itself healthy; the
/// limit holds; an unknown site is refused naming the parameter.
fn assert_history_shows_the_kill(lab: &Lab, killed_at_ms: i64) {
    let all = lab.api_get("sh", "/api/health/history");
    assert_eq!(all["observer"], "sh", "{all:#}");
    let sites: Vec<&str> = all["sites"].as_array().unwrap().iter().map(|s| s["site"].as_str().unwrap()).collect();
    assert_eq!(sites, ["bj", "sh"], "every data site sh observes: {all:#}");
    let own = &all["sites"][1]["samples"];
    let own_ok = own.as_array().unwrap().iter().rev().take(3).all(|s| s["ok"] == true);
    assert!(own_ok, "sh probes itself fine: {own:#}");

    let bj = lab.api_get("sh", "/api/health/history?site=bj");
    let samples = bj["sites"][0]["samples"].as_array().unwrap().clone();
    assert_eq!(bj["sites"].as_array().unwrap().len(), 1, "only bj: {bj:#}");
    let at = |s: &serde_json::Value| s["at_ms"].as_i64().unwrap();
    assert!(samples.windows(2).all(|w| at(&w[0]) <= at(&w[1])), "oldest first: {samples:#?}");
    let before: Vec<_> = samples.iter().filter(|s| at(s) < killed_at_ms).collect();
    assert!(
        before.last().is_some_and(|s| s["ok"] == true),
        "bj was healthy before the kill at {killed_at_ms}: {samples:#?}"
    );
    // A round that started before the kill may end after it; from the second round
    // after the kill on, every one failed.
    let after: Vec<_> = samples.iter().filter(|s| at(s) > killed_at_ms).skip(1).collect();
    assert!(after.len() >= 2, "rounds after the kill: {samples:#?}");
    for s in &after {
        assert_eq!(s["ok"], false, "bj is dead: {s}");
        assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "a failed round says why: {s}");
        assert!(s["smtp_ms"].is_null(), "no SMTP latency from a dead site: {s}");
    }
    let ok_latency = before.last().map(|s| s["smtp_ms"].as_f64());
    assert!(ok_latency.flatten().is_some_and(|ms| ms >= 0.0), "a good round has its latency: {samples:#?}");

    let two = lab.api_get("sh", "/api/health/history?site=bj&limit=2");
    assert_eq!(two["sites"][0]["samples"].as_array().unwrap().len(), 2, "{two:#}");
    let (status, refused) = lab.api_call("sh", "GET", "/api/health/history?site=nowhere", None);
    assert_eq!((status, refused["field"].as_str()), (404, Some("site")), "{refused}");
    let (status, refused) = lab.api_call("sh", "GET", "/api/health/history?limit=0", None);
    assert_eq!((status, refused["field"].as_str()), (422, Some("limit")), "{refused}");
}

#[test]
fn killing_the_primary_moves_mail_and_mx_to_the_survivor_and_clients_follow_dns() {
    let _one = one_lab();
    let lab = Lab::up("127.81");
    lab.wait_for_primary_to_be("bj", "bj", Duration::from_secs(10));
    // Both data sites answer alike: mail. at the primary, MX primary first.
    for site in ["bj", "sh"] {
        wait_for_dns(&lab, site, "bj", &["bj", "sh"], Duration::from_secs(10));
    }
    // A hosted name outside the zone data gets NXDOMAIN (no answer records), and a
    // domain not hosted is refused rather than answered.
    assert_eq!(resolve(&lab.ip("sh"), DNS_PORT, "nothing.example.test.", RecordType::A), Some(vec![]));
    assert_eq!(resolve(&lab.ip("sh"), DNS_PORT, "example.org.", RecordType::A), Some(vec![]));
    let mut tags = Vec::new();
    for i in 0..5 {
        let tag = format!("before-{i}");
        assert_eq!(send_tagged(&mx_address(&lab, "sh"), &tag), Told::Accepted);
        tags.push(tag);
    }
    wait_until_probed_healthy(&lab, "sh", "bj", Duration::from_secs(10));
    let killed_at_ms = now_ms();
    lab.kill("bj");
    let took = wait_for_dns(&lab, "sh", "sh", &["sh"], Duration::from_secs(20));
    eprintln!("DNS at sh pointed mail. and MX at sh {} ms after the kill", took.as_millis());
    // A sender that resolves MX now reaches the survivor and is accepted there.
    let mx = mx_address(&lab, "sh");
    assert_eq!(mx, lab.ip("sh"));
    assert_eq!(send_tagged(&mx, "after"), Told::Accepted);
    tags.push("after".into());
    // A mail client that resolves mail. reads everything there.
    let mail = resolve(&lab.ip("sh"), DNS_PORT, "mail.example.test.", RecordType::A).unwrap().remove(0);
    let subjects: Vec<String> =
        imap_subjects(&mail, "alice@example.test", &lab.password("alice@example.test")).into_values().collect();
    for tag in &tags {
        assert!(subjects.contains(tag), "{tag} missing from {subjects:?}");
    }
    // The event log tells the story in order, with millisecond times: sh elected,
    // the DNS change committed, then served at sh; bj detected down by a majority.
    let events = lab.api_get("sh", "/api/events")["events"].as_array().unwrap().clone();
    let find = |kind: &str, site: &str, after_ms: i64| -> i64 {
        events
            .iter()
            .filter(|e| e["kind"] == kind && e["site"] == site && e["at_ms"].as_i64().unwrap() >= after_ms)
            .map(|e| e["at_ms"].as_i64().unwrap())
            .next()
            .unwrap_or_else(|| panic!("no {kind} event for {site} after {after_ms} in {events:#?}"))
    };
    let elected = find("elected", "sh", 0);
    let committed = find("dns_committed", "sh", elected);
    let served = find("dns_served", "sh", committed);
    let detected = find("detected", "bj", 0);
    assert!(elected <= committed && committed <= served, "{events:#?}");
    let mx_committed = find("dns_committed", "sh", detected);
    assert!(detected <= mx_committed, "{events:#?}");
    let health = lab.api_get("sh", "/api/health");
    let bj = health["verdicts"].as_array().unwrap().iter().find(|v| v["site"] == "bj").unwrap().clone();
    assert_eq!((bj["majority_down"].as_bool(), bj["listed"].as_bool()), (Some(true), Some(false)), "{health:#}");
    let served_records = lab.api_get("sh", "/api/dns/records");
    assert!(
        served_records["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "mail.example.test." && r["data"] == lab.ip("sh")),
        "{served_records:#}"
    );
    // sh's own probe history of bj: good rounds before the kill, failed rounds
    // (with the reason) after it.
    assert_history_shows_the_kill(&lab, killed_at_ms);
    // The old primary comes back: once caught up and past the hold-down it is
    // listed again, after the new primary; mail. stays where the primary is.
    lab.start("bj");
    wait_for_dns(&lab, "sh", "sh", &["sh", "bj"], Duration::from_secs(30));
    wait_for_dns(&lab, "bj", "sh", &["sh", "bj"], Duration::from_secs(30));
}

#[test]
fn one_observer_with_a_broken_link_does_not_move_dns_and_a_majority_does() {
    let _one = one_lab();
    let lab = Lab::up("127.82");
    lab.wait_for_primary_to_be("bj", "bj", Duration::from_secs(10));
    wait_for_dns(&lab, "bj", "bj", &["bj", "sh"], Duration::from_secs(10));
    // The steady state first: every observer sees both data sites up (their
    // probes fail until `lab up` has made the probe account).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let health = lab.api_get("bj", "/api/health");
        let observers = health["observers"].as_array().cloned().unwrap_or_default();
        let all_up = observers.len() == 3
            && observers
                .iter()
                .all(|o| o["observations"]["targets"].as_array().is_some_and(|t| t.iter().all(|t| t["up"] == true)));
        if all_up {
            break;
        }
        assert!(Instant::now() < deadline, "the observers never all saw both sites up: {health:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // hz can no longer reach sh: hz alone calls sh down.
    lab.set_link("hz-sh", r#"{"forward":{"blackhole":true},"backward":{"blackhole":true}}"#);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let health = lab.api_get("bj", "/api/health");
        let hz_says_sh_up =
            health["observers"].as_array().unwrap().iter().find(|o| o["observer"] == "hz").and_then(|o| {
                o["observations"]["targets"].as_array()?.iter().find(|t| t["site"] == "sh")?["up"].as_bool()
            });
        if hz_says_sh_up == Some(false) {
            let sh = health["verdicts"].as_array().unwrap().iter().find(|v| v["site"] == "sh").unwrap().clone();
            assert_eq!(sh["votes"]["down"], 1, "{health:#}");
            assert_eq!((sh["majority_down"].as_bool(), sh["listed"].as_bool()), (Some(false), Some(true)));
            break;
        }
        assert!(Instant::now() < deadline, "hz never called sh down: {health:#}\n{}", lab.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    // Give the primary several more rounds; one vote of three moves nothing.
    std::thread::sleep(Duration::from_secs(2));
    for site in ["bj", "sh"] {
        let seen = steering_seen_at(&lab, site).unwrap();
        assert_eq!(seen.1, ["bj.example.test.", "sh.example.test."], "one observer moved DNS at {site}");
    }
    // sh stops answering anyone: bj and hz agree, a majority, and MX drops it.
    lab.pause("sh");
    wait_for_dns(&lab, "bj", "bj", &["bj"], Duration::from_secs(15));
    // Healed and resumed, sh is listed again after the hold-down.
    lab.heal_link("hz-sh");
    lab.resume("sh");
    wait_for_dns(&lab, "bj", "bj", &["bj", "sh"], Duration::from_secs(30));
    wait_for_dns(&lab, "sh", "bj", &["bj", "sh"], Duration::from_secs(30));
}
