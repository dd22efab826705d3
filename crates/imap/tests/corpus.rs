//! Nasty IMAP input, as data files run by one test. Each file in `corpus/` is a
//! transcript: `C:` lines are sent (with CRLF; `\xNN`, `\r`, `\n` escapes, and
//! `{repeat N}text{/repeat}` expands), `S:` lines are prefixes the next server line
//! must start with. Every case runs logged in as alice with INBOX selected, and
//! afterwards the server must still answer and the store must be unchanged.
//! The same one-site harness also runs the session tests that need a real
//! socket: limits, and what a client is told when a body is not on this site.
//! `compliance/` holds the RFC transcripts: see
//! [`compliance_transcripts_get_the_answers_the_rfc_asks_for`] for their format.

// A harness whose setup fails is a failed test: its helpers unwrap like the tests
// (clippy's allow-unwrap-in-tests covers only the `#[test]` functions).
#![allow(clippy::unwrap_used)]

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
    start_with(tune, true)
}

/// A one-site server for alice; her INBOX holds one message when `one_message`,
/// else nothing.
fn start_with(tune: impl FnOnce(&mut ImapSection), one_message: bool) -> Site {
    start_prepared(tune, one_message, |_| {})
}

/// As [`start_with`], with `prepare` run on the store (alice exists) before the
/// site serves.
fn start_prepared(tune: impl FnOnce(&mut ImapSection), one_message: bool, prepare: impl FnOnce(&Store)) -> Site {
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
    if one_message {
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
    }
    prepare(&store);
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
// Random numbers cut to the size needed: truncation is the point.
#[allow(clippy::cast_possible_truncation)]
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

/// Client-visible behaviour RFC 3501 (and RFC 9051 where it clarifies) asks
/// for, as transcripts in `compliance/`, one file per behaviour, each run on a
/// fresh site whose INBOX starts empty. The expectations are written from the
/// RFC text. Lines of a transcript:
///
/// - `# ...` is a comment; blank lines are skipped.
/// - `internaldate: YYYY-MM-DD` sets the internal date of later deliveries
///   (noon UTC; 2000-01-01 until set).
/// - `deliver: <message>` delivers a message (escapes as in `corpus/`) to alice's
///   INBOX through the write path, as SMTP would.
/// - `stored-mailbox: <name>` creates a mailbox of alice's with exactly this
///   stored name through the write path (as the server stored a client's raw
///   name before names were converted from modified UTF-7).
/// - `mailboxes: <name> | <name> ...` alice's stored mailbox names are exactly
///   these (UTF-8, as the store keeps them; any order).
/// - `C<n>: <command>` sends a command as session `n` (`C:` is session 1; a
///   session connects and logs in as alice when first used) and reads its answer
///   up to the tagged line. `{literal}text{/literal}` becomes a LITERAL+ literal
///   holding `text` (escapes expanded).
/// - `S<n>: <pattern>` a line of session `n`'s last answer matches the pattern,
///   later in the answer than the line the previous `S<n>:` matched: order is
///   checked, and lines not named may come between.
/// - `N<n>: <pattern>` no line of session `n`'s last answer matches.
///
/// A pattern matches a line it is a prefix of; `{..}` in a pattern stands for
/// any text, and a pattern ending in `{end}` must match the whole line. Parenthesised lists of atoms (flag lists) compare in any order, as
/// RFC 3501 gives them no order.
#[test]
fn compliance_transcripts_get_the_answers_the_rfc_asks_for() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/compliance");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(!files.is_empty(), "no compliance transcripts");
    let only = std::env::var("MAILDR_TRANSCRIPT").ok();
    let mut failures = Vec::new();
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if only.as_ref().is_some_and(|o| !name.contains(o.as_str())) {
            continue;
        }
        if let Err(e) = run_transcript(&std::fs::read_to_string(&file).unwrap()) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{} transcript(s) failed:\n\n{}", failures.len(), failures.join("\n\n"));
}

/// One session of a transcript: its connection, its last answer, and how far
/// into that answer the `S` lines have matched.
struct TranscriptSession {
    client: Client,
    answer: Vec<String>,
    matched: usize,
}

