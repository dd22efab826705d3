//! The audit log: every approval and every drill action, in order, in a file an
//! auditor can check without trusting us.
//!
//! One JSON record per line. Each line is the canonical JSON of its record
//! (object keys in byte order at every level, no white space), and the record
//! carries `hash`, the SHA-256 of the canonical JSON of the record without
//! `hash`, and `prev`, the SHA-256 of the previous line's bytes (64 zeros for
//! the first). `seq` counts from 1 and `at_ms` never goes back. So editing any
//! byte of a line, deleting, inserting or reordering lines is found by
//! [`verify`], which names the first bad line and what is wrong with it. The
//! chain cannot show that lines were cut off the end: keep the `head` that
//! [`verify`] reports (or the last record's hash) somewhere else, e.g. in the
//! drill report's ticket, to detect that.
//!
//! Writers take an exclusive `flock` on the file, read the last record, append
//! one line with a single `O_APPEND` write and fsync before unlocking, so two
//! processes appending at once both land, in some order, on one chain. This
//! module only ever appends: it never rewrites, truncates or repairs the file.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The conventional file name inside the drill data directory.
pub const FILE_NAME: &str = "audit.jsonl";
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line a record may serialise to (the detail is bounded by this).
pub const LINE_BYTES_MAX: usize = 64 * 1024;
/// Longest actor, action and drill id.
pub const NAME_BYTES_MAX: usize = 256;
/// How long a writer or reader waits for another process's lock before giving up.
pub const LOCK_WAIT_MS_MAX: u64 = 10_000;

/// Actions the drill platform writes (the log accepts any lowercase word).
pub mod action {
    pub const APPROVAL: &str = "approval";
    pub const DRILL_STARTED: &str = "drill_started";
    pub const FAULT: &str = "fault";
    pub const RESTORE: &str = "restore";
    pub const MANUAL_CONFIRMED: &str = "manual_confirmed";
    /// A tabletop step acknowledged; its actor is the participant.
    pub const TABLETOP_ACKNOWLEDGED: &str = "tabletop_acknowledged";
    pub const ROLLBACK: &str = "rollback";
    pub const DRILL_FINISHED: &str = "drill_finished";
    pub const REPORT_ARCHIVED: &str = "report_archived";
}

/// The actor for actions the engine takes by itself.
pub const ENGINE_ACTOR: &str = "drill-engine";

/// What a caller wants recorded; the log adds `seq`, `at_ms`, `prev` and `hash`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// Who: an approver's name, [`ENGINE_ACTOR`], or the OS user ([`os_user`]).
    pub actor: String,
    /// What: a lowercase word such as those in [`action`].
    pub action: String,
    pub drill_id: Option<String>,
    pub plan_sha256: Option<String>,
    /// Anything else worth keeping, as JSON.
    pub detail: Value,
}

impl AuditEvent {
    pub fn new(actor: impl Into<String>, action: impl Into<String>) -> AuditEvent {
        AuditEvent {
            actor: actor.into(),
            action: action.into(),
            drill_id: None,
            plan_sha256: None,
            detail: Value::Null,
        }
    }

    pub fn drill(mut self, drill_id: impl Into<String>) -> AuditEvent {
        self.drill_id = Some(drill_id.into());
        self
    }

    pub fn plan(mut self, plan_sha256: impl Into<String>) -> AuditEvent {
        self.plan_sha256 = Some(plan_sha256.into());
        self
    }

    pub fn detail(mut self, detail: Value) -> AuditEvent {
        self.detail = detail;
        self
    }
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1 for the first record, one more for each next.
    pub seq: u64,
    /// When it was appended (epoch ms); never less than the previous record's.
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub drill_id: Option<String>,
    pub plan_sha256: Option<String>,
    pub detail: Value,
    /// SHA-256 (hex) of the previous line's bytes, or [`GENESIS`].
    pub prev: String,
    /// SHA-256 (hex) of this record's canonical JSON without `hash`.
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record should carry.
    pub fn compute_hash(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a record is plain data");
        if let Value::Object(map) = &mut value {
            map.remove("hash");
        }
        hex::encode(Sha256::digest(canonical(&value).as_bytes()))
    }

