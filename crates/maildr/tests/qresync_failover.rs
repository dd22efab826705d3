//! QRESYNC across a failover, end to end: a mail client (Python's imaplib,
//! `tests/interop/qresync_client.py`) keeps a local copy of a 10,000-message
//! INBOX synced at bj. Another client then reads, labels and deletes messages
//! and new mail arrives; bj, the primary, is killed. The client reconnects at sh
//! and resynchronises with `SELECT INBOX (QRESYNC (…))` (RFC 7162 §3.2.5).
//!
//! What must hold:
//! - sh accepts the UIDVALIDITY and MODSEQ the client was given at bj: they are
//!   replicated state, and so is the record of which UIDs each expunge removed.
//! - The client receives only the changes: one VANISHED (EARLIER) naming every
//!   expunged UID, one FETCH per changed message, the new mail — a small
//!   fraction of the bytes of a full download.
//! - The client's resulting view (UIDs and flags) equals a fresh full fetch at sh.

// A harness whose setup fails is a failed test: its helpers unwrap like the tests
// (clippy's allow-unwrap-in-tests covers only the `#[test]` functions).
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::lab::{Lab, ONE_LAB_AT_A_TIME};
use common::{output_text, workspace_root};
use serde_json::Value;

/// Messages in the INBOX the client syncs.
const MESSAGES: u32 = 10_000;
/// IMAP connections that fill the INBOX, each pipelining its APPENDs (fewer
/// than `imap.sessions_per_account_max`).
const FILL_CONNECTIONS: u32 = 16;
/// Rounds of filling: an APPEND answered `NO [UNAVAILABLE]` (the write path
/// timed out under load; nothing stored) is sent again in the next round.
const FILL_ROUNDS_MAX: u32 = 5;
const USER: &str = "alice@example.test";

/// Run one step of the Python client against `site`; its JSON report.
fn client(lab: &Lab, step: &str, site: &str, state: Option<&Path>) -> Value {
    let mut command = std::process::Command::new("python3");
    command.arg(workspace_root().join("tests/interop/qresync_client.py")).args([
        step,
        &lab.ip(site),
        USER,
        &lab.password(USER),
    ]);
    if let Some(state) = state {
        command.arg(state);
    }
    let out = command.output().expect("running python3");
    assert!(out.status.success(), "qresync_client.py {step} at {site}: {}", output_text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{step}: {e}: {stdout}"))
}

/// APPEND `count` small messages over one connection, every command sent
/// without waiting (LITERAL+), then every answer read; how many were stored.
fn append_pipelined(ip: &str, password: &str, connection: u32, count: u32) -> u32 {
    let stream = TcpStream::connect((ip, 2143)).expect("IMAP at bj");
    stream.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("* OK"), "{line}");
    // Password checks are bounded site-wide: a login told to try again does.
    for attempt in 1.. {
        write!(writer, "l LOGIN {USER} \"{password}\"\r\n").unwrap();
        line.clear();
        while !line.starts_with("l ") {
            line.clear();
            assert!(reader.read_line(&mut line).unwrap() > 0, "connection closed at login");
        }
        if line.starts_with("l OK") {
            break;
        }
        assert!(line.starts_with("l NO [UNAVAILABLE]") && attempt < 50, "{line}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let sender = std::thread::spawn(move || {
        let mut out = std::io::BufWriter::new(writer);
        for i in 0..count {
            let message = format!("From: fill@example.test\r\nSubject: fill {connection}-{i}\r\n\r\nbody {i}\r\n");
            write!(out, "a{i} APPEND INBOX {{{}+}}\r\n{message}\r\n", message.len()).unwrap();
        }
        write!(out, "z LOGOUT\r\n").unwrap();
        out.flush().unwrap();
    });
    let (mut answered, mut stored) = (0, 0);
    while answered < count {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "connection closed after {answered} APPENDs");
        if line.starts_with('a') {
            let status = line.split_once(' ').map(|(_, s)| s).unwrap_or_default();
            assert!(status.starts_with("OK") || status.starts_with("NO [UNAVAILABLE]"), "APPEND refused: {line}");
            stored += u32::from(status.starts_with("OK"));
            answered += 1;
        }
    }
    sender.join().unwrap();
    stored
}

