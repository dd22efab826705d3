//! What FETCH shows of a message: ENVELOPE, BODYSTRUCTURE and body sections,
//! computed from the stored bytes.
//!
//! Parsing never fails a FETCH: mail-parser tolerates malformed MIME, and
//! whatever it cannot make sense of is shown as a single text/plain part, the way
//! the message was received.

use std::borrow::Cow;
use std::num::NonZeroU32;

use imap_codec::imap_types::body::{
    BasicFields, Body, BodyStructure, Disposition, MultiPartExtensionData, SinglePartExtensionData, SpecificFields,
};
use imap_codec::imap_types::core::{IString, Literal, NString, Vec1};
use imap_codec::imap_types::envelope::{Address, Envelope};
use mail_parser::{Addr, HeaderValue, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// Deepest MIME nesting shown; deeper parts are shown as opaque bodies.
pub const MIME_DEPTH_MAX: usize = 32;

pub fn parse(raw: &[u8]) -> Option<Message<'_>> {
    MessageParser::default().parse(raw)
}

pub fn nstring(value: Option<&str>) -> NString<'static> {
    match value {
        None => NString(None),
        Some(v) => NString(Some(istring(v.as_bytes()))),
    }
}

pub fn istring(bytes: &[u8]) -> IString<'static> {
    match IString::try_from(bytes.to_vec()) {
        Ok(s) => s,
        // NUL cannot travel in an IMAP4rev1 literal: show it as 0x80, as Dovecot
        // does (BINARY[] gives the exact bytes).
        Err(_) => {
            let cleaned: Vec<u8> = bytes.iter().map(|&b| if b == 0 { 0x80 } else { b }).collect();
            Literal::try_from(cleaned)
                .map(IString::Literal)
                .unwrap_or_else(|_| IString::try_from("").expect("empty quoted string is valid"))
        }
    }
}

pub fn nstring_bytes(bytes: &[u8]) -> NString<'static> {
    NString(Some(istring(bytes)))
}

/// One address as ENVELOPE shows it. Mailbox and host are never NIL for an
/// address: a NIL host marks a group (RFC 3501 §7.4.2), so a part the header
/// lacks (`To: localpart`) is shown as an empty string.
fn address(addr: &Addr<'_>) -> Address<'static> {
    let (mailbox, host) = match addr.address.as_deref() {
        Some(a) => a.rsplit_once('@').unwrap_or((a, "")),
        None => ("", ""),
    };
    Address {
        name: nstring(addr.name.as_deref()),
        adl: NString(None),
        mailbox: nstring(Some(mailbox)),
        host: nstring(Some(host)),
    }
}

/// The start of a group in ENVELOPE: NIL host, the group's name as mailbox.
fn group_start(name: &str) -> Address<'static> {
    Address { name: NString(None), adl: NString(None), mailbox: nstring(Some(name)), host: NString(None) }
}

/// The end of a group in ENVELOPE: every field NIL.
fn group_end() -> Address<'static> {
    Address { name: NString(None), adl: NString(None), mailbox: NString(None), host: NString(None) }
}

/// An address header as ENVELOPE shows it: each RFC 5322 group as a start
/// marker, its members and an end marker (RFC 3501 §7.4.2), so
/// `undisclosed-recipients:;` is a start and an end with nothing between.
fn addresses(value: &HeaderValue<'_>) -> Vec<Address<'static>> {
    match value {
        HeaderValue::Address(mail_parser::Address::List(list)) => list.iter().map(address).collect(),
        HeaderValue::Address(mail_parser::Address::Group(groups)) => {
            let mut out = Vec::new();
            for group in groups {
                // mail-parser keeps the addresses outside any group as a nameless one.
                match group.name.as_deref() {
                    Some(name) => {
                        out.push(group_start(name));
                        out.extend(group.addresses.iter().map(address));
                        out.push(group_end());
                    }
                    None => out.extend(group.addresses.iter().map(address)),
                }
            }
            out
        }
        _ => Vec::new(),
    }
}

fn raw_header<'a>(part: &'a MessagePart<'_>, raw: &'a [u8], name: &str) -> Option<String> {
    part.headers.iter().find(|h| h.name.as_str().eq_ignore_ascii_case(name)).map(|h| {
        let bytes = &raw[h.offset_start as usize..h.offset_end as usize];
        String::from_utf8_lossy(bytes).trim().to_string()
    })
}

