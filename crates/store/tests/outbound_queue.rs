//! The replicated outbound queue through the store's public interface: a
//! submission delivers its local copies and queues the rest in one change, a retry
//! is queued once, attempts move recipients out, and refusals change nothing.

use maildr_store::{Applied, Command, CommandError, QueueTotals, Store};
use maildr_types::{BlobRef, Domain, EmailAddress, MailboxName, UidValidity, UnixSeconds};

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}

fn setup(store: &Store) {
    let ok = |c| store.apply(c).unwrap().unwrap();
    ok(Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(1) });
    for user in ["alice@example.test", "bob@example.test"] {
        ok(Command::AddAccount {
            address: addr(user),
            password_hash: "x".into(),
            quota_bytes: 0,
            uid_validity: UidValidity(7),
            at: UnixSeconds(2),
        });
    }
}

fn submit(
    store: &Store,
    body: BlobRef,
    local: &[&str],
    remote: &[&str],
    key: Option<&str>,
) -> Result<Applied, CommandError> {
    store
        .apply(Command::Submit {
            local: local.iter().map(|a| addr(a)).collect(),
            remote: remote.iter().map(|a| addr(a)).collect(),
            from: Some(addr("alice@example.test")),
            submitted_by: Some(addr("alice@example.test")),
            body,
            internal_date: UnixSeconds(10),
            retry_key: key.map(String::from),
            at_ms: 10_000,
            expires_at_ms: 10_000 + 5 * 86_400_000,
        })
        .unwrap()
}

fn inbox_count(store: &Store, user: &str) -> u64 {
    let account = store.account(&addr(user)).unwrap().unwrap();
    store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().unwrap().message_count
}

#[test]
fn a_submission_delivers_local_copies_and_queues_the_remote_recipients_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    let body = store.blobs().put(b"Subject: out\r\n\r\nhello\r\n").unwrap();
    let Applied::Submitted { placements, queued } = submit(
        &store,
        body,
        &["bob@example.test"],
        &["carol@remote.test", "dave@remote.test", "carol@remote.test"],
        Some("k1"),
    )
    .unwrap() else {
        panic!("a submission applies as Submitted")
    };
    assert_eq!(placements.len(), 1);
    let id = queued.expect("remote recipients are queued");
    let queue = store.queued().unwrap();
    assert_eq!(queue.len(), 1);
    let q = &queue[0];
    assert_eq!((q.id, q.attempts, q.next_attempt_at_ms), (id, 0, 10_000));
    let waiting: Vec<&str> = q.recipients.iter().map(|r| r.address.as_str()).collect();
    assert_eq!(waiting, ["carol@remote.test", "dave@remote.test"], "deduplicated, in order");
    assert_eq!(inbox_count(&store, "bob@example.test"), 1);

    // The same submission retried (same key): neither delivered nor queued again.
    let Applied::Submitted { queued: again, .. } =
        submit(&store, body, &["bob@example.test"], &["carol@remote.test", "dave@remote.test"], Some("k1")).unwrap()
    else {
        panic!()
    };
    assert_eq!(again, Some(id));
    assert_eq!(store.queued().unwrap().len(), 1);
    assert_eq!(inbox_count(&store, "bob@example.test"), 1);
}

