//! One IMAP session: login, mailbox commands, the selected mailbox, IDLE.
//!
//! imap-next does the framing (literals, continuation requests, IDLE/DONE,
//! AUTHENTICATE exchanges); this module decides every answer. Changes go only
//! through the cluster's write path; a write the cluster cannot commit is answered
//! `NO [UNAVAILABLE]`, a refusal by the state with the matching response code.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use imap_codec::imap_types::auth::{AuthMechanism, AuthenticateData};
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::{AString, Atom, IString, Tag, Vec1};
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Section,
};
use imap_codec::imap_types::flag::{Flag, FlagNameAttribute, StoreResponse, StoreType};
use imap_codec::imap_types::mailbox::{ListMailbox, Mailbox as ImapMailbox};
use imap_codec::imap_types::response::{Capability, Code, CommandContinuationRequest, Data, Status};
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::SequenceSet;
use imap_codec::imap_types::status::{StatusDataItem, StatusDataItemName};
use imap_next::server::{Error as ServerError, Event, Server};
use imap_next::stream::{Error as StreamError, Stream};
use maildr_cluster::Cluster;
use maildr_store::{Account, Applied, Command as StoreCommand, FlagOp, Mailbox};
use maildr_types::{EmailAddress, SystemFlags, Uid, UidValidity, UnixSeconds};

use crate::blocking::store_read;
use crate::bodies::{self, BodyReader};
use crate::flags::{self, flags_to_fetch};
use crate::reply::{
    bad, datetime, imap_mailbox, mailbox_name, no, nz, ok, other_code, read_failed, tag_of, text, to_set, to_uid_set,
    untagged_ok, write_failed,
};
use crate::search::{self, Candidate};
use crate::view::{modseq_item, uid_item, View};
use crate::{mime, ImapService, SessionGuard};

/// Most malformed commands before the session is closed.
const BAD_COMMANDS_MAX: u32 = 50;

