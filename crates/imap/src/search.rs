//! SEARCH: evaluate search keys against the messages of a view.
//!
//! Flags, sizes, dates and UIDs come from the message records; headers and text
//! need the body, which is read (through [`BodyReader`]) and parsed only when a
//! key asks for it. A body that cannot be read is never taken for a non-match:
//! the candidate remembers it, and the command answers that bodies are
//! unavailable instead of a result that leaves the message out. Matching is
//! case-insensitive substring matching on UTF-8 (CHARSET UTF-8 and US-ASCII).

use chrono::{NaiveDate, TimeZone, Utc};
use imap_codec::imap_types::search::SearchKey;
use maildr_store::Message;
use maildr_types::SystemFlags;

use crate::bodies::BodyReader;
use crate::mime;
use crate::view::set_contains;

/// Deepest NOT/OR/AND nesting evaluated; imap-codec bounds parsing depth too.
const SEARCH_DEPTH_MAX: usize = 64;

pub struct Candidate<'a> {
    pub seq: u32,
    pub message: &'a Message,
    /// `\Recent` in the searching session.
    pub recent: bool,
    body: Option<Vec<u8>>,
    loaded: bool,
    body_missing: bool,
}

impl<'a> Candidate<'a> {
    pub fn new(seq: u32, message: &'a Message, recent: bool) -> Self {
        Candidate { seq, message, recent, body: None, loaded: false, body_missing: false }
    }
    fn body(&mut self, bodies: &BodyReader) -> Option<&[u8]> {
        if !self.loaded {
            self.loaded = true;
            self.body = bodies.read(&self.message.body).ok();
            self.body_missing = self.body.is_none();
        }
        self.body.as_deref()
    }
    /// A key needed this message's body and it could not be read: the result
    /// for this message is unknown, not "no match".
    pub fn body_missing(&self) -> bool {
        self.body_missing
    }
}

pub struct Context<'s> {
    pub bodies: &'s BodyReader,
    pub exists: u32,
    pub highest_uid: u32,
}

