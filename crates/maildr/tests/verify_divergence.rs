//! `maildr cluster verify` against a divergence that really exists on disk, and the
//! primary's lag in bytes for a peer that stops receiving.
//!
//! One lab (bj and sh data, hz witness): mail is delivered over SMTP and every site
//! applies it; verify finds nothing. Then the follower data site is killed and the
//! primary goes on committing: its lag for the dead site grows, in entries and in
//! bytes, in the admin API, `/metrics` and `maildr cluster status`. While the site is
//! down its mail store is changed directly on disk (a real `StoreFlags` applied
//! behind Raft's back, with the store's command counter put back so the state machine
//! does not refuse the store as out of step). The site is started again and catches
//! up (lag back to 0), and verify must name exactly the changed mailbox and message,
//! with what differs, and exit 1.

mod common;

use std::time::{Duration, Instant};

use common::lab::{maildr, send_tagged, send_tagged_to, Lab, Told, ONE_LAB_AT_A_TIME};
use maildr_store::{Applied, Command, FlagOp, Store};
use maildr_types::{EmailAddress, MailboxName, SystemFlags};
use serde_json::Value;

/// `maildr cluster verify` exit statuses (as diff(1)).
const VERIFY_DIVERGES: i32 = 1;
const VERIFY_NOT_COMPARED: i32 = 2;

/// Messages committed while the follower is down, in each of two rounds.
const ROUND_MESSAGES: u64 = 10;

/// Every Deliver entry holds at least a 32-byte body hash and the recipient's
/// address; fewer bytes than this per message cannot be the real entries.
const DELIVER_ENTRY_BYTES_MIN: u64 = 50;

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The primary's view of `peer`: lag in entries, in bytes, and whether the bytes
/// are estimated, from the primary's own admin API (`GET /api/cluster/status`).
fn lag_seen_by(lab: &Lab, primary: &str, peer: &str) -> (Option<u64>, Option<u64>, bool) {
    let status = lab.api_get(primary, "/api/cluster/status");
    let peers = status["peers"].as_array().cloned().unwrap_or_default();
    let p = peers.iter().find(|p| p["site"] == peer).unwrap_or_else(|| panic!("no peer {peer} in {status}"));
    (p["lag_entries"].as_u64(), p["lag_bytes"].as_u64(), p["lag_bytes_estimated"] == true)
}

