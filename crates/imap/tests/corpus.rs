//! Nasty IMAP input, as data files run by one test. Each file in `corpus/` is a
//! transcript: `C:` lines are sent (with CRLF; `\xNN`, `\r`, `\n` escapes, and
//! `{repeat N}text{/repeat}` expands), `S:` lines are prefixes the next server line
//! must start with. Every case runs logged in as alice with INBOX selected, and
//! afterwards the server must still answer and the store must be unchanged.
//! The same one-site harness also runs the session tests that need a real
//! socket: limits, and what a client is told when a body is not on this site.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use maildr_cluster::{Cluster, WritePathLimits};
use maildr_config::ImapSection;
use maildr_imap::{ImapListeners, ImapService};
use maildr_store::{Command, Store};
use maildr_types::{Domain, EmailAddress, UnixSeconds};

struct Site {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    cluster: Cluster,
    stop: tokio::sync::watch::Sender<bool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

fn start(tune: impl FnOnce(&mut ImapSection)) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let alice = EmailAddress::parse("alice@example.test").unwrap();
    let setup = [
        Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(1) },
        Command::add_account(alice, maildr_frontend::hash_password("pw"), 0, UnixSeconds(1)),
    ];
    for command in setup {
        store.apply(command).unwrap().unwrap();
    }
    let blob = store.blobs().put(b"Subject: one\r\n\r\nbody\r\n").unwrap();
    store
        .apply(Command::Deliver {
            recipients: vec![EmailAddress::parse("alice@example.test").unwrap()],
            body: blob,
            internal_date: UnixSeconds(1),
            flags: Default::default(),
            retry_key: None,
        })
        .unwrap()
        .unwrap();
    let mut config = ImapSection {
        plain_listen: "127.0.0.1:0".parse().unwrap(),
        literal_size_max_bytes: 64 * 1024,
        command_line_max_bytes: 8 * 1024,
        auth_failure_delay_ms: 10,
        ..ImapSection::default()
    };
    tune(&mut config);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let cluster = Cluster::single_site(store, WritePathLimits::default());
    let listeners = rt.block_on(ImapListeners::bind(&config, false)).unwrap();
    let addr = listeners.local_addrs()[0].1;
    let service = ImapService::new(cluster.clone(), config, None);
    let (stop, rx) = tokio::sync::watch::channel(false);
    rt.spawn(maildr_imap::serve(service, listeners, rx));
    Site { _dir: dir, addr, cluster, stop, rt: Some(rt) }
}

struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    fn connect(site: &Site) -> Client {
        let s = TcpStream::connect(site.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut c = Client { w: s.try_clone().unwrap(), r: BufReader::new(s) };
        assert!(c.line().starts_with("* OK"));
        c
    }
    fn line(&mut self) -> String {
        let mut buf = Vec::new();
        let _ = self.r.read_until(b'\n', &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
    fn send(&mut self, bytes: &[u8]) {
        let _ = self.w.write_all(bytes);
    }
    /// Send a command and read until its tagged answer.
    fn cmd(&mut self, tag: &str, rest: &str) -> Vec<String> {
        self.send(format!("{tag} {rest}\r\n").as_bytes());
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                return lines;
            }
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l);
            if done {
                return lines;
            }
        }
    }
}

