//! Commands: the only way mail state changes.
//!
//! A command carries every decision that needs a clock, randomness or I/O
//! (timestamps, password hashes, UIDVALIDITY, body hashes) so that applying it is a
//! pure function of (state, command). That is what lets the same command travel
//! through a replicated log and produce identical replicas.

use maildr_types::{AccountId, BlobRef, Domain, EmailAddress, MailboxId, SystemFlags, Uid, UidValidity, UnixSeconds};
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
    },
}

impl Command {
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
        }
    }
}

/// What an applied command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    AccountAdded { id: AccountId },
    Delivered { placements: Vec<Placement> },
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
}