fn run_transcript(text: &str) -> Result<(), String> {
    let site = start_with(|_| {}, false);
    let mut sessions: std::collections::BTreeMap<String, TranscriptSession> = Default::default();
    let mut internal_date = UnixSeconds(946_728_000);
    let mut expectations = 0;
    for (number, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {line}\n{e}", number + 1);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(date) = line.strip_prefix("internaldate: ") {
            let day = chrono::NaiveDate::parse_from_str(date.trim(), "%Y-%m-%d").map_err(|e| at(e.to_string()))?;
            internal_date = UnixSeconds(day.and_hms_opt(12, 0, 0).unwrap().and_utc().timestamp());
            continue;
        }
        if let Some(message) = line.strip_prefix("deliver: ") {
            deliver(&site, unescape(message), internal_date).map_err(at)?;
            continue;
        }
        if let Some(name) = line.strip_prefix("stored-mailbox: ") {
            create_stored(&site, name).map_err(at)?;
            continue;
        }
        if let Some(names) = line.strip_prefix("mailboxes: ") {
            expectations += 1;
            let mut want: Vec<&str> = names.split(" | ").map(str::trim).collect();
            want.sort_unstable();
            let mut have: Vec<String> =
                state(&site).iter().map(|s| s.rsplitn(4, ' ').last().unwrap().to_string()).collect();
            have.sort_unstable();
            if want != have {
                return Err(at(format!("stored mailboxes are {have:?}")));
            }
            continue;
        }
        let (head, rest) = line.split_once(": ").ok_or_else(|| at("not a transcript line".into()))?;
        let (kind, id) = head.split_at(1);
        let id = if id.is_empty() { "1".to_string() } else { id.to_string() };
        match kind {
            "C" => {
                let session = match sessions.entry(id) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let mut client = Client::connect(&site);
                        let login = client.cmd("login", "LOGIN alice@example.test pw");
                        if !login.last().is_some_and(|l| l.starts_with("login OK")) {
                            return Err(at(format!("login failed: {login:?}")));
                        }
                        v.insert(TranscriptSession { client, answer: Vec::new(), matched: 0 })
                    }
                };
                let tag = rest.split(' ').next().unwrap_or_default().to_string();
                let rest = rest.replace("{uidvalidity}", &inbox_uid_validity(&site).to_string());
                let mut bytes = expand_literals(&rest);
                bytes.extend_from_slice(b"\r\n");
                session.client.send(&bytes);
                session.answer = session.client.answer(&tag);
                session.matched = 0;
            }
            "S" | "N" => {
                expectations += 1;
                let session = sessions.get_mut(&id).ok_or_else(|| at(format!("session {id} sent nothing")))?;
                let shown = || format!("answer was:\n  {}", session.answer.join("\n  ").trim_end());
                if kind == "S" {
                    let found = session.answer[session.matched..].iter().position(|l| pattern_matches(rest, l));
                    match found {
                        Some(i) => session.matched += i + 1,
                        None => return Err(at(format!("no such line (in this order); {}", shown()))),
                    }
                } else if session.answer.iter().any(|l| pattern_matches(rest, l)) {
                    return Err(at(format!("line must not be there; {}", shown())));
                }
            }
            _ => return Err(at("not a transcript line".into())),
        }
    }
    if expectations == 0 {
        return Err("a transcript must expect something".into());
    }
    Ok(())
}

impl Client {
    /// The lines of the answer to the command tagged `tag`, up to the tagged line.
    fn answer(&mut self, tag: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l.is_empty() {
                return lines;
            }
            let done = l.starts_with(&format!("{tag} "));
            lines.push(l.trim_end_matches(['\r', '\n']).to_string());
            if done {
                return lines;
            }
        }
    }
}

/// The UIDVALIDITY of alice's INBOX.
fn inbox_uid_validity(site: &Site) -> u32 {
    let store = site.cluster.store();
    let alice = store.account(&EmailAddress::parse("alice@example.test").unwrap()).unwrap().unwrap();
    let inbox = store.mailbox_by_name(alice.id, &maildr_types::MailboxName::inbox()).unwrap().unwrap();
    inbox.uid_validity.0
}

