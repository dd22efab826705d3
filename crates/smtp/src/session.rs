//! One SMTP session: the RFC 5321 state machine for the MX and submission roles.
//!
//! The session decides every reply; storage happens only through the cluster's
//! write path, and a 250 after DATA is sent only once that write is durable. Every
//! refusal leaves the store untouched: nothing is written before all checks pass.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use maildr_cluster::{Cluster, WriteError};
use maildr_frontend::memory::MessageMemory;
use maildr_store::{Applied, Command, CommandError, Recipient};
use maildr_types::{EmailAddress, SystemFlags, UnixSeconds};
use smtp_proto::{Request, AUTH_LOGIN, AUTH_PLAIN};

use crate::auth;
use crate::conn::{Conn, ConnError, Data, Io, Line, MessageChunks};
use crate::{ListenerKind, SmtpService};

/// Where a session goes after a command.
enum Next {
    Continue,
    Close,
    StartTls,
}

struct Transaction {
    /// `None` is the null reverse-path `<>`.
    sender: Option<EmailAddress>,
    /// (address as given, local accounts it delivers to)
    recipients: Vec<(EmailAddress, Vec<EmailAddress>)>,
    /// Recipients in other domains, queued for outbound delivery.
    remote: Vec<EmailAddress>,
}

pub(crate) struct Session {
    service: Arc<SmtpService>,
    kind: ListenerKind,
    peer: SocketAddr,
    id: String,
    helo: Option<String>,
    esmtp: bool,
    tls: bool,
    authenticated: Option<EmailAddress>,
    transaction: Option<Transaction>,
    errors: u32,
    /// Messages accepted so far; numbers each message's Received id.
    messages: u32,
}

impl Session {
    pub(crate) fn new(service: Arc<SmtpService>, kind: ListenerKind, peer: SocketAddr, tls: bool) -> Self {
        let id = format!("{:016x}", rand::random::<u64>());
        Session {
            service,
            kind,
            peer,
            id,
            helo: None,
            esmtp: false,
            tls,
            authenticated: None,
            transaction: None,
            errors: 0,
            messages: 0,
        }
    }

    fn cluster(&self) -> &Cluster {
        &self.service.cluster
    }

