//! Entering and leaving the selected state: SELECT, EXAMINE, CLOSE, UNSELECT.
//! With QRESYNC enabled, SELECT/EXAMINE take the client's last UIDVALIDITY and
//! MODSEQ and answer only what changed since (RFC 7162 §3.2.5).
//!
//! SELECT opens the session's [`View`] of a mailbox; from then on sequence
//! numbers are the view's. FLAGS lists every keyword some message of the
//! mailbox carries; SELECT claims the messages no session was told of as
//! `\Recent`, EXAMINE only counts them. CLOSE expunges (unless read-only) through the write
//! path; UNSELECT does not.

use std::num::NonZeroU64;

use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::fetch::MessageDataItemName;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_next::server::Server;
use maildr_store::{Command as StoreCommand, Mailbox};
use maildr_types::{ModSeq, SystemFlags};

use crate::blocking::store_read;
use crate::cmd::fetch::FetchAnswer;
use crate::reply::{bad, no, nz, ok, read_failed, untagged_ok};
use crate::session::Session;
use crate::vanished::{check_seq_match, uses_asterisk, vanished_since, Known};
use crate::view::{message_count, set_contains, View};

/// A QRESYNC parameter as the client gave it (RFC 7162 §3.2.5).
struct QresyncRequest {
    uid_validity: u32,
    since: ModSeq,
    known_uids: Option<SequenceSet>,
    seq_match: Option<(SequenceSet, SequenceSet)>,
}

impl Session {
    /// The account's mailbox of that name, or the reply that says why not
    /// (already enqueued).
    pub(crate) fn mailbox_or_reply(
        &self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'_>,
    ) -> Option<Mailbox> {
        let found = self.stored_name(mailbox, false).and_then(|name| {
            let Some(account) = self.account() else { return Ok(None) };
            store_read(|| self.cluster().store().mailbox_by_name(account.id, &name))
                .map_err(|e| crate::names::NameError::Unreadable(e.to_string()))
        });
        match found {
            Err(e) => {
                server.enqueue_status(super::name_failed(tag, e));
                None
            }
            Ok(None) => {
                server.enqueue_status(no(tag, Some(Code::TryCreate), "no such mailbox"));
                None
            }
            Ok(Some(record)) => Some(record),
        }
    }

    /// SELECT (read-write) and EXAMINE (`read_only`), with the CONDSTORE and
    /// QRESYNC parameters (RFC 7162 §3.1.8, §3.2.5). Parameters are checked before
    /// anything else: a BAD one leaves the selected mailbox selected. A selected
    /// mailbox is then closed with `* OK [CLOSED]` (§3.2.11).
    pub(crate) fn select(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        read_only: bool,
        parameters: &[SelectParameter],
    ) {
        let (condstore, qresync) = match self.select_parameters(parameters) {
            Ok(p) => p,
            Err(why) => {
                server.enqueue_status(bad(Some(tag), why));
                return;
            }
        };
        if self.selected.take().is_some() {
            server.enqueue_status(untagged_ok(Code::Closed, "previous mailbox closed"));
        }
        let Some(record) = self.mailbox_or_reply(server, tag, mailbox) else { return };
        if condstore {
            self.condstore = true;
        }
        self.drain_changes();
        let marks = &self.service.recent;
        let Ok(view) = store_read(|| View::open(&self.cluster().store(), &record, read_only, marks)) else {
            server.enqueue_status(read_failed(tag));
            return;
        };
        for update in view.flag_announcement() {
            update.enqueue(server);
        }
        server.enqueue_data(Data::Exists(view.exists()));
        server.enqueue_data(Data::Recent(view.recent_count()));
        if let Some(pos) = view.messages.iter().position(|m| !m.flags.contains(SystemFlags::SEEN)) {
            server.enqueue_status(untagged_ok(Code::Unseen(nz(message_count(pos) + 1)), "first unseen"));
        }
        server.enqueue_status(untagged_ok(Code::UidValidity(nz(record.uid_validity.0)), "UIDs valid"));
        server.enqueue_status(untagged_ok(Code::UidNext(nz(record.uid_next.0)), "predicted next UID"));
        if let Some(m) = NonZeroU64::new(record.highest_modseq.0) {
            server.enqueue_status(untagged_ok(Code::HighestModSeq(m), "highest"));
        }
        self.selected = Some(view);
        let code = if read_only { Code::ReadOnly } else { Code::ReadWrite };
        let done = ok(tag, Some(code), if read_only { "EXAMINE completed" } else { "SELECT completed" });
        // A UIDVALIDITY that differs makes the client's state worthless: the
        // parameter is ignored (RFC 7162 §3.2.5).
        match qresync.filter(|q| q.uid_validity == record.uid_validity.0) {
            Some(request) => self.qresync_catch_up(server, tag, &request, done),
            None => {
                server.enqueue_status(done);
            }
        }
    }

