//! Commands: the only way mail state changes.
//!
//! A command carries every decision that needs a clock, randomness or I/O
//! (timestamps, password hashes, UIDVALIDITY, body hashes) so that applying it is a
//! pure function of (state, command). That is what lets the same command travel
//! through a replicated log and produce identical replicas.

use maildr_types::{
    AccountId, BlobHash, BlobRef, Domain, EmailAddress, MailboxId, MailboxName, ModSeq, SystemFlags, Uid, UidValidity,
    UnixSeconds,
};
use serde::{Deserialize, Serialize};

/// A change to mail state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    AddDomain {
        domain: Domain,
        at: UnixSeconds,
    },
    /// Refused while the domain still has accounts or aliases.
    RemoveDomain {
        domain: Domain,
    },
    AddAccount {
        address: EmailAddress,
        password_hash: String,
        quota_bytes: u64,
        /// UIDVALIDITY given to the account's special-use mailboxes.
        uid_validity: UidValidity,
        at: UnixSeconds,
    },
    SetPassword {
        address: EmailAddress,
        password_hash: String,
    },
    SetQuota {
        address: EmailAddress,
        quota_bytes: u64,
    },
    /// Removes the account, its mailboxes and its messages.
    RemoveAccount {
        address: EmailAddress,
    },
    /// Adds `target` to the alias, creating the alias if needed.
    AddAlias {
        alias: EmailAddress,
        target: EmailAddress,
    },
    /// Removes one target, or the whole alias when `target` is `None`.
    RemoveAlias {
        alias: EmailAddress,
        target: Option<EmailAddress>,
    },
    /// Appends one stored body to the INBOX of each recipient account, all or none.
    Deliver {
        recipients: Vec<EmailAddress>,
        body: BlobRef,
        internal_date: UnixSeconds,
        flags: SystemFlags,
        /// The delivery's [`crate::delivery_retry_key`] (SMTP sets it for messages
        /// with a Message-ID): a retried delivery with the same key to an INBOX that
        /// still holds the first copy is not stored again.
        /// (Entries written before it was a content key hold a Message-ID here; the
        /// two never collide.)
        retry_key: Option<String>,
    },
    /// Create a mailbox (and any missing parents, as IMAP CREATE does).
    CreateMailbox {
        account: EmailAddress,
        name: MailboxName,
        uid_validity: UidValidity,
    },
    /// Delete a mailbox and its messages. INBOX cannot be deleted.
    DeleteMailbox {
        account: EmailAddress,
        name: MailboxName,
    },
    /// Rename a mailbox and its children. Renaming INBOX moves its messages into a
    /// new mailbox and leaves INBOX empty (RFC 3501 §6.3.5).
    RenameMailbox {
        account: EmailAddress,
        from: MailboxName,
        to: MailboxName,
        uid_validity: UidValidity,
    },
    SetSubscribed {
        account: EmailAddress,
        name: MailboxName,
        subscribed: bool,
    },
    /// Add one stored body to a mailbox (IMAP APPEND).
    Append {
        account: EmailAddress,
        mailbox: MailboxName,
        body: BlobRef,
        flags: SystemFlags,
        keywords: Vec<String>,
        internal_date: UnixSeconds,
    },
    /// Change flags of messages of a mailbox (IMAP STORE). With `unchanged_since`,
    /// messages modified after that MODSEQ are left alone and reported (CONDSTORE).
    StoreFlags {
        mailbox: MailboxId,
        uids: Vec<Uid>,
        op: FlagOp,
        flags: SystemFlags,
        keywords: Vec<String>,
        unchanged_since: Option<ModSeq>,
    },
    /// Remove messages flagged \Deleted; only those in `uids` when given (UID EXPUNGE).
    Expunge {
        mailbox: MailboxId,
        uids: Option<Vec<Uid>>,
    },
    /// Copy (or move) messages to another mailbox of the same account.
    CopyMessages {
        from: MailboxId,
        uids: Vec<Uid>,
        to: MailboxName,
        remove_source: bool,
    },
    /// The DR control plane's decision of where clients go (DNS steering): which
    /// data site `mail.<domain>` names and which sites MX lists. Gets the next zone
    /// serial and records a `dns_committed` event.
    SetSteering {
        /// Site name of the primary that `mail.<domain>` points at.
        primary: Option<String>,
        /// Sites listed as MX, in preference order.
        mx: Vec<String>,
        /// Sites judged down by a majority of observers.
        down: Vec<String>,
        /// Why the steering changed, for the event log.
        reason: String,
        /// Proposer's clock, in milliseconds since the Unix epoch.
        at_ms: i64,
    },
    /// Append an event to the replicated control-plane event log (failure detected,
    /// primary elected, switchover, forced failover).
    RecordEvent {
        kind: ControlEventKind,
        site: Option<String>,
        detail: String,
        /// Proposer's clock, in milliseconds since the Unix epoch.
        at_ms: i64,
    },
    // New variants go last: the replicated log stores a command's variant by its
    // position.
    /// An authenticated submission with recipients in other domains: the local
    /// recipients get the message as [`Command::Deliver`] does and the others are
    /// queued for delivery, all in one change (or none of it).
    Submit {
        /// Local accounts to deliver to (may be empty).
        local: Vec<EmailAddress>,
        /// Recipients in other domains, queued.
        remote: Vec<EmailAddress>,
        /// The reverse path (`None`: `<>`).
        from: Option<EmailAddress>,
        /// The submitting account (bounces go to its INBOX).
        submitted_by: Option<EmailAddress>,
        body: BlobRef,
        internal_date: UnixSeconds,
        /// As [`Command::Deliver`]'s: a retried submission is neither delivered
        /// nor queued twice.
        retry_key: Option<String>,
        /// Proposer's clock, in milliseconds since the Unix epoch.
        at_ms: i64,
        /// When waiting recipients are given up (`at_ms` + the queue lifetime).
        expires_at_ms: i64,
    },
    /// The outcome of one delivery attempt of a queued message: delivered and
    /// bounced recipients leave the queue, deferred ones wait until
    /// `next_attempt_at_ms`. A message with no recipient left leaves the queue.
    RecordDeliveryAttempt {
        id: u64,
        delivered: Vec<EmailAddress>,
        /// Refused for good (5xx) or expired; a notification has been delivered.
        bounced: Vec<EmailAddress>,
        /// Temporary failures, with the reason.
        deferred: Vec<(EmailAddress, String)>,
        next_attempt_at_ms: i64,
    },
    /// Make queued messages due now (`None`: every one).
    RetryQueued {
        id: Option<u64>,
        at_ms: i64,
    },
    /// Remove a queued message without delivering it (the operator's decision).
    RemoveQueued {
        id: u64,
    },
    /// Set (or replace) a hosted domain's DKIM signing key.
    SetDkimKey {
        domain: Domain,
        key: crate::model::DkimKey,
    },
}