    /// Run the session to its end, upgrading to TLS on STARTTLS.
    pub(crate) async fn run(mut self, io: Box<dyn Io>) {
        let idle = Duration::from_secs(self.service.config.idle_timeout_secs);
        let mut conn = Conn::new(io, idle);
        conn.reply(&format!("220 {} ESMTP maildr ready", self.service.hostname));
        loop {
            match self.serve(&mut conn).await {
                Ok(Next::StartTls) => {
                    if let Err(e) = conn.flush().await {
                        tracing::debug!(peer = %self.peer, error = %e, "lost client before TLS");
                        return;
                    }
                    let (io, dropped) = conn.into_io();
                    if dropped > 0 {
                        tracing::warn!(peer = %self.peer, bytes = dropped, "discarded plaintext pipelined after STARTTLS");
                    }
                    let acceptor = self.service.tls.clone().expect("STARTTLS is only accepted with TLS configured");
                    let handshake = tokio::time::timeout(idle, acceptor.accept(io)).await;
                    match handshake {
                        Ok(Ok(tls)) => {
                            conn = Conn::new(Box::new(tls), idle);
                            // RFC 3207 §4.2: forget everything learned before TLS.
                            self.tls = true;
                            self.helo = None;
                            self.esmtp = false;
                            self.transaction = None;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %self.peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    }
                }
                Ok(Next::Close) | Ok(Next::Continue) => {
                    conn.close().await;
                    return;
                }
                Err(ConnError::Idle(d)) => {
                    conn.reply(&format!(
                        "421 4.4.2 {} idle for more than {}s, closing",
                        self.service.hostname,
                        d.as_secs()
                    ));
                    conn.close().await;
                    return;
                }
                Err(e) => {
                    tracing::debug!(peer = %self.peer, error = %e, "session ended");
                    return;
                }
            }
        }
    }

    /// Serve commands until the session closes or switches to TLS.
    async fn serve(&mut self, conn: &mut Conn) -> Result<Next, ConnError> {
        let line_max = self.service.config.command_line_max_bytes as usize;
        loop {
            let line = match conn.read_line(line_max).await? {
                Line::Ok(line) => line,
                Line::TooLong => {
                    self.error(conn, &format!("500 5.5.2 Line too long (limit {line_max} bytes)"));
                    if self.too_many_errors(conn) {
                        return Ok(Next::Close);
                    }
                    continue;
                }
                Line::BareLineEnding => {
                    self.error(conn, "500 5.5.2 Bare LF or bare CR in command; lines must end with CRLF");
                    if self.too_many_errors(conn) {
                        return Ok(Next::Close);
                    }
                    continue;
                }
            };
            let next = self.command(conn, line).await?;
            if !matches!(next, Next::Continue) {
                return Ok(next);
            }
            if self.too_many_errors(conn) {
                return Ok(Next::Close);
            }
        }
    }

    fn error(&mut self, conn: &mut Conn, reply: &str) {
        self.errors += 1;
        conn.reply(reply);
    }

    fn too_many_errors(&mut self, conn: &mut Conn) -> bool {
        if self.errors > self.service.config.errors_max {
            conn.reply("421 4.7.0 Too many errors in this session, closing");
            true
        } else {
            false
        }
    }

    async fn command(&mut self, conn: &mut Conn, mut line: Vec<u8>) -> Result<Next, ConnError> {
        line.extend_from_slice(b"\r\n");
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(smtp_proto::Error::UnknownCommand) => {
                self.error(conn, "500 5.5.1 Unknown command");
                return Ok(Next::Continue);
            }
            Err(smtp_proto::Error::SyntaxError { syntax }) => {
                self.error(conn, &format!("501 5.5.4 Syntax: {syntax}"));
                return Ok(Next::Continue);
            }
            Err(smtp_proto::Error::InvalidSenderAddress) => {
                self.error(conn, "501 5.1.7 Invalid sender address");
                return Ok(Next::Continue);
            }
            Err(smtp_proto::Error::InvalidRecipientAddress) => {
                self.error(conn, "501 5.1.3 Invalid recipient address");
                return Ok(Next::Continue);
            }
            Err(smtp_proto::Error::InvalidParameter { param }) => {
                self.error(conn, &format!("501 5.5.4 Invalid parameter {param}"));
                return Ok(Next::Continue);
            }
            Err(smtp_proto::Error::UnsupportedParameter { param }) => {
                self.error(
                    conn,
                    &format!("555 5.5.4 Unsupported parameter {}", param.chars().take(64).collect::<String>()),
                );
                return Ok(Next::Continue);
            }
            Err(_) => {
                self.error(conn, "500 5.5.2 Syntax error");
                return Ok(Next::Continue);
            }
        };
        match request {
            Request::Ehlo { host } => {
                self.helo = Some(host);
                self.esmtp = true;
                self.transaction = None;
                self.ehlo(conn);
            }
            Request::Helo { host } => {
                self.helo = Some(host);
                self.esmtp = false;
                self.transaction = None;
                conn.reply(&format!("250 {}", self.service.hostname));
            }
            Request::Lhlo { .. } => self.error(conn, "502 5.5.1 LMTP is not spoken here"),
            Request::StartTls => return Ok(self.starttls(conn)),
            Request::Auth { mechanism, initial_response } => self.auth(conn, mechanism, initial_response).await?,
            Request::Mail { from } => self.mail(conn, from.address, from.size).await,
            Request::Rcpt { to } => self.rcpt(conn, to.address).await,
            Request::Data => return self.data(conn).await,
            Request::Bdat { .. } => self.error(conn, "502 5.5.1 CHUNKING is not offered"),
            Request::Rset => {
                self.transaction = None;
                conn.reply("250 2.0.0 Reset");
            }
            Request::Noop { .. } => conn.reply("250 2.0.0 OK"),
            Request::Quit => {
                conn.reply(&format!("221 2.0.0 {} closing connection", self.service.hostname));
                return Ok(Next::Close);
            }
            // Do not reveal which addresses exist (RFC 5321 §3.5.3 allows 252).
            Request::Vrfy { .. } => {
                conn.reply("252 2.5.0 Cannot VRFY user; send mail and it will be delivered if the address exists")
            }
            Request::Expn { .. } => self.error(conn, "502 5.5.1 EXPN is not offered"),
            Request::Help { .. } => conn
                .reply("214 2.0.0 See RFC 5321; maildr speaks EHLO HELO MAIL RCPT DATA RSET NOOP QUIT STARTTLS AUTH"),
            Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
                self.error(conn, "502 5.5.1 Command not implemented")
            }
        }
        Ok(Next::Continue)
    }

    fn tls_available(&self) -> bool {
        !self.tls && self.service.tls.is_some()
    }

    fn auth_allowed(&self) -> bool {
        self.kind != ListenerKind::Mx && self.tls
    }

    fn ehlo(&mut self, conn: &mut Conn) {
        let mut lines = vec![
            format!("{} Hello {} [{}]", self.service.hostname, self.helo.as_deref().unwrap_or(""), self.peer.ip()),
            "PIPELINING".to_string(),
            format!("SIZE {}", self.service.config.message_size_max_bytes),
            "8BITMIME".to_string(),
            "ENHANCEDSTATUSCODES".to_string(),
            "SMTPUTF8".to_string(),
        ];
        if self.tls_available() {
            lines.push("STARTTLS".into());
        }
        if self.auth_allowed() && self.authenticated.is_none() {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        let last = lines.len() - 1;
        let mut reply = String::new();
        for (i, l) in lines.iter().enumerate() {
            reply.push_str(&format!("250{}{}\r\n", if i == last { ' ' } else { '-' }, l));
        }
        conn.reply(&reply);
    }

    fn starttls(&mut self, conn: &mut Conn) -> Next {
        if self.tls {
            self.error(conn, "503 5.5.1 TLS is already active");
            return Next::Continue;
        }
        if self.service.tls.is_none() {
            self.error(conn, "454 4.7.0 TLS not available");
            return Next::Continue;
        }
        conn.reply("220 2.0.0 Ready to start TLS");
        Next::StartTls
    }

    async fn auth(&mut self, conn: &mut Conn, mechanism: u64, initial: String) -> Result<(), ConnError> {
        if self.kind == ListenerKind::Mx {
            self.error(conn, "503 5.5.1 AUTH is not offered on the MX port; use submission");
            return Ok(());
        }
        if !self.tls {
            self.error(conn, "538 5.7.11 Encryption required: issue STARTTLS first");
            return Ok(());
        }
        if self.authenticated.is_some() {
            self.error(conn, "503 5.5.1 Already authenticated");
            return Ok(());
        }
        if self.transaction.is_some() {
            self.error(conn, "503 5.5.1 AUTH not allowed during a mail transaction");
            return Ok(());
        }
        let line_max = self.service.config.command_line_max_bytes as usize;
        let credentials = match mechanism {
            AUTH_PLAIN => {
                let response = if initial.is_empty() {
                    conn.reply("334 ");
                    match self.sasl_response(conn, line_max).await? {
                        Some(r) => r,
                        None => return Ok(()),
                    }
                } else if initial == "=" {
                    String::new()
                } else {
                    initial
                };
                auth::decode_plain(&response)
            }
            AUTH_LOGIN => {
                let user = if initial.is_empty() {
                    conn.reply("334 VXNlcm5hbWU6");
                    match self.sasl_response(conn, line_max).await? {
                        Some(r) => auth::decode_b64_text(&r),
                        None => return Ok(()),
                    }
                } else {
                    auth::decode_b64_text(&initial)
                };
                let Some(user) = user else {
                    self.error(conn, "501 5.5.2 Cannot decode the user name");
                    return Ok(());
                };
                conn.reply("334 UGFzc3dvcmQ6");
                let Some(password) = self.sasl_response(conn, line_max).await? else {
                    return Ok(());
                };
                auth::decode_b64_text(&password).map(|p| (user, p))
            }
            _ => {
                self.error(conn, "504 5.5.4 Unrecognized authentication mechanism; use PLAIN or LOGIN");
                return Ok(());
            }
        };
        let Some((user, password)) = credentials else {
            self.error(conn, "501 5.5.2 Cannot decode the credentials");
            return Ok(());
        };
        // Recent failures from this address slow its next answer down (doubling),
        // whichever connection they came on.
        let delay = self.service.login_failures.delay(self.peer.ip());
        if !delay.is_zero() {
            conn.flush().await?;
            tokio::time::sleep(delay).await;
        }
        match auth::verify_login(self.cluster(), &user, &password).await {
            auth::Login::Busy => {
                // RFC 4954: a temporary failure; not counted against the source.
                conn.reply("454 4.7.0 Temporary authentication failure: too many logins at once; try again");
            }
            auth::Login::Accepted(account) => {
                tracing::info!(session = %self.id, peer = %self.peer, user = %account, "authenticated");
                self.service.login_failures.succeeded(self.peer.ip());
                self.authenticated = Some(account);
                conn.reply("235 2.7.0 Authentication successful");
            }
            auth::Login::Refused => {
                self.service.login_failures.failed(self.peer.ip());
                tracing::warn!(session = %self.id, peer = %self.peer, user = %user.chars().take(128).collect::<String>(), "authentication failed");
                self.error(conn, "535 5.7.8 Authentication credentials invalid");
            }
        }
        Ok(())
    }

    /// One SASL continuation line; `None` when the client cancelled with `*` or
    /// sent something unusable (the reply is already queued).
    async fn sasl_response(&mut self, conn: &mut Conn, line_max: usize) -> Result<Option<String>, ConnError> {
        match conn.read_line(line_max).await? {
            Line::Ok(l) if l == b"*" => {
                self.error(conn, "501 5.0.0 Authentication cancelled");
                Ok(None)
            }
            Line::Ok(l) => match String::from_utf8(l) {
                Ok(s) => Ok(Some(s)),
                Err(_) => {
                    self.error(conn, "501 5.5.2 Cannot decode the response");
                    Ok(None)
                }
            },
            Line::TooLong => {
                self.error(conn, "500 5.5.6 Authentication exchange line too long");
                Ok(None)
            }
            Line::BareLineEnding => {
                self.error(conn, "500 5.5.2 Bare LF or bare CR in command; lines must end with CRLF");
                Ok(None)
            }
        }
    }

    async fn mail(&mut self, conn: &mut Conn, address: String, size: usize) {
        if self.helo.is_none() {
            self.error(conn, "503 5.5.1 Say EHLO first");
            return;
        }
        if self.transaction.is_some() {
            self.error(conn, "503 5.5.1 Sender already given; RSET first");
            return;
        }
        if self.kind != ListenerKind::Mx && self.authenticated.is_none() {
            let how = if self.tls { "use AUTH" } else { "issue STARTTLS, then AUTH" };
            self.error(conn, &format!("530 5.7.0 Authentication required: {how}"));
            return;
        }
        if size as u64 > self.service.config.message_size_max_bytes {
            self.error(
                conn,
                &format!(
                    "552 5.3.4 Message size exceeds the limit of {} bytes",
                    self.service.config.message_size_max_bytes
                ),
            );
            return;
        }
        let sender = if address.is_empty() {
            None
        } else {
            match EmailAddress::parse(&address) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.error(conn, &format!("553 5.1.7 Bad sender address: {e}"));
                    return;
                }
            }
        };
        if let Some(account) = &self.authenticated {
            let owned = match &sender {
                None => false,
                Some(s) => match self.cluster().store().may_send_as(account, s) {
                    Ok(owned) => owned,
                    Err(e) => {
                        tracing::error!(error = %e, "store read failed");
                        self.error(conn, "451 4.3.0 Temporary failure reading the store; try again");
                        return;
                    }
                },
            };
            if !owned {
                self.error(conn, &format!("553 5.7.1 Sender <{address}> is not an address of {account}"));
                return;
            }
        }
        self.transaction = Some(Transaction { sender, recipients: Vec::new(), remote: Vec::new() });
        conn.reply("250 2.1.0 Sender OK");
    }

    async fn rcpt(&mut self, conn: &mut Conn, address: String) {
        let recipients_max = self.service.config.recipients_max as usize;
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len() + t.remote.len()) else {
            self.error(conn, "503 5.5.1 Need MAIL before RCPT");
            return;
        };
        if count >= recipients_max {
            // 452 per RFC 5321 §4.5.3.1.10: the client sends the rest later.
            self.error(conn, &format!("452 4.5.3 Too many recipients (limit {recipients_max})"));
            return;
        }
        let recipient = match EmailAddress::parse(&address) {
            Ok(a) => a,
            Err(e) => {
                self.error(conn, &format!("553 5.1.3 Bad recipient address: {e}"));
                return;
            }
        };
        let resolved = match self.cluster().store().resolve_recipient(&recipient) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "store read failed");
                self.error(conn, "451 4.3.0 Temporary failure reading the store; try again");
                return;
            }
        };
        match resolved {
            Recipient::Local(accounts) => {
                for account in &accounts {
                    if let Ok(Some(a)) = self.cluster().store().account(account) {
                        if a.would_exceed_quota(1) {
                            self.error(conn, &format!("552 5.2.2 Mailbox of <{recipient}> is full"));
                            return;
                        }
                    }
                }
                let t = self.transaction.as_mut().expect("checked above");
                if t.recipients.iter().any(|(a, _)| a == &recipient) {
                    conn.reply("250 2.1.5 Recipient OK (duplicate)");
                    return;
                }
                t.recipients.push((recipient, accounts));
                conn.reply("250 2.1.5 Recipient OK");
            }
            // Only authenticated submission relays, and only when outbound is on.
            // Before the catching-up deferral: a domain this replica does not know
            // yet is checked again when the submission applies (`RemoteIsLocal`).
            Recipient::NotHosted
                if self.kind != ListenerKind::Mx && self.authenticated.is_some() && self.service.outbound.enabled =>
            {
                let max = self.service.outbound.queue_messages_max;
                match self.cluster().store().queued_count() {
                    Err(e) => {
                        tracing::error!(error = %e, "store read failed");
                        self.error(conn, "451 4.3.0 Temporary failure reading the store; try again");
                    }
                    Ok(queued) if queued >= max => {
                        tracing::warn!(session = %self.id, queued, "outbound queue full");
                        self.error(
                            conn,
                            &format!("452 4.3.1 <{recipient}>: the outbound queue is full ({queued} messages); try again later"),
                        );
                    }
                    Ok(_) => {
                        let t = self.transaction.as_mut().expect("checked above");
                        if !t.remote.contains(&recipient) {
                            t.remote.push(recipient);
                        }
                        conn.reply("250 2.1.5 Recipient OK (queued for delivery to another domain)");
                    }
                }
            }
            // A replica still catching up may not know a new account or domain yet:
            // a permanent refusal would bounce mail the cluster accepts. Defer.
            Recipient::UnknownUser | Recipient::NotHosted if !self.cluster().is_caught_up() => self.error(
                conn,
                &format!("451 4.3.0 <{recipient}>: this site is catching up with the cluster; try again shortly"),
            ),
            Recipient::UnknownUser => self.error(conn, &format!("550 5.1.1 <{recipient}>: no such user here")),
            Recipient::NotHosted => {
                let reply = if self.kind == ListenerKind::Mx {
                    format!("550 5.7.1 <{recipient}>: relay access denied")
                } else {
                    format!("550 5.7.1 <{recipient}>: relay access denied: outbound delivery to other domains is not enabled on this site")
                };
                self.error(conn, &reply);
            }
        }
    }

    async fn data(&mut self, conn: &mut Conn) -> Result<Next, ConnError> {
        let Some(transaction) = self.transaction.take() else {
            self.error(conn, "503 5.5.1 Need MAIL and RCPT before DATA");
            return Ok(Next::Continue);
        };
        if transaction.recipients.is_empty() && transaction.remote.is_empty() {
            self.transaction = Some(transaction);
            self.error(conn, "554 5.5.1 No valid recipients");
            return Ok(Next::Continue);
        }
        conn.reply("354 End data with <CR><LF>.<CR><LF>");
        let limit = usize::try_from(self.service.config.message_size_max_bytes).unwrap_or(usize::MAX);
        // The charge is held until the delivery is answered: the body stays in
        // memory until then.
        let (body, _charge) = match conn.read_data(limit, MessageMemory::global()).await? {
            Data::Message(body, charge) => (body, charge),
            Data::TooLarge => {
                self.error(conn, &format!("552 5.3.4 Message size exceeds the limit of {limit} bytes"));
                return Ok(Next::Continue);
            }
            Data::OverBudget(spent) => {
                tracing::warn!(session = %self.id, peer = %self.peer, %spent, "message refused: memory budget spent");
                self.error(conn, "452 4.3.1 Insufficient system resources: too much mail in flight; try again later");
                return Ok(Next::Continue);
            }
            Data::BareLineEnding => {
                tracing::warn!(session = %self.id, peer = %self.peer, "bare LF/CR in DATA; refused and closing");
                conn.reply("521 5.5.2 Bare LF or bare CR in message data refused (SMTP smuggling protection); closing");
                return Ok(Next::Close);
            }
        };
        let reply = self.deliver(transaction, body).await;
        conn.reply(&reply);
        if !reply.starts_with('2') {
            self.errors += 1;
        }
        Ok(Next::Continue)
    }

    /// Store the body, then commit the delivery; the reply says what became durable.
    async fn deliver(&mut self, transaction: Transaction, body: MessageChunks) -> String {
        let at = self.service.clock.now();
        let mut accounts: Vec<EmailAddress> =
            transaction.recipients.iter().flat_map(|(_, a)| a.iter().cloned()).collect();
        accounts.sort();
        accounts.dedup();
        let single = (transaction.recipients.len() + transaction.remote.len() == 1).then(|| {
            transaction
                .recipients
                .first()
                .map(|(a, _)| a)
                .or(transaction.remote.first())
                .cloned()
                .expect("one recipient")
        });
        self.messages += 1;
        // Our trace header and the body in one allocation, the only copy held.
        let received = self.received_header(at, single.as_ref());
        let mut message = body.into_vec_after(received.as_bytes());
        let mut ours = received.len();
        // Mail from other domains gets its SPF/DKIM/DMARC results above our trace.
        if let Some(checker) = self.service.inbound_auth.as_ref().filter(|_| self.kind == ListenerKind::Mx) {
            let helo = self.helo.clone().unwrap_or_default();
            let from = transaction.sender.as_ref().map(|s| s.to_string());
            let results = checker.header(self.peer.ip(), &helo, from.as_deref(), &message[ours..]).await;
            let mut with_results = Vec::with_capacity(results.len() + message.len());
            with_results.extend_from_slice(results.as_bytes());
            with_results.append(&mut message);
            message = with_results;
            ours += results.len();
        }
        let body = &message[ours..];
        let header_fields = count_header_fields(body);
        let header_fields_max = self.service.config.header_fields_max as usize;
        if header_fields > header_fields_max {
            return format!("554 5.6.0 Message has {header_fields} header fields; the limit is {header_fields_max}");
        }
        let size = message.len();
        // Quota is checked by the store atomically too; this early check only
        // spares writing a body that would be refused.
        for account in &accounts {
            if let Ok(Some(a)) = self.cluster().store().account(account) {
                if a.would_exceed_quota(size as u64) {
                    return format!("552 5.2.2 Mailbox of <{account}> is over quota");
                }
            }
        }
        // A retry is recognised by what the sender sent, never by a header it chose
        // alone: the same bytes from the same sender, for a message that names itself
        // with a Message-ID (without one, identical bytes may be two messages).
        let retry_key = has_message_id(body)
            .then(|| maildr_store::delivery_retry_key(transaction.sender.as_ref().map(|s| s.as_str()), body));
        let blob = match self.cluster().put_body(message).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(session = %self.id, error = %e, "message body not stored");
                return "451 4.3.0 Message not stored (temporary local problem); try again later".into();
            }
        };
        let command = if transaction.remote.is_empty() {
            Command::Deliver {
                recipients: accounts,
                body: blob,
                internal_date: at,
                flags: SystemFlags::default(),
                retry_key,
            }
        } else {
            let at_ms = self.service.clock.now_ms();
            Command::Submit {
                local: accounts,
                remote: transaction.remote.clone(),
                from: transaction.sender.clone(),
                submitted_by: self.authenticated.clone(),
                body: blob,
                internal_date: at,
                retry_key,
                at_ms,
                expires_at_ms: at_ms.saturating_add(self.service.outbound.lifetime_ms),
            }
        };
        match self.cluster().write(command).await {
            Ok(Applied::Submitted { placements, queued }) => {
                tracing::info!(
                    session = %self.id,
                    peer = %self.peer,
                    from = %transaction.sender.as_ref().map(|s| s.as_str()).unwrap_or("<>"),
                    local = placements.len(),
                    remote = transaction.remote.len(),
                    queue_id = ?queued,
                    size,
                    body = %blob.hash,
                    "submitted"
                );
                let queued = queued.map(|id| format!(", queued as {id}")).unwrap_or_default();
                format!("250 2.0.0 Message accepted for delivery, id {}{queued}", &blob.hash.to_hex()[..16])
            }
            Ok(Applied::Delivered { placements }) => {
                tracing::info!(
                    session = %self.id,
                    peer = %self.peer,
                    from = %transaction.sender.as_ref().map(|s| s.as_str()).unwrap_or("<>"),
                    recipients = placements.len(),
                    size,
                    body = %blob.hash,
                    "delivered"
                );
                format!("250 2.0.0 Message accepted for delivery, id {}", &blob.hash.to_hex()[..16])
            }
            Ok(other) => unreachable!("a delivery applies as Delivered, got {other:?}"),
            Err(WriteError::Refused(CommandError::OverQuota(a))) => format!("552 5.2.2 Mailbox of <{a}> is over quota"),
            Err(WriteError::Refused(CommandError::AccountUnknown(a))) => format!("550 5.1.1 <{a}>: no such user here"),
            // A domain added between RCPT and DATA: the sender may simply retry.
            Err(WriteError::Refused(CommandError::RemoteIsLocal(a))) => {
                format!("451 4.3.0 <{a}> became local while the message was received; try again")
            }
            Err(WriteError::Refused(e)) => format!("554 5.0.0 Delivery refused: {e}"),
            Err(WriteError::Unavailable(why)) => {
                tracing::error!(session = %self.id, why, "delivery not committed");
                "451 4.3.0 Message not stored (temporary local problem); try again later".into()
            }
        }
    }

    fn received_header(&self, at: UnixSeconds, recipient: Option<&EmailAddress>) -> String {
        let protocol = match (self.esmtp, self.tls, self.authenticated.is_some()) {
            (false, _, _) => "SMTP",
            (true, false, false) => "ESMTP",
            (true, true, false) => "ESMTPS",
            (true, false, true) => "ESMTPA",
            (true, true, true) => "ESMTPSA",
        };
        let helo: String = self
            .helo
            .as_deref()
            .unwrap_or("unknown")
            .chars()
            .filter(|c| !c.is_control() && *c != '(' && *c != ')')
            .take(255)
            .collect();
        let date = mail_parser::DateTime::from_timestamp(at.0).to_rfc822();
        let mut h = format!(
            "Received: from {helo} ([{ip}])\r\n\tby {host} (maildr) with {protocol} id {id}.{n}",
            ip = self.peer.ip(),
            host = self.service.hostname,
            id = self.id,
            n = self.messages,
        );
        if let Some(r) = recipient {
            h.push_str(&format!("\r\n\tfor <{r}>"));
        }
        h.push_str(&format!(";\r\n\t{date}\r\n"));
        h
    }
}

