//! COPY and MOVE (and their UID forms): one replicated write copies the
//! messages (and for MOVE removes the sources), answered with COPYUID.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::{Code, Status};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_next::server::Server;
use maildr_store::{Applied, Command as StoreCommand};
use maildr_types::{Uid, UidValidity};

use crate::reply::{nz, ok, text, to_uid_set, write_failed};
use crate::session::Session;

/// COPYUID for the (source, destination) pairs, in the order they were copied.
fn copy_uid(uid_validity: UidValidity, pairs: &[(Uid, Uid)]) -> Option<Code<'static>> {
    let src: Vec<u32> = pairs.iter().map(|(s, _)| s.0).collect();
    let dst: Vec<u32> = pairs.iter().map(|(_, d)| d.0).collect();
    match (to_uid_set(&src), to_uid_set(&dst)) {
        (Some(source), Some(destination)) => {
            Some(Code::CopyUid { uid_validity: nz(uid_validity.0), source, destination })
        }
        _ => None,
    }
}

impl Session {
    /// COPY, or MOVE when `remove`.
    pub(crate) async fn copy(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        set: &SequenceSet,
        target: &ImapMailbox<'static>,
        uid: bool,
        remove: bool,
    ) {
        if remove && self.refuse_if_read_only(server, tag) {
            return;
        }
        let to = match self.stored_name(target, false) {
            Ok(n) => n,
            Err(e) => {
                server.enqueue_status(super::name_failed(tag, e));
                return;
            }
        };
        let view = self.selected.as_ref().expect("selected state");
        let uids: Vec<Uid> = view.select(set, uid).into_iter().map(|i| view.messages[i].uid).collect();
        let from = view.mailbox;
        if uids.is_empty() {
            server.enqueue_status(ok(tag, None, "nothing to copy"));
            return;
        }
        let cmd = StoreCommand::CopyMessages { from, uids, to, remove_source: remove };
        match self.cluster().write(cmd).await {
            Ok(Applied::Copied { uid_validity, pairs, .. }) => {
                let code = copy_uid(uid_validity, &pairs);
                if remove {
                    if let Some(code) = code {
                        server.enqueue_status(Status::ok(None, Some(code), text("moved")).expect("valid"));
                    }
                    if let Some(v) = self.selected.as_mut() {
                        v.dirty = true;
                    }
                    self.sync(server, true);
                    server.enqueue_status(ok(tag, None, "MOVE completed"));
                } else {
                    self.sync(server, false);
                    server.enqueue_status(ok(tag, code, "COPY completed"));
                }
            }
            Ok(other) => unreachable!("COPY applies as Copied, got {other:?}"),
            Err(e) => {
                server.enqueue_status(write_failed(tag, e));
            }
        }
    }
}