/// Deliver a message to alice's INBOX through the site's write path.
fn deliver(site: &Site, message: Vec<u8>, internal_date: UnixSeconds) -> Result<(), String> {
    let rt = site.rt.as_ref().expect("the site runs");
    rt.block_on(async {
        let body = site.cluster.put_body(message).await.map_err(|e| e.to_string())?;
        let recipients = vec![EmailAddress::parse("alice@example.test").unwrap()];
        let deliver = Command::Deliver { recipients, body, internal_date, flags: Default::default(), retry_key: None };
        site.cluster.write(deliver).await.map(|_| ()).map_err(|e| e.to_string())
    })
}

/// Create a mailbox of alice's with exactly this stored name, through the write path.
fn create_stored(site: &Site, name: &str) -> Result<(), String> {
    let rt = site.rt.as_ref().expect("the site runs");
    let name = maildr_types::MailboxName::parse(name).map_err(|e| e.to_string())?;
    let account = EmailAddress::parse("alice@example.test").unwrap();
    let uid_validity = maildr_types::UidValidity(7);
    let create = Command::CreateMailbox { account, name, uid_validity };
    rt.block_on(site.cluster.write(create)).map(|_| ()).map_err(|e| e.to_string())
}

/// A command line with every `{literal}text{/literal}` made a LITERAL+ literal.
fn expand_literals(line: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{literal}") {
        let end = rest[start..].find("{/literal}").map(|e| e + start).expect("{literal} without {/literal}");
        out.extend(unescape(&rest[..start]));
        let data = unescape(&rest[start + 9..end]);
        out.extend(format!("{{{}+}}\r\n", data.len()).into_bytes());
        out.extend(data);
        rest = &rest[end + 10..];
    }
    out.extend(unescape(rest));
    out
}

/// Does `pattern` match `line`: a prefix of it (all of it with `{end}`), `{..}`
/// standing for any text, lists of atoms in any order?
fn pattern_matches(pattern: &str, line: &str) -> bool {
    let (whole, pattern) = match pattern.strip_suffix("{end}") {
        Some(p) => (true, p),
        None => (false, pattern),
    };
    let (pattern, line) = (sort_atom_lists(pattern), sort_atom_lists(line));
    let mut pieces = pattern.split("{..}").peekable();
    let first = pieces.next().unwrap_or_default();
    let Some(mut rest) = line.strip_prefix(first) else { return false };
    while let Some(piece) = pieces.next() {
        // The last piece of a whole-line pattern must end the line.
        let found = if whole && pieces.peek().is_none() { rest.rfind(piece) } else { rest.find(piece) };
        match found {
            Some(i) => rest = &rest[i + piece.len()..],
            None => return false,
        }
    }
    !whole || rest.is_empty()
}

/// The line with the atoms of every innermost parenthesised list (one holding
/// no quoted string nor list) sorted.
fn sort_atom_lists(line: &str) -> String {
    let mut out = String::new();
    // Where each open list starts in `out`, and whether it holds only atoms.
    let mut open: Vec<(usize, bool)> = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    for ch in line.chars() {
        if quoted {
            quoted = ch != '"' || escaped;
            escaped = ch == '\\' && !escaped;
            out.push(ch);
            continue;
        }
        match ch {
            '"' | '(' => {
                if let Some(top) = open.last_mut() {
                    top.1 = false;
                }
                if ch == '"' {
                    quoted = true;
                    escaped = false;
                } else {
                    open.push((out.len(), true));
                }
            }
            ')' => {
                if let Some((start, true)) = open.pop() {
                    let inner = out[start + 1..].to_string();
                    let mut atoms: Vec<&str> = inner.split(' ').filter(|a| !a.is_empty()).collect();
                    atoms.sort_unstable();
                    out.truncate(start + 1);
                    out.push_str(&atoms.join(" "));
                }
            }
            _ => {}
        }
        out.push(ch);
    }
    out
}

/// Append `n` messages to alice's INBOX in one transaction.
fn append_many(store: &Store, n: u32) {
    let body = store.blobs().put(b"Subject: many\r\n\r\nbody\r\n").unwrap();
    let commands: Vec<Command> = (0..n)
        .map(|_| Command::Append {
            account: EmailAddress::parse("alice@example.test").unwrap(),
            mailbox: maildr_types::MailboxName::inbox(),
            body,
            flags: Default::default(),
            keywords: vec![],
            internal_date: UnixSeconds(1),
        })
        .collect();
    for outcome in store.apply_batch(&commands).unwrap() {
        outcome.unwrap();
    }
}

