//! Python's imaplib against the real `maildr serve` process: every IMAP command,
//! concurrent sessions, IDLE woken by SMTP, quota and malformed input.

mod common;

use common::*;

#[test]
fn imaplib_exercises_every_command_against_a_real_site() {
    let dir = provisioned_dir();
    admin_ok(
        dir.path(),
        &["user", "add", "carol@example.test", "--password-stdin", "--quota-bytes", "2000"],
        Some("carol-pw\n"),
    );
    let site = SiteProcess::start(dir.path());
    let (passed, stdout) = run_python_client("imaplib_client.py", dir.path());
    site.stop();
    assert!(passed, "imaplib checks failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let check = admin(dir.path(), &["check"], None);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
