//! An IMAP client for what a mail user agent does: greeting, LOGIN, SELECT or
//! EXAMINE, FETCH and UID FETCH, SEARCH, IDLE/DONE, LOGOUT — plain or implicit TLS.
//!
//! Every command runs under the session's deadline and every response is read by
//! [`response`] with its bounds. Never: offer typed mailbox writes (APPEND, STORE,
//! EXPUNGE) — the users here observe; a test that must write sends its command
//! through [`Session::run`].

mod response;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

pub use response::{ResponseError, Untagged, LITERAL_BYTES_MAX, RESPONSES_MAX, RESPONSE_BYTES_MAX};

use crate::tls::{OpenError, TlsError};
use crate::{ms, Io, Tls};

/// A command got no usable answer, or a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("IMAP {server}: connect: {source}")]
    Connect { server: SocketAddr, source: std::io::Error },
    #[error("IMAP {server}: {source}")]
    Tls { server: SocketAddr, source: TlsError },
    #[error("IMAP {server}: no answer to {command} within {ms} ms")]
    Timeout { server: SocketAddr, command: String, ms: u64 },
    #[error("IMAP {server}: greeting {line:?}")]
    Greeting { server: SocketAddr, line: String },
    /// The server answered NO or BAD.
    #[error("IMAP {server}: {command} answered {status}")]
    Refused { server: SocketAddr, command: String, status: String },
    /// The server said BYE in the middle of a command.
    #[error("IMAP {server}: {command}: {line}")]
    Bye { server: SocketAddr, command: String, line: String },
    #[error("IMAP {server}: {command}: write: {source}")]
    Write { server: SocketAddr, command: String, source: std::io::Error },
    #[error("IMAP {server}: {command}: {source}")]
    Read { server: SocketAddr, command: String, source: ResponseError },
    #[error("IMAP {server}: {command}: {detail}")]
    Protocol { server: SocketAddr, command: String, detail: String },
}

/// What SELECT or EXAMINE told about a mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mailbox {
    /// Messages in the mailbox (EXISTS).
    pub exists: u32,
    pub uid_validity: Option<u32>,
    pub uid_next: Option<u32>,
}

/// One IMAP session with one server.
pub struct Session {
    conn: BufReader<Box<dyn Io>>,
    server: SocketAddr,
    timeout: Duration,
    next_tag: u32,
    greeting: String,
    bytes_read: u64,
}