/// Mark alice's INBOX messages `uids` \Deleted and expunge them.
fn expunge_uids(store: &Store, uids: std::ops::RangeInclusive<u32>) {
    let alice = store.account(&EmailAddress::parse("alice@example.test").unwrap()).unwrap().unwrap();
    let inbox = store.mailbox_by_name(alice.id, &maildr_types::MailboxName::inbox()).unwrap().unwrap();
    let uids: Vec<maildr_types::Uid> = uids.map(maildr_types::Uid).collect();
    let mark = Command::StoreFlags {
        mailbox: inbox.id,
        uids: uids.clone(),
        op: maildr_store::FlagOp::Add,
        flags: maildr_types::SystemFlags(maildr_types::SystemFlags::DELETED),
        keywords: vec![],
        unchanged_since: None,
    };
    store.apply(mark).unwrap().unwrap();
    store.apply(Command::Expunge { mailbox: inbox.id, uids: Some(uids) }).unwrap().unwrap();
}

/// RFC 7162 §3.2.5 and §3.2.10 let a server that no longer knows which UIDs
/// vanished since the client's MODSEQ name every UID the client may hold that is
/// gone (VANISHED (EARLIER) may name UIDs the client never saw); the client's
/// sequence-match data shortens that. Alice's INBOX: 20,010 messages; UIDs
/// 5000:5099 expunged before the client's MODSEQ, 10001:20005 after it, which
/// pushes the store's record past `EXPUNGED_KEPT_PER_MAILBOX_MAX` so its oldest
/// rows are gone. The client is still told every UID it must forget, and
/// `SEQ_MATCH_PAIRS_CHECKED_MAX` pairs of its data are used, no more.
#[test]
fn qresync_past_the_expunge_record_names_every_uid_that_may_have_vanished() {
    let client_modseq = std::cell::Cell::new(0);
    let site = start_prepared(
        |_| {},
        false,
        |store| {
            append_many(store, 20_010);
            expunge_uids(store, 5000..=5099);
            let alice = store.account(&EmailAddress::parse("alice@example.test").unwrap()).unwrap().unwrap();
            let inbox = store.mailbox_by_name(alice.id, &maildr_types::MailboxName::inbox()).unwrap().unwrap();
            client_modseq.set(inbox.highest_modseq.0);
            expunge_uids(store, 10_001..=20_005);
            let (log, _) = store.expunge_log(inbox.id).unwrap().unwrap();
            assert_eq!(log.kept, maildr_store::EXPUNGED_KEPT_PER_MAILBOX_MAX);
            assert!(store.expunged_since(inbox.id, inbox.highest_modseq).unwrap().is_none(), "record pruned");
        },
    );
    let since = client_modseq.get();
    let uv = inbox_uid_validity(&site);
    let mut c = Client::connect(&site);
    assert!(c.cmd("l", "LOGIN alice@example.test pw").last().unwrap().starts_with("l OK"));
    assert!(c.cmd("e", "ENABLE QRESYNC").last().unwrap().starts_with("e OK"));
    let vanished = |lines: &[String]| -> Vec<String> {
        lines.iter().filter(|l| l.starts_with("* VANISHED")).map(|l| l.trim_end().to_string()).collect()
    };
    // No sequence-match data: every UID below UIDNEXT the mailbox lacks.
    let answer = c.cmd("a", &format!("EXAMINE INBOX (QRESYNC ({uv} {since}))"));
    assert!(answer.last().unwrap().starts_with("a OK [READ-ONLY]"), "{:?}", answer.last());
    assert_eq!(vanished(&answer), ["* VANISHED (EARLIER) 5000:5099,10001:20005"]);
    assert!(!answer.iter().any(|l| l.contains(" FETCH ")), "no message changed since {since}");
    // known-uids narrow the answer to what the client holds.
    let answer = c.cmd("b", &format!("EXAMINE INBOX (QRESYNC ({uv} {since} 1:4999,5100:20010))"));
    assert_eq!(vanished(&answer), ["* VANISHED (EARLIER) 10001:20005"]);
    // Sequence-match data: message 9900 is still UID 10000, so nothing at or
    // below UID 10000 vanished since the client's mapping. 1,024 pairs are used...
    let at_limit = format!("EXAMINE INBOX (QRESYNC ({uv} {since} 1:20010 (1:1023,9900 1:1023,10000)))");
    let answer = c.cmd("c", &at_limit);
    assert!(answer.last().unwrap().starts_with("c OK"), "{:?}", answer.last());
    assert_eq!(vanished(&answer), ["* VANISHED (EARLIER) 10001:20005"]);
    assert_eq!(maildr_imap::SEQ_MATCH_PAIRS_CHECKED_MAX, 1024);
    // ... and the 1,025th is not: the answer is longer, still right.
    let over = format!("EXAMINE INBOX (QRESYNC ({uv} {since} 1:20010 (1:1024,9900 1:1024,10000)))");
    let answer = c.cmd("d", &over);
    assert!(answer.last().unwrap().starts_with("d OK"), "{:?}", answer.last());
    assert_eq!(vanished(&answer), ["* VANISHED (EARLIER) 5000:5099,10001:20005"]);
    // UID FETCH (CHANGEDSINCE … VANISHED) answers the same way.
    let answer = c.cmd("f", &format!("UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)"));
    assert!(answer.last().unwrap().starts_with("f OK"), "{:?}", answer.last());
    assert_eq!(vanished(&answer), ["* VANISHED (EARLIER) 5000:5099,10001:20005"]);
}