/// What a control-plane event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlEventKind {
    /// A majority of observers judged a data site down.
    Detected,
    /// A site that was down is healthy and caught up again.
    Recovered,
    /// A data site became primary.
    Elected,
    /// New DNS steering was committed (the zones' serial changed).
    DnsCommitted,
    /// A site began serving a zone serial (recorded locally by each DNS server).
    DnsServed,
    /// A planned switchover.
    Switchover,
    /// A forced failover to a standby that accepted data loss.
    ForcedFailover,
}

impl ControlEventKind {
    pub fn name(self) -> &'static str {
        match self {
            ControlEventKind::Detected => "detected",
            ControlEventKind::Recovered => "recovered",
            ControlEventKind::Elected => "elected",
            ControlEventKind::DnsCommitted => "dns_committed",
            ControlEventKind::DnsServed => "dns_served",
            ControlEventKind::Switchover => "switchover",
            ControlEventKind::ForcedFailover => "forced_failover",
        }
    }
}

/// How STORE combines the given flags with the present ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlagOp {
    Add,
    Remove,
    Replace,
}

impl Command {
    /// The one way to build [`Command::AddAccount`]. `at` is when the account is
    /// created, and its special-use mailboxes get their UIDVALIDITY from that same
    /// clock reading ([`UidValidity::proposed_at`]; applying raises it past any
    /// value the store gave before). The caller hashes the password
    /// (`maildr_frontend::hash_password`) and reads the clock, so applying stays a
    /// pure function and the store links no hasher.
    pub fn add_account(address: EmailAddress, password_hash: String, quota_bytes: u64, at: UnixSeconds) -> Command {
        Command::AddAccount { address, password_hash, quota_bytes, uid_validity: UidValidity::proposed_at(at), at }
    }

