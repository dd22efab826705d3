//! Byte-level I/O of one SMTP connection: CRLF lines with a length limit, the DATA
//! stream with dot-unstuffing, and buffered replies flushed only when the client is
//! waiting for them (which is what makes PIPELINING work).
//!
//! Every line ending is checked here: a bare LF or a bare CR is reported to the
//! session, never silently normalised, because disagreeing with another MTA about
//! where a line (or the message) ends is how SMTP smuggling works.

use std::time::Duration;

use maildr_frontend::memory::{BudgetSpent, MemoryCharge, MessageMemory};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream a session can run over: plain TCP or TLS, boxed so STARTTLS can
/// swap one for the other.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Most input of a DATA line held before its line ending arrives; beyond it the
/// line is moved on a chunk at a time.
pub const DATA_PENDING_MAX_BYTES: usize = 64 * 1024;

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
    /// Dot-unstuffed message with CRLF line endings, and what it holds of the
    /// site's memory budget (returned when dropped).
    Message(MessageChunks, MemoryCharge),
    /// Larger than the limit; it was read to its end and discarded.
    TooLarge,
    /// The site's memory budget could not cover it; it was read to its end and
    /// discarded (try again later).
    OverBudget(BudgetSpent),
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
    /// dot-unstuffed; the result is capped at `max` bytes and charged to the site's
    /// memory budget as it grows (`memory`). A line is never buffered whole: input
    /// without a line ending is moved into the message (or discarded) a chunk at a
    /// time, so the input buffer stays within [`DATA_PENDING_MAX_BYTES`] whatever
    /// the client sends.
    pub async fn read_data(&mut self, max: usize, memory: &'static MessageMemory) -> Result<Data, ConnError> {
        let mut message = MessageChunks::default();
        let mut charge = memory.charge();
        let mut refused: Option<Data> = None;
        // Within a line whose start was already taken (no dot-unstuffing, and it
        // cannot be the terminator).
        let mut mid_line = false;
        // Bytes after `pos` already known to hold no LF: each byte is searched once,
        // however small the reads (`fill` may move `pos`, never what follows it).
        let mut searched = 0;
        loop {
            let unread = &self.input[self.pos..];
            let (piece, line_ends) = match unread[searched..].iter().position(|&b| b == b'\n') {
                Some(i) => (searched + i + 1, true),
                // Wait for more unless enough is pending to move a chunk on. The last
                // byte stays: it may be the CR of a CRLF.
                None if unread.len() < DATA_PENDING_MAX_BYTES => {
                    searched = unread.len();
                    self.fill().await?;
                    continue;
                }
                None => (unread.len() - 1, false),
            };
            searched = 0;
            let raw = &self.input[self.pos..self.pos + piece];
            self.pos += piece;
            let content = if line_ends {
                let Some(content) = raw[..raw.len() - 1].strip_suffix(b"\r") else {
                    return Ok(Data::BareLineEnding);
                };
                content
            } else {
                raw
            };
            if content.contains(&b'\r') {
                return Ok(Data::BareLineEnding);
            }
            if !mid_line && line_ends && content == b"." {
                break;
            }
            let content = if mid_line { content } else { content.strip_prefix(b".").unwrap_or(content) };
            mid_line = !line_ends;
            if refused.is_some() {
                continue;
            }
            let ending: &[u8] = if line_ends { b"\r\n" } else { b"" };
            let grown = message.len + content.len() + ending.len();
            if grown > max {
                refused = Some(Data::TooLarge);
            } else if let Err(spent) = charge.cover(message.capacity_for(grown)) {
                refused = Some(Data::OverBudget(spent));
            } else {
                message.push(content);
                message.push(ending);
                continue;
            }
            message = MessageChunks::default();
            charge.release();
        }
        Ok(match refused {
            Some(refusal) => refusal,
            None => Data::Message(message, charge),
        })
    }

    /// Shut down the write side after flushing.
    pub async fn close(&mut self) {
        let _ = self.flush().await;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }
}

/// A message as DATA received it, in chunks of [`MESSAGE_CHUNK_BYTES`]: it grows
/// without ever copying what it holds, and its memory is exactly what the charge
/// covers (the chunks' capacity).
#[derive(Debug, Default)]
pub struct MessageChunks {
    chunks: Vec<Vec<u8>>,
    len: usize,
}

/// The size of the chunks a message is received in.
pub const MESSAGE_CHUNK_BYTES: usize = 64 * 1024;