/// The ENVELOPE of a (possibly nested) message.
pub fn envelope(message: &Message<'_>) -> Envelope<'static> {
    let root = &message.parts[0];
    let raw = message.raw_message.as_ref();
    let header = |name: &str| raw_header(root, raw, name);
    let addr = |name: &str| -> Vec<Address<'static>> {
        root.headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))
            .map(|h| addresses(&h.value))
            .unwrap_or_default()
    };
    let from = addr("From");
    let sender = {
        let s = addr("Sender");
        if s.is_empty() {
            from.clone()
        } else {
            s
        }
    };
    let reply_to = {
        let r = addr("Reply-To");
        if r.is_empty() {
            from.clone()
        } else {
            r
        }
    };
    Envelope {
        date: nstring(header("Date").as_deref()),
        subject: nstring(message.subject()),
        from,
        sender,
        reply_to,
        to: addr("To"),
        cc: addr("Cc"),
        bcc: addr("Bcc"),
        in_reply_to: nstring(header("In-Reply-To").as_deref()),
        message_id: nstring(header("Message-ID").as_deref()),
    }
}

fn upper(s: &str) -> IString<'static> {
    istring(s.to_ascii_uppercase().as_bytes())
}

fn count_lines(bytes: &[u8]) -> u32 {
    u32::try_from(bytes.iter().filter(|&&b| b == b'\n').count()).unwrap_or(u32::MAX)
}