    /// The body this command brings into the store, if any (a delivery or an
    /// APPEND): what a replica must fetch and a backup must keep.
    pub fn new_body(&self) -> Option<BlobHash> {
        match self {
            Command::Deliver { body, .. } | Command::Append { body, .. } | Command::Submit { body, .. } => {
                Some(body.hash)
            }
            _ => None,
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::AddDomain { .. } => "add_domain",
            Command::RemoveDomain { .. } => "remove_domain",
            Command::AddAccount { .. } => "add_account",
            Command::SetPassword { .. } => "set_password",
            Command::SetQuota { .. } => "set_quota",
            Command::RemoveAccount { .. } => "remove_account",
            Command::AddAlias { .. } => "add_alias",
            Command::RemoveAlias { .. } => "remove_alias",
            Command::Deliver { .. } => "deliver",
            Command::CreateMailbox { .. } => "create_mailbox",
            Command::DeleteMailbox { .. } => "delete_mailbox",
            Command::RenameMailbox { .. } => "rename_mailbox",
            Command::SetSubscribed { .. } => "set_subscribed",
            Command::Append { .. } => "append",
            Command::StoreFlags { .. } => "store_flags",
            Command::Expunge { .. } => "expunge",
            Command::CopyMessages { .. } => "copy_messages",
            Command::SetSteering { .. } => "set_steering",
            Command::RecordEvent { .. } => "record_event",
            Command::Submit { .. } => "submit",
            Command::RecordDeliveryAttempt { .. } => "record_delivery_attempt",
            Command::RetryQueued { .. } => "retry_queued",
            Command::RemoveQueued { .. } => "remove_queued",
            Command::SetDkimKey { .. } => "set_dkim_key",
        }
    }
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    AccountAdded {
        id: AccountId,
    },
    Delivered {
        placements: Vec<Placement>,
    },
    MailboxCreated {
        id: MailboxId,
    },
    /// Mailboxes whose contents or names changed.
    MailboxesChanged {
        ids: Vec<MailboxId>,
    },
    Appended {
        mailbox: MailboxId,
        uid_validity: UidValidity,
        uid: Uid,
    },
    FlagsStored {
        mailbox: MailboxId,
        changed: Vec<(Uid, ModSeq)>,
        modified_since: Vec<Uid>,
    },
    Expunged {
        mailbox: MailboxId,
        uids: Vec<Uid>,
    },
    Copied {
        from: MailboxId,
        to: MailboxId,
        uid_validity: UidValidity,
        pairs: Vec<(Uid, Uid)>,
        removed: bool,
    },
    SteeringSet {
        serial: u32,
    },
    EventRecorded {
        id: u64,
    },
    /// A submission: where the local copies went, and the queue id of the rest.
    Submitted {
        placements: Vec<Placement>,
        queued: Option<u64>,
    },
    /// A queued message changed (or left the queue: `remaining` 0).
    QueueChanged {
        id: u64,
        remaining: usize,
    },
    /// `RetryQueued`: how many messages were made due.
    QueueRetried {
        count: usize,
    },
}

