//! The durable mail state of one site.
//!
//! Metadata (domains, accounts, aliases, mailboxes, messages) lives in one redb
//! database; message bodies live in the content-addressed [`BlobStore`]. State
//! changes only through [`Command`]s applied by [`Store::apply_batch`], each a pure
//! function of (state, command), so the same commands in the same order give the
//! same state on every replica. A batch commits in one redb transaction (one fsync),
//! which is how concurrent deliveries share the cost of durability.
//!
//! This crate must never talk to the network, read a clock or draw random numbers
//! while applying a command.

mod apply;
pub mod blob;
pub mod command;
pub mod model;

use std::path::{Path, PathBuf};

use maildr_types::{AccountId, BlobHash, Domain, EmailAddress, MailboxId, MailboxName, ModSeq, Uid};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

pub use blob::{delivery_retry_key, hash_body, BlobStore};
pub use command::{Applied, Command, CommandError, ControlEventKind, FlagOp, Placement};
pub use model::{
    Account, Alias, ControlEvent, DkimAlgorithm, DkimKey, DomainRecord, ExpungeLog, Mailbox, MailboxDigest, Message,
    QueueTotals, QueuedMessage, QueuedRecipient, Steering,
};

pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const DOMAINS: TableDefinition<&str, &[u8]> = TableDefinition::new("domains");
pub(crate) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
pub(crate) const ALIASES: TableDefinition<&str, &[u8]> = TableDefinition::new("aliases");
/// account id → account address.
pub(crate) const ACCOUNT_IDS: TableDefinition<u64, &str> = TableDefinition::new("account_ids");
pub(crate) const MAILBOXES: TableDefinition<u64, &[u8]> = TableDefinition::new("mailboxes");
/// (account id, mailbox name) → mailbox id.
pub(crate) const MAILBOX_NAMES: TableDefinition<(u64, &str), u64> = TableDefinition::new("mailbox_names");
/// (mailbox id, uid) → message.
pub(crate) const MESSAGES: TableDefinition<(u64, u32), &[u8]> = TableDefinition::new("messages");
/// (mailbox id, MODSEQ, uid) → nothing: every message by its current MODSEQ, so a
/// session that saw a mailbox up to some MODSEQ reads only what changed since
/// ([`Store::mailbox_changes`]) instead of the whole mailbox at every change.
/// Written by `apply` beside [`MESSAGES`]; built from it once when a store made
/// before the index opens ([`META_MODSEQ_INDEX_BUILT`]).
pub(crate) const MESSAGES_BY_MODSEQ: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("messages_by_modseq");
pub(crate) const META_MODSEQ_INDEX_BUILT: &str = "messages_by_modseq_built";
/// body hash → number of messages referring to it.
pub(crate) const BLOB_REFS: TableDefinition<&[u8], u64> = TableDefinition::new("blob_refs");
/// (INBOX mailbox id, Message-ID) → UID of the copy delivered there: makes an SMTP
/// retry of a delivery whose outcome the sender never learnt (451 after a timeout or
/// a failover) land once. Rows of removed mailboxes and expunged messages are
/// ignored when read and replaced on the next delivery; a sweep is future work.
pub(crate) const DELIVERED_IDS: TableDefinition<(u64, &str), u32> = TableDefinition::new("delivered_ids");

/// queue id → queued message (the replicated outbound queue).
pub(crate) const OUTBOUND: TableDefinition<u64, &[u8]> = TableDefinition::new("outbound_queue");
/// retry key → queue id: a retried submission is queued once.
pub(crate) const OUTBOUND_KEYS: TableDefinition<&str, u64> = TableDefinition::new("outbound_keys");
pub(crate) const META_NEXT_QUEUE_ID: &str = "next_queue_id";

/// (mailbox id, MODSEQ of the expunge, UID) → nothing: the UIDs expunged from each
/// mailbox and the MODSEQ their expunge took, which QRESYNC (RFC 7162) answers
/// VANISHED from. Written by `apply` like the messages, so identical on every
/// site; at most [`EXPUNGED_KEPT_PER_MAILBOX_MAX`] rows per mailbox, oldest pruned.
pub(crate) const EXPUNGED: TableDefinition<(u64, u64, u32), ()> = TableDefinition::new("expunged_uids");
/// mailbox id → its [`ExpungeLog`] (what the rows of [`EXPUNGED`] cover).
pub(crate) const EXPUNGE_LOGS: TableDefinition<u64, &[u8]> = TableDefinition::new("expunge_logs");
/// Expunged UIDs remembered per mailbox. Beyond it the oldest are pruned and a
/// client whose MODSEQ is older than what is kept is answered from what is
/// missing instead (every UID it may hold that is not in the mailbox).
pub const EXPUNGED_KEPT_PER_MAILBOX_MAX: u64 = 10_000;
/// domain → its DKIM key.
pub(crate) const DKIM_KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("dkim_keys");

