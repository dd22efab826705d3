//! Backups on a three-site lab (`lab up --backup`: a directory target per data site),
//! proven through real clients: Python's smtplib delivers, imaplib sets flags,
//! expunges the INBOX (the attack) and reads what the restores brought back.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::lab::{maildr, Lab, ONE_LAB_AT_A_TIME};
use common::{output_text, workspace_root};
use serde_json::Value;

const ALICE: &str = "alice@example.test";

/// Run `tests/interop/mail_client.py ARGS`; its standard output (panics on failure).
fn client(args: &[&str]) -> String {
    let out = std::process::Command::new("python3")
        .arg(workspace_root().join("tests/interop/mail_client.py"))
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "mail_client.py {args:?}: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(lab: &Lab, site: &str, mailbox: &str) -> Vec<Value> {
    let password = lab.password(ALICE);
    let text = client(&["show", &lab.ip(site), ALICE, &password, mailbox]);
    serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone()
}

fn subjects(messages: &[Value]) -> Vec<String> {
    messages.iter().map(|m| m["subject"].as_str().unwrap().to_string()).collect()
}

/// `maildr ARGS --config <site's config> --audit-dir <lab>/audit`.
fn run(lab: &Lab, site: &str, args: &[&str]) -> Output {
    maildr()
        .args(args)
        .arg("--config")
        .arg(lab.config(site))
        .arg("--audit-dir")
        .arg(lab.lab_dir().join("audit"))
        .output()
        .unwrap()
}

