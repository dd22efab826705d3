//! FETCH and UID FETCH: what the client asks to see of the messages of the
//! selected view.
//!
//! Items from the message record (FLAGS, UID, INTERNALDATE, RFC822.SIZE,
//! MODSEQ) need no body; everything else is computed from the bytes read through
//! [`BodyReader`], so a body missing on this site makes the answer
//! `NO [UNAVAILABLE]`. A non-PEEK body fetch on a read-write mailbox first sets
//! `\Seen` through the write path, so the FLAGS answered are the new ones.

use std::borrow::Cow;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use base64::Engine;
use imap_codec::imap_types::command::FetchModifier;
use imap_codec::imap_types::core::{AString, LiteralMode, NString8, Tag, Vec1};
use imap_codec::imap_types::extensions::binary::Literal8;
use imap_codec::imap_types::fetch::{
    Macro, MacroOrMessageDataItemNames, MessageDataItem, MessageDataItemName, Part, Section,
};
use imap_codec::imap_types::response::{Data, Status};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_next::server::Server;
use maildr_frontend::memory::{MemoryCharge, MessageMemory};
use maildr_store::{Command as StoreCommand, FlagOp, Message};
use maildr_types::{ModSeq, SystemFlags, Uid};

use crate::blocking::store_read;
use crate::bodies::{self, BodyReader, BodyUnavailable};
use crate::flags::flags_to_fetch;
use crate::mime;
use crate::reply::{bad, datetime, no, nz, ok, other_code, read_failed, write_failed};
use crate::session::Session;
use crate::transport::Transport;
use crate::vanished::{vanished_since, Known};
use crate::view::{message_count, modseq_item, uid_item};

/// The item names a macro stands for.
fn macro_names(m: Macro) -> Vec<MessageDataItemName<'static>> {
    use MessageDataItemName::{Body, Envelope, Flags, InternalDate, Rfc822Size};
    match m {
        Macro::Fast => vec![Flags, InternalDate, Rfc822Size],
        Macro::All => vec![Flags, InternalDate, Rfc822Size, Envelope],
        Macro::Full => vec![Flags, InternalDate, Rfc822Size, Envelope, Body],
        _ => vec![MessageDataItemName::Flags],
    }
}

