//! The clients against scripted peers: what goes on the wire and what comes back.

mod common;

use std::time::Duration;

use maildr_client::imap;
use maildr_client::smtp::{self, Envelope, Login, Security, Step};
use maildr_client::Tls;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const T: Duration = Duration::from_secs(10);

fn envelope<'a>(to: &'a [String], data: &'a [u8]) -> Envelope<'a> {
    Envelope { helo: "client.test", from: "a@example.test", to, data }
}

#[tokio::test]
async fn a_pipelining_server_gets_the_envelope_in_one_write_and_dot_stuffed_data() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(b"220 mx ESMTP\r\n").await;
        assert_eq!(common::line(&mut c).await, "EHLO client.test");
        let _ = c.get_mut().write_all(b"250-mx\r\n250 PIPELINING\r\n").await;
        // The whole envelope arrives before the server answers anything.
        let mut batch = [0u8; 64];
        let want = b"MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n";
        let _ = c.read_exact(&mut batch[..want.len()]).await;
        assert_eq!(&batch[..want.len()], want);
        let _ = c.get_mut().write_all(b"250 ok\r\n250 ok\r\n354 go\r\n").await;
        assert_eq!(common::line(&mut c).await, "..hidden");
        assert_eq!(common::line(&mut c).await, "x");
        assert_eq!(common::line(&mut c).await, ".");
        let _ = c.get_mut().write_all(b"250 2.0.0 queued\r\n").await;
        assert_eq!(common::line(&mut c).await, "QUIT");
    })
    .await;
    let to = ["b@example.test".to_string()];
    let reply = smtp::send(addr, &Security::Plain, None, &envelope(&to, b".hidden\r\nx\r\n"), T).await.unwrap();
    assert_eq!((reply.code, reply.enhanced.map(|e| e.to_string())), (250, Some("2.0.0".into())));
}

#[tokio::test]
async fn a_refused_recipient_decides_the_outcome_and_no_data_is_sent() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(b"220 mx\r\n").await;
        common::line(&mut c).await;
        let _ = c.get_mut().write_all(b"250 mx\r\n").await;
        assert!(common::line(&mut c).await.starts_with("MAIL"));
        let _ = c.get_mut().write_all(b"250 ok\r\n").await;
        assert!(common::line(&mut c).await.starts_with("RCPT"));
        let _ = c.get_mut().write_all(b"451 4.3.0 no quorum\r\n").await;
        assert_eq!(common::line(&mut c).await, "QUIT");
    })
    .await;
    let mut session = smtp::Session::connect(addr, None, T).await.unwrap();
    session.ehlo("client.test").await.unwrap();
    let to = ["b@example.test".to_string()];
    let outcome = session.send_message(&envelope(&to, b"x\r\n")).await.unwrap();
    assert_eq!(outcome.step, Step::RcptTo);
    assert!(outcome.reply.is_transient() && !outcome.is_accepted());
    session.quit().await;
}

#[tokio::test]
async fn auth_login_is_used_when_the_server_offers_only_login() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(b"220 sub\r\n").await;
        common::line(&mut c).await;
        let _ = c.get_mut().write_all(b"250-sub\r\n250 AUTH LOGIN\r\n").await;
        assert_eq!(common::line(&mut c).await, "AUTH LOGIN");
        let _ = c.get_mut().write_all(b"334 VXNlcm5hbWU6\r\n").await;
        assert_eq!(common::line(&mut c).await, "dXNlcg==");
        let _ = c.get_mut().write_all(b"334 UGFzc3dvcmQ6\r\n").await;
        assert_eq!(common::line(&mut c).await, "cHc=");
        let _ = c.get_mut().write_all(b"535 5.7.8 no\r\n").await;
        common::line(&mut c).await;
    })
    .await;
    let login = Login { user: "user".into(), password: "pw".into() };
    let to = ["b@example.test".to_string()];
    let reply = smtp::send(addr, &Security::Plain, Some(&login), &envelope(&to, b"x\r\n"), T).await.unwrap();
    assert_eq!(reply.code, 535);
}

#[tokio::test]
async fn starttls_upgrades_and_verifies_the_server_against_the_given_ca() {
    let (ca_pem, acceptor) = common::tls_pair("mail.example.test");
    let addr = common::peer(move |mut c| async move {
        let _ = c.get_mut().write_all(b"220 sub\r\n").await;
        common::line(&mut c).await;
        let _ = c.get_mut().write_all(b"250-sub\r\n250 STARTTLS\r\n").await;
        assert_eq!(common::line(&mut c).await, "STARTTLS");
        let _ = c.get_mut().write_all(b"220 go\r\n").await;
        let Ok(tls) = acceptor.accept(c.into_inner()).await else { return };
        let mut c = BufReader::new(tls);
        let mut line = String::new();
        let _ = c.read_line(&mut line).await;
        assert_eq!(line, "EHLO client.test\r\n");
        let _ = c.get_mut().write_all(b"554 5.7.1 enough\r\n").await;
        let _ = c.read_line(&mut line).await;
    })
    .await;
    let tls = Tls::from_ca_pem(ca_pem.as_bytes()).unwrap();
    let security = Security::StartTls { tls, server_name: "mail.example.test".into() };
    let to = ["b@example.test".to_string()];
    let reply = smtp::send(addr, &security, None, &envelope(&to, b"x\r\n"), T).await.unwrap();
    assert_eq!(reply.code, 554, "the second EHLO went over TLS");
}