fn contains_ci(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

fn date_of(secs: i64) -> Option<NaiveDate> {
    Utc.timestamp_opt(secs, 0).single().map(|d| d.date_naive())
}

/// The day the Date: header names, in the header's own time zone: RFC 3501
/// §6.4.4 compares it "disregarding time and timezone", so a message written on
/// the evening of the 1st at -0800 was sent on the 1st, though it was the 2nd in
/// UTC.
fn sent_date(candidate: &mut Candidate<'_>, bodies: &BodyReader) -> Option<NaiveDate> {
    let body = candidate.body(bodies)?;
    let parsed = mime::parse(body)?;
    let date = parsed.date()?;
    NaiveDate::from_ymd_opt(i32::from(date.year), u32::from(date.month), u32::from(date.day))
}

fn header_matches(candidate: &mut Candidate<'_>, bodies: &BodyReader, name: &str, needle: &str) -> bool {
    let Some(body) = candidate.body(bodies) else { return false };
    let Some(parsed) = mime::parse(body) else { return false };
    match mime::header_text(&parsed, name) {
        Some(value) => needle.is_empty() || contains_ci(&value, needle),
        None => false,
    }
}

fn text_matches(candidate: &mut Candidate<'_>, bodies: &BodyReader, needle: &str, include_header: bool) -> bool {
    let Some(raw) = candidate.body(bodies) else { return false };
    let Some(parsed) = mime::parse(raw) else { return false };
    if include_header && contains_ci(&String::from_utf8_lossy(mime::header_of(raw)), needle) {
        return true;
    }
    // Decoded text of every text part, so quoted-printable and base64 bodies match.
    let mut i = 0;
    while let Some(text) = parsed.body_text(i) {
        if contains_ci(&text, needle) {
            return true;
        }
        i += 1;
    }
    let mut i = 0;
    while let Some(html) = parsed.body_html(i) {
        if contains_ci(&html, needle) {
            return true;
        }
        i += 1;
    }
    false
}

fn astr(s: &impl AsRef<[u8]>) -> String {
    String::from_utf8_lossy(s.as_ref()).into_owned()
}

pub fn matches(key: &SearchKey<'_>, c: &mut Candidate<'_>, ctx: &Context<'_>, depth: usize) -> bool {
    if depth > SEARCH_DEPTH_MAX {
        return false;
    }
    let m = c.message;
    let flag = |bit| m.flags.contains(bit);
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c, ctx, depth + 1)),
        SearchKey::Or(a, b) => matches(a, c, ctx, depth + 1) || matches(b, c, ctx, depth + 1),
        SearchKey::Not(k) => !matches(k, c, ctx, depth + 1),
        SearchKey::SequenceSet(set) => set_contains(set, c.seq, ctx.exists),
        SearchKey::Uid(set) => set_contains(set, m.uid.0, ctx.highest_uid),
        SearchKey::All => true,
        SearchKey::Answered => flag(SystemFlags::ANSWERED),
        SearchKey::Unanswered => !flag(SystemFlags::ANSWERED),
        SearchKey::Deleted => flag(SystemFlags::DELETED),
        SearchKey::Undeleted => !flag(SystemFlags::DELETED),
        SearchKey::Draft => flag(SystemFlags::DRAFT),
        SearchKey::Undraft => !flag(SystemFlags::DRAFT),
        SearchKey::Flagged => flag(SystemFlags::FLAGGED),
        SearchKey::Unflagged => !flag(SystemFlags::FLAGGED),
        SearchKey::Seen => flag(SystemFlags::SEEN),
        SearchKey::Unseen => !flag(SystemFlags::SEEN),
        SearchKey::Recent => c.recent,
        SearchKey::New => c.recent && !flag(SystemFlags::SEEN),
        SearchKey::Old => !c.recent,
        SearchKey::Keyword(k) => m.keywords.iter().any(|x| x.eq_ignore_ascii_case(k.inner())),
        SearchKey::Unkeyword(k) => !m.keywords.iter().any(|x| x.eq_ignore_ascii_case(k.inner())),
        SearchKey::Larger(n) => m.size_bytes > u64::from(*n),
        SearchKey::Smaller(n) => m.size_bytes < u64::from(*n),
        SearchKey::Before(d) => date_of(m.internal_date.0).is_some_and(|x| x < *d.as_ref()),
        SearchKey::On(d) => date_of(m.internal_date.0).is_some_and(|x| x == *d.as_ref()),
        SearchKey::Since(d) => date_of(m.internal_date.0).is_some_and(|x| x >= *d.as_ref()),
        SearchKey::SentBefore(d) => sent_date(c, ctx.bodies).is_some_and(|x| x < *d.as_ref()),
        SearchKey::SentOn(d) => sent_date(c, ctx.bodies).is_some_and(|x| x == *d.as_ref()),
        SearchKey::SentSince(d) => sent_date(c, ctx.bodies).is_some_and(|x| x >= *d.as_ref()),
        SearchKey::From(s) => header_matches(c, ctx.bodies, "From", &astr(s)),
        SearchKey::To(s) => header_matches(c, ctx.bodies, "To", &astr(s)),
        SearchKey::Cc(s) => header_matches(c, ctx.bodies, "Cc", &astr(s)),
        SearchKey::Bcc(s) => header_matches(c, ctx.bodies, "Bcc", &astr(s)),
        SearchKey::Subject(s) => header_matches(c, ctx.bodies, "Subject", &astr(s)),
        SearchKey::Header(name, value) => header_matches(c, ctx.bodies, &astr(name), &astr(value)),
        SearchKey::Body(s) => text_matches(c, ctx.bodies, &astr(s), false),
        SearchKey::Text(s) => text_matches(c, ctx.bodies, &astr(s), true),
        SearchKey::ModSequence { modseq, .. } => m.modseq.0 >= *modseq,
    }
}

/// Does the search use MODSEQ (then the response carries the highest MODSEQ)?
pub fn uses_modseq(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        _ => false,
    }
}

/// Does evaluating this key read message bodies (headers, text, sent date)?
pub fn needs_body(key: &SearchKey<'_>) -> bool {
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().any(needs_body),
        SearchKey::Or(a, b) => needs_body(a) || needs_body(b),
        SearchKey::Not(k) => needs_body(k),
        SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Cc(_)
        | SearchKey::Bcc(_)
        | SearchKey::Subject(_)
        | SearchKey::Header(..)
        | SearchKey::Body(_)
        | SearchKey::Text(_) => true,
        _ => false,
    }
}
