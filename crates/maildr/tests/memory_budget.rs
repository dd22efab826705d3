//! The site-wide memory budget for message data (issue 16, part 3), tried as an
//! attacker would over real sockets against a real `maildr serve`: many clients
//! streaming huge unterminated lines into DATA, and a FETCH of a mailbox far
//! larger than memory should hold. The site's peak resident memory stays under a
//! stated bound, and every other client is served meanwhile.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{provisioned_dir, SiteProcess};

const MIB: u64 = 1024 * 1024;

/// One attack at a time: each measures a site's peak memory and loads both cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// A figure from `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`).
fn proc_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

struct Smtp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> Smtp {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
        let mut smtp = Smtp { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        assert!(smtp.reply().starts_with("220"));
        smtp
    }

    /// The last line of the next reply.
    fn reply(&mut self) -> String {
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line).unwrap() == 0 {
                return "closed".into();
            }
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return line.trim_end().to_string();
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        self.writer.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.reply()
    }

    /// EHLO, MAIL, RCPT to alice and DATA, answered 354.
    fn open_data(&mut self) {
        assert!(self.cmd("EHLO attacker.test").starts_with("250"));
        assert!(self.cmd("MAIL FROM:<someone@remote.test>").starts_with("250"));
        assert!(self.cmd("RCPT TO:<alice@example.test>").starts_with("250"));
        assert!(self.cmd("DATA").starts_with("354"));
    }
}

/// Messages in alice's INBOX, as IMAP STATUS reports them.
fn inbox_messages(imap: SocketAddr) -> u64 {
    let stream = TcpStream::connect(imap).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    writer.write_all(b"a LOGIN alice@example.test alice-pw\r\nb STATUS INBOX (MESSAGES)\r\nc LOGOUT\r\n").unwrap();
    let mut messages = None;
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(rest) = line.strip_prefix("* STATUS INBOX (MESSAGES ") {
            messages = rest.trim_end().trim_end_matches(')').parse().ok();
        }
        if line.starts_with("a NO") || line.starts_with("b NO") {
            panic!("IMAP: {line}");
        }
        if line.starts_with("c ") {
            break;
        }
    }
    messages.expect("STATUS answered")
}

#[test]
fn two_hundred_unterminated_20_mib_data_lines_stay_within_the_budget_and_small_mail_is_served() {
    let _one = one_at_a_time();
    const CONNECTIONS: usize = 200;
    const LINE_BYTES: usize = 20 * 1024 * 1024;
    const BUDGET: u64 = 64 * MIB;
    let dir = provisioned_dir();
    let site = SiteProcess::start_with_site(
        dir.path(),
        &format!("message_memory_max_bytes = {BUDGET}"),
        "connections_max = 1000\nerrors_max = 1000",
        "",
    );
    let pid = site.child.id();
    let mx: SocketAddr = format!("127.0.0.1:{}", site.port("mx")).parse().unwrap();
    let imap: SocketAddr = format!("127.0.0.1:{}", site.port("imap")).parse().unwrap();
    let before = inbox_messages(imap);
    let baseline_kib = proc_kib(pid, "VmRSS");

    let flood_done = Arc::new(AtomicBool::new(false));
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut smtp = Smtp::connect(mx);
                smtp.open_data();
                let chunk = vec![b'x'; 64 * 1024];
                for _ in 0..LINE_BYTES / chunk.len() {
                    smtp.writer.write_all(&chunk).unwrap();
                }
                smtp.writer.write_all(b"\r\n.\r\n").unwrap();
                let reply = smtp.reply();
                let _ = smtp.cmd("QUIT");
                reply
            })
        })
        .collect();
    // Ordinary mail keeps flowing while the flood runs.
    let ordinary = {
        let flood_done = Arc::clone(&flood_done);
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(600);
            let mut replies = Vec::new();
            while !flood_done.load(Ordering::SeqCst) && Instant::now() < deadline && replies.len() < 200 {
                let mut smtp = Smtp::connect(mx);
                smtp.open_data();
                let body = format!("Subject: ordinary {}\r\n\r\n{}\r\n.\r\n", replies.len(), "o".repeat(5000));
                smtp.writer.write_all(body.as_bytes()).unwrap();
                replies.push(smtp.reply());
                let _ = smtp.cmd("QUIT");
                std::thread::sleep(Duration::from_millis(500));
            }
            replies
        })
    };
    let replies: Vec<String> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
    flood_done.store(true, Ordering::SeqCst);
    let ordinary = ordinary.join().unwrap();
    let peak_kib = proc_kib(pid, "VmHWM");

    let accepted = replies.iter().filter(|r| r.starts_with("250")).count();
    let refused = replies.iter().filter(|r| r.starts_with("452 4.3.1")).count();
    assert_eq!(accepted + refused, CONNECTIONS, "each attacker gets 250 or 452: {replies:?}");
    assert!(refused > 0, "200 × 20 MiB cannot fit a 64 MiB budget: {replies:?}");
    assert!(!ordinary.is_empty());
    assert!(ordinary.iter().all(|r| r.starts_with("250")), "ordinary mail during the flood: {ordinary:?}");
    // Nothing acknowledged is lost and nothing refused is stored.
    assert_eq!(inbox_messages(imap), before + (accepted + ordinary.len()) as u64);
    // The bound: the budget, held at most three times over while a message is
    // delivered (the body, its copy with our Received header, the store's write),
    // each connection's uncharged allowance and pending input, and the baseline.
    let bound_kib = baseline_kib + 3 * BUDGET / 1024 + CONNECTIONS as u64 * 256 + 64 * 1024;
    eprintln!(
        "flood: {accepted} accepted, {refused} refused; {} ordinary; RSS baseline {} MiB, peak {} MiB, bound {} MiB",
        ordinary.len(),
        baseline_kib / 1024,
        peak_kib / 1024,
        bound_kib / 1024
    );
    assert!(peak_kib < bound_kib, "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB");
    site.stop();
}

