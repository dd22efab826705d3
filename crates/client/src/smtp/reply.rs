//! SMTP replies as typed values: the code, the RFC 3463 enhanced status when the
//! server gives one, the text, and the EHLO capabilities read from a reply's lines.
//!
//! Never: read from the network beyond one reply of at most [`REPLY_LINES_MAX`]
//! lines of at most [`crate::LINE_BYTES_MAX`] bytes each.

use tokio::io::AsyncBufRead;

use crate::line::{read_line, LineError};

/// Most lines of one multi-line reply.
pub const REPLY_LINES_MAX: usize = 64;

/// An RFC 3463 enhanced status code, `class.subject.detail` (e.g. `4.3.0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    /// The status at the start of a reply text, if it has one.
    pub fn parse(text: &str) -> Option<EnhancedStatus> {
        let word = text.split(' ').next()?;
        let mut parts = word.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject = parts.next()?.parse().ok()?;
        let detail = parts.next()?.parse().ok()?;
        (parts.next().is_none() && matches!(class, 2 | 4 | 5)).then_some(EnhancedStatus { class, subject, detail })
    }
}

impl std::fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One (possibly multi-line) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// The enhanced status of the first line, when the server gives one.
    pub enhanced: Option<EnhancedStatus>,
    /// The text of every line after the code, joined by spaces (enhanced status included).
    pub text: String,
    /// The text of each line after the code.
    pub lines: Vec<String>,
}

impl Reply {
    /// 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }
    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.text)
    }
}

/// Why no reply could be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplyError {
    #[error(transparent)]
    Line(#[from] LineError),
    #[error("not an SMTP reply: {0:?}")]
    Malformed(String),
    #[error("a reply of more than {REPLY_LINES_MAX} lines")]
    TooManyLines,
}

/// Read one reply, line by line, up to [`REPLY_LINES_MAX`] lines.
pub(crate) async fn read_reply<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Reply, ReplyError> {
    let mut lines = Vec::new();
    let mut first_code = None;
    for _ in 0..REPLY_LINES_MAX {
        let (line, _) = read_line(r).await?;
        let code = line.get(..3).and_then(|c| c.parse::<u16>().ok()).filter(|c| (200..600).contains(c));
        let (Some(code), separator) = (code, line.as_bytes().get(3).copied()) else {
            return Err(ReplyError::Malformed(line));
        };
        if *first_code.get_or_insert(code) != code || !matches!(separator, None | Some(b' ' | b'-')) {
            return Err(ReplyError::Malformed(line));
        }
        lines.push(line.get(4..).unwrap_or("").to_string());
        if separator != Some(b'-') {
            let text = lines.join(" ");
            let enhanced = EnhancedStatus::parse(&text);
            return Ok(Reply { code, enhanced, text, lines });
        }
    }
    Err(ReplyError::TooManyLines)
}

/// What a server offers in its EHLO reply (RFC 5321 4.1.1.1): keywords with
/// their parameters, the first line (the server's name) left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Upper-cased keyword and its parameters, e.g. `("AUTH", ["PLAIN", "LOGIN"])`.
    pub keywords: Vec<(String, Vec<String>)>,
}

impl Capabilities {
    /// The capabilities of a successful EHLO reply.
    pub fn of_ehlo(reply: &Reply) -> Capabilities {
        let keywords = reply
            .lines
            .iter()
            .skip(1)
            .filter_map(|line| {
                let mut words = line.split_ascii_whitespace();
                let keyword = words.next()?.to_ascii_uppercase();
                Some((keyword, words.map(str::to_string).collect()))
            })
            .collect();
        Capabilities { keywords }
    }

    /// Whether the server offers `keyword` (any case).
    pub fn has(&self, keyword: &str) -> bool {
        self.keywords.iter().any(|(k, _)| k.eq_ignore_ascii_case(keyword))
    }

    /// The parameters of `keyword`, if offered.
    pub fn params(&self, keyword: &str) -> Option<&[String]> {
        self.keywords.iter().find(|(k, _)| k.eq_ignore_ascii_case(keyword)).map(|(_, p)| p.as_slice())
    }

    /// Whether AUTH offers `mechanism`.
    pub fn offers_auth(&self, mechanism: &str) -> bool {
        self.params("AUTH").is_some_and(|m| m.iter().any(|x| x.eq_ignore_ascii_case(mechanism)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &'static [u8]) -> Result<Reply, ReplyError> {
        read_reply(&mut tokio::io::BufReader::new(bytes)).await
    }

    #[tokio::test]
    async fn replies_carry_code_enhanced_status_and_text() {
        let r = parse(b"451 4.3.0 no quorum\r\n").await.unwrap();
        assert_eq!((r.code, r.text.as_str()), (451, "4.3.0 no quorum"));
        assert_eq!(r.enhanced.map(|e| e.to_string()), Some("4.3.0".into()));
        assert!(r.is_transient());
        let r = parse(b"220 mx ESMTP\r\n").await.unwrap();
        assert_eq!(r.enhanced, None);
    }

    #[tokio::test]
    async fn ehlo_lines_become_capabilities() {
        let r = parse(b"250-mx.example\r\n250-PIPELINING\r\n250-auth PLAIN LOGIN\r\n250 SIZE 1000\r\n").await.unwrap();
        let caps = Capabilities::of_ehlo(&r);
        assert!(caps.has("pipelining") && caps.offers_auth("login") && !caps.has("STARTTLS"));
        assert_eq!(caps.params("SIZE"), Some(&["1000".to_string()][..]));
        assert_eq!(r.text, "mx.example PIPELINING auth PLAIN LOGIN SIZE 1000");
    }

    #[tokio::test]
    async fn malformed_replies_and_mixed_codes_are_errors() {
        assert!(matches!(parse(b"hello\r\n").await, Err(ReplyError::Malformed(_))));
        assert!(matches!(parse(b"250-a\r\n251 b\r\n").await, Err(ReplyError::Malformed(_))));
        assert!(matches!(parse(b"250-a\r\n").await, Err(ReplyError::Line(LineError::Closed))));
    }
}