fn unescape(s: &str) -> Vec<u8> {
    let mut s = s.to_string();
    while let Some(start) = s.find("{repeat ") {
        let n_end = s[start..].find('}').unwrap() + start;
        let n: usize = s[start + 8..n_end].parse().unwrap();
        let body_end = s.find("{/repeat}").unwrap();
        let body = s[n_end + 1..body_end].to_string();
        s = format!("{}{}{}", &s[..start], body.repeat(n), &s[body_end + 9..]);
    }
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => {
                    out.push(b'\r');
                    i += 2;
                    continue;
                }
                b'n' => {
                    out.push(b'\n');
                    i += 2;
                    continue;
                }
                b'x' if i + 3 < b.len() => {
                    out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                    i += 4;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Every mailbox of alice: name, count, digest and HIGHESTMODSEQ.
fn state(site: &Site) -> Vec<String> {
    let store = site.cluster.store();
    let alice = store.account(&EmailAddress::parse("alice@example.test").unwrap()).unwrap().unwrap();
    store
        .mailboxes(alice.id)
        .unwrap()
        .iter()
        .map(|m| format!("{} {} {} {}", m.name, m.message_count, m.digest.to_hex(), m.highest_modseq))
        .collect()
}

#[test]
fn nasty_input_gets_protocol_errors_and_changes_nothing() {
    let site = start(|_| {});
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 8, "corpus too small");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let before = state(&site);
        let mut c = Client::connect(&site);
        assert!(c.cmd("l1", "LOGIN alice@example.test pw").last().unwrap().starts_with("l1 OK"), "{name}: login");
        assert!(c.cmd("s1", "SELECT INBOX").last().unwrap().starts_with("s1 OK"), "{name}: select");
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            if let Some(send) = line.strip_prefix("C: ") {
                let mut bytes = unescape(send);
                bytes.extend_from_slice(b"\r\n");
                c.send(&bytes);
            } else if let Some(expect) = line.strip_prefix("S: ") {
                let got = c.line();
                assert!(got.starts_with(expect), "{name}: expected {expect:?}, got {got:?}");
            }
        }
        let after = c.cmd("z9", "NOOP");
        assert!(after.last().unwrap().starts_with("z9 OK"), "{name}: session must go on: {after:?}");
        assert_eq!(state(&site), before, "{name}: store changed");
    }
}

#[test]
fn sessions_beyond_the_per_account_limit_are_refused() {
    let site = start(|c| c.sessions_per_account_max = 2);
    let mut clients: Vec<Client> = (0..3).map(|_| Client::connect(&site)).collect();
    assert!(clients[0].cmd("a", "LOGIN alice@example.test pw").last().unwrap().starts_with("a OK"));
    assert!(clients[1].cmd("a", "LOGIN alice@example.test pw").last().unwrap().starts_with("a OK"));
    let third = clients[2].cmd("a", "LOGIN alice@example.test pw");
    assert!(third.last().unwrap().starts_with("a NO [LIMIT]"), "{third:?}");
    // A session that ends frees its slot.
    clients[0].cmd("b", "LOGOUT");
    std::thread::sleep(Duration::from_millis(200));
    assert!(clients[2].cmd("c", "LOGIN alice@example.test pw").last().unwrap().starts_with("c OK"));
}

/// The wildcard attack on LIST: a backtracking matcher spends hours on it, on a
/// runtime worker. The attacker gets an answer, and another user logs in and
/// lists while the attack runs in a loop; a pattern over the limit gets NO [LIMIT].
#[test]
fn a_pathological_list_pattern_is_answered_and_stops_nobody() {
    let site = start(|_| {});
    let mut attacker = Client::connect(&site);
    assert!(attacker.cmd("a", "LOGIN alice@example.test pw").last().unwrap().starts_with("a OK"));
    let pattern = format!("\"{}q\"", "*".repeat(400));
    let answer = attacker.cmd("b", &format!("LIST \"\" {pattern}"));
    assert!(answer.last().unwrap().starts_with("b OK"), "{answer:?}");
    assert_eq!(answer.len(), 1, "nothing matches: {answer:?}");
    let spread = format!("\"{}q\"", "%*".repeat(300));
    let answer = attacker.cmd("c", &format!("LSUB \"\" {spread}"));
    assert!(answer.last().unwrap().starts_with("c OK"), "{answer:?}");
    let mut other = Client::connect(&site);
    attacker.send(format!("d LIST \"\" {pattern}\r\n").repeat(20).as_bytes());
    assert!(other.cmd("a", "LOGIN alice@example.test pw").last().unwrap().starts_with("a OK"));
    let listed = other.cmd("b", "LIST \"\" \"*\"");
    assert!(listed.iter().any(|l| l.contains("INBOX")) && listed.last().unwrap().starts_with("b OK"), "{listed:?}");
    for _ in 0..20 {
        assert!(attacker.line().starts_with("d OK"));
    }
    let over = format!("\"{}\"", "*".repeat(maildr_imap::LIST_PATTERN_BYTES_MAX + 1));
    let refused = attacker.cmd("e", &format!("LIST \"\" {over}"));
    assert!(refused.last().unwrap().starts_with("e NO [LIMIT]"), "{refused:?}");
    let at_limit = format!("\"{}\"", "*".repeat(maildr_imap::LIST_PATTERN_BYTES_MAX));
    let listed = attacker.cmd("f", &format!("LIST \"\" {at_limit}"));
    assert!(listed.iter().any(|l| l.contains("INBOX")) && listed.last().unwrap().starts_with("f OK"), "{listed:?}");
}

