//! Durable storage for openraft 0.9: the replicated log and the state machine of a site.
//!
//! Replication turns the single writer of [`crate::Cluster`] into a Raft quorum commit.
//! openraft drives the protocol; this module is what it stores through, with the
//! `storage-v2` traits:
//!
//! - [`LogStore`] keeps the Raft log, the vote, the committed log id and the last
//!   purged log id in its own redb database, [`LOG_DATABASE_FILE`] in the site's data
//!   directory (not the mail store's file). Every write is one redb transaction
//!   committed with the default durability (fsync on commit); `append` reports the
//!   entries flushed to openraft only after that commit has returned.
//! - [`StateMachineStore`] applies committed entries to the mail store
//!   ([`maildr_store::Store`]) through `Store::apply_batch`, the same deterministic
//!   path the single-site writer uses, and keeps the last applied log id and the
//!   last membership durable in the log database. Snapshots are a header plus a copy
//!   of the mail store's database file; see [`state_machine`] for how they are made
//!   and installed, and for their limits.
//!
//! Disk I/O runs on tokio's blocking pool, so an fsync never stalls the Raft core
//! task. Storage failures become openraft [`StorageError`]s that name the file and
//! the key or index involved; openraft stops the node on any of them, which is the
//! only safe reaction to a disk that no longer does what it is told.
//!
//! This module must never decide what a command means (that is the store's job) and
//! never acknowledge a write before it is on disk.

pub mod apply_delay;
mod log_store;
pub(crate) mod network;
mod snapshot_file;
pub mod state_machine;
pub(crate) mod transport;
pub(crate) mod wire;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maildr_store::{Applied, Command, CommandError, StoreError};
use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};

pub use log_store::{LogStore, SingleVoterLog};
pub use state_machine::{SnapshotBuilder, StateMachineStore};

/// Raft node id of a site.
pub type NodeId = u64;

/// File name of the Raft log database inside a site's data directory.
pub const LOG_DATABASE_FILE: &str = "raft-log.redb";

/// What the cluster knows about a member site: its name and where its Raft RPCs go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteNode {
    /// The site's name (`SiteId` in the configuration).
    pub site: String,
    /// Address (`host:port`) of the site's inter-site Raft endpoint.
    pub addr: String,
}

impl fmt::Display for SiteNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.site, self.addr)
    }
}

/// What applying one log entry gave, handed back to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryOutcome {
    /// A blank or membership entry: Raft bookkeeping, nothing reached the mail store.
    NoCommand,
    /// The outcome of the entry's command, exactly as `Store::apply_batch` gave it.
    /// A refusal is deterministic: every replica refuses alike.
    Command(Result<Applied, CommandError>),
}

openraft::declare_raft_types!(
    /// openraft type configuration of maildr: log entries carry mail store commands.
    pub TypeConfig:
        D = Command,
        R = EntryOutcome,
        NodeId = NodeId,
        Node = SiteNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A log entry of maildr's Raft log.
pub type Entry = openraft::Entry<TypeConfig>;

/// Open the Raft log store and the state machine of the site whose data directory is
/// `data_dir`, creating them if the directory is new. The mail store in the same
/// directory becomes the state machine; see [`StateMachineStore::open`] for the
/// recovery done here after a crash.
pub fn open(data_dir: &Path) -> Result<(LogStore, StateMachineStore), RaftStorageError> {
    std::fs::create_dir_all(data_dir).map_err(|source| RaftStorageError::Io { path: data_dir.into(), source })?;
    let db = Arc::new(RaftDb::open(&data_dir.join(LOG_DATABASE_FILE))?);
    let state_machine = StateMachineStore::open(data_dir, Arc::clone(&db))?;
    Ok((LogStore::new(db), state_machine))
}

/// Failures of Raft storage, each naming the file and what was being read or written.
#[derive(Debug, thiserror::Error)]
pub enum RaftStorageError {
    #[error("raft database {path}: {source}")]
    Database { path: PathBuf, source: redb::Error },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("mail store: {0}")]
    Store(#[from] StoreError),
    #[error("{path}: corrupt {what}: {detail}")]
    Corrupt { path: PathBuf, what: String, detail: String },
    #[error("{path}: cannot encode {what}: {detail}")]
    Encode { path: PathBuf, what: String, detail: String },
    #[error(
        "mail store in {data_dir} has {commands_applied} commands applied but the raft log database says \
         {expected}; the two are out of step (was the store written outside Raft, or restored from a backup?)"
    )]
    OutOfStep { data_dir: PathBuf, commands_applied: u64, expected: String },
    #[error("state machine in {0} stopped after an earlier storage failure; restart the site to recover")]
    Stopped(PathBuf),
    #[error(
        "this lagged site is held (by {by}, at applied index {applied_index:?}): it refuses a snapshot that would \
         replace the held state; promote it or release it"
    )]
    HeldAgainstSnapshot { by: String, applied_index: Option<u64> },
    #[error("snapshot {snapshot_id} does not match its metadata: {detail}")]
    SnapshotMismatch { snapshot_id: String, detail: String },
}