/// Control-plane records by name (`steering`).
pub(crate) const CONTROL: TableDefinition<&str, &[u8]> = TableDefinition::new("control");
/// event id → control-plane event (the newest [`EVENTS_KEPT_MAX`] are kept).
pub(crate) const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("control_events");
pub(crate) const CONTROL_STEERING: &str = "steering";
pub(crate) const META_NEXT_EVENT_ID: &str = "next_event_id";
/// Control-plane events kept; older ones are dropped as new ones arrive.
pub const EVENTS_KEPT_MAX: u64 = 10_000;

/// How messages and recipients left the outbound queue ([`QueueTotals`]).
pub(crate) const META_QUEUE_RECIPIENTS_DELIVERED: &str = "queue_recipients_delivered";
pub(crate) const META_QUEUE_RECIPIENTS_BOUNCED: &str = "queue_recipients_bounced";
pub(crate) const META_QUEUE_MESSAGES_FINISHED: &str = "queue_messages_finished";
pub(crate) const META_QUEUE_MESSAGES_DELETED: &str = "queue_messages_deleted";
pub(crate) const META_SCHEMA_VERSION: &str = "schema_version";
pub(crate) const META_NEXT_ACCOUNT_ID: &str = "next_account_id";
pub(crate) const META_NEXT_MAILBOX_ID: &str = "next_mailbox_id";
pub(crate) const META_COMMANDS_APPLIED: &str = "commands_applied";
pub(crate) const META_LAST_UID_VALIDITY: &str = "last_uid_validity";
const SCHEMA_VERSION: u64 = 1;

/// A mailbox's [`ExpungeLog`] with its rows, (MODSEQ, UID) in that order.
pub type ExpungeRecord = (ExpungeLog, Vec<(ModSeq, Uid)>);

/// File name of the metadata database inside a data directory.
pub const DATABASE_FILE: &str = "maildr.redb";
/// Directory name of the blob store inside a data directory.
pub const BLOB_DIR: &str = "blobs";

/// Failures of the storage itself (disk, database, corruption), as opposed to
/// [`CommandError`], which is a refusal of a well-formed command.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("database {path}: {source}")]
    Database { path: PathBuf, source: redb::Error },
    #[error("data directory {0} is in use by another process (is `maildr serve` running on it?)")]
    InUse(PathBuf),
    #[error("corrupt store: {0}")]
    Corrupt(String),
    /// Opening a data directory failed for a reason other than [`StoreError::InUse`].
    #[error("opening the store in {data_dir}: {reason}")]
    Open { data_dir: PathBuf, reason: Box<StoreError> },
}

/// The state of one site: metadata database plus blob store.
pub struct Store {
    db: Database,
    db_path: PathBuf,
    blobs: BlobStore,
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("in-memory serialisation of plain records cannot fail")
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// How a recipient address resolves on this site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    /// The address (an account or an alias) delivers to these accounts.
    Local(Vec<EmailAddress>),
    /// The domain is hosted here but no account or alias has this address.
    UnknownUser,
    /// The domain is not hosted here.
    NotHosted,
}

/// What changed in a mailbox after some MODSEQ ([`Store::mailbox_changes`]).
#[derive(Debug, Clone)]
pub struct MailboxChanges {
    /// The mailbox as it is now (its `highest_modseq` is what the changes reach).
    pub mailbox: Mailbox,
    /// Messages added or changed after the MODSEQ asked about, in UID order.
    pub changed: Vec<Message>,
    /// UIDs expunged after it, ascending; `None` when the record of expunges
    /// does not reach back that far.
    pub expunged: Option<Vec<Uid>>,
}

/// Result of [`Store::check`].
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CheckReport {
    pub mailboxes: u64,
    pub messages: u64,
    pub problems: Vec<String>,
}

