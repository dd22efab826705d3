//! APPEND: store a message the client uploads.
//!
//! The body is made durable first (`Cluster::put_body`: on a replicated site, on
//! a second site too), then the record is written; OK only once both are
//! committed. The internal date is decided here, before the command is proposed.

use imap_codec::imap_types::core::Tag;
use imap_codec::imap_types::datetime::DateTime;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::flag::Flag;
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::{Code, Status};
use imap_next::server::Server;
use maildr_store::{Applied, Command as StoreCommand};
use maildr_types::UnixSeconds;

use crate::flags;
use crate::reply::{bad, no, nz, ok, write_failed};
use crate::session::Session;

impl Session {
    pub(crate) async fn append(
        &mut self,
        server: &mut Server,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        flags_in: &[Flag<'static>],
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'static>,
    ) {
        let status = self.append_message(tag, mailbox, flags_in, date, message).await;
        self.sync(server, true);
        server.enqueue_status(status);
    }

    async fn append_message(
        &mut self,
        tag: &Tag<'static>,
        mailbox: &ImapMailbox<'static>,
        flags_in: &[Flag<'static>],
        date: Option<DateTime>,
        message: LiteralOrLiteral8<'static>,
    ) -> Status<'static> {
        let Some(account) = self.account() else { return no(tag, None, "account no longer exists") };
        let name = match self.stored_name(mailbox, false) {
            Ok(n) => n,
            Err(e) => return super::name_failed(tag, e),
        };
        let (system, keywords) = match flags::split(flags_in) {
            Ok(x) => x,
            Err(e) => return bad(Some(tag), e),
        };
        let bytes = match message {
            LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
            LiteralOrLiteral8::Literal8(l) => l.data.as_ref().to_vec(),
        };
        if account.would_exceed_quota(bytes.len() as u64) {
            return no(tag, Some(Code::OverQuota), "over quota");
        }
        let internal_date = date.map(|d| UnixSeconds(d.as_ref().timestamp())).unwrap_or_else(|| self.now());
        let body = match self.cluster().put_body(bytes).await {
            Ok(b) => b,
            Err(e) => return write_failed(tag, e),
        };
        let cmd = StoreCommand::Append {
            account: account.address,
            mailbox: name,
            body,
            flags: system,
            keywords,
            internal_date,
        };
        match self.cluster().write(cmd).await {
            Ok(Applied::Appended { uid_validity, uid, .. }) => {
                ok(tag, Some(Code::AppendUid { uid_validity: nz(uid_validity.0), uid: nz(uid.0) }), "APPEND completed")
            }
            Ok(other) => unreachable!("APPEND applies as Appended, got {other:?}"),
            Err(e) => write_failed(tag, e),
        }
    }
}
