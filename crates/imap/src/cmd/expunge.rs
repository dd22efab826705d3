//! EXPUNGE and UID EXPUNGE: remove the messages marked `\Deleted` (all, or
//! those in a UID set) through the write path, then tell the client.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_next::server::Server;
use maildr_store::Command as StoreCommand;

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
            Ok(_) => {
                if let Some(v) = self.selected.as_mut() {
                    v.dirty = true;
                }
                self.sync(server, true);
                server.enqueue_status(ok(tag, None, "EXPUNGE completed"));
            }
            Err(e) => {
                server.enqueue_status(write_failed(tag, e));
            }
        }
    }
}
