//! Parsed values of the mail and disaster-recovery domain.
//!
//! Every string that arrives from the network, a config file or the command line
//! becomes one of these types at the edge, so the store and the protocols never
//! re-check raw strings. Construction is the only place validation happens; a value
//! of these types is valid by construction. This crate must never depend on any
//! other maildr crate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod clock;
pub use clock::{system_clock, Clock, PinnedClock, SharedClock, SystemClock};

/// Why a string is not a valid domain or address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("domain {0:?} is not a valid domain name: {1}")]
    Domain(String, &'static str),
    #[error("address {0:?} is not a valid mail address: {1}")]
    Address(String, &'static str),
    #[error("mailbox name {0:?} is not valid: {1}")]
    MailboxName(String, &'static str),
}

/// Longest domain name (RFC 1035 §2.3.4).
pub const DOMAIN_LEN_MAX: usize = 253;
/// Longest local part (RFC 5321 §4.5.3.1.1).
pub const LOCAL_PART_LEN_MAX: usize = 64;
/// Longest mailbox path we accept, in bytes.
pub const MAILBOX_NAME_LEN_MAX: usize = 255;

/// A DNS domain name, lower-cased, without trailing dot. UTF-8 labels are kept as
/// given (SMTPUTF8); ASCII is folded to lower case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let err = |why| ParseError::Domain(raw.to_string(), why);
        let s = raw.strip_suffix('.').unwrap_or(raw);
        if s.is_empty() {
            return Err(err("empty"));
        }
        // Checked in the form stored (lowercasing can lengthen a string).
        let lowered = s.to_lowercase();
        if lowered.len() > DOMAIN_LEN_MAX {
            return Err(err("longer than 253 bytes"));
        }
        for label in lowered.split('.') {
            if label.is_empty() {
                return Err(err("empty label"));
            }
            if label.len() > 63 {
                return Err(err("label longer than 63 bytes"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("label starts or ends with '-'"));
            }
            if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || (!c.is_ascii() && c.is_alphanumeric())) {
                return Err(err("labels may hold only letters, digits and '-'"));
            }
        }
        if !lowered.contains('.') {
            return Err(err("needs at least two labels"));
        }
        Ok(Domain(lowered))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl FromStr for Domain {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Domain::parse(s)
    }
}
impl TryFrom<String> for Domain {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        Domain::parse(&s)
    }
}
impl From<Domain> for String {
    fn from(d: Domain) -> String {
        d.0
    }
}

/// A mail address `local@domain`. The local part is folded to lower case: maildr
/// treats local parts case-insensitively, as nearly every mail system does, so
/// `Alice@Example.Test` and `alice@example.test` are one mailbox.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress {
    full: String,
    at: usize,
}

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let err = |why| ParseError::Address(raw.to_string(), why);
        let at = raw.rfind('@').ok_or_else(|| err("missing '@'"))?;
        let (local, domain) = (&raw[..at], &raw[at + 1..]);
        if local.is_empty() {
            return Err(err("empty local part"));
        }
        // Checked in the form stored: lowercasing can lengthen a string (`İ` is two
        // bytes, `i̇` three), and a parsed address must parse again to itself.
        let local = &local.to_lowercase();
        if local.len() > LOCAL_PART_LEN_MAX {
            return Err(err("local part longer than 64 bytes"));
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(err("dots may not start, end or repeat in the local part"));
        }
        const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c) || (!c.is_ascii() && !c.is_control()))
        {
            return Err(err("local part holds a character outside dot-atom"));
        }
        let domain = Domain::parse(domain).map_err(|_| err("invalid domain"))?;
        let at = local.len();
        Ok(EmailAddress { full: format!("{local}@{domain}"), at })
    }
    pub fn local_part(&self) -> &str {
        &self.full[..self.at]
    }
    pub fn domain_str(&self) -> &str {
        &self.full[self.at + 1..]
    }
    pub fn domain(&self) -> Domain {
        Domain(self.domain_str().to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}
impl FromStr for EmailAddress {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        EmailAddress::parse(s)
    }
}
impl TryFrom<String> for EmailAddress {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        EmailAddress::parse(&s)
    }
}
impl From<EmailAddress> for String {
    fn from(a: EmailAddress) -> String {
        a.full
    }
}

