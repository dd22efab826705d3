//! IMAP commands, one module per command or family. Each module adds the
//! methods that answer its commands to [`crate::session::Session`]; the session
//! only dispatches.
//!
//! Every command reads the store through [`crate::blocking::store_read`], reads
//! message bodies through [`crate::bodies::BodyReader`], and changes state only
//! through the cluster's write path (`Cluster::write`), never the store directly.

mod any_state;
mod append;
mod auth;
mod copy_move;
mod create;
mod expunge;
pub(crate) mod fetch;
mod idle;
pub(crate) mod list;
mod mailbox;
mod quota;
mod search;
mod select;
mod status;
pub(crate) mod store;

impl crate::session::Session {
    /// Wall-clock time for values decided before a command is proposed (a new
    /// mailbox's UIDVALIDITY, an APPEND's internal date), from the service's clock.
    fn now(&self) -> maildr_types::UnixSeconds {
        self.service.clock.now()
    }

    /// Refuse a change to a mailbox opened with EXAMINE; true when refused (the
    /// reply is enqueued).
    fn refuse_if_read_only(
        &self,
        server: &mut imap_next::server::Server,
        tag: &imap_codec::imap_types::core::Tag<'static>,
    ) -> bool {
        let read_only = self.selected.as_ref().expect("selected state").read_only;
        if read_only {
            let code = Some(crate::reply::other_code("READ-ONLY"));
            server.enqueue_status(crate::reply::no(tag, code, "mailbox is read-only"));
        }
        read_only
    }

    /// The stored name a client's mailbox argument means (see `crate::names`):
    /// decoded from modified UTF-7, matched level by level against the
    /// account's names only when it holds `&`. `creating` also refuses a new
    /// level whose text would read as an unconverted older name.
    fn stored_name(
        &self,
        mailbox: &imap_codec::imap_types::mailbox::Mailbox<'_>,
        creating: bool,
    ) -> Result<maildr_types::MailboxName, crate::names::NameError> {
        use imap_codec::imap_types::mailbox::Mailbox;
        match mailbox {
            Mailbox::Inbox => Ok(maildr_types::MailboxName::inbox()),
            Mailbox::Other(other) => crate::names::resolve(other.as_ref(), || self.mailbox_names(), creating),
        }
    }

    /// The logged-in account's mailbox names, as stored.
    fn mailbox_names(&self) -> Result<Vec<maildr_types::MailboxName>, String> {
        let Some(account) = self.account() else { return Ok(Vec::new()) };
        let mailboxes = crate::blocking::store_read(|| self.cluster().store().mailboxes(account.id));
        mailboxes.map(|list| list.into_iter().map(|m| m.name).collect()).map_err(|e| e.to_string())
    }
}

/// The answer to a mailbox name that cannot be used: BAD for a malformed name,
/// `NO [CANNOT]` for one refused, `NO [UNAVAILABLE]` when names could not be read.
fn name_failed(
    tag: &imap_codec::imap_types::core::Tag<'static>,
    e: crate::names::NameError,
) -> imap_codec::imap_types::response::Status<'static> {
    use crate::names::NameError;
    use crate::reply::{bad, no, other_code};
    match e {
        NameError::Invalid(why) => bad(Some(tag), why),
        NameError::Refused(why) => no(tag, Some(other_code("CANNOT")), why),
        NameError::Unreadable(why) => {
            tracing::error!(error = %why, "reading mailbox names failed");
            no(tag, Some(other_code("UNAVAILABLE")), "cannot read mailboxes now")
        }
    }
}
