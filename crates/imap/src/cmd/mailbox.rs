//! Changing the mailbox tree: DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE (CREATE,
//! which has rules of its own, is in `create.rs`).
//!
//! Each is one replicated write; refusals by the state (exists, unknown, INBOX)
//! come back from the write path with their response code. A new or renamed
//! mailbox gets its UIDVALIDITY here, before the command is proposed, so every
//! replica applies the same value.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_next::server::Server;
use maildr_store::Command as StoreCommand;
use maildr_types::{EmailAddress, UidValidity};

use crate::names::NameError;
use crate::reply::{no, ok, write_failed};
use crate::session::Session;

impl Session {
    /// Propose the change `build` makes from the parsed names for the logged-in
    /// account, and answer `done` once committed. A name that cannot be used is
    /// answered as `name_failed` says (BAD when malformed).
    pub(super) async fn change_tree<T>(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        names: Result<T, NameError>,
        build: impl FnOnce(EmailAddress, T) -> StoreCommand,
        done: &str,
    ) {
        let names = match names {
            Ok(n) => n,
            Err(e) => {
                server.enqueue_status(super::name_failed(tag, e));
                return;
            }
        };
        let Some(account) = self.account() else {
            server.enqueue_status(no(tag, None, "account no longer exists"));
            return;
        };
        let status = match self.cluster().write(build(account.address, names)).await {
            Ok(_) => ok(tag, None, done),
            Err(e) => write_failed(tag, e),
        };
        server.enqueue_status(status);
    }

    pub(crate) async fn delete(&mut self, server: &mut Server, tag: &Tag<'static>, mailbox: &ImapMailbox<'static>) {
        let build = |account, name| StoreCommand::DeleteMailbox { account, name };
        self.change_tree(server, tag, self.stored_name(mailbox, false), build, "DELETE completed").await
    }

    pub(crate) async fn rename(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        from: &ImapMailbox<'static>,
        to: &ImapMailbox<'static>,
    ) {
        let names = self.stored_name(from, false).and_then(|from| Ok((from, self.stored_name(to, true)?)));
        let uid_validity = UidValidity::proposed_at(self.now());
        let build = |account, (from, to)| StoreCommand::RenameMailbox { account, from, to, uid_validity };
        self.change_tree(server, tag, names, build, "RENAME completed").await
    }

    /// SUBSCRIBE (`subscribed`) and UNSUBSCRIBE.
    pub(crate) async fn subscribe(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        subscribed: bool,
    ) {
        let name = self.stored_name(mailbox, false);
        let build = |account, name| StoreCommand::SetSubscribed { account, name, subscribed };
        self.change_tree(server, tag, name, build, "completed").await
    }
}