impl Session {
    /// Connect and read the greeting (`* OK` or `* PREAUTH`); with `tls`, implicit TLS
    /// verified for the server name. `timeout` bounds this and each later command.
    pub async fn connect(
        server: SocketAddr,
        tls: Option<(&Tls, &str)>,
        timeout: Duration,
    ) -> Result<Session, ImapError> {
        let open = async {
            let io = crate::tls::open(server, tls).await.map_err(|e| match e {
                OpenError::Connect(source) => ImapError::Connect { server, source },
                OpenError::Tls(source) => ImapError::Tls { server, source },
            })?;
            let mut conn = BufReader::new(io);
            let (greeting, wire) = crate::line::read_line(&mut conn).await.map_err(|e| ImapError::Read {
                server,
                command: "greeting".into(),
                source: e.into(),
            })?;
            if !(greeting.starts_with("* OK") || greeting.starts_with("* PREAUTH")) {
                return Err(ImapError::Greeting { server, line: greeting });
            }
            Ok((conn, greeting, wire as u64))
        };
        let command = "greeting".to_string();
        let (conn, greeting, bytes_read) = tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| ImapError::Timeout { server, command, ms: ms(timeout) })??;
        Ok(Session { conn, server, timeout, next_tag: 1, greeting, bytes_read })
    }

    /// The greeting line.
    pub fn greeting(&self) -> &str {
        &self.greeting
    }

    /// Bytes received from the server so far, greeting included.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Result<(), ImapError> {
        self.run(&format!("LOGIN {} {}", quoted(user), quoted(password))).await.map(drop)
    }

    /// SELECT a mailbox (read-write).
    pub async fn select(&mut self, mailbox: &str) -> Result<Mailbox, ImapError> {
        let responses = self.run(&format!("SELECT {}", quoted(mailbox))).await?;
        Ok(mailbox_of(&responses))
    }

    /// EXAMINE a mailbox (read-only: reading does not clear \Recent or set \Seen).
    pub async fn examine(&mut self, mailbox: &str) -> Result<Mailbox, ImapError> {
        let responses = self.run(&format!("EXAMINE {}", quoted(mailbox))).await?;
        Ok(mailbox_of(&responses))
    }

    /// FETCH `items` (e.g. `(UID FLAGS)`) of the messages `set` (e.g. `1:*`).
    pub async fn fetch(&mut self, set: &str, items: &str) -> Result<Vec<Untagged>, ImapError> {
        self.run(&format!("FETCH {set} {items}")).await
    }

    /// UID FETCH `items` of the messages whose UIDs are in `set`.
    pub async fn uid_fetch(&mut self, set: &str, items: &str) -> Result<Vec<Untagged>, ImapError> {
        self.run(&format!("UID FETCH {set} {items}")).await
    }

    /// SEARCH `criteria`; the matching sequence numbers.
    pub async fn search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        Ok(search_hits(&self.run(&format!("SEARCH {criteria}")).await?))
    }

    /// UID SEARCH `criteria`; the matching UIDs.
    pub async fn uid_search(&mut self, criteria: &str) -> Result<Vec<u32>, ImapError> {
        Ok(search_hits(&self.run(&format!("UID SEARCH {criteria}")).await?))
    }

    /// The value of one header field of every message whose UID is `from_uid` or
    /// above, by UID (messages without the field are left out). A reader that
    /// knows where the messages it looks for begin asks for no more: on a large
    /// mailbox the server reads one body per message it is asked for.
    pub async fn header_field_by_uid(&mut self, field: &str, from_uid: u32) -> Result<Vec<(u32, String)>, ImapError> {
        let from_uid = from_uid.max(1);
        let responses =
            self.uid_fetch(&format!("{from_uid}:*"), &format!("(UID BODY.PEEK[HEADER.FIELDS ({field})])")).await?;
        let prefix = format!("{}:", field.to_ascii_lowercase());
        let mut out = Vec::new();
        for r in responses.iter().filter(|r| r.line.contains(" FETCH ")) {
            // `n:*` names the highest UID even when it is below n (RFC 3501 §6.4.8).
            let Some(uid) = fetched_uid(&r.line).filter(|u| *u >= from_uid) else { continue };
            let header = r.literals.first().map(|l| String::from_utf8_lossy(l).into_owned()).unwrap_or_default();
            for line in header.lines() {
                if line.to_ascii_lowercase().starts_with(&prefix) {
                    out.push((uid, line[prefix.len()..].trim().to_string()));
                }
            }
        }
        Ok(out)
    }

    /// Fetch the header of the newest of `exists` messages (proves the mailbox is
    /// readable); its size in bytes, or 0 for an empty mailbox.
    pub async fn fetch_newest_header(&mut self, exists: u32) -> Result<usize, ImapError> {
        if exists == 0 {
            return Ok(0);
        }
        let responses = self.fetch(&exists.to_string(), "(UID BODY.PEEK[HEADER])").await?;
        Ok(responses.iter().flat_map(|r| r.literals.iter()).map(Vec::len).sum())
    }

    /// IDLE until the server reports something or `wait` passes, then DONE; the
    /// untagged responses that arrived (RFC 2177).
    pub async fn idle(&mut self, wait: Duration) -> Result<Vec<Untagged>, ImapError> {
        let tag = self.send("IDLE").await?;
        let mut budget = RESPONSE_BYTES_MAX;
        let mut out = Vec::new();
        loop {
            let item = self.response("IDLE", &mut budget).await?;
            if item.line.starts_with('+') {
                break;
            }
            self.check_untagged("IDLE", item, &mut out)?;
        }
        let until = Instant::now() + wait;
        while out.is_empty() && self.wait_for_data(until).await? {
            let item = self.response("IDLE", &mut budget).await?;
            self.check_untagged("IDLE", item, &mut out)?;
        }
        self.write("IDLE", b"DONE\r\n").await?;
        out.extend(self.finish(&tag, "IDLE", &mut budget).await?);
        Ok(out)
    }

    /// LOGOUT, awaiting the server's answer within the deadline; errors are moot.
    pub async fn logout(mut self) {
        let _ = self.run("LOGOUT").await;
    }

    /// Send LOGOUT and close without awaiting the answer, for a probe that has
    /// seen what it came for and must not spend its deadline on the goodbye.
    pub async fn leave(mut self) {
        let _ = self.send("LOGOUT").await;
    }

    /// Send one command; the untagged responses when it ends OK.
    pub async fn run(&mut self, command: &str) -> Result<Vec<Untagged>, ImapError> {
        let name = command_name(command);
        let tag = self.send(command).await?;
        let mut budget = RESPONSE_BYTES_MAX;
        self.finish(&tag, &name, &mut budget).await
    }

    /// Write `tag command`; the tag.
    async fn send(&mut self, command: &str) -> Result<String, ImapError> {
        let tag = format!("c{}", self.next_tag);
        self.next_tag += 1;
        self.write(&command_name(command), format!("{tag} {command}\r\n").as_bytes()).await?;
        Ok(tag)
    }

    /// Read responses until the tagged one; the untagged ones when it is OK.
    async fn finish(&mut self, tag: &str, name: &str, budget: &mut usize) -> Result<Vec<Untagged>, ImapError> {
        let mut out = Vec::new();
        loop {
            let item = self.response(name, budget).await?;
            if let Some(status) = item.line.strip_prefix(tag).and_then(|s| s.strip_prefix(' ')) {
                if status.starts_with("OK") {
                    return Ok(out);
                }
                let (server, command, status) = (self.server, name.to_string(), status.to_string());
                return Err(ImapError::Refused { server, command, status });
            }
            self.check_untagged(name, item, &mut out)?;
        }
    }

    /// Keep an untagged response, unless it is a BYE outside LOGOUT or one too many.
    fn check_untagged(&self, name: &str, item: Untagged, out: &mut Vec<Untagged>) -> Result<(), ImapError> {
        let (server, command) = (self.server, name.to_string());
        if item.line.starts_with("* BYE") && name != "LOGOUT" {
            return Err(ImapError::Bye { server, command, line: item.line });
        }
        if out.len() == RESPONSES_MAX {
            return Err(ImapError::Read { server, command, source: ResponseError::TooMany });
        }
        out.push(item);
        Ok(())
    }

    /// One response under the session's deadline.
    async fn response(&mut self, name: &str, budget: &mut usize) -> Result<Untagged, ImapError> {
        let (server, command) = (self.server, name.to_string());
        let before = *budget;
        let item = tokio::time::timeout(self.timeout, response::read_response(&mut self.conn, budget))
            .await
            .map_err(|_| ImapError::Timeout { server, command: command.clone(), ms: ms(self.timeout) })?
            .map_err(|source| ImapError::Read { server, command, source })?;
        self.bytes_read += (before - *budget) as u64;
        Ok(item)
    }

    /// Wait until the server sends something (true) or `until` passes (false).
    /// Only waits for bytes, so no response is cut in half.
    async fn wait_for_data(&mut self, until: Instant) -> Result<bool, ImapError> {
        let server = self.server;
        let source = match tokio::time::timeout_at(until.into(), self.conn.fill_buf()).await {
            Err(_) => return Ok(false),
            Ok(Ok(bytes)) if !bytes.is_empty() => return Ok(true),
            Ok(Ok(_)) => crate::line::LineError::Closed,
            Ok(Err(e)) => e.into(),
        };
        Err(ImapError::Read { server, command: "IDLE".into(), source: source.into() })
    }

    async fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), ImapError> {
        let (server, timeout) = (self.server, self.timeout);
        let w = self.conn.get_mut();
        let write = async {
            w.write_all(bytes).await?;
            w.flush().await
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| ImapError::Timeout { server, command: name.to_string(), ms: ms(timeout) })?
            .map_err(|source| ImapError::Write { server, command: name.to_string(), source })
    }
}

