//! SMTP behaviour seen from a raw client on a real socket: what is accepted, what is
//! refused with which reply, and that a refusal leaves the store untouched.

mod common;

use std::time::Duration;

use common::{Client, Site};

const MSG: &str = "From: carol@outside.test\r\nTo: alice@example.test\r\nSubject: hello\r\n\r\nHi Alice.";

#[test]
fn mx_delivers_to_an_account_and_through_an_alias_with_a_received_header() {
    let site = Site::start();
    let (mut c, banner) = Client::connect(site.mx);
    assert!(banner.starts_with("220 mx.example.test"), "{banner}");
    let r = c.send_mail("carol@outside.test", &["alice@example.test", "sales@example.test"], MSG);
    assert!(r.starts_with("250 2.0.0"), "{r}");
    let bodies = site.inbox_bodies("alice@example.test");
    assert_eq!(bodies.len(), 1, "alias and account resolve to one copy for alice");
    let body = String::from_utf8(bodies[0].clone()).unwrap();
    assert!(
        body.starts_with("Received: from client.test ([127.0.0.1])\r\n\tby mx.example.test (maildr) with ESMTP id "),
        "{body}"
    );
    assert!(body.ends_with("Subject: hello\r\n\r\nHi Alice.\r\n"), "{body}");
    assert!(site.cluster.store().check().unwrap().problems.is_empty());
}

#[test]
fn a_message_is_dated_by_the_service_clock_in_its_internal_date_and_received_header() {
    let clock = std::sync::Arc::new(maildr_types::PinnedClock::at_ms(1_700_000_000_250));
    let site = Site::start_at(clock.clone());
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.send_mail("carol@outside.test", &["alice@example.test"], MSG).starts_with("250"));
    clock.advance_ms(86_400_000);
    assert!(c.send_mail("carol@outside.test", &["alice@example.test"], MSG).starts_with("250"));
    assert_eq!(
        site.inbox_dates("alice@example.test"),
        vec![maildr_types::UnixSeconds(1_700_000_000), maildr_types::UnixSeconds(1_700_086_400)]
    );
    let first = String::from_utf8(site.inbox_bodies("alice@example.test")[0].clone()).unwrap();
    let received = first.split("\r\n\r\n").next().unwrap();
    assert!(received.contains("Tue, 14 Nov 2023 22:13:20 +0000"), "{first}");
}

#[test]
fn the_null_sender_is_accepted_on_mx_for_bounces() {
    let site = Site::start();
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.cmd("EHLO a.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<>").starts_with("250 2.1.0"));
    assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250 2.1.5"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: bounce\r\n\r\nreturned\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    assert_eq!(site.inbox_bodies("bob@example.test").len(), 1);
}

#[test]
fn mx_is_not_an_open_relay() {
    let site = Site::start();
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    let r = c.send_mail("carol@outside.test", &["dave@elsewhere.test"], MSG);
    assert!(r.starts_with("550 5.7.1") && r.contains("relay access denied"), "{r}");
    let r = c.cmd("DATA");
    assert!(r.starts_with("554 5.5.1"), "no valid recipient, no DATA: {r}");
    assert_eq!(site.state(), before);
}

#[test]
fn unknown_users_of_hosted_domains_are_refused() {
    let site = Site::start();
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    let r = c.send_mail("carol@outside.test", &["nobody@example.test"], MSG);
    assert!(r.starts_with("550 5.1.1"), "{r}");
    assert_eq!(site.state(), before);
}

