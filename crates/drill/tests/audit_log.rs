//! The audit log through its public API: the chain verifies, every kind of
//! tampering is found on the line where it happened, refused events leave no
//! trace, and concurrent writers (threads and separate processes) share one
//! chain.

use std::fs;
use std::path::{Path, PathBuf};

use maildr_drill::audit::{self, action, AuditError, AuditEvent, AuditLog, LineProblem, GENESIS};
use serde_json::json;
use sha2::{Digest, Sha256};

fn log_with(dir: &Path, records: usize) -> (AuditLog, PathBuf) {
    let path = dir.join("nested/dir/audit.jsonl");
    let log = AuditLog::open(&path).unwrap();
    for i in 0..records {
        log.append(
            AuditEvent::new(
                if i == 0 { "Li Wei" } else { audit::ENGINE_ACTOR },
                if i == 0 { action::APPROVAL } else { action::FAULT },
            )
            .plan("ab".repeat(32))
            .drill("20250301T120000Z-site-outage")
            .detail(json!({ "step": i, "what": "kill site bj", "note": "quotes \" and \\ and é" })),
        )
        .unwrap();
    }
    (log, path)
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = fs::read(path).unwrap();
    bytes.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

fn broken_at(path: &Path) -> (u64, LineProblem) {
    match audit::verify(path) {
        Err(AuditError::Broken { line, problem, .. }) => (line, problem),
        other => panic!("expected a broken line, got {other:?}"),
    }
}

#[test]
fn a_chain_of_records_verifies_and_links_each_line_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = log_with(dir.path(), 5);
    let summary = audit::verify(&path).unwrap();
    assert_eq!(summary.records, 5);
    let lines = lines(&path);
    let last = lines.last().unwrap();
    assert_eq!(summary.head, hex::encode(Sha256::digest(&last[..last.len() - 1])));

    let mut prev = GENESIS.to_string();
    for (i, line) in lines.iter().enumerate() {
        let record: audit::AuditRecord = serde_json::from_slice(line).unwrap();
        assert_eq!(record.seq, i as u64 + 1);
        assert_eq!(record.prev, prev);
        assert_eq!(record.hash, record.compute_hash());
        prev = hex::encode(Sha256::digest(&line[..line.len() - 1]));
    }
    let first: serde_json::Value = serde_json::from_slice(&lines[0]).unwrap();
    assert_eq!(first["actor"], "Li Wei");
    assert_eq!(first["action"], "approval");
    assert_eq!(first["detail"]["note"], "quotes \" and \\ and é");
}

#[test]
fn editing_any_byte_of_a_middle_line_is_found_on_that_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = log_with(dir.path(), 5);
    let original = lines(&path);
    let target = 2; // the third line
    for pos in 0..original[target].len() - 1 {
        let mut edited = original.clone();
        edited[target][pos] ^= 0x01;
        fs::write(&path, edited.concat()).unwrap();
        let (line, problem) = broken_at(&path);
        assert_eq!(line, 3, "byte {pos} edited, reported {problem}");
    }
    fs::write(&path, original.concat()).unwrap();
    assert_eq!(audit::verify(&path).unwrap().records, 5);
}

#[test]
fn a_forger_who_recomputes_the_hash_is_caught_by_the_next_link() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = log_with(dir.path(), 4);
    let mut all = lines(&path);
    let mut record: audit::AuditRecord = serde_json::from_slice(&all[1]).unwrap();
    record.actor = "someone else".into();
    record.hash = record.compute_hash();
    let value = serde_json::to_value(&record).unwrap();
    all[1] = format!("{}\n", audit::canonical(&value)).into_bytes();
    fs::write(&path, all.concat()).unwrap();
    let (line, problem) = broken_at(&path);
    assert_eq!(line, 3);
    assert!(matches!(problem, LineProblem::BrokenLink { .. }), "{problem}");
}

#[test]
fn deleting_or_reordering_lines_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = log_with(dir.path(), 5);
    let original = lines(&path);

    let mut deleted = original.clone();
    deleted.remove(2);
    fs::write(&path, deleted.concat()).unwrap();
    assert_eq!(broken_at(&path), (3, LineProblem::BadSeq { expected: 3, found: 4 }));

    let mut first_gone = original.clone();
    first_gone.remove(0);
    fs::write(&path, first_gone.concat()).unwrap();
    assert_eq!(broken_at(&path), (1, LineProblem::BadSeq { expected: 1, found: 2 }));

    let mut swapped = original.clone();
    swapped.swap(1, 2);
    fs::write(&path, swapped.concat()).unwrap();
    assert_eq!(broken_at(&path).0, 2);

    let mut duplicated = original.clone();
    duplicated.insert(3, original[2].clone());
    fs::write(&path, duplicated.concat()).unwrap();
    assert_eq!(broken_at(&path).0, 4);
}

