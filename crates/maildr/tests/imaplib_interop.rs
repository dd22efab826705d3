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
    let out = std::process::Command::new("python3")
        .arg(workspace_root().join("tests/interop/imaplib_client.py"))
        .arg(dir.path().join("run/endpoints.json"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    site.stop();
    assert!(out.status.success(), "imaplib checks failed:\n{stdout}");
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let check = admin(dir.path(), &["check"], None);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
