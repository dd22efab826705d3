//! The write path of a site: where a command becomes durable and acknowledged.
//!
//! Protocol crates (SMTP, IMAP, the admin commands) hand every change of mail state
//! to [`Cluster::write`] and read through [`Cluster::store`]; they never write to the
//! store themselves. A cluster is either
//! - one site alone ([`Cluster::single_site`]): a dedicated writer thread drains queued
//!   commands and commits them together in one fsynced transaction (group commit), or
//! - a member of a Raft group ([`Cluster::replicated`], see [`replicated`]): a write is
//!   acknowledged once a quorum of sites has it, and message bodies are on two sites
//!   before the entry that refers to them is proposed.
//!
//! The contract is the same for both: `Ok` means durable, [`WriteError::Unavailable`]
//! means "try again later, nothing was acknowledged".
//!
//! This crate must never interpret protocol input; it takes typed commands only.

pub mod certs;
/// Entry points for `fuzz/` and the corpus tests; never used by the server.
pub mod fuzzing;
pub mod ops;
pub mod raft;
mod record_file;
pub mod replicated;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use maildr_store::{Applied, Command, CommandError, Store, StoreError};
use maildr_types::{BlobHash, BlobRef, MailboxId};
pub use replicated::{FreshStart, Replicated};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use maildr_store;

/// Limits of the write path.
#[derive(Debug, Clone)]
pub struct WritePathLimits {
    /// Most commands committed together in one transaction.
    pub batch_commands_max: usize,
    /// Most commands waiting for the writer; beyond it writers wait for room.
    pub queue_commands_max: usize,
    /// How long a client waits for its write before being told to retry.
    pub write_timeout_ms: u64,
}

impl Default for WritePathLimits {
    fn default() -> Self {
        WritePathLimits { batch_commands_max: 256, queue_commands_max: 4096, write_timeout_ms: 10_000 }
    }
}

/// Why a write was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The command is well-formed but the state refuses it; retrying will not help.
    #[error(transparent)]
    Refused(#[from] CommandError),
    /// Nothing was acknowledged; the client should retry later (SMTP 451, IMAP NO
    /// \[UNAVAILABLE\]). The command may or may not take effect later.
    #[error("write path unavailable: {0}")]
    Unavailable(String),
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<Applied, WriteError>>,
}

/// Handle on a site's write path and its readable state. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    engine: Engine,
}

#[derive(Clone)]
enum Engine {
    Single(Arc<SingleSite>),
    Replicated(Arc<Replicated>),
}

struct SingleSite {
    store: Arc<Store>,
    queue: mpsc::Sender<Pending>,
    limits: WritePathLimits,
    changes: broadcast::Sender<MailboxId>,
}

/// How long a reader waits for a body that this site has not received yet.
const BODY_WAIT: Duration = Duration::from_secs(5);

/// Most change notices buffered per watcher; a watcher that falls further behind
/// is told it lagged and must resynchronise everything it shows.
const CHANGE_FEED_CAPACITY: usize = 4096;

impl Cluster {
    /// Start the write path of a single site over `store`. The writer thread stops
    /// when the last handle is dropped.
    pub fn single_site(store: Store, limits: WritePathLimits) -> Cluster {
        assert!(limits.batch_commands_max > 0 && limits.queue_commands_max > 0);
        let store = Arc::new(store);
        let (queue, rx) = mpsc::channel(limits.queue_commands_max);
        let writer_store = Arc::clone(&store);
        let batch_max = limits.batch_commands_max;
        let (changes, _) = broadcast::channel(CHANGE_FEED_CAPACITY);
        let feed = changes.clone();
        std::thread::Builder::new()
            .name("maildr-writer".into())
            .spawn(move || writer_loop(writer_store, rx, batch_max, feed))
            .expect("spawning the writer thread");
        Cluster { engine: Engine::Single(Arc::new(SingleSite { store, queue, limits, changes })) }
    }

    /// The write path of a site that is a member of a Raft group.
    pub fn replicated(site: Arc<Replicated>) -> Cluster {
        Cluster { engine: Engine::Replicated(site) }
    }

    /// The replicated site, when this is one.
    pub fn replication(&self) -> Option<&Arc<Replicated>> {
        match &self.engine {
            Engine::Single(_) => None,
            Engine::Replicated(r) => Some(r),
        }
    }

    /// Notices of mailboxes whose state changed, sent after each commit. IMAP
    /// sessions use them to push EXISTS/EXPUNGE/FETCH to idle clients.
    pub fn watch_mailboxes(&self) -> broadcast::Receiver<MailboxId> {
        match &self.engine {
            Engine::Single(s) => s.changes.subscribe(),
            Engine::Replicated(r) => r.watch_mailboxes(),
        }
    }

    /// Read access to the site's state. Reads see every write acknowledged to a
    /// client of this site before.
    pub fn store(&self) -> Arc<Store> {
        match &self.engine {
            Engine::Single(s) => Arc::clone(&s.store),
            Engine::Replicated(r) => r.store(),
        }
    }

    /// Whether this site's state is known to be current: always for a site alone;
    /// for a replica, when it is a member that knows a primary and has applied every
    /// entry it holds. A site that is not current must not give permanent answers
    /// ("no such user") from its state.
    pub fn is_caught_up(&self) -> bool {
        match &self.engine {
            Engine::Single(_) => true,
            Engine::Replicated(r) => r.is_caught_up(),
        }
    }

    /// Make sure the message bodies are on this site before they are read: a
    /// replica may hold a message whose body is still on its way. Waits a bounded
    /// time, then says the body is unavailable (never serves an empty one).
    pub async fn ensure_bodies(&self, hashes: &[BlobHash]) -> Result<(), WriteError> {
        match &self.engine {
            Engine::Single(_) => Ok(()),
            Engine::Replicated(r) => r.ensure_bodies(hashes, BODY_WAIT).await,
        }
    }