    /// The record's line, without the newline.
    fn line(&self) -> String {
        canonical(&serde_json::to_value(self).expect("a record is plain data"))
    }
}

/// What a verified log holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    pub records: u64,
    pub first_at_ms: Option<u64>,
    pub last_at_ms: Option<u64>,
    /// SHA-256 of the last line ([`GENESIS`] when empty): note it elsewhere to
    /// detect later truncation.
    pub head: String,
}

/// What is wrong with a line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("not an audit record: {0}")]
    Garbage(String),
    #[error("the last line is cut short (no newline at its end)")]
    Truncated,
    #[error("longer than {LINE_BYTES_MAX} bytes")]
    TooLong,
    #[error("not in canonical form: the line was edited")]
    NotCanonical,
    #[error("hash mismatch: the record's content was edited (hash says {stored}, content hashes to {computed})")]
    HashMismatch { stored: String, computed: String },
    #[error("broken link: prev is {found} but the previous line hashes to {expected} (a line was removed, inserted or reordered)")]
    BrokenLink { expected: String, found: String },
    #[error("sequence number {found} where {expected} was due (a line was removed, inserted or reordered)")]
    BadSeq { expected: u64, found: u64 },
    #[error("time goes back: at_ms {found} after {previous}")]
    TimeGoesBack { previous: u64, found: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("audit log {path}: line {line}: {problem}")]
    Broken { path: PathBuf, line: u64, problem: LineProblem },
    #[error("audit log {path}: the last record is damaged ({problem}); nothing was appended. Run `maildr audit verify --file {path}`")]
    DamagedTail { path: PathBuf, problem: LineProblem },
    #[error("audit log {path}: another process has held the lock for {LOCK_WAIT_MS_MAX} ms; nothing was appended")]
    Busy { path: PathBuf },
    #[error("audit record refused: {0}")]
    Invalid(String),
}

/// An append-only audit log file.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// Open (creating the file and its parent directories) the log at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<AuditLog, AuditError> {
        let path = path.into();
        let io_err = |source| AuditError::Io { path: path.clone(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io_err)?;
        }
        let existed = path.exists();
        OpenOptions::new().append(true).create(true).open(&path).map_err(io_err)?;
        if !existed {
            sync_parent(&path).map_err(io_err)?;
        }
        Ok(AuditLog { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record at the end of the chain and fsync it.
    pub fn append(&self, event: AuditEvent) -> Result<AuditRecord, AuditError> {
        check_event(&event)?;
        let io_err = |source| AuditError::Io { path: self.path.clone(), source };
        let file = OpenOptions::new().read(true).append(true).create(true).open(&self.path).map_err(io_err)?;
        let _lock = lock_log(&file, libc::LOCK_EX, &self.path)?;
        let last = last_line(&file).map_err(io_err)?;
        let (seq, at_ms, prev) = match last {
            Tail::Empty => (1, now_ms(), GENESIS.to_string()),
            Tail::Line(line) => {
                let record = check_line(&line)
                    .map_err(|problem| AuditError::DamagedTail { path: self.path.clone(), problem })?;
                let seq = record.seq.checked_add(1).ok_or_else(|| AuditError::DamagedTail {
                    path: self.path.clone(),
                    problem: LineProblem::BadSeq { expected: record.seq, found: u64::MAX },
                })?;
                (seq, now_ms().max(record.at_ms), sha256_hex(&line))
            }
            Tail::Damaged(problem) => return Err(AuditError::DamagedTail { path: self.path.clone(), problem }),
        };
        let mut record = AuditRecord {
            seq,
            at_ms,
            actor: event.actor,
            action: event.action,
            drill_id: event.drill_id,
            plan_sha256: event.plan_sha256,
            detail: event.detail,
            prev,
            hash: String::new(),
        };
        record.hash = record.compute_hash();
        let mut line = record.line();
        if line.len() > LINE_BYTES_MAX {
            return Err(AuditError::Invalid(format!("the record is {} bytes, more than {LINE_BYTES_MAX}", line.len())));
        }
        // What verify will read back must be what was hashed (a float the JSON
        // parser reads back differently would make an honest line look edited).
        if check_line(line.as_bytes()).as_ref() != Ok(&record) {
            return Err(AuditError::Invalid("the detail does not survive a JSON round trip".into()));
        }
        line.push('\n');
        (&file).write_all(line.as_bytes()).map_err(io_err)?;
        file.sync_data().map_err(io_err)?;
        Ok(record)
    }
}

fn check_event(e: &AuditEvent) -> Result<(), AuditError> {
    let bad = |what: &str, why: &str| Err(AuditError::Invalid(format!("{what} {why}")));
    for (what, value) in [("actor", Some(&e.actor)), ("drill id", e.drill_id.as_ref())] {
        let Some(value) = value else { continue };
        if value.trim().is_empty() {
            return bad(what, "is empty");
        }
        if value.len() > NAME_BYTES_MAX {
            return bad(what, &format!("is longer than {NAME_BYTES_MAX} bytes"));
        }
        if value.chars().any(char::is_control) {
            return bad(what, "holds a control character");
        }
    }
    if e.action.is_empty()
        || e.action.len() > NAME_BYTES_MAX
        || !e.action.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return bad("action", &format!("{:?} is not a lowercase word (a-z, 0-9, _)", e.action));
    }
    if let Some(sha) = &e.plan_sha256 {
        if !is_sha256_hex(sha) {
            return bad("plan_sha256", &format!("{sha:?} is not 64 lowercase hex digits"));
        }
    }
    Ok(())
}

pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Check every line of the log at `path`: its form, its hash, its sequence
/// number, its time and its link to the line before. Stops at the first bad
/// line and names it (1-based).
pub fn verify(path: &Path) -> Result<AuditSummary, AuditError> {
    let io_err = |source| AuditError::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io_err)?;
    let _lock = lock_log(&file, libc::LOCK_SH, path)?;
    let mut reader = BufReader::new(&file);
    let mut summary = AuditSummary { records: 0, first_at_ms: None, last_at_ms: None, head: GENESIS.to_string() };
    let mut buf = Vec::new();
    loop {
        let line_no = summary.records + 1;
        let broken = |problem| AuditError::Broken { path: path.to_path_buf(), line: line_no, problem };
        buf.clear();
        let n = (&mut reader).take(LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut buf).map_err(io_err)?;
        if n == 0 {
            return Ok(summary);
        }
        let Some(line) = buf.strip_suffix(b"\n") else {
            return Err(broken(if buf.len() > LINE_BYTES_MAX { LineProblem::TooLong } else { LineProblem::Truncated }));
        };
        let record = check_line(line).map_err(broken)?;
        if record.seq != line_no {
            return Err(broken(LineProblem::BadSeq { expected: line_no, found: record.seq }));
        }
        if record.prev != summary.head {
            return Err(broken(LineProblem::BrokenLink { expected: summary.head.clone(), found: record.prev }));
        }
        if let Some(previous) = summary.last_at_ms.filter(|&p| record.at_ms < p) {
            return Err(broken(LineProblem::TimeGoesBack { previous, found: record.at_ms }));
        }
        summary.records = line_no;
        summary.first_at_ms.get_or_insert(record.at_ms);
        summary.last_at_ms = Some(record.at_ms);
        summary.head = sha256_hex(line);
    }
}

/// Parse one line (without its newline) and check it stands on its own: it is
/// a record, in canonical form, and its hash matches its content.
fn check_line(line: &[u8]) -> Result<AuditRecord, LineProblem> {
    let record: AuditRecord = serde_json::from_slice(line).map_err(|e| LineProblem::Garbage(e.to_string()))?;
    if record.line().as_bytes() != line {
        return Err(LineProblem::NotCanonical);
    }
    let computed = record.compute_hash();
    if computed != record.hash {
        return Err(LineProblem::HashMismatch { stored: record.hash, computed });
    }
    Ok(record)
}

enum Tail {
    Empty,
    Line(Vec<u8>),
    Damaged(LineProblem),
}

