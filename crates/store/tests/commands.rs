//! Behaviour of the store through its public interface: commands in, state out.

use maildr_store::{Applied, Command, CommandError, Recipient, Store};
use maildr_types::{Domain, EmailAddress, MailboxName, SystemFlags, UidValidity, UnixSeconds};

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
    ok(Command::AddAlias { alias: addr("sales@example.test"), target: addr("alice@example.test") });
}

fn deliver(store: &Store, to: &[&str], body: &[u8]) -> Result<Applied, CommandError> {
    let blob = store.blobs().put(body).unwrap();
    store
        .apply(Command::Deliver {
            recipients: to.iter().map(|a| addr(a)).collect(),
            body: blob,
            internal_date: UnixSeconds(3),
            flags: SystemFlags::default(),
            retry_key: None,
        })
        .unwrap()
}

fn inbox_digest(store: &Store, user: &str) -> (u64, String) {
    let account = store.account(&addr(user)).unwrap().unwrap();
    let inbox = store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().unwrap();
    (inbox.message_count, inbox.digest.to_hex())
}

#[test]
fn new_accounts_get_the_special_use_mailboxes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    let alice = store.account(&addr("alice@example.test")).unwrap().unwrap();
    let names: Vec<String> = store.mailboxes(alice.id).unwrap().iter().map(|m| m.name.to_string()).collect();
    for expected in ["INBOX", "Sent", "Drafts", "Trash", "Junk"] {
        assert!(names.contains(&expected.to_string()), "{expected} missing from {names:?}");
    }
    assert!(store.mailboxes(alice.id).unwrap().iter().all(|m| m.uid_validity.0 >= 7));
}

#[test]
fn the_same_commands_give_identical_replicas() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (sa, sb) = (Store::open(a.path()).unwrap(), Store::open(b.path()).unwrap());
    for store in [&sa, &sb] {
        setup(store);
        for i in 0..20 {
            deliver(store, &["alice@example.test", "bob@example.test"], format!("message {i}").as_bytes()).unwrap();
        }
    }
    assert_eq!(inbox_digest(&sa, "alice@example.test"), inbox_digest(&sb, "alice@example.test"));
    assert_eq!(inbox_digest(&sa, "alice@example.test").0, 20);
    // A different history gives a different digest.
    deliver(&sb, &["alice@example.test"], b"one more").unwrap();
    assert_ne!(inbox_digest(&sa, "alice@example.test"), inbox_digest(&sb, "alice@example.test"));
    assert!(sa.check().unwrap().problems.is_empty());
}

#[test]
fn aliases_resolve_to_accounts_and_unknown_addresses_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    assert_eq!(
        store.resolve_recipient(&addr("sales@example.test")).unwrap(),
        Recipient::Local(vec![addr("alice@example.test")])
    );
    assert_eq!(store.resolve_recipient(&addr("nobody@example.test")).unwrap(), Recipient::UnknownUser);
    assert_eq!(store.resolve_recipient(&addr("alice@elsewhere.test")).unwrap(), Recipient::NotHosted);
    assert!(store.may_send_as(&addr("alice@example.test"), &addr("sales@example.test")).unwrap());
    assert!(!store.may_send_as(&addr("bob@example.test"), &addr("sales@example.test")).unwrap());
}

#[test]
fn a_delivery_over_quota_for_one_recipient_delivers_to_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    store.apply(Command::SetQuota { address: addr("bob@example.test"), quota_bytes: 10 }).unwrap().unwrap();
    let before = (inbox_digest(&store, "alice@example.test"), inbox_digest(&store, "bob@example.test"));
    let refused = deliver(&store, &["alice@example.test", "bob@example.test"], b"this body is longer than ten bytes");
    assert_eq!(refused, Err(CommandError::OverQuota(addr("bob@example.test"))));
    let after = (inbox_digest(&store, "alice@example.test"), inbox_digest(&store, "bob@example.test"));
    assert_eq!(before, after);
    assert!(store.check().unwrap().problems.is_empty());
}

