//! Changing the mailbox tree: CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE.
//!
//! Each is one replicated write; refusals by the state (exists, unknown, INBOX)
//! come back from the write path with their response code. A new or renamed
//! mailbox gets its UIDVALIDITY here, before the command is proposed, so every
//! replica applies the same value.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_next::server::Server;
use maildr_store::Command as StoreCommand;
use maildr_types::UidValidity;

use super::now;
use crate::reply::{bad, mailbox_name, no, ok, write_failed};
use crate::session::Session;

/// UIDVALIDITY for a mailbox made now.
fn new_uid_validity() -> UidValidity {
    UidValidity(now().0.clamp(1, u32::MAX as i64) as u32)
}

impl Session {
    /// Propose one mailbox-tree change and answer `done` once committed.
    async fn write_mailbox_change(&mut self, server: &mut Server, tag: &Tag<'static>, cmd: StoreCommand, done: &str) {
        let status = match self.cluster().write(cmd).await {
            Ok(_) => ok(tag, None, done),
            Err(e) => write_failed(tag, e),
        };
        server.enqueue_status(status);
    }

    pub(crate) async fn create(&mut self, server: &mut Server, tag: &Tag<'static>, mailbox: &ImapMailbox<'static>) {
        match (mailbox_name(mailbox), self.account()) {
            (Err(e), _) => {
                server.enqueue_status(bad(Some(tag), e));
            }
            (_, None) => {
                server.enqueue_status(no(tag, None, "account no longer exists"));
            }
            (Ok(name), Some(account)) => {
                let cmd =
                    StoreCommand::CreateMailbox { account: account.address, name, uid_validity: new_uid_validity() };
                self.write_mailbox_change(server, tag, cmd, "CREATE completed").await
            }
        }
    }

    pub(crate) async fn delete(&mut self, server: &mut Server, tag: &Tag<'static>, mailbox: &ImapMailbox<'static>) {
        match (mailbox_name(mailbox), self.account()) {
            (Err(e), _) => {
                server.enqueue_status(bad(Some(tag), e));
            }
            (_, None) => {
                server.enqueue_status(no(tag, None, "account no longer exists"));
            }
            (Ok(name), Some(account)) => {
                let cmd = StoreCommand::DeleteMailbox { account: account.address, name };
                self.write_mailbox_change(server, tag, cmd, "DELETE completed").await
            }
        }
    }

    pub(crate) async fn rename(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        from: &ImapMailbox<'static>,
        to: &ImapMailbox<'static>,
    ) {
        match (mailbox_name(from), mailbox_name(to), self.account()) {
            (Err(e), _, _) | (_, Err(e), _) => {
                server.enqueue_status(bad(Some(tag), e));
            }
            (_, _, None) => {
                server.enqueue_status(no(tag, None, "account no longer exists"));
            }
            (Ok(from), Ok(to), Some(account)) => {
                let uid_validity = new_uid_validity();
                let cmd = StoreCommand::RenameMailbox { account: account.address, from, to, uid_validity };
                self.write_mailbox_change(server, tag, cmd, "RENAME completed").await
            }
        }
    }

    /// SUBSCRIBE (`subscribed`) and UNSUBSCRIBE.
    pub(crate) async fn subscribe(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        subscribed: bool,
    ) {
        let Ok(name) = mailbox_name(mailbox) else {
            server.enqueue_status(bad(Some(tag), "invalid mailbox name"));
            return;
        };
        match self.account() {
            None => {
                server.enqueue_status(no(tag, None, "account no longer exists"));
            }
            Some(account) => {
                let cmd = StoreCommand::SetSubscribed { account: account.address, name, subscribed };
                self.write_mailbox_change(server, tag, cmd, "completed").await
            }
        }
    }
}