/// A raw IMAP connection.
struct Imap {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Imap {
    fn connect(addr: SocketAddr) -> Imap {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(180))).unwrap();
        let mut imap = Imap { reader: BufReader::new(stream.try_clone().unwrap()), writer: stream };
        assert!(imap.line().starts_with("* OK"));
        imap
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        let _ = self.reader.read_line(&mut line);
        line
    }

    /// Lines up to and including the tagged answer to `tag`.
    fn until_tagged(&mut self, tag: &str) -> String {
        loop {
            let line = self.line();
            if line.is_empty() || line.starts_with(&format!("{tag} ")) {
                return line;
            }
        }
    }

    fn login(&mut self) {
        self.writer.write_all(b"l LOGIN alice@example.test alice-pw\r\n").unwrap();
        assert!(self.until_tagged("l").starts_with("l OK"));
    }

    /// APPEND one message with a synchronising literal.
    fn append(&mut self, message: &[u8]) -> String {
        self.writer.write_all(format!("p APPEND INBOX {{{}}}\r\n", message.len()).as_bytes()).unwrap();
        let go = self.line();
        assert!(go.starts_with('+'), "APPEND literal not accepted: {go}");
        self.writer.write_all(message).unwrap();
        self.writer.write_all(b"\r\n").unwrap();
        self.until_tagged("p")
    }
}

#[test]
fn literals_before_login_are_cut_at_the_pre_login_limit_and_others_log_in_meanwhile() {
    let _one = one_at_a_time();
    const CONNECTIONS: usize = 200;
    const LITERAL_BYTES: usize = 25 * 1000 * 1000;
    let dir = provisioned_dir();
    let site = SiteProcess::start(dir.path());
    let pid = site.child.id();
    let imap: SocketAddr = format!("127.0.0.1:{}", site.port("imap")).parse().unwrap();
    let baseline_kib = proc_kib(pid, "VmRSS");
    let attackers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Imap::connect(imap);
                conn.writer.write_all(format!("a LOGIN {{{LITERAL_BYTES}}}\r\n").as_bytes()).unwrap();
                let go = conn.line();
                assert!(go.starts_with('+'), "{go}");
                let chunk = vec![b'x'; 64 * 1024];
                let mut sent = 0;
                while sent < LITERAL_BYTES {
                    if conn.writer.write_all(&chunk).is_err() {
                        break; // the server closed the connection
                    }
                    sent += chunk.len();
                }
                (sent, conn.line())
            })
        })
        .collect();
    // Meanwhile an ordinary client logs in and reads its mailbox.
    let mut ordinary = Imap::connect(imap);
    ordinary.login();
    ordinary.writer.write_all(b"s STATUS INBOX (MESSAGES)\r\n").unwrap();
    assert!(ordinary.until_tagged("s").starts_with("s OK"));
    for attacker in attackers {
        let (sent, answer) = attacker.join().unwrap();
        assert!(answer.starts_with("* BYE [LIMIT]"), "after {sent} bytes: {answer:?}");
        assert!(sent < LITERAL_BYTES, "the whole literal was taken");
    }
    let peak_kib = proc_kib(pid, "VmHWM");
    // Each connection holds at most the pre-login limit and a read chunk.
    let bound_kib = baseline_kib + CONNECTIONS as u64 * 256 + 64 * 1024;
    eprintln!(
        "pre-login literals: RSS baseline {} MiB, peak {} MiB, bound {} MiB",
        baseline_kib / 1024,
        peak_kib / 1024,
        bound_kib / 1024
    );
    assert!(peak_kib < bound_kib, "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB");
    site.stop();
}

