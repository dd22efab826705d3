//! A session's view of its selected mailbox, and how it catches up.
//!
//! IMAP numbers messages by position, and positions may only shift when the
//! client is told (EXPUNGE), never in the middle of a FETCH, STORE or SEARCH
//! (RFC 3501 §7.4.1). The view therefore keeps its own list of messages, and
//! `sync` compares it with the store to produce exactly the untagged updates the
//! client needs: EXPUNGE (when allowed), flag changes as FETCH, EXISTS and
//! RECENT.
//!
//! The view also keeps what the client was told the mailbox's flags are: a
//! client builds its flag list from FLAGS and PERMANENTFLAGS (RFC 3501 §7.2.6,
//! §7.1), so a keyword the client was never told of is announced with a new
//! FLAGS (and PERMANENTFLAGS) before any FETCH can show it, whoever set it.
//! And it holds which messages are `\Recent` for this session
//! ([`crate::recent`]).

use std::collections::BTreeSet;
use std::num::{NonZeroU32, NonZeroU64};

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::flag::FlagFetch;
use imap_codec::imap_types::response::{Code, Data, Status};
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use imap_next::server::Server;
use maildr_store::{Mailbox, Message, Store, StoreError};
use maildr_types::{MailboxId, ModSeq, Uid};

use crate::flags::{self, flags_to_fetch};
use crate::recent::{MailboxKey, RecentMarks, RecentUids};
use crate::reply::untagged_ok;

/// An untagged response telling the client what changed in its mailbox.
pub enum Update {
    Data(Data<'static>),
    Status(Status<'static>),
}

impl Update {
    pub fn enqueue(self, server: &mut Server) {
        match self {
            Update::Data(d) => {
                server.enqueue_data(d);
            }
            Update::Status(s) => {
                server.enqueue_status(s);
            }
        }
    }

    /// The sequence number of the message this FETCH update is about.
    pub fn fetch_seq(&self) -> Option<u32> {
        match self {
            Update::Data(Data::Fetch { seq, .. }) => Some(seq.get()),
            _ => None,
        }
    }
}

/// A count of messages in one mailbox (or a 0-based position among them) as
/// IMAP's 32-bit number. It cannot truncate: each message holds a distinct
/// non-zero u32 UID, so a mailbox has at most `u32::MAX` messages.
#[allow(clippy::cast_possible_truncation)]
pub(crate) fn message_count(n: usize) -> u32 {
    n as u32
}

/// The extensions a session has enabled that change what it is told.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extensions {
    /// CONDSTORE: flag changes carry MODSEQ.
    pub condstore: bool,
    /// QRESYNC: expunges are told as VANISHED (implies CONDSTORE).
    pub qresync: bool,
}

pub struct View {
    pub mailbox: MailboxId,
    /// The mailbox as recent-ness knows it (UIDs restart with UIDVALIDITY).
    key: MailboxKey,
    pub read_only: bool,
    /// Messages in sequence order (ascending UID). Expunged messages stay until
    /// the client may be told.
    pub messages: Vec<Message>,
    /// Set when the write path reported a change to this mailbox.
    pub dirty: bool,
    /// Above every UID this view holds or held: UIDs below it that the view
    /// lacks are gone (what QRESYNC answers from when the store's record of
    /// expunges does not reach back far enough).
    pub uid_next: Uid,
    /// The keywords the client was told of (FLAGS); none is ever taken back
    /// while the mailbox is selected, so FLAGS is only sent again for new ones.
    keywords: BTreeSet<String>,
    /// The messages that are `\Recent` in this session.
    recent: RecentUids,
    /// The mailbox's HIGHESTMODSEQ when the view last caught up (or less): a
    /// catch-up reads only what changed after it ([`Store::mailbox_changes`]).
    seen_modseq: ModSeq,
    /// Messages of the view the store no longer has, not yet told as expunged.
    held: BTreeSet<Uid>,
}

impl View {
    /// Open the view of `mailbox`; a read-write view claims what is recent.
    pub fn open(store: &Store, mailbox: &Mailbox, read_only: bool, marks: &RecentMarks) -> Result<View, StoreError> {
        let messages = store.messages(mailbox.id)?;
        let keywords = messages.iter().flat_map(|m| m.keywords.iter().cloned()).collect();
        let highest = messages.last().map(|m| m.uid.0.saturating_add(1)).unwrap_or(1);
        let mut view = View {
            mailbox: mailbox.id,
            key: (mailbox.id, mailbox.uid_validity),
            read_only,
            messages,
            dirty: false,
            uid_next: Uid(mailbox.uid_next.0.max(highest)),
            keywords,
            recent: RecentUids::default(),
            // Read before the messages: at most what they show, so a catch-up
            // from it never misses a change (it may see one it already has).
            seen_modseq: mailbox.highest_modseq,
            held: BTreeSet::new(),
        };
        view.learn_recent(marks);
        Ok(view)
    }