/// A VANISHED answer longer than `VANISHED_RANGES_PER_RESPONSE_MAX` ranges is
/// split into several responses, each at most that long, together naming all.
#[test]
fn a_long_vanished_answer_is_split_at_the_limit() {
    let max = u32::try_from(maildr_imap::VANISHED_RANGES_PER_RESPONSE_MAX).unwrap();
    let since = std::cell::Cell::new(0);
    // Every other UID of 2 * (max + 1) messages expunged: max + 1 ranges.
    let site = start_prepared(
        |_| {},
        false,
        |store| {
            append_many(store, 2 * (max + 1));
            let alice = store.account(&EmailAddress::parse("alice@example.test").unwrap()).unwrap().unwrap();
            let inbox = store.mailbox_by_name(alice.id, &maildr_types::MailboxName::inbox()).unwrap().unwrap();
            since.set(inbox.highest_modseq.0);
            let odd: Vec<maildr_types::Uid> = (1..=2 * (max + 1)).step_by(2).map(maildr_types::Uid).collect();
            let mut commands = vec![Command::StoreFlags {
                mailbox: inbox.id,
                uids: odd.clone(),
                op: maildr_store::FlagOp::Add,
                flags: maildr_types::SystemFlags(maildr_types::SystemFlags::DELETED),
                keywords: vec![],
                unchanged_since: None,
            }];
            // One expunge each: one range each in the record.
            commands.extend(odd.iter().map(|uid| Command::Expunge { mailbox: inbox.id, uids: Some(vec![*uid]) }));
            for outcome in store.apply_batch(&commands).unwrap() {
                outcome.unwrap();
            }
        },
    );
    let uv = inbox_uid_validity(&site);
    let mut c = Client::connect(&site);
    assert!(c.cmd("l", "LOGIN alice@example.test pw").last().unwrap().starts_with("l OK"));
    assert!(c.cmd("e", "ENABLE QRESYNC").last().unwrap().starts_with("e OK"));
    let count_ranges = |line: &str| line.trim_end().rsplit(' ').next().unwrap().split(',').count();
    // At the limit: one response.
    let at_limit = format!("EXAMINE INBOX (QRESYNC ({uv} {} 1:{}))", since.get(), 2 * max);
    let answer = c.cmd("a", &at_limit);
    let lines: Vec<&String> = answer.iter().filter(|l| l.starts_with("* VANISHED (EARLIER)")).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(count_ranges(lines[0]), max as usize);
    // One range over: two responses, max and 1.
    let answer = c.cmd("b", &format!("EXAMINE INBOX (QRESYNC ({uv} {}))", since.get()));
    let lines: Vec<&String> = answer.iter().filter(|l| l.starts_with("* VANISHED (EARLIER)")).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(count_ranges(lines[0]), max as usize);
    assert_eq!(count_ranges(lines[1]), 1);
    assert!(lines[1].trim_end().ends_with(&format!(" {}", 2 * max + 1)), "{lines:?}");
}
