//! EXPUNGE and UID EXPUNGE: remove the messages marked `\Deleted` (all, or
//! those in a UID set) through the write path, then tell the client. With
//! QRESYNC enabled, an expunge that removed something answers with the new
//! HIGHESTMODSEQ in its tagged OK (RFC 7162 §3.2.7, §3.2.9).

use std::num::NonZeroU64;

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::Code;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_next::server::Server;
use maildr_store::{Applied, Command as StoreCommand};
use maildr_types::MailboxId;

use crate::blocking::store_read;
use crate::reply::{ok, write_failed};
use crate::session::Session;

impl Session {
    pub(crate) async fn expunge(&mut self, server: &mut Server, tag: &Tag<'static>, set: Option<SequenceSet>) {
        if self.refuse_if_read_only(server, tag) {
            return;
        }
        let view = self.selected.as_ref().expect("selected state");
        let uids = set.map(|s| view.select(&s, true).into_iter().map(|i| view.messages[i].uid).collect());
        let mailbox = view.mailbox;
        match self.cluster().write(StoreCommand::Expunge { mailbox, uids }).await {
            Ok(applied) => {
                if let Some(v) = self.selected.as_mut() {
                    v.dirty = true;
                }
                let removed = matches!(applied, Applied::Expunged { ref uids, .. } if !uids.is_empty());
                // Read before the catch-up, so every change up to it is told
                // by the catch-up: the client may resynchronise from it.
                let highest = (self.qresync && removed).then(|| self.highest_modseq(mailbox)).flatten();
                self.sync(server, true);
                server.enqueue_status(ok(tag, highest.map(Code::HighestModSeq), "EXPUNGE completed"));
            }
            Err(e) => {
                server.enqueue_status(write_failed(tag, e));
            }
        }
    }

    /// The mailbox's HIGHESTMODSEQ now, if it can be read.
    fn highest_modseq(&self, mailbox: MailboxId) -> Option<NonZeroU64> {
        let store = self.cluster().store();
        let record = store_read(|| store.mailbox(mailbox)).ok().flatten()?;
        NonZeroU64::new(record.highest_modseq.0)
    }
}
