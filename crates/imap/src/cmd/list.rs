//! LIST and LSUB: the account's mailboxes that match a pattern, with their
//! child and special-use attributes.
//!
//! The hierarchy delimiter is `/`. Names are listed, and patterns matched, in
//! the spelling the client uses (modified UTF-7, `crate::names`), so a pattern
//! the client built from a name it was shown matches that name. This module
//! only reads; it must never create or subscribe anything.

use imap_codec::imap_types::core::{Atom, QuotedChar, Tag};
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox as ImapMailbox};
use imap_codec::imap_types::response::Data;
use imap_next::server::Server;
use maildr_store::Mailbox;

use crate::blocking::store_read;
use crate::reply::{imap_mailbox, no, ok, other_code};
use crate::session::Session;

/// Longest reference plus pattern a LIST or LSUB may carry: far longer than any
/// mailbox name, short enough that matching it against every mailbox is cheap.
pub const LIST_PATTERN_BYTES_MAX: usize = 1024;

/// A LIST pattern with runs of wildcards merged (`*` swallows any `%` beside it),
/// which does not change what it matches.
fn compact(pattern: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(pattern.len());
    for &c in pattern {
        match (out.last().copied(), c) {
            (Some(b'*'), b'*' | b'%') | (Some(b'%'), b'%') => {}
            (Some(b'%'), b'*') => *out.last_mut().expect("checked") = b'*',
            _ => out.push(c),
        }
    }
    out
}

/// LIST pattern matching: `*` matches anything, `%` anything but the delimiter.
///
/// A simulation of the pattern's automaton, one name byte at a time over the set
/// of pattern positions still alive: time is at most pattern × name, whatever the
/// pattern (a backtracking matcher is exponential in the number of wildcards),
/// and there is no recursion.
fn list_matches(pattern: &[u8], name: &[u8]) -> bool {
    let p = compact(pattern);
    // alive[i]: the first i pattern bytes can match the name bytes read so far.
    let mut alive = vec![false; p.len() + 1];
    let mut next = vec![false; p.len() + 1];
    alive[0] = true;
    close(&p, &mut alive);
    for &c in name {
        next.iter_mut().for_each(|b| *b = false);
        for i in (0..p.len()).filter(|&i| alive[i]) {
            match p[i] {
                b'*' => next[i] = true,
                b'%' if c != DELIMITER => next[i] = true,
                b'%' => {}
                literal if literal == c => next[i + 1] = true,
                _ => {}
            }
        }
        close(&p, &mut next);
        std::mem::swap(&mut alive, &mut next);
        if !alive.contains(&true) {
            return false;
        }
    }
    alive[p.len()]
}

/// A wildcard may match nothing: whoever reaches one also reaches what follows it.
fn close(p: &[u8], alive: &mut [bool]) {
    for i in 0..p.len() {
        if alive[i] && matches!(p[i], b'*' | b'%') {
            alive[i + 1] = true;
        }
    }
}

/// The hierarchy separator LIST announces.
pub(crate) const DELIMITER: u8 = b'/';

fn delimiter() -> Option<QuotedChar> {
    Some(QuotedChar::try_from(char::from(DELIMITER)).expect("valid"))
}

/// Does the full pattern (reference + wildcard) name this mailbox, as the
/// client spells it? INBOX matches case-insensitively.
fn pattern_matches(full: &[u8], m: &Mailbox) -> bool {
    let name = crate::names::wire_name(&m.name);
    if m.name.is_inbox() {
        list_matches(&full.to_ascii_uppercase(), b"INBOX") || list_matches(full, name.as_bytes())
    } else {
        list_matches(full, name.as_bytes())
    }
}

/// One LIST / LSUB line.
fn list_entry(m: &Mailbox, names: &[String], lsub: bool) -> Data<'static> {
    let mut items = Vec::new();
    let prefix = format!("{}/", m.name);
    let children = names.iter().any(|n| n.starts_with(&prefix));
    let child_attr = if children { "HasChildren" } else { "HasNoChildren" };
    if let Ok(atom) = Atom::try_from(child_attr) {
        items.push(FlagNameAttribute::from(atom));
    }
    if let Some(attr) = m.special_use.and_then(|s| s.imap_attribute()) {
        if let Ok(atom) = Atom::try_from(attr.trim_start_matches('\\').to_string()) {
            items.push(FlagNameAttribute::from(atom));
        }
    }
    let mailbox = imap_mailbox(&m.name);
    if lsub {
        Data::Lsub { items, delimiter: delimiter(), mailbox }
    } else {
        Data::List { items, delimiter: delimiter(), mailbox }
    }
}