enum Flow {
    Continue,
    Logout(Tag<'static>),
}

pub(crate) struct Session {
    service: Arc<ImapService>,
    peer: SocketAddr,
    tls: bool,
    account: Option<(Account, SessionGuard)>,
    selected: Option<View>,
    condstore: bool,
    idling: Option<Tag<'static>>,
    pending_auth: Option<Tag<'static>>,
    bad_commands: u32,
    changes: tokio::sync::broadcast::Receiver<maildr_types::MailboxId>,
}

/// Passwords may cross the wire only inside TLS, or on loopback, or where the
/// operator said the network is trusted.
fn login_allowed(tls: bool, peer: std::net::IpAddr, plain_auth_anywhere: bool) -> bool {
    tls || peer.is_loopback() || plain_auth_anywhere
}

/// LIST pattern matching: `*` matches anything, `%` anything but the delimiter.
fn list_matches(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|i| list_matches(rest, &name[i..])),
        Some((b'%', rest)) => {
            (0..=name.len()).take_while(|&i| i == 0 || name[i - 1] != b'/').any(|i| list_matches(rest, &name[i..]))
        }
        Some((c, rest)) => name.first() == Some(c) && list_matches(rest, &name[1..]),
    }
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
            idling: None,
            pending_auth: None,
            bad_commands: 0,
            changes,
        }
    }

    fn cluster(&self) -> &Cluster {
        &self.service.cluster
    }

    fn login_allowed(&self) -> bool {
        login_allowed(self.tls, self.peer.ip(), self.service.config.plain_auth_anywhere)
    }

    fn capabilities(&self) -> Vec1<Capability<'static>> {
        let mut caps = vec![Capability::Imap4Rev1];
        if self.account.is_none() {
            if self.login_allowed() {
                caps.push(Capability::Auth(AuthMechanism::Plain));
                caps.push(Capability::SaslIr);
            } else {
                caps.push(Capability::LoginDisabled);
            }
        }
        caps.extend([
            Capability::LiteralPlus,
            Capability::Idle,
            Capability::UidPlus,
            Capability::Move,
            Capability::Unselect,
            Capability::Id,
            Capability::Enable,
            Capability::Namespace,
            Capability::CondStore,
            Capability::Quota,
        ]);
        if let Ok(a) = Atom::try_from("SPECIAL-USE") {
            caps.push(Capability::from(a));
        }
        Vec1::try_from(caps).expect("non-empty")
    }

    /// Run the session until the client logs out or goes away.
    pub(crate) async fn run(mut self, mut stream: Stream) {
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
                    let _ = tokio::time::timeout(Duration::from_secs(5), stream.flush()).await;
                    return;
                }
                Ok(Ok(event)) => event,
                Ok(Err(StreamError::State(e))) => {
                    self.bad_commands += 1;
                    let (reason, discarded) = match &e {
                        ServerError::ExpectedCrlfGotLf { discarded_bytes } => {
                            ("line must end with CRLF", discarded_bytes.declassify().to_vec())
                        }
                        ServerError::MalformedMessage { discarded_bytes } => {
                            ("malformed command", discarded_bytes.declassify().to_vec())
                        }
                        ServerError::LiteralTooLong { discarded_bytes } => {
                            ("literal too large", discarded_bytes.declassify().to_vec())
                        }
                        ServerError::CommandTooLong { discarded_bytes } => {
                            ("command too long", discarded_bytes.declassify().to_vec())
                        }
                    };
                    let tag = tag_of(&discarded);
                    server.enqueue_status(bad(tag.as_ref(), reason));
                    if self.bad_commands > BAD_COMMANDS_MAX {
                        server.enqueue_status(Status::bye(None, text("too many bad commands")).expect("valid"));
                        let _ = tokio::time::timeout(Duration::from_secs(5), stream.flush()).await;
                        return;
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "IMAP session ended");
                    return;
                }
            };
            match event {
                Event::GreetingSent { .. } => {}
                Event::ResponseSent { handle, .. } => {
                    if Some(handle) == logout_handle {
                        return;
                    }
                }
                Event::CommandReceived { command } => {
                    if let Flow::Logout(tag) = self.command(&mut server, command).await {
                        // The tagged OK is the last response; leave once it is sent.
                        logout_handle = Some(server.enqueue_status(ok(&tag, None, "LOGOUT completed")));
                    }
                }
                Event::CommandAuthenticateReceived { command_authenticate } => {
                    let tag = command_authenticate.tag.clone();
                    if !matches!(command_authenticate.mechanism, AuthMechanism::Plain) {
                        let _ = server.authenticate_finish(no(&tag, None, "only AUTHENTICATE PLAIN is supported"));
                        continue;
                    }
                    if self.account.is_some() {
                        let _ = server.authenticate_finish(bad(Some(&tag), "already authenticated"));
                        continue;
                    }
                    if !self.login_allowed() {
                        let _ = server.authenticate_finish(no(
                            &tag,
                            Some(other_code("PRIVACYREQUIRED")),
                            "use TLS to log in",
                        ));
                        continue;
                    }
                    match command_authenticate.initial_response {
                        Some(initial) => {
                            let data = initial.declassify().to_vec();
                            let status = self.authenticate_plain(&tag, &data).await;
                            let _ = server.authenticate_finish(status);
                        }
                        None => {
                            self.pending_auth = Some(tag);
                            // An empty base64 challenge: "+ " (RFC 4616 has no server challenge).
                            let ccr = CommandContinuationRequest::Base64(Cow::Borrowed(b""));
                            let _ = server.authenticate_continue(ccr);
                        }
                    }
                }
                Event::AuthenticateDataReceived { authenticate_data } => {
                    let Some(tag) = self.pending_auth.take() else { continue };
                    let status = match authenticate_data {
                        AuthenticateData::Continue(data) => self.authenticate_plain(&tag, data.declassify()).await,
                        _ => bad(Some(&tag), "authentication cancelled"),
                    };
                    let _ = server.authenticate_finish(status);
                }
                Event::IdleCommandReceived { tag } => {
                    if self.account.is_none() {
                        let _ = server.idle_reject(bad(Some(&tag), "log in first"));
                        continue;
                    }
                    let ccr = CommandContinuationRequest::basic(None, text("idling")).expect("valid");
                    let _ = server.idle_accept(ccr);
                    self.idling = Some(tag);
                    self.drain_changes();
                    self.push_idle_updates(&mut server);
                }
                Event::IdleDoneReceived => {
                    if let Some(tag) = self.idling.take() {
                        server.enqueue_status(ok(&tag, None, "IDLE terminated"));
                    }
                }
            }
        }
    }

    fn note_change(&mut self, change: Result<maildr_types::MailboxId, tokio::sync::broadcast::error::RecvError>) {
        if let Some(view) = self.selected.as_mut() {
            match change {
                Ok(id) if id == view.mailbox => view.dirty = true,
                Ok(_) => {}
                // Lagged: we do not know what changed, so assume our mailbox did.
                Err(_) => view.dirty = true,
            }
        }
    }

    fn drain_changes(&mut self) {
        loop {
            match self.changes.try_recv() {
                Ok(id) => self.note_change(Ok(id)),
                Err(tokio::sync::broadcast::error::TryRecvError::Empty) => return,
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => {
                    self.note_change(Err(tokio::sync::broadcast::error::RecvError::Lagged(n)))
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Closed) => return,
            }
        }
    }

    /// Tell an idling client what changed (expunges included: IDLE allows them).
    fn push_idle_updates(&mut self, server: &mut Server) {
        self.catch_up(server, true);
    }

    /// Catch the view up after a command; expunges only where RFC 3501 allows.
    fn sync(&mut self, server: &mut Server, allow_expunge: bool) {
        self.drain_changes();
        self.catch_up(server, allow_expunge);
    }

    fn catch_up(&mut self, server: &mut Server, allow_expunge: bool) {
        let condstore = self.condstore;
        let Some(view) = self.selected.as_mut() else { return };
        if !view.dirty {
            return;
        }
        let mut out = Vec::new();
        let store = self.service.cluster.store();
        if let Err(e) = store_read(|| view.sync(&store, allow_expunge, condstore, &mut out)) {
            tracing::error!(error = %e, "reading the selected mailbox failed");
        }
        for d in out {
            server.enqueue_data(d);
        }
    }

    async fn authenticate_plain(&mut self, tag: &Tag<'static>, data: &[u8]) -> Status<'static> {
        // The initial response may arrive base64-encoded or already decoded,
        // depending on where imap-next received it; accept both.
        let decoded = base64::engine::general_purpose::STANDARD.decode(data).unwrap_or_else(|_| data.to_vec());
        let mut parts = decoded.split(|&b| b == 0);
        let (authzid, user, password) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(z), Some(u), Some(p), None) => (z, u, p),
            _ => return bad(Some(tag), "malformed PLAIN response"),
        };
        if !authzid.is_empty() && authzid != user {
            return no(tag, Some(other_code("AUTHORIZATIONFAILED")), "acting as another user is not supported");
        }
        let user = String::from_utf8_lossy(user).into_owned();
        let password = String::from_utf8_lossy(password).into_owned();
        self.login(tag, &user, &password).await
    }

    async fn login(&mut self, tag: &Tag<'static>, user: &str, password: &str) -> Status<'static> {
        if !self.login_allowed() {
            return no(tag, Some(other_code("PRIVACYREQUIRED")), "use TLS to log in");
        }
        let delay = self.service.auth_delay(self.peer.ip());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let account = match EmailAddress::parse(user) {
            Ok(address) => store_read(|| self.cluster().store().account(&address).ok().flatten()),
            Err(_) => None,
        };
        let verified = match account {
            Some(account) => {
                let hash = account.password_hash.clone();
                let password = password.to_string();
                let good = tokio::task::spawn_blocking(move || maildr_frontend::verify_password(&hash, &password))
                    .await
                    .unwrap_or(false);
                good.then_some(account)
            }
            None => None,
        };
        let Some(account) = verified else {
            self.service.auth_failed(self.peer.ip());
            tracing::warn!(peer = %self.peer, user = %user.chars().take(128).collect::<String>(), "IMAP login failed");
            return no(tag, Some(other_code("AUTHENTICATIONFAILED")), "invalid credentials");
        };
        let Some(guard) = self.service.session_started(&account.address) else {
            return no(tag, Some(other_code("LIMIT")), "too many sessions for this account");
        };
        self.service.auth_succeeded(self.peer.ip());
        tracing::info!(peer = %self.peer, user = %account.address, "IMAP login");
        self.account = Some((account, guard));
        ok(tag, Some(Code::Capability(self.capabilities())), "logged in")
    }

    fn account(&self) -> Option<Account> {
        let (account, _) = self.account.as_ref()?;
        // Re-read: quota usage and the account's existence change over time.
        store_read(|| self.cluster().store().account(&account.address).ok().flatten())
    }

    async fn command(&mut self, server: &mut Server, command: Command<'static>) -> Flow {
        let tag = command.tag.clone();
        let logged_in = self.account.is_some();
        match command.body {
            CommandBody::Capability => {
                server.enqueue_data(Data::Capability(self.capabilities()));
                server.enqueue_status(ok(&tag, None, "CAPABILITY completed"));
            }
            CommandBody::Noop | CommandBody::Check => {
                self.sync(server, true);
                server.enqueue_status(ok(&tag, None, "completed"));
            }
            CommandBody::Logout => {
                server.enqueue_status(Status::bye(None, text("maildr logging out")).expect("valid"));
                return Flow::Logout(tag);
            }
            CommandBody::Id { .. } => {
                let params = vec![
                    (IString::try_from("name").expect("valid"), mime::nstring(Some("maildr"))),
                    (IString::try_from("version").expect("valid"), mime::nstring(Some(env!("CARGO_PKG_VERSION")))),
                ];
                server.enqueue_data(Data::Id { parameters: Some(params) });
                server.enqueue_status(ok(&tag, None, "ID completed"));
            }
            CommandBody::Login { username, password } => {
                if logged_in {
                    server.enqueue_status(bad(Some(&tag), "already logged in"));
                } else {
                    let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                    let password = String::from_utf8_lossy(password.declassify().as_ref()).into_owned();
                    let status = self.login(&tag, &user, &password).await;
                    server.enqueue_status(status);
                }
            }
            CommandBody::Authenticate { .. } => {
                server.enqueue_status(bad(Some(&tag), "unexpected AUTHENTICATE"));
            }
            _ if !logged_in => {
                server.enqueue_status(bad(Some(&tag), "log in first"));
            }
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.into_inner() {
                    if matches!(c, CapabilityEnable::CondStore) {
                        self.condstore = true;
                        enabled.push(c);
                    }
                }
                server.enqueue_data(Data::Enabled { capabilities: enabled });
                server.enqueue_status(ok(&tag, None, "ENABLE completed"));
            }
            CommandBody::Namespace => {
                use imap_codec::imap_types::core::QuotedChar;
                use imap_codec::imap_types::extensions::namespace::Namespace;
                let personal = vec![Namespace {
                    prefix: IString::try_from("").expect("valid"),
                    delimiter: Some(QuotedChar::try_from('/').expect("valid")),
                    extensions: vec![],
                }];
                server.enqueue_data(Data::Namespace { personal, other: vec![], shared: vec![] });
                server.enqueue_status(ok(&tag, None, "NAMESPACE completed"));
            }
            CommandBody::List { reference, mailbox_wildcard } => {
                self.list(server, &tag, &reference, &mailbox_wildcard, false)
            }
            CommandBody::Lsub { reference, mailbox_wildcard } => {
                self.list(server, &tag, &reference, &mailbox_wildcard, true)
            }
            CommandBody::Create { mailbox } => {
                let status = match (mailbox_name(&mailbox), self.account()) {
                    (Err(e), _) => bad(Some(&tag), e),
                    (_, None) => no(&tag, None, "account no longer exists"),
                    (Ok(name), Some(account)) => {
                        let uid_validity = UidValidity(now().0.clamp(1, u32::MAX as i64) as u32);
                        match self
                            .cluster()
                            .write(StoreCommand::CreateMailbox { account: account.address, name, uid_validity })
                            .await
                        {
                            Ok(_) => ok(&tag, None, "CREATE completed"),
                            Err(e) => write_failed(&tag, e),
                        }
                    }
                };
                server.enqueue_status(status);
            }
            CommandBody::Delete { mailbox } => {
                let status = match (mailbox_name(&mailbox), self.account()) {
                    (Err(e), _) => bad(Some(&tag), e),
                    (_, None) => no(&tag, None, "account no longer exists"),
                    (Ok(name), Some(account)) => {
                        match self.cluster().write(StoreCommand::DeleteMailbox { account: account.address, name }).await
                        {
                            Ok(_) => ok(&tag, None, "DELETE completed"),
                            Err(e) => write_failed(&tag, e),
                        }
                    }
                };
                server.enqueue_status(status);
            }
            CommandBody::Rename { from, to } => {
                let status = match (mailbox_name(&from), mailbox_name(&to), self.account()) {
                    (Err(e), _, _) | (_, Err(e), _) => bad(Some(&tag), e),
                    (_, _, None) => no(&tag, None, "account no longer exists"),
                    (Ok(from), Ok(to), Some(account)) => {
                        let uid_validity = UidValidity(now().0.clamp(1, u32::MAX as i64) as u32);
                        let cmd = StoreCommand::RenameMailbox { account: account.address, from, to, uid_validity };
                        match self.cluster().write(cmd).await {
                            Ok(_) => ok(&tag, None, "RENAME completed"),
                            Err(e) => write_failed(&tag, e),
                        }
                    }
                };
                server.enqueue_status(status);
            }
            CommandBody::Subscribe { mailbox } | CommandBody::Unsubscribe { mailbox }
                if mailbox_name(&mailbox).is_err() =>
            {
                server.enqueue_status(bad(Some(&tag), "invalid mailbox name"));
            }
            body @ (CommandBody::Subscribe { .. } | CommandBody::Unsubscribe { .. }) => {
                let (mailbox, subscribed) = match body {
                    CommandBody::Subscribe { mailbox } => (mailbox, true),
                    CommandBody::Unsubscribe { mailbox } => (mailbox, false),
                    _ => unreachable!("matched above"),
                };
                let name = mailbox_name(&mailbox).expect("checked above");
                let status = match self.account() {
                    None => no(&tag, None, "account no longer exists"),
                    Some(account) => {
                        match self
                            .cluster()
                            .write(StoreCommand::SetSubscribed { account: account.address, name, subscribed })
                            .await
                        {
                            Ok(_) => ok(&tag, None, "completed"),
                            Err(e) => write_failed(&tag, e),
                        }
                    }
                };
                server.enqueue_status(status);
            }
            CommandBody::Status { mailbox, item_names } => self.status(server, &tag, &mailbox, &item_names),
            CommandBody::Select { mailbox, parameters } => {
                self.select(server, &tag, &mailbox, false, !parameters.is_empty())
            }
            CommandBody::Examine { mailbox, parameters } => {
                self.select(server, &tag, &mailbox, true, !parameters.is_empty())
            }
            CommandBody::Append { mailbox, flags, date, message } => {
                let status = self.append(&tag, &mailbox, &flags, date, message).await;
                self.sync(server, true);
                server.enqueue_status(status);
            }
            CommandBody::GetQuotaRoot { mailbox } => {
                if let Some(account) = self.account() {
                    server
                        .enqueue_data(Data::QuotaRoot { mailbox, roots: vec![AString::try_from("").expect("valid")] });
                    server.enqueue_data(quota_data(&account));
                    server.enqueue_status(ok(&tag, None, "GETQUOTAROOT completed"));
                } else {
                    server.enqueue_status(no(&tag, None, "account no longer exists"));
                }
            }
            CommandBody::GetQuota { root } => match self.account() {
                Some(account) if root.as_ref().is_empty() => {
                    server.enqueue_data(quota_data(&account));
                    server.enqueue_status(ok(&tag, None, "GETQUOTA completed"));
                }
                _ => {
                    server.enqueue_status(no(&tag, None, "no such quota root"));
                }
            },
            CommandBody::SetQuota { .. } => {
                server.enqueue_status(no(&tag, Some(other_code("NOPERM")), "quotas are set by the administrator"));
            }
            // ----- selected state -----
            _ if self.selected.is_none() => {
                server.enqueue_status(bad(Some(&tag), "no mailbox selected"));
            }
            CommandBody::Close => {
                let view = self.selected.take().expect("checked");
                if !view.read_only {
                    let _ = self.cluster().write(StoreCommand::Expunge { mailbox: view.mailbox, uids: None }).await;
                }
                server.enqueue_status(ok(&tag, None, "CLOSE completed"));
            }
            CommandBody::Unselect => {
                self.selected = None;
                server.enqueue_status(ok(&tag, None, "UNSELECT completed"));
            }
            CommandBody::Expunge => self.expunge(server, &tag, None).await,
            CommandBody::ExpungeUid { sequence_set } => self.expunge(server, &tag, Some(sequence_set)).await,
            CommandBody::Search { charset, .. }
                if charset.as_ref().is_some_and(|c| {
                    let c = c.as_ref().to_ascii_uppercase();
                    c != "UTF-8" && c != "US-ASCII"
                }) =>
            {
                let allowed = ["UTF-8", "US-ASCII"]
                    .iter()
                    .filter_map(|c| imap_codec::imap_types::core::Charset::try_from(*c).ok())
                    .collect();
                server.enqueue_status(no(&tag, Some(Code::BadCharset { allowed }), "only UTF-8 and US-ASCII searches"));
            }
            CommandBody::Search { criteria, uid, .. } => {
                self.sync(server, false);
                self.search(server, &tag, criteria, uid).await;
            }
            CommandBody::Fetch { sequence_set, macro_or_item_names, uid, modifiers } => {
                self.sync(server, false);
                self.fetch(server, &tag, &sequence_set, macro_or_item_names, uid, &modifiers).await;
            }
            CommandBody::Store { sequence_set, kind, response, flags, uid, modifiers } => {
                self.store(server, &tag, &sequence_set, kind, response, &flags, uid, &modifiers).await;
            }
            CommandBody::Copy { sequence_set, mailbox, uid } => {
                self.copy(server, &tag, &sequence_set, &mailbox, uid, false).await
            }
            CommandBody::Move { sequence_set, mailbox, uid } => {
                self.copy(server, &tag, &sequence_set, &mailbox, uid, true).await
            }
            _ => {
                server.enqueue_status(bad(Some(&tag), "command not supported"));
            }
        }
        Flow::Continue
    }

    fn list(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        reference: &ImapMailbox<'_>,
        pattern: &ListMailbox<'_>,
        lsub: bool,
    ) {
        let Some(account) = self.account() else {
            server.enqueue_status(no(tag, None, "account no longer exists"));
            return;
        };
        let reference = match reference {
            ImapMailbox::Inbox => b"INBOX".to_vec(),
            ImapMailbox::Other(o) => o.as_ref().to_vec(),
        };
        let pattern_bytes: Vec<u8> = match pattern {
            ListMailbox::Token(t) => t.as_ref().to_vec(),
            ListMailbox::String(s) => s.as_ref().to_vec(),
        };
        if pattern_bytes.is_empty() && !lsub {
            // RFC 3501 §6.3.8: an empty pattern asks for the hierarchy delimiter.
            server.enqueue_data(Data::List {
                items: vec![FlagNameAttribute::Noselect],
                delimiter: Some(imap_codec::imap_types::core::QuotedChar::try_from('/').expect("valid")),
                mailbox: ImapMailbox::try_from("").unwrap_or(ImapMailbox::Inbox),
            });
            server.enqueue_status(ok(tag, None, "LIST completed"));
            return;
        }
        let mut full = reference;
        full.extend_from_slice(&pattern_bytes);
        let mailboxes = match store_read(|| self.cluster().store().mailboxes(account.id)) {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "listing mailboxes failed");
                server.enqueue_status(no(tag, Some(other_code("UNAVAILABLE")), "cannot read mailboxes now"));
                return;
            }
        };
        let names: Vec<String> = mailboxes.iter().map(|m| m.name.to_string()).collect();
        for m in &mailboxes {
            let name = m.name.as_str().as_bytes();
            let matched = if m.name.is_inbox() {
                list_matches(&full.to_ascii_uppercase(), b"INBOX") || list_matches(&full, name)
            } else {
                list_matches(&full, name)
            };
            if !matched || (lsub && !m.subscribed) {
                continue;
            }
            let mut items = Vec::new();
            let prefix = format!("{}/", m.name);
            let children = names.iter().any(|n| n.starts_with(&prefix));
            let child_attr = if children { "HasChildren" } else { "HasNoChildren" };
            if let Ok(atom) = Atom::try_from(child_attr) {
                items.push(FlagNameAttribute::from(atom));
            }
            if let Some(attr) = m.special_use.and_then(|s| s.imap_attribute()) {
                if let Ok(atom) = Atom::try_from(attr.trim_start_matches('\\').to_string()) {
                    items.push(FlagNameAttribute::from(atom));
                }
            }
            let delimiter = Some(imap_codec::imap_types::core::QuotedChar::try_from('/').expect("valid"));
            let mailbox = imap_mailbox(&m.name);
            server.enqueue_data(if lsub {
                Data::Lsub { items, delimiter, mailbox }
            } else {
                Data::List { items, delimiter, mailbox }
            });
        }
        server.enqueue_status(ok(tag, None, if lsub { "LSUB completed" } else { "LIST completed" }));
    }

    fn find_mailbox(&self, mailbox: &ImapMailbox<'_>) -> Result<Option<Mailbox>, String> {
        let name = mailbox_name(mailbox)?;
        let Some(account) = self.account() else { return Ok(None) };
        store_read(|| self.cluster().store().mailbox_by_name(account.id, &name)).map_err(|e| e.to_string())
    }

    fn status(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        names: &[StatusDataItemName],
    ) {
        let record = match self.find_mailbox(mailbox) {
            Err(e) => {
                server.enqueue_status(bad(Some(tag), e));
                return;
            }
            Ok(None) => {
                server.enqueue_status(no(tag, Some(Code::TryCreate), "no such mailbox"));
                return;
            }
            Ok(Some(r)) => r,
        };
        let messages = match store_read(|| self.cluster().store().messages(record.id)) {
            Ok(m) => m,
            Err(_) => {
                server.enqueue_status(read_failed(tag));
                return;
            }
        };
        let mut items = Vec::new();
        for n in names {
            items.push(match n {
                StatusDataItemName::Messages => StatusDataItem::Messages(messages.len() as u32),
                StatusDataItemName::Recent => StatusDataItem::Recent(0),
                StatusDataItemName::UidNext => StatusDataItem::UidNext(nz(record.uid_next.0)),
                StatusDataItemName::UidValidity => StatusDataItem::UidValidity(nz(record.uid_validity.0)),
                StatusDataItemName::Unseen => StatusDataItem::Unseen(
                    messages.iter().filter(|m| !m.flags.contains(SystemFlags::SEEN)).count() as u32,
                ),
                StatusDataItemName::Deleted => StatusDataItem::Deleted(
                    messages.iter().filter(|m| m.flags.contains(SystemFlags::DELETED)).count() as u32,
                ),
                StatusDataItemName::HighestModSeq => StatusDataItem::HighestModSeq(record.highest_modseq.0),
                StatusDataItemName::DeletedStorage => StatusDataItem::DeletedStorage(
                    messages.iter().filter(|m| m.flags.contains(SystemFlags::DELETED)).map(|m| m.size_bytes).sum(),
                ),
            });
        }
        server.enqueue_data(Data::Status { mailbox: mailbox.clone(), items: Cow::Owned(items) });
        server.enqueue_status(ok(tag, None, "STATUS completed"));
    }

    fn select(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        read_only: bool,
        condstore: bool,
    ) {
        self.selected = None;
        let record = match self.find_mailbox(mailbox) {
            Err(e) => {
                server.enqueue_status(bad(Some(tag), e));
                return;
            }
            Ok(None) => {
                server.enqueue_status(no(tag, Some(Code::TryCreate), "no such mailbox"));
                return;
            }
            Ok(Some(r)) => r,
        };
        if condstore {
            self.condstore = true;
        }
        self.drain_changes();
        let view = match store_read(|| View::open(&self.cluster().store(), record.id, read_only)) {
            Ok(v) => v,
            Err(_) => {
                server.enqueue_status(read_failed(tag));
                return;
            }
        };
        server.enqueue_data(Data::Flags(flags::system_flags()));
        server.enqueue_status(untagged_ok(
            Code::PermanentFlags(if read_only { vec![] } else { flags::permanent_flags() }),
            "flags",
        ));
        server.enqueue_data(Data::Exists(view.exists()));
        server.enqueue_data(Data::Recent(0));
        if let Some(pos) = view.messages.iter().position(|m| !m.flags.contains(SystemFlags::SEEN)) {
            server.enqueue_status(untagged_ok(Code::Unseen(nz(pos as u32 + 1)), "first unseen"));
        }
        server.enqueue_status(untagged_ok(Code::UidValidity(nz(record.uid_validity.0)), "UIDs valid"));
        server.enqueue_status(untagged_ok(Code::UidNext(nz(record.uid_next.0)), "predicted next UID"));
        if let Some(m) = NonZeroU64::new(record.highest_modseq.0) {
            server.enqueue_status(untagged_ok(Code::HighestModSeq(m), "highest"));
        }
        self.selected = Some(view);
        let code = if read_only { Code::ReadOnly } else { Code::ReadWrite };
        server.enqueue_status(ok(tag, Some(code), if read_only { "EXAMINE completed" } else { "SELECT completed" }));
    }

    async fn append(
        &mut self,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        flags_in: &[Flag<'static>],
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'static>,
    ) -> Status<'static> {
        let Some(account) = self.account() else { return no(tag, None, "account no longer exists") };
        let name = match mailbox_name(mailbox) {
            Ok(n) => n,
            Err(e) => return bad(Some(tag), e),
        };
        let (system, keywords) = match flags::split(flags_in) {
            Ok(x) => x,
            Err(e) => return bad(Some(tag), e),
        };
        let bytes = match message {
            LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
            LiteralOrLiteral8::Literal8(l) => l.data.as_ref().to_vec(),
        };
        if account.would_exceed_quota(bytes.len() as u64) {
            return no(tag, Some(Code::OverQuota), "over quota");
        }
        let internal_date = date.map(|d| UnixSeconds(d.as_ref().timestamp())).unwrap_or_else(now);
        let body = match self.cluster().put_body(bytes).await {
            Ok(b) => b,
            Err(e) => return write_failed(tag, e),
        };
        let cmd = StoreCommand::Append {
            account: account.address,
            mailbox: name,
            body,
            flags: system,
            keywords,
            internal_date,
        };
        match self.cluster().write(cmd).await {
            Ok(Applied::Appended { uid_validity, uid, .. }) => {
                ok(tag, Some(Code::AppendUid { uid_validity: nz(uid_validity.0), uid: nz(uid.0) }), "APPEND completed")
            }
            Ok(other) => unreachable!("APPEND applies as Appended, got {other:?}"),
            Err(e) => write_failed(tag, e),
        }
    }

    async fn expunge(&mut self, server: &mut Server, tag: &Tag<'static>, set: Option<SequenceSet>) {
        let view = self.selected.as_ref().expect("selected state");
        if view.read_only {
            {
                server.enqueue_status(no(tag, Some(other_code("READ-ONLY")), "mailbox is read-only"));
                return;
            }
        }
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

    async fn search(&mut self, server: &mut Server, tag: &Tag<'static>, criteria: Vec1<SearchKey<'static>>, uid: bool) {
        let keys = criteria.into_inner();
        let view = self.selected.as_ref().expect("selected state");
        let hashes: Vec<_> =
            if keys.iter().any(search::needs_body) { view.messages.iter().map(|m| m.body).collect() } else { vec![] };
        let bodies = BodyReader::prepare(self.cluster(), &hashes).await;
        let view = self.selected.as_ref().expect("selected state");
        let ctx = search::Context {
            bodies: &bodies,
            exists: view.exists(),
            highest_uid: view.highest_uid().map(|u| u.0).unwrap_or(0),
        };
        let with_modseq = keys.iter().any(search::uses_modseq);
        let mut found = Vec::new();
        let mut highest = 0u64;
        let mut body_missing = false;
        store_read(|| {
            for (index, message) in view.messages.iter().enumerate() {
                let mut c = Candidate::new(index as u32 + 1, message);
                let matched = keys.iter().all(|k| search::matches(k, &mut c, &ctx, 0));
                body_missing |= c.body_missing();
                if matched {
                    found.push(nz(if uid { message.uid.0 } else { index as u32 + 1 }));
                    highest = highest.max(message.modseq.0);
                }
            }
        });
        if body_missing {
            server.enqueue_status(bodies::unavailable(tag));
            return;
        }
        let modseq = if with_modseq { NonZeroU64::new(highest) } else { None };
        server.enqueue_data(Data::Search(found, modseq));
        server.enqueue_status(ok(tag, None, "SEARCH completed"));
    }

    #[allow(clippy::too_many_arguments)]
    async fn store(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        set: &SequenceSet,
        kind: StoreType,
        response: StoreResponse,
        flags_in: &[Flag<'static>],
        uid: bool,
        modifiers: &[imap_codec::imap_types::command::StoreModifier],
    ) {
        let view = self.selected.as_ref().expect("selected state");
        if view.read_only {
            {
                server.enqueue_status(no(tag, Some(other_code("READ-ONLY")), "mailbox is read-only"));
                return;
            }
        }
        let (system, keywords) = match flags::split(flags_in) {
            Ok(x) => x,
            Err(e) => {
                server.enqueue_status(bad(Some(tag), e));
                return;
            }
        };
        let unchanged_since = modifiers
            .iter()
            .map(|m| match m {
                imap_codec::imap_types::command::StoreModifier::UnchangedSince(v) => maildr_types::ModSeq(*v),
            })
            .next();
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let indexes = view.select(set, uid);
        let uids: Vec<Uid> = indexes.iter().map(|i| view.messages[*i].uid).collect();
        let op = match kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let mailbox = view.mailbox;
        let cmd = StoreCommand::StoreFlags { mailbox, uids, op, flags: system, keywords, unchanged_since };
        let applied = match self.cluster().write(cmd).await {
            Ok(a) => a,
            Err(e) => {
                server.enqueue_status(write_failed(tag, e));
                return;
            }
        };
        let Applied::FlagsStored { changed, modified_since, .. } = applied else {
            unreachable!("STORE applies as FlagsStored")
        };
        // Refresh our own view of the changed messages; others' changes show too.
        let condstore = self.condstore;
        let store = self.service.cluster.store();
        let view = self.selected.as_mut().expect("selected state");
        let mut out = Vec::new();
        view.dirty = true;
        let _ = store_read(|| view.sync(&store, false, condstore, &mut out));
        let changed: std::collections::HashSet<Uid> = changed.into_iter().map(|(u, _)| u).collect();
        for data in out {
            let silent_own = matches!(response, StoreResponse::Silent)
                && matches!(&data, Data::Fetch { seq, .. } if changed.contains(&view.messages[seq.get() as usize - 1].uid))
                && unchanged_since.is_none();
            if !silent_own {
                server.enqueue_data(data);
            }
        }
        // Messages the client named but we did not change still answer with their
        // flags (RFC 3501 §6.4.6), unless silent.
        if !matches!(response, StoreResponse::Silent) {
            for i in &indexes {
                let m = &view.messages[*i];
                if changed.contains(&m.uid) || modified_since.contains(&m.uid) {
                    continue;
                }
                let mut items = vec![MessageDataItem::Flags(flags_to_fetch(m))];
                if uid {
                    items.push(uid_item(m.uid));
                }
                if condstore {
                    items.push(modseq_item(m.modseq));
                }
                server.enqueue_data(Data::Fetch {
                    seq: nz(*i as u32 + 1),
                    items: Vec1::try_from(items).expect("non-empty"),
                });
            }
        }
        if modified_since.is_empty() {
            server.enqueue_status(ok(tag, None, "STORE completed"));
        } else {
            let nums: Vec<u32> = if uid {
                modified_since.iter().map(|u| u.0).collect()
            } else {
                modified_since
                    .iter()
                    .filter_map(|u| view.messages.iter().position(|m| m.uid == *u).map(|p| p as u32 + 1))
                    .collect()
            };
            let code = to_set(&nums).map(Code::Modified);
            server.enqueue_status(ok(tag, code, "conditional STORE failed for some messages"));
        }
    }

    async fn copy(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        set: &SequenceSet,
        target: &ImapMailbox<'static>,
        uid: bool,
        remove: bool,
    ) {
        let view = self.selected.as_ref().expect("selected state");
        if remove && view.read_only {
            {
                server.enqueue_status(no(tag, Some(other_code("READ-ONLY")), "mailbox is read-only"));
                return;
            }
        }
        let to = match mailbox_name(target) {
            Ok(n) => n,
            Err(e) => {
                server.enqueue_status(bad(Some(tag), e));
                return;
            }
        };
        let uids: Vec<Uid> = view.select(set, uid).into_iter().map(|i| view.messages[i].uid).collect();
        let from = view.mailbox;
        if uids.is_empty() {
            {
                server.enqueue_status(ok(tag, None, "nothing to copy"));
                return;
            }
        }
        let cmd = StoreCommand::CopyMessages { from, uids, to, remove_source: remove };
        match self.cluster().write(cmd).await {
            Ok(Applied::Copied { uid_validity, pairs, .. }) => {
                let src: Vec<u32> = pairs.iter().map(|(s, _)| s.0).collect();
                let dst: Vec<u32> = pairs.iter().map(|(_, d)| d.0).collect();
                let code = match (to_uid_set(&src), to_uid_set(&dst)) {
                    (Some(source), Some(destination)) => {
                        Some(Code::CopyUid { uid_validity: nz(uid_validity.0), source, destination })
                    }
                    _ => None,
                };
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

    async fn fetch(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'static>,
        uid: bool,
        modifiers: &[imap_codec::imap_types::command::FetchModifier],
    ) {
        let mut names = match names {
            MacroOrMessageDataItemNames::Macro(m) => match m {
                Macro::Fast => {
                    vec![MessageDataItemName::Flags, MessageDataItemName::InternalDate, MessageDataItemName::Rfc822Size]
                }
                Macro::All => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                ],
                Macro::Full => vec![
                    MessageDataItemName::Flags,
                    MessageDataItemName::InternalDate,
                    MessageDataItemName::Rfc822Size,
                    MessageDataItemName::Envelope,
                    MessageDataItemName::Body,
                ],
                _ => vec![MessageDataItemName::Flags],
            },
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
        };
        let changed_since = modifiers
            .iter()
            .filter_map(|m| match m {
                imap_codec::imap_types::command::FetchModifier::ChangedSince(v) => Some(v.get()),
                _ => None,
            })
            .next();
        if changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq) {
            self.condstore = true;
        }
        if self.condstore && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.push(MessageDataItemName::Uid);
        }
        let view = self.selected.as_ref().expect("selected state");
        let read_only = view.read_only;
        let mailbox = view.mailbox;
        let marks_seen = !read_only
            && names.iter().any(|n| {
                matches!(
                    n,
                    MessageDataItemName::BodyExt { peek: false, .. } | MessageDataItemName::Binary { peek: false, .. }
                ) || matches!(n, MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text)
            });
        let indexes: Vec<usize> = view
            .select(set, uid)
            .into_iter()
            .filter(|i| changed_since.is_none_or(|since| view.messages[*i].modseq.0 > since))
            .collect();
        // Mark as seen first, so the FLAGS we answer with are the new ones.
        if marks_seen {
            let unseen: Vec<Uid> = indexes
                .iter()
                .map(|i| &view.messages[*i])
                .filter(|m| !m.flags.contains(SystemFlags::SEEN))
                .map(|m| m.uid)
                .collect();
            if !unseen.is_empty() {
                let cmd = StoreCommand::StoreFlags {
                    mailbox,
                    uids: unseen,
                    op: FlagOp::Add,
                    flags: SystemFlags(SystemFlags::SEEN),
                    keywords: vec![],
                    unchanged_since: None,
                };
                if let Err(e) = self.cluster().write(cmd).await {
                    {
                        server.enqueue_status(write_failed(tag, e));
                        return;
                    }
                }
                if let Some(v) = self.selected.as_mut() {
                    v.dirty = true;
                }
                // Refresh without telling: the FETCH answer below carries FLAGS.
                let store = self.service.cluster.store();
                let condstore = self.condstore;
                if let Some(v) = self.selected.as_mut() {
                    let mut discard = Vec::new();
                    let _ = store_read(|| v.sync(&store, false, condstore, &mut discard));
                    for d in discard {
                        if !matches!(d, Data::Fetch { .. }) {
                            server.enqueue_data(d);
                        }
                    }
                }
                if !names.contains(&MessageDataItemName::Flags) {
                    names.push(MessageDataItemName::Flags);
                }
            }
        }
        // A replica may hold messages whose bodies are still on their way.
        let view = self.selected.as_ref().expect("selected state");
        let hashes: Vec<_> = if names.iter().any(needs_body) {
            indexes.iter().map(|i| view.messages[*i].body).collect()
        } else {
            vec![]
        };
        let bodies = BodyReader::prepare(self.cluster(), &hashes).await;
        let view = self.selected.as_ref().expect("selected state");
        let mut failed = false;
        store_read(|| {
            for i in &indexes {
                let message = &view.messages[*i];
                match fetch_items(&bodies, message, &names) {
                    Ok(items) => {
                        if let Ok(items) = Vec1::try_from(items) {
                            server.enqueue_data(Data::Fetch { seq: nz(*i as u32 + 1), items });
                        }
                    }
                    Err(_) => failed = true,
                }
            }
        });
        if failed {
            server.enqueue_status(bodies::unavailable(tag));
        } else {
            server.enqueue_status(ok(tag, None, "FETCH completed"));
        }
    }
}

fn now() -> UnixSeconds {
    UnixSeconds(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0),
    )
}