#[test]
fn bare_lf_in_data_is_refused_the_session_closed_and_nothing_stored() {
    let site = Site::start();
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    c.open_data("carol@outside.test", "alice@example.test");
    // The smuggling shape: a bare-LF "end of data" followed by a second message
    // that a lenient server would deliver as if it came from a trusted sender.
    c.send(b"Subject: one\r\n\r\nfirst\n.\nMAIL FROM:<ceo@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("521 5.5.2") && r.contains("Bare LF"), "{r}");
    assert!(c.is_closed());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(site.state(), before);
}

#[test]
fn bare_cr_in_data_is_refused_and_nothing_stored() {
    let site = Site::start();
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    c.open_data("carol@outside.test", "alice@example.test");
    c.send(b"Subject: cr\r\n\r\nline\r.\rmore\r\n.\r\n");
    assert!(c.reply().starts_with("521 5.5.2"));
    assert_eq!(site.state(), before);
}

#[test]
fn bare_lf_in_a_command_is_refused_and_the_session_goes_on() {
    let site = Site::start();
    let (mut c, _) = Client::connect(site.mx);
    c.send(b"EHLO a.test\n");
    let r = c.reply();
    assert!(r.starts_with("500 5.5.2") && r.contains("CRLF"), "{r}");
    assert!(c.cmd("EHLO a.test").starts_with("250"));
}

#[test]
fn overlong_command_lines_are_refused_and_the_session_goes_on() {
    let site = Site::start();
    let (mut c, _) = Client::connect(site.mx);
    let r = c.cmd(&format!("EHLO {}", "a".repeat(10_000)));
    assert!(r.starts_with("500 5.5.2") && r.contains("too long"), "{r}");
    assert!(c.cmd("NOOP").starts_with("250"));
}

#[test]
fn oversize_messages_are_refused_by_size_parameter_and_by_content() {
    let site = Site::start_with(|c| c.message_size_max_bytes = 1000);
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    let ehlo = c.cmd("EHLO a.test");
    assert!(ehlo.contains("SIZE 1000"), "{ehlo}");
    let r = c.cmd("MAIL FROM:<carol@outside.test> SIZE=5000");
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert!(c.cmd("MAIL FROM:<carol@outside.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(2000)).as_bytes());
    let r = c.reply();
    assert!(r.starts_with("552 5.3.4"), "{r}");
    assert_eq!(site.state(), before);
    // The session survives and the next, smaller message is delivered.
    let r = c.send_mail("carol@outside.test", &["alice@example.test"], "Subject: small\r\n\r\nok");
    assert!(r.starts_with("250"), "{r}");
}

#[test]
fn recipients_beyond_the_limit_get_452_and_the_accepted_ones_get_the_mail() {
    let site = Site::start_with(|c| c.recipients_max = 2);
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.cmd("EHLO a.test").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<carol@outside.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("250"));
    let r = c.cmd("RCPT TO:<sales@example.test>");
    assert!(r.starts_with("452 4.5.3"), "{r}");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: two\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    assert_eq!(site.inbox_bodies("alice@example.test").len(), 1);
    assert_eq!(site.inbox_bodies("bob@example.test").len(), 1);
}

#[test]
fn submission_without_tls_offers_no_auth_and_refuses_mail() {
    let site = Site::start();
    let before = site.state();
    let (mut c, _) = Client::connect(site.submission);
    let ehlo = c.cmd("EHLO a.test");
    assert!(!ehlo.contains("AUTH"), "AUTH must not be offered in clear: {ehlo}");
    let r = c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=");
    assert!(r.starts_with("538 5.7.11"), "{r}");
    let r = c.cmd("MAIL FROM:<alice@example.test>");
    assert!(r.starts_with("530 5.7.0"), "{r}");
    assert!(c.cmd("RCPT TO:<bob@example.test>").starts_with("503"));
    assert_eq!(site.state(), before);
}

#[test]
fn mx_never_offers_or_accepts_auth() {
    let site = Site::start();
    let (mut c, _) = Client::connect(site.mx);
    assert!(!c.cmd("EHLO a.test").contains("AUTH"));
    assert!(c.cmd("AUTH PLAIN AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=").starts_with("503 5.5.1"));
}

#[test]
fn too_many_errors_end_the_session() {
    let site = Site::start_with(|c| c.errors_max = 3);
    let (mut c, _) = Client::connect(site.mx);
    for _ in 0..3 {
        assert!(c.cmd("FROB").starts_with("500 5.5.1"));
    }
    assert!(c.cmd("FROB").starts_with("500 5.5.1"));
    let r = c.reply();
    assert!(r.starts_with("421 4.7.0"), "{r}");
    assert!(c.is_closed());
}

#[test]
fn messages_with_too_many_header_fields_are_refused() {
    let site = Site::start_with(|c| c.header_fields_max = 10);
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    let headers: String = (0..20).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = c.send_mail("carol@outside.test", &["alice@example.test"], &format!("{headers}\r\nbody"));
    assert!(r.starts_with("554 5.6.0"), "{r}");
    assert_eq!(site.state(), before);
}

#[test]
fn a_recipient_over_quota_is_refused_with_552_and_nothing_is_stored() {
    let site = Site::start();
    site.cluster
        .store()
        .apply(maildr_store::Command::SetQuota { address: common::addr("bob@example.test"), quota_bytes: 300 })
        .unwrap()
        .unwrap();
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    let r = c.send_mail(
        "carol@outside.test",
        &["alice@example.test", "bob@example.test"],
        &format!("Subject: big\r\n\r\n{}", "y".repeat(500)),
    );
    assert!(r.starts_with("552 5.2.2") && r.contains("bob@example.test"), "{r}");
    // All or nothing: alice did not get a copy either.
    let after = site.state();
    assert_eq!(after.1, before.1);
}

#[test]
fn a_message_that_cannot_be_stored_gets_451_and_is_not_half_delivered() {
    let site = Site::start();
    let blobs = site.dir.path().join(maildr_store::BLOB_DIR);
    std::fs::remove_dir_all(&blobs).unwrap();
    std::fs::write(&blobs, b"not a directory").unwrap();
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    let r = c.send_mail("carol@outside.test", &["alice@example.test", "bob@example.test"], MSG);
    assert!(r.starts_with("451 4.3.0"), "{r}");
    assert_eq!(site.state(), before);
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let site = Site::start();
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.cmd("EHLO a.test").contains("PIPELINING"));
    c.send(b"MAIL FROM:<carol@outside.test>\r\nRCPT TO:<alice@example.test>\r\nRCPT TO:<nobody@example.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\n");
    let replies: Vec<String> = (0..5).map(|_| c.reply()).collect();
    let codes: Vec<&str> = replies.iter().map(|r| &r[..3]).collect();
    assert_eq!(codes, ["250", "250", "550", "250", "354"], "{replies:?}");
    c.send(b"Subject: p\r\n\r\nx\r\n.\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250"));
    assert!(c.reply().starts_with("221"));
    assert_eq!(site.inbox_bodies("bob@example.test").len(), 1);
}

