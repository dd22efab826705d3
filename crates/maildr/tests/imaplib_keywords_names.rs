//! Python's imaplib as a desktop client against the real `maildr serve` process
//! (listening on 127.165.0.1): keywords another client sets are announced to a
//! session that keeps INBOX selected (NOOP, IDLE) before any FETCH shows them,
//! and non-ASCII mailbox names travel in modified UTF-7 while the store keeps
//! UTF-8. The mobile-like side (mbsync) is `tests/interop/mbsync_keywords_names.sh`.

mod common;

use common::*;

#[test]
fn imaplib_sees_keywords_announced_first_and_non_ascii_mailboxes_round_trip() {
    let dir = provisioned_dir();
    let site = SiteProcess::start_on_ip(dir.path(), "127.165.0.1", "", "", "");
    let (passed, stdout) = run_python_client("imaplib_keywords_names.py", dir.path());
    site.stop();
    assert!(passed, "imaplib checks failed:\n{stdout}");
    assert!(stdout.contains("5 passed, 0 failed"), "{stdout}");
    // What the user typed is what the store holds (and what the admin CLI shows).
    let mailboxes = admin_ok(dir.path(), &["mailboxes", "alice@example.test"], None);
    for name in ["日本語", "Projekte/Übersicht & Pläne"] {
        let stored = mailboxes.lines().any(|l| l.split('\t').next() == Some(name));
        assert!(stored, "{name} not stored as UTF-8:\n{mailboxes}");
    }
    assert!(!mailboxes.contains("&ZeVnLIqe-"), "stored in modified UTF-7:\n{mailboxes}");
    let check = admin(dir.path(), &["check"], None);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