impl Session {
    /// LIST (`lsub` false) and LSUB (only subscribed mailboxes).
    pub(crate) fn list(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        reference: &ImapMailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) {
        let Some(account) = self.account() else {
            server.enqueue_status(no(tag, None, "account no longer exists"));
            return;
        };
        let mut full = match reference {
            ImapMailbox::Inbox => b"INBOX".to_vec(),
            ImapMailbox::Other(o) => o.as_ref().to_vec(),
        };
        let pattern_bytes: Vec<u8> = match pattern {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        if pattern_bytes.is_empty() && !lsub {
            // RFC 3501 §6.3.8: an empty pattern asks for the hierarchy delimiter.
            server.enqueue_data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter: delimiter(),
                mailbox: ImapMailbox::try_from("").unwrap_or(ImapMailbox::Inbox),
            });
            server.enqueue_status(ok(tag, None, "LIST completed"));
            return;
        }
        if full.len() + pattern_bytes.len() > LIST_PATTERN_BYTES_MAX {
            server.enqueue_status(no(
                tag,
                Some(other_code("LIMIT")),
                format!("reference and pattern longer than {LIST_PATTERN_BYTES_MAX} bytes"),
            ));
            return;
        }
        full.extend_from_slice(&pattern_bytes);
        let mailboxes = match store_read(|| self.cluster().store().mailboxes(account.id)) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "listing mailboxes failed");
                server.enqueue_status(no(tag, Some(other_code("UNAVAILABLE")), "cannot read mailboxes now"));
                return;
            }
        };
        let names: Vec<String> = mailboxes.iter().map(|m| m.name.to_string()).collect();
        for m in mailboxes.iter().filter(|m| pattern_matches(&full, m) && (!lsub || m.subscribed)) {
            server.enqueue_data(list_entry(m, &names, lsub));
        }
        server.enqueue_status(ok(tag, None, if lsub { "LSUB completed" } else { "LIST completed" }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_wildcards_follow_rfc_3501() {
        assert!(list_matches(b"*", b"a/b/c"));
        assert!(list_matches(b"%", b"INBOX"));
        assert!(!list_matches(b"%", b"a/b"));
        assert!(list_matches(b"a/%", b"a/b"));
        assert!(!list_matches(b"a/%", b"a/b/c"));
        assert!(list_matches(b"a*c", b"a/b/c"));
        assert!(list_matches(b"", b""));
        assert!(!list_matches(b"", b"a"));
        assert!(list_matches(b"%/%", b"a/b"));
        assert!(!list_matches(b"%/%", b"a/b/c"));
        assert!(list_matches(b"*/c", b"a/b/c"));
        assert!(list_matches(b"a%*%b", b"a/x/b"), "a * among % matches across the delimiter");
        assert!(!list_matches(b"a%%b", b"a/b"));
        assert!(list_matches(b"INBOX*", b"INBOX"));
        assert!(!list_matches(b"Sent", b"Sen"));
    }

    #[test]
    fn wildcard_runs_are_merged_without_changing_what_matches() {
        assert_eq!(compact(b"a**%%*b%%c"), b"a*b%c");
        assert_eq!(compact(b"%%*"), b"*");
        assert_eq!(compact(b"*%"), b"*");
    }

    #[test]
    fn the_pathological_pattern_is_answered_at_once() {
        let mut pattern = vec![b'*'; 500];
        pattern.extend_from_slice(b"x");
        let mut spread: Vec<u8> = b"a%".repeat(500);
        spread.push(b'x');
        let name = vec![b'a'; 1000];
        // A backtracking matcher would not finish these in the universe's age.
        assert!(!list_matches(&pattern, &name));
        assert!(!list_matches(&spread, &name));
        assert!(list_matches(&spread[..spread.len() - 1], &b"a".repeat(500)));
    }
}