#[test]
fn refused_commands_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    let accounts = store.accounts(None).unwrap();
    let aliases = store.aliases(None).unwrap();
    let refusals = [
        (Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(9) }, "already hosted"),
        (Command::RemoveDomain { domain: Domain::parse("example.test").unwrap() }, "still has"),
        (
            Command::AddAlias { alias: addr("alice@example.test"), target: addr("bob@example.test") },
            "already an account",
        ),
        (
            Command::AddAlias { alias: addr("x@example.test"), target: addr("out@elsewhere.test") },
            "not a local account",
        ),
        (
            Command::AddAccount {
                address: addr("sales@example.test"),
                password_hash: "y".into(),
                quota_bytes: 0,
                uid_validity: UidValidity(1),
                at: UnixSeconds(1),
            },
            "already an alias",
        ),
        (
            Command::AddAccount {
                address: addr("carol@other.test"),
                password_hash: "y".into(),
                quota_bytes: 0,
                uid_validity: UidValidity(1),
                at: UnixSeconds(1),
            },
            "not hosted",
        ),
    ];
    for (command, why) in refusals {
        let err = store.apply(command.clone()).unwrap().expect_err(&format!("{command:?} should be refused"));
        assert!(err.to_string().contains(why), "{err} should say {why:?}");
    }
    assert_eq!(store.accounts(None).unwrap(), accounts);
    assert_eq!(store.aliases(None).unwrap(), aliases);
}

#[test]
fn removing_an_account_removes_its_mail_and_alias_targets_and_state_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        setup(&store);
        deliver(&store, &["alice@example.test"], b"hi").unwrap();
        store.apply(Command::RemoveAccount { address: addr("alice@example.test") }).unwrap().unwrap();
        assert!(store.aliases(None).unwrap().is_empty());
        assert!(store.check().unwrap().problems.is_empty());
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.accounts(None).unwrap().len(), 1);
    assert!(store.account(&addr("alice@example.test")).unwrap().is_none());
}

#[test]
fn a_second_process_cannot_open_a_store_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _store = Store::open(dir.path()).unwrap();
    // redb's lock is per process and per file; within one process a second open
    // reports the database as already open, which is what the admin CLI meets.
    let err = Store::open(dir.path()).err().expect("second open must fail");
    assert!(err.to_string().contains("in use"), "{err}");
}

#[test]
fn a_recreated_account_never_reuses_a_uidvalidity_even_with_the_same_proposed_value() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    setup(&store);
    let first = inbox_uid_validity(&store, "alice@example.test");
    store.apply(Command::RemoveAccount { address: addr("alice@example.test") }).unwrap().unwrap();
    store
        .apply(Command::AddAccount {
            address: addr("alice@example.test"),
            password_hash: "x".into(),
            quota_bytes: 0,
            uid_validity: UidValidity(7),
            at: UnixSeconds(2),
        })
        .unwrap()
        .unwrap();
    assert!(inbox_uid_validity(&store, "alice@example.test") > first);
}

fn inbox_uid_validity(store: &Store, user: &str) -> u32 {
    let account = store.account(&addr(user)).unwrap().unwrap();
    store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().unwrap().uid_validity.0
}

#[test]
fn steering_changes_bump_the_zone_serial_and_are_logged_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.steering().unwrap(), None);
    let steer = |primary: &str, mx: &[&str], down: &[&str]| Command::SetSteering {
        primary: Some(primary.into()),
        mx: mx.iter().map(|s| s.to_string()).collect(),
        down: down.iter().map(|s| s.to_string()).collect(),
        reason: "test".into(),
        at_ms: 1_000,
    };
    assert_eq!(store.apply(steer("bj", &["bj", "sh"], &[])).unwrap(), Ok(Applied::SteeringSet { serial: 1 }));
    store
        .apply(Command::RecordEvent {
            kind: maildr_store::ControlEventKind::Detected,
            site: Some("bj".into()),
            detail: "2 of 3 observers".into(),
            at_ms: 2_000,
        })
        .unwrap()
        .unwrap();
    assert_eq!(store.apply(steer("sh", &["sh"], &["bj"])).unwrap(), Ok(Applied::SteeringSet { serial: 2 }));
    let steering = store.steering().unwrap().unwrap();
    assert_eq!((steering.serial, steering.primary.as_deref(), steering.mx.clone()), (2, Some("sh"), vec!["sh".into()]));
    let events = store.events(0, 100).unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["dns_committed", "detected", "dns_committed"]);
    assert_eq!(events.iter().map(|e| e.id).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(store.events(2, 100).unwrap().len(), 1, "reading after an id returns only newer events");
    // Survives a reopen, and the serial keeps growing from where it was.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.apply(steer("bj", &["bj", "sh"], &[])).unwrap(), Ok(Applied::SteeringSet { serial: 3 }));
    assert_eq!(store.events(0, 100).unwrap().last().unwrap().id, 4);
}
