//! The outbound queue's limit, through a real `maildr serve` and Python's smtplib:
//! with `outbound.queue_messages_max = 2` and a smarthost that never answers, two
//! submissions to another domain are acknowledged (queued), the third recipient is
//! deferred with 452 naming the full queue, a fourth attempt finds the queue still
//! at two (the refused one was not queued), and a local recipient in the same
//! session is still delivered. Without `[outbound]`, the same submission is
//! refused with 550 5.7.1.

mod common;

use common::*;

/// Submit `subjects` from alice to `to` through the site's submission port with
/// STARTTLS and AUTH; one line per message: "<code> <text>".
fn submit(site: &SiteProcess, to: &str, subjects: &[&str]) -> Vec<String> {
    let script = r#"
import json, smtplib, ssl, sys
endpoints = json.load(open(sys.argv[1]))
port = int(endpoints["smtp"]["submission"].rsplit(":", 1)[1])
ctx = ssl.create_default_context(cafile=endpoints["tls_ca"])
ctx.check_hostname = False
s = smtplib.SMTP("127.0.0.1", port, timeout=30)
s.starttls(context=ctx)
s.login("alice@example.test", "alice-pw")
for subject in sys.argv[3:]:
    s.mail("alice@example.test")
    code, text = s.rcpt(sys.argv[2])
    if code != 250:
        print(code, text.decode())
        s.rset()
        continue
    code, text = s.data(f"Subject: {subject}\r\nMessage-ID: <{subject}@example.test>\r\n\r\nx\r\n".encode())
    print(code, text.decode())
s.quit()
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(site.dir.join("run/endpoints.json"))
        .arg(to)
        .args(subjects)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn the_queue_limit_defers_recipients_in_other_domains_and_changes_nothing() {
    let dir = provisioned_dir();
    // Port 9 on loopback: nothing listens, so queued mail stays queued.
    let outbound = "[outbound]\nenabled = true\nqueue_messages_max = 2\nrelay_host = \"127.0.0.1:9\"\n\
                    retry_initial_secs = 3600\nretry_max_secs = 3600\n";
    let site = SiteProcess::start_with_sections(dir.path(), "", outbound);
    let replies = submit(&site, "carol@remote.test", &["q1", "q2", "q3", "q4"]);
    assert_eq!(replies.len(), 4, "{replies:?}");
    for queued in &replies[..2] {
        assert!(queued.starts_with("250 2.0.0") && queued.contains("queued as"), "{replies:?}");
    }
    for refused in &replies[2..] {
        assert!(
            refused.starts_with("452 4.3.1") && refused.contains("outbound queue is full (2 messages)"),
            "at the limit and one past it the queue still holds two: {replies:?}"
        );
    }
    // A local recipient is not held back by the full queue.
    let local = submit(&site, "bob@example.test", &["local-while-full"]);
    assert!(local[0].starts_with("250"), "{local:?}");
    site.stop();
    assert_eq!(subjects(dir.path(), "bob@example.test"), ["local-while-full"]);
}

#[test]
fn without_outbound_a_submission_to_another_domain_is_refused() {
    let dir = provisioned_dir();
    let site = SiteProcess::start_with(dir.path(), "");
    let replies = submit(&site, "carol@remote.test", &["never"]);
    assert!(replies[0].starts_with("550 5.7.1") && replies[0].contains("relay access denied"), "{replies:?}");
    site.stop();
}
