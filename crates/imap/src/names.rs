//! Mailbox names between the wire and the store: IMAP4rev1 clients write
//! non-ASCII names in modified UTF-7 (RFC 3501 §5.1.3, `&ZeVnLIqe-` for 日本語,
//! `&-` for `&`); the store keeps names as UTF-8 text, so the admin API, the CLI
//! and every site show the name the user typed.
//!
//! A name from a client must be valid modified UTF-7 in its one canonical
//! spelling (the encoding of its own decoding): no 8-bit bytes, no `&` run left
//! open, no printable ASCII in base64, no two runs where one does, no unpaired
//! surrogate. Otherwise two spellings could name one mailbox, or a name could
//! hide characters; such a name is answered BAD and changes nothing.
//!
//! Names stored before this conversion existed are the raw text a client sent:
//! a client's `&ZeVnLIqe-` was stored as those ten ASCII characters. Such a
//! *legacy* component (ASCII, holding `&`, and valid modified UTF-7 as it
//! stands) is sent back exactly as stored, so its client sees the name it
//! created, and a client's name finds it; see [`resolve`]. No mailbox can be
//! created whose stored text would read as legacy (literal text such as
//! `&ZeVnLIqe-`, written `&-ZeVnLIqe-`): that would be two names with one
//! spelling, so it is refused with `NO [CANNOT]`. For names without `&` (every
//! ASCII name there was) nothing changes either way.
//!
//! This module must never panic on client input, and never read the store
//! itself: [`resolve`] is given the account's names when it needs them.

use std::collections::HashMap;
use std::fmt;

use maildr_types::MailboxName;

use crate::cmd::list::DELIMITER;

/// Why a client's mailbox name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NameError {
    /// Not a valid name (syntax, encoding, limits): answered BAD.
    Invalid(String),
    /// Valid, but not one this server will create: answered `NO [CANNOT]`.
    Refused(String),
    /// The account's mailboxes could not be read to resolve it.
    Unreadable(String),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Invalid(why) | NameError::Refused(why) | NameError::Unreadable(why) => f.write_str(why),
        }
    }
}

fn invalid(why: &str) -> NameError {
    NameError::Invalid(format!("mailbox name is not valid modified UTF-7 (RFC 3501 5.1.3): {why}"))
}

/// The modified BASE64 alphabet: RFC 2045's with `,` for `/`.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

fn sextet(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|a| *a == c).and_then(|p| u32::try_from(p).ok())
}

/// Printable US-ASCII, which modified UTF-7 writes as itself (`&` as `&-`).
fn is_direct(c: char) -> bool {
    (' '..='~').contains(&c)
}

/// The modified UTF-7 spelling of a UTF-8 name.
pub(crate) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut run: Vec<u16> = Vec::new();
    for c in name.chars() {
        if is_direct(c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut units = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut units));
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Write a run of UTF-16 code units as `&` modified-BASE64 `-`.
fn flush(run: &mut Vec<u16>, out: &mut String) {
    if run.is_empty() {
        return;
    }
    let bytes: Vec<u8> = run.drain(..).flat_map(u16::to_be_bytes).collect();
    out.push('&');
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        // 1, 2 or 3 bytes take 2, 3 or 4 characters: no padding.
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out.push('-');
}

