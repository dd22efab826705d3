//! The mail store as openraft's state machine, and its snapshots.
//!
//! Committed entries reach the mail store here, and only here, once Raft runs: the
//! commands of a batch of entries go to `Store::apply_batch` (one redb transaction,
//! fsynced), the same deterministic path the single-site writer uses, so every
//! replica that applies the same log holds the same state.
//!
//! # Applied state across crashes
//! The mail store is one redb file and the applied state (last applied log id, last
//! membership) lives in the Raft log database; no transaction spans both. Before a
//! batch goes to the store, an [`AppliedRecord`] is committed that holds the applied
//! state before and after the batch together with the store's `commands_applied`
//! counter before and after it (the store counts every command, refused or not, in
//! the same transaction that applies it). On open, the counter says which of the two
//! states the store is in, so a batch is never applied twice and never skipped. A
//! counter matching neither is refused as [`RaftStorageError::OutOfStep`], and so is a
//! store that applied commands without any record (it was written outside Raft).
//! This costs a second fsync per applied batch; folding the applied state into the
//! store's own transaction would save it, but needs a table in the store crate.
//!
//! # Snapshots, and their limits today
//! A snapshot is a header (metadata, see `snapshot_file`) followed by a byte copy of
//! the mail store's database file (`maildr.redb`), taken under the state machine's
//! read lock right after a committed transaction, so no write is in flight. A redb
//! file copied this way is a valid crash image: opening it runs redb's repair. Limits:
//! - Message bodies (the blob files) are **not** in the snapshot. A site installing a
//!   snapshot holds metadata whose bodies may be missing until blob replication
//!   (fetching missing blobs) lands; `Store::check` reports them.
//! - The snapshot is a full copy: building one reads and writes the whole database
//!   and holds off applies while it copies (reads continue). Fine for lab-sized
//!   stores; incremental snapshots are future work.
//! - Installing keeps the database closed for the moment of the swap.
//!
//! Installing a snapshot is made crash-safe by staging: the database copy is written
//! and fsynced beside the live file, an "installing" marker is committed, and only then
//! is the copy renamed over the live file. On open, a marker finishes the install (the
//! rename is redone if needed); a staged file without a marker is discarded.
//!
//! This module must never interpret a command (the store does) or apply an entry out
//! of log order.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use maildr_store::{Applied, Command, Store, DATABASE_FILE};
use maildr_types::{BlobHash, MailboxId};

use crate::status::{MailboxDigest, MailboxDigestOf};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, SnapshotMeta, StorageError, StoredMembership,
};
use redb::TableDefinition;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

pub mod archive_spool;
mod seed;
mod snapshot;

pub use archive_spool::{ArchivedEntry, ARCHIVE_SPOOL_ENTRIES_MAX};
pub use seed::{seed_new_cluster, SeededState};

use snapshot::{read_snapshot_meta, remove_files_starting_with};

use super::apply_delay::{self, ApplyDelay};
use super::{blocking, sync_dir, Entry, EntryOutcome, NodeId, RaftDb, RaftStorageError, SiteNode, TypeConfig};

/// Snapshot metadata of maildr's type configuration.
pub type SiteSnapshotMeta = SnapshotMeta<NodeId, SiteNode>;

/// The state machine's own records in the Raft log database.
pub(crate) const SM_META: TableDefinition<&str, &[u8]> = TableDefinition::new("state_machine");
/// The [`AppliedRecord`] of the last batch.
const KEY_APPLIED: &str = "applied";
/// The [`AppliedState`] of a snapshot whose install was decided but maybe not finished.
const KEY_INSTALLING: &str = "installing";

/// The current snapshot, in the data directory.
pub const SNAPSHOT_FILE: &str = "raft-snapshot.bin";
/// Snapshots being built or checked; removed on open.
const SNAPSHOT_TEMP_PREFIX: &str = "raft-snapshot.tmp-";
/// Snapshots being received from the leader; removed on open and after an install.
const SNAPSHOT_RECEIVING_PREFIX: &str = "raft-snapshot.receiving-";

/// Where the database copy of a snapshot being installed waits for its rename.
fn staged_store_file() -> String {
    format!("{DATABASE_FILE}.installing")
}

/// What the state machine has applied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppliedState {
    pub last_applied: Option<LogId<NodeId>>,
    pub last_membership: StoredMembership<NodeId, SiteNode>,
}

/// The applied state before and after one batch, and the store's command counter
/// at each; see the module documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AppliedRecord {
    pub before: AppliedState,
    pub commands_before: u64,
    pub after: AppliedState,
    pub commands_after: u64,
}