    /// The parameters of SELECT/EXAMINE as (CONDSTORE asked, QRESYNC asked),
    /// or why they are refused (BAD).
    fn select_parameters(
        &self,
        parameters: &[SelectParameter],
    ) -> Result<(bool, Option<QresyncRequest>), &'static str> {
        let mut condstore = false;
        let mut qresync = None;
        for parameter in parameters {
            match parameter {
                SelectParameter::CondStore => condstore = true,
                SelectParameter::QResync { uid_validity, mod_sequence_value, known_uids, seq_match_data } => {
                    if !self.qresync {
                        return Err("QRESYNC parameter before ENABLE QRESYNC");
                    }
                    if qresync.is_some() {
                        return Err("more than one QRESYNC parameter");
                    }
                    if known_uids.as_ref().is_some_and(uses_asterisk) {
                        return Err("* is not allowed in known-uids");
                    }
                    if let Some((seqs, uids)) = seq_match_data {
                        check_seq_match(seqs, uids)?;
                    }
                    qresync = Some(QresyncRequest {
                        uid_validity: uid_validity.get(),
                        since: ModSeq(mod_sequence_value.get()),
                        known_uids: known_uids.clone(),
                        seq_match: seq_match_data.clone(),
                    });
                }
            }
        }
        Ok((condstore, qresync))
    }

    /// The QRESYNC part of a SELECT: `* VANISHED (EARLIER)` for what the client
    /// holds that is gone, then a FETCH (UID, FLAGS, MODSEQ) of every message it
    /// holds or lacks that changed since its MODSEQ, then `done`. The FETCH lines
    /// are written in batches like a FETCH answer.
    fn qresync_catch_up(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        request: &QresyncRequest,
        done: imap_codec::imap_types::response::Status<'static>,
    ) {
        let view = self.selected.as_ref().expect("just selected");
        let known = Known {
            uids: request.known_uids.as_ref(),
            seq_match: request.seq_match.as_ref().map(|(seqs, uids)| (seqs, uids)),
        };
        let store = self.cluster().store();
        let Ok(vanished) = store_read(|| vanished_since(&store, view, request.since, &known)) else {
            self.selected = None;
            server.enqueue_status(read_failed(tag));
            return;
        };
        for data in crate::vanished::responses(&vanished, true) {
            server.enqueue_data(data);
        }
        let largest = view.uid_next.0.saturating_sub(1);
        let changed: Vec<usize> = view
            .messages
            .iter()
            .enumerate()
            .filter(|(_, m)| m.modseq > request.since)
            .filter(|(_, m)| request.known_uids.as_ref().is_none_or(|set| set_contains(set, m.uid.0, largest)))
            .map(|(i, _)| i)
            .collect();
        let names = vec![MessageDataItemName::Uid, MessageDataItemName::Flags, MessageDataItemName::ModSeq];
        self.fetching = Some(FetchAnswer::new(tag.clone(), changed, names, done));
    }

    /// CLOSE: expunge what is marked `\Deleted` (silently) and leave.
    pub(crate) async fn close(&mut self, server: &mut Server, tag: &Tag<'static>) {
        let view = self.selected.take().expect("selected state");
        if !view.read_only {
            let _ = self.cluster().write(StoreCommand::Expunge { mailbox: view.mailbox, uids: None }).await;
        }
        server.enqueue_status(ok(tag, None, "CLOSE completed"));
    }

    pub(crate) fn unselect(&mut self, server: &mut Server, tag: &Tag<'static>) {
        self.selected = None;
        server.enqueue_status(ok(tag, None, "UNSELECT completed"));
    }
}
