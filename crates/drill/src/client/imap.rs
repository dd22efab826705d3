//! An IMAP client for what a mail user agent does in a drill: log in, open a
//! mailbox, fetch. Every command is bounded by the session's deadline per command.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{read_line, Io, Tls};

/// Largest literal the client accepts from a server.
const LITERAL_BYTES_MAX: usize = 1024 * 1024;
/// Most untagged responses to one command.
const RESPONSES_MAX: usize = 200_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImapError {
    #[error("connect {addr}: {detail}")]
    Connect { addr: SocketAddr, detail: String },
    #[error("no answer within {0} ms")]
    Timeout(u64),
    /// The server answered NO or BAD (or greeted with BYE).
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Protocol(String),
}

/// One untagged response with its literals.
#[derive(Debug, Default)]
pub struct Untagged {
    pub line: String,
    pub literals: Vec<Vec<u8>>,
}

pub struct Session {
    conn: BufReader<Box<dyn Io>>,
    next_tag: u32,
    timeout: Duration,
}

impl Session {
    /// Connect and read the greeting; with `tls`, implicit TLS verified for `server_name`.
    pub async fn connect(addr: SocketAddr, tls: Option<(&Tls, &str)>, timeout: Duration) -> Result<Session, ImapError> {
        let ms = timeout.as_millis() as u64;
        let open = async {
            let tcp = TcpStream::connect(addr).await.map_err(|e| ImapError::Connect { addr, detail: e.to_string() })?;
            let io: Box<dyn Io> = match tls {
                None => Box::new(tcp),
                Some((tls, name)) => {
                    let name = rustls_pki_types::ServerName::try_from(name.to_string())
                        .map_err(|e| ImapError::Protocol(format!("server name {name:?}: {e}")))?;
                    let s = tokio_rustls::TlsConnector::from(tls.config.clone())
                        .connect(name, tcp)
                        .await
                        .map_err(|e| ImapError::Protocol(format!("TLS handshake: {e}")))?;
                    Box::new(s)
                }
            };
            let mut conn = BufReader::new(io);
            let greeting = read_line(&mut conn).await.map_err(ImapError::Protocol)?;
            if !greeting.starts_with("* OK") {
                return Err(ImapError::Refused(format!("greeting {greeting:?}")));
            }
            Ok(conn)
        };
        let conn = tokio::time::timeout(timeout, open).await.map_err(|_| ImapError::Timeout(ms))??;
        Ok(Session { conn, next_tag: 1, timeout })
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), ImapError> {
        self.run(&format!("LOGIN {} {}", quoted(user), quoted(password))).await.map(drop)
    }

    /// SELECT a mailbox; returns its message count (EXISTS).
    pub async fn select(&mut self, mailbox: &str) -> Result<u32, ImapError> {
        let responses = self.run(&format!("SELECT {}", quoted(mailbox))).await?;
        Ok(responses
            .iter()
            .rev()
            .find_map(|r| r.line.strip_prefix("* ")?.strip_suffix(" EXISTS")?.parse().ok())
            .unwrap_or(0))
    }

    /// The value of one header field of every message, by UID (messages without
    /// the field are left out).
    pub async fn header_field_by_uid(&mut self, field: &str) -> Result<Vec<(u32, String)>, ImapError> {
        let responses = self.run(&format!("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS ({field})])")).await?;
        let mut out = Vec::new();
        for r in responses.iter().filter(|r| r.line.contains(" FETCH ")) {
            let uid = r
                .line
                .split_once("UID ")
                .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|d| d.parse::<u32>().ok());
            let Some(uid) = uid else { continue };
            let header = r.literals.first().map(|l| String::from_utf8_lossy(l).into_owned()).unwrap_or_default();
            let prefix = format!("{}:", field.to_ascii_lowercase());
            for line in header.lines() {
                if line.to_ascii_lowercase().starts_with(&prefix) {
                    out.push((uid, line[prefix.len()..].trim().to_string()));
                }
            }
        }
        Ok(out)
    }

    /// Fetch the header of the newest message (proves the mailbox is readable);
    /// returns its size in bytes, or 0 for an empty mailbox.
    pub async fn fetch_newest_header(&mut self, exists: u32) -> Result<usize, ImapError> {
        if exists == 0 {
            return Ok(0);
        }
        let responses = self.run(&format!("FETCH {exists} (UID BODY.PEEK[HEADER])")).await?;
        Ok(responses.iter().flat_map(|r| r.literals.iter()).map(Vec::len).sum())
    }

    pub async fn logout(mut self) {
        let _ = self.run("LOGOUT").await;
    }

    /// Send one command; the untagged responses when it ends OK.
    pub async fn run(&mut self, command: &str) -> Result<Vec<Untagged>, ImapError> {
        let ms = self.timeout.as_millis() as u64;
        tokio::time::timeout(self.timeout, self.exchange(command)).await.map_err(|_| ImapError::Timeout(ms))?
    }

    async fn exchange(&mut self, command: &str) -> Result<Vec<Untagged>, ImapError> {
        let tag = format!("d{}", self.next_tag);
        self.next_tag += 1;
        let w = self.conn.get_mut();
        w.write_all(format!("{tag} {command}\r\n").as_bytes()).await.map_err(|e| ImapError::Protocol(e.to_string()))?;
        w.flush().await.map_err(|e| ImapError::Protocol(e.to_string()))?;
        let mut out = Vec::new();
        loop {
            let mut item = Untagged::default();
            let mut line = read_line(&mut self.conn).await.map_err(ImapError::Protocol)?;
            while let Some(n) = literal_len(&line) {
                if n > LITERAL_BYTES_MAX {
                    return Err(ImapError::Protocol(format!("a literal of {n} bytes")));
                }
                let mut literal = vec![0; n];
                self.conn.read_exact(&mut literal).await.map_err(|e| ImapError::Protocol(e.to_string()))?;
                item.line.push_str(&line);
                item.literals.push(literal);
                line = read_line(&mut self.conn).await.map_err(ImapError::Protocol)?;
            }
            item.line.push_str(&line);
            if let Some(status) = item.line.strip_prefix(&format!("{tag} ")) {
                return if status.starts_with("OK") { Ok(out) } else { Err(ImapError::Refused(status.to_string())) };
            }
            if item.line.starts_with("* BYE") && !command.starts_with("LOGOUT") {
                return Err(ImapError::Refused(item.line));
            }
            if out.len() == RESPONSES_MAX {
                return Err(ImapError::Protocol(format!("more than {RESPONSES_MAX} responses")));
            }
            out.push(item);
        }
    }
}

/// `{n}` at the end of a line announces a literal of n bytes.
fn literal_len(line: &str) -> Option<usize> {
    let open = line.rfind('{')?;
    line.strip_suffix('}')?[open + 1..].trim_end_matches('+').parse().ok()
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements_are_recognised() {
        assert_eq!(literal_len("* 1 FETCH (UID 4 BODY[HEADER] {42}"), Some(42));
        assert_eq!(literal_len("* OK done"), None);
        assert_eq!(literal_len("* 1 FETCH (X {x}"), None);
    }
}
