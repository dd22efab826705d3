//! The Raft log on disk: entries, vote, committed and last purged log ids in
//! `raft-log.redb`.
//!
//! It exists so that what a site promised in Raft (its vote, the entries it accepted)
//! survives a crash: every change is one redb transaction committed with fsync before
//! openraft hears that it is done. Writes are serialised because openraft calls them
//! through `&mut self` and each one is awaited to completion.
//!
//! It must never leave a hole in the log: a truncation or purge removes a contiguous
//! range in one transaction, and a purge records the last purged log id in the same
//! transaction that removes the entries.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{
    CommittedLeaderId, EntryPayload, ErrorSubject, ErrorVerb, LogId, Membership, OptionalSend, RaftLogReader,
    StorageError, Vote,
};
use redb::{ReadableTable, TableDefinition};

use super::{blocking, Entry, NodeId, RaftDb, RaftStorageError, SiteNode, TypeConfig};

/// Log index → postcard-encoded [`Entry`].
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// The log's own state, one postcard-encoded value per key.
pub(crate) const LOG_META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_log_meta");

/// When each entry reached this site (milliseconds since the Unix epoch), kept only
/// on a lagged site, which applies an entry a fixed delay after it arrived.
pub(crate) const ARRIVALS: TableDefinition<u64, u64> = TableDefinition::new("raft_log_arrivals");

const KEY_VOTE: &str = "vote";
pub(crate) const KEY_COMMITTED: &str = "committed";
pub(crate) const KEY_LAST_PURGED: &str = "last_purged";

/// openraft's log storage for one site. Cheap to clone: clones share the database,
/// and a clone serves as the log reader of replication tasks.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<RaftDb>,
}

impl LogStore {
    pub(crate) fn new(db: Arc<RaftDb>) -> LogStore {
        LogStore { db }
    }

    /// The forced-failover rewrite (what etcd calls `--force-new-cluster`), run
    /// before openraft is started on this log: append a membership entry whose only
    /// voter (and only node) is `me`, under a term above every term in the log and
    /// the vote, and vote for `me` in that term, in one fsynced transaction.
    ///
    /// openraft 0.9 takes the last membership entry in the log as the effective one,
    /// committed or not, and a node that is the only voter of its membership elects
    /// itself at its first election tick, so on start this site leads alone; its
    /// first entry as leader commits everything its log holds. The vote keeps terms
    /// growing: the election that follows uses the term after it.
    ///
    /// With `keep_through` (a held lagged site: its applied log id), the entries
    /// after it are removed first, in the same transaction, and the committed log id
    /// no longer points past it: the new cluster starts from the state the lagged
    /// site held, not from the log it had received since.
    ///
    /// Running it again once done changes nothing (a crash between the rewrite and
    /// the caller's bookkeeping is harmless).
    pub fn force_single_voter(
        &self,
        me: NodeId,
        node: SiteNode,
        keep_through: Option<LogId<NodeId>>,
    ) -> Result<SingleVoterLog, RaftStorageError> {
        self.db.force_single_voter(me, node, keep_through)
    }

    /// The bytes of the entries after `matched` up to `last`, as this site appended
    /// them (a peer's lag in bytes, on the primary); see [`crate::status::EntrySizes`].
    pub(crate) fn lag_bytes(&self, matched: u64, last: u64) -> Option<crate::status::LagBytes> {
        self.db.entry_sizes.lock().unwrap_or_else(|p| p.into_inner()).lag_bytes(matched, last)
    }