fn quota_data(account: &Account) -> Data<'static> {
    let usage = account.used_bytes.div_ceil(1024);
    let limit = if account.quota_bytes == 0 { u64::from(u32::MAX) } else { account.quota_bytes / 1024 };
    Data::Quota {
        root: AString::try_from("").expect("valid"),
        quotas: Vec1::try_from(vec![QuotaGet { resource: Resource::Storage, usage, limit }]).expect("non-empty"),
    }
}

fn partial(data: &[u8], range: Option<(u32, NonZeroU32)>) -> (Vec<u8>, Option<u32>) {
    match range {
        None => (data.to_vec(), None),
        Some((start, len)) => {
            let s = (start as usize).min(data.len());
            let e = s.saturating_add(len.get() as usize).min(data.len());
            (data[s..e].to_vec(), Some(start))
        }
    }
}

/// Compute the FETCH items for one message; `None` when its body is missing.
/// Whether answering this FETCH item reads the message body.
fn needs_body(name: &MessageDataItemName<'static>) -> bool {
    !matches!(
        name,
        MessageDataItemName::Flags
            | MessageDataItemName::Uid
            | MessageDataItemName::InternalDate
            | MessageDataItemName::Rfc822Size
            | MessageDataItemName::ModSeq
    )
}

fn fetch_items(
    bodies: &BodyReader,
    message: &maildr_store::Message,
    names: &[MessageDataItemName<'static>],
) -> Result<Vec<MessageDataItem<'static>>, bodies::BodyUnavailable> {
    let needs_body = names.iter().any(needs_body);
    let raw = if needs_body { Some(bodies.read(&message.body)?) } else { None };
    let raw_ref: &[u8] = raw.as_deref().unwrap_or(b"");
    let parsed = if needs_body { mime::parse(raw_ref) } else { None };
    let mut items = Vec::new();
    for name in names {
        let item = match name {
            MessageDataItemName::Flags => MessageDataItem::Flags(flags_to_fetch(message)),
            MessageDataItemName::Uid => uid_item(message.uid),
            MessageDataItemName::InternalDate => MessageDataItem::InternalDate(datetime(message.internal_date.0)),
            MessageDataItemName::Rfc822Size => MessageDataItem::Rfc822Size(message.size_bytes as u32),
            MessageDataItemName::ModSeq => modseq_item(message.modseq),
            MessageDataItemName::Envelope => match &parsed {
                Some(p) => MessageDataItem::Envelope(mime::envelope(p)),
                None => continue,
            },
            MessageDataItemName::BodyStructure => match &parsed {
                Some(p) => MessageDataItem::BodyStructure(mime::body_structure(p, true)),
                None => continue,
            },
            MessageDataItemName::Body => match &parsed {
                Some(p) => MessageDataItem::Body(mime::body_structure(p, false)),
                None => continue,
            },
            MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(mime::nstring_bytes(raw_ref)),
            MessageDataItemName::Rfc822Header => {
                MessageDataItem::Rfc822Header(mime::nstring_bytes(mime::header_of(raw_ref)))
            }
            MessageDataItemName::Rfc822Text => {
                MessageDataItem::Rfc822Text(mime::nstring_bytes(&raw_ref[mime::header_of(raw_ref).len()..]))
            }
            MessageDataItemName::BodyExt { section, partial: range, .. } => {
                let data = section_bytes(raw_ref, parsed.as_ref(), section.as_ref());
                let (bytes, origin) = match data {
                    Some(d) => partial(&d, *range),
                    None => (Vec::new(), range.map(|r| r.0)),
                };
                MessageDataItem::BodyExt { section: section.clone(), origin, data: mime::nstring_bytes(&bytes) }
            }
            MessageDataItemName::Binary { section, partial: range, .. } => {
                let data = match &parsed {
                    Some(p) if !section.is_empty() => {
                        mime::resolve(p, section).map(|b| decode_body(p, section, b.body))
                    }
                    _ => Some(raw_ref.to_vec()),
                };
                let (bytes, _) = partial(&data.unwrap_or_default(), *range);
                MessageDataItem::Binary {
                    section: section.clone(),
                    value: imap_codec::imap_types::core::NString8::Literal8(
                        imap_codec::imap_types::extensions::binary::Literal8 {
                            data: Cow::Owned(bytes),
                            mode: imap_codec::imap_types::core::LiteralMode::Sync,
                        },
                    ),
                }
            }
            MessageDataItemName::BinarySize { section } => {
                let size = match &parsed {
                    Some(p) if !section.is_empty() => {
                        mime::resolve(p, section).map(|b| decode_body(p, section, b.body).len())
                    }
                    _ => Some(raw_ref.len()),
                };
                MessageDataItem::BinarySize { section: section.clone(), size: size.unwrap_or(0) as u32 }
            }
        };
        items.push(item);
    }
    Ok(items)
}

