//! STORE and UID STORE: change flags through the write path (CONDSTORE's
//! UNCHANGEDSINCE included), then answer with the flags as they now are.
//!
//! The view is caught up without expunges (sequence numbers must not shift
//! inside STORE). This module must never change flags except through
//! `Cluster::write`.

use std::collections::HashSet;

use imap_codec::imap_types::command::StoreModifier;
use imap_codec::imap_types::core::{Tag, Vec1};
use imap_codec::imap_types::fetch::MessageDataItem;
use imap_codec::imap_types::flag::{Flag, StoreResponse, StoreType};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::sequence::SequenceSet;
use imap_next::server::Server;
use maildr_store::{Applied, Command as StoreCommand, FlagOp};
use maildr_types::{ModSeq, Uid};

use crate::flags;
use crate::reply::{bad, nz, ok, to_set, write_failed};
use crate::session::Session;
use crate::view::{message_count, modseq_item, uid_item};

/// What a STORE command asks, as parsed.
pub(crate) struct StoreRequest<'a> {
    pub set: &'a SequenceSet,
    pub kind: StoreType,
    pub response: StoreResponse,
    pub flags: &'a [Flag<'static>],
    pub uid: bool,
}

/// What the write reported: messages changed, and those UNCHANGEDSINCE kept.
struct Outcome {
    indexes: Vec<usize>,
    changed: HashSet<Uid>,
    modified_since: Vec<Uid>,
    unchanged_since: Option<ModSeq>,
}

impl Session {
    pub(crate) async fn store(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        request: StoreRequest<'_>,
        modifiers: &[StoreModifier],
    ) {
        if self.refuse_if_read_only(server, tag) {
            return;
        }
        let (system, keywords) = match flags::split(request.flags) {
            Ok(x) => x,
            Err(e) => {
                server.enqueue_status(bad(Some(tag), e));
                return;
            }
        };
        let unchanged_since = modifiers.iter().map(|StoreModifier::UnchangedSince(v)| ModSeq(*v)).next();
        if unchanged_since.is_some() {
            self.condstore = true;
        }
        let view = self.selected.as_ref().expect("selected state");
        let indexes = view.select(request.set, request.uid);
        let uids: Vec<Uid> = indexes.iter().map(|i| view.messages[*i].uid).collect();
        let op = match request.kind {
            StoreType::Add => FlagOp::Add,
            StoreType::Remove => FlagOp::Remove,
            StoreType::Replace => FlagOp::Replace,
        };
        let mailbox = view.mailbox;
        let cmd = StoreCommand::StoreFlags { mailbox, uids, op, flags: system, keywords, unchanged_since };
        let applied = match self.cluster().write(cmd).await {
            Ok(a) => a,
            Err(e) => {
                server.enqueue_status(write_failed(tag, e));
                return;
            }
        };
        let Applied::FlagsStored { changed, modified_since, .. } = applied else {
            unreachable!("STORE applies as FlagsStored")
        };
        let changed = changed.into_iter().map(|(u, _)| u).collect();
        let outcome = Outcome { indexes, changed, modified_since, unchanged_since };
        self.answer_store(server, tag, &request, outcome);
    }

    /// Refresh the view and tell the client the flags of what it named.
    fn answer_store(&mut self, server: &mut Server, tag: &Tag<'static>, request: &StoreRequest<'_>, outcome: Outcome) {
        let silent = matches!(request.response, StoreResponse::Silent);
        // Refresh our own view of the changed messages; others' changes show too.
        let out = self.view_updates(false);
        let condstore = self.condstore;
        let view = self.selected.as_ref().expect("selected state");
        for update in out {
            let silent_own = silent
                && update.fetch_seq().is_some_and(|seq| outcome.changed.contains(&view.messages[seq as usize - 1].uid))
                && outcome.unchanged_since.is_none();
            if !silent_own {
                update.enqueue(server);
            }
        }
        // Messages the client named but we did not change still answer with their
        // flags (RFC 3501 §6.4.6), unless silent.
        if !silent {
            for i in &outcome.indexes {
                let m = &view.messages[*i];
                if outcome.changed.contains(&m.uid) || outcome.modified_since.contains(&m.uid) {
                    continue;
                }
                let mut items = vec![MessageDataItem::Flags(view.fetch_flags(m))];
                if request.uid {
                    items.push(uid_item(m.uid));
                }
                if condstore {
                    items.push(modseq_item(m.modseq));
                }
                server.enqueue_data(Data::Fetch {
                    seq: nz(message_count(*i) + 1),
                    items: Vec1::try_from(items).expect("non-empty"),
                });
            }
        }
        if outcome.modified_since.is_empty() {
            server.enqueue_status(ok(tag, None, "STORE completed"));
            return;
        }
        let nums: Vec<u32> = if request.uid {
            outcome.modified_since.iter().map(|u| u.0).collect()
        } else {
            outcome
                .modified_since
                .iter()
                .filter_map(|u| view.messages.iter().position(|m| m.uid == *u).map(|p| message_count(p) + 1))
                .collect()
        };
        let code = to_set(&nums).map(Code::Modified);
        server.enqueue_status(ok(tag, code, "conditional STORE failed for some messages"));
    }
}
