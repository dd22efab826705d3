//! QUOTA (RFC 2087): GETQUOTAROOT and GETQUOTA report the account's one quota
//! root ""; SETQUOTA is refused, quotas are the administrator's.

use imap_codec::imap_types::core::{AString, Tag, Vec1};
use imap_codec::imap_types::extensions::quota::{QuotaGet, Resource};
use imap_codec::imap_types::mailbox::Mailbox as ImapMailbox;
use imap_codec::imap_types::response::Data;
use imap_next::server::Server;
use maildr_store::Account;

use crate::reply::{no, ok, other_code};
use crate::session::Session;

fn quota_data(account: &Account) -> Data<'static> {
    let usage = account.used_bytes.div_ceil(1024);
    let limit = if account.quota_bytes == 0 { u64::from(u32::MAX) } else { account.quota_bytes / 1024 };
    Data::Quota {
        root: AString::try_from("").expect("valid"),
        quotas: Vec1::try_from(vec![QuotaGet { resource: Resource::Storage, usage, limit }]).expect("non-empty"),
    }
}

impl Session {
    pub(crate) fn get_quota_root(&mut self, server: &mut Server, tag: &Tag<'static>, mailbox: ImapMailbox<'static>) {
        if let Some(account) = self.account() {
            server.enqueue_data(Data::QuotaRoot { mailbox, roots: vec![AString::try_from("").expect("valid")] });
            server.enqueue_data(quota_data(&account));
            server.enqueue_status(ok(tag, None, "GETQUOTAROOT completed"));
        } else {
            server.enqueue_status(no(tag, None, "account no longer exists"));
        }
    }

    pub(crate) fn get_quota(&mut self, server: &mut Server, tag: &Tag<'static>, root: &AString<'static>) {
        match self.account() {
            Some(account) if root.as_ref().is_empty() => {
                server.enqueue_data(quota_data(&account));
                server.enqueue_status(ok(tag, None, "GETQUOTA completed"));
            }
            _ => {
                server.enqueue_status(no(tag, None, "no such quota root"));
            }
        }
    }

    pub(crate) fn set_quota(&mut self, server: &mut Server, tag: &Tag<'static>) {
        server.enqueue_status(no(tag, Some(other_code("NOPERM")), "quotas are set by the administrator"));
    }
}
