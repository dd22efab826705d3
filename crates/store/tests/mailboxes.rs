//! Mailbox-level commands (the IMAP write path): append, flags, expunge, copy,
//! move, create, rename, delete; each keeps digests, counts and quota exact.

use maildr_store::{Applied, Command, CommandError, FlagOp, Store};
use maildr_types::{Domain, EmailAddress, MailboxId, MailboxName, ModSeq, SystemFlags, Uid, UidValidity, UnixSeconds};

fn addr(s: &str) -> EmailAddress {
    EmailAddress::parse(s).unwrap()
}
fn name(s: &str) -> MailboxName {
    MailboxName::parse(s).unwrap()
}

fn store_with_alice() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .apply(Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(1) })
        .unwrap()
        .unwrap();
    store
        .apply(Command::AddAccount {
            address: addr("alice@example.test"),
            password_hash: "x".into(),
            quota_bytes: 0,
            uid_validity: UidValidity(100),
            at: UnixSeconds(1),
        })
        .unwrap()
        .unwrap();
    (dir, store)
}

fn append(store: &Store, mailbox: &str, body: &[u8], flags: u8) -> Result<(MailboxId, Uid), CommandError> {
    let blob = store.blobs().put(body).unwrap();
    match store
        .apply(Command::Append {
            account: addr("alice@example.test"),
            mailbox: name(mailbox),
            body: blob,
            flags: SystemFlags(flags),
            keywords: vec!["$Label1".into()],
            internal_date: UnixSeconds(5),
        })
        .unwrap()
    {
        Ok(Applied::Appended { mailbox, uid, .. }) => Ok((mailbox, uid)),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    }
}

fn mailbox(store: &Store, n: &str) -> maildr_store::Mailbox {
    let a = store.account(&addr("alice@example.test")).unwrap().unwrap();
    store.mailbox_by_name(a.id, &name(n)).unwrap().unwrap()
}