/// BODYSTRUCTURE (or BODY when `extended` is false) of a message.
pub fn body_structure(message: &Message<'_>, extended: bool) -> BodyStructure<'static> {
    part_structure(message, 0, extended, 0)
}

fn part_structure(message: &Message<'_>, index: usize, extended: bool, depth: usize) -> BodyStructure<'static> {
    let raw = message.raw_message.as_ref();
    let part = &message.parts[index];
    let content_type = part.content_type();
    let (mut ctype, mut csub) = match content_type {
        Some(ct) => (ct.ctype().to_string(), ct.subtype().unwrap_or("").to_string()),
        None => ("text".to_string(), "plain".to_string()),
    };
    let params: Vec<(IString<'static>, IString<'static>)> = content_type
        .and_then(|ct| ct.attributes())
        .map(|attrs| attrs.iter().map(|a| (upper(&a.name), istring(a.value.as_bytes()))).collect())
        .unwrap_or_default();
    if let PartType::Multipart(children) = &part.body {
        if !children.is_empty() && depth < MIME_DEPTH_MAX {
            let bodies: Vec<BodyStructure<'static>> =
                children.iter().map(|c| part_structure(message, *c as usize, extended, depth + 1)).collect();
            return BodyStructure::Multi {
                bodies: Vec1::try_from(bodies).expect("non-empty"),
                subtype: upper(if csub.is_empty() { "mixed" } else { &csub }),
                extension_data: extended
                    .then(|| MultiPartExtensionData { parameter_list: params, tail: disposition(part) }),
            };
        }
        // An empty or too deep multipart is shown as an opaque part.
        ctype = "application".into();
        csub = "octet-stream".into();
    }
    let start = (part.offset_body as usize).min(raw.len());
    let end = (part.offset_end as usize).clamp(start, raw.len());
    let body_bytes = &raw[start..end];
    let encoding = raw_header(part, raw, "Content-Transfer-Encoding").unwrap_or_else(|| "7BIT".into());
    let basic = BasicFields {
        parameter_list: if params.is_empty() && ctype.eq_ignore_ascii_case("text") {
            vec![(upper("charset"), upper("us-ascii"))]
        } else {
            params
        },
        id: nstring(raw_header(part, raw, "Content-ID").as_deref()),
        description: nstring(raw_header(part, raw, "Content-Description").as_deref()),
        content_transfer_encoding: upper(&encoding),
        size: u32::try_from(body_bytes.len()).unwrap_or(u32::MAX),
    };
    let specific = match &part.body {
        PartType::Message(nested) if depth < MIME_DEPTH_MAX && !nested.parts.is_empty() => SpecificFields::Message {
            envelope: Box::new(envelope(nested)),
            body_structure: Box::new(part_structure(nested, 0, extended, depth + 1)),
            number_of_lines: count_lines(body_bytes),
        },
        _ if ctype.eq_ignore_ascii_case("text") => {
            SpecificFields::Text { subtype: upper(&csub), number_of_lines: count_lines(body_bytes) }
        }
        _ => SpecificFields::Basic { r#type: upper(&ctype), subtype: upper(&csub) },
    };
    BodyStructure::Single {
        body: Body { basic, specific },
        extension_data: extended.then(|| SinglePartExtensionData {
            md5: nstring(raw_header(part, raw, "Content-MD5").as_deref()),
            tail: disposition(part),
        }),
    }
}

fn disposition(part: &MessagePart<'_>) -> Option<Disposition<'static>> {
    let d = part.content_disposition()?;
    let params = d
        .attributes()
        .map(|attrs| attrs.iter().map(|a| (upper(&a.name), istring(a.value.as_bytes()))).collect())
        .unwrap_or_default();
    Some(Disposition { disposition: Some((upper(d.ctype()), params)), tail: None })
}

/// Byte ranges of one part of a message: its MIME header and its body.
pub struct PartBytes<'a> {
    pub header: &'a [u8],
    pub body: &'a [u8],
}

fn slice(raw: &[u8], from: u32, to: u32) -> &[u8] {
    let start = (from as usize).min(raw.len());
    let end = (to as usize).clamp(start, raw.len());
    &raw[start..end]
}

/// Resolve an IMAP part path (1.2.3) within a message.
pub fn resolve<'a>(message: &'a Message<'a>, path: &[NonZeroU32]) -> Option<PartBytes<'a>> {
    let mut current = message;
    let mut index = 0usize;
    for (depth, n) in path.iter().enumerate() {
        if depth >= MIME_DEPTH_MAX {
            return None;
        }
        let n = n.get() as usize;
        let part = &current.parts[index];
        match &part.body {
            PartType::Multipart(children) => {
                index = *children.get(n - 1)? as usize;
            }
            PartType::Message(nested) if depth > 0 || index != 0 => {
                // Inside a message/rfc822 part, numbering continues in its body.
                current = nested;
                let root = &current.parts[0];
                index = match &root.body {
                    PartType::Multipart(children) => *children.get(n - 1)? as usize,
                    _ if n == 1 => 0,
                    _ => return None,
                };
            }
            _ if n == 1 => {}
            _ => return None,
        }
    }
    let raw = current.raw_message.as_ref();
    let part = &current.parts[index];
    Some(PartBytes {
        header: slice(raw, part.offset_header, part.offset_body),
        body: slice(raw, part.offset_body, part.offset_end),
    })
}

/// The header section of a message's raw bytes (up to and including the blank line).
pub fn header_of(raw: &[u8]) -> &[u8] {
    let mut i = 0;
    while i < raw.len() {
        if raw[i..].starts_with(b"\r\n\r\n") {
            return &raw[..i + 4];
        }
        if raw[i..].starts_with(b"\n\n") {
            return &raw[..i + 2];
        }
        i += 1;
    }
    raw
}

/// Header fields of `header` whose names are (or, with `not`, are not) in `names`.
pub fn header_fields(header: &[u8], names: &[String], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !matches!(line.first(), Some(b' ') | Some(b'\t')) {
            let name = line.split(|&b| b == b':').next().unwrap_or(b"");
            let name = String::from_utf8_lossy(name).trim().to_ascii_lowercase();
            keep = names.iter().any(|n| n.eq_ignore_ascii_case(&name)) != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Value of a header for SEARCH: what a reader of the header sees. Address
/// headers (FROM, TO, CC, BCC) are their decoded structure: group names, display
/// names (RFC 2047 words decoded, folds undone) and addresses, written
/// `Name <mailbox@host>`, never the encoded bytes; other headers are their raw
/// value and, where mail-parser decodes it, their decoded text.
pub fn header_text(message: &Message<'_>, name: &str) -> Option<Cow<'static, str>> {
    let root = message.parts.first()?;
    let raw = message.raw_message.as_ref();
    let mut joined = String::new();
    for h in root.headers.iter().filter(|h| h.name.as_str().eq_ignore_ascii_case(name)) {
        if !joined.is_empty() {
            joined.push('\n');
        }
        if let HeaderValue::Address(value) = &h.value {
            address_text(value, &mut joined);
            continue;
        }
        let bytes = slice(raw, h.offset_start, h.offset_end);
        joined.push_str(&String::from_utf8_lossy(bytes));
        if let HeaderValue::Text(t) = &h.value {
            joined.push(' ');
            joined.push_str(t);
        }
    }
    (!joined.is_empty()).then_some(Cow::Owned(joined))
}

/// An address header as text to search: `Group: Name <a@b>, c@d;, e@f`.
fn address_text(value: &mail_parser::Address<'_>, out: &mut String) {
    let push = |addr: &Addr<'_>, out: &mut String| {
        if let Some(name) = addr.name.as_deref() {
            out.push_str(name);
            out.push(' ');
        }
        if let Some(address) = addr.address.as_deref() {
            out.push('<');
            out.push_str(address);
            out.push('>');
        }
        out.push_str(", ");
    };
    match value {
        mail_parser::Address::List(list) => list.iter().for_each(|a| push(a, out)),
        mail_parser::Address::Group(groups) => {
            for group in groups {
                if let Some(name) = group.name.as_deref() {
                    out.push_str(name);
                    out.push_str(": ");
                }
                group.addresses.iter().for_each(|a| push(a, out));
                if group.name.is_some() {
                    out.push_str("; ");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: parts\r\nMessage-ID: <p@x>\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--b--\r\n";

    #[test]
    fn sections_resolve_to_the_raw_bytes_of_parts() {
        let m = parse(MULTI).unwrap();
        let one = resolve(&m, &[NonZeroU32::new(1).unwrap()]).unwrap();
        assert_eq!(one.body, b"hello");
        let two = resolve(&m, &[NonZeroU32::new(2).unwrap()]).unwrap();
        assert_eq!(two.body, b"AAAA");
        assert!(resolve(&m, &[NonZeroU32::new(3).unwrap()]).is_none());
    }

    #[test]
    fn envelope_and_structure_describe_the_message() {
        let m = parse(MULTI).unwrap();
        let env = envelope(&m);
        assert_eq!(env.subject, nstring(Some("parts")));
        assert_eq!(env.from.len(), 1);
        assert_eq!(env.from[0].host, nstring(Some("example.test")));
        match body_structure(&m, true) {
            BodyStructure::Multi { bodies, .. } => assert_eq!(bodies.as_ref().len(), 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_fields_select_and_exclude() {
        let h = header_of(MULTI);
        let only = header_fields(h, &["subject".into()], false);
        assert_eq!(only, b"Subject: parts\r\n\r\n");
        let not = header_fields(h, &["subject".into(), "content-type".into()], true);
        assert!(!String::from_utf8_lossy(&not).contains("Subject"));
        assert!(String::from_utf8_lossy(&not).contains("Message-ID"));
    }
}

#[cfg(test)]
mod nul_tests {
    /// Found by `cargo fuzz run imap_message`: a NUL in a display name panicked.
    #[test]
    fn nul_bytes_in_headers_and_bodies_do_not_panic() {
        let raw = b"From: a\0b <x@y.test>\r\nSubject: s\0t\r\n\r\nbody\0body\r\n";
        crate::fuzzing::message_views(raw);
        let m = super::parse(raw).unwrap();
        let _ = super::envelope(&m);
        assert!(!super::istring(b"a\0b").as_ref().contains(&0));
    }
}