#[test]
fn a_fetch_of_a_1_gib_mailbox_is_streamed_within_the_budget() {
    let _one = one_at_a_time();
    const MESSAGE_BYTES: usize = 24 * 1024 * 1024;
    const MESSAGES: usize = 43; // 1,032 MiB
    const BUDGET: u64 = 96 * MIB;
    let dir = provisioned_dir();
    let site = SiteProcess::start_with_site(dir.path(), &format!("message_memory_max_bytes = {BUDGET}"), "", "");
    let pid = site.child.id();
    let imap: SocketAddr = format!("127.0.0.1:{}", site.port("imap")).parse().unwrap();
    let mut conn = Imap::connect(imap);
    conn.login();
    let mut message = b"Subject: large\r\nFrom: a@example.test\r\n\r\n".to_vec();
    let line = [b'y'; 998];
    while message.len() + 1000 <= MESSAGE_BYTES {
        message.extend_from_slice(&line);
        message.extend_from_slice(b"\r\n");
    }
    for n in 0..MESSAGES {
        let answer = conn.append(&message);
        assert!(answer.starts_with("p OK"), "APPEND {n}: {answer}");
    }
    let message_len = message.len();
    drop(message);
    // Peak memory from here on only.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let baseline_kib = proc_kib(pid, "VmRSS");
    conn.writer.write_all(b"s SELECT INBOX\r\nf FETCH 1:* (BODY.PEEK[])\r\n").unwrap();
    assert!(conn.until_tagged("s").starts_with("s OK"));
    // Meanwhile another client is served.
    let other = std::thread::spawn(move || {
        let mut other = Imap::connect(imap);
        other.login();
        other.writer.write_all(b"n NOOP\r\n").unwrap();
        other.until_tagged("n")
    });
    let mut fetched = 0;
    let mut bytes = 0u64;
    let mut literal = vec![0u8; 1 << 20];
    let answer = loop {
        let line = conn.line();
        assert!(!line.is_empty(), "connection closed during the FETCH");
        if line.starts_with("f ") {
            break line;
        }
        if let Some(open) = line.trim_end().strip_suffix('}').and_then(|l| l.rsplit_once('{')) {
            let mut left: usize = open.1.parse().unwrap();
            while left > 0 {
                let n = left.min(literal.len());
                std::io::Read::read_exact(&mut conn.reader, &mut literal[..n]).unwrap();
                left -= n;
                bytes += n as u64;
            }
            fetched += 1;
        }
    };
    assert!(answer.starts_with("f OK"), "{answer}");
    assert_eq!(fetched, MESSAGES);
    assert_eq!(bytes, (MESSAGES * message_len) as u64, "every byte of every message");
    assert!(other.join().unwrap().starts_with("n OK"));
    let peak_kib = proc_kib(pid, "VmHWM");
    // One message is answered at a time, charged three times over to the budget;
    // the allocator's arenas (one per worker thread) may keep as much again. The
    // point: the peak does not grow with the mailbox (1 GiB here).
    let bound_kib = baseline_kib + 2 * BUDGET / 1024;
    eprintln!(
        "FETCH of {} MiB: RSS baseline {} MiB, peak {} MiB, bound {} MiB",
        bytes >> 20,
        baseline_kib / 1024,
        peak_kib / 1024,
        bound_kib / 1024
    );
    assert!(bytes >= 1 << 30, "a mailbox of at least 1 GiB");
    assert!(peak_kib < bound_kib, "peak RSS {peak_kib} KiB over the bound {bound_kib} KiB");
    site.stop();
}

#[test]
fn an_imap_literal_the_budget_cannot_hold_ends_that_session_and_changes_nothing() {
    let _one = one_at_a_time();
    const BUDGET: u64 = 32 * MIB;
    let dir = provisioned_dir();
    let site = SiteProcess::start_with_site(dir.path(), &format!("message_memory_max_bytes = {BUDGET}"), "", "");
    let imap: SocketAddr = format!("127.0.0.1:{}", site.port("imap")).parse().unwrap();
    let before = inbox_messages(imap);
    let literal = 24 * 1024 * 1024;
    let chunk = vec![b'z'; 64 * 1024];
    // A holds 20 MiB of its APPEND in the server's memory.
    let mut holder = Imap::connect(imap);
    holder.login();
    holder.writer.write_all(format!("p APPEND INBOX {{{literal}}}\r\n").as_bytes()).unwrap();
    assert!(holder.line().starts_with('+'));
    let mut sent = 0;
    while sent < 20 * 1024 * 1024 {
        holder.writer.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    std::thread::sleep(Duration::from_millis(500));
    // B's APPEND does not fit what is left: B is told why and disconnected.
    let mut over = Imap::connect(imap);
    over.login();
    over.writer.write_all(format!("q APPEND INBOX {{{literal}}}\r\n").as_bytes()).unwrap();
    assert!(over.line().starts_with('+'));
    let mut over_sent = 0;
    while over_sent < literal && over.writer.write_all(&chunk).is_ok() {
        over_sent += chunk.len();
    }
    let answer = over.line();
    assert!(answer.starts_with("* BYE [UNAVAILABLE]"), "after {over_sent} bytes: {answer:?}");
    // A finishes: its message is stored, B's is not.
    while sent < literal {
        holder.writer.write_all(&chunk[..chunk.len().min(literal - sent)]).unwrap();
        sent += chunk.len().min(literal - sent);
    }
    holder.writer.write_all(b"\r\n").unwrap();
    assert!(holder.until_tagged("p").starts_with("p OK"));
    assert_eq!(inbox_messages(imap), before + 1);
    site.stop();
}