impl Store {
    /// Open the store in `data_dir`, creating it if empty. Every failure names the
    /// directory; one that is in use is [`StoreError::InUse`].
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_unnamed(data_dir).map_err(|e| match e {
            e @ StoreError::InUse(_) => e,
            e => StoreError::Open { data_dir: data_dir.into(), reason: Box::new(e) },
        })
    }

    fn open_unnamed(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io { path: data_dir.into(), source: e })?;
        let db_path = data_dir.join(DATABASE_FILE);
        let db = match Database::create(&db_path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::InUse(data_dir.into())),
            Err(e) => return Err(StoreError::Database { path: db_path, source: e.into() }),
        };
        let blobs = BlobStore::open(data_dir.join(BLOB_DIR))?;
        let store = Store { db, db_path, blobs };
        store.initialise()?;
        Ok(store)
    }

    pub(crate) fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Database { path: self.db_path.clone(), source: e.into() }
    }

    fn initialise(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
            let version = meta.get(META_SCHEMA_VERSION).map_err(|e| self.db_err(e))?.map(|v| v.value());
            match version {
                None => {
                    meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION).map_err(|e| self.db_err(e))?;
                    meta.insert(META_NEXT_ACCOUNT_ID, 1).map_err(|e| self.db_err(e))?;
                    meta.insert(META_NEXT_MAILBOX_ID, 1).map_err(|e| self.db_err(e))?;
                    meta.insert(META_COMMANDS_APPLIED, 0).map_err(|e| self.db_err(e))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(StoreError::Corrupt(format!(
                        "{} has schema version {other}; this maildr reads version {SCHEMA_VERSION}",
                        self.db_path.display()
                    )))
                }
            }
            // Counters added after schema version 1 was first written.
            for counter in [META_NEXT_EVENT_ID, META_NEXT_QUEUE_ID] {
                if meta.get(counter).map_err(|e| self.db_err(e))?.is_none() {
                    meta.insert(counter, 1).map_err(|e| self.db_err(e))?;
                }
            }
            // Create every table so read transactions never meet a missing one.
            txn.open_table(DOMAINS).map_err(|e| self.db_err(e))?;
            txn.open_table(ACCOUNTS).map_err(|e| self.db_err(e))?;
            txn.open_table(ALIASES).map_err(|e| self.db_err(e))?;
            txn.open_table(ACCOUNT_IDS).map_err(|e| self.db_err(e))?;
            txn.open_table(MAILBOXES).map_err(|e| self.db_err(e))?;
            txn.open_table(MAILBOX_NAMES).map_err(|e| self.db_err(e))?;
            txn.open_table(MESSAGES).map_err(|e| self.db_err(e))?;
            txn.open_table(MESSAGES_BY_MODSEQ).map_err(|e| self.db_err(e))?;
            txn.open_table(BLOB_REFS).map_err(|e| self.db_err(e))?;
            txn.open_table(DELIVERED_IDS).map_err(|e| self.db_err(e))?;
            txn.open_table(CONTROL).map_err(|e| self.db_err(e))?;
            txn.open_table(EVENTS).map_err(|e| self.db_err(e))?;
            txn.open_table(OUTBOUND).map_err(|e| self.db_err(e))?;
            txn.open_table(OUTBOUND_KEYS).map_err(|e| self.db_err(e))?;
            txn.open_table(DKIM_KEYS).map_err(|e| self.db_err(e))?;
            txn.open_table(EXPUNGED).map_err(|e| self.db_err(e))?;
            txn.open_table(EXPUNGE_LOGS).map_err(|e| self.db_err(e))?;
            if meta.get(META_MODSEQ_INDEX_BUILT).map_err(|e| self.db_err(e))?.is_none() {
                self.build_modseq_index(&txn)?;
                meta.insert(META_MODSEQ_INDEX_BUILT, 1).map_err(|e| self.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// Drop the MODSEQ index and its built mark, as a store made before it looks
    /// (the tests of the build on open).
    #[doc(hidden)]
    pub fn forget_modseq_index_for_test(&self) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        txn.delete_table(MESSAGES_BY_MODSEQ).map_err(|e| self.db_err(e))?;
        txn.open_table(MESSAGES_BY_MODSEQ).map_err(|e| self.db_err(e))?;
        txn.open_table(META)
            .map_err(|e| self.db_err(e))?
            .remove(META_MODSEQ_INDEX_BUILT)
            .map_err(|e| self.db_err(e))?;
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// Index every message by its MODSEQ ([`MESSAGES_BY_MODSEQ`]): once, for a
    /// store written before the index existed (or a snapshot of one installed).
    fn build_modseq_index(&self, txn: &redb::WriteTransaction) -> Result<(), StoreError> {
        let messages = txn.open_table(MESSAGES).map_err(|e| self.db_err(e))?;
        let mut index = txn.open_table(MESSAGES_BY_MODSEQ).map_err(|e| self.db_err(e))?;
        for row in messages.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let (mailbox, uid) = k.value();
            let message: Message = decode("message", v.value())?;
            index.insert((mailbox, message.modseq.0, uid), ()).map_err(|e| self.db_err(e))?;
        }
        Ok(())
    }

    /// Every message in the outbound queue, by queue id.
    pub fn queued(&self) -> Result<Vec<QueuedMessage>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(OUTBOUND).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            out.push(decode("queued message", v.value())?);
        }
        Ok(out)
    }

    /// A domain's DKIM key.
    pub fn dkim_key(&self, domain: &str) -> Result<Option<DkimKey>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(DKIM_KEYS).map_err(|e| self.db_err(e))?;
        let v = t.get(domain.to_ascii_lowercase().as_str()).map_err(|e| self.db_err(e))?;
        v.map(|v| decode("dkim key", v.value())).transpose()
    }

    /// Every domain's DKIM key, by domain.
    pub fn dkim_keys(&self) -> Result<Vec<(String, DkimKey)>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(DKIM_KEYS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            out.push((k.value().to_string(), decode("dkim key", v.value())?));
        }
        Ok(out)
    }

    /// How many messages the outbound queue holds.
    pub fn queued_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        let txn = self.read()?;
        let t = txn.open_table(OUTBOUND).map_err(|e| self.db_err(e))?;
        t.len().map_err(|e| self.db_err(e))
    }

    /// How messages and recipients have left the queue since the store began.
    pub fn queue_totals(&self) -> Result<QueueTotals, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
        let get = |key: &str| -> Result<u64, StoreError> {
            Ok(meta.get(key).map_err(|e| self.db_err(e))?.map(|v| v.value()).unwrap_or(0))
        };
        Ok(QueueTotals {
            recipients_delivered: get(META_QUEUE_RECIPIENTS_DELIVERED)?,
            recipients_bounced: get(META_QUEUE_RECIPIENTS_BOUNCED)?,
            messages_finished: get(META_QUEUE_MESSAGES_FINISHED)?,
            messages_deleted: get(META_QUEUE_MESSAGES_DELETED)?,
        })
    }

    /// One queued message.
    pub fn queued_message(&self, id: u64) -> Result<Option<QueuedMessage>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(OUTBOUND).map_err(|e| self.db_err(e))?;
        let v = t.get(id).map_err(|e| self.db_err(e))?;
        v.map(|v| decode("queued message", v.value())).transpose()
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Apply commands in order in one durable transaction. Each command's outcome is
    /// returned in order; a refused command changes nothing and does not affect the
    /// others. Returns only after the transaction is fsynced.
    pub fn apply_batch(&self, commands: &[Command]) -> Result<Vec<Result<Applied, CommandError>>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        let mut outcomes = Vec::with_capacity(commands.len());
        {
            let mut tables = apply::Tables::open(&txn).map_err(|e| self.db_err(e))?;
            for command in commands {
                outcomes.push(tables.apply(command)?);
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        Ok(outcomes)
    }

    /// Apply one command durably.
    pub fn apply(&self, command: Command) -> Result<Result<Applied, CommandError>, StoreError> {
        Ok(self.apply_batch(std::slice::from_ref(&command))?.pop().expect("one outcome per command"))
    }

    fn read(&self) -> Result<redb::ReadTransaction, StoreError> {
        self.db.begin_read().map_err(|e| self.db_err(e))
    }

    /// Number of commands applied since the store was created (accepted or refused).
    pub fn commands_applied(&self) -> Result<u64, StoreError> {
        let txn = self.read()?;
        let meta = txn.open_table(META).map_err(|e| self.db_err(e))?;
        Ok(meta.get(META_COMMANDS_APPLIED).map_err(|e| self.db_err(e))?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn domains(&self) -> Result<Vec<DomainRecord>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(DOMAINS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            out.push(decode("domain", v.value())?);
        }
        Ok(out)
    }

    pub fn is_hosted(&self, domain: &Domain) -> Result<bool, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(DOMAINS).map_err(|e| self.db_err(e))?;
        Ok(t.get(domain.as_str()).map_err(|e| self.db_err(e))?.is_some())
    }

    pub fn account(&self, address: &EmailAddress) -> Result<Option<Account>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(ACCOUNTS).map_err(|e| self.db_err(e))?;
        let v = t.get(address.as_str()).map_err(|e| self.db_err(e))?;
        v.map(|v| decode("account", v.value())).transpose()
    }

    /// Accounts, optionally only those of one domain, ordered by address.
    pub fn accounts(&self, domain: Option<&Domain>) -> Result<Vec<Account>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(ACCOUNTS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            let account: Account = decode("account", v.value())?;
            if domain.is_none_or(|d| account.address.domain_str() == d.as_str()) {
                out.push(account);
            }
        }
        Ok(out)
    }

    pub fn aliases(&self, domain: Option<&Domain>) -> Result<Vec<Alias>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(ALIASES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            let alias: Alias = decode("alias", v.value())?;
            if domain.is_none_or(|d| alias.address.domain_str() == d.as_str()) {
                out.push(alias);
            }
        }
        Ok(out)
    }

    /// Resolve a recipient address to the local accounts it delivers to.
    pub fn resolve_recipient(&self, address: &EmailAddress) -> Result<Recipient, StoreError> {
        let txn = self.read()?;
        let domains = txn.open_table(DOMAINS).map_err(|e| self.db_err(e))?;
        if domains.get(address.domain_str()).map_err(|e| self.db_err(e))?.is_none() {
            return Ok(Recipient::NotHosted);
        }
        let accounts = txn.open_table(ACCOUNTS).map_err(|e| self.db_err(e))?;
        if accounts.get(address.as_str()).map_err(|e| self.db_err(e))?.is_some() {
            return Ok(Recipient::Local(vec![address.clone()]));
        }
        let aliases = txn.open_table(ALIASES).map_err(|e| self.db_err(e))?;
        match aliases.get(address.as_str()).map_err(|e| self.db_err(e))? {
            Some(v) => {
                let alias: Alias = decode("alias", v.value())?;
                Ok(Recipient::Local(alias.targets))
            }
            None => Ok(Recipient::UnknownUser),
        }
    }

    /// May `account` use `address` as its envelope sender? Its own address, and
    /// any alias that delivers to it.
    pub fn may_send_as(&self, account: &EmailAddress, address: &EmailAddress) -> Result<bool, StoreError> {
        if account == address {
            return Ok(true);
        }
        let txn = self.read()?;
        let aliases = txn.open_table(ALIASES).map_err(|e| self.db_err(e))?;
        match aliases.get(address.as_str()).map_err(|e| self.db_err(e))? {
            Some(v) => Ok(decode::<Alias>("alias", v.value())?.targets.contains(account)),
            None => Ok(false),
        }
    }

    /// Mailboxes of an account, ordered by name.
    pub fn mailboxes(&self, account: AccountId) -> Result<Vec<Mailbox>, StoreError> {
        let txn = self.read()?;
        let names = txn.open_table(MAILBOX_NAMES).map_err(|e| self.db_err(e))?;
        let boxes = txn.open_table(MAILBOXES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in names.range((account.0, "")..(account.0 + 1, "")).map_err(|e| self.db_err(e))? {
            let (_, id) = row.map_err(|e| self.db_err(e))?;
            let v = boxes.get(id.value()).map_err(|e| self.db_err(e))?.ok_or_else(|| {
                StoreError::Corrupt(format!("mailbox name index points at missing mailbox {}", id.value()))
            })?;
            out.push(decode("mailbox", v.value())?);
        }
        Ok(out)
    }

    /// Every mailbox of every account, ordered by mailbox id (for cross-site
    /// verification, which compares digests in O(mailboxes)).
    pub fn all_mailboxes(&self) -> Result<Vec<Mailbox>, StoreError> {
        let txn = self.read()?;
        let boxes = txn.open_table(MAILBOXES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in boxes.iter().map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            out.push(decode("mailbox", v.value())?);
        }
        Ok(out)
    }

    /// The hashes of every body some message refers to (for finding bodies a
    /// replica still lacks after catching up).
    pub fn referenced_blobs(&self) -> Result<Vec<BlobHash>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(BLOB_REFS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            let bytes: [u8; 32] =
                k.value().try_into().map_err(|_| StoreError::Corrupt("blob reference key is not 32 bytes".into()))?;
            out.push(BlobHash(bytes));
        }
        Ok(out)
    }

    /// For each of `hashes`, whether no message refers to it.
    pub fn unreferenced(&self, hashes: &[BlobHash]) -> Result<Vec<bool>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(BLOB_REFS).map_err(|e| self.db_err(e))?;
        hashes.iter().map(|h| Ok(t.get(h.0.as_slice()).map_err(|e| self.db_err(e))?.is_none())).collect()
    }

    /// The committed DNS steering, once the control plane has decided one.
    pub fn steering(&self) -> Result<Option<Steering>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(CONTROL).map_err(|e| self.db_err(e))?;
        let row = t.get(CONTROL_STEERING).map_err(|e| self.db_err(e))?;
        row.map(|v| decode("steering", v.value())).transpose()
    }

    /// Control-plane events with an id above `after_id`, oldest first, at most `limit`.
    pub fn events(&self, after_id: u64, limit: usize) -> Result<Vec<ControlEvent>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(EVENTS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.range(after_id.saturating_add(1)..).map_err(|e| self.db_err(e))?.take(limit) {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            out.push(decode("control event", v.value())?);
        }
        Ok(out)
    }

    /// A mailbox by its id.
    pub fn mailbox(&self, id: MailboxId) -> Result<Option<Mailbox>, StoreError> {
        let txn = self.read()?;
        let boxes = txn.open_table(MAILBOXES).map_err(|e| self.db_err(e))?;
        let v = boxes.get(id.0).map_err(|e| self.db_err(e))?;
        v.map(|v| decode("mailbox", v.value())).transpose()
    }

    pub fn mailbox_by_name(&self, account: AccountId, name: &MailboxName) -> Result<Option<Mailbox>, StoreError> {
        let txn = self.read()?;
        let names = txn.open_table(MAILBOX_NAMES).map_err(|e| self.db_err(e))?;
        let Some(id) = names.get((account.0, name.as_str())).map_err(|e| self.db_err(e))? else {
            return Ok(None);
        };
        let boxes = txn.open_table(MAILBOXES).map_err(|e| self.db_err(e))?;
        let v = boxes.get(id.value()).map_err(|e| self.db_err(e))?;
        v.map(|v| decode("mailbox", v.value())).transpose()
    }

    /// Messages of a mailbox in UID order.
    pub fn messages(&self, mailbox: MailboxId) -> Result<Vec<Message>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(MESSAGES).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for row in t.range((mailbox.0, 0)..=(mailbox.0, u32::MAX)).map_err(|e| self.db_err(e))? {
            let (_, v) = row.map_err(|e| self.db_err(e))?;
            out.push(decode("message", v.value())?);
        }
        Ok(out)
    }

    /// The UIDs expunged from `mailbox` by a change with a MODSEQ above `since`,
    /// ascending; `None` when the record does not reach back that far (older rows
    /// were pruned, or the mailbox predates the record), so any UID may be gone.
    pub fn expunged_since(&self, mailbox: MailboxId, since: ModSeq) -> Result<Option<Vec<Uid>>, StoreError> {
        let txn = self.read()?;
        self.expunged_since_in(&txn, mailbox, since)
    }

    fn expunged_since_in(
        &self,
        txn: &redb::ReadTransaction,
        mailbox: MailboxId,
        since: ModSeq,
    ) -> Result<Option<Vec<Uid>>, StoreError> {
        let logs = txn.open_table(EXPUNGE_LOGS).map_err(|e| self.db_err(e))?;
        let Some(log) = logs.get(mailbox.0).map_err(|e| self.db_err(e))? else { return Ok(None) };
        let log: ExpungeLog = decode("expunge log", log.value())?;
        if since < log.complete_above {
            return Ok(None);
        }
        let t = txn.open_table(EXPUNGED).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        let from = (mailbox.0, since.0.saturating_add(1), 0);
        for row in t.range(from..=(mailbox.0, u64::MAX, u32::MAX)).map_err(|e| self.db_err(e))? {
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            out.push(Uid(k.value().2));
        }
        out.sort_unstable();
        Ok(Some(out))
    }

    /// What changed in `mailbox` after MODSEQ `since`, read in one transaction:
    /// the mailbox as it is now, the messages added or changed since (UID order),
    /// and the UIDs expunged since (`None` when the record of expunges does not
    /// reach back to `since`; the caller then compares whole). `None` when the
    /// mailbox no longer exists. Costs what changed, not the mailbox's size.
    pub fn mailbox_changes(&self, mailbox: MailboxId, since: ModSeq) -> Result<Option<MailboxChanges>, StoreError> {
        let txn = self.read()?;
        let boxes = txn.open_table(MAILBOXES).map_err(|e| self.db_err(e))?;
        let Some(record) = boxes.get(mailbox.0).map_err(|e| self.db_err(e))? else { return Ok(None) };
        let record: Mailbox = decode("mailbox", record.value())?;
        let mut changed = Vec::new();
        if record.highest_modseq > since {
            let index = txn.open_table(MESSAGES_BY_MODSEQ).map_err(|e| self.db_err(e))?;
            let messages = txn.open_table(MESSAGES).map_err(|e| self.db_err(e))?;
            let from = (mailbox.0, since.0.saturating_add(1), 0);
            for row in index.range(from..=(mailbox.0, u64::MAX, u32::MAX)).map_err(|e| self.db_err(e))? {
                let (k, _) = row.map_err(|e| self.db_err(e))?;
                let uid = k.value().2;
                let Some(v) = messages.get((mailbox.0, uid)).map_err(|e| self.db_err(e))? else {
                    return Err(StoreError::Corrupt(format!(
                        "MODSEQ index names uid {uid} of mailbox {mailbox}, which is not there"
                    )));
                };
                changed.push(decode::<Message>("message", v.value())?);
            }
            changed.sort_unstable_by_key(|m| m.uid);
        }
        let expunged = if record.highest_modseq > since {
            self.expunged_since_in(&txn, mailbox, since)?
        } else {
            Some(Vec::new())
        };
        Ok(Some(MailboxChanges { mailbox: record, changed, expunged }))
    }

    /// The lowest MODSEQ at which any of `uids` was expunged from `mailbox`, as far
    /// as the record holds (at most [`EXPUNGED_KEPT_PER_MAILBOX_MAX`] rows read).
    pub fn earliest_expunge(&self, mailbox: MailboxId, uids: &[Uid]) -> Result<Option<ModSeq>, StoreError> {
        let wanted: std::collections::HashSet<u32> = uids.iter().map(|u| u.0).collect();
        let txn = self.read()?;
        let t = txn.open_table(EXPUNGED).map_err(|e| self.db_err(e))?;
        for row in t.range((mailbox.0, 0, 0)..=(mailbox.0, u64::MAX, u32::MAX)).map_err(|e| self.db_err(e))? {
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            let (_, modseq, uid) = k.value();
            if wanted.contains(&uid) {
                return Ok(Some(ModSeq(modseq)));
            }
        }
        Ok(None)
    }

    /// A mailbox's record of expunges: what it covers, and its rows as (MODSEQ,
    /// UID) in that order. `None` for a mailbox without one.
    pub fn expunge_log(&self, mailbox: MailboxId) -> Result<Option<ExpungeRecord>, StoreError> {
        let txn = self.read()?;
        let logs = txn.open_table(EXPUNGE_LOGS).map_err(|e| self.db_err(e))?;
        let Some(log) = logs.get(mailbox.0).map_err(|e| self.db_err(e))? else { return Ok(None) };
        let log: ExpungeLog = decode("expunge log", log.value())?;
        let t = txn.open_table(EXPUNGED).map_err(|e| self.db_err(e))?;
        let mut rows = Vec::new();
        for row in t.range((mailbox.0, 0, 0)..=(mailbox.0, u64::MAX, u32::MAX)).map_err(|e| self.db_err(e))? {
            let (k, _) = row.map_err(|e| self.db_err(e))?;
            let (_, modseq, uid) = k.value();
            rows.push((ModSeq(modseq), Uid(uid)));
        }
        Ok(Some((log, rows)))
    }

    pub fn message(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<Message>, StoreError> {
        let txn = self.read()?;
        let t = txn.open_table(MESSAGES).map_err(|e| self.db_err(e))?;
        let v = t.get((mailbox.0, uid.0)).map_err(|e| self.db_err(e))?;
        v.map(|v| decode("message", v.value())).transpose()
    }

    /// The record of a mailbox's expunges agrees with the mailbox: as many rows
    /// as it says, no UID both expunged and present, none at or above UIDNEXT,
    /// no MODSEQ above the mailbox's.
    fn check_expunge_record(&self, mailbox: &Mailbox, name: &str, report: &mut CheckReport) -> Result<(), StoreError> {
        let Some((log, rows)) = self.expunge_log(mailbox.id)? else { return Ok(()) };
        if rows.len() as u64 != log.kept || log.kept > EXPUNGED_KEPT_PER_MAILBOX_MAX {
            report.problems.push(format!("{name}: expunge record says {} rows, holds {}", log.kept, rows.len()));
        }
        for (modseq, uid) in rows {
            let present = self.message(mailbox.id, uid)?.is_some();
            if present || uid >= mailbox.uid_next || modseq > mailbox.highest_modseq {
                report.problems.push(format!(
                    "{name}: expunged uid {uid} at modseq {modseq} is present, beyond uidnext {} or highest modseq {}",
                    mailbox.uid_next, mailbox.highest_modseq
                ));
            }
        }
        Ok(())
    }

    /// Full consistency check: every message's body present and intact, every
    /// mailbox's digest, count and size equal to a recomputation, every account's
    /// used bytes equal to the sum of its mailboxes, every blob reference count right.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let mut refs: std::collections::BTreeMap<[u8; 32], u64> = Default::default();
        for account in self.accounts(None)? {
            let mut used = 0u64;
            for mailbox in self.mailboxes(account.id)? {
                report.mailboxes += 1;
                let mut digest = MailboxDigest::default();
                let (mut count, mut size) = (0u64, 0u64);
                let mut last_uid = 0u32;
                let listed = self.messages(mailbox.id)?;
                match self.mailbox_changes(mailbox.id, ModSeq(0)) {
                    Ok(Some(c)) if c.changed == listed => {}
                    Ok(_) => report.problems.push(format!(
                        "{}/{}: the MODSEQ index does not name exactly the mailbox's messages",
                        account.address, mailbox.name
                    )),
                    Err(e) => report.problems.push(format!("{}/{}: {e}", account.address, mailbox.name)),
                }
                for message in listed {
                    report.messages += 1;
                    count += 1;
                    size += message.size_bytes;
                    digest.toggle(&message);
                    *refs.entry(message.body.0).or_default() += 1;
                    if message.uid.0 <= last_uid || message.uid >= mailbox.uid_next {
                        report.problems.push(format!(
                            "{}/{}: uid {} out of order or beyond uidnext {}",
                            account.address, mailbox.name, message.uid, mailbox.uid_next
                        ));
                    }
                    last_uid = message.uid.0;
                    match self.blobs.get_verified(&message.body) {
                        Ok(body) if body.len() as u64 == message.size_bytes => {}
                        Ok(body) => report.problems.push(format!(
                            "{}/{} uid {}: body {} is {} bytes, message says {}",
                            account.address,
                            mailbox.name,
                            message.uid,
                            message.body,
                            body.len(),
                            message.size_bytes
                        )),
                        Err(e) => report
                            .problems
                            .push(format!("{}/{} uid {}: {e}", account.address, mailbox.name, message.uid)),
                    }
                }
                used += size;
                self.check_expunge_record(&mailbox, &format!("{}/{}", account.address, mailbox.name), &mut report)?;
                if digest != mailbox.digest || count != mailbox.message_count || size != mailbox.size_bytes {
                    report.problems.push(format!(
                        "{}/{}: recorded digest/count/size {}/{}/{} but messages give {}/{}/{}",
                        account.address,
                        mailbox.name,
                        mailbox.digest.to_hex(),
                        mailbox.message_count,
                        mailbox.size_bytes,
                        digest.to_hex(),
                        count,
                        size
                    ));
                }
            }
            if used != account.used_bytes {
                report.problems.push(format!(
                    "{}: used_bytes {} but mailboxes hold {}",
                    account.address, account.used_bytes, used
                ));
            }
        }
        let txn = self.read()?;
        let t = txn.open_table(BLOB_REFS).map_err(|e| self.db_err(e))?;
        let mut recorded: std::collections::BTreeMap<[u8; 32], u64> = Default::default();
        for row in t.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = row.map_err(|e| self.db_err(e))?;
            let key: [u8; 32] =
                k.value().try_into().map_err(|_| StoreError::Corrupt("blob ref key is not 32 bytes".into()))?;
            if v.value() > 0 {
                recorded.insert(key, v.value());
            }
        }
        if recorded != refs {
            report.problems.push(format!(
                "blob reference counts disagree: {} recorded, {} counted",
                recorded.len(),
                refs.len()
            ));
        }
        Ok(report)
    }
}