/// A mailbox path as IMAP names it, `/` as hierarchy separator, `INBOX` always in
/// upper case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MailboxName(String);

impl MailboxName {
    pub fn inbox() -> Self {
        MailboxName("INBOX".into())
    }
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let err = |why| ParseError::MailboxName(raw.to_string(), why);
        if raw.is_empty() {
            return Err(err("empty"));
        }
        if raw.len() > MAILBOX_NAME_LEN_MAX {
            return Err(err("longer than 255 bytes"));
        }
        if raw.chars().any(|c| c.is_control()) {
            return Err(err("control characters"));
        }
        if raw.starts_with('/') || raw.ends_with('/') || raw.contains("//") {
            return Err(err("empty hierarchy level"));
        }
        if raw.eq_ignore_ascii_case("INBOX") {
            return Ok(Self::inbox());
        }
        Ok(MailboxName(raw.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }
}
impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl TryFrom<String> for MailboxName {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        MailboxName::parse(&s)
    }
}
impl From<MailboxName> for String {
    fn from(a: MailboxName) -> String {
        a.0
    }
}

/// RFC 6154 special-use attribute of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpecialUse {
    Inbox,
    Sent,
    Drafts,
    Trash,
    Junk,
    Archive,
}

impl SpecialUse {
    /// The mailboxes every new account receives, in the order clients list them.
    pub const CREATED_WITH_ACCOUNT: [(SpecialUse, &'static str); 5] = [
        (SpecialUse::Inbox, "INBOX"),
        (SpecialUse::Sent, "Sent"),
        (SpecialUse::Drafts, "Drafts"),
        (SpecialUse::Trash, "Trash"),
        (SpecialUse::Junk, "Junk"),
    ];
    /// The IMAP LIST attribute, or `None` for INBOX which has no attribute.
    pub fn imap_attribute(self) -> Option<&'static str> {
        match self {
            SpecialUse::Inbox => None,
            SpecialUse::Sent => Some("\\Sent"),
            SpecialUse::Drafts => Some("\\Drafts"),
            SpecialUse::Trash => Some("\\Trash"),
            SpecialUse::Junk => Some("\\Junk"),
            SpecialUse::Archive => Some("\\Archive"),
        }
    }
}

macro_rules! id_newtype {
    ($(#[$m:meta])* $name:ident($inner:ty)) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(pub $inner);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_newtype!(
    /// Internal id of an account, assigned in order by the store.
    AccountId(u64)
);
id_newtype!(
    /// Internal id of a mailbox, assigned in order by the store; never reused.
    MailboxId(u64)
);
id_newtype!(
    /// IMAP UID of a message within its mailbox: strictly increasing, never reused
    /// while the mailbox's UIDVALIDITY holds.
    Uid(u32)
);
id_newtype!(
    /// IMAP UIDVALIDITY of a mailbox.
    UidValidity(u32)
);
id_newtype!(
    /// CONDSTORE modification sequence of a mailbox: every change raises it.
    ModSeq(u64)
);
id_newtype!(
    /// Seconds since the Unix epoch, UTC. Decided before a command is proposed.
    UnixSeconds(i64)
);

/// SHA-256 of a message body: the name of its blob file.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlobHash(pub [u8; 32]);

impl BlobHash {
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(chunk).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(BlobHash(out))
    }
}
impl fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobHash({})", self.to_hex())
    }
}
impl fmt::Display for BlobHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A stored body: its hash and its size, as they travel inside commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobRef {
    pub hash: BlobHash,
    pub size_bytes: u64,
}

/// IMAP system flags of a message, as a bit set. Keywords travel beside it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SystemFlags(pub u8);

impl SystemFlags {
    pub const SEEN: u8 = 1;
    pub const ANSWERED: u8 = 2;
    pub const FLAGGED: u8 = 4;
    pub const DELETED: u8 = 8;
    pub const DRAFT: u8 = 16;

