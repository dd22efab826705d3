//! Entry points for fuzzing what an SMTP session does with the bytes a client
//! sends, without a socket or a store: command lines as [`Conn`] reads them, the
//! parse and the checks a session runs on a parsed command's arguments, and the
//! DATA stream with everything the server derives from a message before storing
//! it. Used by `fuzz/` (cargo-fuzz) and by ordinary tests; never by the server.
//!
//! Every input is read twice, once as one socket read delivers it and once in
//! small uneven pieces, and both readings must agree: where TCP happens to split
//! the stream must never change what a line or a message is (that disagreement is
//! the SMTP smuggling class). The limits are the server's defaults
//! ([`SmtpSection::default`]).
//!
//! The session's steps that need the store are left out: a RCPT with a valid
//! address counts as accepted, every login as refused, and nothing is delivered.
//! This module must never be called by the server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use maildr_config::SmtpSection;
use maildr_frontend::memory::MessageMemory;
use maildr_types::EmailAddress;
use smtp_proto::{Request, AUTH_LOGIN, AUTH_PLAIN};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::auth;
use crate::conn::{Conn, ConnError, Data, Line};

/// The first reading: everything the client sent arrives in one read.
const WHOLE: &[usize] = &[usize::MAX];
/// The second reading: reads of these sizes in turn. Uneven, some of one byte, so
/// a CRLF or a `.` line falls across two reads; on average not much smaller than
/// a socket's, since every read costs the connection a fresh 16 KiB of buffer and
/// a look through the input it holds.
const PIECES: &[usize] = &[1, 13, 2, 200, 7, 1, 600, 3, 2048, 16 * 1024];

/// The bytes of an SMTP session's input, read as a session reads them: command
/// lines, AUTH continuation lines and, after a DATA the session accepts, the
/// message. Panics when the two readings disagree or an invariant breaks.
pub fn command(bytes: &[u8]) {
    let whole = run(bytes, WHOLE, session);
    let pieces = run(bytes, PIECES, session);
    assert_agree(&whole, &pieces, "a session");
}

/// The bytes a client sends after DATA's 354: the message as [`Conn::read_data`]
/// reads it (dot-unstuffing, the terminator, the size limit), what the server
/// computes from it, and the command lines that follow. Read at the server's limit
/// and at a limit the input can reach; panics when a reading or a limit changes
/// where the message ends, or an invariant breaks.
pub fn data(bytes: &[u8]) {
    let configured = message_limit();
    let small = bytes.len() / 2 + 1;
    let mut results = Vec::new();
    for limit in [configured, small] {
        let whole = run(bytes, WHOLE, |conn| after_data(conn, limit));
        let pieces = run(bytes, PIECES, |conn| after_data(conn, limit));
        assert_agree(&whole, &pieces, &format!("DATA at a limit of {limit} bytes"));
        results.push(whole);
    }
    let (at_configured, at_small) = (&results[0], &results[1]);
    // A message read whole at the server's limit ends at the same place under a
    // smaller one: it is the same message if it fits, else too large.
    if let Some(Event::Message { body, .. }) = at_configured.first() {
        if body.len() <= small {
            assert_eq!(at_small, at_configured, "a message within both limits was read differently");
        } else {
            assert_eq!(at_small.first(), Some(&Event::MessageTooLarge), "a message over the limit was not refused");
            assert_eq!(at_small[1..], at_configured[1..], "a refused message ended elsewhere than the accepted one");
        }
    }
}

/// Two readings of one input agree: the same events up to where the connection
/// ends. A bare line ending in DATA closes the connection, so it ends a reading
/// as the client closing does: a reading that ran out of input inside a long line,
/// before the bare CR in it was looked at, agrees with one that found it.
fn assert_agree(whole: &[Event], pieces: &[Event], what: &str) {
    if whole == pieces {
        return;
    }
    let end =
        |events: &[Event]| events.iter().position(|e| matches!(e, Event::MessageBareEnding | Event::Ended("closed")));
    let agree = match (end(whole), end(pieces)) {
        (Some(w), Some(p)) => w == p && whole[..w] == pieces[..p],
        _ => false,
    };
    assert!(agree, "where the input was split between reads changed what was read ({what}):\n{whole:?}\n{pieces:?}");
}