impl MessageChunks {
    /// The capacity of the chunks that hold `len` bytes.
    fn capacity_for(&self, len: usize) -> usize {
        len.div_ceil(MESSAGE_CHUNK_BYTES) * MESSAGE_CHUNK_BYTES
    }

    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.chunks.last().is_none_or(|c| c.len() == MESSAGE_CHUNK_BYTES) {
                self.chunks.push(Vec::with_capacity(MESSAGE_CHUNK_BYTES));
            }
            let chunk = self.chunks.last_mut().expect("a chunk with room was just ensured");
            let n = bytes.len().min(MESSAGE_CHUNK_BYTES - chunk.len());
            chunk.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            self.len += n;
        }
    }

    /// The message after `prefix` in one allocation of exactly their size; each
    /// chunk is freed once copied, so this needs one chunk more than the message.
    pub fn into_vec_after(self, prefix: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(prefix.len() + self.len);
        out.extend_from_slice(prefix);
        for chunk in self.chunks {
            out.extend_from_slice(&chunk);
        }
        out
    }

    /// The message in one allocation.
    pub fn into_vec(self) -> Vec<u8> {
        self.into_vec_after(&[])
    }
}

#[cfg(test)]
mod tests {
    use maildr_frontend::memory::UNCHARGED_BYTES_PER_BUFFER;

    use super::*;

    /// Read one DATA section from `input` with a budget of `budget` bytes.
    fn read(input: Vec<u8>, max: usize, budget: &'static MessageMemory) -> Data {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut conn = Conn::new(Box::new(std::io::Cursor::new(input)), Duration::from_secs(5));
            conn.read_data(max, budget).await.unwrap()
        })
    }

    /// A DATA section whose message (after dot-unstuffing) is `size` bytes, in
    /// lines of `line` bytes, some dot-stuffed.
    fn section(size: usize, line: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut left = size;
        while left > 0 {
            let n = left.min(line);
            let body = n - 2;
            out.push(b'.');
            out.push(b'.');
            out.extend(std::iter::repeat_n(b'x', body.saturating_sub(1)));
            out.extend_from_slice(b"\r\n");
            left -= n;
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    #[test]
    fn a_message_at_the_budget_is_read_and_one_byte_more_is_refused_holding_nothing() {
        let budget = MessageMemory::separate(1024 * 1024);
        let at_limit = UNCHARGED_BYTES_PER_BUFFER + 1024 * 1024;
        match read(section(at_limit, 1000), usize::MAX, budget) {
            Data::Message(message, charge) => {
                let message = message.into_vec();
                assert_eq!(message.len(), at_limit);
                assert!(message.starts_with(b".x"), "dot-unstuffed once");
                assert_eq!(charge.held_bytes(), 1024 * 1024);
                assert_eq!(budget.available_bytes(), 0);
            }
            _ => panic!("a message exactly at the budget must be read"),
        }
        assert_eq!(budget.available_bytes(), 1024 * 1024, "returned when the message is dropped");
        assert!(matches!(read(section(at_limit + 1, 1000), usize::MAX, budget), Data::OverBudget(_)));
        assert_eq!(budget.available_bytes(), 1024 * 1024, "a refused message holds nothing");
    }

    #[test]
    fn an_unterminated_line_is_taken_a_chunk_at_a_time_and_stays_one_line() {
        let budget = MessageMemory::separate(64 * 1024 * 1024);
        let mut input = b"..start".to_vec();
        input.extend(std::iter::repeat_n(b'y', 5 * DATA_PENDING_MAX_BYTES));
        // A dot right after a chunk boundary is inside the line: kept.
        input.extend_from_slice(b".\r\n.\r\n");
        match read(input, usize::MAX, budget) {
            Data::Message(message, _) => {
                let message = message.into_vec();
                assert_eq!(message.len(), 6 + 5 * DATA_PENDING_MAX_BYTES + 3);
                assert!(message.starts_with(b".start"));
                assert!(message.ends_with(b"y.\r\n"));
            }
            _ => panic!("a long line must be read"),
        }
    }

    #[test]
    fn a_bare_cr_inside_a_long_line_is_found() {
        let budget = MessageMemory::separate(64 * 1024 * 1024);
        let mut input = vec![b'z'; 3 * DATA_PENDING_MAX_BYTES];
        input[DATA_PENDING_MAX_BYTES - 1] = b'\r';
        input.extend_from_slice(b"\r\n.\r\n");
        assert!(matches!(read(input, usize::MAX, budget), Data::BareLineEnding));
    }

    #[test]
    fn a_message_over_the_size_limit_is_refused_even_within_the_budget() {
        let budget = MessageMemory::separate(64 * 1024 * 1024);
        assert!(matches!(read(section(10_000, 100), 9_999, budget), Data::TooLarge));
        assert!(matches!(read(section(10_000, 100), 10_000, budget), Data::Message(..)));
        assert_eq!(budget.available_bytes(), 64 * 1024 * 1024);
    }
}