/// Fill alice's INBOX at `ip` with [`MESSAGES`] messages.
fn fill(ip: &str, password: &str) {
    let mut stored = 0;
    for round in 0..FILL_ROUNDS_MAX {
        let missing = MESSAGES - stored;
        if missing == 0 {
            return;
        }
        let connections = FILL_CONNECTIONS.min(missing);
        let workers: Vec<_> = (0..connections)
            .map(|k| {
                let (ip, password) = (ip.to_string(), password.to_string());
                let count = missing / connections + u32::from(k < missing % connections);
                std::thread::spawn(move || append_pipelined(&ip, &password, round * FILL_CONNECTIONS + k, count))
            })
            .collect();
        stored += workers.into_iter().map(|w| w.join().unwrap()).sum::<u32>();
    }
    assert_eq!(stored, MESSAGES, "INBOX not filled in {FILL_ROUNDS_MAX} rounds");
}

fn uids(value: &Value) -> BTreeSet<u64> {
    value.as_array().unwrap().iter().map(|u| u.as_u64().unwrap()).collect()
}

fn flags_of(view: &Value, uid: u64) -> Vec<String> {
    let flags = view[uid.to_string()].as_array().unwrap_or_else(|| panic!("UID {uid} missing from the view"));
    flags.iter().map(|f| f.as_str().unwrap().to_string()).collect()
}

#[test]
fn a_client_resyncs_a_large_mailbox_at_the_other_city_receiving_only_the_changes() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let lab = Lab::up("127.160");
    assert_eq!(lab.wait_for_primary("bj", Duration::from_secs(30), None), "bj");
    fill(&lab.ip("bj"), &lab.password(USER));

    let state = lab.dir.path().join("client-state.json");
    let synced = client(&lab, "sync", "bj", Some(&state));
    assert_eq!(synced["messages"], u64::from(MESSAGES), "{synced}");
    let full_download = synced["bytes"].as_u64().unwrap();

    let changes = client(&lab, "change", "bj", None);
    let expunged = uids(&changes["expunged"]);
    let appended = uids(&changes["appended"]);
    let flagged: BTreeSet<u64> = uids(&changes["seen"]).union(&uids(&changes["labelled"])).copied().collect();
    // Every acknowledged change is on sh before bj goes.
    lab.wait_until_converged("bj", Duration::from_secs(60));
    lab.kill("bj");
    assert_eq!(lab.wait_for_primary("sh", Duration::from_secs(60), Some("bj")), "sh");

    let resynced = client(&lab, "resync", "sh", Some(&state));
    let fresh = client(&lab, "full", "sh", None);
    // The client's view is what a full download at sh gives.
    assert_eq!(resynced["view"], fresh["view"], "resynchronised view differs from a full fetch at sh");
    let view = &resynced["view"];
    let size = view.as_object().unwrap().len() as u64;
    assert_eq!(size, u64::from(MESSAGES) - expunged.len() as u64 + appended.len() as u64);
    // Only the changes crossed the wire.
    assert_eq!(resynced["vanished"].as_u64().unwrap(), expunged.len() as u64, "{resynced:.200}");
    let changed_kept = flagged.difference(&expunged).count() as u64;
    assert_eq!(resynced["changed"].as_u64().unwrap(), changed_kept, "one FETCH per changed message");
    assert_eq!(resynced["new"].as_u64().unwrap(), appended.len() as u64);
    for uid in &expunged {
        assert!(view.get(uid.to_string()).is_none(), "expunged UID {uid} still in the view");
    }
    let first_seen = *uids(&changes["seen"]).iter().find(|u| !expunged.contains(u)).unwrap();
    assert!(flags_of(view, first_seen).contains(&"\\Seen".to_string()));
    assert!(flags_of(view, *appended.first().unwrap()).contains(&"\\Flagged".to_string()));
    let resync_bytes = resynced["bytes"].as_u64().unwrap();
    let full_at_sh = fresh["bytes"].as_u64().unwrap();
    println!(
        "full download at bj: {full_download} bytes; at sh: {full_at_sh} bytes; QRESYNC at sh: {resync_bytes} bytes"
    );
    assert!(
        resync_bytes * 10 < full_at_sh.min(full_download),
        "QRESYNC took {resync_bytes} bytes, a full download {full_at_sh}: not a small fraction"
    );
}
