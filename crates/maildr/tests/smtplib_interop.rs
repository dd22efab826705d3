//! Python's smtplib against the real `maildr serve` process; then the store, read
//! by the admin CLI after the site stopped, holds exactly the accepted mail.

mod common;

use common::*;

#[test]
fn smtplib_delivers_through_submission_and_mx_and_meets_every_refusal() {
    let dir = provisioned_dir();
    // A small size limit so the oversize check needs no large transfer.
    let site = SiteProcess::start_with(dir.path(), "message_size_max_bytes = 1024");
    let script = workspace_root().join("tests/interop/smtplib_client.py");
    let out = std::process::Command::new("python3")
        .arg(&script)
        .arg(dir.path().join("run/endpoints.json"))
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    site.stop();
    assert!(out.status.success(), "smtplib checks failed:\n{stdout}");
    assert!(stdout.contains("11 passed, 0 failed"), "{stdout}");

    let mut bob = subjects(dir.path(), "bob@example.test");
    bob.sort();
    assert_eq!(bob, ["smtplib-implicit-tls", "smtplib-starttls-login", "smtplib-starttls-plain"]);
    assert_eq!(subjects(dir.path(), "alice@example.test"), ["smtplib-mx"]);
    let check = admin(dir.path(), &["check"], None);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}
