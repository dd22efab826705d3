//! IDLE: the client waits and the server pushes what changes in the selected
//! mailbox (the cluster's change feed wakes the session; see `session.rs`).
//!
//! This module must never push an update outside IDLE or a command's answer.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::CommandContinuationRequest;
use imap_next::server::Server;

use crate::reply::{bad, ok, text};
use crate::session::Session;

impl Session {
    pub(crate) fn idle_start(&mut self, server: &mut Server, tag: Tag<'static>) {
        if self.account.is_none() {
            let _ = server.idle_reject(bad(Some(&tag), "log in first"));
            return;
        }
        let ccr = CommandContinuationRequest::basic(None, text("idling")).expect("valid");
        let _ = server.idle_accept(ccr);
        self.idling = Some(tag);
        self.drain_changes();
        self.push_idle_updates(server);
    }

    pub(crate) fn idle_done(&mut self, server: &mut Server) {
        if let Some(tag) = self.idling.take() {
            server.enqueue_status(ok(&tag, None, "IDLE terminated"));
        }
    }

    /// Tell an idling client what changed (expunges included: IDLE allows them).
    pub(crate) fn push_idle_updates(&mut self, server: &mut Server) {
        self.catch_up(server, true);
    }
}