/// What a reading of the input gave, in order; two readings must give the same.
#[derive(Debug, PartialEq, Eq)]
enum Event {
    Line(Vec<u8>),
    LineTooLong,
    LineBareEnding,
    /// A message read after DATA, with what the server derives from it.
    Message {
        body: Vec<u8>,
        header_fields: usize,
        retry_key: String,
    },
    MessageTooLarge,
    /// The site's memory budget could not hold the message.
    MessageOverBudget,
    MessageBareEnding,
    /// How the reading ended: the client closed, or the session did.
    Ended(&'static str),
}

fn limits() -> &'static SmtpSection {
    static LIMITS: OnceLock<SmtpSection> = OnceLock::new();
    LIMITS.get_or_init(SmtpSection::default)
}

fn line_limit() -> usize {
    usize::try_from(limits().command_line_max_bytes).unwrap_or(usize::MAX)
}

fn message_limit() -> usize {
    usize::try_from(limits().message_size_max_bytes).unwrap_or(usize::MAX)
}

thread_local! {
    /// One runtime per thread for every input: building one per input would cost
    /// more than reading it.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds without I/O resources");
}

/// Read `bytes` through a [`Conn`], delivered in reads of the sizes `pieces`.
fn run<F: Future<Output = Vec<Event>>>(
    bytes: &[u8],
    pieces: &'static [usize],
    read: impl FnOnce(Conn) -> F,
) -> Vec<Event> {
    let idle = Duration::from_secs(limits().idle_timeout_secs);
    let conn = Conn::new(Box::new(Client { input: bytes.to_vec(), pos: 0, pieces, reads: 0 }), idle);
    RUNTIME.with(|runtime| runtime.block_on(read(conn)))
}

/// A client's side of a connection: its input in reads of the sizes `pieces` (in
/// turn), replies thrown away. Never pending, so no read times out.
struct Client {
    input: Vec<u8>,
    pos: usize,
    pieces: &'static [usize],
    reads: usize,
}