/// The command's name for messages: `UID FETCH`, `LOGIN` — never its arguments
/// (a LOGIN's would be the password).
fn command_name(command: &str) -> String {
    let mut words = command.split(' ');
    let first = words.next().unwrap_or("").to_ascii_uppercase();
    match (first.as_str(), words.next()) {
        ("UID", Some(second)) => format!("UID {}", second.to_ascii_uppercase()),
        _ => first,
    }
}

fn mailbox_of(responses: &[Untagged]) -> Mailbox {
    let mut mailbox = Mailbox::default();
    for r in responses {
        if let Some(n) = r.line.strip_prefix("* ").and_then(|l| l.strip_suffix(" EXISTS")) {
            mailbox.exists = n.parse().unwrap_or(mailbox.exists);
        }
        mailbox.uid_validity = code_value(&r.line, "UIDVALIDITY").or(mailbox.uid_validity);
        mailbox.uid_next = code_value(&r.line, "UIDNEXT").or(mailbox.uid_next);
    }
    mailbox
}

/// The number in a response code `[NAME n]`.
fn code_value(line: &str, name: &str) -> Option<u32> {
    let rest = line.split_once(&format!("[{name} "))?.1;
    rest.split(']').next()?.trim().parse().ok()
}

fn search_hits(responses: &[Untagged]) -> Vec<u32> {
    responses
        .iter()
        .filter_map(|r| r.line.strip_prefix("* SEARCH"))
        .flat_map(|rest| rest.split_ascii_whitespace().filter_map(|n| n.parse().ok()))
        .collect()
}

fn fetched_uid(line: &str) -> Option<u32> {
    let rest = line.split_once("UID ")?.1;
    rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

/// An IMAP quoted string.
pub fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_named_without_their_arguments() {
        assert_eq!(command_name("LOGIN \"a\" \"secret\""), "LOGIN");
        assert_eq!(command_name("uid fetch 1:* (UID)"), "UID FETCH");
    }

    #[test]
    fn select_answers_and_search_hits_are_read() {
        let lines = ["* 3 EXISTS", "* OK [UIDVALIDITY 77] ok", "* OK [UIDNEXT 9] next", "* SEARCH 2 5"];
        let responses: Vec<Untagged> =
            lines.iter().map(|l| Untagged { line: l.to_string(), literals: vec![] }).collect();
        assert_eq!(mailbox_of(&responses), Mailbox { exists: 3, uid_validity: Some(77), uid_next: Some(9) });
        assert_eq!(search_hits(&responses), vec![2, 5]);
    }
}
