//! The record of expunged UIDs that QRESYNC answers VANISHED from (RFC 7162
//! §3.2): which UIDs each expunge removed, at which MODSEQ, kept alike on every
//! replica, bounded per mailbox.

// A harness whose setup fails is a failed test: its helpers unwrap like the tests
// (clippy's allow-unwrap-in-tests covers only the `#[test]` functions).
#![allow(clippy::unwrap_used)]

use maildr_store::{Applied, Command, FlagOp, Store, EXPUNGED_KEPT_PER_MAILBOX_MAX};
use maildr_types::{Domain, EmailAddress, MailboxId, MailboxName, ModSeq, SystemFlags, Uid, UidValidity, UnixSeconds};

fn alice() -> EmailAddress {
    EmailAddress::parse("alice@example.test").unwrap()
}

fn setup(store: &Store) -> MailboxId {
    let ok = |c| store.apply(c).unwrap().unwrap();
    ok(Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(1) });
    ok(Command::AddAccount {
        address: alice(),
        password_hash: "x".into(),
        quota_bytes: 0,
        uid_validity: UidValidity(7),
        at: UnixSeconds(2),
    });
    inbox(store).id
}

fn inbox(store: &Store) -> maildr_store::Mailbox {
    let account = store.account(&alice()).unwrap().unwrap();
    store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().unwrap()
}

/// Append `n` messages to alice's INBOX in one transaction.
fn append(store: &Store, n: u32) {
    let body = store.blobs().put(b"Subject: x\r\n\r\nx\r\n").unwrap();
    let commands: Vec<Command> = (0..n)
        .map(|_| Command::Append {
            account: alice(),
            mailbox: MailboxName::inbox(),
            body,
            flags: SystemFlags::default(),
            keywords: vec![],
            internal_date: UnixSeconds(3),
        })
        .collect();
    for outcome in store.apply_batch(&commands).unwrap() {
        outcome.unwrap();
    }
}

fn delete_and_expunge(store: &Store, mailbox: MailboxId, uids: &[u32]) -> ModSeq {
    let uids: Vec<Uid> = uids.iter().map(|u| Uid(*u)).collect();
    let mark = Command::StoreFlags {
        mailbox,
        uids: uids.clone(),
        op: FlagOp::Add,
        flags: SystemFlags(SystemFlags::DELETED),
        keywords: vec![],
        unchanged_since: None,
    };
    store.apply(mark).unwrap().unwrap();
    let applied = store.apply(Command::Expunge { mailbox, uids: Some(uids.clone()) }).unwrap().unwrap();
    assert_eq!(applied, Applied::Expunged { mailbox, uids });
    inbox(store).highest_modseq
}

fn uids(list: &[u32]) -> Vec<Uid> {
    list.iter().map(|u| Uid(*u)).collect()
}

#[test]
fn each_expunge_is_recorded_with_the_modseq_it_took() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = setup(&store);
    append(&store, 10);
    let first = delete_and_expunge(&store, id, &[3, 5]);
    let second = delete_and_expunge(&store, id, &[7]);
    assert!(second > first);
    assert_eq!(store.expunged_since(id, ModSeq(0)).unwrap(), Some(uids(&[3, 5, 7])));
    assert_eq!(store.expunged_since(id, ModSeq(first.0 - 1)).unwrap(), Some(uids(&[3, 5, 7])));
    assert_eq!(store.expunged_since(id, first).unwrap(), Some(uids(&[7])));
    assert_eq!(store.expunged_since(id, second).unwrap(), Some(vec![]));
    let (log, rows) = store.expunge_log(id).unwrap().unwrap();
    assert_eq!(log.kept, 3);
    assert_eq!(log.complete_above, ModSeq(0));
    assert_eq!(rows, vec![(first, Uid(3)), (first, Uid(5)), (second, Uid(7))]);
    assert_eq!(store.earliest_expunge(id, &uids(&[7, 5])).unwrap(), Some(first));
    assert_eq!(store.earliest_expunge(id, &uids(&[7])).unwrap(), Some(second));
    assert_eq!(store.earliest_expunge(id, &uids(&[1])).unwrap(), None, "UID 1 is still there");
    // MOVE expunges from its source too (RFC 7162 §3.2 names MOVE).
    let moved = Command::CopyMessages {
        from: id,
        uids: uids(&[8]),
        to: MailboxName::parse("Trash").unwrap(),
        remove_source: true,
    };
    store.apply(moved).unwrap().unwrap();
    assert_eq!(store.expunged_since(id, second).unwrap(), Some(uids(&[8])));
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn an_expunge_that_removes_nothing_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = setup(&store);
    append(&store, 2);
    let before = inbox(&store).highest_modseq;
    store.apply(Command::Expunge { mailbox: id, uids: None }).unwrap().unwrap();
    assert_eq!(inbox(&store).highest_modseq, before);
    assert_eq!(store.expunge_log(id).unwrap().unwrap().0.kept, 0);
}

