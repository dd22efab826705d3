//! SEARCH and UID SEARCH: which messages of the selected view match.
//!
//! Key evaluation lives in [`crate::search`]; this command catches the view up
//! (no expunges: sequence numbers must not shift), makes sure the bodies the
//! keys need are on this site, and answers. A body this site cannot read makes
//! the answer `NO [UNAVAILABLE]`, never a result that silently leaves a message
//! out.

use std::num::NonZeroU64;

use imap_codec::imap_types::core::{Charset, Tag, Vec1};
use imap_codec::imap_types::response::{Code, Data};
use imap_codec::imap_types::search::SearchKey;
use imap_next::server::Server;

use crate::blocking::store_read;
use crate::bodies::{self, BodyReader};
use crate::reply::{no, nz, ok};
use crate::search::{self, Candidate};
use crate::session::Session;
use crate::view::message_count;

/// Charsets a search may name (matching is on UTF-8).
const CHARSETS: [&str; 2] = ["UTF-8", "US-ASCII"];

impl Session {
    pub(crate) async fn search(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        charset: Option<Charset<'static>>,
        criteria: Vec1<SearchKey<'static>>,
        uid: bool,
    ) {
        if charset.as_ref().is_some_and(|c| !CHARSETS.contains(&c.as_ref().to_ascii_uppercase().as_str())) {
            let allowed = CHARSETS.iter().filter_map(|c| Charset::try_from(*c).ok()).collect();
            server.enqueue_status(no(tag, Some(Code::BadCharset { allowed }), "only UTF-8 and US-ASCII searches"));
            return;
        }
        self.sync(server, false);
        let keys = criteria.into_inner();
        let view = self.selected.as_ref().expect("selected state");
        let hashes: Vec<_> =
            if keys.iter().any(search::needs_body) { view.messages.iter().map(|m| m.body).collect() } else { vec![] };
        let bodies = BodyReader::prepare(self.cluster(), &hashes).await;
        let view = self.selected.as_ref().expect("selected state");
        let ctx = search::Context {
            bodies: &bodies,
            exists: view.exists(),
            highest_uid: view.highest_uid().map(|u| u.0).unwrap_or(0),
        };
        let mut found = Vec::new();
        let mut highest = 0u64;
        let mut body_missing = false;
        store_read(|| {
            for (index, message) in view.messages.iter().enumerate() {
                let mut c = Candidate::new(message_count(index) + 1, message, view.is_recent(message.uid));
                let matched = keys.iter().all(|k| search::matches(k, &mut c, &ctx, 0));
                body_missing |= c.body_missing();
                if matched {
                    found.push(nz(if uid { message.uid.0 } else { message_count(index) + 1 }));
                    highest = highest.max(message.modseq.0);
                }
            }
        });
        if body_missing {
            server.enqueue_status(bodies::unavailable(tag));
            return;
        }
        let modseq = if keys.iter().any(search::uses_modseq) { NonZeroU64::new(highest) } else { None };
        server.enqueue_data(Data::Search(found, modseq));
        server.enqueue_status(ok(tag, None, "SEARCH completed"));
    }
}
