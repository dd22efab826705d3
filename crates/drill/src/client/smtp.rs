//! An SMTP client that sends one message the way a sending MTA (port 25 role, no
//! authentication) or a mail user agent (submission: STARTTLS, then AUTH PLAIN)
//! does, and reports the reply that decided the message's fate.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{read_line, Io, Tls};

/// Most lines of one multi-line reply.
const REPLY_LINES_MAX: usize = 64;

/// How the client protects the session.
#[derive(Clone)]
pub enum Security {
    Plain,
    /// STARTTLS after the first EHLO, verifying the certificate for `server_name`.
    StartTls {
        tls: Tls,
        server_name: String,
    },
}

/// Credentials for AUTH PLAIN.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

/// One message to send.
pub struct Envelope<'a> {
    pub helo: &'a str,
    pub from: &'a str,
    pub to: &'a [String],
    /// The message, with CRLF line ends; dot-stuffed here.
    pub data: &'a [u8],
}

/// The reply that ended the transaction: the final 250 after the data, or the
/// first reply that was not a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Reply {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
}

/// The transaction did not get an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpError {
    #[error("connect {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    Protocol(String),
}

/// Send one message; `Ok` carries whatever the server last said.
pub async fn send(
    addr: SocketAddr,
    security: &Security,
    login: Option<&Login>,
    envelope: &Envelope<'_>,
    timeout: Duration,
) -> Result<Reply, SmtpError> {
    let ms = timeout.as_millis() as u64;
    tokio::time::timeout(timeout, transaction(addr, security, login, envelope))
        .await
        .map_err(|_| SmtpError::Timeout(ms))?
}

async fn transaction(
    addr: SocketAddr,
    security: &Security,
    login: Option<&Login>,
    envelope: &Envelope<'_>,
) -> Result<Reply, SmtpError> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| SmtpError::Connect { addr, detail: e.to_string() })?;
    let _ = tcp.set_nodelay(true);
    let mut conn: BufReader<Box<dyn Io>> = BufReader::new(Box::new(tcp));
    let banner = reply(&mut conn).await?;
    if banner.code != 220 {
        return Ok(banner);
    }
    let ehlo = command(&mut conn, &format!("EHLO {}\r\n", envelope.helo)).await?;
    if !ehlo.is_success() {
        return Ok(ehlo);
    }
    if let Security::StartTls { tls, server_name } = security {
        let go = command(&mut conn, "STARTTLS\r\n").await?;
        if go.code != 220 {
            return Ok(go);
        }
        if !conn.buffer().is_empty() {
            return Err(SmtpError::Protocol("the server sent data after its STARTTLS reply".into()));
        }
        let name = rustls_pki_types::ServerName::try_from(server_name.clone())
            .map_err(|e| SmtpError::Protocol(format!("server name {server_name:?}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let stream = connector
            .connect(name, conn.into_inner())
            .await
            .map_err(|e| SmtpError::Protocol(format!("TLS handshake: {e}")))?;
        conn = BufReader::new(Box::new(stream));
        let ehlo = command(&mut conn, &format!("EHLO {}\r\n", envelope.helo)).await?;
        if !ehlo.is_success() {
            return Ok(ehlo);
        }
    }
    if let Some(login) = login {
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("\0{}\0{}", login.user, login.password).as_bytes());
        let auth = command(&mut conn, &format!("AUTH PLAIN {token}\r\n")).await?;
        if auth.code != 235 {
            return Ok(auth);
        }
    }
    let from = command(&mut conn, &format!("MAIL FROM:<{}>\r\n", envelope.from)).await?;
    if !from.is_success() {
        return Ok(from);
    }
    for to in envelope.to {
        let rcpt = command(&mut conn, &format!("RCPT TO:<{to}>\r\n")).await?;
        if !rcpt.is_success() {
            return Ok(rcpt);
        }
    }
    let data = command(&mut conn, "DATA\r\n").await?;
    if data.code != 354 {
        return Ok(data);
    }
    let mut body = dot_stuff(envelope.data);
    body.extend_from_slice(b".\r\n");
    write(&mut conn, &body).await?;
    let done = reply(&mut conn).await?;
    let _ = write(&mut conn, b"QUIT\r\n").await;
    Ok(done)
}

async fn command(conn: &mut BufReader<Box<dyn Io>>, line: &str) -> Result<Reply, SmtpError> {
    write(conn, line.as_bytes()).await?;
    reply(conn).await
}

async fn write(conn: &mut BufReader<Box<dyn Io>>, bytes: &[u8]) -> Result<(), SmtpError> {
    let w = conn.get_mut();
    w.write_all(bytes).await.map_err(|e| SmtpError::Protocol(format!("write: {e}")))?;
    w.flush().await.map_err(|e| SmtpError::Protocol(format!("write: {e}")))
}

/// One (possibly multi-line) reply.
async fn reply(conn: &mut BufReader<Box<dyn Io>>) -> Result<Reply, SmtpError> {
    let mut text = String::new();
    for _ in 0..REPLY_LINES_MAX {
        let line = read_line(conn).await.map_err(SmtpError::Protocol)?;
        let code = line.get(..3).and_then(|c| c.parse::<u16>().ok()).filter(|c| (200..600).contains(c));
        let Some(code) = code else {
            return Err(SmtpError::Protocol(format!("not an SMTP reply: {line:?}")));
        };
        if !text.is_empty() {
            text.push(' ');
        }
        text.push_str(line.get(4..).unwrap_or(""));
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(Reply { code, text });
        }
    }
    Err(SmtpError::Protocol(format!("a reply of more than {REPLY_LINES_MAX} lines")))
}

/// RFC 5321 4.5.2: a line starting with "." gets another "."; the message ends
/// with CRLF.
fn dot_stuff(data: &[u8]) -> Vec<u8> {
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