impl Applied {
    /// Mailboxes whose state this change touched: sessions watching them resync.
    pub fn touched_mailboxes(&self) -> Vec<MailboxId> {
        match self {
            Applied::Done
            | Applied::AccountAdded { .. }
            | Applied::SteeringSet { .. }
            | Applied::EventRecorded { .. }
            | Applied::QueueChanged { .. }
            | Applied::QueueRetried { .. } => Vec::new(),
            Applied::Delivered { placements } | Applied::Submitted { placements, .. } => {
                placements.iter().map(|p| p.mailbox).collect()
            }
            Applied::MailboxCreated { id } => vec![*id],
            Applied::MailboxesChanged { ids } => ids.clone(),
            Applied::Appended { mailbox, .. }
            | Applied::FlagsStored { mailbox, .. }
            | Applied::Expunged { mailbox, .. } => vec![*mailbox],
            Applied::Copied { from, to, .. } => vec![*from, *to],
        }
    }
}

/// Where one delivered copy went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub account: EmailAddress,
    pub mailbox: MailboxId,
    pub uid: Uid,
}

/// Why a command was refused. A refused command changes nothing, and every replica
/// refuses it alike, so these are answers to the client, not failures of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    #[error("domain {0} is already hosted")]
    DomainExists(Domain),
    #[error("domain {0} is not hosted here")]
    DomainUnknown(Domain),
    #[error("domain {domain} still has {accounts} account(s) and {aliases} alias(es); remove them first")]
    DomainNotEmpty { domain: Domain, accounts: usize, aliases: usize },
    #[error("account {0} already exists")]
    AccountExists(EmailAddress),
    #[error("no account {0}")]
    AccountUnknown(EmailAddress),
    #[error("{0} is already an alias")]
    AddressIsAlias(EmailAddress),
    #[error("{0} is already an account")]
    AddressIsAccount(EmailAddress),
    #[error("alias {0} does not exist")]
    AliasUnknown(EmailAddress),
    #[error("alias {alias} has no target {target}")]
    AliasTargetUnknown { alias: EmailAddress, target: EmailAddress },
    #[error("alias target {0} is not a local account (forwarding off-site needs outbound delivery)")]
    AliasTargetNotLocal(EmailAddress),
    #[error("alias {alias} already delivers to {target}")]
    AliasTargetExists { alias: EmailAddress, target: EmailAddress },
    #[error("mailbox of {0} is over quota")]
    OverQuota(EmailAddress),
    #[error("a delivery needs at least one recipient")]
    NoRecipients,
    #[error("mailbox {0} does not exist")]
    MailboxUnknown(String),
    #[error("mailbox {0} already exists")]
    MailboxExists(MailboxName),
    #[error("INBOX cannot be deleted")]
    InboxUndeletable,
    #[error("a mailbox cannot be renamed into itself or its own child")]
    RenameIntoSelf,
    #[error("no queued message {0}")]
    QueuedUnknown(u64),
    #[error("{address} is not a recipient of queued message {id}")]
    NotQueuedFor { id: u64, address: EmailAddress },
    #[error("{0} is hosted here: it is delivered locally, not queued")]
    RemoteIsLocal(EmailAddress),
    #[error("DKIM selector {0:?} is not a DNS label (letters, digits, '-', 1-63 characters)")]
    BadDkimSelector(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_account_carries_its_creation_time_and_the_uid_validity_proposed_at_it() {
        let address = EmailAddress::parse("alice@example.test").expect("a valid address");
        let at = UnixSeconds(1_700_000_000);
        let built = Command::add_account(address.clone(), "hash".into(), 7, at);
        let expected = Command::AddAccount {
            address,
            password_hash: "hash".into(),
            quota_bytes: 7,
            uid_validity: UidValidity::proposed_at(at),
            at,
        };
        assert_eq!(built, expected);
    }
}