#[test]
fn a_torn_or_foreign_line_is_named_and_blocks_appending() {
    let dir = tempfile::tempdir().unwrap();
    let (log, path) = log_with(dir.path(), 3);
    let original = fs::read(&path).unwrap();

    // A crash in the middle of the last write.
    fs::write(&path, &original[..original.len() - 10]).unwrap();
    assert_eq!(broken_at(&path), (3, LineProblem::Truncated));
    let err = log.append(AuditEvent::new("x", action::FAULT)).unwrap_err();
    assert!(matches!(err, AuditError::DamagedTail { problem: LineProblem::Truncated, .. }), "{err}");
    assert!(err.to_string().contains("maildr audit verify"), "{err}");
    assert_eq!(fs::read(&path).unwrap().len(), original.len() - 10, "nothing was appended");

    let mut garbage = original.clone();
    garbage.extend_from_slice(b"{\"hello\": 1}\n");
    fs::write(&path, &garbage).unwrap();
    let (line, problem) = broken_at(&path);
    assert_eq!(line, 4);
    assert!(matches!(problem, LineProblem::Garbage(_)), "{problem}");
    assert!(log.append(AuditEvent::new("x", action::FAULT)).is_err());

    let mut long = original.clone();
    long.extend(std::iter::repeat_n(b'x', audit::LINE_BYTES_MAX + 10));
    long.push(b'\n');
    fs::write(&path, &long).unwrap();
    assert_eq!(broken_at(&path), (4, LineProblem::TooLong));
    let err = audit::verify(&path).unwrap_err().to_string();
    assert!(err.contains("audit.jsonl") && err.contains("line 4"), "{err}");
}

#[test]
fn appending_after_verification_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = log_with(dir.path(), 3);
    let before = audit::verify(&path).unwrap();
    let reopened = AuditLog::open(&path).unwrap();
    let record = reopened
        .append(AuditEvent::new(audit::ENGINE_ACTOR, action::REPORT_ARCHIVED).detail(json!({ "json_sha256": "00" })))
        .unwrap();
    assert_eq!(record.seq, 4);
    assert_eq!(record.prev, before.head);
    assert!(record.at_ms >= before.last_at_ms.unwrap());
    let after = audit::verify(&path).unwrap();
    assert_eq!(after.records, 4);
    assert_ne!(after.head, before.head);
}

#[test]
fn an_empty_log_verifies_and_a_missing_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path().join("a/b/audit.jsonl")).unwrap();
    let summary = audit::verify(log.path()).unwrap();
    assert_eq!((summary.records, summary.head.as_str()), (0, GENESIS));
    let err = audit::verify(&dir.path().join("nothing.jsonl")).unwrap_err();
    assert!(matches!(err, AuditError::Io { .. }) && err.to_string().contains("nothing.jsonl"), "{err}");
}

#[test]
fn refused_events_leave_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let (log, path) = log_with(dir.path(), 2);
    let size = fs::metadata(&path).unwrap().len();
    let huge = json!({ "blob": "x".repeat(audit::LINE_BYTES_MAX) });
    for event in [
        AuditEvent::new("", action::APPROVAL),
        AuditEvent::new("alice", "Drop Table"),
        AuditEvent::new("alice", action::APPROVAL).plan("not a digest"),
        AuditEvent::new("alice", action::APPROVAL).detail(huge),
    ] {
        let err = log.append(event).unwrap_err();
        assert!(matches!(err, AuditError::Invalid(_)), "{err}");
    }
    assert_eq!(fs::metadata(&path).unwrap().len(), size);
    assert_eq!(audit::verify(&path).unwrap().records, 2);
}

#[test]
fn writers_in_many_threads_share_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let log = AuditLog::open(&path).unwrap();
                for i in 0..25 {
                    log.append(AuditEvent::new(format!("writer-{t}"), action::FAULT).detail(json!(i))).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(audit::verify(&path).unwrap().records, 100);
}