    /// Take as recent the messages above what this view held so far that no
    /// read-write session was told of: claimed when read-write, only looked at
    /// when read-only (EXAMINE must not take `\Recent` from anyone).
    fn learn_recent(&mut self, marks: &RecentMarks) {
        let Some(highest) = self.highest_uid() else { return };
        if self.read_only {
            // A mark at u32::MAX leaves nothing above it.
            let Some(from) = marks.peek(self.key).max(self.recent.highest()).checked_add(1) else { return };
            if from <= highest.0 {
                self.recent.add((from, highest.0));
            }
        } else if let Some(claimed) = marks.claim(self.key, highest.0) {
            self.recent.add(claimed);
        }
    }

    pub fn is_recent(&self, uid: Uid) -> bool {
        self.recent.contains(uid.0)
    }

    /// How many messages of the view are `\Recent` in this session.
    /// Counted per recent range in the UID-ordered messages: a few binary
    /// searches, not a look at every message of a large mailbox at each arrival.
    pub fn recent_count(&self) -> u32 {
        let in_range = |(first, last): &(u32, u32)| {
            let from = self.messages.partition_point(|m| m.uid.0 < *first);
            let to = self.messages.partition_point(|m| m.uid.0 <= *last);
            to - from
        };
        message_count(self.recent.ranges().iter().map(in_range).sum())
    }

    /// A message's flags as FETCH shows them to this session.
    pub fn fetch_flags(&self, message: &Message) -> Vec<FlagFetch<'static>> {
        flags_to_fetch(message, self.is_recent(message.uid))
    }

    /// FLAGS and PERMANENTFLAGS as this view announces them.
    pub fn flag_announcement(&self) -> [Update; 2] {
        let permanent = if self.read_only { Vec::new() } else { flags::permanent_flags(&self.keywords) };
        [
            Update::Data(Data::Flags(flags::mailbox_flags(&self.keywords))),
            Update::Status(untagged_ok(Code::PermanentFlags(permanent), "flags")),
        ]
    }

    pub fn exists(&self) -> u32 {
        message_count(self.messages.len())
    }

    pub fn highest_uid(&self) -> Option<Uid> {
        self.messages.last().map(|m| m.uid)
    }

    /// Bring the view up to date, pushing the untagged responses that tell the
    /// client. `allow_expunge` is false while answering FETCH, STORE and SEARCH.
    /// Expunges are told as EXPUNGE, or once QRESYNC is enabled as one VANISHED
    /// (RFC 7162 §3.2.10).
    ///
    /// It reads what changed since the view last caught up, by MODSEQ: a session
    /// idling on a mailbox of 100,000 messages that receives one pays for one. It
    /// compares the whole mailbox only when the record of expunges does not reach
    /// back far enough, or the mailbox is gone.
    pub fn sync(
        &mut self,
        store: &Store,
        marks: &RecentMarks,
        allow_expunge: bool,
        extensions: Extensions,
        out: &mut Vec<Update>,
    ) -> Result<(), StoreError> {
        let (changed_or_new, gone, seen) = match store.mailbox_changes(self.mailbox, self.seen_modseq)? {
            Some(changes) => match changes.expunged {
                Some(expunged) => {
                    let gone = expunged.into_iter().filter(|u| self.position(*u).is_some()).collect();
                    (changes.changed, gone, changes.mailbox.highest_modseq)
                }
                // Read after the mailbox row: every change up to its MODSEQ is in it.
                None => self.compare_whole(store, changes.mailbox.highest_modseq)?,
            },
            // The mailbox is gone, and every message with it.
            None => (Vec::new(), self.messages.iter().map(|m| m.uid).collect(), self.seen_modseq),
        };
        self.held.extend(gone);
        if allow_expunge && !self.held.is_empty() {
            self.tell_expunges(extensions.qresync, out);
        }
        let condstore = extensions.condstore;
        let last = self.highest_uid().map(|u| u.0).unwrap_or(0);
        let mut changed = Vec::new();
        let mut new = Vec::new();
        for now in changed_or_new {
            if now.uid.0 > last {
                new.push(now);
            } else if let Some(index) = self.position(now.uid) {
                let message = &mut self.messages[index];
                if now.modseq != message.modseq {
                    assert!(now.modseq > message.modseq, "MODSEQ of a message went back");
                    *message = now;
                    changed.push(index);
                }
            }
        }
        let before = self.messages.len();
        self.messages.extend(new);
        let added = before..self.messages.len();
        if let Some(highest) = self.highest_uid() {
            self.uid_next = Uid(self.uid_next.0.max(highest.0.saturating_add(1)));
        }
        // New keywords first: the client must know them before a FETCH shows them.
        let known = self.keywords.len();
        for index in changed.iter().copied().chain(added.clone()) {
            self.keywords.extend(self.messages[index].keywords.iter().cloned());
        }
        if self.keywords.len() != known {
            out.extend(self.flag_announcement());
        }
        if !added.is_empty() {
            self.learn_recent(marks);
        }
        let told_modseq = changed.iter().map(|i| self.messages[*i].modseq).max();
        for index in changed {
            let message = &self.messages[index];
            let mut items = vec![MessageDataItem::Flags(self.fetch_flags(message)), uid_item(message.uid)];
            if condstore {
                items.push(modseq_item(message.modseq));
            }
            out.push(Update::Data(Data::Fetch {
                seq: NonZeroU32::new(message_count(index) + 1).expect("index + 1 > 0"),
                items: Vec1::try_from(items).expect("non-empty"),
            }));
        }
        if let (true, Some(told)) = (condstore && !allow_expunge, told_modseq) {
            self.hold_back_highest_modseq(store, told, out)?;
        }
        if !added.is_empty() {
            out.push(Update::Data(Data::Exists(self.exists())));
            out.push(Update::Data(Data::Recent(self.recent_count())));
        }
        self.seen_modseq = self.seen_modseq.max(seen);
        // Expunges we could not report yet keep the view dirty until we can.
        self.dirty = !self.held.is_empty();
        Ok(())
    }