    /// Apply a command durably; returns once it is committed (fsynced; on a
    /// replicated site, by a quorum).
    pub async fn write(&self, command: Command) -> Result<Applied, WriteError> {
        match &self.engine {
            Engine::Single(s) => s.write(command).await,
            Engine::Replicated(r) => r.write(command).await,
        }
    }

    /// Commit `command` only if this site is still the primary of `term` (see
    /// [`Replicated::write_as_primary`]); a single site is always its own primary.
    pub async fn write_as_primary(&self, command: Command, term: u64) -> Result<Applied, WriteError> {
        match &self.engine {
            Engine::Single(s) => s.write(command).await,
            Engine::Replicated(r) => r.write_as_primary(command, term).await,
        }
    }

    /// Store a message body durably (file and directory fsynced; on a replicated
    /// site, on at least one other site too) before the command that refers to it is
    /// acknowledged: on a replicated primary, a small body's copies are still being
    /// written when this returns, and [`Cluster::write`] of the command waits for
    /// them beside its commit.
    pub async fn put_body(&self, body: Vec<u8>) -> Result<BlobRef, WriteError> {
        match &self.engine {
            Engine::Single(s) => s.put_body(body).await,
            Engine::Replicated(r) => r.put_body(body).await,
        }
    }
}

impl SingleSite {
    async fn write(&self, command: Command) -> Result<Applied, WriteError> {
        let (reply, answer) = oneshot::channel();
        let kind = command.kind();
        let timeout = Duration::from_millis(self.limits.write_timeout_ms);
        let work = async {
            self.queue
                .send(Pending { command, reply })
                .await
                .map_err(|_| WriteError::Unavailable("writer stopped".into()))?;
            answer.await.map_err(|_| WriteError::Unavailable("writer stopped before answering".into()))?
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!(kind, timeout_ms = self.limits.write_timeout_ms, "write timed out");
                Err(WriteError::Unavailable(format!("{kind} not committed within {} ms", self.limits.write_timeout_ms)))
            }
        }
    }

    async fn put_body(&self, body: Vec<u8>) -> Result<BlobRef, WriteError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || store.blobs().put(&body))
            .await
            .map_err(|e| WriteError::Unavailable(format!("body writer failed: {e}")))?
            .map_err(|e: StoreError| {
                tracing::error!(error = %e, "storing a message body failed");
                WriteError::Unavailable(format!("storing the message body failed: {e}"))
            })
    }
}

fn writer_loop(
    store: Arc<Store>,
    mut rx: mpsc::Receiver<Pending>,
    batch_max: usize,
    feed: broadcast::Sender<MailboxId>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(batch_max);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        // Commands whose client already gave up still commit: the client was told
        // to retry, and a retried delivery is a duplicate, never a loss.
        let commands: Vec<Command> = batch.iter().map(|p| p.command.clone()).collect();
        match store.apply_batch(&commands) {
            Ok(outcomes) => {
                assert_eq!(outcomes.len(), batch.len(), "one outcome per command");
                for (pending, outcome) in batch.drain(..).zip(outcomes) {
                    if let Ok(applied) = &outcome {
                        for mailbox in applied.touched_mailboxes() {
                            // No watchers is fine: nobody needs telling.
                            let _ = feed.send(mailbox);
                        }
                    }
                    let _ = pending.reply.send(outcome.map_err(WriteError::Refused));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, commands = batch.len(), "commit failed; nothing in this batch was applied");
                for pending in batch.drain(..) {
                    let _ = pending.reply.send(Err(WriteError::Unavailable(format!("commit failed: {e}"))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maildr_types::{Domain, EmailAddress, SystemFlags, UidValidity, UnixSeconds};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_are_all_committed_with_distinct_uids() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::single_site(Store::open(dir.path()).unwrap(), WritePathLimits::default());
        cluster
            .write(Command::AddDomain { domain: Domain::parse("example.test").unwrap(), at: UnixSeconds(0) })
            .await
            .unwrap();
        let alice = EmailAddress::parse("alice@example.test").unwrap();
        cluster
            .write(Command::AddAccount {
                address: alice.clone(),
                password_hash: "h".into(),
                quota_bytes: 0,
                uid_validity: UidValidity(1),
                at: UnixSeconds(0),
            })
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..64 {
            let c = cluster.clone();
            let to = alice.clone();
            tasks.push(tokio::spawn(async move {
                let body = c.put_body(format!("body {i}").into_bytes()).await.unwrap();
                c.write(Command::Deliver {
                    recipients: vec![to],
                    body,
                    internal_date: UnixSeconds(0),
                    flags: SystemFlags::default(),
                    retry_key: None,
                })
                .await
                .unwrap()
            }));
        }
        let mut uids = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Applied::Delivered { placements } => uids.push(placements[0].uid.0),
                other => panic!("unexpected {other:?}"),
            }
        }
        uids.sort();
        assert_eq!(uids, (1..=64).collect::<Vec<_>>());
        assert!(cluster.store().check().unwrap().problems.is_empty());
    }

    #[tokio::test]
    async fn a_refused_command_is_reported_as_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = Cluster::single_site(Store::open(dir.path()).unwrap(), WritePathLimits::default());
        let err =
            cluster.write(Command::RemoveDomain { domain: Domain::parse("nowhere.test").unwrap() }).await.unwrap_err();
        assert!(matches!(err, WriteError::Refused(CommandError::DomainUnknown(_))));
    }
}
