//! The Raft storage layer against openraft's own storage test suite, and with real
//! maildr commands: what goes in through the log comes out in the mail store, survives
//! a restart, and travels to another site in a snapshot.

use std::collections::{BTreeMap, BTreeSet};

use maildr_cluster::maildr_store::{Applied, Command, CommandError, DATABASE_FILE};
use maildr_cluster::raft::{self, Entry, EntryOutcome, LogStore, NodeId, SiteNode, StateMachineStore, TypeConfig};
use maildr_types::{Domain, EmailAddress, MailboxName, SystemFlags, UidValidity, UnixSeconds};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::testing::{log_id, StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageError, Vote};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

/// Fresh storage in a fresh temporary directory for every test of the suite.
struct TempDirStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for TempDirStores {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("creating a temporary data directory");
        let (log_store, state_machine) = raft::open(dir.path())?;
        Ok((dir, log_store, state_machine))
    }
}

#[test]
fn log_store_and_state_machine_meet_openrafts_storage_contract() {
    if let Err(e) = Suite::test_all(TempDirStores) {
        panic!("openraft's storage suite failed: {e}");
    }
}

const NODE: NodeId = 1;

fn entry(index: u64, payload: EntryPayload<TypeConfig>) -> Entry {
    Entry { log_id: log_id(1, NODE, index), payload }
}

fn one_site_membership() -> Membership<NodeId, SiteNode> {
    let node = SiteNode { site: "alpha".into(), addr: "127.0.0.1:7001".into() };
    Membership::new(vec![BTreeSet::from([NODE])], BTreeMap::from([(NODE, node)]))
}

fn alice() -> EmailAddress {
    EmailAddress::parse("alice@example.test").unwrap()
}

/// A membership entry, then a domain, an account and a delivery to it, then a command
/// the state refuses. The body is stored first, as SMTP does before proposing.
fn mail_entries(state_machine: &StateMachineStore) -> Vec<Entry> {
    let body =
        state_machine.with_store(|store| store.blobs().put(b"Subject: hello\r\n\r\nover raft\r\n")).unwrap().unwrap();
    vec![
        entry(1, EntryPayload::Blank),
        entry(2, EntryPayload::Membership(one_site_membership())),
        entry(
            3,
            EntryPayload::Normal(Command::AddDomain {
                domain: Domain::parse("example.test").unwrap(),
                at: UnixSeconds(1_700_000_000),
            }),
        ),
        entry(
            4,
            EntryPayload::Normal(Command::AddAccount {
                address: alice(),
                password_hash: "not-a-real-hash".into(),
                quota_bytes: 0,
                uid_validity: UidValidity(7),
                at: UnixSeconds(1_700_000_001),
            }),
        ),
        entry(
            5,
            EntryPayload::Normal(Command::Deliver {
                recipients: vec![alice()],
                body,
                internal_date: UnixSeconds(1_700_000_002),
                flags: SystemFlags::default(),
                retry_key: None,
            }),
        ),
        entry(6, EntryPayload::Normal(Command::RemoveDomain { domain: Domain::parse("nowhere.test").unwrap() })),
    ]
}

