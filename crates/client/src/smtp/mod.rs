//! An SMTP client: a session that greets, EHLOs (reading the capabilities), upgrades
//! with STARTTLS or starts in implicit TLS, authenticates (PLAIN or LOGIN) and sends
//! messages — pipelined where the server offers PIPELINING — and [`send`], the whole
//! transaction a sending MTA (port 25, no AUTH) or a mail user agent (submission:
//! STARTTLS, then AUTH) makes for one message.
//!
//! Every exchange has the session's deadline; replies are read by [`reply`] with its
//! bounds. Never: retry, queue or interpret a refusal — the caller decides what a
//! reply means.

mod reply;

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncWriteExt, BufReader};

pub use reply::{Capabilities, EnhancedStatus, Reply, ReplyError, REPLY_LINES_MAX};

use crate::tls::{OpenError, TlsError};
use crate::{ms, Io, Tls};

/// How the client protects the session in [`send`].
#[derive(Clone, Debug)]
pub enum Security {
    Plain,
    /// STARTTLS after the first EHLO, verifying the certificate for `server_name`.
    StartTls {
        tls: Tls,
        server_name: String,
    },
    /// TLS from the first byte (submissions, port 465).
    ImplicitTls {
        tls: Tls,
        server_name: String,
    },
}

/// Credentials for AUTH.
#[derive(Clone, Debug)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// A SASL mechanism the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

/// One message to send.
pub struct Envelope<'a> {
    /// The name the client gives in EHLO (used by [`send`]).
    pub helo: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    /// The message with CRLF line ends, not yet dot-stuffed.
    pub data: &'a [u8],
}

/// The step of a session an error or a reply belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    /// The message content and its final reply.
    Message,
    Quit,
    /// A whole [`send`], when its overall deadline passed.
    Transaction,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::Greeting => "banner",
            Step::Ehlo => "EHLO",
            Step::StartTls => "STARTTLS",
            Step::Auth => "AUTH",
            Step::MailFrom => "MAIL FROM",
            Step::RcptTo => "RCPT TO",
            Step::Data => "DATA",
            Step::Message => "message data",
            Step::Quit => "QUIT",
            Step::Transaction => "the transaction",
        })
    }
}

/// The reply that decided a message's fate and the step that drew it: the final
/// reply after the data, or the first reply that was not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub step: Step,
    pub reply: Reply,
}

impl Outcome {
    /// The server took responsibility for the message.
    pub fn is_accepted(&self) -> bool {
        self.step == Step::Message && self.reply.is_success()
    }
}

/// An exchange got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum SmtpError {
    #[error("SMTP {server}: connect: {source}")]
    Connect { server: SocketAddr, source: std::io::Error },
    #[error("SMTP {server}: no answer within {ms} ms (at {step})")]
    Timeout { server: SocketAddr, step: Step, ms: u64 },
    #[error("SMTP {server}: {step}: write: {source}")]
    Write { server: SocketAddr, step: Step, source: std::io::Error },
    #[error("SMTP {server}: {step}: {source}")]
    Reply { server: SocketAddr, step: Step, source: ReplyError },
    #[error("SMTP {server}: {source}")]
    Tls { server: SocketAddr, source: TlsError },
    #[error("SMTP {server}: {step}: {detail}")]
    Protocol { server: SocketAddr, step: Step, detail: String },
}

impl SmtpError {
    /// The deadline passed before the server answered.
    pub fn is_timeout(&self) -> bool {
        matches!(self, SmtpError::Timeout { .. })
    }
}

/// One SMTP session with one server.
pub struct Session {
    conn: BufReader<Box<dyn Io>>,
    server: SocketAddr,
    timeout: Duration,
    banner: Reply,
    capabilities: Capabilities,
    /// A pipelined transaction left the server in DATA mode: the session is unusable.
    broken: bool,
}

impl Session {
    /// Connect and read the banner; with `tls`, implicit TLS verified for the server
    /// name. `timeout` bounds the connect and each later exchange.
    pub async fn connect(
        server: SocketAddr,
        tls: Option<(&Tls, &str)>,
        timeout: Duration,
    ) -> Result<Session, SmtpError> {
        let open = async {
            let io = crate::tls::open(server, tls).await.map_err(|e| match e {
                OpenError::Connect(source) => SmtpError::Connect { server, source },
                OpenError::Tls(source) => SmtpError::Tls { server, source },
            })?;
            let mut conn = BufReader::new(io);
            let banner = reply::read_reply(&mut conn).await.map_err(|source| SmtpError::Reply {
                server,
                step: Step::Greeting,
                source,
            })?;
            Ok((conn, banner))
        };
        let (conn, banner) = tokio::time::timeout(timeout, open).await.map_err(|_| SmtpError::Timeout {
            server,
            step: Step::Greeting,
            ms: ms(timeout),
        })??;
        Ok(Session { conn, server, timeout, banner, capabilities: Capabilities::default(), broken: false })
    }

    /// The server's greeting (220 when it will talk).
    pub fn banner(&self) -> &Reply {
        &self.banner
    }