fn healthy(store: &Store) {
    let report = store.check().unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[test]
fn append_assigns_increasing_uids_and_keeps_flags_and_keywords() {
    let (_d, store) = store_with_alice();
    let (id, u1) = append(&store, "Drafts", b"one", SystemFlags::DRAFT).unwrap();
    let (_, u2) = append(&store, "Drafts", b"two", 0).unwrap();
    assert_eq!((u1, u2), (Uid(1), Uid(2)));
    let messages = store.messages(id).unwrap();
    assert!(messages[0].flags.contains(SystemFlags::DRAFT));
    assert_eq!(messages[0].keywords, ["$Label1"]);
    assert_eq!(store.account(&addr("alice@example.test")).unwrap().unwrap().used_bytes, 6);
    healthy(&store);
}

#[test]
fn store_flags_changes_modseq_and_respects_unchanged_since() {
    let (_d, store) = store_with_alice();
    let (id, uid) = append(&store, "INBOX", b"m", 0).unwrap();
    let before = mailbox(&store, "INBOX");
    let applied = store
        .apply(Command::StoreFlags {
            mailbox: id,
            uids: vec![uid],
            op: FlagOp::Add,
            flags: SystemFlags(SystemFlags::SEEN),
            keywords: vec![],
            unchanged_since: None,
        })
        .unwrap()
        .unwrap();
    let Applied::FlagsStored { changed, .. } = applied else { panic!() };
    assert_eq!(changed.len(), 1);
    let after = mailbox(&store, "INBOX");
    assert!(after.highest_modseq > before.highest_modseq);
    assert_ne!(after.digest, before.digest);
    // A conditional store against an older MODSEQ is refused for that message.
    let applied = store
        .apply(Command::StoreFlags {
            mailbox: id,
            uids: vec![uid],
            op: FlagOp::Replace,
            flags: SystemFlags(0),
            keywords: vec![],
            unchanged_since: Some(ModSeq(1)),
        })
        .unwrap()
        .unwrap();
    let Applied::FlagsStored { changed, modified_since, .. } = applied else { panic!() };
    assert!(changed.is_empty());
    assert_eq!(modified_since, [uid]);
    assert!(store.messages(id).unwrap()[0].flags.contains(SystemFlags::SEEN));
    healthy(&store);
}

#[test]
fn expunge_removes_only_deleted_messages_and_frees_quota() {
    let (_d, store) = store_with_alice();
    let (id, _) = append(&store, "INBOX", b"keep", 0).unwrap();
    let (_, gone) = append(&store, "INBOX", b"gone", SystemFlags::DELETED).unwrap();
    let (_, outside) = append(&store, "INBOX", b"deleted but outside the set", SystemFlags::DELETED).unwrap();
    let applied = store.apply(Command::Expunge { mailbox: id, uids: Some(vec![Uid(1), gone]) }).unwrap().unwrap();
    assert_eq!(applied, Applied::Expunged { mailbox: id, uids: vec![gone] });
    let uids: Vec<Uid> = store.messages(id).unwrap().iter().map(|m| m.uid).collect();
    assert_eq!(uids, [Uid(1), outside]);
    store.apply(Command::Expunge { mailbox: id, uids: None }).unwrap().unwrap();
    assert_eq!(store.messages(id).unwrap().len(), 1);
    assert_eq!(store.account(&addr("alice@example.test")).unwrap().unwrap().used_bytes, 4);
    healthy(&store);
}

#[test]
fn copy_and_move_give_new_uids_in_the_target_and_move_empties_the_source() {
    let (_d, store) = store_with_alice();
    let (inbox, a) = append(&store, "INBOX", b"a", SystemFlags::SEEN).unwrap();
    let (_, b) = append(&store, "INBOX", b"b", 0).unwrap();
    let applied = store
        .apply(Command::CopyMessages { from: inbox, uids: vec![a, b], to: name("Trash"), remove_source: false })
        .unwrap()
        .unwrap();
    let Applied::Copied { pairs, uid_validity, .. } = applied else { panic!() };
    assert_eq!(pairs, [(a, Uid(1)), (b, Uid(2))]);
    assert_eq!(uid_validity, mailbox(&store, "Trash").uid_validity);
    assert!(store.messages(mailbox(&store, "Trash").id).unwrap()[0].flags.contains(SystemFlags::SEEN));
    store
        .apply(Command::CopyMessages { from: inbox, uids: vec![a, b], to: name("Junk"), remove_source: true })
        .unwrap()
        .unwrap();
    assert!(store.messages(inbox).unwrap().is_empty());
    assert_eq!(mailbox(&store, "Junk").message_count, 2);
    assert_eq!(store.account(&addr("alice@example.test")).unwrap().unwrap().used_bytes, 4);
    healthy(&store);
}

#[test]
fn create_rename_and_delete_mailboxes_with_children() {
    let (_d, store) = store_with_alice();
    let acct = addr("alice@example.test");
    store
        .apply(Command::CreateMailbox {
            account: acct.clone(),
            name: name("Projects/DR/2026"),
            uid_validity: UidValidity(1),
        })
        .unwrap()
        .unwrap();
    let a = store.account(&acct).unwrap().unwrap();
    let names: Vec<String> = store.mailboxes(a.id).unwrap().iter().map(|m| m.name.to_string()).collect();
    assert!(
        names.contains(&"Projects".into())
            && names.contains(&"Projects/DR".into())
            && names.contains(&"Projects/DR/2026".into())
    );
    append(&store, "Projects/DR/2026", b"plan", 0).unwrap();
    store
        .apply(Command::RenameMailbox {
            account: acct.clone(),
            from: name("Projects"),
            to: name("Archive"),
            uid_validity: UidValidity(1),
        })
        .unwrap()
        .unwrap();
    assert_eq!(mailbox(&store, "Archive/DR/2026").message_count, 1);
    assert!(store.mailbox_by_name(a.id, &name("Projects/DR")).unwrap().is_none());
    let err = store
        .apply(Command::RenameMailbox {
            account: acct.clone(),
            from: name("Archive"),
            to: name("Archive/x"),
            uid_validity: UidValidity(1),
        })
        .unwrap();
    assert_eq!(err, Err(CommandError::RenameIntoSelf));
    store.apply(Command::DeleteMailbox { account: acct.clone(), name: name("Archive/DR/2026") }).unwrap().unwrap();
    assert_eq!(store.account(&acct).unwrap().unwrap().used_bytes, 0);
    assert_eq!(
        store.apply(Command::DeleteMailbox { account: acct.clone(), name: name("INBOX") }).unwrap(),
        Err(CommandError::InboxUndeletable)
    );
    assert!(matches!(
        store
            .apply(Command::CreateMailbox { account: acct.clone(), name: name("Sent"), uid_validity: UidValidity(1) })
            .unwrap(),
        Err(CommandError::MailboxExists(_))
    ));
    healthy(&store);
}

#[test]
fn renaming_inbox_moves_its_mail_and_leaves_it_empty() {
    let (_d, store) = store_with_alice();
    append(&store, "INBOX", b"old mail", 0).unwrap();
    let acct = addr("alice@example.test");
    store
        .apply(Command::RenameMailbox {
            account: acct,
            from: MailboxName::inbox(),
            to: name("Old"),
            uid_validity: UidValidity(1),
        })
        .unwrap()
        .unwrap();
    assert_eq!(mailbox(&store, "INBOX").message_count, 0);
    assert_eq!(mailbox(&store, "Old").message_count, 1);
    healthy(&store);
}

#[test]
fn append_beyond_quota_is_refused_and_changes_nothing() {
    let (_d, store) = store_with_alice();
    store.apply(Command::SetQuota { address: addr("alice@example.test"), quota_bytes: 10 }).unwrap().unwrap();
    let before = mailbox(&store, "INBOX");
    assert_eq!(
        append(&store, "INBOX", b"more than ten bytes", 0),
        Err(CommandError::OverQuota(addr("alice@example.test")))
    );
    assert_eq!(mailbox(&store, "INBOX"), before);
}
