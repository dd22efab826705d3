//! Python's smtplib against the real `maildr serve` process; then the store, read
//! by the admin CLI after the site stopped, holds exactly the accepted mail.

mod common;

use common::*;

#[test]
fn smtplib_delivers_through_submission_and_mx_and_meets_every_refusal() {
    let dir = provisioned_dir();
    // A small size limit so the oversize check needs no large transfer.
    let site = SiteProcess::start_with(dir.path(), "message_size_max_bytes = 1024");
    let (passed, stdout) = run_python_client("smtplib_client.py", dir.path());
    site.stop();
    assert!(passed, "smtplib checks failed:\n{stdout}");
    assert!(stdout.contains("11 passed, 0 failed"), "{stdout}");

    let mut bob = subjects(dir.path(), "bob@example.test");
    bob.sort();
    assert_eq!(bob, ["smtplib-implicit-tls", "smtplib-starttls-login", "smtplib-starttls-plain"]);
    assert_eq!(subjects(dir.path(), "alice@example.test"), ["smtplib-mx"]);
    let check = admin(dir.path(), &["check"], None);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
