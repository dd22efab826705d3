//! Logins remembered by the credential cache are forgotten at once when the password
//! changes or the account goes, on whichever site the change was made: a lab with
//! real site processes, IMAP logins at one data site, the change through the other.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::lab::{maildr, Lab, ONE_LAB_AT_A_TIME};

const TIMEOUT: Duration = Duration::from_secs(5);

/// LOGIN over plain IMAP at `ip`; why it failed, if it did.
fn login(ip: &str, user: &str, password: &str) -> Result<(), String> {
    let addr = format!("{ip}:2143").parse().expect("a socket address");
    common::block_on(async {
        let mut session =
            maildr_client::imap::Session::connect(addr, None, TIMEOUT).await.map_err(|e| e.to_string())?;
        session.login(user, password).await.map_err(|e| e.to_string())?;
        session.leave().await;
        Ok(())
    })
}

/// Wait until `check` holds (the change has been applied at the site), at most 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "{what} never happened");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_password_change_or_removal_at_one_site_ends_remembered_logins_at_the_other() {
    let _one = ONE_LAB_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let lab = Lab::up("127.114");
    let sh = lab.ip("sh");
    let (alice, bob) = ("alice@example.test", "bob@example.test");
    let old = lab.password(alice);
    // Verified once, then remembered.
    for _ in 0..3 {
        login(&sh, alice, &old).unwrap();
    }
    login(&sh, bob, &lab.password(bob)).unwrap();
    assert!(login(&sh, alice, "not-the-password").is_err(), "a wrong password is refused");

    let new = "a-new-password-for-alice-0123";
    let mut passwd = maildr()
        .args(["admin", "--config"])
        .arg(lab.config("bj"))
        .args(["user", "passwd", alice, "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    passwd.stdin.take().unwrap().write_all(format!("{new}\n").as_bytes()).unwrap();
    let out = passwd.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));

    eventually("the new password works at sh", || login(&sh, alice, new).is_ok());
    // From the moment sh applied the change, the remembered old password is refused.
    for _ in 0..3 {
        let refused = login(&sh, alice, &old).unwrap_err();
        assert!(refused.contains("NO"), "the old password is refused: {refused}");
    }

    let out =
        maildr().args(["admin", "--config"]).arg(lab.config("bj")).args(["user", "remove", bob]).output().unwrap();
    assert!(out.status.success(), "{}", common::output_text(&out));
    eventually("bob's remembered login ends at sh", || login(&sh, bob, &lab.password(bob)).is_err());
}