/// Does fetching these items set `\Seen` (a non-PEEK body fetch)?
fn marks_seen(names: &[MessageDataItemName<'static>]) -> bool {
    names.iter().any(|n| {
        matches!(n, MessageDataItemName::BodyExt { peek: false, .. } | MessageDataItemName::Binary { peek: false, .. })
            || matches!(n, MessageDataItemName::Rfc822 | MessageDataItemName::Rfc822Text)
    })
}

impl Session {
    pub(crate) async fn fetch(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        set: &SequenceSet,
        names: MacroOrMessageDataItemNames<'static>,
        uid: bool,
        modifiers: &[FetchModifier],
    ) {
        let vanished = modifiers.contains(&FetchModifier::Vanished);
        if vanished {
            if let Err(why) = self.vanished_allowed(uid, modifiers) {
                server.enqueue_status(bad(Some(tag), why));
                return;
            }
        }
        self.sync(server, false);
        let mut names = match names {
            MacroOrMessageDataItemNames::Macro(m) => macro_names(m),
            MacroOrMessageDataItemNames::MessageDataItemNames(n) => n,
        };
        let changed_since = modifiers
            .iter()
            .filter_map(|m| match m {
                FetchModifier::ChangedSince(v) => Some(v.get()),
                _ => None,
            })
            .next();
        if changed_since.is_some() || names.contains(&MessageDataItemName::ModSeq) {
            self.condstore = true;
        }
        if self.condstore && !names.contains(&MessageDataItemName::ModSeq) {
            names.push(MessageDataItemName::ModSeq);
        }
        if uid && !names.contains(&MessageDataItemName::Uid) {
            names.push(MessageDataItemName::Uid);
        }
        let view = self.selected.as_ref().expect("selected state");
        let indexes: Vec<usize> = view
            .select(set, uid)
            .into_iter()
            .filter(|i| changed_since.is_none_or(|since| view.messages[*i].modseq.0 > since))
            .collect();
        if let (true, Some(since)) = (vanished, changed_since) {
            let known = Known { uids: Some(set), seq_match: None };
            let store = self.cluster().store();
            match store_read(|| vanished_since(&store, view, ModSeq(since), &known)) {
                Ok(ranges) => crate::vanished::responses(&ranges, true).into_iter().for_each(|d| {
                    server.enqueue_data(d);
                }),
                Err(_) => {
                    server.enqueue_status(read_failed(tag));
                    return;
                }
            }
        }
        // Mark as seen first, so the FLAGS we answer with are the new ones.
        if !view.read_only && marks_seen(&names) {
            match self.mark_seen(server, tag, &indexes).await {
                Ok(true) if !names.contains(&MessageDataItemName::Flags) => names.push(MessageDataItemName::Flags),
                Ok(_) => {}
                Err(()) => return,
            }
        }
        self.answer_fetch(server, tag, &indexes, &names).await;
    }

    /// May this FETCH carry the VANISHED modifier? Only UID FETCH, with
    /// CHANGEDSINCE, once QRESYNC is enabled (RFC 7162 §3.2.6); why not otherwise.
    fn vanished_allowed(&self, uid: bool, modifiers: &[FetchModifier]) -> Result<(), &'static str> {
        if !uid {
            return Err("VANISHED is a UID FETCH modifier");
        }
        if !self.qresync {
            return Err("VANISHED before ENABLE QRESYNC");
        }
        if !modifiers.iter().any(|m| matches!(m, FetchModifier::ChangedSince(_))) {
            return Err("VANISHED needs CHANGEDSINCE");
        }
        Ok(())
    }

    /// Set `\Seen` on the named messages that lack it; `Ok(true)` when some
    /// changed, `Err` when the write failed (the reply is enqueued).
    async fn mark_seen(&mut self, server: &mut Server, tag: &Tag<'static>, indexes: &[usize]) -> Result<bool, ()> {
        let view = self.selected.as_ref().expect("selected state");
        let unseen: Vec<Uid> = indexes
            .iter()
            .map(|i| &view.messages[*i])
            .filter(|m| !m.flags.contains(SystemFlags::SEEN))
            .map(|m| m.uid)
            .collect();
        if unseen.is_empty() {
            return Ok(false);
        }
        let cmd = StoreCommand::StoreFlags {
            mailbox: view.mailbox,
            uids: unseen,
            op: FlagOp::Add,
            flags: SystemFlags(SystemFlags::SEEN),
            keywords: vec![],
            unchanged_since: None,
        };
        if let Err(e) = self.cluster().write(cmd).await {
            server.enqueue_status(write_failed(tag, e));
            return Err(());
        }
        // Refresh without telling: the FETCH answer carries FLAGS.
        for update in self.view_updates(false) {
            if update.fetch_seq().is_none() {
                update.enqueue(server);
            }
        }
        Ok(true)
    }

    /// Leave the answer to [`Session::stream_fetch`], which the connection loop
    /// runs right after this command.
    async fn answer_fetch(
        &mut self,
        _server: &mut Server,
        tag: &Tag<'static>,
        indexes: &[usize],
        names: &[MessageDataItemName<'static>],
    ) {
        let done = ok(tag, None, "FETCH completed");
        self.fetching = Some(FetchAnswer::new(tag.clone(), indexes.to_vec(), names.to_vec(), done));
    }

    /// One FETCH line per message, written in batches of at most
    /// [`FETCH_BATCH_BYTES`] of stored messages (or one larger message), each batch
    /// charged to the site's memory budget while it is read, answered and written;
    /// then the tagged answer. However large the mailbox, one batch is in memory.
    pub(crate) async fn stream_fetch(&mut self, server: &mut Server, transport: &mut Transport) {
        let Some(answer) = self.fetching.take() else { return };
        let FetchAnswer { tag, indexes, names, done } = answer;
        let with_bodies = names.iter().any(needs_body);
        let mut failed = false;
        let mut start = 0;
        while start < indexes.len() {
            let view = self.selected.as_ref().expect("selected state");
            let size = |i: usize| usize::try_from(view.messages[indexes[i]].size_bytes).unwrap_or(usize::MAX);
            let mut end = start + 1;
            let mut batch_bytes = size(start);
            while end < indexes.len() && batch_bytes.saturating_add(size(end)) <= FETCH_BATCH_BYTES {
                batch_bytes += size(end);
                end += 1;
            }
            let batch = &indexes[start..end];
            let mut charge = MessageMemory::global().charge();
            if with_bodies && !cover_within(&mut charge, batch_bytes.saturating_mul(FETCH_COPIES)).await {
                tracing::warn!(peer = %self.peer, batch_bytes, "FETCH stopped: memory budget spent");
                server.enqueue_status(no(&tag, Some(other_code("UNAVAILABLE")), "server busy; try again later"));
                return;
            }
            let hashes: Vec<_> =
                if with_bodies { batch.iter().map(|i| view.messages[*i].body).collect() } else { vec![] };
            let bodies = BodyReader::prepare(self.cluster(), &hashes).await;
            let view = self.selected.as_ref().expect("selected state");
            store_read(|| {
                for i in batch {
                    let message = &view.messages[*i];
                    match fetch_items(&bodies, message, view.is_recent(message.uid), &names) {
                        Ok(items) => {
                            if let Ok(items) = Vec1::try_from(items) {
                                server.enqueue_data(Data::Fetch { seq: nz(message_count(*i) + 1), items });
                            }
                        }
                        Err(_) => failed = true,
                    }
                }
            });
            if end < indexes.len() {
                if let Err(e) = transport.drain_output(server).await {
                    tracing::debug!(peer = %self.peer, error = %e, "FETCH answer not written");
                    return;
                }
            }
            drop(charge);
            start = end;
        }
        if failed {
            server.enqueue_status(bodies::unavailable(&tag));
        } else {
            server.enqueue_status(done);
        }
    }
}

/// A FETCH whose answer is still to be written (a FETCH command's, or the
/// FETCH lines of a QRESYNC SELECT).
pub(crate) struct FetchAnswer {
    tag: Tag<'static>,
    indexes: Vec<usize>,
    names: Vec<MessageDataItemName<'static>>,
    /// The tagged answer once every line is written.
    done: Status<'static>,
}

impl FetchAnswer {
    pub(crate) fn new(
        tag: Tag<'static>,
        indexes: Vec<usize>,
        names: Vec<MessageDataItemName<'static>>,
        done: Status<'static>,
    ) -> FetchAnswer {
        FetchAnswer { tag, indexes, names, done }
    }
}

/// Stored message bytes answered per batch (at least one message).
pub(crate) const FETCH_BATCH_BYTES: usize = 1024 * 1024;

/// Copies of a body in memory while it is answered: read, in the answer's items,
/// encoded for the client.
const FETCH_COPIES: usize = 3;

/// How long a FETCH batch waits for the memory budget before the FETCH is
/// answered `NO [UNAVAILABLE]`.
const FETCH_MEMORY_WAIT: Duration = Duration::from_secs(5);

/// Cover `bytes` with the budget, waiting up to [`FETCH_MEMORY_WAIT`] (the session
/// holds nothing else of it meanwhile).
async fn cover_within(charge: &mut MemoryCharge, bytes: usize) -> bool {
    let deadline = Instant::now() + FETCH_MEMORY_WAIT;
    loop {
        if charge.cover(bytes).is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `<start.len>` slice of a section, and the origin to report.
fn partial(data: &[u8], range: Option<(u32, NonZeroU32)>) -> (Vec<u8>, Option<u32>) {
    match range {
        None => (data.to_vec(), None),
        Some((start, len)) => {
            let s = (start as usize).min(data.len());
            let e = s.saturating_add(len.get() as usize).min(data.len());
            (data[s..e].to_vec(), Some(start))
        }
    }
}

/// Whether answering this FETCH item reads the message body.
fn needs_body(name: &MessageDataItemName<'static>) -> bool {
    !matches!(
        name,
        MessageDataItemName::Flags
            | MessageDataItemName::Uid
            | MessageDataItemName::InternalDate
            | MessageDataItemName::Rfc822Size
            | MessageDataItemName::ModSeq
    )
}

/// Compute the FETCH items for one message (`\Recent` in this session when
/// `recent`); an error when its body is missing.
fn fetch_items(
    bodies: &BodyReader,
    message: &Message,
    recent: bool,
    names: &[MessageDataItemName<'static>],
) -> Result<Vec<MessageDataItem<'static>>, BodyUnavailable> {
    let raw = if names.iter().any(needs_body) { Some(bodies.read(&message.body)?) } else { None };
    let raw_ref: &[u8] = raw.as_deref().unwrap_or(b"");
    let parsed = if raw.is_some() { mime::parse(raw_ref) } else { None };
    let mut items = Vec::new();
    for name in names {
        let item = match name {
            MessageDataItemName::Flags => MessageDataItem::Flags(flags_to_fetch(message, recent)),
            MessageDataItemName::Uid => uid_item(message.uid),
            MessageDataItemName::InternalDate => MessageDataItem::InternalDate(datetime(message.internal_date.0)),
            MessageDataItemName::Rfc822Size => {
                MessageDataItem::Rfc822Size(u32::try_from(message.size_bytes).unwrap_or(u32::MAX))
            }
            MessageDataItemName::ModSeq => modseq_item(message.modseq),
            _ => match body_item(name, raw_ref, parsed.as_ref()) {
                Some(item) => item,
                None => continue,
            },
        };
        items.push(item);
    }
    Ok(items)
}

/// A FETCH item computed from the message's bytes; `None` where the structure
/// items have nothing to show (unparsable message).
fn body_item(
    name: &MessageDataItemName<'static>,
    raw: &[u8],
    parsed: Option<&mail_parser::Message<'_>>,
) -> Option<MessageDataItem<'static>> {
    Some(match name {
        MessageDataItemName::Envelope => MessageDataItem::Envelope(mime::envelope(parsed?)),
        MessageDataItemName::BodyStructure => MessageDataItem::BodyStructure(mime::body_structure(parsed?, true)),
        MessageDataItemName::Body => MessageDataItem::Body(mime::body_structure(parsed?, false)),
        MessageDataItemName::Rfc822 => MessageDataItem::Rfc822(mime::nstring_bytes(raw)),
        MessageDataItemName::Rfc822Header => MessageDataItem::Rfc822Header(mime::nstring_bytes(mime::header_of(raw))),
        MessageDataItemName::Rfc822Text => {
            MessageDataItem::Rfc822Text(mime::nstring_bytes(&raw[mime::header_of(raw).len()..]))
        }
        MessageDataItemName::BodyExt { section, partial: range, .. } => {
            let (bytes, origin) = match section_bytes(raw, parsed, section.as_ref()) {
                Some(d) => partial(&d, *range),
                None => (Vec::new(), range.map(|r| r.0)),
            };
            MessageDataItem::BodyExt { section: section.clone(), origin, data: mime::nstring_bytes(&bytes) }
        }
        MessageDataItemName::Binary { section, partial: range, .. } => {
            let (bytes, _) = partial(&binary_bytes(raw, parsed, section).unwrap_or_default(), *range);
            MessageDataItem::Binary {
                section: section.clone(),
                value: NString8::Literal8(Literal8 { data: Cow::Owned(bytes), mode: LiteralMode::Sync }),
            }
        }
        MessageDataItemName::BinarySize { section } => {
            let size = binary_bytes(raw, parsed, section).map(|b| b.len());
            MessageDataItem::BinarySize {
                section: section.clone(),
                size: u32::try_from(size.unwrap_or(0)).unwrap_or(u32::MAX),
            }
        }
        MessageDataItemName::Flags
        | MessageDataItemName::Uid
        | MessageDataItemName::InternalDate
        | MessageDataItemName::Rfc822Size
        | MessageDataItemName::ModSeq => return None,
    })
}

/// Bytes of BINARY[section]: the decoded part, or the whole message.
fn binary_bytes(raw: &[u8], parsed: Option<&mail_parser::Message<'_>>, section: &[NonZeroU32]) -> Option<Vec<u8>> {
    match parsed {
        Some(p) if !section.is_empty() => mime::resolve(p, section).map(|b| decode_body(p, section, b.body)),
        _ => Some(raw.to_vec()),
    }
}

/// Content-transfer-decoded body of a part (for BINARY).
fn decode_body(message: &mail_parser::Message<'_>, path: &[NonZeroU32], raw: &[u8]) -> Vec<u8> {
    let _ = (message, path);
    let text = String::from_utf8_lossy(raw);
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(d) if !compact.is_empty() && raw.iter().all(|b| b.is_ascii()) && looks_base64(&compact) => d,
        _ => raw.to_vec(),
    }
}

fn looks_base64(s: &str) -> bool {
    s.len().is_multiple_of(4) && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=')
}

/// Bytes of BODY[section].
fn section_bytes(
    raw: &[u8],
    parsed: Option<&mail_parser::Message<'_>>,
    section: Option<&Section<'_>>,
) -> Option<Vec<u8>> {
    let Some(section) = section else { return Some(raw.to_vec()) };
    let parsed = parsed?;
    let part_path =
        |p: &Option<Part>| -> Vec<NonZeroU32> { p.as_ref().map(|p| p.0.as_ref().to_vec()).unwrap_or_default() };
    let names_of = |names: &Vec1<AString<'_>>| -> Vec<String> {
        names.as_ref().iter().map(|n| String::from_utf8_lossy(n.as_ref()).into_owned()).collect()
    };
    match section {
        Section::Part(p) => mime::resolve(parsed, p.0.as_ref()).map(|b| b.body.to_vec()),
        Section::Mime(p) => mime::resolve(parsed, p.0.as_ref()).map(|b| b.header.to_vec()),
        Section::Header(p) => {
            let path = part_path(p);
            if path.is_empty() {
                return Some(mime::header_of(raw).to_vec());
            }
            let part = mime::resolve(parsed, &path)?;
            Some(mime::header_of(part.body).to_vec())
        }
        Section::Text(p) => {
            let path = part_path(p);
            if path.is_empty() {
                return Some(raw[mime::header_of(raw).len()..].to_vec());
            }
            let part = mime::resolve(parsed, &path)?;
            Some(part.body[mime::header_of(part.body).len()..].to_vec())
        }
        Section::HeaderFields(p, names) | Section::HeaderFieldsNot(p, names) => {
            let not = matches!(section, Section::HeaderFieldsNot(..));
            let path = part_path(p);
            let header = if path.is_empty() {
                mime::header_of(raw)
            } else {
                mime::header_of(mime::resolve(parsed, &path)?.body)
            };
            Some(mime::header_fields(header, &names_of(names), not))
        }
    }
}