#[test]
fn idle_clients_are_disconnected_with_421() {
    let site = Site::start_with(|c| c.idle_timeout_secs = 1);
    let (mut c, _) = Client::connect(site.mx);
    std::thread::sleep(Duration::from_millis(1500));
    let r = c.reply();
    assert!(r.starts_with("421 4.4.2"), "{r}");
}

#[test]
fn malformed_mime_is_stored_exactly_as_received() {
    let site = Site::start();
    let body = "Content-Type: multipart/mixed; boundary=\"never-closed\"\r\nSubject: =?bogus?Q?\r\n\r\n--never-closed\r\nContent-Type: message/rfc822\r\n\r\n--never-closed\r\n\x01\x02 ..dots\r\n..leading dot";
    let (mut c, _) = Client::connect(site.mx);
    let r = c.send_mail("carol@outside.test", &["alice@example.test"], body);
    assert!(r.starts_with("250"), "{r}");
    let stored = String::from_utf8(site.inbox_bodies("alice@example.test").remove(0)).unwrap();
    // The client did not dot-stuff, so the server removes one leading dot from
    // "..leading" (as RFC 5321 says) and keeps every other byte as sent.
    let expected = format!("{}\r\n", body.replace("\r\n..leading", "\r\n.leading"));
    assert!(stored.ends_with(&expected), "{stored:?}");
}

#[test]
fn commands_out_of_order_get_503_and_change_nothing() {
    let site = Site::start();
    let before = site.state();
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.cmd("MAIL FROM:<carol@outside.test>").starts_with("503 5.5.1"), "EHLO first");
    assert!(c.cmd("EHLO a.test").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("503 5.5.1"));
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<carol@outside.test>").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<carol@outside.test>").starts_with("503 5.5.1"));
    assert!(c.cmd("RSET").starts_with("250"));
    assert!(c.cmd("VRFY alice").starts_with("252"));
    assert_eq!(site.state(), before);
}

/// Seeded garbage never crashes the server nor stores anything; set
/// `MAILDR_FUZZ_SEED` to replay a failing run.
#[test]
fn random_garbage_neither_crashes_the_server_nor_stores_mail() {
    let seed: u64 = std::env::var("MAILDR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("MAILDR_FUZZ_SEED={seed}");
    let site = Site::start_with(|c| c.errors_max = 1_000_000);
    let before = site.state();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut next = move || rand::Rng::gen::<u64>(&mut rng);
    let pieces: [&[u8]; 14] = [
        b"MAIL FROM:<",
        b"RCPT TO:<",
        b"DATA",
        b"AUTH PLAIN ",
        b"EHLO ",
        b">",
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b"\xff\xfe",
        b"@example.test",
        b" SIZE=99999999999999999999",
        b"BDAT 10 LAST",
    ];
    let (mut c, _) = Client::connect(site.mx);
    for _ in 0..300 {
        let mut chunk = Vec::new();
        for _ in 0..(next() % 8) {
            if next() % 3 == 0 {
                chunk.push((next() % 256) as u8);
            } else {
                chunk.extend_from_slice(pieces[(next() % pieces.len() as u64) as usize]);
            }
        }
        chunk.extend_from_slice(b"\r\n");
        c.send(&chunk);
    }
    c.send(b"\r\nQUIT\r\n");
    drop(c);
    // Still serving, and nothing was stored by the garbage.
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.cmd("EHLO a.test").starts_with("250"), "server must still answer (seed {seed})");
    assert_eq!(site.state(), before, "seed {seed}");
}

