//! A session's view of its selected mailbox, and how it catches up.
//!
//! IMAP numbers messages by position, and positions may only shift when the
//! client is told (EXPUNGE), never in the middle of a FETCH, STORE or SEARCH
//! (RFC 3501 §7.4.1). The view therefore keeps its own list of messages, and
//! `sync` compares it with the store to produce exactly the untagged updates the
//! client needs: EXPUNGE (when allowed), flag changes as FETCH, and EXISTS.

use std::collections::HashMap;
use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use maildr_store::{Message, Store, StoreError};
use maildr_types::{MailboxId, ModSeq, Uid};

use crate::flags::flags_to_fetch;

/// A count of messages in one mailbox (or a 0-based position among them) as
/// IMAP's 32-bit number. It cannot truncate: each message holds a distinct
/// non-zero u32 UID, so a mailbox has at most `u32::MAX` messages.
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn message_count(n: usize) -> u32 {
    n as u32
}

pub struct View {
    pub mailbox: MailboxId,
    pub read_only: bool,
    /// Messages in sequence order (ascending UID). Expunged messages stay until
    /// the client may be told.
    pub messages: Vec<Message>,
    /// Set when the write path reported a change to this mailbox.
    pub dirty: bool,
}

impl View {
    pub fn open(store: &Store, mailbox: MailboxId, read_only: bool) -> Result<View, StoreError> {
        Ok(View { mailbox, read_only, messages: store.messages(mailbox)?, dirty: false })
    }

    pub fn exists(&self) -> u32 {
        message_count(self.messages.len())
    }

    pub fn highest_uid(&self) -> Option<Uid> {
        self.messages.last().map(|m| m.uid)
    }

    /// Bring the view up to date, pushing the untagged responses that tell the
    /// client. `allow_expunge` is false while answering FETCH, STORE and SEARCH.
    pub fn sync(
        &mut self,
        store: &Store,
        allow_expunge: bool,
        condstore: bool,
        out: &mut Vec<Data<'static>>,
    ) -> Result<(), StoreError> {
        let current = store.messages(self.mailbox)?;
        let by_uid: HashMap<Uid, &Message> = current.iter().map(|m| (m.uid, m)).collect();
        if allow_expunge {
            for index in (0..self.messages.len()).rev() {
                if !by_uid.contains_key(&self.messages[index].uid) {
                    self.messages.remove(index);
                    let seq = NonZeroU32::new(message_count(index) + 1).expect("index + 1 > 0");
                    out.push(Data::Expunge(seq));
                }
            }
        }
        for (index, message) in self.messages.iter_mut().enumerate() {
            if let Some(now) = by_uid.get(&message.uid) {
                if now.modseq != message.modseq {
                    assert!(now.modseq > message.modseq, "MODSEQ of a message went back");
                    *message = (*now).clone();
                    let mut items = vec![MessageDataItem::Flags(flags_to_fetch(message)), uid_item(message.uid)];
                    if condstore {
                        items.push(modseq_item(message.modseq));
                    }
                    out.push(Data::Fetch {
                        seq: NonZeroU32::new(message_count(index) + 1).expect("index + 1 > 0"),
                        items: Vec1::try_from(items).expect("non-empty"),
                    });
                }
            }
        }
        let last = self.highest_uid().map(|u| u.0).unwrap_or(0);
        let before = self.messages.len();
        self.messages.extend(current.iter().filter(|m| m.uid.0 > last).cloned());
        if self.messages.len() != before {
            out.push(Data::Exists(self.exists()));
        }
        // Expunges we could not report yet keep the view dirty until we can.
        self.dirty = self.messages.iter().any(|m| !by_uid.contains_key(&m.uid));
        Ok(())
    }

    /// Indexes of the messages a sequence set names, by sequence number or UID.
    pub fn select(&self, set: &SequenceSet, by_uid: bool) -> Vec<usize> {
        if self.messages.is_empty() {
            return Vec::new();
        }
        let largest = if by_uid { self.highest_uid().map(|u| u.0).unwrap_or(0) } else { self.exists() };
        let mut out = Vec::new();
        for (index, message) in self.messages.iter().enumerate() {
            let n = if by_uid { message.uid.0 } else { message_count(index) + 1 };
            if set_contains(set, n, largest) {
                out.push(index);
            }
        }
        out
    }
}

pub fn uid_item(uid: Uid) -> MessageDataItem<'static> {
    MessageDataItem::Uid(NonZeroU32::new(uid.0).expect("UIDs start at 1"))
}

pub fn modseq_item(modseq: ModSeq) -> MessageDataItem<'static> {
    MessageDataItem::ModSeq(NonZeroU64::new(modseq.0).expect("MODSEQ starts at 1"))
}

/// Is `n` in the set? `*` stands for `largest`. Evaluated per number, so a set
/// like `1:4294967295` costs nothing (no expansion).
pub fn set_contains(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|seq| match seq {
        Sequence::Single(s) => value(s) == n,
        Sequence::Range(a, b) => {
            let (lo, hi) = (value(a).min(value(b)), value(a).max(value(b)));
            lo <= n && n <= hi
        }
    })
}