/// Wait until the primary reports `peer` lacking at least `entries` entries with an
/// exact byte count; that lag, in entries and bytes.
fn wait_for_lag(lab: &Lab, primary: &str, peer: &str, entries: u64) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = lag_seen_by(lab, primary, peer);
        if let (Some(e), Some(b), false) = seen {
            if e >= entries {
                return (e, b);
            }
        }
        assert!(Instant::now() < deadline, "{primary} does not report {peer} {entries} entries behind: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait until the primary reports `peer` lacking nothing: 0 entries, 0 bytes.
fn wait_until_caught_up(lab: &Lab, primary: &str, peer: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = lag_seen_by(lab, primary, peer);
        if seen == (Some(0), Some(0), false) {
            return;
        }
        assert!(Instant::now() < deadline, "{peer} does not catch up with {primary}: {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `maildr cluster verify ARGS` through `site`'s config: exit status and stdout.
fn verify(lab: &Lab, site: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let out = lab.cluster(site, &all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("verify {args:?}: {}\n{stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    (out.status.code(), stdout)
}

/// Apply `StoreFlags +\Flagged` to the second message of bob's INBOX in the stopped
/// site's store, then put the store's command counter back, so the site's state
/// machine (which compares that counter with its own record) still opens it. The
/// store stays consistent in itself: only another site can tell. Returns the UID.
fn flag_behind_rafts_back(data_dir: &std::path::Path) -> u32 {
    let bob = EmailAddress::parse("bob@example.test").unwrap();
    let store = Store::open(data_dir).unwrap();
    let counted = store.commands_applied().unwrap();
    let account = store.account(&bob).unwrap().expect("bob has an account");
    let inbox = store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().expect("bob has an INBOX");
    let messages = store.messages(inbox.id).unwrap();
    assert_eq!(messages.len(), 3, "bob's INBOX before: {messages:?}");
    let victim = messages[1].uid;
    assert!(!messages[1].flags.contains(SystemFlags::FLAGGED));
    let outcome = store
        .apply(Command::StoreFlags {
            mailbox: inbox.id,
            uids: vec![victim],
            op: FlagOp::Add,
            flags: SystemFlags(SystemFlags::FLAGGED),
            keywords: Vec::new(),
            unchanged_since: None,
        })
        .unwrap();
    assert!(matches!(outcome, Ok(Applied::FlagsStored { .. })), "{outcome:?}");
    drop(store);

    let db = redb::Database::create(data_dir.join(maildr_store::DATABASE_FILE)).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut meta = txn.open_table(redb::TableDefinition::<&str, u64>::new("meta")).unwrap();
        meta.insert("commands_applied", counted).unwrap();
    }
    txn.commit().unwrap();
    drop(db);

    let store = Store::open(data_dir).unwrap();
    assert_eq!(store.commands_applied().unwrap(), counted, "the change is hidden from the state machine");
    let changed = store.message(inbox.id, victim).unwrap().unwrap();
    assert!(changed.flags.contains(SystemFlags::FLAGGED), "the change is on disk");
    let check = store.check().unwrap();
    assert!(check.problems.is_empty(), "the store is consistent in itself: {:?}", check.problems);
    victim.0
}

#[test]
fn verify_names_a_message_changed_behind_rafts_back_and_the_primary_counts_a_dead_peers_lag_in_bytes() {
    let _one = one_lab();
    let lab = Lab::up("127.130");
    let primary = lab.wait_for_primary("bj", Duration::from_secs(5), None);
    let follower = if primary == "bj" { "sh" } else { "bj" }.to_string();
    for n in 0..3 {
        assert_eq!(send_tagged_to(&lab.ip(&primary), "bob@example.test", &format!("to-bob-{n}")), Told::Accepted);
        assert_eq!(send_tagged(&lab.ip(&follower), &format!("to-alice-{n}")), Told::Accepted);
    }
    lab.wait_until_converged(&primary, Duration::from_secs(30));

    // The sites agree: exit 0, nothing listed.
    let (code, text) = verify(&lab, "hz", &["--messages"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no divergence") && !text.contains("DIVERGES"), "{text}");
    let (code, json) = verify(&lab, "hz", &["--messages", "--json"]);
    assert_eq!(code, Some(0));
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["diverging"], serde_json::json!([]), "{report}");
    assert_eq!(report["sites"].as_array().map(Vec::len), Some(3), "{report}");
    let mailboxes = report["mailboxes"].as_u64().unwrap();
    assert!(mailboxes >= 6, "every account's mailboxes are compared: {report}");

    // The follower dies; the primary and the witness go on committing.
    wait_until_caught_up(&lab, &primary, &follower);
    lab.kill(&follower);
    for n in 0..ROUND_MESSAGES {
        assert_eq!(send_tagged(&lab.ip(&primary), &format!("while-down-{n}")), Told::Accepted);
    }
    let (entries_1, bytes_1) = wait_for_lag(&lab, &primary, &follower, ROUND_MESSAGES);
    for n in ROUND_MESSAGES..2 * ROUND_MESSAGES {
        assert_eq!(send_tagged(&lab.ip(&primary), &format!("while-down-{n}")), Told::Accepted);
    }
    let (entries_2, bytes_2) = wait_for_lag(&lab, &primary, &follower, entries_1 + ROUND_MESSAGES);
    eprintln!("{follower} lags {entries_1} entries / {bytes_1} bytes, then {entries_2} entries / {bytes_2} bytes");
    assert!(bytes_1 >= ROUND_MESSAGES * DELIVER_ENTRY_BYTES_MIN, "{bytes_1} bytes for {ROUND_MESSAGES} deliveries");
    assert!(
        bytes_2 - bytes_1 >= ROUND_MESSAGES * DELIVER_ENTRY_BYTES_MIN,
        "{ROUND_MESSAGES} more deliveries add their entries' bytes: {bytes_1} → {bytes_2}"
    );
    assert!(bytes_2 <= entries_2 * 4096, "no entry of this lab is anywhere near 4 KiB: {bytes_2} / {entries_2}");

    // The same figure reaches Prometheus and both forms of `maildr cluster status`.
    let token = lab.read_status()["api_token"].as_str().unwrap().to_string();
    let metrics = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "-H", &format!("Authorization: Bearer {token}")])
        .arg(format!("http://{}:2780/metrics", lab.ip(&primary)))
        .output()
        .expect("running curl");
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let sample = format!("maildr_peer_lag_bytes{{peer=\"{follower}\",role=\"data\"}} ");
    let exported: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(&sample))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {sample} in:\n{metrics}"));
    assert!(exported >= bytes_2, "/metrics says {exported}, the API said {bytes_2} before");
    let status = lab.cluster_status(&primary);
    let member = status["members"].as_array().unwrap().iter().find(|m| m["site"] == follower.as_str()).unwrap();
    assert!(member["lag_bytes"].as_u64() >= Some(bytes_2), "cluster status --json: {member}");
    let table = lab.cluster(&primary, &["status"]);
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    let header: Vec<&str> = table.lines().nth(1).unwrap_or_default().split('\t').collect();
    let column = header.iter().position(|c| *c == "LAG_BYTES").unwrap_or_else(|| panic!("no LAG_BYTES:\n{table}"));
    let row: Vec<&str> = table.lines().find(|l| l.starts_with(&format!("{follower}\t"))).unwrap().split('\t').collect();
    assert!(row[3] == "UNREACHABLE", "the dead site is shown as such:\n{table}");
    let shown: u64 = row[column].parse().unwrap_or_else(|_| panic!("LAG_BYTES of {follower}:\n{table}"));
    assert!(shown >= bytes_2, "the table shows the dead site's lag in bytes:\n{table}");

    // While it is down, its store changes behind Raft's back.
    let victim = flag_behind_rafts_back(&lab.data_dir(&follower));

    // Back, it catches up from the log (no snapshot: the lab snapshots every 1000
    // entries) and the primary's lag for it returns to 0.
    lab.start(&follower);
    wait_until_caught_up(&lab, &primary, &follower);
    lab.wait_until_converged(&primary, Duration::from_secs(30));

    // Verify finds the change: bob's INBOX alone, with the follower as the odd one out.
    let (code, text) = verify(&lab, &primary, &[]);
    assert_eq!(code, Some(VERIFY_DIVERGES), "{text}");
    assert_eq!(text.matches("DIVERGES:").count(), 1, "one mailbox diverges:\n{text}");
    assert!(text.contains("DIVERGES: bob@example.test INBOX (mailbox "), "{text}");
    assert!(!text.contains("alice@example.test") && !text.contains("probe@"), "untouched mailboxes:\n{text}");
    let agreeing: Vec<&str> = ["bj", "hz", "sh"].into_iter().filter(|s| *s != follower).collect();
    let suspect = format!("  differs from the majority ({}): {follower}\n", agreeing.join(", "));
    assert!(text.contains(&suspect), "{text}");

    let (code, text) = verify(&lab, &primary, &["--messages"]);
    assert_eq!(code, Some(VERIFY_DIVERGES), "{text}");
    assert!(text.contains(&format!("  UID {victim} differs: modseq, flags\n")), "{text}");
    let changed_line = format!("    {follower}: modseq ");
    let flagged: Vec<&str> = text.lines().filter(|l| l.contains("\\Flagged")).collect();
    assert_eq!(flagged.len(), 1, "only the changed site's record is flagged:\n{text}");
    assert!(flagged[0].starts_with(&changed_line), "{text}");
    assert_eq!(text.matches(" differs: ").count(), 1, "one message differs:\n{text}");

    let (code, json) = verify(&lab, &primary, &["--messages", "--json"]);
    assert_eq!(code, Some(VERIFY_DIVERGES));
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["mailboxes"].as_u64(), Some(mailboxes), "{report}");
    let diverging = report["diverging"].as_array().unwrap();
    assert_eq!(diverging.len(), 1, "{report}");
    let d = &diverging[0];
    assert_eq!((d["account"].as_str(), d["name"].as_str()), (Some("bob@example.test"), Some("INBOX")), "{d}");
    assert_eq!(d["outliers"], serde_json::json!([follower]), "{d}");
    let messages = d["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{d}");
    assert_eq!(messages[0]["uid"].as_u64(), Some(u64::from(victim)));
    assert_eq!(messages[0]["fields"], serde_json::json!(["modseq", "flags"]));
    for site in ["bj", "sh", "hz"] {
        let flags = messages[0]["by_site"][site]["flags"].as_u64().unwrap();
        let want = if site == follower { u64::from(SystemFlags::FLAGGED) } else { 0 };
        assert_eq!(flags & u64::from(SystemFlags::FLAGGED), want, "{site}: {d}");
    }
    let mine = &d["by_site"][follower.as_str()]["highest_modseq"];
    let theirs = &d["by_site"][primary.as_str()]["highest_modseq"];
    assert!(mine.as_u64() > theirs.as_u64(), "the extra STORE raised the changed site's MODSEQ: {d}");
}

#[test]
fn verify_that_cannot_compare_the_sites_exits_2_not_1() {
    // A member's config whose sites do not run (nothing listens on 127.131.x.x):
    // no comparison happened, and a script must not read it as "diverges".
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bj.toml");
    let members =
        [(1, "bj", "data", "127.131.10.1"), (2, "sh", "data", "127.131.20.1"), (3, "hz", "witness", "127.131.30.1")]
            .iter()
            .map(|(id, site, role, ip)| {
                format!(
                    "[[cluster.members]]\nnode_id = {id}\nsite = \"{site}\"\nrole = \"{role}\"\naddr = \"{ip}:2700\"\n"
                )
            })
            .collect::<String>();
    let ip = "127.131.10.1";
    std::fs::write(
        &config,
        format!(
            "[site]\nname = \"bj\"\nhostname = \"bj.example.test\"\ndata_dir = \"{}\"\n\
             [smtp]\nmx_listen = \"{ip}:2525\"\nsubmission_listen = \"{ip}:2587\"\nsubmissions_listen = \"{ip}:2465\"\n\
             [imap]\nplain_listen = \"{ip}:2143\"\ntls_listen = \"{ip}:2993\"\n\
             [cluster]\nnode_id = 1\nlisten = \"{ip}:2700\"\nsecret = \"0123456789abcdef\"\n{members}",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = maildr().args(["cluster", "verify", "--config"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(VERIFY_NOT_COMPARED), "{stderr}");
    assert!(stderr.contains("fewer than two sites answered"), "{stderr}");
    let out = maildr().args(["cluster", "verify", "--config"]).arg(dir.path().join("missing.toml")).output().unwrap();
    assert_eq!(out.status.code(), Some(VERIFY_NOT_COMPARED), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Senders keeping the cluster busy while `verify` runs under load.
const LOAD_SENDERS: usize = 4;
/// Most messages each sender sends (the load is bounded in count and time).
const LOAD_MESSAGES_PER_SENDER: usize = 2000;

/// Under a steady stream of writes (four senders, and 40 ms each way on the links
/// to the witness so its answers come late; below the lab's 100 ms heartbeat, which
/// openraft gives each AppendEntries), no two sites ever stand at one
/// applied index when asked in turn; `verify` still compares them at one index
/// (each site's apply reads its digests on its way past a mark) and finds them
/// identical, while mail keeps being accepted.
#[test]
fn verify_compares_the_sites_at_one_index_while_mail_keeps_arriving() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let _one = one_lab();
    let lab = Lab::up("127.173");
    let primary = lab.wait_for_primary("bj", Duration::from_secs(5), None);
    for link in ["bj-hz", "hz-bj", "sh-hz", "hz-sh"] {
        lab.set_link(link, r#"{"forward":{"latency_ms":40},"backward":{"latency_ms":40}}"#);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..LOAD_SENDERS)
        .map(|s| {
            let (stop, accepted, ip) = (Arc::clone(&stop), Arc::clone(&accepted), lab.ip(&primary));
            std::thread::spawn(move || {
                let started = Instant::now();
                for n in 0..LOAD_MESSAGES_PER_SENDER {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(120) {
                        break;
                    }
                    if send_tagged(&ip, &format!("busy-{s}-{n}")) == Told::Accepted {
                        accepted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    // Wait until the load runs, then verify while it does.
    let deadline = Instant::now() + Duration::from_secs(30);
    while accepted.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the load never got going");
        std::thread::sleep(Duration::from_millis(50));
    }
    let before = accepted.load(Ordering::SeqCst);
    let (code, json) = verify(&lab, "bj", &["--json"]);
    let still_loaded = !senders.iter().all(std::thread::JoinHandle::is_finished);
    let during = accepted.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(code, Some(0), "verify under load: {json}");
    let report: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["diverging"], serde_json::json!([]), "{report}");
    assert_eq!(report["sites"].as_array().map(Vec::len), Some(3), "every site compared: {report}");
    assert!(during > 0 && still_loaded, "mail was accepted while verify compared the sites, and after");
    // The writes were still coming when the sites were compared: the index they
    // were compared at is below what the cluster applied by the end.
    lab.wait_until_converged(&primary, Duration::from_secs(60));
    let finally = lab.verify(&primary);
    assert!(
        finally["applied_index"].as_u64() > report["applied_index"].as_u64(),
        "compared at {} while writes went on to {}",
        report["applied_index"],
        finally["applied_index"]
    );
}