fn json_of(out: &Output, what: &str) -> Value {
    assert!(out.status.success(), "{what}: {}", output_text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{what}: {e}: {}", output_text(out)))
}

fn now_rfc3339() -> String {
    let out = std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%3NZ"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Wait until every target's archive holds every entry `site` has applied now (the
/// archiver runs every second in the lab).
fn wait_for_archive(lab: &Lab, site: &str) {
    let applied = lab.site_status(site)["applied_index"].as_u64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = json_of(&run(lab, site, &["backup", "list", "--json"]), "backup list");
        let archives = list["archives"].as_array().cloned().unwrap_or_default();
        let done = archives.len() == 2 && archives.iter().all(|a| a["last_index"].as_u64() >= Some(applied));
        if done {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "the archive never reached index {applied}: {list}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn an_expunged_inbox_is_restored_to_a_moment_between_two_deliveries_and_to_one_after_both() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_with("127.131", &["--backup", "--no-backup-s3"]);
    let bj = lab.ip("bj");
    let password = lab.password(ALICE);

    // First batch, with flags a user set.
    client(&["send", &bj, ALICE, "first-1", "first-2", "first-3"]);
    client(&["flag", &bj, ALICE, &password, "first-1", "\\Flagged"]);
    client(&["flag", &bj, ALICE, &password, "first-2", "\\Seen"]);
    client(&["flag", &bj, ALICE, &password, "first-2", "$Label1"]);
    let first_batch = show(&lab, "bj", "INBOX");
    assert_eq!(subjects(&first_batch), ["first-1", "first-2", "first-3"]);

    let report = json_of(&run(&lab, "bj", &["backup", "run", "--json"]), "backup run");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["targets"].as_array().unwrap().len(), 2, "{report}");
    assert!(report["messages"].as_u64().unwrap() >= 3, "{report}");
    // Bodies are named by an HMAC: no file name on a target is a body's SHA-256.
    let bodies_dir = lab.lab_dir().join("backup/bj/bodies");
    assert!(count_files(&bodies_dir) >= 3);
    for hash in first_batch.iter().map(|m| m["sha256"].as_str().unwrap().to_string()) {
        assert!(!bodies_dir.join(&hash).exists());
    }

    std::thread::sleep(Duration::from_millis(1100));
    let between = now_rfc3339();
    std::thread::sleep(Duration::from_millis(1100));
    client(&["send", &bj, ALICE, "second-1", "second-2"]);
    let both_batches = show(&lab, "bj", "INBOX");
    assert_eq!(both_batches.len(), 5);
    std::thread::sleep(Duration::from_millis(1100));
    let after = now_rfc3339();
    wait_for_archive(&lab, "bj");

    // The attack: the whole INBOX expunged by a client.
    client(&["expunge", &bj, ALICE, &password]);
    assert!(show(&lab, "bj", "INBOX").is_empty());
    let mailboxes_before = client(&["mailboxes", &bj, ALICE, &password]);

    // Restore to the moment between the deliveries: exactly the first batch, with
    // its flags and internal dates, in a new mailbox; nothing else changes.
    let restored = json_of(
        &run(&lab, "sh", &["restore", "--account", ALICE, "--at", &between, "--mailbox", "INBOX", "--json"]),
        "restore between",
    );
    assert_eq!(restored["messages"], 3, "{restored}");
    let into = restored["mailboxes"][0]["into"].as_str().unwrap().to_string();
    assert!(into.starts_with("Restored "), "{restored}");
    let back = show(&lab, "sh", &into);
    assert_eq!(back, first_batch, "restored messages, flags, internal dates and bytes");
    assert!(show(&lab, "bj", "INBOX").is_empty(), "the live INBOX is not touched");
    let mailboxes_after: Value = serde_json::from_str(&client(&["mailboxes", &bj, ALICE, &password])).unwrap();
    let mut expected: Value = serde_json::from_str(&mailboxes_before).unwrap();
    expected.as_array_mut().unwrap().push(Value::String(into.clone()));
    let mut expected: Vec<String> = serde_json::from_value(expected).unwrap();
    expected.sort();
    let mailboxes_after: Vec<String> = serde_json::from_value(mailboxes_after).unwrap();
    assert_eq!(mailboxes_after, expected, "only the new mailbox was added");

    // Restoring into the same mailbox again is refused and writes nothing.
    let again = run(
        &lab,
        "sh",
        &["restore", "--account", ALICE, "--at", &between, "--mailbox", "INBOX", "--into-mailbox", &into],
    );
    assert!(!again.status.success());
    assert!(output_text(&again).contains("exists"), "{}", output_text(&again));
    assert_eq!(show(&lab, "sh", &into).len(), 3);

    // Restore to after the second delivery: only the archived log holds it.
    let restored = json_of(
        &run(
            &lab,
            "bj",
            &[
                "restore",
                "--account",
                ALICE,
                "--at",
                &after,
                "--mailbox",
                "INBOX",
                "--into-mailbox",
                "Before attack",
                "--json",
            ],
        ),
        "restore after",
    );
    assert_eq!(restored["messages"], 5, "{restored}");
    assert!(restored["archived_entries_replayed"].as_u64().unwrap() > 0, "{restored}");
    assert_eq!(show(&lab, "bj", "Before attack"), both_batches);

    // Into another account: the same mailbox names there.
    let bob = "bob@example.test";
    let restored = json_of(
        &run(
            &lab,
            "bj",
            &["restore", "--account", ALICE, "--at", &between, "--mailbox", "Sent", "--into-account", bob, "--json"],
        ),
        "restore into another account",
    );
    assert_eq!(restored["mailboxes"][0]["account"], bob, "{restored}");
    let refused = run(
        &lab,
        "bj",
        &["restore", "--account", ALICE, "--at", &between, "--mailbox", "INBOX", "--into-account", bob],
    );
    assert!(
        !refused.status.success() && output_text(&refused).contains("exists"),
        "bob's INBOX exists: {}",
        output_text(&refused)
    );
    let text = client(&["show", &bj, bob, &lab.password(bob), "INBOX"]);
    assert_eq!(text.trim(), "[]", "bob's INBOX is untouched");

    // Every site agrees on everything, restored mailboxes included.
    let verify = lab.verify("bj");
    assert_eq!(verify["diverging"], Value::Array(Vec::new()), "{verify}");
    assert!(verify["unreachable"].as_array().unwrap().is_empty(), "{verify}");

    // Each operation is in the audit log, whose chain verifies.
    let audit = maildr().args(["audit", "verify", "--data-dir"]).arg(lab.lab_dir().join("audit")).output().unwrap();
    assert!(audit.status.success(), "{}", output_text(&audit));
    let log = std::fs::read_to_string(lab.lab_dir().join("audit/audit.jsonl")).unwrap();
    assert_eq!(log.matches("\"action\":\"backup\"").count(), 1);
    assert_eq!(log.matches("\"action\":\"restore\"").count(), 3, "three restores, the refused one not");
}

#[test]
fn verify_finds_a_corrupted_and_a_missing_object_a_restore_test_passes_and_deletion_needs_a_second_person() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_with("127.132", &["--backup", "--no-backup-s3"]);
    let bj = lab.ip("bj");
    client(&["send", &bj, ALICE, "kept-1", "kept-2", "kept-3", "kept-4"]);
    let report = json_of(&run(&lab, "bj", &["backup", "run", "--json"]), "backup run");
    assert_eq!(report["ok"], true, "{report}");

    let verified = json_of(&run(&lab, "bj", &["backup", "verify", "--restore-test", "--json"]), "verify");
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["restore_tested"], true);
    assert!(verified["messages_read_over_imap"].as_u64().unwrap() >= 4, "{verified}");

    // One body object changed on target sh, one deleted on target bj.
    let body_of = |target: &str| {
        let dir = lab.lab_dir().join("backup").join(target).join("bodies");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    };
    let changed = body_of("sh")[0].clone();
    let mut bytes = std::fs::read(&changed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&changed, bytes).unwrap();
    let deleted = body_of("bj")[1].clone();
    std::fs::remove_file(&deleted).unwrap();

    let out = run(&lab, "bj", &["backup", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", output_text(&out));
    let verdict: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems = verdict["problems"].as_array().unwrap();
    let name = |p: &Path| format!("bodies/{}", p.file_name().unwrap().to_string_lossy());
    assert!(
        problems.iter().any(|p| p["target"] == "sh"
            && p["object"] == name(&changed)
            && p["problem"].as_str().unwrap().contains("decrypt")),
        "{verdict}"
    );
    assert!(
        problems.iter().any(|p| p["target"] == "bj" && p["object"] == name(&deleted) && p["problem"] == "missing"),
        "{verdict}"
    );
    assert_eq!(problems.len(), 2, "{verdict}");

    // Deleting by hand needs a second person's approval.
    let id = report["id"].as_str().unwrap().to_string();
    let listed = |lab: &Lab| {
        let list = json_of(&run(lab, "bj", &["backup", "list", "--json"]), "backup list");
        list["backups"].as_array().unwrap().iter().any(|b| b["id"] == id.as_str())
    };
    let out = run(&lab, "bj", &["backup", "delete", "--backup", &id, "--by", "Alice Admin"]);
    assert!(!out.status.success() && output_text(&out).contains("second person"), "{}", output_text(&out));
    assert!(listed(&lab), "a refused deletion deletes nothing");
    let out = run(&lab, "bj", &["backup", "approve-delete", "--backup", &id, "--by", "alice  admin"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&lab, "bj", &["backup", "delete", "--backup", &id, "--by", "Alice Admin"]);
    assert!(!out.status.success(), "approving one's own deletion does not count: {}", output_text(&out));
    assert!(listed(&lab));
    let out = run(&lab, "bj", &["backup", "approve-delete", "--backup", &id, "--by", "Bob Auditor"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let out = run(&lab, "bj", &["backup", "delete", "--backup", &id, "--by", "Alice Admin"]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(!listed(&lab), "the approved deletion removed the backup");
    let log = std::fs::read_to_string(lab.lab_dir().join("audit/audit.jsonl")).unwrap();
    assert_eq!(log.matches("\"action\":\"approval\"").count(), 2, "{log}");
    assert_eq!(log.matches("\"action\":\"backup_deleted\"").count(), 1, "{log}");

    // A target that cannot be read at all: exit 2 when it is the only one asked.
    let sh = lab.lab_dir().join("backup/sh");
    std::fs::rename(&sh, lab.lab_dir().join("backup/sh-moved")).unwrap();
    std::fs::write(&sh, b"not a directory").unwrap();
    let out = run(&lab, "bj", &["backup", "verify", "--target", "sh", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
}

#[test]
fn a_whole_site_restored_from_the_targets_alone_serves_its_mailboxes_over_imap() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_with("127.133", &["--backup", "--no-backup-s3"]);
    let bj = lab.ip("bj");
    client(&["send", &bj, ALICE, "site-1", "site-2"]);
    let report = json_of(&run(&lab, "bj", &["backup", "run", "--json"]), "backup run");
    assert_eq!(report["ok"], true, "{report}");
    client(&["send", &bj, ALICE, "site-3"]);
    std::thread::sleep(Duration::from_millis(1100));
    let moment = now_rfc3339();
    wait_for_archive(&lab, "bj");
    let expected = show(&lab, "bj", "INBOX");
    assert_eq!(expected.len(), 3);

    // Every site lost: the targets and the key are all there is.
    let restored_dir = lab.dir.path().join("restored");
    let restored = json_of(
        &run(&lab, "sh", &["restore", "site", "--at", &moment, "--data-dir", restored_dir.to_str().unwrap(), "--json"]),
        "restore site",
    );
    assert!(restored["messages"].as_u64().unwrap() >= 3, "{restored}");

    // Started alone on its own loopback address, it serves what was restored.
    let config = lab.dir.path().join("restored.toml");
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"restored\"\ndata_dir = {:?}\n[smtp]\nmx_listen = \"127.133.60.1:2525\"\n\
             submission_listen = \"127.133.60.1:2587\"\nsubmissions_listen = \"127.133.60.1:2465\"\n\
             [imap]\nplain_listen = \"127.133.60.1:2143\"\ntls_listen = \"127.133.60.1:2993\"\n",
            restored_dir.display().to_string()
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_maildr"))
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _site = common::KillOnDrop(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect("127.133.60.1:2143").is_err() {
        assert!(std::time::Instant::now() < deadline, "the restored site did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let password = lab.password(ALICE);
    let text = client(&["show", "127.133.60.1", ALICE, &password, "INBOX"]);
    let served: Vec<Value> = serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone();
    assert_eq!(served, expected);
}

#[test]
fn a_site_restored_after_every_site_was_lost_seeds_a_new_cluster_whose_other_sites_copy_it() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_with("127.136", &["--backup", "--no-backup-s3"]);
    let bj = lab.ip("bj");
    client(&["send", &bj, ALICE, "seed-1", "seed-2"]);
    client(&["flag", &bj, ALICE, &lab.password(ALICE), "seed-1", "\\Flagged"]);
    let report = json_of(&run(&lab, "bj", &["backup", "run", "--json"]), "backup run");
    assert_eq!(report["ok"], true, "{report}");
    client(&["send", &bj, ALICE, "seed-3"]);
    std::thread::sleep(Duration::from_millis(1100));
    let moment = now_rfc3339();
    wait_for_archive(&lab, "bj");
    let expected = show(&lab, "bj", "INBOX");
    assert_eq!(subjects(&expected), ["seed-1", "seed-2", "seed-3"]);

    // Every site lost: the processes gone, every data directory wiped.
    for site in lab.sites() {
        lab.kill(&site);
        std::fs::remove_dir_all(lab.data_dir(&site)).unwrap();
    }
    let bj_dir = lab.data_dir("bj");
    let restored = json_of(
        &run(&lab, "bj", &["restore", "site", "--at", &moment, "--data-dir", bj_dir.to_str().unwrap(), "--json"]),
        "restore site",
    );
    let seed = &restored["new_cluster"];
    let voters: Vec<u64> = ["bj", "sh", "hz"]
        .iter()
        .map(|s| {
            lab.read_status()["sites"].as_array().unwrap().iter().find(|x| x["site"] == *s).unwrap()["node_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let mut want = voters.clone();
    want.sort_unstable();
    assert_eq!(seed["voters"], serde_json::json!(want), "{restored}");
    assert_eq!(seed["applied_index"], restored["applied_index"], "{restored}");

    // The restored site starts as it is; the others start empty, as new sites.
    lab.start("bj");
    for site in ["sh", "hz"] {
        let out = lab.lab_cmd(&["start", site, "--new-cluster"]);
        assert!(out.status.success(), "lab start {site} --new-cluster: {}", output_text(&out));
    }
    lab.wait_for_primary("sh", Duration::from_secs(30), None);
    // sh installed bj's snapshot and fetched the bodies: it serves the restored mail.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let password = lab.password(ALICE);
        let out = std::process::Command::new("python3")
            .arg(workspace_root().join("tests/interop/mail_client.py"))
            .args(["show", &lab.ip("sh"), ALICE, &password, "INBOX"])
            .output()
            .unwrap();
        let at_sh = serde_json::from_slice::<Value>(&out.stdout).ok().and_then(|v| v.as_array().cloned());
        if at_sh.as_ref() == Some(&expected) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "sh never served the restored INBOX: {}", output_text(&out));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(show(&lab, "bj", "INBOX"), expected);
    // The new cluster takes mail, replicated as usual.
    client(&["send", &lab.ip("sh"), ALICE, "seed-4-after-restore"]);
    lab.wait_until_converged("bj", Duration::from_secs(30));
    assert_eq!(subjects(&show(&lab, "sh", "INBOX")), ["seed-1", "seed-2", "seed-3", "seed-4-after-restore"]);
    let verify = lab.verify("bj");
    assert_eq!(verify["diverging"], Value::Array(Vec::new()), "{verify}");
    assert!(verify["unreachable"].as_array().unwrap().is_empty(), "{verify}");
}

#[test]
fn a_backup_during_the_primary_s_kill_is_listed_only_if_it_verifies_and_the_new_primary_backs_up() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up_with("127.134", &["--backup", "--no-backup-s3"]);
    let bj = lab.ip("bj");
    let tags: Vec<String> = (0..300).map(|i| format!("load-{i}")).collect();
    // 300 messages of 64 KB: a backup that takes a while to upload.
    for chunk in tags.chunks(100) {
        let mut send = std::process::Command::new("python3");
        send.arg(workspace_root().join("tests/interop/mail_client.py")).args(["send", bj.as_str(), ALICE]);
        let out = send.args(chunk).env("PAD_BYTES", "65536").output().unwrap();
        assert!(out.status.success(), "{}", output_text(&out));
    }

    // The backup runs in bj while bj is killed.
    let backup = maildr()
        .args(["backup", "run", "--json", "--config"])
        .arg(lab.config("bj"))
        .arg("--audit-dir")
        .arg(lab.lab_dir().join("audit"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    lab.kill("bj");
    let out = backup.wait_with_output().unwrap();
    let cut_short = !out.status.success();
    println!("backup during the kill: {} ({})", out.status, output_text(&out));
    lab.wait_for_primary_to_be("sh", "sh", Duration::from_secs(30));

    // Whatever it got to, every backup listed is complete and good.
    let list = json_of(&run(&lab, "sh", &["backup", "list", "--json"]), "backup list");
    for b in list["backups"].as_array().unwrap() {
        let id = b["id"].as_str().unwrap();
        let out = run(&lab, "sh", &["backup", "verify", "--backup", id, "--json"]);
        assert_eq!(out.status.code(), Some(0), "listed backup {id} must verify: {}", output_text(&out));
    }
    // A backup reported failed may still be listed: the site may have finished it
    // and died before its answer reached the command. Then it verified above.
    println!("cut short: {cut_short}; listed: {}", list["backups"].as_array().unwrap().len());

    // The new primary takes backups, and they hold all 300 messages.
    let report = json_of(&run(&lab, "sh", &["backup", "run", "--json"]), "backup at the new primary");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["site"], "sh");
    assert!(report["messages"].as_u64().unwrap() >= 300, "{report}");
    let verified = json_of(&run(&lab, "sh", &["backup", "verify", "--json"]), "verify at the new primary");
    assert_eq!(verified["ok"], true, "{verified}");
}

#[test]
fn scheduled_backups_run_on_the_primary_resume_on_the_new_one_and_pruning_keeps_restores_working() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    // A backup every 3 seconds; retention keeps the newest 7.
    let lab = Lab::up_with("127.135", &["--backup", "--no-backup-s3", "--backup-schedule", "*/3 * * * * *"]);
    let bj = lab.ip("bj");
    client(&["send", &bj, ALICE, "sched-1", "sched-2"]);
    let backups_by = |lab: &Lab, site: &str| -> Vec<Value> {
        let list = json_of(&run(lab, "sh", &["backup", "list", "--json"]), "backup list");
        list["backups"].as_array().unwrap().iter().filter(|b| b["site"] == site).cloned().collect()
    };
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !done() {
            if std::time::Instant::now() > deadline {
                let list = run(&lab, "sh", &["backup", "list", "--json"]);
                panic!("{what} did not happen within 60 s: {}", output_text(&list));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    wait_for("a scheduled backup by bj", &|| !backups_by(&lab, "bj").is_empty());
    assert!(backups_by(&lab, "sh").is_empty(), "only the primary takes scheduled backups");

    // The primary is lost: the new primary keeps the schedule.
    lab.kill("bj");
    lab.wait_for_primary_to_be("sh", "sh", Duration::from_secs(30));
    let sh = lab.ip("sh");
    client(&["send", &sh, ALICE, "sched-3"]);
    wait_for("a scheduled backup by sh", &|| !backups_by(&lab, "sh").is_empty());

    // Retention keeps the newest 7: the first backups sh took are pruned.
    let first_by_sh = backups_by(&lab, "sh")[0]["taken_at_ms"].as_u64().unwrap();
    wait_for("the oldest backups pruned", &|| {
        let list = json_of(&run(&lab, "sh", &["backup", "list", "--json"]), "backup list");
        let backups = list["backups"].as_array().unwrap().clone();
        backups.len() == 7 && backups.iter().all(|b| b["taken_at_ms"].as_u64().unwrap() > first_by_sh)
    });
    // A restore after pruning still reaches a moment after the newest backup.
    client(&["send", &sh, ALICE, "sched-4"]);
    std::thread::sleep(Duration::from_millis(1100));
    let moment = now_rfc3339();
    wait_for_archive(&lab, "sh");
    let restored = json_of(
        &run(
            &lab,
            "sh",
            &[
                "restore",
                "--account",
                ALICE,
                "--at",
                &moment,
                "--mailbox",
                "INBOX",
                "--into-mailbox",
                "After prune",
                "--json",
            ],
        ),
        "restore after pruning",
    );
    assert_eq!(restored["messages"], 4, "{restored}");
    let password = lab.password(ALICE);
    let text = client(&["show", &sh, ALICE, &password, "After prune"]);
    let back: Vec<Value> = serde_json::from_str::<Value>(&text).unwrap().as_array().unwrap().clone();
    assert_eq!(subjects(&back), ["sched-1", "sched-2", "sched-3", "sched-4"]);

    // The sites record their scheduled backups and prunes in their own audit log.
    let log_path = lab.data_dir("sh").join("audit.jsonl");
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.matches("\"action\":\"backup\"").count() >= 7, "{log}");
    assert!(log.contains("\"action\":\"backup_pruned\"") && log.contains("\"actor\":\"site sh\""), "{log}");
    let verified = maildr().args(["audit", "verify", "--file"]).arg(&log_path).output().unwrap();
    assert!(verified.status.success(), "{}", output_text(&verified));
}
