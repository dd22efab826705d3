//! Every read of the clients is bounded and every await has a deadline: a peer that
//! sends an endless line, endless continuations, huge literals or nothing at all
//! gets an error, not the client's memory or time.

mod common;

use std::time::{Duration, Instant};

use maildr_client::imap::{self, ImapError, ResponseError, LITERAL_BYTES_MAX, RESPONSES_MAX};
use maildr_client::smtp::{self, ReplyError, SmtpError, REPLY_LINES_MAX};
use maildr_client::{LineError, LINE_BYTES_MAX};
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(20);

#[tokio::test]
async fn an_smtp_line_longer_than_the_bound_is_an_error() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(&vec![b'2'; LINE_BYTES_MAX + 100]).await;
        let _ = c.get_mut().write_all(b"\r\n").await;
        common::line(&mut c).await;
    })
    .await;
    let err = smtp::Session::connect(addr, None, T).await.err().expect("an error");
    assert!(matches!(&err, SmtpError::Reply { source: ReplyError::Line(LineError::TooLong), .. }), "{err}");
}

#[tokio::test]
async fn a_line_at_the_bound_is_read() {
    let addr = common::peer(|mut c| async move {
        let mut line = b"220 ".to_vec();
        line.resize(LINE_BYTES_MAX, b'x');
        line.extend_from_slice(b"\r\n");
        let _ = c.get_mut().write_all(&line).await;
        common::line(&mut c).await;
    })
    .await;
    let session = smtp::Session::connect(addr, None, T).await.expect("a banner at the bound");
    assert_eq!(session.banner().code, 220);
}

#[tokio::test]
async fn endless_smtp_continuation_lines_are_an_error() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(b"220 hi\r\n").await;
        common::line(&mut c).await;
        // Continuations without end, until the client hangs up.
        while c.get_mut().write_all(b"250-more\r\n").await.is_ok() {}
    })
    .await;
    let mut session = smtp::Session::connect(addr, None, T).await.expect("banner");
    let err = session.ehlo("client.test").await.expect_err("an error");
    assert!(matches!(&err, SmtpError::Reply { source: ReplyError::TooManyLines, .. }), "{err}");
    assert!(err.to_string().contains(&format!("more than {REPLY_LINES_MAX} lines")), "{err}");
}

#[tokio::test]
async fn a_silent_smtp_or_imap_server_times_out_with_the_deadline_named() {
    let (addr, _held) = common::silent_peer().await;
    let started = Instant::now();
    let err = smtp::Session::connect(addr, None, Duration::from_millis(200)).await.err().expect("timeout");
    assert!(matches!(err, SmtpError::Timeout { .. }) && err.to_string().contains("200 ms"), "{err}");
    let err = imap::Session::connect(addr, None, Duration::from_millis(200)).await.err().expect("timeout");
    assert!(matches!(err, ImapError::Timeout { .. }) && err.to_string().contains("200 ms"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// An IMAP peer that greets, then answers the first command with `answer`.
async fn imap_peer(answer: fn() -> Vec<u8>) -> std::net::SocketAddr {
    common::peer(move |mut c| async move {
        let _ = c.get_mut().write_all(b"* OK ready\r\n").await;
        common::line(&mut c).await;
        let _ = c.get_mut().write_all(&answer()).await;
        common::line(&mut c).await;
    })
    .await
}

#[tokio::test]
async fn a_literal_above_the_bound_is_refused_before_it_is_read() {
    let addr = imap_peer(|| format!("* 1 FETCH (BODY[] {{{}}}\r\n", LITERAL_BYTES_MAX + 1).into_bytes()).await;
    let mut session = imap::Session::connect(addr, None, T).await.expect("greeting");
    let err = session.fetch("1", "BODY[]").await.expect_err("an error");
    assert!(matches!(&err, ImapError::Read { source: ResponseError::LiteralTooLarge(_), .. }), "{err}");
}

#[tokio::test]
async fn an_over_long_imap_line_is_an_error() {
    let addr = imap_peer(|| vec![b'*'; LINE_BYTES_MAX + 10]).await;
    let mut session = imap::Session::connect(addr, None, T).await.expect("greeting");
    let err = session.run("NOOP").await.expect_err("an error");
    assert!(matches!(&err, ImapError::Read { source: ResponseError::Line(LineError::TooLong), .. }), "{err}");
}

#[tokio::test]
async fn endless_untagged_responses_are_an_error() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(b"* OK ready\r\n").await;
        common::line(&mut c).await;
        let batch = b"* 1 EXISTS\r\n".repeat(1000);
        while c.get_mut().write_all(&batch).await.is_ok() {}
    })
    .await;
    let mut session = imap::Session::connect(addr, None, T).await.expect("greeting");
    let err = session.run("NOOP").await.expect_err("an error");
    assert!(matches!(&err, ImapError::Read { source: ResponseError::TooMany, .. }), "{err}");
    assert!(err.to_string().contains(&RESPONSES_MAX.to_string()), "{err}");
}

#[tokio::test]
async fn responses_above_the_byte_bound_are_an_error() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(b"* OK ready\r\n").await;
        common::line(&mut c).await;
        let size = LITERAL_BYTES_MAX / 2;
        let body = vec![b'a'; size];
        for i in 1.. {
            let head = format!("* {i} FETCH (BODY[] {{{size}}}\r\n");
            let ok = c.get_mut().write_all(head.as_bytes()).await.is_ok()
                && c.get_mut().write_all(&body).await.is_ok()
                && c.get_mut().write_all(b")\r\n").await.is_ok();
            if !ok {
                return;
            }
        }
    })
    .await;
    let mut session = imap::Session::connect(addr, None, T).await.expect("greeting");
    let err = session.fetch("1:*", "BODY[]").await.expect_err("an error");
    assert!(matches!(&err, ImapError::Read { source: ResponseError::TooLarge, .. }), "{err}");
}