impl RaftStorageError {
    /// The openraft error for this failure, saying what openraft was doing.
    pub fn into_raft(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError<NodeId> {
        StorageError::IO { source: StorageIOError::new(subject, verb, AnyError::new(&self)) }
    }
}

impl From<RaftStorageError> for StorageError<NodeId> {
    fn from(e: RaftStorageError) -> Self {
        e.into_raft(ErrorSubject::Store, ErrorVerb::Write)
    }
}

/// The Raft log database (`raft-log.redb`): log entries, the log's own state, and the
/// state machine's applied state. Shared by the log store and the state machine so
/// that one redb file lock and one fsync path cover both.
pub(crate) struct RaftDb {
    db: redb::Database,
    path: PathBuf,
    /// Whether appends record each entry's arrival time (a lagged site; see
    /// [`apply_delay`]).
    stamps_arrivals: std::sync::atomic::AtomicBool,
    /// The encoded sizes of the newest entries appended (for peers' lag in bytes).
    entry_sizes: std::sync::Mutex<crate::status::EntrySizes>,
}

impl RaftDb {
    fn open(path: &Path) -> Result<RaftDb, RaftStorageError> {
        let db = redb::Database::create(path)
            .map_err(|e| RaftStorageError::Database { path: path.into(), source: e.into() })?;
        let raft_db =
            RaftDb { db, path: path.into(), stamps_arrivals: Default::default(), entry_sizes: Default::default() };
        // Create every table so read transactions never meet a missing one.
        let txn = raft_db.begin_write()?;
        txn.open_table(log_store::LOG).map_err(|e| raft_db.db_err(e))?;
        txn.open_table(log_store::LOG_META).map_err(|e| raft_db.db_err(e))?;
        txn.open_table(log_store::ARRIVALS).map_err(|e| raft_db.db_err(e))?;
        txn.open_table(state_machine::SM_META).map_err(|e| raft_db.db_err(e))?;
        txn.open_table(state_machine::archive_spool::ARCHIVE_SPOOL).map_err(|e| raft_db.db_err(e))?;
        raft_db.commit(txn)?;
        Ok(raft_db)
    }

    fn db_err(&self, e: impl Into<redb::Error>) -> RaftStorageError {
        RaftStorageError::Database { path: self.path.clone(), source: e.into() }
    }

    fn corrupt(&self, what: impl Into<String>, detail: impl fmt::Display) -> RaftStorageError {
        RaftStorageError::Corrupt { path: self.path.clone(), what: what.into(), detail: detail.to_string() }
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, RaftStorageError> {
        self.db.begin_write().map_err(|e| self.db_err(e))
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, RaftStorageError> {
        use redb::ReadableDatabase;
        self.db.begin_read().map_err(|e| self.db_err(e))
    }

    /// Commit with redb's default durability: when this returns `Ok` the data is fsynced.
    fn commit(&self, txn: redb::WriteTransaction) -> Result<(), RaftStorageError> {
        txn.commit().map_err(|e| self.db_err(e))
    }

    fn encode<T: Serialize>(&self, what: &str, value: &T) -> Result<Vec<u8>, RaftStorageError> {
        postcard::to_stdvec(value).map_err(|e| RaftStorageError::Encode {
            path: self.path.clone(),
            what: what.into(),
            detail: e.to_string(),
        })
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, what: &str, bytes: &[u8]) -> Result<T, RaftStorageError> {
        postcard::from_bytes(bytes).map_err(|e| self.corrupt(what, e))
    }
}

/// Run blocking storage work off the async runtime's worker threads. A panic in the
/// work (a broken invariant) is resumed here so that it surfaces instead of turning
/// into a storage error.
async fn blocking<T, F>(subject: ErrorSubject<NodeId>, verb: ErrorVerb, work: F) -> Result<T, StorageError<NodeId>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, RaftStorageError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result.map_err(|e| e.into_raft(subject, verb)),
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(StorageError::IO { source: StorageIOError::new(subject, verb, AnyError::new(&join)) }),
    }
}

/// fsync a directory so that a rename or a new file inside it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), RaftStorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| RaftStorageError::Io { path: dir.into(), source })
}