/// Content-transfer-decoded body of a part (for BINARY).
fn decode_body(message: &mail_parser::Message<'_>, path: &[NonZeroU32], raw: &[u8]) -> Vec<u8> {
    let _ = (message, path);
    let text = String::from_utf8_lossy(raw);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(d) if !compact.is_empty() && raw.iter().all(|b| b.is_ascii()) && looks_base64(&compact) => d,
        _ => raw.to_vec(),
    }
}

fn looks_base64(s: &str) -> bool {
    s.len().is_multiple_of(4) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// Bytes of BODY[section].
fn section_bytes(
    raw: &[u8],
    parsed: Option<&mail_parser::Message<'_>>,
    section: Option<&Section<'_>>,
) -> Option<Vec<u8>> {
    let Some(section) = section else { return Some(raw.to_vec()) };
    let parsed = parsed?;
    let part_path = |p: &Option<imap_codec::imap_types::fetch::Part>| -> Vec<NonZeroU32> {
        p.as_ref().map(|p| p.0.as_ref().to_vec()).unwrap_or_default()
    };
    let names_of = |names: &Vec1<AString<'_>>| -> Vec<String> {
        names.as_ref().iter().map(|n| String::from_utf8_lossy(n.as_ref()).into_owned()).collect()
    };
    match section {
        Section::Part(p) => mime::resolve(parsed, p.0.as_ref()).map(|b| b.body.to_vec()),
        Section::Mime(p) => mime::resolve(parsed, p.0.as_ref()).map(|b| b.header.to_vec()),
        Section::Header(p) => {
            let path = part_path(p);
            if path.is_empty() {
                return Some(mime::header_of(raw).to_vec());
            }
            let part = mime::resolve(parsed, &path)?;
            Some(mime::header_of(part.body).to_vec())
        }
        Section::Text(p) => {
            let path = part_path(p);
            if path.is_empty() {
                return Some(raw[mime::header_of(raw).len()..].to_vec());
            }
            let part = mime::resolve(parsed, &path)?;
            Some(part.body[mime::header_of(part.body).len()..].to_vec())
        }
        Section::HeaderFields(p, names) | Section::HeaderFieldsNot(p, names) => {
            let not = matches!(section, Section::HeaderFieldsNot(..));
            let path = part_path(p);
            let header = if path.is_empty() {
                mime::header_of(raw)
            } else {
                mime::header_of(mime::resolve(parsed, &path)?.body)
            };
            Some(mime::header_fields(header, &names_of(names), not))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_logins_are_allowed_only_over_tls_on_loopback_or_when_configured() {
        let remote: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let local: std::net::IpAddr = "127.0.10.1".parse().unwrap();
        assert!(!login_allowed(false, remote, false));
        assert!(login_allowed(true, remote, false));
        assert!(login_allowed(false, local, false));
        assert!(login_allowed(false, remote, true));
        assert!(login_allowed(false, "::1".parse().unwrap(), false));
    }

    #[test]
    fn list_wildcards_follow_rfc_3501() {
        assert!(list_matches(b"*", b"a/b/c"));
        assert!(list_matches(b"%", b"INBOX"));
        assert!(!list_matches(b"%", b"a/b"));
        assert!(list_matches(b"a/%", b"a/b"));
        assert!(!list_matches(b"a/%", b"a/b/c"));
        assert!(list_matches(b"a*c", b"a/b/c"));
    }
}