#[tokio::test]
async fn implicit_tls_to_a_server_with_another_name_fails_the_handshake() {
    let (ca_pem, acceptor) = common::tls_pair("mail.example.test");
    let addr = common::peer(move |c| async move {
        let _ = acceptor.accept(c.into_inner()).await;
    })
    .await;
    let tls = Tls::from_ca_pem(ca_pem.as_bytes()).unwrap();
    let err = imap::Session::connect(addr, Some((&tls, "other.example.test")), T).await.err().expect("refused");
    assert!(matches!(err, imap::ImapError::Tls { .. }), "{err}");
    assert!(Tls::from_ca_pem(b"no certificate here").is_err());
}

#[tokio::test]
async fn an_imap_session_logs_in_examines_fetches_searches_idles_and_logs_out() {
    let (ca_pem, acceptor) = common::tls_pair("mail.example.test");
    let addr = common::peer(move |c| async move {
        let Ok(tls) = acceptor.accept(c.into_inner()).await else { return };
        let mut c = BufReader::new(tls);
        let mut line = String::new();
        let _ = c.get_mut().write_all(b"* OK ready\r\n").await;
        let script: [(&str, &[u8]); 6] = [
            ("c1 LOGIN \"u@example.test\" \"p\\\"w\"", b"c1 OK logged in\r\n"),
            ("c2 EXAMINE \"INBOX\"", b"* 2 EXISTS\r\n* OK [UIDVALIDITY 7] v\r\nc2 OK [READ-ONLY] done\r\n"),
            (
                "c3 UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (X-Tag)])",
                b"* 1 FETCH (UID 4 BODY[HEADER.FIELDS (X-TAG)] {12}\r\nX-Tag: one\r\n)\r\nc3 OK done\r\n",
            ),
            ("c4 SEARCH SUBJECT \"x\"", b"* SEARCH 1 2\r\nc4 OK done\r\n"),
            ("c5 IDLE", b"+ idling\r\n* 3 EXISTS\r\n"),
            ("DONE", b"c5 OK idle done\r\n"),
        ];
        for (want, answer) in script {
            line.clear();
            let _ = c.read_line(&mut line).await;
            assert_eq!(line.trim_end(), want);
            let _ = c.get_mut().write_all(answer).await;
        }
        line.clear();
        let _ = c.read_line(&mut line).await;
        assert_eq!(line.trim_end(), "c6 LOGOUT");
        let _ = c.get_mut().write_all(b"* BYE bye\r\nc6 OK done\r\n").await;
    })
    .await;
    let tls = Tls::from_ca_pem(ca_pem.as_bytes()).unwrap();
    let mut s = imap::Session::connect(addr, Some((&tls, "mail.example.test")), T).await.unwrap();
    s.login("u@example.test", "p\"w").await.unwrap();
    let mailbox = s.examine("INBOX").await.unwrap();
    assert_eq!((mailbox.exists, mailbox.uid_validity), (2, Some(7)));
    assert_eq!(s.header_field_by_uid("X-Tag", 1).await.unwrap(), vec![(4, "one".to_string())]);
    assert_eq!(s.search("SUBJECT \"x\"").await.unwrap(), vec![1, 2]);
    let news = s.idle(Duration::from_secs(5)).await.unwrap();
    assert_eq!(news.iter().map(|r| r.line.as_str()).collect::<Vec<_>>(), vec!["* 3 EXISTS"]);
    s.logout().await;
}

#[tokio::test]
async fn a_refused_login_names_the_command_but_not_the_password() {
    let addr = common::peer(|mut c| async move {
        let _ = c.get_mut().write_all(b"* OK ready\r\n").await;
        common::line(&mut c).await;
        let _ = c.get_mut().write_all(b"c1 NO [AUTHENTICATIONFAILED] no\r\n").await;
        common::line(&mut c).await;
    })
    .await;
    let mut s = imap::Session::connect(addr, None, T).await.unwrap();
    let err = s.login("u@example.test", "secret-pw").await.unwrap_err();
    assert!(matches!(err, imap::ImapError::Refused { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("LOGIN answered NO") && !text.contains("secret-pw"), "{text}");
}
