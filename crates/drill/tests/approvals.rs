//! Approvals through the public API: bound to the plan's exact SHA-256, one per
//! person, always in the audit log first, refusals leave no trace.

use std::fs;
use std::path::Path;

use maildr_drill::approval::{self, ApprovalError};
use maildr_drill::audit::{self, AuditLog};
use maildr_drill::plan::PlanSource;

fn plan_sha(text: &str) -> String {
    PlanSource { origin: "prod-outage.toml".into(), text: text.into() }.sha256()
}

fn setup() -> (tempfile::TempDir, AuditLog) {
    let dir = tempfile::tempdir().unwrap();
    let log = AuditLog::open(dir.path().join("audit.jsonl")).unwrap();
    (dir, log)
}

fn audit_records(log: &AuditLog) -> Vec<audit::AuditRecord> {
    assert!(audit::verify(log.path()).is_ok());
    fs::read_to_string(log.path()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn an_approval_is_stored_and_in_the_audit_log() {
    let (dir, log) = setup();
    let sha = plan_sha("name = \"prod-outage\"\n");
    let approved = approval::approve(dir.path(), "prod-outage", &sha, "  Li Wei ", &log).unwrap();
    assert!(!approved.repeated);
    assert_eq!(approved.approval.by, "Li Wei");
    assert_eq!(approved.approval.plan_sha256, sha);

    let records = audit_records(&log);
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!((r.seq, r.actor.as_str(), r.action.as_str()), (1, "Li Wei", "approval"));
    assert_eq!(r.plan_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(r.detail["plan"], "prod-outage");
    assert_eq!(r.at_ms, approved.approval.at_ms, "the approval time is the audit record's");
    assert_eq!(approved.audit_seq, 1);

    assert_eq!(approval::approvals_for(dir.path(), &sha).unwrap(), vec![approved.approval.clone()]);
    assert_eq!(approval::check(dir.path(), "prod-outage", &sha, 1).unwrap(), vec![approved.approval]);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_changed_plan_needs_new_approval() {
    let (dir, log) = setup();
    let v1 = plan_sha("name = \"prod-outage\"\n");
    let v2 = plan_sha("name = \"prod-outage\"\n# one more line\n");
    approval::approve(dir.path(), "prod-outage", &v1, "alice", &log).unwrap();
    approval::approve(dir.path(), "prod-outage", &v1, "bob", &log).unwrap();
    assert_eq!(approval::check(dir.path(), "prod-outage", &v1, 2).unwrap().len(), 2);

    assert!(approval::approvals_for(dir.path(), &v2).unwrap().is_empty());
    let err = approval::check(dir.path(), "prod-outage", &v2, 2).unwrap_err();
    match &err {
        ApprovalError::Missing { required, approvers, stale, .. } => {
            assert_eq!(*required, 2);
            assert!(approvers.is_empty());
            assert_eq!(stale, &["alice", "bob"]);
        }
        other => panic!("{other}"),
    }
    let message = err.to_string();
    assert!(message.contains("needs 2 approval(s) and has 0; 2 missing"), "{message}");
    assert!(message.contains("alice, bob approved an earlier version"), "{message}");
    assert!(message.contains("maildr drill approve PLAN --by NAME"), "{message}");

    approval::approve(dir.path(), "prod-outage", &v2, "Alice", &log).unwrap();
    let err = approval::check(dir.path(), "prod-outage", &v2, 2).unwrap_err().to_string();
    assert!(err.contains("has 1 (Alice); 1 missing"), "{err}");
    assert!(err.contains(". bob approved an earlier version"), "only bob is stale now: {err}");
}

#[test]
fn the_same_person_approving_twice_counts_once() {
    let (dir, log) = setup();
    let sha = plan_sha("x");
    let first = approval::approve(dir.path(), "p", &sha, "Li Wei", &log).unwrap();
    for again in ["li wei", " LI  WEI ", "Li Wei"] {
        let a = approval::approve(dir.path(), "p", &sha, again, &log).unwrap();
        assert!(a.repeated, "{again:?}");
        assert_eq!(a.approval, first.approval, "the first approval is the one that counts");
    }
    assert_eq!(approval::approvals_for(dir.path(), &sha).unwrap().len(), 1);
    assert!(approval::check(dir.path(), "p", &sha, 2).is_err());
    let records = audit_records(&log);
    assert_eq!(records.len(), 4, "every attempt is in the audit log");
    assert_eq!(records.iter().filter(|r| r.detail["repeated"] == true).count(), 3);
}

#[test]
fn no_approval_is_needed_when_none_is_required() {
    let dir = tempfile::tempdir().unwrap();
    assert!(approval::check(dir.path(), "p", &plan_sha("x"), 0).unwrap().is_empty());
    assert!(approval::approvals_for(&dir.path().join("never-created"), &plan_sha("x")).unwrap().is_empty());
}

#[test]
fn refused_approvals_leave_no_trace() {
    let (dir, log) = setup();
    let sha = plan_sha("x");
    let refusals: [(&str, &str, &str); 8] = [
        ("p", &sha, ""),
        ("p", &sha, "   "),
        ("p", &sha, "ali\u{200b}ce"),
        ("p", &sha, "a\u{1b}[31mb"),
        ("p", &sha, &"x".repeat(approval::NAME_CHARS_MAX + 1)),
        ("p", "ABCDEF", "alice"),
        ("p", &sha[..63], "alice"),
        ("", &sha, "alice"),
    ];
    for (plan, sha, by) in refusals {
        let err = approval::approve(dir.path(), plan, sha, by, &log).unwrap_err();
        assert!(
            matches!(err, ApprovalError::BadName { .. } | ApprovalError::BadSha(_) | ApprovalError::BadPlanName { .. }),
            "{err}"
        );
    }
    assert_eq!(audit::verify(log.path()).unwrap().records, 0);
    assert!(!dir.path().join(approval::FILE_NAME).exists());
    assert!(matches!(approval::approvals_for(dir.path(), "nope"), Err(ApprovalError::BadSha(_))));
}

#[test]
fn a_damaged_store_is_reported_not_read_as_empty() {
    let (dir, log) = setup();
    let sha = plan_sha("x");
    approval::approve(dir.path(), "p", &sha, "alice", &log).unwrap();
    let store = dir.path().join(approval::FILE_NAME);
    fs::write(&store, "{ \"version\": 1, \"approvals\": [ {").unwrap();
    let err = approval::approvals_for(dir.path(), &sha).unwrap_err();
    assert!(matches!(err, ApprovalError::Store { .. }), "{err}");
    assert!(err.to_string().contains("approvals.json"), "{err}");
    assert!(approval::check(dir.path(), "p", &sha, 1).is_err());
    assert!(approval::approve(dir.path(), "p", &sha, "bob", &log).is_err());
    assert_eq!(audit::verify(log.path()).unwrap().records, 1, "a refused approval is not audited");

    fs::write(&store, "{ \"version\": 9, \"approvals\": [] }").unwrap();
    assert!(approval::approvals_for(dir.path(), &sha).unwrap_err().to_string().contains("version 9"));
}

#[test]
fn approvals_from_many_threads_all_land() {
    let (dir, log) = setup();
    let sha = plan_sha("x");
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let (dir, log, sha) = (dir.path().to_path_buf(), log.clone(), sha.clone());
            std::thread::spawn(move || approval::approve(&dir, "p", &sha, &format!("approver {i}"), &log).unwrap())
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(approval::check(dir.path(), "p", &sha, 8).unwrap().len(), 8);
    assert_eq!(audit_records(&log).len(), 8);
    let seqs: std::collections::HashSet<u64> = stored(dir.path()).iter().map(|a| a.audit_seq).collect();
    assert_eq!(seqs.len(), 8, "each stored approval points at its own audit record");
}

fn stored(dir: &Path) -> Vec<approval::StoredApproval> {
    let v: serde_json::Value = serde_json::from_slice(&fs::read(dir.join(approval::FILE_NAME)).unwrap()).unwrap();
    serde_json::from_value(v["approvals"].clone()).unwrap()
}
