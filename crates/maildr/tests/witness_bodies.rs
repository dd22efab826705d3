//! The witness keeps message bodies only until both data sites hold them
//! (DESIGN: "keeps message bodies only until both data sites hold them"), in a
//! three-site lab (bj, sh data; hz witness).
//!
//! What must hold: once mail has reached both data sites, the witness's blob
//! directory empties; while one data site is down, the witness keeps the bodies of
//! the mail that site lacks (it may be one of the two copies); once that site is
//! back and has fetched them, the witness drops those too; and every body is then
//! readable in full over IMAP at the site that was down, even with the other data
//! site gone.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::lab::{imap_bodies, send_tagged, Lab, Told, ONE_LAB_AT_A_TIME};

/// Message body files under a site's data directory.
fn body_files(data_dir: &Path) -> usize {
    let root = data_dir.join("blobs");
    let Ok(shards) = std::fs::read_dir(&root) else { return 0 };
    shards
        .flatten()
        .filter(|s| s.path().is_dir())
        .flat_map(|s| std::fs::read_dir(s.path()).into_iter().flatten().flatten())
        .filter(|f| f.path().extension().is_none())
        .count()
}

fn wait_until(within: Duration, what: &str, mut ok: impl FnMut() -> bool, detail: impl Fn() -> String) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} not within {within:?}: {}", detail());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The tags of the messages whose full text IMAP serves in alice's INBOX at `site`.
fn tags_in_bodies(lab: &Lab, site: &str) -> BTreeSet<String> {
    imap_bodies(&lab.ip(site), "alice@example.test", &lab.password("alice@example.test"))
        .iter()
        .filter_map(|body| {
            let text = String::from_utf8_lossy(body);
            let tag = text.lines().find_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_string()))?;
            // Counted only with its text whole, not just its headers.
            text.contains(&format!("body of {tag}")).then_some(tag)
        })
        .collect()
}

#[test]
fn the_witness_drops_bodies_once_both_data_sites_hold_them_and_keeps_those_one_lacks() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up("127.94");
    let primary = lab.wait_for_primary("bj", Duration::from_secs(10), None);
    let other = if primary == "bj" { "sh" } else { "bj" };
    let counts = || {
        format!(
            "bodies: {primary} {}, {other} {}, hz {}",
            body_files(&lab.data_dir(&primary)),
            body_files(&lab.data_dir(other)),
            body_files(&lab.data_dir("hz"))
        )
    };

    // Both data sites up: the witness ends with no body at all.
    let mut acked = BTreeSet::new();
    for n in 0..20 {
        let tag = format!("both-up-{n:02}");
        assert_eq!(send_tagged(&lab.ip(&primary), &tag), Told::Accepted, "{tag}");
        acked.insert(tag);
    }
    lab.wait_until_converged("bj", Duration::from_secs(30));
    wait_until(
        Duration::from_secs(30),
        "the witness drops every body",
        || body_files(&lab.data_dir("hz")) == 0,
        counts,
    );
    assert!(body_files(&lab.data_dir(&primary)) >= 20 && body_files(&lab.data_dir(other)) >= 20, "{}", counts());
    let hz = lab.site_status("hz");
    assert!(hz["metrics"]["bodies_dropped"].as_u64() > Some(0), "the witness counts what it dropped: {hz}");

    // One data site down: the bodies it lacks stay at the witness, which may hold
    // the only second copy of them.
    lab.kill(other);
    let mut while_down = BTreeSet::new();
    for n in 0..10 {
        let tag = format!("one-down-{n:02}");
        assert_eq!(send_tagged(&lab.ip(&primary), &tag), Told::Accepted, "{tag}");
        while_down.insert(tag);
    }
    // Several sweeps (one every 2 s) pass without the missing site's answer.
    std::thread::sleep(Duration::from_secs(7));
    let kept = body_files(&lab.data_dir("hz"));
    assert!(kept >= 10, "the witness dropped bodies {other} lacks: {}", counts());

    // The site comes back, fetches what it missed, and then the witness drops it.
    lab.start(other);
    lab.wait_until_converged("bj", Duration::from_secs(60));
    wait_until(
        Duration::from_secs(60),
        "the witness drops the bodies once the site is back",
        || body_files(&lab.data_dir("hz")) == 0,
        counts,
    );

    // Every body is whole at the site that was down, with the primary gone too.
    lab.kill(&primary);
    acked.extend(while_down);
    let found = tags_in_bodies(&lab, other);
    assert_eq!(found, acked, "{other} serves every message's full text after the witness dropped its copies");
}