/// The last line of the file (without its newline), read from the end.
fn last_line(file: &File) -> io::Result<Tail> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(Tail::Empty);
    }
    let window = len.min(LINE_BYTES_MAX as u64 + 1);
    // Bounded by LINE_BYTES_MAX + 1 just above, which is a usize.
    #[allow(clippy::cast_possible_truncation)]
    let mut buf = vec![0u8; window as usize];
    file.read_exact_at(&mut buf, len - window)?;
    let Some(body) = buf.strip_suffix(b"\n") else {
        return Ok(Tail::Damaged(LineProblem::Truncated));
    };
    match body.iter().rposition(|&b| b == b'\n') {
        Some(i) => Ok(Tail::Line(body[i + 1..].to_vec())),
        None if window == len => Ok(Tail::Line(body.to_vec())),
        None => Ok(Tail::Damaged(LineProblem::TooLong)),
    }
}

/// Canonical JSON: object keys sorted by their bytes at every level, no white
/// space, strings and numbers as serde_json writes them.
pub fn canonical(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The user running this process, for records of what an operator did:
/// `$USER`, else `$LOGNAME`, else `uid N`.
pub fn os_user() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|v| v.trim().to_string())
        .find(|v| !v.is_empty() && v.len() <= NAME_BYTES_MAX && !v.chars().any(char::is_control))
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }))
}

/// fsync the directory holding `path`, so a new entry in it survives a crash.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => File::open(dir)?.sync_all(),
        None => File::open(".")?.sync_all(),
    }
}

/// An advisory `flock` held until dropped (closing the file would release it
/// too; the explicit unlock keeps the order obvious).
pub(crate) struct Lock<'a> {
    file: &'a File,
}

impl<'a> Lock<'a> {
    /// Take `LOCK_EX` or `LOCK_SH` on `file`, waiting at most
    /// [`LOCK_WAIT_MS_MAX`] (then `ErrorKind::TimedOut`).
    pub(crate) fn take(file: &'a File, mode: libc::c_int) -> io::Result<Lock<'a>> {
        let deadline = Instant::now() + Duration::from_millis(LOCK_WAIT_MS_MAX);
        loop {
            // SAFETY: the descriptor is open for as long as `file` is borrowed.
            let rc = unsafe { libc::flock(file.as_raw_fd(), mode | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Lock { file });
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EWOULDBLOCK) | Some(libc::EINTR) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Some(libc::EWOULDBLOCK) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("another process has held the lock for {LOCK_WAIT_MS_MAX} ms"),
                    ))
                }
                _ => return Err(err),
            }
        }
    }
}

/// [`Lock::take`] for the audit log's own errors.
fn lock_log<'a>(file: &'a File, mode: libc::c_int, path: &Path) -> Result<Lock<'a>, AuditError> {
    Lock::take(file, mode).map_err(|source| match source.kind() {
        io::ErrorKind::TimedOut => AuditError::Busy { path: path.to_path_buf() },
        _ => AuditError::Io { path: path.to_path_buf(), source },
    })
}

impl Drop for Lock<'_> {
    fn drop(&mut self) {
        // SAFETY: as in `take`; an unlock failure leaves the lock to the close.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_spaces() {
        let v: Value = serde_json::from_str(r#"{"b": 1, "a": {"z": [1, {"y": 2, "x": "é\n"}], "c": null}}"#).unwrap();
        assert_eq!(canonical(&v), r#"{"a":{"c":null,"z":[1,{"x":"é\n","y":2}]},"b":1}"#);
    }

    #[test]
    fn events_that_would_make_a_poor_record_are_refused() {
        let refused = [
            AuditEvent::new("", "approval"),
            AuditEvent::new("  ", "approval"),
            AuditEvent::new("a\u{7}b", "approval"),
            AuditEvent::new("x".repeat(NAME_BYTES_MAX + 1), "approval"),
            AuditEvent::new("alice", "Approval"),
            AuditEvent::new("alice", ""),
            AuditEvent::new("alice", "approval").plan("ABC"),
            AuditEvent::new("alice", "approval").drill(""),
        ];
        for e in refused {
            assert!(check_event(&e).is_err(), "{e:?}");
        }
        assert!(check_event(&AuditEvent::new("Li Wei", "approval").plan("0".repeat(64)).drill("d1")).is_ok());
    }
}