impl AsyncRead for Client {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let piece = this.pieces[this.reads % this.pieces.len()];
        this.reads += 1;
        let n = piece.min(buf.remaining()).min(this.input.len() - this.pos);
        buf.put_slice(&this.input[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Client {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn ended(e: &ConnError) -> Event {
    Event::Ended(match e {
        ConnError::Closed => "closed",
        ConnError::Idle(_) => "idle",
        ConnError::Io(_) => "i/o error",
    })
}

/// The command lines after a DATA section, as the session reads them.
async fn after_data(mut conn: Conn, limit: usize) -> Vec<Event> {
    let mut events = Vec::new();
    match conn.read_data(limit, MessageMemory::global()).await {
        Ok(Data::Message(body, _)) => {
            let body = body.into_vec();
            check_message(&body, limit);
            check_restuffed(&body, limit).await;
            events.push(message_event(None, body));
        }
        Ok(Data::TooLarge) => events.push(Event::MessageTooLarge),
        Ok(Data::OverBudget(_)) => events.push(Event::MessageOverBudget),
        Ok(Data::BareLineEnding) => {
            // The session closes the connection here.
            events.push(Event::MessageBareEnding);
            return events;
        }
        Err(e) => {
            events.push(ended(&e));
            return events;
        }
    }
    loop {
        match conn.read_line(line_limit()).await {
            Ok(Line::Ok(line)) => events.push(Event::Line(line)),
            Ok(Line::TooLong) => events.push(Event::LineTooLong),
            Ok(Line::BareLineEnding) => events.push(Event::LineBareEnding),
            Err(e) => {
                events.push(ended(&e));
                return events;
            }
        }
    }
}

/// What the session derives from a message before storing it: the header field
/// count it checks against its limit, and the retry key. (The session computes the
/// key only for a message with a Message-ID; that check is private to it.)
fn message_event(sender: Option<&EmailAddress>, body: Vec<u8>) -> Event {
    let header_fields = crate::count_header_fields(&body);
    let retry_key = maildr_store::delivery_retry_key(sender.map(EmailAddress::as_str), &body);
    Event::Message { body, header_fields, retry_key }
}

/// What DATA gives is within the limit, has only CRLF line endings and ends with
/// one (or is empty).
fn check_message(body: &[u8], limit: usize) {
    assert!(body.len() <= limit, "a message of {} bytes passed a limit of {limit}", body.len());
    for (i, b) in body.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(body.get(i + 1), Some(&b'\n'), "bare CR at {i} in a message"),
            b'\n' => assert!(i > 0 && body[i - 1] == b'\r', "bare LF at {i} in a message"),
            _ => {}
        }
    }
    assert!(body.is_empty() || body.ends_with(b"\r\n"), "a message does not end with CRLF");
}

/// A message sent again, dot-stuffed, is read as the same message.
async fn check_restuffed(body: &[u8], limit: usize) {
    let mut stuffed = Vec::with_capacity(body.len() + 8);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    stuffed.extend_from_slice(b".\r\n");
    let idle = Duration::from_secs(limits().idle_timeout_secs);
    let mut conn = Conn::new(Box::new(Client { input: stuffed, pos: 0, pieces: WHOLE, reads: 0 }), idle);
    match conn.read_data(limit, MessageMemory::global()).await {
        Ok(Data::Message(again, _)) => {
            assert_eq!(again.into_vec(), body, "a message sent again dot-stuffed was read differently")
        }
        other => panic!("a message sent again dot-stuffed was not read back: {other:?}"),
    }
}

/// An address as MAIL and RCPT parse it. What parsing gives must parse again to
/// itself: the address travels on in that form (the retry key, the store, the
/// replication log, where it is parsed again).
fn parse_address(raw: &str) -> Option<EmailAddress> {
    let address = EmailAddress::parse(raw).ok()?;
    let again = EmailAddress::parse(address.as_str()).ok();
    assert_eq!(again.as_ref(), Some(&address), "a parsed address does not parse to itself (from {raw:?})");
    Some(address)
}

struct Transaction {
    sender: Option<EmailAddress>,
    recipients: Vec<EmailAddress>,
}

/// The session's state as far as it depends on what the client sent. The listener
/// allows everything: MAIL needs no login (as on the MX port) and AUTH reads its
/// continuation lines (as on submission over TLS).
#[derive(Default)]
struct Session {
    helo: bool,
    transaction: Option<Transaction>,
    errors: u32,
    events: Vec<Event>,
}

async fn session(mut conn: Conn) -> Vec<Event> {
    let mut s = Session::default();
    loop {
        match s.next(&mut conn).await {
            Ok(true) if s.errors <= limits().errors_max => {}
            Ok(_) => {
                s.events.push(Event::Ended("session"));
                return s.events;
            }
            Err(e) => {
                s.events.push(ended(&e));
                return s.events;
            }
        }
    }
}

impl Session {
    /// One command; `false` when the session closes.
    async fn next(&mut self, conn: &mut Conn) -> Result<bool, ConnError> {
        let line = match conn.read_line(line_limit()).await? {
            Line::Ok(line) => line,
            Line::TooLong => {
                self.error(Event::LineTooLong);
                return Ok(true);
            }
            Line::BareLineEnding => {
                self.error(Event::LineBareEnding);
                return Ok(true);
            }
        };
        self.events.push(Event::Line(line.clone()));
        self.command(conn, line).await
    }

    fn error(&mut self, event: Event) {
        self.errors += 1;
        self.events.push(event);
    }

    async fn command(&mut self, conn: &mut Conn, mut line: Vec<u8>) -> Result<bool, ConnError> {
        line.extend_from_slice(b"\r\n");
        let request = match Request::parse(&mut line.iter()) {
            Ok(request) => request.into_owned(),
            Err(smtp_proto::Error::UnsupportedParameter { param }) => {
                // The reply quotes at most 64 characters of it.
                let _ = param.chars().take(64).count();
                self.errors += 1;
                return Ok(true);
            }
            Err(_) => {
                self.errors += 1;
                return Ok(true);
            }
        };
        match request {
            Request::Ehlo { .. } | Request::Helo { .. } => {
                self.helo = true;
                self.transaction = None;
            }
            Request::Auth { mechanism, initial_response } => self.auth(conn, mechanism, initial_response).await?,
            Request::Mail { from } => self.mail(&from.address, from.size),
            Request::Rcpt { to } => self.rcpt(&to.address),
            Request::Data => return self.data(conn).await,
            Request::Rset => self.transaction = None,
            Request::Quit => return Ok(false),
            Request::Noop { .. } | Request::Vrfy { .. } | Request::Help { .. } => {}
            // STARTTLS is refused too: TLS is taken to be active already.
            Request::StartTls
            | Request::Lhlo { .. }
            | Request::Bdat { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => self.errors += 1,
        }
        Ok(true)
    }

    async fn auth(&mut self, conn: &mut Conn, mechanism: u64, initial: String) -> Result<(), ConnError> {
        if self.transaction.is_some() {
            self.errors += 1;
            return Ok(());
        }
        let credentials = match mechanism {
            AUTH_PLAIN => {
                let response = if initial.is_empty() {
                    match self.sasl_response(conn).await? {
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
                    match self.sasl_response(conn).await? {
                        Some(r) => auth::decode_b64_text(&r),
                        None => return Ok(()),
                    }
                } else {
                    auth::decode_b64_text(&initial)
                };
                let Some(user) = user else {
                    self.errors += 1;
                    return Ok(());
                };
                let Some(password) = self.sasl_response(conn).await? else {
                    return Ok(());
                };
                auth::decode_b64_text(&password).map(|p| (user, p))
            }
            _ => None,
        };
        if let Some((user, _password)) = credentials {
            // What `auth::verify_login` does before it needs the store.
            let _ = EmailAddress::parse(&user);
        }
        // Refused: there are no accounts here.
        self.errors += 1;
        Ok(())
    }

    /// One SASL continuation line; `None` when cancelled or unusable.
    async fn sasl_response(&mut self, conn: &mut Conn) -> Result<Option<String>, ConnError> {
        match conn.read_line(line_limit()).await? {
            Line::Ok(line) => {
                self.events.push(Event::Line(line.clone()));
                if line == b"*" {
                    self.errors += 1;
                    return Ok(None);
                }
                match String::from_utf8(line) {
                    Ok(s) => Ok(Some(s)),
                    Err(_) => {
                        self.errors += 1;
                        Ok(None)
                    }
                }
            }
            Line::TooLong => {
                self.error(Event::LineTooLong);
                Ok(None)
            }
            Line::BareLineEnding => {
                self.error(Event::LineBareEnding);
                Ok(None)
            }
        }
    }

    fn mail(&mut self, address: &str, size: usize) {
        if !self.helo || self.transaction.is_some() {
            self.errors += 1;
            return;
        }
        if u64::try_from(size).unwrap_or(u64::MAX) > limits().message_size_max_bytes {
            self.errors += 1;
            return;
        }
        let sender = if address.is_empty() {
            None
        } else {
            match parse_address(address) {
                Some(a) => Some(a),
                None => {
                    self.errors += 1;
                    return;
                }
            }
        };
        self.transaction = Some(Transaction { sender, recipients: Vec::new() });
    }

    fn rcpt(&mut self, address: &str) {
        let recipients_max = usize::try_from(limits().recipients_max).unwrap_or(usize::MAX);
        let Some(count) = self.transaction.as_ref().map(|t| t.recipients.len()) else {
            self.errors += 1;
            return;
        };
        if count >= recipients_max {
            self.errors += 1;
            return;
        }
        let Some(recipient) = parse_address(address) else {
            self.errors += 1;
            return;
        };
        if let Some(t) = self.transaction.as_mut() {
            if !t.recipients.contains(&recipient) {
                t.recipients.push(recipient);
            }
        }
    }

    async fn data(&mut self, conn: &mut Conn) -> Result<bool, ConnError> {
        let Some(transaction) = self.transaction.take() else {
            self.errors += 1;
            return Ok(true);
        };
        if transaction.recipients.is_empty() {
            self.transaction = Some(transaction);
            self.errors += 1;
            return Ok(true);
        }
        let limit = message_limit();
        match conn.read_data(limit, MessageMemory::global()).await? {
            Data::Message(body, _) => {
                let body = body.into_vec();
                check_message(&body, limit);
                let event = message_event(transaction.sender.as_ref(), body);
                if let Event::Message { header_fields, .. } = &event {
                    if *header_fields > usize::try_from(limits().header_fields_max).unwrap_or(usize::MAX) {
                        self.errors += 1;
                    }
                }
                self.events.push(event);
            }
            Data::TooLarge => self.error(Event::MessageTooLarge),
            Data::OverBudget(_) => self.error(Event::MessageOverBudget),
            Data::BareLineEnding => {
                self.events.push(Event::MessageBareEnding);
                return Ok(false);
            }
        }
        Ok(true)
    }
}