/// Subjects and UIDs in alice's INBOX, read from the mail store.
fn inbox_of_alice(state_machine: &StateMachineStore) -> Vec<(u32, u64)> {
    state_machine
        .with_store(|store| {
            let account = store.account(&alice()).unwrap().expect("alice exists");
            let inbox = store.mailbox_by_name(account.id, &MailboxName::inbox()).unwrap().expect("INBOX exists");
            store.messages(inbox.id).unwrap().into_iter().map(|m| (m.uid.0, m.size_bytes)).collect()
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_mail_commands_reach_the_store_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let entries = {
        let (mut log_store, mut state_machine) = raft::open(dir.path()).unwrap();
        let entries = mail_entries(&state_machine);
        log_store.save_vote(&Vote::new_committed(1, NODE)).await.unwrap();
        log_store.blocking_append(entries.clone()).await.unwrap();
        log_store.save_committed(Some(log_id(1, NODE, 6))).await.unwrap();

        let outcomes = state_machine.apply(entries.clone()).await.unwrap();
        assert_eq!(outcomes.len(), 6, "one outcome per entry");
        assert_eq!(outcomes[0], EntryOutcome::NoCommand);
        assert_eq!(outcomes[1], EntryOutcome::NoCommand);
        assert_eq!(outcomes[2], EntryOutcome::Command(Ok(Applied::Done)));
        assert!(matches!(outcomes[3], EntryOutcome::Command(Ok(Applied::AccountAdded { .. }))));
        match &outcomes[4] {
            EntryOutcome::Command(Ok(Applied::Delivered { placements })) => {
                assert_eq!(placements.len(), 1);
                assert_eq!(placements[0].account, alice());
            }
            other => panic!("the delivery gave {other:?}"),
        }
        assert!(matches!(outcomes[5], EntryOutcome::Command(Err(CommandError::DomainUnknown(_)))));

        assert_eq!(inbox_of_alice(&state_machine), vec![(1, 29)]);
        let report = state_machine.with_store(|store| store.check()).unwrap().unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
        entries
    };

    // Everything comes back from disk after a restart.
    let (mut log_store, mut state_machine) = raft::open(dir.path()).unwrap();
    assert_eq!(log_store.read_vote().await.unwrap(), Some(Vote::new_committed(1, NODE)));
    assert_eq!(log_store.read_committed().await.unwrap(), Some(log_id(1, NODE, 6)));
    let log_state = log_store.get_log_state().await.unwrap();
    assert_eq!(log_state.last_log_id, Some(log_id(1, NODE, 6)));
    assert_eq!(log_store.try_get_log_entries(1..7).await.unwrap(), entries);
    let (last_applied, membership) = state_machine.applied_state().await.unwrap();
    assert_eq!(last_applied, Some(log_id(1, NODE, 6)));
    assert_eq!(membership.log_id(), &Some(log_id(1, NODE, 2)));
    assert_eq!(membership.membership(), &one_site_membership());
    assert_eq!(inbox_of_alice(&state_machine), vec![(1, 29)]);
    assert_eq!(state_machine.with_store(|store| store.commands_applied().unwrap()).unwrap(), 4);

    // Applying goes on from where it stopped.
    let more = vec![entry(7, EntryPayload::Normal(Command::SetQuota { address: alice(), quota_bytes: 1_000_000 }))];
    let outcomes = state_machine.apply(more).await.unwrap();
    assert_eq!(outcomes, vec![EntryOutcome::Command(Ok(Applied::Done))]);
    let account = state_machine.with_store(|store| store.account(&alice()).unwrap()).unwrap().unwrap();
    assert_eq!(account.quota_bytes, 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_carries_the_mail_store_to_another_site() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_leader_log, mut leader) = raft::open(leader_dir.path()).unwrap();
    let entries = mail_entries(&leader);
    leader.apply(entries).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_eq!(snapshot.meta.last_log_id, Some(log_id(1, NODE, 6)));

    // Stream the snapshot's bytes into the follower, as the network would.
    let follower_dir = tempfile::tempdir().unwrap();
    {
        let (_follower_log, mut follower) = raft::open(follower_dir.path()).unwrap();
        let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
        let mut source = snapshot.snapshot;
        tokio::io::copy(&mut source, &mut *receiving).await.unwrap();
        follower.install_snapshot(&snapshot.meta, receiving).await.unwrap();

        let (last_applied, membership) = follower.applied_state().await.unwrap();
        assert_eq!(last_applied, Some(log_id(1, NODE, 6)));
        assert_eq!(membership.membership(), &one_site_membership());
        assert_eq!(inbox_of_alice(&follower), vec![(1, 29)]);
        // Bodies are not in snapshots yet: the follower has the message, not its body.
        let report = follower.with_store(|store| store.check()).unwrap().unwrap();
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    }

    // The installed state and the snapshot itself survive a restart of the follower.
    let (_follower_log, mut follower) = raft::open(follower_dir.path()).unwrap();
    assert_eq!(follower.applied_state().await.unwrap().0, Some(log_id(1, NODE, 6)));
    let current = follower.get_current_snapshot().await.unwrap().expect("the installed snapshot is kept");
    assert_eq!(current.meta, snapshot.meta);
    assert_eq!(inbox_of_alice(&follower), vec![(1, 29)]);
}

#[tokio::test]
async fn a_truncated_snapshot_is_refused_and_changes_nothing() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (_leader_log, mut leader) = raft::open(leader_dir.path()).unwrap();
    leader.apply(vec![entry(1, EntryPayload::Membership(one_site_membership()))]).await.unwrap();
    let snapshot = leader.get_snapshot_builder().await.build_snapshot().await.unwrap();

    let follower_dir = tempfile::tempdir().unwrap();
    let (_follower_log, mut follower) = raft::open(follower_dir.path()).unwrap();
    let mut receiving = follower.begin_receiving_snapshot().await.unwrap();
    let mut source = snapshot.snapshot;
    tokio::io::copy(&mut source, &mut *receiving).await.unwrap();
    // Cut the database copy short.
    let length = receiving.metadata().await.unwrap().len();
    receiving.set_len(length - 100).await.unwrap();
    receiving.flush().await.unwrap();
    let err = follower.install_snapshot(&snapshot.meta, receiving).await.unwrap_err();
    assert!(err.to_string().contains("early"), "{err}");
    // The follower's state is untouched and nothing of the install is left behind.
    assert_eq!(follower.applied_state().await.unwrap().0, None);
    assert!(follower.get_current_snapshot().await.unwrap().is_none());
    let leftovers: Vec<String> = std::fs::read_dir(follower_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("raft-snapshot.tmp") || name.ends_with(".installing"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_mail_store_written_outside_raft_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = maildr_cluster::maildr_store::Store::open(dir.path()).unwrap();
        store
            .apply(Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(0) })
            .unwrap()
            .unwrap();
    }
    let err = raft::open(dir.path()).err().expect("a store with commands but no raft record is refused");
    assert!(err.to_string().contains("out of step"), "{err}");
    assert!(dir.path().join(DATABASE_FILE).exists());
}