    /// What the last successful EHLO offered (empty before EHLO and after STARTTLS).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// The server this session talks to.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// EHLO; on success the capabilities are read from the reply.
    pub async fn ehlo(&mut self, helo: &str) -> Result<Reply, SmtpError> {
        let reply = self.command(Step::Ehlo, &format!("EHLO {helo}\r\n")).await?;
        if reply.is_success() {
            self.capabilities = Capabilities::of_ehlo(&reply);
        }
        Ok(reply)
    }

    /// STARTTLS and, on 220, the handshake verified for `server_name`. The caller
    /// EHLOs again afterwards (RFC 3207: the capabilities are forgotten).
    pub async fn starttls(&mut self, tls: &Tls, server_name: &str) -> Result<Reply, SmtpError> {
        let go = self.command(Step::StartTls, "STARTTLS\r\n").await?;
        if go.code != 220 {
            return Ok(go);
        }
        let server = self.server;
        if !self.conn.buffer().is_empty() {
            let detail = "the server sent data after its 220 (STARTTLS injection)".to_string();
            return Err(SmtpError::Protocol { server, step: Step::StartTls, detail });
        }
        let placeholder: Box<dyn Io> = Box::new(tokio::io::duplex(1).0);
        let plain = std::mem::replace(&mut self.conn, BufReader::new(placeholder)).into_inner();
        let handshake = tls.connect(plain, server_name);
        let stream = tokio::time::timeout(self.timeout, handshake)
            .await
            .map_err(|_| SmtpError::Timeout { server, step: Step::StartTls, ms: ms(self.timeout) })?
            .map_err(|source| SmtpError::Tls { server, source })?;
        self.conn = BufReader::new(Box::new(stream));
        self.capabilities = Capabilities::default();
        Ok(go)
    }

    /// AUTH with `mechanism`; the final reply (235 when authenticated).
    pub async fn auth(&mut self, login: &Login, mechanism: Mechanism) -> Result<Reply, SmtpError> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        match mechanism {
            Mechanism::Plain => {
                let token = b64(&format!("\0{}\0{}", login.user, login.password));
                self.command(Step::Auth, &format!("AUTH PLAIN {token}\r\n")).await
            }
            Mechanism::Login => {
                let step = self.command(Step::Auth, "AUTH LOGIN\r\n").await?;
                if step.code != 334 {
                    return Ok(step);
                }
                let step = self.command(Step::Auth, &format!("{}\r\n", b64(&login.user))).await?;
                if step.code != 334 {
                    return Ok(step);
                }
                self.command(Step::Auth, &format!("{}\r\n", b64(&login.password))).await
            }
        }
    }

    /// The mechanism to use with this server: PLAIN unless it offers only LOGIN.
    pub fn preferred_mechanism(&self) -> Mechanism {
        let caps = &self.capabilities;
        if caps.offers_auth("LOGIN") && !caps.offers_auth("PLAIN") {
            Mechanism::Login
        } else {
            Mechanism::Plain
        }
    }

    /// MAIL, RCPT for each recipient, DATA and the dot-stuffed message — the
    /// envelope commands in one write when the server offers PIPELINING.
    pub async fn send_message(&mut self, envelope: &Envelope<'_>) -> Result<Outcome, SmtpError> {
        if self.broken {
            let detail = "an earlier pipelined transaction left the session in DATA".to_string();
            return Err(SmtpError::Protocol { server: self.server, step: Step::MailFrom, detail });
        }
        let refusal = if self.capabilities.has("PIPELINING") {
            self.envelope_pipelined(envelope).await?
        } else {
            self.envelope_in_turn(envelope).await?
        };
        if let Some(refusal) = refusal {
            return Ok(refusal);
        }
        let mut body = dot_stuff(envelope.data);
        body.extend_from_slice(b".\r\n");
        let reply = self.exchange(Step::Message, &body).await?;
        Ok(Outcome { step: Step::Message, reply })
    }

    /// Envelope commands one at a time; the first refusal, or `None` after a 354.
    async fn envelope_in_turn(&mut self, envelope: &Envelope<'_>) -> Result<Option<Outcome>, SmtpError> {
        let mut commands = vec![(Step::MailFrom, format!("MAIL FROM:<{}>\r\n", envelope.from))];
        commands.extend(envelope.to.iter().map(|to| (Step::RcptTo, format!("RCPT TO:<{to}>\r\n"))));
        commands.push((Step::Data, "DATA\r\n".to_string()));
        for (step, line) in commands {
            let reply = self.command(step, &line).await?;
            if !accepted(step, &reply) {
                return Ok(Some(Outcome { step, reply }));
            }
        }
        Ok(None)
    }

    /// RFC 2920: MAIL, every RCPT and DATA in one write, then their replies in order.
    async fn envelope_pipelined(&mut self, envelope: &Envelope<'_>) -> Result<Option<Outcome>, SmtpError> {
        let mut batch = format!("MAIL FROM:<{}>\r\n", envelope.from);
        let mut steps = vec![Step::MailFrom];
        for to in envelope.to {
            batch.push_str(&format!("RCPT TO:<{to}>\r\n"));
            steps.push(Step::RcptTo);
        }
        batch.push_str("DATA\r\n");
        steps.push(Step::Data);
        self.write(Step::MailFrom, batch.as_bytes()).await?;
        let mut refusal = None;
        for step in steps {
            let reply = self.read(step).await?;
            if step == Step::Data && reply.code == 354 && refusal.is_some() {
                // The server waits for data the client will not send: the only way
                // out of DATA without delivering is to drop the connection.
                self.broken = true;
            }
            if !accepted(step, &reply) && refusal.is_none() {
                refusal = Some(Outcome { step, reply });
            }
        }
        Ok(refusal)
    }

    /// After a 354: the message (dot-stuffed here) and its terminating dot; the
    /// final reply, awaited up to `final_reply_timeout` (RFC 5321 §4.5.3.2.6 asks
    /// for 10 minutes; the server may be committing the message durably).
    pub async fn send_content(&mut self, data: &[u8], final_reply_timeout: Duration) -> Result<Reply, SmtpError> {
        let mut body = dot_stuff(data);
        body.extend_from_slice(b".\r\n");
        let usual = std::mem::replace(&mut self.timeout, final_reply_timeout);
        let reply = self.exchange(Step::Message, &body).await;
        self.timeout = usual;
        reply
    }

    /// QUIT. The reply is not awaited: nothing depends on it.
    pub async fn quit(mut self) {
        if !self.broken {
            let _ = self.write(Step::Quit, b"QUIT\r\n").await;
        }
    }

    /// Send one command line and read its reply.
    pub async fn command(&mut self, step: Step, line: &str) -> Result<Reply, SmtpError> {
        self.exchange(step, line.as_bytes()).await
    }

    async fn exchange(&mut self, step: Step, bytes: &[u8]) -> Result<Reply, SmtpError> {
        self.write(step, bytes).await?;
        self.read(step).await
    }

    async fn write(&mut self, step: Step, bytes: &[u8]) -> Result<(), SmtpError> {
        let server = self.server;
        let w = self.conn.get_mut();
        let write = async {
            w.write_all(bytes).await?;
            w.flush().await
        };
        tokio::time::timeout(self.timeout, write)
            .await
            .map_err(|_| SmtpError::Timeout { server, step, ms: ms(self.timeout) })?
            .map_err(|source| SmtpError::Write { server, step, source })
    }

    async fn read(&mut self, step: Step) -> Result<Reply, SmtpError> {
        let server = self.server;
        tokio::time::timeout(self.timeout, reply::read_reply(&mut self.conn))
            .await
            .map_err(|_| SmtpError::Timeout { server, step, ms: ms(self.timeout) })?
            .map_err(|source| SmtpError::Reply { server, step, source })
    }
}

