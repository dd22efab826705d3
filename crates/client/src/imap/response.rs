//! Reading IMAP responses: one line, and the literals it announces (`{n}` at the end
//! of a line), each bounded, and every response of one command together bounded.
//!
//! Never: parse the response's meaning beyond finding its literals; the session
//! does that.

use tokio::io::{AsyncBufRead, AsyncReadExt};

use crate::line::{read_line, LineError};

/// Largest literal the client accepts from a server (above the server's 25 MiB
/// message limit, so any message can be fetched).
pub const LITERAL_BYTES_MAX: usize = 32 * 1024 * 1024;
/// Most bytes the responses to one command may take, literals included.
pub const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Most untagged responses to one command.
pub const RESPONSES_MAX: usize = 200_000;

/// One response line (continuation lines joined after each literal) with its literals.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Untagged {
    pub line: String,
    pub literals: Vec<Vec<u8>>,
}

/// Why a response could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error(transparent)]
    Line(#[from] LineError),
    #[error("read a literal: {0}")]
    Literal(std::io::Error),
    #[error("a literal of {0} bytes (at most {LITERAL_BYTES_MAX})")]
    LiteralTooLarge(usize),
    #[error("responses larger than {RESPONSE_BYTES_MAX} bytes")]
    TooLarge,
    #[error("more than {RESPONSES_MAX} responses")]
    TooMany,
}

/// Read one response with its literals; `budget` is what is left of
/// [`RESPONSE_BYTES_MAX`] for this command and is charged with what is read.
pub(crate) async fn read_response<R: AsyncBufRead + Unpin>(
    r: &mut R,
    budget: &mut usize,
) -> Result<Untagged, ResponseError> {
    let mut item = Untagged::default();
    loop {
        let (line, wire) = read_line(r).await?;
        charge(budget, wire)?;
        let literal = literal_len(&line);
        item.line.push_str(&line);
        let Some(n) = literal else { return Ok(item) };
        if n > LITERAL_BYTES_MAX {
            return Err(ResponseError::LiteralTooLarge(n));
        }
        charge(budget, n)?;
        let mut literal = Vec::new();
        let got = (&mut *r).take(n as u64).read_to_end(&mut literal).await.map_err(ResponseError::Literal)?;
        if got < n {
            return Err(ResponseError::Line(LineError::Closed));
        }
        item.literals.push(literal);
    }
}

fn charge(budget: &mut usize, bytes: usize) -> Result<(), ResponseError> {
    *budget = budget.checked_sub(bytes).ok_or(ResponseError::TooLarge)?;
    Ok(())
}

/// `{n}` (or `{n+}`) at the end of a line announces a literal of n bytes.
pub(crate) fn literal_len(line: &str) -> Option<usize> {
    let open = line.rfind('{')?;
    line.strip_suffix('}')?[open + 1..].trim_end_matches('+').parse().ok()
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

    #[tokio::test]
    async fn a_response_keeps_its_literals_and_joins_its_lines() {
        let mut r = tokio::io::BufReader::new(&b"* 1 FETCH (BODY[] {5}\r\nhello)\r\n* 2 EXISTS\r\n"[..]);
        let mut budget = RESPONSE_BYTES_MAX;
        let item = read_response(&mut r, &mut budget).await.unwrap();
        assert_eq!(item.line, "* 1 FETCH (BODY[] {5})");
        assert_eq!(item.literals, vec![b"hello".to_vec()]);
        assert_eq!(read_response(&mut r, &mut budget).await.unwrap().line, "* 2 EXISTS");
    }
}