#[test]
fn attempts_move_recipients_out_until_the_message_leaves_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    let body = store.blobs().put(b"Subject: out\r\n\r\nhello\r\n").unwrap();
    let Applied::Submitted { queued: Some(id), .. } =
        submit(&store, body, &[], &["carol@remote.test", "dave@remote.test", "erin@remote.test"], Some("k2")).unwrap()
    else {
        panic!()
    };
    let attempt = store
        .apply(Command::RecordDeliveryAttempt {
            id,
            delivered: vec![addr("carol@remote.test")],
            bounced: vec![addr("dave@remote.test")],
            deferred: vec![(addr("erin@remote.test"), "451 4.3.0 try later".into())],
            next_attempt_at_ms: 70_000,
        })
        .unwrap()
        .unwrap();
    assert_eq!(attempt, Applied::QueueChanged { id, remaining: 1 });
    let q = store.queued_message(id).unwrap().unwrap();
    assert_eq!((q.attempts, q.next_attempt_at_ms), (1, 70_000));
    assert_eq!(q.recipients.len(), 1);
    assert_eq!(q.recipients[0].last_error.as_deref(), Some("451 4.3.0 try later"));

    // The operator makes it due now, then it is delivered and leaves the queue.
    assert_eq!(
        store.apply(Command::RetryQueued { id: None, at_ms: 20_000 }).unwrap().unwrap(),
        Applied::QueueRetried { count: 1 }
    );
    assert_eq!(store.queued_message(id).unwrap().unwrap().next_attempt_at_ms, 20_000);
    store
        .apply(Command::RecordDeliveryAttempt {
            id,
            delivered: vec![addr("erin@remote.test")],
            bounced: vec![],
            deferred: vec![],
            next_attempt_at_ms: 0,
        })
        .unwrap()
        .unwrap();
    assert!(store.queued().unwrap().is_empty());
    // How they left is counted, for a drill to tell "left" from "lost".
    let totals = store.queue_totals().unwrap();
    assert_eq!(
        totals,
        QueueTotals { recipients_delivered: 2, recipients_bounced: 1, messages_finished: 1, messages_deleted: 0 }
    );
    assert_eq!(totals.messages_left(), 1);
    // Gone with its retry key: the same key queues anew (the documented window).
    let Applied::Submitted { queued: Some(next), .. } =
        submit(&store, body, &[], &["carol@remote.test"], Some("k2")).unwrap()
    else {
        panic!()
    };
    assert!(next > id);
}

#[test]
fn refused_queue_commands_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    let body = store.blobs().put(b"Subject: out\r\n\r\nhello\r\n").unwrap();
    let Applied::Submitted { queued: Some(id), .. } = submit(&store, body, &[], &["carol@remote.test"], None).unwrap()
    else {
        panic!()
    };
    let before = store.queued().unwrap();
    let refusals = [
        (
            Command::RecordDeliveryAttempt {
                id,
                delivered: vec![addr("mallory@remote.test")],
                bounced: vec![],
                deferred: vec![],
                next_attempt_at_ms: 1,
            },
            CommandError::NotQueuedFor { id, address: addr("mallory@remote.test") },
        ),
        (
            Command::RecordDeliveryAttempt {
                id: 99,
                delivered: vec![],
                bounced: vec![],
                deferred: vec![],
                next_attempt_at_ms: 1,
            },
            CommandError::QueuedUnknown(99),
        ),
        (Command::RemoveQueued { id: 99 }, CommandError::QueuedUnknown(99)),
        (Command::RetryQueued { id: Some(99), at_ms: 1 }, CommandError::QueuedUnknown(99)),
    ];
    for (command, refusal) in refusals {
        assert_eq!(store.apply(command).unwrap(), Err(refusal));
    }
    // A "remote" recipient in a hosted domain, and an unknown local one: nothing
    // is delivered nor queued.
    assert_eq!(
        submit(&store, body, &["bob@example.test"], &["alice@example.test"], None),
        Err(CommandError::RemoteIsLocal(addr("alice@example.test")))
    );
    assert_eq!(
        submit(&store, body, &["nobody@example.test"], &["carol@remote.test"], None),
        Err(CommandError::AccountUnknown(addr("nobody@example.test")))
    );
    assert_eq!(submit(&store, body, &[], &[], None), Err(CommandError::NoRecipients));
    assert_eq!(store.queued().unwrap(), before);
    assert_eq!(store.queue_totals().unwrap(), QueueTotals::default());
    assert_eq!(inbox_count(&store, "bob@example.test"), 0);

    // Removal releases it, and counts as a deletion.
    store.apply(Command::RemoveQueued { id }).unwrap().unwrap();
    assert!(store.queued().unwrap().is_empty());
    assert_eq!(store.queue_totals().unwrap(), QueueTotals { messages_deleted: 1, ..QueueTotals::default() });
}