    /// Record, with every entry appended from now on, when it arrived (a lagged
    /// site applies entries a fixed delay after their arrival).
    pub fn stamp_arrivals(&self) {
        self.db.stamps_arrivals.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Where the log stood after [`LogStore::force_single_voter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SingleVoterLog {
    /// The last entry before the single-voter membership entry: what this site had.
    pub previous_last: LogId<NodeId>,
    /// The single-voter membership entry.
    pub membership: LogId<NodeId>,
}

impl RaftDb {
    fn read_entries(&self, range: (Bound<u64>, Bound<u64>)) -> Result<Vec<Entry>, RaftStorageError> {
        let txn = self.begin_read()?;
        let log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
        let mut entries = Vec::new();
        for row in log.range(range).map_err(|e| self.db_err(e))? {
            let (index, bytes) = row.map_err(|e| self.db_err(e))?;
            let index = index.value();
            let entry: Entry = self.decode(&format!("log entry {index}"), bytes.value())?;
            if entry.log_id.index != index {
                return Err(
                    self.corrupt(format!("log entry {index}"), format_args!("it holds log id {}", entry.log_id))
                );
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, RaftStorageError> {
        let txn = self.begin_read()?;
        let meta = txn.open_table(LOG_META).map_err(|e| self.db_err(e))?;
        let value = meta.get(key).map_err(|e| self.db_err(e))?;
        value.map(|v| self.decode(&format!("raft log meta `{key}`"), v.value())).transpose()
    }

    fn write_meta<T: serde::Serialize>(&self, key: &str, value: &T) -> Result<(), RaftStorageError> {
        let bytes = self.encode(&format!("raft log meta `{key}`"), value)?;
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(LOG_META).map_err(|e| self.db_err(e))?;
            meta.insert(key, bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        self.commit(txn)
    }

    fn log_state(&self) -> Result<LogState<TypeConfig>, RaftStorageError> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.read_meta(KEY_LAST_PURGED)?;
        let txn = self.begin_read()?;
        let log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
        let last = match log.last().map_err(|e| self.db_err(e))? {
            Some((index, bytes)) => {
                let index = index.value();
                let entry: Entry = self.decode(&format!("log entry {index}"), bytes.value())?;
                Some(entry.log_id)
            }
            None => None,
        };
        // With every entry purged, the last log id is the last purged one.
        Ok(LogState { last_purged_log_id, last_log_id: last.or(last_purged_log_id) })
    }

    fn append_entries(&self, entries: Vec<Entry>) -> Result<(), RaftStorageError> {
        let stamp = self.stamps_arrivals.load(std::sync::atomic::Ordering::SeqCst);
        let arrived_ms = crate::record_file::now_ms().max(0) as u64;
        let mut sizes = Vec::with_capacity(entries.len());
        let txn = self.begin_write()?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
            let mut arrivals = txn.open_table(ARRIVALS).map_err(|e| self.db_err(e))?;
            for entry in &entries {
                let index = entry.log_id.index;
                let bytes = self.encode(&format!("log entry {index}"), entry)?;
                log.insert(index, bytes.as_slice()).map_err(|e| self.db_err(e))?;
                sizes.push((index, bytes.len() as u64));
                if stamp {
                    arrivals.insert(index, arrived_ms).map_err(|e| self.db_err(e))?;
                }
            }
        }
        self.commit(txn)?;
        let mut known = self.entry_sizes.lock().unwrap_or_else(|p| p.into_inner());
        sizes.into_iter().for_each(|(index, size)| known.appended(index, size));
        Ok(())
    }

    /// Arrival times (milliseconds since the Unix epoch) recorded for the entries in
    /// `first..=last`; entries without one are absent.
    pub(crate) fn arrivals(&self, first: u64, last: u64) -> Result<BTreeMap<u64, u64>, RaftStorageError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(ARRIVALS).map_err(|e| self.db_err(e))?;
        let mut out = BTreeMap::new();
        for row in table.range(first..=last).map_err(|e| self.db_err(e))? {
            let (index, at) = row.map_err(|e| self.db_err(e))?;
            out.insert(index.value(), at.value());
        }
        Ok(out)
    }

    fn force_single_voter(
        &self,
        me: NodeId,
        node: SiteNode,
        keep_through: Option<LogId<NodeId>>,
    ) -> Result<SingleVoterLog, RaftStorageError> {
        let state = self.log_state()?;
        let received = state.last_log_id.ok_or_else(|| {
            self.corrupt(
                "raft log",
                "it is empty: this site never received the cluster's state, there is nothing to promote",
            )
        })?;
        let is_single_voter = |entry: &Entry| match &entry.payload {
            EntryPayload::Membership(m) => {
                entry.log_id.leader_id.node_id == me
                    && m.get_joint_config().len() == 1
                    && m.voter_ids().eq([me])
                    && m.nodes().count() == 1
            }
            _ => false,
        };
        let last_entry = self.read_entries((Bound::Included(received.index), Bound::Included(received.index)))?;
        if let Some(done) = last_entry.first().filter(|e| is_single_voter(e)) {
            let last = received;
            let before =
                self.read_entries((Bound::Included(last.index.saturating_sub(1)), Bound::Excluded(last.index)))?;
            let previous_last = before.first().map(|e| e.log_id).or(state.last_purged_log_id).unwrap_or(done.log_id);
            return Ok(SingleVoterLog { previous_last, membership: done.log_id });
        }
        let last = match keep_through {
            Some(kept) => {
                assert!(kept <= received, "the applied log id {kept} is past the last received {received}");
                assert!(
                    state.last_purged_log_id <= Some(kept),
                    "entries up to {:?} were purged after a snapshot of at most {kept}",
                    state.last_purged_log_id
                );
                kept
            }
            None => received,
        };
        let vote: Option<Vote<NodeId>> = self.read_meta(KEY_VOTE)?;
        let term = vote.map(|v| v.leader_id.term).unwrap_or(0).max(received.leader_id.term) + 1;
        let membership_id = LogId::new(CommittedLeaderId::new(term, me), last.index + 1);
        let membership = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, node)]));
        let entry = Entry { log_id: membership_id, payload: EntryPayload::Membership(membership) };
        let entry_bytes = self.encode(&format!("log entry {}", membership_id.index), &entry)?;
        let vote_bytes = self.encode("raft log meta `vote`", &Vote::new(term, me))?;
        let txn = self.begin_write()?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
            let mut meta = txn.open_table(LOG_META).map_err(|e| self.db_err(e))?;
            if last < received {
                let after_kept = (Bound::Excluded(last.index), Bound::Unbounded);
                log.retain_in(after_kept, |_, _| false).map_err(|e| self.db_err(e))?;
                let mut arrivals = txn.open_table(ARRIVALS).map_err(|e| self.db_err(e))?;
                arrivals.retain_in(after_kept, |_, _| false).map_err(|e| self.db_err(e))?;
                let committed: Option<Option<LogId<NodeId>>> =
                    match meta.get(KEY_COMMITTED).map_err(|e| self.db_err(e))? {
                        Some(v) => Some(self.decode("raft log meta `committed`", v.value())?),
                        None => None,
                    };
                if committed.flatten().is_some_and(|c| c > last) {
                    let bytes = self.encode("raft log meta `committed`", &Some(last))?;
                    meta.insert(KEY_COMMITTED, bytes.as_slice()).map_err(|e| self.db_err(e))?;
                }
            }
            log.insert(membership_id.index, entry_bytes.as_slice()).map_err(|e| self.db_err(e))?;
            meta.insert(KEY_VOTE, vote_bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        self.commit(txn)?;
        Ok(SingleVoterLog { previous_last: last, membership: membership_id })
    }

    /// Remove the entries at `range` and, for a purge, record the last purged log id,
    /// in one transaction.
    fn remove_entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
        last_purged: Option<LogId<NodeId>>,
    ) -> Result<(), RaftStorageError> {
        let txn = self.begin_write()?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| self.db_err(e))?;
            log.retain_in(range, |_, _| false).map_err(|e| self.db_err(e))?;
            let mut arrivals = txn.open_table(ARRIVALS).map_err(|e| self.db_err(e))?;
            arrivals.retain_in(range, |_, _| false).map_err(|e| self.db_err(e))?;
            if let Some(log_id) = last_purged {
                let mut meta = txn.open_table(LOG_META).map_err(|e| self.db_err(e))?;
                let previous: Option<LogId<NodeId>> = match meta.get(KEY_LAST_PURGED).map_err(|e| self.db_err(e))? {
                    Some(v) => Some(self.decode("last purged log id", v.value())?),
                    None => None,
                };
                assert!(
                    previous <= Some(log_id),
                    "purging up to {log_id} after purging up to {previous:?}: the purged prefix only grows"
                );
                let bytes = self.encode("last purged log id", &log_id)?;
                meta.insert(KEY_LAST_PURGED, bytes.as_slice()).map_err(|e| self.db_err(e))?;
            }
        }
        self.commit(txn)
    }
}

fn owned_bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        let db = Arc::clone(&self.db);
        let bounds = owned_bounds(&range);
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || db.read_entries(bounds)).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Logs, ErrorVerb::Read, move || db.log_state()).await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = Arc::clone(&self.db);
        let vote = *vote;
        blocking(ErrorSubject::Vote, ErrorVerb::Write, move || db.write_meta(KEY_VOTE, &vote)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Vote, ErrorVerb::Read, move || db.read_meta(KEY_VOTE)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Store, ErrorVerb::Write, move || db.write_meta(KEY_COMMITTED, &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        if self.db.stamps_arrivals.load(std::sync::atomic::Ordering::SeqCst) {
            // A lagged site: openraft would apply every committed entry during
            // `Raft::new`, before the site listens, and a held site would then never
            // start. It learns the commit index from the primary instead, and its
            // state machine applies in its own time.
            return Ok(None);
        }
        let db = Arc::clone(&self.db);
        let stored: Option<Option<LogId<NodeId>>> =
            blocking(ErrorSubject::Store, ErrorVerb::Read, move || db.read_meta(KEY_COMMITTED)).await?;
        Ok(stored.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = Arc::clone(&self.db);
        match blocking(ErrorSubject::Logs, ErrorVerb::Write, move || db.append_entries(entries)).await {
            Ok(()) => {
                // The transaction has committed, so the entries are fsynced: only now
                // may openraft count them towards a quorum.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Log(log_id), ErrorVerb::Delete, move || {
            db.remove_entries((Bound::Included(log_id.index), Bound::Unbounded), None)?;
            db.entry_sizes.lock().unwrap_or_else(|p| p.into_inner()).truncated_from(log_id.index);
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let db = Arc::clone(&self.db);
        blocking(ErrorSubject::Log(log_id), ErrorVerb::Delete, move || {
            db.remove_entries((Bound::Unbounded, Bound::Included(log_id.index)), Some(log_id))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank(term: u64, leader: NodeId, index: u64) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(term, leader), index), payload: EntryPayload::Blank }
    }

    #[test]
    fn forcing_a_single_voter_appends_its_membership_under_a_new_term_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft-log.redb")).unwrap();
        let node = SiteNode { site: "lz".into(), addr: "127.0.40.1:2700".into() };
        assert!(db.force_single_voter(4, node.clone(), None).is_err(), "an empty log has nothing to promote");

        db.append_entries(vec![blank(1, 1, 1), blank(1, 1, 2), blank(3, 2, 3)]).unwrap();
        db.write_meta(KEY_VOTE, &Vote::new_committed(5, 2)).unwrap();
        let done = db.force_single_voter(4, node.clone(), None).unwrap();
        assert_eq!(done.previous_last, LogId::new(CommittedLeaderId::new(3, 2), 3));
        assert_eq!(done.membership, LogId::new(CommittedLeaderId::new(6, 4), 4), "a term above the vote's");
        let vote: Option<Vote<NodeId>> = db.read_meta(KEY_VOTE).unwrap();
        assert_eq!(vote, Some(Vote::new(6, 4)), "an uncommitted vote for itself: it still elects itself");
        let entries = db.read_entries((Bound::Included(4), Bound::Unbounded)).unwrap();
        match &entries[..] {
            [Entry { payload: EntryPayload::Membership(m), .. }] => {
                assert_eq!(m.voter_ids().collect::<Vec<_>>(), [4]);
                assert_eq!(m.nodes().map(|(id, n)| (*id, n.clone())).collect::<Vec<_>>(), [(4, node.clone())]);
            }
            other => panic!("{other:?}"),
        }

        assert_eq!(db.force_single_voter(4, node, None).unwrap(), done, "running it again changes nothing");
        assert_eq!(db.log_state().unwrap().last_log_id, Some(done.membership));
    }

    #[test]
    fn forcing_a_held_lagged_site_keeps_only_what_it_applied() {
        let dir = tempfile::tempdir().unwrap();
        let db = RaftDb::open(&dir.path().join("raft-log.redb")).unwrap();
        db.stamps_arrivals.store(true, std::sync::atomic::Ordering::SeqCst);
        let node = SiteNode { site: "lg".into(), addr: "127.0.50.1:2700".into() };
        db.append_entries((1..=5).map(|i| blank(2, 1, i)).collect()).unwrap();
        assert_eq!(db.arrivals(1, 5).unwrap().len(), 5, "a lagged site stamps every arrival");
        let committed = Some(LogId::new(CommittedLeaderId::new(2, 1), 5));
        db.write_meta(KEY_COMMITTED, &committed).unwrap();
        let applied = LogId::new(CommittedLeaderId::new(2, 1), 3);

        let done = db.force_single_voter(5, node.clone(), Some(applied)).unwrap();
        assert_eq!(done.previous_last, applied, "what it kept");
        assert_eq!(done.membership, LogId::new(CommittedLeaderId::new(3, 5), 4), "right after the kept entries");
        let indexes: Vec<u64> =
            db.read_entries((Bound::Unbounded, Bound::Unbounded)).unwrap().iter().map(|e| e.log_id.index).collect();
        assert_eq!(indexes, [1, 2, 3, 4], "entries 4 and 5 as received are gone; 4 is the new membership");
        let committed: Option<Option<LogId<NodeId>>> = db.read_meta(KEY_COMMITTED).unwrap();
        assert_eq!(committed, Some(Some(applied)), "committed no longer points past what is kept");
        assert_eq!(db.arrivals(4, 5).unwrap().len(), 0);
        assert_eq!(db.force_single_voter(5, node, Some(applied)).unwrap(), done, "running it again changes nothing");
    }
}
