//! The records the store keeps, as they are serialised into redb values.
//!
//! These are plain data: every rule about how they change lives in `apply`.

use maildr_types::{
    AccountId, BlobHash, BlobRef, Domain, EmailAddress, MailboxId, MailboxName, ModSeq, SpecialUse, SystemFlags, Uid,
    UidValidity, UnixSeconds,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A hosted domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub name: Domain,
    pub created_at: UnixSeconds,
}

/// A mail account: one login, one set of mailboxes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: AccountId,
    pub address: EmailAddress,
    /// Argon2id PHC string; never the password.
    pub password_hash: String,
    /// Storage allowed, in bytes; 0 means unlimited.
    pub quota_bytes: u64,
    /// Sum of the sizes of all messages in all mailboxes of the account.
    pub used_bytes: u64,
    pub created_at: UnixSeconds,
}

impl Account {
    /// Would `extra_bytes` more exceed the quota?
    pub fn would_exceed_quota(&self, extra_bytes: u64) -> bool {
        self.quota_bytes != 0 && self.used_bytes.saturating_add(extra_bytes) > self.quota_bytes
    }
}

/// An alias address delivering to one or more local accounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    pub address: EmailAddress,
    pub targets: Vec<EmailAddress>,
}

/// A mailbox with its IMAP bookkeeping and its running digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mailbox {
    pub id: MailboxId,
    pub account: AccountId,
    pub name: MailboxName,
    pub special_use: Option<SpecialUse>,
    pub subscribed: bool,
    pub uid_validity: UidValidity,
    /// The UID the next message will get.
    pub uid_next: Uid,
    /// The MODSEQ of the most recent change in this mailbox.
    pub highest_modseq: ModSeq,
    pub message_count: u64,
    pub size_bytes: u64,
    /// XOR of the digests of every message: comparable across sites without a scan.
    pub digest: MailboxDigest,
}

/// What a mailbox's record of expunged UIDs covers (QRESYNC, RFC 7162 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpungeLog {
    /// Rows this mailbox has in the expunged table.
    pub kept: u64,
    /// Every expunge with a MODSEQ above this is recorded; at or below it some
    /// may not be (pruned, or before the record began). 0 from creation on.
    pub complete_above: ModSeq,
}

/// Order-independent digest of a mailbox's messages. Adding and removing a message
/// is the same XOR, so the digest is maintained incrementally on every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MailboxDigest(pub [u8; 32]);

impl MailboxDigest {
    pub fn toggle(&mut self, message: &Message) {
        let leaf = message.digest_leaf();
        for (d, l) in self.0.iter_mut().zip(leaf) {
            *d ^= l;
        }
    }
    pub fn to_hex(&self) -> String {
        BlobHash(self.0).to_hex()
    }
}

/// One message in one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub uid: Uid,
    pub modseq: ModSeq,
    pub flags: SystemFlags,
    /// IMAP keywords, sorted and deduplicated.
    pub keywords: Vec<String>,
    pub internal_date: UnixSeconds,
    pub size_bytes: u64,
    pub body: BlobHash,
}

impl Message {
    /// Hash of everything that two replicas must agree on for this message.
    pub fn digest_leaf(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"maildr-message-v1");
        h.update(self.uid.0.to_be_bytes());
        h.update(self.modseq.0.to_be_bytes());
        h.update([self.flags.0]);
        for k in &self.keywords {
            h.update(u32::try_from(k.len()).unwrap_or(u32::MAX).to_be_bytes());
            h.update(k.as_bytes());
        }
        h.update(self.internal_date.0.to_be_bytes());
        h.update(self.size_bytes.to_be_bytes());
        h.update(self.body.0);
        h.finalize().into()
    }
}

/// The committed DNS steering: where clients and senders are sent. Every site
/// derives the zones it serves from this record, so surviving sites answer alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steering {
    /// Zone serial; grows by one with every change.
    pub serial: u32,
    pub primary: Option<String>,
    pub mx: Vec<String>,
    pub down: Vec<String>,
    pub reason: String,
    pub changed_at_ms: i64,
}

/// A domain's DKIM signing key (RFC 6376): replicated, so whichever site is
/// primary signs the domain's outgoing mail with it, and each site's DNS server
/// publishes its public half at `<selector>._domainkey.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DkimKey {
    pub selector: String,
    pub algorithm: DkimAlgorithm,
    /// RSA: PKCS#1 DER; Ed25519: PKCS#8 DER.
    pub private_der: Vec<u8>,
    /// The `p=` value of the DNS record (base64).
    pub public_base64: String,
    pub created_at: UnixSeconds,
}

/// The signing algorithm of a DKIM key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DkimAlgorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl DkimKey {
    /// The TXT record's text: `v=DKIM1; k=rsa; p=…`.
    pub fn dns_text(&self) -> String {
        let k = match self.algorithm {
            DkimAlgorithm::RsaSha256 => "rsa",
            DkimAlgorithm::Ed25519Sha256 => "ed25519",
        };
        format!("v=DKIM1; k={k}; p={}", self.public_base64)
    }
}

/// A message waiting in the replicated outbound queue for delivery to other
/// domains. It lives in the replicated state, so the site that becomes primary
/// after a failover delivers what the lost one had queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedMessage {
    /// Queue id, from 1, in the order messages were queued.
    pub id: u64,
    /// The reverse path (`None`: the null sender `<>`).
    pub from: Option<EmailAddress>,
    /// The local account that submitted it: delivery status notifications go to
    /// its INBOX.
    pub submitted_by: Option<EmailAddress>,
    pub body: BlobRef,
    pub queued_at_ms: i64,
    /// After this, recipients still waiting are bounced.
    pub expires_at_ms: i64,
    /// No attempt before this.
    pub next_attempt_at_ms: i64,
    /// Delivery attempts so far (each covers every recipient still waiting).
    pub attempts: u32,
    /// Recipients not yet delivered nor bounced, in submission order.
    pub recipients: Vec<QueuedRecipient>,
    /// The submission's retry key, which maps to this entry while it is queued.
    pub retry_key: Option<String>,
}

/// How messages and recipients have left the outbound queue since the store
/// began: replicated state like the queue itself, so identical on every site,
/// and what a drill counts to tell a message that left from one that was lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueTotals {
    /// Recipients the remote side accepted.
    pub recipients_delivered: u64,
    /// Recipients refused for good or expired (each with a notification).
    pub recipients_bounced: u64,
    /// Messages that left because no recipient was still waiting.
    pub messages_finished: u64,
    /// Messages an operator deleted (`maildr queue delete`).
    pub messages_deleted: u64,
}

impl QueueTotals {
    /// Messages that left the queue by any way.
    pub fn messages_left(&self) -> u64 {
        self.messages_finished + self.messages_deleted
    }
}

/// A recipient of a queued message still waiting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedRecipient {
    pub address: EmailAddress,
    /// The last temporary failure (`451 4.3.0 …`, `connect: refused`), if any.
    pub last_error: Option<String>,
}

/// One entry of the replicated control-plane event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEvent {
    /// Position in the log, from 1.
    pub id: u64,
    pub at_ms: i64,
    pub kind: crate::command::ControlEventKind,
    pub site: Option<String>,
    pub detail: String,
}
