//! One IMAP session: its state, the connection loop, and the dispatch of each
//! command to the module that answers it (`cmd/`).
//!
//! imap-next does the framing (literals, continuation requests, IDLE/DONE,
//! AUTHENTICATE exchanges); the commands decide every answer. This module must
//! never answer a command itself beyond the state checks every command shares
//! (logged in, mailbox selected): each arm of [`Session::command`] calls one
//! function in `cmd/`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::response::{Code, Status};
use imap_next::server::{Error as ServerError, Event, Server};
use maildr_cluster::Cluster;
use maildr_store::Account;
use maildr_types::MailboxId;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::blocking::store_read;
use crate::cmd::store::StoreRequest;
use crate::reply::{bad, ok, tag_of, text};
use crate::transport::{Transport, TransportError};
use crate::view::{Extensions, Update, View};
use crate::{ImapService, SessionGuard};

/// Most malformed commands before the session is closed.
const BAD_COMMANDS_MAX: u32 = 50;

/// Answer a command this state does not take.
fn refuse(server: &mut Server, tag: &Tag<'static>, why: &str) {
    server.enqueue_status(bad(Some(tag), why));
}

/// What the connection loop does after a command.
pub(crate) enum Flow {
    Continue,
    Logout(Tag<'static>),
}

pub(crate) struct Session {
    pub(crate) service: Arc<ImapService>,
    pub(crate) peer: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) account: Option<(Account, SessionGuard)>,
    pub(crate) selected: Option<View>,
    pub(crate) condstore: bool,
    /// ENABLE QRESYNC was given (RFC 7162 §3.2.3); implies `condstore`.
    pub(crate) qresync: bool,
    pub(crate) idling: Option<Tag<'static>>,
    pub(crate) pending_auth: Option<Tag<'static>>,
    /// A FETCH answered in batches once its command returns.
    pub(crate) fetching: Option<crate::cmd::fetch::FetchAnswer>,
    bad_commands: u32,
    changes: tokio::sync::broadcast::Receiver<MailboxId>,
}

impl Session {
    pub(crate) fn new(service: Arc<ImapService>, peer: SocketAddr, tls: bool) -> Self {
        let changes = service.cluster.watch_mailboxes();
        Session {
            service,
            peer,
            tls,
            account: None,
            selected: None,
            condstore: false,
            qresync: false,
            idling: None,
            pending_auth: None,
            fetching: None,
            bad_commands: 0,
            changes,
        }
    }

    pub(crate) fn cluster(&self) -> &Cluster {
        &self.service.cluster
    }

