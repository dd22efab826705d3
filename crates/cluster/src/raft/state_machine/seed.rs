//! Seeding a new cluster with a mail store rebuilt outside Raft (`maildr restore
//! site` when every site was lost).
//!
//! A restored store has applied commands that no Raft log holds, so a state machine
//! refuses to open it (`RaftStorageError::OutOfStep`), and if it were simply
//! initialised as a new cluster, the other sites would replay the new log from its
//! first entry and never see the restored mail. Seeding makes the restored store the
//! applied state of the new cluster's log at the index it was restored to:
//!
//! - the applied state says that index is applied, with the new cluster's voters as
//!   its membership (what `cluster init` would have proposed);
//! - the log says everything up to that index is purged, so a peer that lacks it can
//!   only be brought up to date with a snapshot;
//! - a snapshot of the store at that index is written, the one openraft sends.
//!
//! The seeded site elects itself once the voters it can reach grant their votes (its
//! log is ahead of theirs), and every other site installs the snapshot. The log id
//! is in term 0, the term `Raft::initialize` uses for the first membership, so the
//! first election's term is above it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use maildr_store::Store;
use openraft::{CommittedLeaderId, LogId, Membership, StoredMembership};

use super::{AppliedRecord, AppliedState, StateMachineStore, KEY_APPLIED, SM_META};
use crate::raft::log_store::{KEY_COMMITTED, KEY_LAST_PURGED, LOG_META};
use crate::raft::{NodeId, RaftDb, RaftStorageError, SiteNode, LOG_DATABASE_FILE};

/// What seeding made of a restored store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeededState {
    /// The log id the restored store stands at in the new cluster's log.
    pub applied: LogId<NodeId>,
    /// The voters of the new cluster.
    pub voters: BTreeSet<NodeId>,
    /// The snapshot's size in bytes (the store's database copy plus its header).
    pub snapshot_bytes: u64,
}

/// Make the mail store in `data_dir`, rebuilt by a restore at log index `index`,
/// the applied state of a new cluster whose voters are `voters`, and write its
/// snapshot. The directory must hold no Raft state yet.
pub fn seed_new_cluster(
    data_dir: &Path,
    voters: BTreeMap<NodeId, SiteNode>,
    index: u64,
) -> Result<SeededState, RaftStorageError> {
    let log_path = data_dir.join(LOG_DATABASE_FILE);
    if log_path.exists() {
        return Err(RaftStorageError::Corrupt {
            path: log_path,
            what: "raft log database".into(),
            detail: "it exists already: only a restored store that never ran under Raft is seeded".into(),
        });
    }
    assert!(!voters.is_empty(), "a new cluster has at least one voter");
    let commands_applied = Store::open(data_dir)?.commands_applied()?;
    let applied = LogId::new(CommittedLeaderId::new(0, NodeId::default()), index);
    let voter_ids: BTreeSet<NodeId> = voters.keys().copied().collect();
    let membership = StoredMembership::new(Some(applied), Membership::new(vec![voter_ids.clone()], voters));
    let state = AppliedState { last_applied: Some(applied), last_membership: membership };
    let db = Arc::new(RaftDb::open(&log_path)?);
    db.seed(&AppliedRecord::settled(state, commands_applied), applied)?;
    let state_machine = StateMachineStore::open(data_dir, db)?;
    let (meta, file) = state_machine.shared.build_snapshot()?;
    assert_eq!(meta.last_log_id, Some(applied), "the seeded snapshot stands at the seeded index");
    let snapshot_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(SeededState { applied, voters: voter_ids, snapshot_bytes })
}

impl RaftDb {
    /// The applied state, the last purged and the committed log id, in one transaction.
    fn seed(&self, record: &AppliedRecord, applied: LogId<NodeId>) -> Result<(), RaftStorageError> {
        let record_bytes = self.encode("state machine record `applied`", record)?;
        let purged_bytes = self.encode("raft log meta `last_purged`", &applied)?;
        let committed_bytes = self.encode("raft log meta `committed`", &Some(applied))?;
        let txn = self.begin_write()?;
        {
            let mut sm = txn.open_table(SM_META).map_err(|e| self.db_err(e))?;
            sm.insert(KEY_APPLIED, record_bytes.as_slice()).map_err(|e| self.db_err(e))?;
            let mut meta = txn.open_table(LOG_META).map_err(|e| self.db_err(e))?;
            meta.insert(KEY_LAST_PURGED, purged_bytes.as_slice()).map_err(|e| self.db_err(e))?;
            meta.insert(KEY_COMMITTED, committed_bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        self.commit(txn)
    }
}
