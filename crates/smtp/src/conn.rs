//! Byte-level I/O of one SMTP connection: CRLF lines with a length limit, the DATA
//! stream with dot-unstuffing, and buffered replies flushed only when the client is
//! waiting for them (which is what makes PIPELINING work).
//!
//! Every line ending is checked here: a bare LF or a bare CR is reported to the
//! session, never silently normalised, because disagreeing with another MTA about
//! where a line (or the message) ends is how SMTP smuggling works.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream a session can run over: plain TCP or TLS, boxed so STARTTLS can
/// swap one for the other.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A command line without its line ending.
#[derive(Debug)]
pub enum Line {
    Ok(Vec<u8>),
    /// The line ended with a bare LF or held a bare CR.
    BareLineEnding,
    /// Longer than the limit; the rest of it was discarded.
    TooLong,
}

/// The body received after DATA.
#[derive(Debug)]
pub enum Data {
    /// Dot-unstuffed message with CRLF line endings.
    Message(Vec<u8>),
    /// Larger than the limit; it was read to its end and discarded.
    TooLarge,
    /// A bare LF or bare CR appeared; the connection must close.
    BareLineEnding,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("client closed the connection")]
    Closed,
    #[error("client idle for more than {0:?}")]
    Idle(Duration),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Conn {
    io: Box<dyn Io>,
    input: Vec<u8>,
    /// Bytes of `input` already consumed.
    pos: usize,
    output: Vec<u8>,
    idle: Duration,
}

impl Conn {
    pub fn new(io: Box<dyn Io>, idle: Duration) -> Self {
        Conn { io, input: Vec::with_capacity(READ_CHUNK_BYTES), pos: 0, output: Vec::with_capacity(1024), idle }
    }

    /// Take the stream out (for STARTTLS). Input already buffered is dropped: a
    /// client that pipelines commands after STARTTLS must not have them executed
    /// inside the TLS session (the STARTTLS command-injection class, CVE-2011-0411).
    pub fn into_io(self) -> (Box<dyn Io>, usize) {
        let dropped = self.input.len() - self.pos;
        (self.io, dropped)
    }

    /// Queue a reply; sent at the next flush.
    pub fn reply(&mut self, text: &str) {
        self.output.extend_from_slice(text.as_bytes());
        if !text.ends_with("\r\n") {
            self.output.extend_from_slice(b"\r\n");
        }
    }

    pub async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.output.is_empty() {
            tokio::time::timeout(self.idle, self.io.write_all(&self.output))
                .await
                .map_err(|_| ConnError::Idle(self.idle))??;
            self.output.clear();
            tokio::time::timeout(self.idle, self.io.flush()).await.map_err(|_| ConnError::Idle(self.idle))??;
        }
        Ok(())
    }

    /// Read more input, flushing pending replies first since the client may be
    /// waiting for them before it sends anything.
    async fn fill(&mut self) -> Result<(), ConnError> {
        self.flush().await?;
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        let start = self.input.len();
        self.input.resize(start + READ_CHUNK_BYTES, 0);
        let read = tokio::time::timeout(self.idle, self.io.read(&mut self.input[start..])).await;
        let n = match read {
            Err(_) => {
                self.input.truncate(start);
                return Err(ConnError::Idle(self.idle));
            }
            Ok(Err(e)) => {
                self.input.truncate(start);
                return Err(e.into());
            }
            Ok(Ok(n)) => n,
        };
        self.input.truncate(start + n);
        if n == 0 {
            return Err(ConnError::Closed);
        }
        Ok(())
    }

    /// Find the next LF in unread input, reading more as needed, without letting
    /// the unread part grow past `max` bytes. Returns the end index (exclusive,
    /// after LF) or `None` when `max` was exceeded (the caller discards).
    async fn next_lf(&mut self, max: usize) -> Result<Option<usize>, ConnError> {
        // Offset from `pos` already searched; `fill` may move `pos` to 0, so
        // absolute indices would go stale across reads.
        let mut searched = 0;
        loop {
            let from = self.pos + searched;
            if let Some(i) = self.input[from..].iter().position(|&b| b == b'\n') {
                let end = from + i + 1;
                if end - self.pos > max {
                    return Ok(None);
                }
                return Ok(Some(end));
            }
            searched = self.input.len() - self.pos;
            if searched > max {
                return Ok(None);
            }
            self.fill().await?;
        }
    }

    /// Skip input up to and including the next LF.
    async fn discard_line(&mut self) -> Result<(), ConnError> {
        loop {
            if let Some(i) = self.input[self.pos..].iter().position(|&b| b == b'\n') {
                self.pos += i + 1;
                return Ok(());
            }
            self.pos = self.input.len();
            self.fill().await?;
        }
    }

    /// Read one command line of at most `max` bytes including CRLF.
    pub async fn read_line(&mut self, max: usize) -> Result<Line, ConnError> {
        let Some(end) = self.next_lf(max).await? else {
            self.discard_line().await?;
            return Ok(Line::TooLong);
        };
        let raw = &self.input[self.pos..end];
        self.pos = end;
        let content = &raw[..raw.len() - 1];
        let Some(content) = content.strip_suffix(b"\r") else {
            return Ok(Line::BareLineEnding);
        };
        if content.contains(&b'\r') {
            return Ok(Line::BareLineEnding);
        }
        Ok(Line::Ok(content.to_vec()))
    }

    /// Read a DATA section up to the terminating `CRLF.CRLF`. Lines are
    /// dot-unstuffed; the result is capped at `max` bytes.
    pub async fn read_data(&mut self, max: usize) -> Result<Data, ConnError> {
        let mut message = Vec::with_capacity(8 * 1024);
        let mut too_large = false;
        // Bound the buffer for a single line too: a line longer than the message
        // limit makes the message too large anyway.
        let line_max = max.saturating_add(2);
        loop {
            let end = match self.next_lf(line_max).await? {
                Some(end) => end,
                None => {
                    too_large = true;
                    // Discard the rest of this enormous line, chunk by chunk.
                    self.discard_line().await?;
                    continue;
                }
            };
            let raw = &self.input[self.pos..end];
            self.pos = end;
            let content = &raw[..raw.len() - 1];
            let Some(content) = content.strip_suffix(b"\r") else {
                return Ok(Data::BareLineEnding);
            };
            if content.contains(&b'\r') {
                return Ok(Data::BareLineEnding);
            }
            if content == b"." {
                break;
            }
            let content = content.strip_prefix(b".").unwrap_or(content);
            if !too_large {
                if message.len() + content.len() + 2 > max {
                    too_large = true;
                    message = Vec::new();
                } else {
                    message.extend_from_slice(content);
                    message.extend_from_slice(b"\r\n");
                }
            }
        }
        Ok(if too_large { Data::TooLarge } else { Data::Message(message) })
    }

    /// Shut down the write side after flushing.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}
