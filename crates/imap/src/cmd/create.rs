//! CREATE: a new mailbox (and any missing parents) for the logged-in account.
//!
//! A name may end with the hierarchy separator: RFC 3501 §6.3.3 reads that as
//! the client saying it means to create names under this one, and the mailbox
//! created is the name without the separator. The new mailbox's UIDVALIDITY is
//! decided here, before the command is proposed, so every replica applies the
//! same value. This module must never create anything but through the write
//! path.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_next::server::Server;
use maildr_store::Command as StoreCommand;
use maildr_types::{MailboxName, UidValidity};

use crate::cmd::list::DELIMITER;
use crate::names::NameError;
use crate::session::Session;

impl Session {
    pub(crate) async fn create(&mut self, server: &mut Server, tag: &Tag<'static>, mailbox: &ImapMailbox<'static>) {
        let uid_validity = UidValidity::proposed_at(self.now());
        let build = |account, name| StoreCommand::CreateMailbox { account, name, uid_validity };
        let name = self.name_to_create(mailbox);
        self.change_tree(server, tag, name, build, "CREATE completed").await
    }

    /// The name CREATE creates: the client's name less one trailing separator,
    /// as stored (decoded from modified UTF-7).
    fn name_to_create(&self, mailbox: &ImapMailbox<'_>) -> Result<MailboxName, NameError> {
        if let ImapMailbox::Other(other) = mailbox {
            let bytes: &[u8] = other.as_ref();
            if let Some(stripped) = bytes.strip_suffix(&[DELIMITER]) {
                let stripped = ImapMailbox::try_from(stripped.to_vec())
                    .map_err(|_| NameError::Invalid("mailbox name is empty or malformed".to_string()))?;
                return self.stored_name(&stripped, true);
            }
        }
        self.stored_name(mailbox, true)
    }
}
