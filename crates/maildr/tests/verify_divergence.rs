//! `maildr cluster verify` against a divergence that really exists on disk.
//!
//! One lab (bj and sh data, hz witness): mail is delivered over SMTP and every site
//! applies it; verify finds nothing. Then the follower data site is killed, and while
//! it is down its mail store is changed directly on disk (a real `StoreFlags` applied
//! behind Raft's back, with the store's command counter put back so the state machine
//! does not refuse the store as out of step). The site is started again and catches
//! up, and verify must name exactly the changed mailbox and message, with what
//! differs, and exit 1.

mod common;

use std::time::Duration;

use common::lab::{maildr, send_tagged, send_tagged_to, Lab, Told, ONE_LAB_AT_A_TIME};
use maildr_store::{Applied, Command, FlagOp, Store};
use maildr_types::{EmailAddress, MailboxName, SystemFlags};
use serde_json::Value;

/// `maildr cluster verify` exit statuses (as diff(1)).
const VERIFY_DIVERGES: i32 = 1;
const VERIFY_NOT_COMPARED: i32 = 2;

fn one_lab() -> std::sync::MutexGuard<'static, ()> {
    ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
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
fn verify_names_a_message_changed_behind_rafts_back() {
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

    // The follower dies.
    lab.kill(&follower);
    for n in 0..3 {
        assert_eq!(send_tagged(&lab.ip(&primary), &format!("while-down-{n}")), Told::Accepted);
    }

    // While it is down, its store changes behind Raft's back.
    let victim = flag_behind_rafts_back(&lab.data_dir(&follower));

    // Back, it catches up from the log (no snapshot: the lab snapshots every 1000
    // entries).
    lab.start(&follower);
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
