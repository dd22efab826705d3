//! LIST and LSUB: the account's mailboxes that match a pattern, with their
//! child and special-use attributes.
//!
//! The hierarchy delimiter is `/`. This module only reads; it must never create
//! or subscribe anything.

use imap_codec::imap_types::core::{Atom, QuotedChar, Tag};
use imap_codec::imap_types::flag::FlagNameAttribute;
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox as ImapMailbox};
use imap_codec::imap_types::response::Data;
use imap_next::server::Server;
use maildr_store::Mailbox;

use crate::blocking::store_read;
use crate::reply::{imap_mailbox, no, ok, other_code};
use crate::session::Session;

/// LIST pattern matching: `*` matches anything, `%` anything but the delimiter.
fn list_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| list_matches(rest, &name[i..])),
        Some((b'%', rest)) => {
            (0..=name.len()).take_while(|&i| i == 0 || name[i - 1] != b'/').any(|i| list_matches(rest, &name[i..]))
        }
        Some((c, rest)) => name.first() == Some(c) && list_matches(rest, &name[1..]),
    }
}

fn delimiter() -> Option<QuotedChar> {
    Some(QuotedChar::try_from('/').expect("valid"))
}

/// Does the full pattern (reference + wildcard) name this mailbox? INBOX
/// matches case-insensitively.
fn pattern_matches(full: &[u8], m: &Mailbox) -> bool {
    let name = m.name.as_str().as_bytes();
    if m.name.is_inbox() {
        list_matches(&full.to_ascii_uppercase(), b"INBOX") || list_matches(full, name)
    } else {
        list_matches(full, name)
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
    }
}