/// The UTF-8 text of a modified UTF-7 name, refusing every spelling but the
/// canonical one.
pub(crate) fn decode(wire: &[u8]) -> Result<String, NameError> {
    let mut out = String::with_capacity(wire.len());
    let mut i = 0;
    while i < wire.len() {
        let b = wire[i];
        if b != b'&' {
            if !is_direct(char::from(b)) {
                return Err(invalid("8-bit or control characters must be encoded"));
            }
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let Some(len) = wire[i + 1..].iter().position(|c| *c == b'-') else {
            return Err(invalid("an &-run is not closed with -"));
        };
        let run = &wire[i + 1..i + 1 + len];
        if run.is_empty() {
            out.push('&');
        } else {
            out.push_str(&decode_run(run)?);
        }
        i += len + 2;
    }
    if encode(&out).as_bytes() != wire {
        return Err(invalid("not the canonical spelling (ASCII in base64, or runs split)"));
    }
    Ok(out)
}

/// One modified-BASE64 run (between `&` and `-`) as text.
fn decode_run(run: &[u8]) -> Result<String, NameError> {
    let mut bytes = Vec::with_capacity(run.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in run {
        let v = sextet(*c).ok_or_else(|| invalid("a character outside modified BASE64 in an &-run"))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push(u8::try_from((acc >> bits) & 0xff).expect("masked to a byte"));
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 || acc != 0 || bytes.len() % 2 != 0 {
        return Err(invalid("an &-run does not end on a whole UTF-16 character"));
    }
    let units = bytes.chunks(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
    char::decode_utf16(units).collect::<Result<String, _>>().map_err(|_| invalid("an unpaired UTF-16 surrogate"))
}

/// Does this stored component read as modified UTF-7 written raw (stored before
/// names were converted)? ASCII names without `&` never do.
fn is_legacy(component: &str) -> bool {
    component.is_ascii() && component.contains('&') && decode(component.as_bytes()).is_ok()
}

/// How a stored name (or any stored name text, as in an error) is written to a
/// client: each hierarchy level encoded, a legacy level as stored.
pub(crate) fn wire_text(stored: &str) -> String {
    let delimiter = char::from(DELIMITER);
    let levels: Vec<String> =
        stored.split(delimiter).map(|c| if is_legacy(c) { c.to_string() } else { encode(c) }).collect();
    levels.join(&delimiter.to_string())
}

/// How a stored mailbox name is written to a client.
pub(crate) fn wire_name(name: &MailboxName) -> String {
    wire_text(name.as_str())
}

/// The stored name a client's name means. Without `&` the two are the same; with
/// one, each level of the name is matched against the account's `existing`
/// names as the client sees them, so a legacy level is found as stored, and the
/// levels that do not exist yet are stored decoded. `creating` refuses a new
/// level whose text would read as legacy.
pub(crate) fn resolve(
    wire: &[u8],
    existing: impl FnOnce() -> Result<Vec<MailboxName>, String>,
    creating: bool,
) -> Result<MailboxName, NameError> {
    let text = decode(wire)?;
    // The error names the mailbox as the client spelled it: answer text is ASCII.
    let parse = |s: &str| {
        MailboxName::parse(s).map_err(|e| match e {
            maildr_types::ParseError::MailboxName(_, why) => {
                NameError::Invalid(format!("mailbox name {}: {why}", encode(s)))
            }
            other => NameError::Invalid(other.to_string()),
        })
    };
    if !wire.contains(&b'&') {
        return parse(&text);
    }
    let existing = existing().map_err(NameError::Unreadable)?;
    let by_wire: HashMap<String, &MailboxName> = existing.iter().map(|n| (wire_name(n), n)).collect();
    let wire = std::str::from_utf8(wire).map_err(|_| invalid("not ASCII"))?;
    let (mut stored, mut wire_prefix) = (String::new(), String::new());
    for (i, level) in wire.split(char::from(DELIMITER)).enumerate() {
        if i > 0 {
            wire_prefix.push(char::from(DELIMITER));
        }
        wire_prefix.push_str(level);
        if let Some(found) = by_wire.get(&wire_prefix) {
            stored = found.as_str().to_string();
            continue;
        }
        let decoded = decode(level.as_bytes())?;
        if creating && is_legacy(&decoded) {
            return Err(NameError::Refused(format!(
                "a level named {level} would read as an older, unconverted name; choose another"
            )));
        }
        if i > 0 {
            stored.push(char::from(DELIMITER));
        }
        stored.push_str(&decoded);
    }
    parse(&stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_3501_examples_convert_both_ways() {
        // RFC 3501 5.1.3: "~peter/mail/&U,BTFw-/&ZeVnLIqe-" mixes Chinese and Japanese.
        let wire = "~peter/mail/&U,BTFw-/&ZeVnLIqe-";
        assert_eq!(decode(wire.as_bytes()).unwrap(), "~peter/mail/台北/日本語");
        assert_eq!(encode("~peter/mail/台北/日本語"), wire);
        assert_eq!(decode(b"&-").unwrap(), "&");
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(decode(b"Sent").unwrap(), "Sent");
        // Outside the BMP: a surrogate pair in one run.
        assert_eq!(encode("mail 📧"), "mail &2D3c5w-");
        assert_eq!(decode(b"mail &2D3c5w-").unwrap(), "mail 📧");
        assert_eq!(encode("Ünïcødé"), "&ANw-n&AO8-c&APg-d&AOk-");
    }

    #[test]
    fn every_other_spelling_is_refused() {
        for bad in [
            &b"&ZeVnLIqe"[..], // run not closed
            b"&ZeVnLIqe/-",    // '/' is not modified BASE64
            b"&AGE-",          // 'a' in base64
            b"&ZeU-&Z2w-",     // two runs where one does
            b"&ZeV-",          // leftover bits
            b"&Ze-",           // half a character
            b"&2D0-",          // unpaired high surrogate
            b"caf\xc3\xa9",    // raw 8-bit
            b"tab\there",      // raw control
            b"&ZeVnLIqe===-",  // padding
        ] {
            assert!(matches!(decode(bad), Err(NameError::Invalid(_))), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn ascii_names_without_ampersand_are_stored_and_sent_unchanged() {
        for name in ["INBOX", "Sent", "a/b c/d~e", "[Gmail]/All Mail"] {
            assert_eq!(decode(name.as_bytes()).unwrap(), name);
            assert_eq!(wire_text(name), name);
        }
    }

    #[test]
    fn legacy_levels_are_sent_as_stored_and_found_by_their_spelling() {
        let names = || Ok(vec![MailboxName::parse("&ZeVnLIqe-").unwrap(), MailboxName::parse("R&D").unwrap()]);
        assert_eq!(wire_text("&ZeVnLIqe-"), "&ZeVnLIqe-");
        assert_eq!(wire_text("&ZeVnLIqe-/日本語"), "&ZeVnLIqe-/&ZeVnLIqe-");
        assert_eq!(wire_text("R&D"), "R&-D", "not valid modified UTF-7 as stored: literal text");
        let found = resolve(b"&ZeVnLIqe-", names, false).unwrap();
        assert_eq!(found.as_str(), "&ZeVnLIqe-");
        let child = resolve(b"&ZeVnLIqe-/&ZeVnLIqe-", names, true).unwrap();
        assert_eq!(child.as_str(), "&ZeVnLIqe-/日本語", "a new level under a legacy one");
        assert_eq!(resolve(b"R&-D", names, false).unwrap().as_str(), "R&D");
        assert_eq!(resolve(b"&U,BTFw-", names, true).unwrap().as_str(), "台北");
        let ambiguous = resolve(b"&-U,BTFw-", names, true);
        assert!(matches!(ambiguous, Err(NameError::Refused(_))), "{ambiguous:?}");
        assert_eq!(resolve(b"&-U,BTFw-", names, false).unwrap().as_str(), "&U,BTFw-");
    }
}