impl AppliedRecord {
    /// A record with nothing in flight.
    pub fn settled(state: AppliedState, commands_applied: u64) -> AppliedRecord {
        AppliedRecord {
            before: state.clone(),
            commands_before: commands_applied,
            after: state,
            commands_after: commands_applied,
        }
    }

    /// The applied state of a mail store that has applied `commands_applied` commands,
    /// or `None` if it matches neither side of the batch.
    pub fn resolve(self, commands_applied: u64) -> Option<AppliedState> {
        if commands_applied == self.commands_after {
            Some(self.after)
        } else if commands_applied == self.commands_before {
            Some(self.before)
        } else {
            None
        }
    }
}

/// openraft's state machine for one site: the mail store plus the applied state.
/// Clones share the same store.
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// Builds snapshots of the state machine it came from, at the state current when
/// `build_snapshot` runs.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

struct Shared {
    data_dir: PathBuf,
    db: Arc<RaftDb>,
    inner: RwLock<Inner>,
    /// The store readers use. Replaced only when a snapshot is installed; readers
    /// holding the previous one finish on it.
    published: RwLock<Arc<Store>>,
    /// Mailboxes changed by applied entries (the change feed of IMAP sessions).
    changes: tokio::sync::broadcast::Sender<MailboxId>,
    /// Bodies referenced by applied state that this site does not hold yet.
    missing_bodies: Mutex<std::collections::BTreeSet<BlobHash>>,
    missing_bodies_added: tokio::sync::Notify,
    /// Whether this site keeps every body (a witness does not; it only relays).
    tracks_bodies: std::sync::atomic::AtomicBool,
    /// Metadata of the snapshot in [`SNAPSHOT_FILE`]. Held while snapshot files are
    /// renamed, so a build and an install never replace it at once.
    current_snapshot: Mutex<Option<SiteSnapshotMeta>>,
    /// Makes names of temporary snapshot files unique within the process.
    next_file_seq: AtomicU64,
    /// Set on a lagged site: entries wait for their delay, and for any hold.
    apply_delay: std::sync::OnceLock<Arc<ApplyDelay>>,
    /// Indexes `verify` asked for digests at before they were applied, and the
    /// digests once the apply reached each ([`StateMachineStore::mark_digests`]).
    digest_marks: Mutex<std::collections::BTreeMap<u64, Option<Vec<MailboxDigest>>>>,
}

/// Most indexes digests may be asked for ahead of the apply at once.
pub const DIGEST_MARKS_MAX: usize = 16;

struct Inner {
    /// `None` once a storage failure left the store's state uncertain, or while a
    /// snapshot replaces the database; every operation then fails until a restart.
    store: Option<Arc<Store>>,
    applied: AppliedState,
    /// The store's `commands_applied` counter after the last batch.
    commands_applied: u64,
}