#[test]
fn the_record_holds_exactly_its_limit_and_then_drops_the_oldest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = setup(&store);
    let max = u32::try_from(EXPUNGED_KEPT_PER_MAILBOX_MAX).unwrap();
    append(&store, max + 1);
    let all: Vec<u32> = (1..=max).collect();
    let first = delete_and_expunge(&store, id, &all);
    let (log, _) = store.expunge_log(id).unwrap().unwrap();
    assert_eq!(log.kept, EXPUNGED_KEPT_PER_MAILBOX_MAX);
    assert_eq!(log.complete_above, ModSeq(0), "at the limit nothing is dropped");
    assert_eq!(store.expunged_since(id, ModSeq(0)).unwrap().unwrap().len(), all.len());
    // One more: the oldest row (UID 1) goes, and the record no longer answers
    // for MODSEQs at or below the expunge it belonged to.
    let second = delete_and_expunge(&store, id, &[max + 1]);
    let (log, rows) = store.expunge_log(id).unwrap().unwrap();
    assert_eq!(log.kept, EXPUNGED_KEPT_PER_MAILBOX_MAX);
    assert_eq!(rows.len(), all.len());
    assert_eq!(rows[0], (first, Uid(2)));
    assert_eq!(log.complete_above, first);
    assert_eq!(store.expunged_since(id, ModSeq(0)).unwrap(), None);
    assert_eq!(store.expunged_since(id, ModSeq(first.0 - 1)).unwrap(), None);
    assert_eq!(store.expunged_since(id, first).unwrap(), Some(uids(&[max + 1])));
    assert!(second > first);
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn replicas_applying_the_same_commands_keep_the_same_record() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
    for store in [&sa, &sb] {
        let id = setup(store);
        append(store, 30);
        delete_and_expunge(store, id, &[2, 4, 6, 30]);
        delete_and_expunge(store, id, &[10]);
    }
    let id = inbox(&sa).id;
    assert_eq!(sa.expunge_log(id).unwrap(), sb.expunge_log(id).unwrap());
    assert_eq!(inbox(&sa).highest_modseq, inbox(&sb).highest_modseq);
}

#[test]
fn a_deleted_mailbox_takes_its_record_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    let name = MailboxName::parse("Old").unwrap();
    let create = Command::CreateMailbox { account: alice(), name: name.clone(), uid_validity: UidValidity(9) };
    store.apply(create).unwrap().unwrap();
    let account = store.account(&alice()).unwrap().unwrap();
    let id = store.mailbox_by_name(account.id, &name).unwrap().unwrap().id;
    assert_eq!(store.expunged_since(id, ModSeq(0)).unwrap(), Some(vec![]), "recorded from its creation");
    append(&store, 2);
    let moved =
        Command::CopyMessages { from: inbox(&store).id, uids: uids(&[1, 2]), to: name.clone(), remove_source: true };
    store.apply(moved).unwrap().unwrap();
    store
        .apply(Command::CopyMessages { from: id, uids: uids(&[1]), to: MailboxName::inbox(), remove_source: true })
        .unwrap()
        .unwrap();
    assert_eq!(store.expunged_since(id, ModSeq(0)).unwrap(), Some(uids(&[1])));
    store.apply(Command::DeleteMailbox { account: alice(), name }).unwrap().unwrap();
    assert_eq!(store.expunge_log(id).unwrap(), None);
}

/// A session that saw the mailbox up to some MODSEQ reads only what changed since:
/// the messages added or whose flags changed, and the UIDs expunged, never the rest.
#[test]
fn mailbox_changes_since_a_modseq_name_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let id = setup(&store);
    append(&store, 10);
    let seen = inbox(&store).highest_modseq;
    let unchanged = store.mailbox_changes(id, seen).unwrap().unwrap();
    assert!(unchanged.changed.is_empty());
    assert_eq!(unchanged.expunged, Some(vec![]));

    let flagged = Command::StoreFlags {
        mailbox: id,
        uids: uids(&[2]),
        op: FlagOp::Add,
        flags: SystemFlags(SystemFlags::SEEN),
        keywords: vec!["$Label1".into()],
        unchanged_since: None,
    };
    store.apply(flagged).unwrap().unwrap();
    append(&store, 2);
    delete_and_expunge(&store, id, &[4]);
    let changes = store.mailbox_changes(id, seen).unwrap().unwrap();
    let changed: Vec<u32> = changes.changed.iter().map(|m| m.uid.0).collect();
    assert_eq!(changed, vec![2, 11, 12], "the flagged message and the two new ones, in UID order");
    assert_eq!(changes.changed[0].keywords, vec!["$Label1".to_string()]);
    assert!(changes.changed.iter().all(|m| m.modseq > seen));
    assert_eq!(changes.expunged, Some(uids(&[4])), "uid 4 was flagged \\Deleted and expunged");
    assert_eq!(changes.mailbox.highest_modseq, inbox(&store).highest_modseq);
    // Everything since the start is the whole mailbox, as the index names it.
    let all = store.mailbox_changes(id, ModSeq(0)).unwrap().unwrap().changed;
    assert_eq!(all, store.messages(id).unwrap());
    assert!(store.check().unwrap().problems.is_empty(), "{:?}", store.check().unwrap().problems);
    // A mailbox that is gone has no changes to tell.
    assert!(store.mailbox_changes(MailboxId(999), ModSeq(0)).unwrap().is_none());
}

/// A store written before the MODSEQ index existed gets it built when it opens.
#[test]
fn a_store_without_the_modseq_index_has_it_built_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let store = Store::open(dir.path()).unwrap();
        let id = setup(&store);
        append(&store, 5);
        store.forget_modseq_index_for_test().unwrap();
        assert!(store.mailbox_changes(id, ModSeq(0)).unwrap().unwrap().changed.is_empty());
        id
    };
    let store = Store::open(dir.path()).unwrap();
    let all = store.mailbox_changes(id, ModSeq(0)).unwrap().unwrap().changed;
    assert_eq!(all.len(), 5);
    assert_eq!(all, store.messages(id).unwrap());
}