/// Number of header fields before the first empty line (continuation lines belong
/// to the field above them). A message without an empty line is all header.
pub fn count_header_fields(message: &[u8]) -> usize {
    let mut count = 0;
    for line in message.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if !matches!(line[0], b' ' | b'\t') {
            count += 1;
        }
    }
    count
}

#[cfg(test)]
mod tests {
    use super::count_header_fields;

    #[test]
    fn header_fields_count_folded_lines_once_and_stop_at_the_body() {
        assert_eq!(count_header_fields(b"A: 1\r\nB: 2\r\n\tcont\r\n\r\nC: not a header\r\n"), 2);
        assert_eq!(count_header_fields(b""), 0);
        assert_eq!(count_header_fields(b"no empty line"), 1);
    }
}

/// Whether the message's header block has a Message-ID field.
fn has_message_id(message: &[u8]) -> bool {
    let header_end = message.windows(4).position(|w| w == b"\r\n\r\n").map_or(message.len(), |p| p + 2);
    message[..header_end]
        .split(|b| *b == b'\n')
        .any(|line| line.len() > 11 && line[..11].eq_ignore_ascii_case(b"message-id:"))
}

#[cfg(test)]
mod retry_key_tests {
    use super::has_message_id;

    #[test]
    fn only_a_message_id_field_in_the_header_counts() {
        assert!(has_message_id(b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n"));
        assert!(has_message_id(b"message-id: <c@d>\r\n\r\n"));
        assert!(!has_message_id(b"Subject: none\r\n\r\nMessage-ID: <in@body>\r\n"));
        assert!(!has_message_id(b"X-Message-ID: <a@b>\r\n\r\n"));
        assert!(!has_message_id(b""));
    }
}
