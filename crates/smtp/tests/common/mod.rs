//! A real SMTP site on loopback ephemeral ports, in-process, with a blocking
//! line-level client: the tests speak raw SMTP so they can send what no polite
//! client library would (bare LF, pipelined garbage, oversize lines).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use maildr_cluster::{Cluster, WritePathLimits};
use maildr_config::SmtpSection;
use maildr_smtp::{ListenerKind, SmtpListeners, SmtpService};
use maildr_store::{Command, Store};
use maildr_types::{Domain, EmailAddress, MailboxName, UidValidity, UnixSeconds};

pub struct Site {
    pub dir: tempfile::TempDir,
    pub mx: SocketAddr,
    pub submission: SocketAddr,
    pub cluster: Cluster,
    stop: tokio::sync::watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
}

pub fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

impl Site {
    pub fn start() -> Site {
        Self::start_with(|_| {})
    }

    pub fn start_with(tune: impl FnOnce(&mut SmtpSection)) -> Site {
        Self::start_full(tune, maildr_types::system_clock())
    }

    /// A site whose SMTP service reads the time from `clock`.
    pub fn start_at(clock: maildr_types::SharedClock) -> Site {
        Self::start_full(|_| {}, clock)
    }

    fn start_full(tune: impl FnOnce(&mut SmtpSection), clock: maildr_types::SharedClock) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ok = |c| store.apply(c).unwrap().unwrap();
        ok(Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(1) });
        for user in ["alice@example.test", "bob@example.test"] {
            ok(Command::AddAccount {
                address: addr(user),
                password_hash: maildr_frontend::hash_password("secret"),
                quota_bytes: 0,
                uid_validity: UidValidity(1),
                at: UnixSeconds(1),
            });
        }
        ok(Command::AddAlias { alias: addr("sales@example.test"), target: addr("alice@example.test") });
        let mut config = SmtpSection {
            mx_listen: "127.0.0.1:0".parse().unwrap(),
            submission_listen: "127.0.0.1:0".parse().unwrap(),
            idle_timeout_secs: 30,
            // The behaviour tests read bodies byte for byte; one test turns it on.
            authentication_checks: false,
            ..SmtpSection::default()
        };
        tune(&mut config);
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let cluster = Cluster::single_site(store, WritePathLimits::default());
        let listeners = rt.block_on(SmtpListeners::bind(&config, false)).unwrap();
        let addrs = listeners.local_addrs();
        let find = |k| addrs.iter().find(|(kind, _)| *kind == k).unwrap().1;
        let (mx, submission) = (find(ListenerKind::Mx), find(ListenerKind::Submission));
        let service = SmtpService::with_clock(cluster.clone(), config, "mx.example.test".into(), None, clock);
        let (stop, rx) = tokio::sync::watch::channel(false);
        rt.spawn(maildr_smtp::serve(service, listeners, rx));
        Site { dir, mx, submission, cluster, stop, rt: Some(rt) }
    }

    /// Every message of every INBOX: (account, raw body).
    pub fn inbox_bodies(&self, user: &str) -> Vec<Vec<u8>> {
        let store = self.cluster.store();
        let account = store.account(&addr(user)).unwrap().unwrap();
        let inbox = store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().unwrap();
        store.messages(inbox.id).unwrap().iter().map(|m| store.blobs().get(&m.body).unwrap()).collect()
    }

    /// The internal dates of the messages in `user`'s INBOX.
    pub fn inbox_dates(&self, user: &str) -> Vec<UnixSeconds> {
        let store = self.cluster.store();
        let account = store.account(&addr(user)).unwrap().unwrap();
        let inbox = store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().unwrap();
        store.messages(inbox.id).unwrap().iter().map(|m| m.internal_date).collect()
    }

    /// A fingerprint of all mail state: commands applied and each INBOX's digest.
    pub fn state(&self) -> (u64, Vec<String>) {
        let store = self.cluster.store();
        let mut digests = Vec::new();
        for account in store.accounts(None).unwrap() {
            for m in store.mailboxes(account.id).unwrap() {
                digests.push(format!("{}/{}:{}:{}", account.address, m.name, m.message_count, m.digest.to_hex()));
            }
        }
        (store.commands_applied().unwrap(), digests)
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    pub fn connect(to: SocketAddr) -> (Client, String) {
        let stream = TcpStream::connect(to).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let writer = stream.try_clone().unwrap();
        let mut client = Client { reader: BufReader::new(stream), writer };
        let banner = client.reply();
        (client, banner)
    }

    /// Read one (possibly multi-line) reply; lines joined with '\n'. Empty string
    /// when the server closed the connection.
    pub fn reply(&mut self) -> String {
        let mut all = String::new();
        loop {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) | Err(_) => return all,
                Ok(_) => {}
            }
            let done = line.len() < 4 || line.as_bytes()[3] != b'-';
            all.push_str(line.trim_end());
            if done {
                return all;
            }
            all.push('\n');
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// True once the server has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        let mut buf = [0u8; 1];
        matches!(self.reader.read(&mut buf), Ok(0) | Err(_))
    }

    /// EHLO, MAIL, RCPT and DATA, each asserted accepted: the client may send data.
    pub fn open_data(&mut self, from: &str, to: &str) {
        assert!(self.cmd("EHLO a.test").starts_with("250"));
        assert!(self.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
        assert!(self.cmd(&format!("RCPT TO:<{to}>")).starts_with("250"));
        assert!(self.cmd("DATA").starts_with("354"));
    }

    /// EHLO, MAIL, RCPT..., DATA with a CRLF body; returns the reply to the dot.
    pub fn send_mail(&mut self, from: &str, to: &[&str], body: &str) -> String {
        assert!(self.cmd("EHLO client.test").starts_with("250"));
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if !r.starts_with("250") {
            return r;
        }
        for rcpt in to {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>"));
            if !r.starts_with("250") {
                return r;
            }
        }
        let r = self.cmd("DATA");
        if !r.starts_with("354") {
            return r;
        }
        self.send(body.as_bytes());
        self.send(b"\r\n.\r\n");
        self.reply()
    }
}