    pub fn contains(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
    /// IMAP names of the set flags, in a stable order.
    pub fn names(self) -> Vec<&'static str> {
        let all = [
            (Self::SEEN, "\\Seen"),
            (Self::ANSWERED, "\\Answered"),
            (Self::FLAGGED, "\\Flagged"),
            (Self::DELETED, "\\Deleted"),
            (Self::DRAFT, "\\Draft"),
        ];
        all.iter().filter(|(b, _)| self.contains(*b)).map(|(_, n)| *n).collect()
    }
}

/// What a site is in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SiteRole {
    /// Serves mail and holds a full voting replica; may become primary.
    Data,
    /// Votes and persists the log; never campaigns and serves no mail.
    Witness,
    /// Non-voting replica (Raft learner) far away; promoted only by a forced failover.
    Standby,
    /// Non-voting replica (Raft learner) that applies each entry
    /// `cluster.apply_delay_secs` after it arrived: the copy that logical corruption
    /// (a bad bulk expunge, a compromised admin) has not reached yet, since
    /// replication copies it faithfully everywhere else. Serves no mail.
    Lagged,
}

impl SiteRole {
    /// Whether this role votes in elections and counts toward the commit quorum.
    pub fn votes(self) -> bool {
        matches!(self, SiteRole::Data | SiteRole::Witness)
    }

    /// Whether this role serves SMTP and IMAP.
    pub fn serves_mail(self) -> bool {
        matches!(self, SiteRole::Data)
    }

    /// The name the config file, the admin API and the drill plans use.
    pub fn name(self) -> &'static str {
        match self {
            SiteRole::Data => "data",
            SiteRole::Witness => "witness",
            SiteRole::Standby => "standby",
            SiteRole::Lagged => "lagged",
        }
    }

    /// Whether this role is a non-voting replica (a Raft learner).
    pub fn is_learner(self) -> bool {
        matches!(self, SiteRole::Standby | SiteRole::Lagged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_fold_case_and_keep_their_parts() {
        let a = EmailAddress::parse("Alice@Example.TEST").unwrap();
        assert_eq!(a.as_str(), "alice@example.test");
        assert_eq!(a.local_part(), "alice");
        assert_eq!(a.domain_str(), "example.test");
    }

    #[test]
    fn an_address_that_parses_parses_again_to_itself_at_the_length_limits() {
        // 32 × İ is 64 bytes, and 96 once lowercased (found by the wire_frame fuzzer's harness).
        let long = format!("{}@example.test", "İ".repeat(32));
        assert!(EmailAddress::parse(&long).is_err(), "over 64 bytes in the form stored");
        let fits = format!("{}@example.test", "İ".repeat(21));
        let parsed = EmailAddress::parse(&fits).unwrap();
        assert_eq!(EmailAddress::parse(parsed.as_str()).unwrap(), parsed);
        let at_limit = format!("{}@example.test", "a".repeat(LOCAL_PART_LEN_MAX));
        assert!(EmailAddress::parse(&at_limit).is_ok());
        assert!(EmailAddress::parse(&format!("a{at_limit}")).is_err());
        let domain = format!("{}.test", "İ".repeat(60));
        if let Ok(parsed) = Domain::parse(&domain) {
            assert_eq!(Domain::parse(parsed.as_str()).unwrap(), parsed);
        }
    }

    #[test]
    fn malformed_addresses_are_refused_with_a_reason() {
        for bad in [
            "",
            "alice",
            "@example.test",
            "alice@",
            "a..b@example.test",
            "a b@example.test",
            "alice@localhost",
            "alice@-bad.test",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn domains_refuse_empty_labels_and_overlong_names() {
        assert!(Domain::parse("example..test").is_err());
        assert!(Domain::parse(&format!("{}.test", "a".repeat(64))).is_err());
        assert_eq!(Domain::parse("Example.Test.").unwrap().as_str(), "example.test");
    }

    #[test]
    fn inbox_is_case_insensitive_and_other_names_are_not() {
        assert!(MailboxName::parse("inbox").unwrap().is_inbox());
        assert_eq!(MailboxName::parse("Sent").unwrap().as_str(), "Sent");
        assert!(MailboxName::parse("a//b").is_err());
    }

    #[test]
    fn blob_hash_hex_round_trips() {
        let h = BlobHash([0xab; 32]);
        assert_eq!(BlobHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(BlobHash::from_hex("zz"), None);
    }
}