impl StateMachineStore {
    /// Open the state machine over the mail store in `data_dir`, finishing an
    /// interrupted snapshot install and resolving the applied state of a batch that
    /// was in flight at a crash.
    pub(crate) fn open(data_dir: &Path, db: Arc<RaftDb>) -> Result<StateMachineStore, RaftStorageError> {
        remove_files_starting_with(data_dir, &[SNAPSHOT_TEMP_PREFIX, SNAPSHOT_RECEIVING_PREFIX])?;
        let installing: Option<AppliedState> = db.sm_read(KEY_INSTALLING)?;
        let staged = data_dir.join(staged_store_file());
        let live = data_dir.join(DATABASE_FILE);
        match (&installing, staged.exists()) {
            (Some(_), true) => {
                tracing::warn!(path = %staged.display(), "finishing a snapshot install interrupted by a crash");
                std::fs::rename(&staged, &live)
                    .map_err(|source| RaftStorageError::Io { path: staged.clone(), source })?;
                sync_dir(data_dir)?;
            }
            (Some(_), false) => {}
            (None, true) => {
                // The crash came before the install was decided; the live store stands.
                std::fs::remove_file(&staged)
                    .map_err(|source| RaftStorageError::Io { path: staged.clone(), source })?;
            }
            (None, false) => {}
        }

        let store = Store::open(data_dir)?;
        let commands_applied = store.commands_applied()?;
        let applied = match installing {
            Some(state) => {
                db.sm_settle_install(&AppliedRecord::settled(state.clone(), commands_applied))?;
                state
            }
            None => match db.sm_read::<AppliedRecord>(KEY_APPLIED)? {
                Some(record) => {
                    let expected = format!("{} or {}", record.commands_before, record.commands_after);
                    record.resolve(commands_applied).ok_or_else(|| RaftStorageError::OutOfStep {
                        data_dir: data_dir.into(),
                        commands_applied,
                        expected,
                    })?
                }
                None if commands_applied == 0 => AppliedState::default(),
                None => {
                    return Err(RaftStorageError::OutOfStep {
                        data_dir: data_dir.into(),
                        commands_applied,
                        expected: "0 (no command has gone through Raft here)".into(),
                    })
                }
            },
        };

        let snapshot_path = data_dir.join(SNAPSHOT_FILE);
        let current_snapshot = if snapshot_path.exists() { Some(read_snapshot_meta(&snapshot_path)?) } else { None };
        let missing = missing_bodies_of(&store)?;
        if !missing.is_empty() {
            tracing::warn!(bodies = missing.len(), "bodies referenced by the store are missing here; fetching them");
        }
        let store = Arc::new(store);

        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                data_dir: data_dir.into(),
                db,
                published: RwLock::new(Arc::clone(&store)),
                changes: tokio::sync::broadcast::channel(CHANGE_FEED_CAPACITY).0,
                missing_bodies: Mutex::new(missing),
                missing_bodies_added: tokio::sync::Notify::new(),
                tracks_bodies: std::sync::atomic::AtomicBool::new(true),
                inner: RwLock::new(Inner { store: Some(store), applied, commands_applied }),
                current_snapshot: Mutex::new(current_snapshot),
                next_file_seq: AtomicU64::new(0),
                apply_delay: std::sync::OnceLock::new(),
                digest_marks: Mutex::new(std::collections::BTreeMap::new()),
            }),
        })
    }

    /// Run `read` against the mail store. It waits while a batch is applied or a
    /// snapshot installed, so async callers should run it on the blocking pool.
    pub fn with_store<T>(&self, read: impl FnOnce(&Store) -> T) -> Result<T, RaftStorageError> {
        let inner = self.shared.read()?;
        let store = inner.store.as_ref().ok_or_else(|| self.shared.stopped())?;
        Ok(read(store))
    }

    /// The store for readers: it does not wait for applies. After a snapshot install
    /// the next call returns the new store.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.shared.published.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// The applied log index, read consistently with the store: `read` runs while no
    /// batch is being applied, so what it sees is exactly the state at that index.
    pub fn at_applied_index<T>(&self, read: impl FnOnce(Option<u64>, &Store) -> T) -> Result<T, RaftStorageError> {
        let inner = self.shared.read()?;
        let store = inner.store.as_ref().ok_or_else(|| self.shared.stopped())?;
        Ok(read(inner.applied.last_applied.map(|l| l.index), store))
    }

    /// Ask for every mailbox's digests at log index `index`: `Some` when it is the
    /// applied index now, else the apply stops at `index` to read them on its way
    /// ([`StateMachineStore::marked_digests`] takes them). Refused once the apply
    /// is past `index`, or with [`DIGEST_MARKS_MAX`] marks pending. This is how
    /// `verify` compares sites that never stand still at one index under load.
    pub fn mark_digests(&self, index: u64) -> Result<Option<Vec<MailboxDigest>>, String> {
        // The read lock keeps applies out: no batch passes `index` between the
        // look at the applied index and the mark.
        let inner = self.shared.read().map_err(|e| e.to_string())?;
        let store = inner.store.as_ref().ok_or_else(|| self.shared.stopped().to_string())?;
        let applied = inner.applied.last_applied.map(|l| l.index).unwrap_or(0);
        if applied == index {
            return MailboxDigest::all(store).map(Some).map_err(|e| e.to_string());
        }
        if applied > index {
            return Err(format!("already applied {applied}, past {index}"));
        }
        let mut marks = self.shared.digest_marks.lock().unwrap_or_else(|p| p.into_inner());
        if marks.len() >= DIGEST_MARKS_MAX && !marks.contains_key(&index) {
            return Err(format!("{DIGEST_MARKS_MAX} digest marks are pending already"));
        }
        marks.entry(index).or_insert(None);
        Ok(None)
    }

    /// The digests read at a marked index once the apply reached it (the mark is
    /// then gone); `None` while it has not.
    pub fn marked_digests(&self, index: u64) -> Option<Vec<MailboxDigest>> {
        let mut marks = self.shared.digest_marks.lock().unwrap_or_else(|p| p.into_inner());
        let read = marks.get(&index)?.is_some();
        if read {
            marks.remove(&index).flatten()
        } else {
            None
        }
    }

    /// Give up a mark nobody waits for any more.
    pub fn forget_digest_mark(&self, index: u64) {
        self.shared.digest_marks.lock().unwrap_or_else(|p| p.into_inner()).remove(&index);
    }

    /// Notices of mailboxes changed by applied entries.
    pub fn watch_mailboxes(&self) -> tokio::sync::broadcast::Receiver<MailboxId> {
        self.shared.changes.subscribe()
    }

    /// Bodies referenced by the applied state that this site does not hold.
    pub fn missing_bodies(&self) -> Vec<BlobHash> {
        self.shared.missing_bodies.lock().unwrap_or_else(|p| p.into_inner()).iter().copied().collect()
    }

    /// Make this a lagged site's state machine: from now on each entry is applied
    /// only once `delay` says so (see [`super::apply_delay`]). Set once, before Raft
    /// starts.
    pub fn delay_applies(&self, delay: Arc<ApplyDelay>) {
        assert!(self.shared.apply_delay.set(delay).is_ok(), "the apply delay is set once");
    }

    /// The applied log index right now (waits while a batch is applied).
    pub fn applied_index(&self) -> Result<Option<u64>, RaftStorageError> {
        Ok(self.applied_log_id()?.map(|l| l.index))
    }

    /// The last applied log id right now (waits while a batch is applied).
    pub fn applied_log_id(&self) -> Result<Option<LogId<NodeId>>, RaftStorageError> {
        Ok(self.shared.read()?.applied.last_applied)
    }

    /// Stop tracking missing bodies: this site (a witness) does not keep every body.
    pub fn ignore_missing_bodies(&self) {
        self.shared.tracks_bodies.store(false, Ordering::SeqCst);
        self.shared.missing_bodies.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Forget a missing body once it is stored (or once nothing refers to it).
    pub fn body_arrived(&self, hash: &BlobHash) {
        self.shared.missing_bodies.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }

    /// Up to `limit` spooled entries after log index `after`, in index order (see
    /// [`archive_spool`]).
    pub fn archived_after(&self, after: u64, limit: usize) -> Result<Vec<ArchivedEntry>, RaftStorageError> {
        self.shared.db.spooled_after(after, limit)
    }

    /// The lowest and highest log index in the archive spool.
    pub fn archive_spool_bounds(&self) -> Result<Option<(u64, u64)>, RaftStorageError> {
        self.shared.db.spool_bounds()
    }

    /// Forget spooled entries up to `through`, which the archive holds; returns how many.
    pub fn trim_archive_spool(&self, through: u64) -> Result<u64, RaftStorageError> {
        self.shared.db.trim_spool(through)
    }

    /// Copy the mail store's database to `dest` (fsynced) as it stands at one applied
    /// index, which is returned: applies wait while it copies (reads go on), as for
    /// a snapshot. The copy opens as a store of its own (a valid crash image).
    pub fn copy_store(&self, dest: &Path) -> Result<Option<u64>, RaftStorageError> {
        let inner = self.shared.read()?;
        inner.store.as_ref().ok_or_else(|| self.shared.stopped())?;
        let source = self.shared.data_dir.join(DATABASE_FILE);
        std::fs::copy(&source, dest).map_err(Shared::io(&source))?;
        std::fs::File::open(dest).and_then(|f| f.sync_all()).map_err(Shared::io(dest))?;
        Ok(inner.applied.last_applied.map(|l| l.index))
    }

    /// Resolves when bodies were added to the missing list.
    pub async fn missing_bodies_added(&self) {
        self.shared.missing_bodies_added.notified().await
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Most change notices buffered per watcher; a watcher that falls further behind is
/// told it lagged and resynchronises everything it shows.
const CHANGE_FEED_CAPACITY: usize = 4096;

/// Bodies the store refers to that are not in its blob directory.
fn missing_bodies_of(store: &Store) -> Result<std::collections::BTreeSet<BlobHash>, RaftStorageError> {
    Ok(store.referenced_blobs()?.into_iter().filter(|h| !store.blobs().contains(h)).collect())
}

impl RaftDb {
    fn sm_read<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, RaftStorageError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(SM_META).map_err(|e| self.db_err(e))?;
        let value = table.get(key).map_err(|e| self.db_err(e))?;
        value.map(|v| self.decode(&format!("state machine record `{key}`"), v.value())).transpose()
    }

    fn sm_write<T: Serialize>(&self, key: &str, value: &T) -> Result<(), RaftStorageError> {
        let bytes = self.encode(&format!("state machine record `{key}`"), value)?;
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(SM_META).map_err(|e| self.db_err(e))?;
            table.insert(key, bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        self.commit(txn)
    }

    /// Record the applied state of a batch and spool its entries, in one transaction.
    fn sm_write_applied(&self, record: &AppliedRecord, spooled: &[ArchivedEntry]) -> Result<(), RaftStorageError> {
        let bytes = self.encode("state machine record `applied`", record)?;
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(SM_META).map_err(|e| self.db_err(e))?;
            table.insert(KEY_APPLIED, bytes.as_slice()).map_err(|e| self.db_err(e))?;
        }
        self.spool_entries(&txn, spooled)?;
        self.commit(txn)
    }

    /// Record the applied state after an install and drop the install marker, at once.
    fn sm_settle_install(&self, record: &AppliedRecord) -> Result<(), RaftStorageError> {
        let bytes = self.encode("state machine record `applied`", record)?;
        let txn = self.begin_write()?;
        {
            let mut table = txn.open_table(SM_META).map_err(|e| self.db_err(e))?;
            table.insert(KEY_APPLIED, bytes.as_slice()).map_err(|e| self.db_err(e))?;
            table.remove(KEY_INSTALLING).map_err(|e| self.db_err(e))?;
        }
        self.commit(txn)
    }
}

impl Shared {
    fn read(&self) -> Result<RwLockReadGuard<'_, Inner>, RaftStorageError> {
        // A poisoned lock means an invariant broke mid-operation: stop, do not guess.
        self.inner.read().map_err(|_| self.stopped())
    }

    fn write(&self) -> Result<RwLockWriteGuard<'_, Inner>, RaftStorageError> {
        self.inner.write().map_err(|_| self.stopped())
    }

    fn snapshot_lock(&self) -> Result<MutexGuard<'_, Option<SiteSnapshotMeta>>, RaftStorageError> {
        self.current_snapshot.lock().map_err(|_| self.stopped())
    }

    fn stopped(&self) -> RaftStorageError {
        RaftStorageError::Stopped(self.data_dir.clone())
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RaftStorageError + '_ {
        move |source| RaftStorageError::Io { path: path.into(), source }
    }

    fn temp_path(&self, prefix: &str) -> PathBuf {
        let seq = self.next_file_seq.fetch_add(1, Ordering::Relaxed);
        self.data_dir.join(format!("{prefix}{seq}"))
    }

    fn applied_state(&self) -> Result<AppliedState, RaftStorageError> {
        Ok(self.read()?.applied.clone())
    }

    /// Apply committed entries in one transaction, or in several when `verify`
    /// marked an index inside them: the apply stops there to read the digests.
    fn apply_entries(&self, mut entries: Vec<Entry>) -> Result<Vec<EntryOutcome>, RaftStorageError> {
        let mut inner = self.write()?;
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else { return Ok(Vec::new()) };
        let (first, last) = (first.log_id.index, last.log_id.index);
        let stops: Vec<u64> = {
            let marks = self.digest_marks.lock().unwrap_or_else(|p| p.into_inner());
            marks.iter().filter(|(i, read)| read.is_none() && (first..=last).contains(*i)).map(|(i, _)| *i).collect()
        };
        let mut outcomes = Vec::with_capacity(entries.len());
        for stop in stops {
            let split = entries.iter().position(|e| e.log_id.index > stop).unwrap_or(entries.len());
            let rest = entries.split_off(split);
            outcomes.extend(self.apply_locked(&mut inner, std::mem::replace(&mut entries, rest))?);
            let store = inner.store.as_ref().ok_or_else(|| self.stopped())?;
            let digests = MailboxDigest::all(store)?;
            let mut marks = self.digest_marks.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(slot) = marks.get_mut(&stop) {
                *slot = Some(digests);
            }
        }
        outcomes.extend(self.apply_locked(&mut inner, entries)?);
        Ok(outcomes)
    }

    fn apply_locked(&self, inner: &mut Inner, entries: Vec<Entry>) -> Result<Vec<EntryOutcome>, RaftStorageError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let before = inner.applied.clone();
        let commands_before = inner.commands_applied;
        let mut after = before.clone();
        let mut commands = Vec::new();
        let mut is_command = Vec::with_capacity(entries.len());
        let applied_at_ms = now_ms();
        // A witness keeps no bodies and never archives: it spools nothing.
        let tracks_bodies = self.tracks_bodies.load(Ordering::SeqCst);
        let mut spooled = Vec::with_capacity(entries.len());
        for entry in entries {
            assert!(
                after.last_applied.is_none_or(|last| entry.log_id.index > last.index),
                "applying log entry {} after {:?}: entries are applied once, in log order",
                entry.log_id,
                after.last_applied
            );
            after.last_applied = Some(entry.log_id);
            if tracks_bodies {
                let command = match &entry.payload {
                    EntryPayload::Normal(command) => Some(command.clone()),
                    _ => None,
                };
                spooled.push(ArchivedEntry { index: entry.log_id.index, applied_at_ms, command });
            }
            match entry.payload {
                EntryPayload::Blank => is_command.push(false),
                EntryPayload::Normal(command) => {
                    is_command.push(true);
                    commands.push(command);
                }
                EntryPayload::Membership(membership) => {
                    after.last_membership = StoredMembership::new(Some(entry.log_id), membership);
                    is_command.push(false);
                }
            }
        }
        let commands_after = commands_before + commands.len() as u64;
        let record = AppliedRecord { before, commands_before, after: after.clone(), commands_after };

        let applied = (|| {
            let store = Arc::clone(inner.store.as_ref().ok_or_else(|| self.stopped())?);
            // The record is durable before the store changes: see the module docs.
            self.db.sm_write_applied(&record, &spooled)?;
            if commands.is_empty() {
                return Ok(Vec::new());
            }
            let outcomes = store.apply_batch(&commands)?;
            assert_eq!(outcomes.len(), commands.len(), "one outcome per command");
            let counted = store.commands_applied()?;
            assert_eq!(counted, commands_after, "only the state machine writes to the mail store");
            Ok(outcomes)
        })();
        let outcomes = match applied {
            Ok(outcomes) => outcomes,
            Err(e) => {
                // Whether the batch reached the disk is now unknown; the next open
                // finds out from the store's counter.
                tracing::error!(error = %e, "applying committed entries failed; the state machine stops");
                inner.store = None;
                return Err(e);
            }
        };
        inner.applied = after;
        inner.commands_applied = commands_after;
        if let Some(store) = inner.store.as_ref() {
            self.note_effects(store, &commands, &outcomes);
        }

        let mut outcomes = outcomes.into_iter();
        Ok(is_command
            .into_iter()
            .map(|command| match command {
                true => EntryOutcome::Command(outcomes.next().expect("one outcome per command")),
                false => EntryOutcome::NoCommand,
            })
            .collect())
    }

    /// Tell watchers which mailboxes changed, and list bodies that arrived in
    /// metadata before their files did.
    fn note_effects(
        &self,
        store: &Store,
        commands: &[Command],
        outcomes: &[Result<Applied, maildr_store::CommandError>],
    ) {
        let mut missing = Vec::new();
        for (command, outcome) in commands.iter().zip(outcomes) {
            let Ok(applied) = outcome else { continue };
            for mailbox in applied.touched_mailboxes() {
                // No watchers is fine: nobody needs telling.
                let _ = self.changes.send(mailbox);
            }
            if let Some(hash) = command.new_body().filter(|h| !store.blobs().contains(h)) {
                missing.push(hash);
            }
        }
        if !missing.is_empty() && self.tracks_bodies.load(Ordering::SeqCst) {
            self.missing_bodies.lock().unwrap_or_else(|p| p.into_inner()).extend(missing);
            self.missing_bodies_added.notify_one();
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, SiteNode>), StorageError<NodeId>> {
        let shared = Arc::clone(&self.shared);
        let state = blocking(ErrorSubject::StateMachine, ErrorVerb::Read, move || shared.applied_state()).await?;
        Ok((state.last_applied, state.last_membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<EntryOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(delay) = self.shared.apply_delay.get().cloned() else {
            let shared = Arc::clone(&self.shared);
            return blocking(ErrorSubject::StateMachine, ErrorVerb::Write, move || shared.apply_entries(entries)).await;
        };
        // A lagged site: apply in log order, each entry once its delay has passed
        // and nothing holds the site, as many at once as are due.
        let seen_at = std::time::SystemTime::now();
        let (first, last) = match (entries.first(), entries.last()) {
            (Some(first), Some(last)) => (first.log_id.index, last.log_id.index),
            _ => return Ok(Vec::new()),
        };
        let db = Arc::clone(&self.shared.db);
        let arrivals = blocking(ErrorSubject::StateMachine, ErrorVerb::Read, move || db.arrivals(first, last)).await?;
        let release = |entry: &Entry| {
            delay.release_time(arrivals.get(&entry.log_id.index).map_or(seen_at, |ms| apply_delay::from_ms(*ms)))
        };
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut rest = entries.into_iter().peekable();
        while let Some(next) = rest.peek() {
            let applying = delay.wait_for(release(next)).await;
            let now = std::time::SystemTime::now();
            let mut due = Vec::new();
            while let Some(entry) = rest.next_if(|e| release(e) <= now) {
                due.push(entry);
            }
            assert!(!due.is_empty(), "wait_for returns once the next entry is due");
            let shared = Arc::clone(&self.shared);
            let applied =
                blocking(ErrorSubject::StateMachine, ErrorVerb::Write, move || shared.apply_entries(due)).await?;
            drop(applying);
            outcomes.extend(applied);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder { shared: Arc::clone(&self.shared) }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let shared = Arc::clone(&self.shared);
        let file = blocking(ErrorSubject::Snapshot(None), ErrorVerb::Write, move || shared.begin_receiving()).await?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SiteSnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        if let Some(hold) = self.shared.apply_delay.get().and_then(|d| d.current_hold()) {
            // The held state is what an operator is keeping to recover from; a
            // snapshot would replace it with the cluster's current (corrupted?) one.
            // Stopping Raft here is the lesser harm: the site keeps its state.
            let error = RaftStorageError::HeldAgainstSnapshot { by: hold.by, applied_index: hold.applied_index };
            tracing::error!(error = %error, "refusing a snapshot");
            return Err(error.into_raft(subject, ErrorVerb::Write));
        }
        let mut snapshot = *snapshot;
        // Let writes still buffered by tokio reach the file before it is read back.
        snapshot.flush().await.map_err(|e| StorageError::from_io_error(subject.clone(), ErrorVerb::Write, e))?;
        let source = snapshot.into_std().await;
        let shared = Arc::clone(&self.shared);
        let meta = meta.clone();
        blocking(subject, ErrorVerb::Write, move || shared.install_snapshot(meta, source)).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let shared = Arc::clone(&self.shared);
        let current =
            blocking(ErrorSubject::Snapshot(None), ErrorVerb::Read, move || shared.current_snapshot()).await?;
        Ok(current.map(|(meta, file)| Snapshot { meta, snapshot: Box::new(tokio::fs::File::from_std(file)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maildr_store::Command;
    use maildr_types::{Domain, UnixSeconds};

    fn state(index: u64) -> AppliedState {
        AppliedState { last_applied: Some(openraft::testing::log_id(1, 0, index)), ..AppliedState::default() }
    }

    fn add_domain(index: u64, domain: &str) -> Entry {
        Entry {
            log_id: openraft::testing::log_id(1, 0, index),
            payload: EntryPayload::Normal(Command::AddDomain {
                domain: Domain::parse(domain).unwrap(),
                at: UnixSeconds(0),
            }),
        }
    }

    fn hosts(state_machine: &StateMachineStore, domain: &str) -> bool {
        state_machine.with_store(|store| store.is_hosted(&Domain::parse(domain).unwrap()).unwrap()).unwrap()
    }

    fn add_account(index: u64, address: &str) -> Entry {
        let address = maildr_types::EmailAddress::parse(address).unwrap();
        Entry {
            log_id: openraft::testing::log_id(1, 0, index),
            payload: EntryPayload::Normal(Command::add_account(address, "x".into(), 0, UnixSeconds(0))),
        }
    }

    #[test]
    fn digests_marked_ahead_are_read_where_the_apply_passes_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (_log_store, state_machine) = super::super::open(dir.path()).unwrap();
        state_machine.shared.apply_entries(vec![add_domain(1, "example.test")]).unwrap();
        assert_eq!(state_machine.mark_digests(1).unwrap(), Some(Vec::new()), "at the applied index: read at once");
        assert_eq!(state_machine.mark_digests(3).unwrap(), None);
        assert_eq!(state_machine.marked_digests(3), None, "not reached yet");
        let batch =
            vec![add_account(2, "a@example.test"), add_account(3, "b@example.test"), add_account(4, "c@example.test")];
        state_machine.shared.apply_entries(batch).unwrap();
        let at_3 = state_machine.marked_digests(3).expect("read by the apply on its way past 3");
        let accounts: std::collections::BTreeSet<String> = at_3.iter().map(|d| d.account_address.clone()).collect();
        assert_eq!(accounts, ["a@example.test", "b@example.test"].map(String::from).into());
        assert_eq!(state_machine.marked_digests(3), None, "taken once");
        assert_eq!(state_machine.shared.applied_state().unwrap(), state(4), "the whole batch applied");
        assert!(state_machine.mark_digests(3).unwrap_err().contains("past 3"));
        for index in 10..10 + DIGEST_MARKS_MAX as u64 {
            assert_eq!(state_machine.mark_digests(index).unwrap(), None);
        }
        assert!(state_machine.mark_digests(99).unwrap_err().contains("pending"), "at most DIGEST_MARKS_MAX");
        state_machine.forget_digest_mark(10);
        assert_eq!(state_machine.mark_digests(99).unwrap(), None, "a forgotten mark frees its place");
    }

    #[test]
    fn a_batch_lost_in_a_crash_is_applied_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let before = {
            let (_log_store, state_machine) = super::super::open(dir.path()).unwrap();
            state_machine.shared.apply_entries(vec![add_domain(1, "one.test")]).unwrap();
            let before = state_machine.shared.applied_state().unwrap();
            // The record of the next batch committed, then the site died before the
            // store's transaction did.
            let record =
                AppliedRecord { before: before.clone(), commands_before: 1, after: state(2), commands_after: 2 };
            state_machine.shared.db.sm_write(KEY_APPLIED, &record).unwrap();
            before
        };
        let (_log_store, state_machine) = super::super::open(dir.path()).unwrap();
        assert_eq!(state_machine.shared.applied_state().unwrap(), before);
        state_machine.shared.apply_entries(vec![add_domain(2, "two.test")]).unwrap();
        assert!(hosts(&state_machine, "one.test") && hosts(&state_machine, "two.test"));
        assert_eq!(state_machine.with_store(|store| store.commands_applied().unwrap()).unwrap(), 2);
    }

    #[test]
    fn an_install_decided_before_a_crash_is_finished_on_open() {
        let source = tempfile::tempdir().unwrap();
        {
            let (_log_store, state_machine) = super::super::open(source.path()).unwrap();
            state_machine.shared.apply_entries(vec![add_domain(1, "one.test"), add_domain(2, "two.test")]).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        {
            let (_log_store, state_machine) = super::super::open(dir.path()).unwrap();
            state_machine.shared.db.sm_write(KEY_INSTALLING, &state(2)).unwrap();
        }
        std::fs::copy(source.path().join(DATABASE_FILE), dir.path().join(staged_store_file())).unwrap();

        let (_log_store, state_machine) = super::super::open(dir.path()).unwrap();
        assert_eq!(state_machine.shared.applied_state().unwrap(), state(2));
        assert!(hosts(&state_machine, "one.test") && hosts(&state_machine, "two.test"));
        assert!(!dir.path().join(staged_store_file()).exists());
        assert_eq!(state_machine.shared.db.sm_read::<AppliedState>(KEY_INSTALLING).unwrap(), None);
    }

    #[test]
    fn a_staged_database_without_a_decision_is_discarded_on_open() {
        let source = tempfile::tempdir().unwrap();
        {
            let (_log_store, state_machine) = super::super::open(source.path()).unwrap();
            state_machine.shared.apply_entries(vec![add_domain(1, "one.test")]).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        drop(super::super::open(dir.path()).unwrap());
        std::fs::copy(source.path().join(DATABASE_FILE), dir.path().join(staged_store_file())).unwrap();

        let (_log_store, state_machine) = super::super::open(dir.path()).unwrap();
        assert_eq!(state_machine.shared.applied_state().unwrap(), AppliedState::default());
        assert!(!hosts(&state_machine, "one.test"));
        assert!(!dir.path().join(staged_store_file()).exists());
    }

    #[test]
    fn a_batch_whose_commands_reached_the_store_resolves_to_the_state_after_it() {
        let record = AppliedRecord { before: state(1), commands_before: 5, after: state(3), commands_after: 7 };
        assert_eq!(record.resolve(7), Some(state(3)));
    }

    #[test]
    fn a_batch_lost_in_a_crash_resolves_to_the_state_before_it() {
        let record = AppliedRecord { before: state(1), commands_before: 5, after: state(3), commands_after: 7 };
        assert_eq!(record.resolve(5), Some(state(1)));
    }

    #[test]
    fn a_store_counter_matching_neither_side_is_out_of_step() {
        let record = AppliedRecord { before: state(1), commands_before: 5, after: state(3), commands_after: 7 };
        assert_eq!(record.clone().resolve(6), None);
        assert_eq!(record.resolve(8), None);
    }

    #[test]
    fn a_batch_without_commands_resolves_to_the_state_after_it() {
        let record = AppliedRecord { before: state(1), commands_before: 5, after: state(2), commands_after: 5 };
        assert_eq!(record.resolve(5), Some(state(2)));
    }
}
