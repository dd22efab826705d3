//! Reading one CRLF-terminated line from a server, bounded, so a peer that never
//! ends its line costs an error rather than memory. Shared by SMTP and IMAP.
//!
//! Never: interpret the line; that is the protocol module's job.

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// Longest line (reply or response line) a client reads before it gives up on the peer.
pub const LINE_BYTES_MAX: usize = 16 * 1024;

/// Why a line could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("read: {0}")]
    Io(#[from] std::io::Error),
    #[error("connection closed")]
    Closed,
    #[error("a line longer than {LINE_BYTES_MAX} bytes")]
    TooLong,
}

/// One line without its CRLF (or bare LF); invalid UTF-8 is replaced.
/// Returns the line and the bytes it took on the wire.
pub(crate) async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<(String, usize), LineError> {
    let mut buf = Vec::new();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Err(LineError::Closed);
        }
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(pos) => (pos + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > LINE_BYTES_MAX + 2 {
            return Err(LineError::TooLong);
        }
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            break;
        }
    }
    let wire = buf.len();
    while matches!(buf.last(), Some(b'\n' | b'\r')) {
        buf.pop();
    }
    Ok((String::from_utf8_lossy(&buf).into_owned(), wire))
}
