//! Conversions between IMAP flags and the store's flags and keywords.

use std::collections::BTreeSet;

use imap_codec::imap_types::core::Atom;
use imap_codec::imap_types::flag::{Flag, FlagFetch, FlagPerm};
use maildr_store::Message;
use maildr_types::SystemFlags;

/// Longest keyword accepted, and most keywords per message.
pub const KEYWORD_LEN_MAX: usize = 128;
pub const KEYWORDS_PER_MESSAGE_MAX: usize = 64;

pub fn system_flags() -> Vec<Flag<'static>> {
    vec![Flag::Answered, Flag::Flagged, Flag::Deleted, Flag::Seen, Flag::Draft]
}

/// A stored keyword as an IMAP flag; `None` for one that is no IMAP atom (FETCH
/// never shows those either).
fn keyword_flag(keyword: &str) -> Option<Flag<'static>> {
    Atom::try_from(keyword.to_string()).ok().map(Flag::Keyword)
}

/// FLAGS of a mailbox: the system flags and the keywords in use.
pub fn mailbox_flags(keywords: &BTreeSet<String>) -> Vec<Flag<'static>> {
    let mut out = system_flags();
    out.extend(keywords.iter().filter_map(|k| keyword_flag(k)));
    out
}

/// PERMANENTFLAGS of a mailbox opened read-write: every flag of FLAGS, and `\*`
/// (a client may create keywords).
pub fn permanent_flags(keywords: &BTreeSet<String>) -> Vec<FlagPerm<'static>> {
    let mut out: Vec<FlagPerm<'static>> = mailbox_flags(keywords).into_iter().map(FlagPerm::Flag).collect();
    out.push(FlagPerm::Asterisk);
    out
}

/// Split IMAP flags into system flags and keywords; `\Recent` and unknown
/// backslash flags are ignored, as RFC 3501 allows.
pub fn split(flags: &[Flag<'_>]) -> Result<(SystemFlags, Vec<String>), String> {
    let mut bits = 0u8;
    let mut keywords = Vec::new();
    for flag in flags {
        match flag {
            Flag::Seen => bits |= SystemFlags::SEEN,
            Flag::Answered => bits |= SystemFlags::ANSWERED,
            Flag::Flagged => bits |= SystemFlags::FLAGGED,
            Flag::Deleted => bits |= SystemFlags::DELETED,
            Flag::Draft => bits |= SystemFlags::DRAFT,
            Flag::Extension(_) => {}
            Flag::Keyword(atom) => {
                let k = atom.inner();
                if k.len() > KEYWORD_LEN_MAX {
                    return Err(format!("keyword longer than {KEYWORD_LEN_MAX} bytes"));
                }
                keywords.push(k.to_string());
            }
        }
    }
    if keywords.len() > KEYWORDS_PER_MESSAGE_MAX {
        return Err(format!("more than {KEYWORDS_PER_MESSAGE_MAX} keywords"));
    }
    Ok((SystemFlags(bits), keywords))
}

/// A message's flags as FETCH shows them, `\Recent` when `recent`.
pub fn flags_to_fetch(message: &Message, recent: bool) -> Vec<FlagFetch<'static>> {
    let f = message.flags;
    let mut out = Vec::new();
    for (bit, flag) in [
        (SystemFlags::SEEN, Flag::Seen),
        (SystemFlags::ANSWERED, Flag::Answered),
        (SystemFlags::FLAGGED, Flag::Flagged),
        (SystemFlags::DELETED, Flag::Deleted),
        (SystemFlags::DRAFT, Flag::Draft),
    ] {
        if f.contains(bit) {
            out.push(FlagFetch::Flag(flag));
        }
    }
    if recent {
        out.push(FlagFetch::Recent);
    }
    out.extend(message.keywords.iter().filter_map(|k| keyword_flag(k)).map(FlagFetch::Flag));
    out
}