    /// Run the session until the client logs out or goes away.
    pub(crate) async fn run(mut self, mut stream: Transport) {
        let greeting = imap_codec::imap_types::response::Greeting::ok(
            Some(Code::Capability(self.capabilities())),
            "maildr IMAP ready",
        )
        .expect("static greeting is valid");
        let mut options = imap_next::server::Options::default();
        options.max_literal_size = self.service.config.literal_size_max_bytes;
        options.max_command_size =
            self.service.config.literal_size_max_bytes.saturating_add(self.service.config.command_line_max_bytes);
        options.crlf_relaxed = true;
        let mut server = Server::new(options, greeting);
        let idle = Duration::from_secs(self.service.config.idle_timeout_secs);
        let mut logout_handle = None;
        loop {
            stream.logged_in = self.account.is_some();
            let event = tokio::select! {
                event = tokio::time::timeout(idle, stream.next(&mut server)) => event,
                change = self.changes.recv(), if self.idling.is_some() && logout_handle.is_none() => {
                    self.note_change(change);
                    self.push_idle_updates(&mut server);
                    continue;
                }
            };
            let event = match event {
                Err(_) => {
                    server.enqueue_status(Status::bye(None, text("autologout: idle for too long")).expect("valid"));
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.flush(&mut server)).await;
                    return;
                }
                Ok(Ok(event)) => event,
                Ok(Err(TransportError::State(e))) => {
                    if self.malformed(&mut server, &e) {
                        server.enqueue_status(Status::bye(None, text("too many bad commands")).expect("valid"));
                        let _ = tokio::time::timeout(Duration::from_secs(5), stream.flush(&mut server)).await;
                        return;
                    }
                    continue;
                }
                Ok(Err(e @ (TransportError::PreLoginCommandTooLong | TransportError::OverBudget(_)))) => {
                    tracing::warn!(peer = %self.peer, error = %e, "IMAP client disconnected: command too large");
                    let (code, why) = match e {
                        TransportError::PreLoginCommandTooLong => ("LIMIT", "command too long before login"),
                        _ => ("UNAVAILABLE", "too much data in flight on this server; try again later"),
                    };
                    let bye = Status::bye(Some(crate::reply::other_code(code)), text(why)).expect("valid");
                    server.enqueue_status(bye);
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.flush(&mut server)).await;
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "IMAP session ended");
                    return;
                }
            };
            if let Event::ResponseSent { handle, .. } = &event {
                if Some(*handle) == logout_handle {
                    stream.flush(&mut server).await;
                    return;
                }
            }
            if let Some(handle) = self.event(&mut server, &mut stream, event).await {
                logout_handle = Some(handle);
            }
        }
    }

    /// Answer a command imap-next could not parse; true when the session has had
    /// too many of them.
    fn malformed(&mut self, server: &mut Server, e: &ServerError) -> bool {
        self.bad_commands += 1;
        let (reason, discarded) = match e {
            ServerError::ExpectedCrlfGotLf { discarded_bytes } => ("line must end with CRLF", discarded_bytes),
            ServerError::MalformedMessage { discarded_bytes } => ("malformed command", discarded_bytes),
            ServerError::LiteralTooLong { discarded_bytes } => ("literal too large", discarded_bytes),
            ServerError::CommandTooLong { discarded_bytes } => ("command too long", discarded_bytes),
        };
        let tag = tag_of(discarded.declassify());
        server.enqueue_status(bad(tag.as_ref(), reason));
        self.bad_commands > BAD_COMMANDS_MAX
    }

    /// Handle one event from imap-next; returns the handle of the LOGOUT answer
    /// once the client logged out.
    async fn event(
        &mut self,
        server: &mut Server,
        transport: &mut Transport,
        event: Event,
    ) -> Option<imap_next::server::ResponseHandle> {
        match event {
            Event::GreetingSent { .. } | Event::ResponseSent { .. } => {}
            Event::CommandReceived { command } => {
                let flow = self.command(server, command).await;
                self.stream_fetch(server, transport).await;
                if let Flow::Logout(tag) = flow {
                    // The tagged OK is the last response; leave once it is sent.
                    return Some(server.enqueue_status(ok(&tag, None, "LOGOUT completed")));
                }
            }
            Event::CommandAuthenticateReceived { command_authenticate } => {
                self.authenticate_start(server, command_authenticate).await
            }
            Event::AuthenticateDataReceived { authenticate_data } => {
                self.authenticate_data(server, authenticate_data).await
            }
            Event::IdleCommandReceived { tag } => self.idle_start(server, tag),
            Event::IdleDoneReceived => self.idle_done(server),
        }
        None
    }

    pub(crate) fn note_change(&mut self, change: Result<MailboxId, RecvError>) {
        if let Some(view) = self.selected.as_mut() {
            match change {
                Ok(id) if id == view.mailbox => view.dirty = true,
                Ok(_) => {}
                // Lagged: we do not know what changed, so assume our mailbox did.
                Err(_) => view.dirty = true,
            }
        }
    }

    pub(crate) fn drain_changes(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(id) => self.note_change(Ok(id)),
                Err(TryRecvError::Empty) | Err(TryRecvError::Closed) => return,
                Err(TryRecvError::Lagged(n)) => self.note_change(Err(RecvError::Lagged(n))),
            }
        }
    }

    /// Catch the view up after a command; expunges only where RFC 3501 allows.
    pub(crate) fn sync(&mut self, server: &mut Server, allow_expunge: bool) {
        self.drain_changes();
        self.catch_up(server, allow_expunge);
    }

    pub(crate) fn catch_up(&mut self, server: &mut Server, allow_expunge: bool) {
        if !self.selected.as_ref().is_some_and(|v| v.dirty) {
            return;
        }
        for update in self.view_updates(allow_expunge) {
            update.enqueue(server);
        }
    }

    /// Bring the selected view up to date with the store and return the
    /// untagged responses that tell the client what changed.
    pub(crate) fn view_updates(&mut self, allow_expunge: bool) -> Vec<Update> {
        let extensions = Extensions { condstore: self.condstore, qresync: self.qresync };
        let mut out = Vec::new();
        let Some(view) = self.selected.as_mut() else { return out };
        let store = self.service.cluster.store();
        let marks = &self.service.recent;
        if let Err(e) = store_read(|| view.sync(&store, marks, allow_expunge, extensions, &mut out)) {
            tracing::error!(error = %e, "reading the selected mailbox failed");
        }
        out
    }

    /// The logged-in account, re-read: quota usage and the account's existence
    /// change over time.
    pub(crate) fn account(&self) -> Option<Account> {
        let (account, _) = self.account.as_ref()?;
        store_read(|| self.cluster().store().account(&account.address).ok().flatten())
    }

    /// Send a command to the function that answers it.
    async fn command(&mut self, server: &mut Server, command: Command<'static>) -> Flow {
        let tag = command.tag;
        let logged_in = self.account.is_some();
        match command.body {
            CommandBody::Capability => self.capability(server, &tag),
            CommandBody::Noop | CommandBody::Check => self.noop(server, &tag),
            CommandBody::Logout => return self.logout(server, tag),
            CommandBody::Id { .. } => self.id(server, &tag),
            CommandBody::Login { username, password } => self.login_command(server, &tag, username, password).await,
            CommandBody::Authenticate { .. } => refuse(server, &tag, "unexpected AUTHENTICATE"),
            _ if !logged_in => refuse(server, &tag, "log in first"),
            CommandBody::Enable { capabilities } => self.enable(server, &tag, capabilities),
            CommandBody::Namespace => self.namespace(server, &tag),
            CommandBody::List { reference, mailbox_wildcard } => {
                self.list(server, &tag, &reference, &mailbox_wildcard, false)
            }
            CommandBody::Lsub { reference, mailbox_wildcard } => {
                self.list(server, &tag, &reference, &mailbox_wildcard, true)
            }
            CommandBody::Create { mailbox } => self.create(server, &tag, &mailbox).await,
            CommandBody::Delete { mailbox } => self.delete(server, &tag, &mailbox).await,
            CommandBody::Rename { from, to } => self.rename(server, &tag, &from, &to).await,
            CommandBody::Subscribe { mailbox } => self.subscribe(server, &tag, &mailbox, true).await,
            CommandBody::Unsubscribe { mailbox } => self.subscribe(server, &tag, &mailbox, false).await,
            CommandBody::Status { mailbox, item_names } => self.status(server, &tag, &mailbox, &item_names),
            CommandBody::Select { mailbox, parameters } => self.select(server, &tag, &mailbox, false, &parameters),
            CommandBody::Examine { mailbox, parameters } => self.select(server, &tag, &mailbox, true, &parameters),
            CommandBody::Append { mailbox, flags, date, message } => {
                self.append(server, &tag, &mailbox, &flags, date, message).await
            }
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota_root(server, &tag, mailbox),
            CommandBody::GetQuota { root } => self.get_quota(server, &tag, &root),
            CommandBody::SetQuota { .. } => self.set_quota(server, &tag),
            // ----- selected state -----
            _ if self.selected.is_none() => refuse(server, &tag, "no mailbox selected"),
            CommandBody::Close => self.close(server, &tag).await,
            CommandBody::Unselect => self.unselect(server, &tag),
            CommandBody::Expunge => self.expunge(server, &tag, None).await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(server, &tag, Some(sequence_set)).await,
            CommandBody::Search { charset, criteria, uid } => self.search(server, &tag, charset, criteria, uid).await,
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                self.fetch(server, &tag, &sequence_set, macro_or_item_names, uid, &modifiers).await
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                let request = StoreRequest { set: &sequence_set, kind, response, flags: &flags, uid };
                self.store(server, &tag, request, &modifiers).await
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => {
                self.copy(server, &tag, &sequence_set, &mailbox, uid, false).await
            }
            CommandBody::Move { sequence_set, mailbox, uid } => {
                self.copy(server, &tag, &sequence_set, &mailbox, uid, true).await
            }
            _ => refuse(server, &tag, "command not supported"),
        }
        Flow::Continue
    }
}