#[test]
fn connections_beyond_the_limit_get_421_and_earlier_ones_keep_working() {
    let site = Site::start_with(|c| c.connections_max = 2);
    let (mut a, _) = Client::connect(site.mx);
    let (mut b, _) = Client::connect(site.mx);
    let (_, banner) = Client::connect(site.mx);
    assert!(banner.starts_with("421 4.3.2"), "{banner}");
    assert!(a.cmd("NOOP").starts_with("250"));
    assert!(b.cmd("NOOP").starts_with("250"));
}

#[test]
fn smtputf8_senders_and_8bit_bodies_are_accepted() {
    let site = Site::start();
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.cmd("EHLO a.test").contains("SMTPUTF8"));
    let r = c.cmd("MAIL FROM:<josé@outside.test> SMTPUTF8 BODY=8BITMIME");
    assert!(r.starts_with("250"), "{r}");
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send("Subject: héllo\r\n\r\nçà et là\r\n.\r\n".as_bytes());
    assert!(c.reply().starts_with("250"));
    let body = String::from_utf8(site.inbox_bodies("alice@example.test").remove(0)).unwrap();
    assert!(body.ends_with("Subject: héllo\r\n\r\nçà et là\r\n"), "{body}");
}

/// A retry is recognised by what the sender sent, never by a header it chose: two
/// different messages with one Message-ID are both stored (a corrected resend, or
/// a sender pre-empting someone else's predictable id); the same delivery sent
/// again, as an MTA does when it missed the 250, is stored once and gets its 250.
#[test]
fn a_different_message_with_the_same_message_id_is_stored_and_a_retry_is_not() {
    let site = Site::start();
    let first = "Message-ID: <notice-1@example.test>\r\nSubject: your invoice\r\n\r\nAmount: 10.";
    let second = "Message-ID: <notice-1@example.test>\r\nSubject: your invoice (corrected)\r\n\r\nAmount: 12.";
    for body in [first, second] {
        let (mut c, _) = Client::connect(site.mx);
        let r = c.send_mail("billing@outside.test", &["alice@example.test"], body);
        assert!(r.starts_with("250 2.0.0"), "{r}");
    }
    let bodies: Vec<String> =
        site.inbox_bodies("alice@example.test").into_iter().map(|b| String::from_utf8(b).unwrap()).collect();
    assert_eq!(bodies.len(), 2, "both messages are in the INBOX: {bodies:?}");
    assert!(bodies[0].ends_with("Amount: 10.\r\n") && bodies[1].ends_with("Amount: 12.\r\n"), "{bodies:?}");
    // The retry: the same sender, the same bytes, on a new connection.
    let (mut c, _) = Client::connect(site.mx);
    let r = c.send_mail("billing@outside.test", &["alice@example.test"], second);
    assert!(r.starts_with("250 2.0.0"), "a retry gets its 250: {r}");
    assert_eq!(site.inbox_bodies("alice@example.test").len(), 2, "and is not stored twice");
    // The same bytes from another sender are another delivery.
    let r = c.send_mail("someone@outside.test", &["alice@example.test"], second);
    assert!(r.starts_with("250 2.0.0"), "{r}");
    assert_eq!(site.inbox_bodies("alice@example.test").len(), 3);
    assert!(site.cluster.store().check().unwrap().problems.is_empty());
}

#[test]
fn mail_received_by_the_mx_carries_its_authentication_results_above_our_trace() {
    // No DNS server answers on port 9: the checks end in temperror (or time out),
    // and the message is delivered all the same, with the header saying so.
    let site = Site::start_with(|c| {
        c.authentication_checks = true;
        c.authentication_checks_timeout_ms = 500;
        c.resolvers = vec!["127.0.0.1:9".parse().unwrap()];
    });
    let (mut c, _) = Client::connect(site.mx);
    assert!(c.cmd("EHLO sender.example.org").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<someone@sender.example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"From: someone@sender.example.org\r\nSubject: checked\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    let bodies = site.inbox_bodies("alice@example.test");
    let text = String::from_utf8_lossy(&bodies[0]);
    assert!(text.starts_with("Authentication-Results: mx.example.test;"), "{text}");
    let head = &text[..text.find("Received:").expect("our trace follows")];
    for method in ["spf=", "dkim=", "dmarc="] {
        assert!(head.contains(method), "{method} missing: {head}");
    }
    assert!(!head.contains("=pass"), "nothing can pass without DNS: {head}");
}