/// Whether `reply` lets the transaction go on past `step`.
fn accepted(step: Step, reply: &Reply) -> bool {
    match step {
        Step::Data => reply.code == 354,
        _ => reply.is_success(),
    }
}

/// One message the way a client sends it: connect, banner, EHLO, STARTTLS and EHLO
/// again if asked, AUTH when a login is given, the envelope and the data, QUIT.
/// `Ok` carries the reply that decided the message's fate; `timeout` bounds the
/// whole transaction as well as each exchange.
pub async fn send(
    server: SocketAddr,
    security: &Security,
    login: Option<&Login>,
    envelope: &Envelope<'_>,
    timeout: Duration,
) -> Result<Reply, SmtpError> {
    let step = Step::Transaction;
    let whole = async {
        let implicit = match security {
            Security::ImplicitTls { tls, server_name } => Some((tls, server_name.as_str())),
            _ => None,
        };
        let mut session = Session::connect(server, implicit, timeout).await?;
        if session.banner().code != 220 {
            return Ok(session.banner().clone());
        }
        let ehlo = session.ehlo(envelope.helo).await?;
        if !ehlo.is_success() {
            return Ok(ehlo);
        }
        if let Security::StartTls { tls, server_name } = security {
            let go = session.starttls(tls, server_name).await?;
            if go.code != 220 {
                return Ok(go);
            }
            let ehlo = session.ehlo(envelope.helo).await?;
            if !ehlo.is_success() {
                return Ok(ehlo);
            }
        }
        if let Some(login) = login {
            let auth = session.auth(login, session.preferred_mechanism()).await?;
            if auth.code != 235 {
                return Ok(auth);
            }
        }
        let outcome = session.send_message(envelope).await?;
        session.quit().await;
        Ok::<Reply, SmtpError>(outcome.reply)
    };
    tokio::time::timeout(timeout, whole).await.map_err(|_| SmtpError::Timeout { server, step, ms: ms(timeout) })?
}

/// RFC 5321 4.5.2: a line starting with "." gets another "."; the message ends
/// with CRLF.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_starting_with_a_dot_are_stuffed_and_the_data_ends_with_crlf() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n.\r\nc"), b"..a\r\nb\r\n..\r\nc\r\n");
        assert_eq!(dot_stuff(b"x\r\n"), b"x\r\n");
    }
}
