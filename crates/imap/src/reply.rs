//! How answers are spelled: tagged and untagged statuses, response codes, and
//! the conversions between IMAP values and ours that every command shares
//! (mailbox names: `crate::names`).
//!
//! Nothing here decides an answer; commands do. This module must never panic on
//! client input: text is cleaned.

use std::num::NonZeroU32;

use imap_codec::imap_types::core::{Tag, Text, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::uidplus::{UidElement, UidSet};
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::{Code, CodeOther, Status};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use maildr_cluster::WriteError;
use maildr_store::CommandError;
use maildr_types::MailboxName;

pub(crate) fn text(s: impl Into<String>) -> Text<'static> {
    let cleaned: String = s.into().chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let cleaned = if cleaned.trim().is_empty() { "done".to_string() } else { cleaned };
    Text::try_from(cleaned).unwrap_or_else(|_| Text::try_from("done").expect("plain text is valid"))
}

pub(crate) fn other_code(name: &'static str) -> Code<'static> {
    Code::Other(CodeOther::unvalidated(name.as_bytes()))
}

pub(crate) fn ok(tag: &Tag<'static>, code: Option<Code<'static>>, t: impl Into<String>) -> Status<'static> {
    Status::ok(Some(tag.clone()), code, text(t)).expect("text is valid")
}
pub(crate) fn no(tag: &Tag<'static>, code: Option<Code<'static>>, t: impl Into<String>) -> Status<'static> {
    Status::no(Some(tag.clone()), code, text(t)).expect("text is valid")
}
pub(crate) fn bad(tag: Option<&Tag<'static>>, t: impl Into<String>) -> Status<'static> {
    Status::bad(tag.cloned(), None, text(t)).expect("text is valid")
}
pub(crate) fn untagged_ok(code: Code<'static>, t: &str) -> Status<'static> {
    Status::ok(None, Some(code), text(t)).expect("text is valid")
}

/// The answer to a store read that failed (redb or disk).
pub(crate) fn read_failed(tag: &Tag<'static>) -> Status<'static> {
    no(tag, Some(other_code("UNAVAILABLE")), "cannot read now")
}

/// The answer to a write the cluster did not commit or the state refused.
pub(crate) fn write_failed(tag: &Tag<'static>, e: WriteError) -> Status<'static> {
    match e {
        WriteError::Unavailable(why) => {
            tracing::warn!(why, "IMAP write not committed");
            no(tag, Some(other_code("UNAVAILABLE")), "not stored now; try again later")
        }
        WriteError::Refused(CommandError::OverQuota(_)) => no(tag, Some(Code::OverQuota), "over quota"),
        WriteError::Refused(CommandError::MailboxUnknown(m)) => {
            no(tag, Some(Code::TryCreate), format!("no mailbox {}", crate::names::wire_text(&m)))
        }
        WriteError::Refused(CommandError::MailboxExists(m)) => no(
            tag,
            Some(other_code("ALREADYEXISTS")),
            format!("mailbox {} already exists", crate::names::wire_name(&m)),
        ),
        WriteError::Refused(CommandError::InboxUndeletable) => {
            no(tag, Some(other_code("CANNOT")), "INBOX cannot be deleted")
        }
        WriteError::Refused(e) => no(tag, Some(other_code("CANNOT")), e.to_string()),
    }
}

pub(crate) fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("max(1) is non-zero")
}

/// A stored mailbox name as the client sees it: modified UTF-7 (RFC 3501
/// §5.1.3; the store keeps UTF-8, see `crate::names`), always 7-bit, so it is an
/// atom or a quoted string, never a literal.
pub(crate) fn imap_mailbox(name: &MailboxName) -> ImapMailbox<'static> {
    if name.is_inbox() {
        ImapMailbox::Inbox
    } else {
        let wire = crate::names::wire_name(name);
        ImapMailbox::try_from(wire).expect("modified UTF-7 of a parsed name is 7-bit without CR, LF or NUL")
    }
}

pub(crate) fn datetime(secs: i64) -> DateTime {
    use chrono::{FixedOffset, TimeZone};
    let utc = FixedOffset::east_opt(0).expect("zero offset");
    let dt = utc.timestamp_opt(secs, 0).single().unwrap_or_else(|| utc.timestamp_opt(0, 0).single().expect("epoch"));
    DateTime::unvalidated(dt)
}

/// A sequence set from numbers (as ranges where consecutive).
pub(crate) fn to_set(nums: &[u32]) -> Option<SequenceSet> {
    let mut sorted: Vec<u32> = nums.iter().copied().filter(|n| *n > 0).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut seqs = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        seqs.push(if start == end {
            Sequence::Single(SeqOrUid::Value(nz(start)))
        } else {
            Sequence::Range(SeqOrUid::Value(nz(start)), SeqOrUid::Value(nz(end)))
        });
        i += 1;
    }
    Vec1::try_from(seqs).ok().map(SequenceSet)
}

/// COPYUID wants the UIDs in the order they were copied; keep the order.
pub(crate) fn to_uid_set(nums: &[u32]) -> Option<UidSet> {
    let elements: Vec<UidElement> = nums.iter().map(|n| UidElement::Single(nz(*n))).collect();
    Vec1::try_from(elements).ok().map(UidSet)
}

/// The tag of a command that could not be parsed, if its first token is one.
pub(crate) fn tag_of(discarded: &[u8]) -> Option<Tag<'static>> {
    let end = discarded.iter().position(|b| *b == b' ' || *b == b'\r' || *b == b'\n')?;
    Tag::try_from(discarded[..end].to_vec()).ok()
}
