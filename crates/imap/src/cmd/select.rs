//! Entering and leaving the selected state: SELECT, EXAMINE, CLOSE, UNSELECT.
//!
//! SELECT opens the session's [`View`] of a mailbox; from then on sequence
//! numbers are the view's. FLAGS lists every keyword some message of the
//! mailbox carries; SELECT claims the messages no session was told of as
//! `\Recent`, EXAMINE only counts them. CLOSE expunges (unless read-only) through the write
//! path; UNSELECT does not.

use std::num::NonZeroU64;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::{Code, Data};
use imap_next::server::Server;
use maildr_store::{Command as StoreCommand, Mailbox};
use maildr_types::SystemFlags;

use crate::blocking::store_read;
use crate::reply::{no, nz, ok, read_failed, untagged_ok};
use crate::session::Session;
use crate::view::{message_count, View};

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

    /// SELECT (read-write) and EXAMINE (`read_only`).
    pub(crate) fn select(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        read_only: bool,
        condstore: bool,
    ) {
        self.selected = None;
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
        server.enqueue_status(ok(tag, Some(code), if read_only { "EXAMINE completed" } else { "SELECT completed" }));
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