    /// The whole mailbox against the view, for when the record of expunges does
    /// not reach back to what the view saw: every message (the catch-up keeps
    /// those it has at the same MODSEQ), the view's messages the store lacks, and
    /// `seen`, read before the messages.
    fn compare_whole(&self, store: &Store, seen: ModSeq) -> Result<(Vec<Message>, Vec<Uid>, ModSeq), StoreError> {
        let current = store.messages(self.mailbox)?;
        let present: std::collections::HashSet<Uid> = current.iter().map(|m| m.uid).collect();
        let gone = self.messages.iter().map(|m| m.uid).filter(|u| !present.contains(u)).collect();
        Ok((current, gone, seen))
    }

    /// Remove the held expunges from the view and tell them: one VANISHED with
    /// QRESYNC, else an EXPUNGE per message from the highest sequence number down.
    fn tell_expunges(&mut self, qresync: bool, out: &mut Vec<Update>) {
        let held = std::mem::take(&mut self.held);
        if qresync {
            self.messages.retain(|m| !held.contains(&m.uid));
            let gone: Vec<u32> = held.iter().map(|u| u.0).collect();
            let vanished = crate::vanished::responses(&crate::vanished::ranges(&gone), false);
            out.extend(vanished.into_iter().map(Update::Data));
        } else {
            for index in (0..self.messages.len()).rev() {
                if held.contains(&self.messages[index].uid) {
                    self.messages.remove(index);
                    let seq = NonZeroU32::new(message_count(index) + 1).expect("index + 1 > 0");
                    out.push(Update::Data(Data::Expunge(seq)));
                }
            }
        }
    }

    /// Where the message with `uid` is in the view (messages are in UID order).
    fn position(&self, uid: Uid) -> Option<usize> {
        self.messages.binary_search_by_key(&uid, |m| m.uid).ok()
    }

    /// RFC 7162 §3.2: a client told a MODSEQ (`told`) while an expunge with a
    /// lower one is held back (no EXPUNGE or VANISHED during FETCH, STORE,
    /// SEARCH) must be given a HIGHESTMODSEQ below that expunge's, or it could
    /// resynchronise later from past it and never learn of the expunge.
    fn hold_back_highest_modseq(&self, store: &Store, told: ModSeq, out: &mut Vec<Update>) -> Result<(), StoreError> {
        let held: Vec<Uid> = self.held.iter().copied().collect();
        if held.is_empty() {
            return Ok(());
        }
        // An expunge the record no longer holds: HIGHESTMODSEQ 1, a full resync.
        let earliest = store.earliest_expunge(self.mailbox, &held)?.unwrap_or(ModSeq(2));
        if told > earliest {
            if let Some(below) = NonZeroU64::new(earliest.0.saturating_sub(1)) {
                out.push(Update::Status(untagged_ok(Code::HighestModSeq(below), "expunges held back")));
            }
        }
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
