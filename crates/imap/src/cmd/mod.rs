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
}
