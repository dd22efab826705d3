//! STATUS: counts and UID/MODSEQ values of a mailbox without selecting it.
//!
//! Read-only; it must never change the selected view.

use std::borrow::Cow;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::server::Server;
use maildr_store::{Mailbox, Message};
use maildr_types::SystemFlags;

use crate::blocking::store_read;
use crate::reply::{nz, ok, read_failed};
use crate::session::Session;
use crate::view::message_count;

/// `recent_above`: messages with a higher UID are recent (no session was told).
fn status_item(name: &StatusDataItemName, record: &Mailbox, messages: &[Message], recent_above: u32) -> StatusDataItem {
    let deleted = || messages.iter().filter(|m| m.flags.contains(SystemFlags::DELETED));
    match name {
        StatusDataItemName::Messages => StatusDataItem::Messages(message_count(messages.len())),
        StatusDataItemName::Recent => {
            StatusDataItem::Recent(message_count(messages.iter().filter(|m| m.uid.0 > recent_above).count()))
        }
        StatusDataItemName::UidNext => StatusDataItem::UidNext(nz(record.uid_next.0)),
        StatusDataItemName::UidValidity => StatusDataItem::UidValidity(nz(record.uid_validity.0)),
        StatusDataItemName::Unseen => StatusDataItem::Unseen(message_count(
            messages.iter().filter(|m| !m.flags.contains(SystemFlags::SEEN)).count(),
        )),
        StatusDataItemName::Deleted => StatusDataItem::Deleted(message_count(deleted().count())),
        StatusDataItemName::HighestModSeq => StatusDataItem::HighestModSeq(record.highest_modseq.0),
        StatusDataItemName::DeletedStorage => StatusDataItem::DeletedStorage(deleted().map(|m| m.size_bytes).sum()),
    }
}

impl Session {
    pub(crate) fn status(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        names: &[StatusDataItemName],
    ) {
        let Some(record) = self.mailbox_or_reply(server, tag, mailbox) else { return };
        let Ok(messages) = store_read(|| self.cluster().store().messages(record.id)) else {
            server.enqueue_status(read_failed(tag));
            return;
        };
        // Counting takes nothing: the next session to select still gets \Recent.
        let recent_above = self.service.recent.peek((record.id, record.uid_validity));
        let items = names.iter().map(|n| status_item(n, &record, &messages, recent_above)).collect();
        server.enqueue_data(Data::Status { mailbox: mailbox.clone(), items: Cow::Owned(items) });
        server.enqueue_status(ok(tag, None, "STATUS completed"));
    }
}