#[test]
fn connections_beyond_the_limit_get_bye() {
    let site = start(|c| c.connections_max = 1);
    let _first = Client::connect(&site);
    let s = TcpStream::connect(site.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.starts_with("* BYE"), "{line}");
}

/// The fuzz entry points run over the corpus and over seeded random mutations of
/// it, so `cargo test` covers what `cargo fuzz` explores. Replay a failure with
/// `MAILDR_FUZZ_SEED`.
#[test]
fn fuzz_entry_points_survive_the_corpus_and_seeded_mutations() {
    let seed: u64 = std::env::var("MAILDR_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    println!("MAILDR_FUZZ_SEED={seed}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        for line in std::fs::read_to_string(e.unwrap().path()).unwrap().lines() {
            if let Some(send) = line.strip_prefix("C: ") {
                let mut b = unescape(send);
                b.extend_from_slice(b"\r\n");
                inputs.push(b);
            }
        }
    }
    inputs.push(b"a APPEND INBOX (\\Seen) {60}\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nhi\r\n--x--\r\n\r\n".to_vec());
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut next = move || rand::Rng::gen::<u64>(&mut rng);
    for round in 0..2000 {
        let mut input = inputs[round % inputs.len()].clone();
        for _ in 0..(next() % 6) {
            if input.is_empty() {
                break;
            }
            let i = (next() as usize) % input.len();
            match next() % 3 {
                0 => input[i] = next() as u8,
                1 => input.insert(i, b"({[\"\\*%"[(next() % 7) as usize]),
                _ => {
                    input.remove(i);
                }
            }
        }
        maildr_imap::fuzzing::command(&input);
        maildr_imap::fuzzing::message_views(&input);
    }
}

/// The rule "a site never answers from a body it lacks" holds for SEARCH as for
/// FETCH: with alice's only message body gone from this site, a search that needs
/// bodies answers `NO [UNAVAILABLE]` (retry later) instead of a `* SEARCH` that
/// silently leaves the message out; keys that need no body still answer.
#[test]
fn search_on_bodies_this_site_lacks_answers_unavailable_instead_of_missing_the_message() {
    let site = start(|_| {});
    let mut c = Client::connect(&site);
    assert!(c.cmd("l1", "LOGIN alice@example.test pw").last().unwrap().starts_with("l1 OK"));
    assert!(c.cmd("s1", "SELECT INBOX").last().unwrap().starts_with("s1 OK"));
    let found = c.cmd("f1", "SEARCH BODY body");
    assert!(found.iter().any(|l| l.starts_with("* SEARCH 1")), "{found:?}");
    let blobs = site.cluster.store().blobs().list(10).unwrap();
    assert_eq!(blobs.len(), 1, "one message body stored");
    assert!(site.cluster.store().blobs().remove(&blobs[0]).unwrap());
    for (tag, search) in [("f2", "SEARCH BODY body"), ("f3", "SEARCH TEXT one"), ("f4", "UID SEARCH SUBJECT one")] {
        let lines = c.cmd(tag, search);
        assert!(lines.last().unwrap().starts_with(&format!("{tag} NO [UNAVAILABLE]")), "{search}: {lines:?}");
        assert!(!lines.iter().any(|l| l.starts_with("* SEARCH")), "{search}: {lines:?}");
    }
    let fetched = c.cmd("f5", "FETCH 1 BODY.PEEK[]");
    assert!(fetched.last().unwrap().starts_with("f5 NO [UNAVAILABLE]"), "{fetched:?}");
    let flags_only = c.cmd("f6", "SEARCH UNSEEN");
    assert!(flags_only.iter().any(|l| l.starts_with("* SEARCH 1")), "{flags_only:?}");
    assert!(flags_only.last().unwrap().starts_with("f6 OK"), "{flags_only:?}");
}
