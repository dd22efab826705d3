//! The one function that changes mail state: [`Tables::apply`].
//!
//! Every command first checks all its preconditions, then writes. A refused command
//! therefore leaves the transaction untouched, which lets many commands share one
//! transaction (group commit) without savepoints. Nothing here reads a clock, draws
//! a random number or touches a file outside the database.

use maildr_types::{AccountId, EmailAddress, MailboxId, MailboxName, ModSeq, SystemFlags, Uid, UidValidity};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::command::ControlEventKind;
use crate::command::{Applied, Command, CommandError, FlagOp, Placement};
use crate::model::{
    Account, Alias, ControlEvent, DomainRecord, ExpungeLog, Mailbox, MailboxDigest, Message, QueuedMessage,
    QueuedRecipient, Steering,
};
use crate::{
    decode, encode, StoreError, ACCOUNTS, ACCOUNT_IDS, ALIASES, BLOB_REFS, CONTROL, CONTROL_STEERING, DELIVERED_IDS,
    DKIM_KEYS, DOMAINS, EVENTS, EVENTS_KEPT_MAX, EXPUNGED, EXPUNGED_KEPT_PER_MAILBOX_MAX, EXPUNGE_LOGS, MAILBOXES,
    MAILBOX_NAMES, MESSAGES, MESSAGES_BY_MODSEQ, META, META_COMMANDS_APPLIED, META_LAST_UID_VALIDITY,
    META_NEXT_ACCOUNT_ID, META_NEXT_EVENT_ID, META_NEXT_MAILBOX_ID, META_NEXT_QUEUE_ID, META_QUEUE_MESSAGES_DELETED,
    META_QUEUE_MESSAGES_FINISHED, META_QUEUE_RECIPIENTS_BOUNCED, META_QUEUE_RECIPIENTS_DELIVERED, OUTBOUND,
    OUTBOUND_KEYS,
};

type Outcome = Result<Result<Applied, CommandError>, StoreError>;

pub(crate) struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    domains: Table<'txn, &'static str, &'static [u8]>,
    accounts: Table<'txn, &'static str, &'static [u8]>,
    aliases: Table<'txn, &'static str, &'static [u8]>,
    account_ids: Table<'txn, u64, &'static str>,
    mailboxes: Table<'txn, u64, &'static [u8]>,
    mailbox_names: Table<'txn, (u64, &'static str), u64>,
    messages: Table<'txn, (u64, u32), &'static [u8]>,
    blob_refs: Table<'txn, &'static [u8], u64>,
    delivered_ids: Table<'txn, (u64, &'static str), u32>,
    control: Table<'txn, &'static str, &'static [u8]>,
    events: Table<'txn, u64, &'static [u8]>,
    outbound: Table<'txn, u64, &'static [u8]>,
    outbound_keys: Table<'txn, &'static str, u64>,
    dkim_keys: Table<'txn, &'static str, &'static [u8]>,
    expunged: Table<'txn, (u64, u64, u32), ()>,
    by_modseq: Table<'txn, (u64, u64, u32), ()>,
    expunge_logs: Table<'txn, u64, &'static [u8]>,
}

fn db(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database { path: "(transaction)".into(), source: e.into() }
}

impl<'txn> Tables<'txn> {
    pub(crate) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::TableError> {
        Ok(Tables {
            meta: txn.open_table(META)?,
            domains: txn.open_table(DOMAINS)?,
            accounts: txn.open_table(ACCOUNTS)?,
            aliases: txn.open_table(ALIASES)?,
            account_ids: txn.open_table(ACCOUNT_IDS)?,
            mailboxes: txn.open_table(MAILBOXES)?,
            mailbox_names: txn.open_table(MAILBOX_NAMES)?,
            messages: txn.open_table(MESSAGES)?,
            blob_refs: txn.open_table(BLOB_REFS)?,
            delivered_ids: txn.open_table(DELIVERED_IDS)?,
            control: txn.open_table(CONTROL)?,
            events: txn.open_table(EVENTS)?,
            outbound: txn.open_table(OUTBOUND)?,
            outbound_keys: txn.open_table(OUTBOUND_KEYS)?,
            dkim_keys: txn.open_table(DKIM_KEYS)?,
            expunged: txn.open_table(EXPUNGED)?,
            by_modseq: txn.open_table(MESSAGES_BY_MODSEQ)?,
            expunge_logs: txn.open_table(EXPUNGE_LOGS)?,
        })
    }

    /// Apply one command. `Ok(Err(_))` is a refusal that changed nothing;
    /// `Err(_)` is a storage failure, after which the transaction must be dropped.
    pub(crate) fn apply(&mut self, command: &Command) -> Outcome {
        let outcome = self.apply_inner(command)?;
        let applied = self.meta_get(META_COMMANDS_APPLIED)?;
        self.meta.insert(META_COMMANDS_APPLIED, applied + 1).map_err(db)?;
        Ok(outcome)
    }

    fn apply_inner(&mut self, command: &Command) -> Outcome {
        match command {
            Command::AddDomain { domain, at } => {
                if self.domains.get(domain.as_str()).map_err(db)?.is_some() {
                    return Ok(Err(CommandError::DomainExists(domain.clone())));
                }
                let record = DomainRecord { name: domain.clone(), created_at: *at };
                self.domains.insert(domain.as_str(), encode(&record).as_slice()).map_err(db)?;
                Ok(Ok(Applied::Done))
            }
            Command::RemoveDomain { domain } => {
                if self.domains.get(domain.as_str()).map_err(db)?.is_none() {
                    return Ok(Err(CommandError::DomainUnknown(domain.clone())));
                }
                let accounts = Self::count_in_domain(&self.accounts, domain.as_str())?;
                let aliases = Self::count_in_domain(&self.aliases, domain.as_str())?;
                if accounts + aliases > 0 {
                    return Ok(Err(CommandError::DomainNotEmpty { domain: domain.clone(), accounts, aliases }));
                }
                self.domains.remove(domain.as_str()).map_err(db)?;
                self.dkim_keys.remove(domain.as_str()).map_err(db)?;
                Ok(Ok(Applied::Done))
            }
            Command::AddAccount { address, password_hash, quota_bytes, uid_validity, at } => {
                if let Some(refused) = self.new_account_refusal(address)? {
                    return Ok(Err(refused));
                }
                let uid_validity = self.fresh_uid_validity(*uid_validity)?;
                let id = AccountId(self.take_id(META_NEXT_ACCOUNT_ID)?);
                let account = Account {
                    id,
                    address: address.clone(),
                    password_hash: password_hash.clone(),
                    quota_bytes: *quota_bytes,
                    used_bytes: 0,
                    created_at: *at,
                };
                self.put_account(&account)?;
                self.account_ids.insert(id.0, address.as_str()).map_err(db)?;
                for (special_use, name) in maildr_types::SpecialUse::CREATED_WITH_ACCOUNT {
                    let name = MailboxName::parse(name).expect("built-in mailbox names are valid");
                    self.create_mailbox(id, name, Some(special_use), uid_validity)?;
                }
                Ok(Ok(Applied::AccountAdded { id }))
            }
            Command::SetPassword { address, password_hash } => {
                let Some(mut account) = self.get_account(address)? else {
                    return Ok(Err(CommandError::AccountUnknown(address.clone())));
                };
                account.password_hash = password_hash.clone();
                self.put_account(&account)?;
                Ok(Ok(Applied::Done))
            }
            Command::SetQuota { address, quota_bytes } => {
                let Some(mut account) = self.get_account(address)? else {
                    return Ok(Err(CommandError::AccountUnknown(address.clone())));
                };
                account.quota_bytes = *quota_bytes;
                self.put_account(&account)?;
                Ok(Ok(Applied::Done))
            }
            Command::RemoveAccount { address } => {
                let Some(account) = self.get_account(address)? else {
                    return Ok(Err(CommandError::AccountUnknown(address.clone())));
                };
                self.remove_account(&account)?;
                Ok(Ok(Applied::Done))
            }
            Command::AddAlias { alias, target } => {
                if let Some(refused) = self.new_alias_refusal(alias, target)? {
                    return Ok(Err(refused));
                }
                let mut record =
                    self.get_alias(alias)?.unwrap_or_else(|| Alias { address: alias.clone(), targets: Vec::new() });
                if record.targets.contains(target) {
                    return Ok(Err(CommandError::AliasTargetExists { alias: alias.clone(), target: target.clone() }));
                }
                record.targets.push(target.clone());
                record.targets.sort();
                self.aliases.insert(alias.as_str(), encode(&record).as_slice()).map_err(db)?;
                Ok(Ok(Applied::Done))
            }
            Command::RemoveAlias { alias, target } => {
                let Some(mut record) = self.get_alias(alias)? else {
                    return Ok(Err(CommandError::AliasUnknown(alias.clone())));
                };
                match target {
                    None => record.targets.clear(),
                    Some(t) => {
                        if !record.targets.contains(t) {
                            return Ok(Err(CommandError::AliasTargetUnknown {
                                alias: alias.clone(),
                                target: t.clone(),
                            }));
                        }
                        record.targets.retain(|x| x != t);
                    }
                }
                if record.targets.is_empty() {
                    self.aliases.remove(alias.as_str()).map_err(db)?;
                } else {
                    self.aliases.insert(alias.as_str(), encode(&record).as_slice()).map_err(db)?;
                }
                Ok(Ok(Applied::Done))
            }
            Command::Deliver { recipients, body, internal_date, flags, retry_key } => {
                if recipients.is_empty() {
                    return Ok(Err(CommandError::NoRecipients));
                }
                // Check everything first: all recipients get the message or none does.
                let targets = match self.inbox_targets(recipients, body.size_bytes)? {
                    Ok(t) => t,
                    Err(refused) => return Ok(Err(refused)),
                };
                let placements = self.place(targets, body, *flags, *internal_date, retry_key.as_deref())?;
                Ok(Ok(Applied::Delivered { placements }))
            }
            Command::Submit {
                local,
                remote,
                from,
                submitted_by,
                body,
                internal_date,
                retry_key,
                at_ms,
                expires_at_ms,
            } => {
                if local.is_empty() && remote.is_empty() {
                    return Ok(Err(CommandError::NoRecipients));
                }
                let targets = match self.inbox_targets(local, body.size_bytes)? {
                    Ok(t) => t,
                    Err(refused) => return Ok(Err(refused)),
                };
                let mut waiting: Vec<&EmailAddress> = remote.iter().collect();
                waiting.sort();
                waiting.dedup();
                for address in &waiting {
                    if self.is_hosted(address)? {
                        return Ok(Err(CommandError::RemoteIsLocal((*address).clone())));
                    }
                }
                let placements =
                    self.place(targets, body, SystemFlags::default(), *internal_date, retry_key.as_deref())?;
                let already = match retry_key.as_deref() {
                    Some(key) => self.outbound_keys.get(key).map_err(db)?.map(|v| v.value()),
                    None => None,
                };
                let queued = match (waiting.is_empty(), already) {
                    (true, _) => None,
                    // A retry of a submission that was queued: queued once.
                    (false, Some(id)) => Some(id),
                    (false, None) => {
                        let id = self.take_id(META_NEXT_QUEUE_ID)?;
                        let message = QueuedMessage {
                            id,
                            from: from.clone(),
                            submitted_by: submitted_by.clone(),
                            body: *body,
                            queued_at_ms: *at_ms,
                            expires_at_ms: *expires_at_ms,
                            next_attempt_at_ms: *at_ms,
                            attempts: 0,
                            recipients: waiting
                                .into_iter()
                                .map(|a| QueuedRecipient { address: a.clone(), last_error: None })
                                .collect(),
                            retry_key: retry_key.clone(),
                        };
                        self.outbound.insert(id, encode(&message).as_slice()).map_err(db)?;
                        self.hold_blob(&body.hash)?;
                        if let Some(key) = retry_key.as_deref() {
                            self.outbound_keys.insert(key, id).map_err(db)?;
                        }
                        Some(id)
                    }
                };
                Ok(Ok(Applied::Submitted { placements, queued }))
            }
            Command::RecordDeliveryAttempt { id, delivered, bounced, deferred, next_attempt_at_ms } => {
                let Some(mut message) = self.get_queued(*id)? else {
                    return Ok(Err(CommandError::QueuedUnknown(*id)));
                };
                let named = delivered.iter().chain(bounced).chain(deferred.iter().map(|(a, _)| a));
                for address in named {
                    if !message.recipients.iter().any(|r| &r.address == address) {
                        return Ok(Err(CommandError::NotQueuedFor { id: *id, address: address.clone() }));
                    }
                }
                message.recipients.retain(|r| !delivered.contains(&r.address) && !bounced.contains(&r.address));
                for r in &mut message.recipients {
                    if let Some((_, why)) = deferred.iter().find(|(a, _)| *a == r.address) {
                        r.last_error = Some(why.clone());
                    }
                }
                self.meta_add(META_QUEUE_RECIPIENTS_DELIVERED, delivered.len() as u64)?;
                self.meta_add(META_QUEUE_RECIPIENTS_BOUNCED, bounced.len() as u64)?;
                message.attempts = message.attempts.saturating_add(1);
                message.next_attempt_at_ms = *next_attempt_at_ms;
                let remaining = message.recipients.len();
                if remaining == 0 {
                    self.meta_add(META_QUEUE_MESSAGES_FINISHED, 1)?;
                    self.remove_queued(&message)?;
                } else {
                    self.outbound.insert(*id, encode(&message).as_slice()).map_err(db)?;
                }
                Ok(Ok(Applied::QueueChanged { id: *id, remaining }))
            }
            Command::RetryQueued { id, at_ms } => {
                let messages = match id {
                    Some(id) => match self.get_queued(*id)? {
                        Some(m) => vec![m],
                        None => return Ok(Err(CommandError::QueuedUnknown(*id))),
                    },
                    None => {
                        let mut all = Vec::new();
                        for row in self.outbound.iter().map_err(db)? {
                            let (_, v) = row.map_err(db)?;
                            all.push(decode::<QueuedMessage>("queued message", v.value())?);
                        }
                        all
                    }
                };
                let count = messages.len();
                for mut m in messages {
                    m.next_attempt_at_ms = m.next_attempt_at_ms.min(*at_ms);
                    self.outbound.insert(m.id, encode(&m).as_slice()).map_err(db)?;
                }
                Ok(Ok(Applied::QueueRetried { count }))
            }
            Command::SetDkimKey { domain, key } => {
                if self.domains.get(domain.as_str()).map_err(db)?.is_none() {
                    return Ok(Err(CommandError::DomainUnknown(domain.clone())));
                }
                let s = &key.selector;
                if s.is_empty() || s.len() > 63 || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    return Ok(Err(CommandError::BadDkimSelector(s.clone())));
                }
                self.dkim_keys.insert(domain.as_str(), encode(key).as_slice()).map_err(db)?;
                Ok(Ok(Applied::Done))
            }
            Command::RemoveQueued { id } => {
                let Some(message) = self.get_queued(*id)? else {
                    return Ok(Err(CommandError::QueuedUnknown(*id)));
                };
                self.meta_add(META_QUEUE_MESSAGES_DELETED, 1)?;
                self.remove_queued(&message)?;
                Ok(Ok(Applied::QueueChanged { id: *id, remaining: 0 }))
            }
            Command::CreateMailbox { account, name, uid_validity } => {
                let Some(owner) = self.get_account(account)? else {
                    return Ok(Err(CommandError::AccountUnknown(account.clone())));
                };
                if self.mailbox_id(owner.id, name)?.is_some() {
                    return Ok(Err(CommandError::MailboxExists(name.clone())));
                }
                let uid_validity = self.fresh_uid_validity(*uid_validity)?;
                // Missing parents are created too, as IMAP CREATE promises.
                let parts: Vec<&str> = name.as_str().split('/').collect();
                let mut created = None;
                for depth in 1..=parts.len() {
                    let path = MailboxName::parse(&parts[..depth].join("/")).expect("prefix of a valid name is valid");
                    if self.mailbox_id(owner.id, &path)?.is_none() {
                        created = Some(self.create_mailbox(owner.id, path, None, uid_validity)?);
                    }
                }
                Ok(Ok(Applied::MailboxCreated { id: created.expect("the mailbox itself did not exist") }))
            }
            Command::DeleteMailbox { account, name } => {
                let Some(mut owner) = self.get_account(account)? else {
                    return Ok(Err(CommandError::AccountUnknown(account.clone())));
                };
                if name.is_inbox() {
                    return Ok(Err(CommandError::InboxUndeletable));
                }
                let Some(id) = self.mailbox_id(owner.id, name)? else {
                    return Ok(Err(CommandError::MailboxUnknown(name.to_string())));
                };
                let freed = self.remove_all_messages(id)?;
                owner.used_bytes -= freed;
                self.put_account(&owner)?;
                self.forget_expunged(id)?;
                self.mailboxes.remove(id.0).map_err(db)?;
                self.mailbox_names.remove((owner.id.0, name.as_str())).map_err(db)?;
                Ok(Ok(Applied::MailboxesChanged { ids: vec![id] }))
            }
            Command::RenameMailbox { account, from, to, uid_validity } => {
                let Some(owner) = self.get_account(account)? else {
                    return Ok(Err(CommandError::AccountUnknown(account.clone())));
                };
                let Some(from_id) = self.mailbox_id(owner.id, from)? else {
                    return Ok(Err(CommandError::MailboxUnknown(from.to_string())));
                };
                if self.mailbox_id(owner.id, to)?.is_some() {
                    return Ok(Err(CommandError::MailboxExists(to.clone())));
                }
                let child_prefix = format!("{}/", from.as_str());
                if to == from || to.as_str().starts_with(&child_prefix) {
                    return Ok(Err(CommandError::RenameIntoSelf));
                }
                if from.is_inbox() {
                    // Messages move to a new mailbox; INBOX stays, empty.
                    let uid_validity = self.fresh_uid_validity(*uid_validity)?;
                    let new_id = self.create_mailbox(owner.id, to.clone(), None, uid_validity)?;
                    let uids: Vec<Uid> = self.message_uids(from_id)?;
                    self.copy_into(from_id, &uids, new_id, true)?;
                    return Ok(Ok(Applied::MailboxesChanged { ids: vec![from_id, new_id] }));
                }
                let mut renames = vec![(from.clone(), to.clone(), from_id)];
                for (name, id) in self.mailbox_names_of(owner.id)? {
                    if let Some(rest) = name.strip_prefix(&child_prefix) {
                        let new = MailboxName::parse(&format!("{}/{}", to.as_str(), rest));
                        match new {
                            Ok(new) => {
                                renames.push((MailboxName::parse(&name).expect("stored names are valid"), new, id))
                            }
                            Err(_) => {
                                return Ok(Err(CommandError::MailboxUnknown(format!(
                                    "{}/{rest} (new name too long)",
                                    to
                                ))))
                            }
                        }
                    }
                }
                for (_, new, _) in &renames[1..] {
                    if self.mailbox_id(owner.id, new)?.is_some() {
                        return Ok(Err(CommandError::MailboxExists(new.clone())));
                    }
                }
                let mut ids = Vec::new();
                for (old, new, id) in renames {
                    let mut mailbox = self.get_mailbox(id)?;
                    mailbox.name = new.clone();
                    self.put_mailbox(&mailbox)?;
                    self.mailbox_names.remove((owner.id.0, old.as_str())).map_err(db)?;
                    self.mailbox_names.insert((owner.id.0, new.as_str()), id.0).map_err(db)?;
                    ids.push(id);
                }
                Ok(Ok(Applied::MailboxesChanged { ids }))
            }
            Command::SetSubscribed { account, name, subscribed } => {
                let Some(owner) = self.get_account(account)? else {
                    return Ok(Err(CommandError::AccountUnknown(account.clone())));
                };
                let Some(id) = self.mailbox_id(owner.id, name)? else {
                    return Ok(Err(CommandError::MailboxUnknown(name.to_string())));
                };
                let mut mailbox = self.get_mailbox(id)?;
                mailbox.subscribed = *subscribed;
                self.put_mailbox(&mailbox)?;
                Ok(Ok(Applied::Done))
            }
            Command::Append { account, mailbox, body, flags, keywords, internal_date } => {
                let Some(mut owner) = self.get_account(account)? else {
                    return Ok(Err(CommandError::AccountUnknown(account.clone())));
                };
                let Some(id) = self.mailbox_id(owner.id, mailbox)? else {
                    return Ok(Err(CommandError::MailboxUnknown(mailbox.to_string())));
                };
                if owner.would_exceed_quota(body.size_bytes) {
                    return Ok(Err(CommandError::OverQuota(account.clone())));
                }
                let uid = self.append_message(id, body, *flags, keywords, *internal_date)?;
                owner.used_bytes += body.size_bytes;
                self.put_account(&owner)?;
                let uid_validity = self.get_mailbox(id)?.uid_validity;
                Ok(Ok(Applied::Appended { mailbox: id, uid_validity, uid }))
            }
            Command::StoreFlags { mailbox, uids, op, flags, keywords, unchanged_since } => {
                let Some(mut record) = self.find_mailbox(*mailbox)? else {
                    return Ok(Err(CommandError::MailboxUnknown(mailbox.to_string())));
                };
                let modseq = ModSeq(record.highest_modseq.0 + 1);
                let mut changed = Vec::new();
                let mut modified_since = Vec::new();
                for uid in uids {
                    let Some(mut message) = self.get_message(*mailbox, *uid)? else {
                        continue; // expunged meanwhile: nothing to do (RFC 3501 §7.4.1)
                    };
                    if unchanged_since.is_some_and(|since| message.modseq > since) {
                        modified_since.push(*uid);
                        continue;
                    }
                    let (new_flags, new_keywords) = combine_flags(&message, *op, *flags, keywords);
                    if new_flags == message.flags && new_keywords == message.keywords {
                        continue;
                    }
                    record.digest.toggle(&message);
                    self.by_modseq.remove((mailbox.0, message.modseq.0, uid.0)).map_err(db)?;
                    message.flags = new_flags;
                    message.keywords = new_keywords;
                    message.modseq = modseq;
                    record.digest.toggle(&message);
                    self.messages.insert((mailbox.0, uid.0), encode(&message).as_slice()).map_err(db)?;
                    self.by_modseq.insert((mailbox.0, modseq.0, uid.0), ()).map_err(db)?;
                    changed.push((*uid, modseq));
                }
                if !changed.is_empty() {
                    record.highest_modseq = modseq;
                    self.put_mailbox(&record)?;
                }
                Ok(Ok(Applied::FlagsStored { mailbox: *mailbox, changed, modified_since }))
            }
            Command::Expunge { mailbox, uids } => {
                let Some(record) = self.find_mailbox(*mailbox)? else {
                    return Ok(Err(CommandError::MailboxUnknown(mailbox.to_string())));
                };
                let candidates = match uids {
                    Some(u) => u.clone(),
                    None => self.message_uids(*mailbox)?,
                };
                let mut doomed = Vec::new();
                for uid in candidates {
                    if let Some(m) = self.get_message(*mailbox, uid)? {
                        if m.flags.contains(SystemFlags::DELETED) {
                            doomed.push(uid);
                        }
                    }
                }
                doomed.sort();
                doomed.dedup();
                let freed = self.remove_messages(*mailbox, &doomed)?;
                self.release_quota(record.account, freed)?;
                Ok(Ok(Applied::Expunged { mailbox: *mailbox, uids: doomed }))
            }
            Command::CopyMessages { from, uids, to, remove_source } => {
                let Some(source) = self.find_mailbox(*from)? else {
                    return Ok(Err(CommandError::MailboxUnknown(from.to_string())));
                };
                let Some(target) = self.mailbox_id(source.account, to)? else {
                    return Ok(Err(CommandError::MailboxUnknown(to.to_string())));
                };
                let mut present = Vec::new();
                let mut size = 0u64;
                for uid in uids {
                    if let Some(m) = self.get_message(*from, *uid)? {
                        present.push(*uid);
                        size += m.size_bytes;
                    }
                }
                present.sort();
                present.dedup();
                let owner = self.account_by_id(source.account)?;
                if !*remove_source && owner.would_exceed_quota(size) {
                    return Ok(Err(CommandError::OverQuota(owner.address.clone())));
                }
                let pairs = self.copy_into(*from, &present, target, *remove_source)?;
                let uid_validity = self.get_mailbox(target)?.uid_validity;
                Ok(Ok(Applied::Copied { from: *from, to: target, uid_validity, pairs, removed: *remove_source }))
            }
            Command::SetSteering { primary, mx, down, reason, at_ms } => {
                let previous: Option<Steering> = match self.control.get(CONTROL_STEERING).map_err(db)? {
                    Some(v) => Some(decode("steering", v.value())?),
                    None => None,
                };
                let serial = previous.map(|p| p.serial).unwrap_or(0).wrapping_add(1).max(1);
                let steering = Steering {
                    serial,
                    primary: primary.clone(),
                    mx: mx.clone(),
                    down: down.clone(),
                    reason: reason.clone(),
                    changed_at_ms: *at_ms,
                };
                self.control.insert(CONTROL_STEERING, encode(&steering).as_slice()).map_err(db)?;
                let detail = format!(
                    "serial {serial}: mail -> {}, MX [{}]{}; {reason}",
                    primary.as_deref().unwrap_or("(none)"),
                    mx.join(", "),
                    if down.is_empty() { String::new() } else { format!(", down [{}]", down.join(", ")) },
                );
                self.append_event(ControlEventKind::DnsCommitted, primary.clone(), detail, *at_ms)?;
                Ok(Ok(Applied::SteeringSet { serial }))
            }
            Command::RecordEvent { kind, site, detail, at_ms } => {
                let id = self.append_event(*kind, site.clone(), detail.clone(), *at_ms)?;
                Ok(Ok(Applied::EventRecorded { id }))
            }
        }
    }

    /// Append to the event log, dropping the oldest beyond [`EVENTS_KEPT_MAX`].
    fn append_event(
        &mut self,
        kind: ControlEventKind,
        site: Option<String>,
        detail: String,
        at_ms: i64,
    ) -> Result<u64, StoreError> {
        let id = self.take_id(META_NEXT_EVENT_ID)?;
        let event = ControlEvent { id, at_ms, kind, site, detail };
        self.events.insert(id, encode(&event).as_slice()).map_err(db)?;
        if id > EVENTS_KEPT_MAX {
            self.events.remove(id - EVENTS_KEPT_MAX).map_err(db)?;
        }
        Ok(id)
    }

    /// UIDVALIDITY must differ from any earlier mailbox's, even when a mailbox is
    /// re-created within the same second or the proposer's clock stepped back:
    /// take the larger of the proposed value and one past the last given out.
    /// Deterministic: it depends on state only.
    /// Why `address` cannot become an account: its domain is not hosted, or the
    /// address is taken by an account or an alias.
    fn new_account_refusal(&self, address: &EmailAddress) -> Result<Option<CommandError>, StoreError> {
        let refusal = if !self.is_hosted(address)? {
            Some(CommandError::DomainUnknown(address.domain()))
        } else if self.accounts.get(address.as_str()).map_err(db)?.is_some() {
            Some(CommandError::AccountExists(address.clone()))
        } else if self.aliases.get(address.as_str()).map_err(db)?.is_some() {
            Some(CommandError::AddressIsAlias(address.clone()))
        } else {
            None
        };
        Ok(refusal)
    }

    /// Why `alias` cannot forward to `target`: the alias's domain is not hosted, the
    /// alias is an account's address, or the target is no local account.
    fn new_alias_refusal(
        &self,
        alias: &EmailAddress,
        target: &EmailAddress,
    ) -> Result<Option<CommandError>, StoreError> {
        let refusal = if !self.is_hosted(alias)? {
            Some(CommandError::DomainUnknown(alias.domain()))
        } else if self.accounts.get(alias.as_str()).map_err(db)?.is_some() {
            Some(CommandError::AddressIsAccount(alias.clone()))
        } else if self.accounts.get(target.as_str()).map_err(db)?.is_none() {
            Some(CommandError::AliasTargetNotLocal(target.clone()))
        } else {
            None
        };
        Ok(refusal)
    }

    fn is_hosted(&self, address: &EmailAddress) -> Result<bool, StoreError> {
        Ok(self.domains.get(address.domain_str()).map_err(db)?.is_some())
    }

    fn fresh_uid_validity(&mut self, proposed: UidValidity) -> Result<UidValidity, StoreError> {
        let last = self.meta_get(META_LAST_UID_VALIDITY)?;
        let value = UidValidity(u32::try_from(u64::from(proposed.0).max(last + 1)).unwrap_or(u32::MAX));
        self.meta.insert(META_LAST_UID_VALIDITY, value.0 as u64).map_err(db)?;
        Ok(value)
    }

    fn find_mailbox(&self, id: MailboxId) -> Result<Option<Mailbox>, StoreError> {
        let v = self.mailboxes.get(id.0).map_err(db)?;
        v.map(|v| decode("mailbox", v.value())).transpose()
    }

    fn account_by_id(&self, id: AccountId) -> Result<Account, StoreError> {
        let address = self
            .account_ids
            .get(id.0)
            .map_err(db)?
            .map(|v| v.value().to_string())
            .ok_or_else(|| StoreError::Corrupt(format!("mailbox owner {id} has no account")))?;
        let address = EmailAddress::parse(&address).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.get_account(&address)?.ok_or_else(|| StoreError::Corrupt(format!("account index names missing {address}")))
    }

    fn release_quota(&mut self, account: AccountId, freed: u64) -> Result<(), StoreError> {
        if freed > 0 {
            let mut owner = self.account_by_id(account)?;
            assert!(owner.used_bytes >= freed, "account {} frees more than it used", owner.address);
            owner.used_bytes -= freed;
            self.put_account(&owner)?;
        }
        Ok(())
    }

    fn get_message(&self, mailbox: MailboxId, uid: Uid) -> Result<Option<Message>, StoreError> {
        let v = self.messages.get((mailbox.0, uid.0)).map_err(db)?;
        v.map(|v| decode("message", v.value())).transpose()
    }

    fn message_uids(&self, mailbox: MailboxId) -> Result<Vec<Uid>, StoreError> {
        let mut out = Vec::new();
        for row in self.messages.range((mailbox.0, 0)..=(mailbox.0, u32::MAX)).map_err(db)? {
            let (k, _) = row.map_err(db)?;
            out.push(Uid(k.value().1));
        }
        Ok(out)
    }

    fn mailbox_names_of(&self, account: AccountId) -> Result<Vec<(String, MailboxId)>, StoreError> {
        let mut out = Vec::new();
        for row in self.mailbox_names.range((account.0, "")..(account.0 + 1, "")).map_err(db)? {
            let (k, v) = row.map_err(db)?;
            out.push((k.value().1.to_string(), MailboxId(v.value())));
        }
        Ok(out)
    }

    /// Copy messages (in UID order) into `target`, optionally removing them from
    /// the source; returns (source uid, new uid) pairs. Quota moves with MOVE.
    fn copy_into(
        &mut self,
        from: MailboxId,
        uids: &[Uid],
        target: MailboxId,
        remove_source: bool,
    ) -> Result<Vec<(Uid, Uid)>, StoreError> {
        let mut pairs = Vec::with_capacity(uids.len());
        let mut added = 0u64;
        for uid in uids {
            let Some(m) = self.get_message(from, *uid)? else { continue };
            let body = maildr_types::BlobRef { hash: m.body, size_bytes: m.size_bytes };
            let new_uid = self.append_message(target, &body, m.flags, &m.keywords, m.internal_date)?;
            added += m.size_bytes;
            pairs.push((*uid, new_uid));
        }
        let source = self.get_mailbox(from)?;
        let mut owner = self.account_by_id(source.account)?;
        owner.used_bytes += added;
        self.put_account(&owner)?;
        if remove_source {
            let moved: Vec<Uid> = pairs.iter().map(|(s, _)| *s).collect();
            let freed = self.remove_messages(from, &moved)?;
            self.release_quota(source.account, freed)?;
        }
        Ok(pairs)
    }

    /// Remove messages from a mailbox; returns the bytes freed. Callers adjust quota.
    fn remove_messages(&mut self, mailbox_id: MailboxId, uids: &[Uid]) -> Result<u64, StoreError> {
        if uids.is_empty() {
            return Ok(0);
        }
        let mut mailbox = self.get_mailbox(mailbox_id)?;
        let mut freed = 0;
        let mut removed = Vec::with_capacity(uids.len());
        for uid in uids {
            let Some(message) = self.get_message(mailbox_id, *uid)? else { continue };
            self.messages.remove((mailbox_id.0, uid.0)).map_err(db)?;
            self.by_modseq.remove((mailbox_id.0, message.modseq.0, uid.0)).map_err(db)?;
            mailbox.digest.toggle(&message);
            mailbox.message_count -= 1;
            mailbox.size_bytes -= message.size_bytes;
            freed += message.size_bytes;
            self.release_blob(&message.body)?;
            removed.push(*uid);
        }
        // An expunge is a change too: CONDSTORE/QRESYNC clients see it by MODSEQ,
        // and QRESYNC by the UIDs recorded with it (RFC 7162 §3.2).
        let before = mailbox.highest_modseq;
        mailbox.highest_modseq = ModSeq(before.0 + 1);
        self.put_mailbox(&mailbox)?;
        self.record_expunged(mailbox_id, before, mailbox.highest_modseq, &removed)?;
        Ok(freed)
    }

    /// Remember `uids` as expunged at `modseq`, then prune the mailbox's oldest
    /// rows beyond [`EXPUNGED_KEPT_PER_MAILBOX_MAX`]. A mailbox without a record
    /// (created before records were kept) starts one that is complete only above
    /// `before`, the MODSEQ it had until now.
    fn record_expunged(
        &mut self,
        mailbox: MailboxId,
        before: ModSeq,
        modseq: ModSeq,
        uids: &[Uid],
    ) -> Result<(), StoreError> {
        if uids.is_empty() {
            return Ok(());
        }
        let mut log = match self.expunge_logs.get(mailbox.0).map_err(db)? {
            Some(v) => decode("expunge log", v.value())?,
            None => ExpungeLog { kept: 0, complete_above: before },
        };
        for uid in uids {
            self.expunged.insert((mailbox.0, modseq.0, uid.0), ()).map_err(db)?;
        }
        log.kept += uids.len() as u64;
        if log.kept > EXPUNGED_KEPT_PER_MAILBOX_MAX {
            let excess = usize::try_from(log.kept - EXPUNGED_KEPT_PER_MAILBOX_MAX).unwrap_or(usize::MAX);
            let mut oldest = Vec::with_capacity(excess.min(uids.len()));
            for row in
                self.expunged.range((mailbox.0, 0, 0)..=(mailbox.0, u64::MAX, u32::MAX)).map_err(db)?.take(excess)
            {
                oldest.push(row.map_err(db)?.0.value());
            }
            for key in &oldest {
                self.expunged.remove(*key).map_err(db)?;
                log.complete_above = log.complete_above.max(ModSeq(key.1));
            }
            log.kept -= oldest.len() as u64;
        }
        self.expunge_logs.insert(mailbox.0, encode(&log).as_slice()).map_err(db)?;
        Ok(())
    }

    /// Drop the expunge record of a mailbox that is going away.
    fn forget_expunged(&mut self, mailbox: MailboxId) -> Result<(), StoreError> {
        self.expunged.retain_in((mailbox.0, 0, 0)..=(mailbox.0, u64::MAX, u32::MAX), |_, _| false).map_err(db)?;
        self.expunge_logs.remove(mailbox.0).map_err(db)?;
        Ok(())
    }

    /// The UID under which a delivery with this retry key landed in `inbox`, if
    /// that message is still there.
    fn already_delivered(&self, inbox: MailboxId, retry_key: Option<&str>) -> Result<Option<Uid>, StoreError> {
        let Some(key) = retry_key else { return Ok(None) };
        let Some(uid) = self.delivered_ids.get((inbox.0, key)).map_err(db)?.map(|v| v.value()) else {
            return Ok(None);
        };
        let present = self.messages.get((inbox.0, uid)).map_err(db)?.is_some();
        Ok(present.then_some(Uid(uid)))
    }

    fn remove_all_messages(&mut self, mailbox: MailboxId) -> Result<u64, StoreError> {
        let uids = self.message_uids(mailbox)?;
        self.remove_messages(mailbox, &uids)
    }

    /// The INBOX of each (deduplicated) local recipient, checked: every account
    /// exists and has room for `size` more bytes.
    #[allow(clippy::type_complexity)]
    fn inbox_targets(
        &self,
        recipients: &[EmailAddress],
        size: u64,
    ) -> Result<Result<Vec<(Account, MailboxId)>, CommandError>, StoreError> {
        let mut unique: Vec<&EmailAddress> = recipients.iter().collect();
        unique.sort();
        unique.dedup();
        let mut targets = Vec::with_capacity(unique.len());
        for address in unique {
            let Some(account) = self.get_account(address)? else {
                return Ok(Err(CommandError::AccountUnknown(address.clone())));
            };
            if account.would_exceed_quota(size) {
                return Ok(Err(CommandError::OverQuota(address.clone())));
            }
            let inbox = self
                .mailbox_id(account.id, &MailboxName::inbox())?
                .ok_or_else(|| StoreError::Corrupt(format!("account {} has no INBOX", account.address)))?;
            targets.push((account, inbox));
        }
        Ok(Ok(targets))
    }

    /// Append one body to each checked INBOX (once per retry key).
    fn place(
        &mut self,
        targets: Vec<(Account, MailboxId)>,
        body: &maildr_types::BlobRef,
        flags: SystemFlags,
        internal_date: maildr_types::UnixSeconds,
        retry_key: Option<&str>,
    ) -> Result<Vec<Placement>, StoreError> {
        let mut placements = Vec::with_capacity(targets.len());
        for (mut account, inbox) in targets {
            if let Some(uid) = self.already_delivered(inbox, retry_key)? {
                // A retry of a delivery that did land: the sender gets its 250,
                // the mailbox does not get a second copy.
                placements.push(Placement { account: account.address.clone(), mailbox: inbox, uid });
                continue;
            }
            let uid = self.append_message(inbox, body, flags, &[], internal_date)?;
            if let Some(key) = retry_key {
                self.delivered_ids.insert((inbox.0, key), uid.0).map_err(db)?;
            }
            account.used_bytes += body.size_bytes;
            self.put_account(&account)?;
            placements.push(Placement { account: account.address.clone(), mailbox: inbox, uid });
        }
        Ok(placements)
    }

    fn get_queued(&self, id: u64) -> Result<Option<QueuedMessage>, StoreError> {
        let v = self.outbound.get(id).map_err(db)?;
        v.map(|v| decode("queued message", v.value())).transpose()
    }

    /// A queued message leaves the queue: its row, its retry key and its hold on
    /// the body.
    fn remove_queued(&mut self, message: &QueuedMessage) -> Result<(), StoreError> {
        self.outbound.remove(message.id).map_err(db)?;
        if let Some(key) = message.retry_key.as_deref() {
            self.outbound_keys.remove(key).map_err(db)?;
        }
        self.release_blob(&message.body.hash)
    }

    /// One more reference to a body (a queued message holds its body).
    fn hold_blob(&mut self, body: &maildr_types::BlobHash) -> Result<(), StoreError> {
        let refs = self.blob_refs.get(body.0.as_slice()).map_err(db)?.map(|v| v.value()).unwrap_or(0);
        self.blob_refs.insert(body.0.as_slice(), refs + 1).map_err(db)?;
        Ok(())
    }

    fn release_blob(&mut self, body: &maildr_types::BlobHash) -> Result<(), StoreError> {
        let refs = self.blob_refs.get(body.0.as_slice()).map_err(db)?.map(|v| v.value()).unwrap_or(0);
        assert!(refs > 0, "blob {body} referenced by a message has no reference count");
        if refs == 1 {
            // The file stays until a sweep removes unreferenced blobs; a replica
            // that is behind may still need to serve it.
            self.blob_refs.remove(body.0.as_slice()).map_err(db)?;
        } else {
            self.blob_refs.insert(body.0.as_slice(), refs - 1).map_err(db)?;
        }
        Ok(())
    }

    fn meta_get(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.meta.get(key).map_err(db)?.map(|v| v.value()).unwrap_or(0))
    }

    fn meta_add(&mut self, key: &'static str, n: u64) -> Result<(), StoreError> {
        if n > 0 {
            let now = self.meta_get(key)?;
            self.meta.insert(key, now + n).map_err(db)?;
        }
        Ok(())
    }

    fn take_id(&mut self, key: &'static str) -> Result<u64, StoreError> {
        let id = self.meta_get(key)?;
        assert!(id > 0, "id counters start at 1 and only grow");
        self.meta.insert(key, id + 1).map_err(db)?;
        Ok(id)
    }

    fn get_account(&self, address: &EmailAddress) -> Result<Option<Account>, StoreError> {
        let v = self.accounts.get(address.as_str()).map_err(db)?;
        v.map(|v| decode("account", v.value())).transpose()
    }

    fn put_account(&mut self, account: &Account) -> Result<(), StoreError> {
        self.accounts.insert(account.address.as_str(), encode(account).as_slice()).map_err(db)?;
        Ok(())
    }

    fn get_alias(&self, address: &EmailAddress) -> Result<Option<Alias>, StoreError> {
        let v = self.aliases.get(address.as_str()).map_err(db)?;
        v.map(|v| decode("alias", v.value())).transpose()
    }

    /// Number of keys `local@domain` in an address-keyed table.
    fn count_in_domain(table: &Table<'txn, &'static str, &'static [u8]>, domain: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for row in table.iter().map_err(db)? {
            let (k, _) = row.map_err(db)?;
            if k.value().rsplit_once('@').is_some_and(|(_, d)| d == domain) {
                n += 1;
            }
        }
        Ok(n)
    }

    fn mailbox_id(&self, account: AccountId, name: &MailboxName) -> Result<Option<MailboxId>, StoreError> {
        Ok(self.mailbox_names.get((account.0, name.as_str())).map_err(db)?.map(|v| MailboxId(v.value())))
    }

    fn get_mailbox(&self, id: MailboxId) -> Result<Mailbox, StoreError> {
        let v = self
            .mailboxes
            .get(id.0)
            .map_err(db)?
            .ok_or_else(|| StoreError::Corrupt(format!("mailbox {id} missing")))?;
        decode("mailbox", v.value())
    }

    fn put_mailbox(&mut self, mailbox: &Mailbox) -> Result<(), StoreError> {
        self.mailboxes.insert(mailbox.id.0, encode(mailbox).as_slice()).map_err(db)?;
        Ok(())
    }

    fn create_mailbox(
        &mut self,
        account: AccountId,
        name: MailboxName,
        special_use: Option<maildr_types::SpecialUse>,
        uid_validity: UidValidity,
    ) -> Result<MailboxId, StoreError> {
        let id = MailboxId(self.take_id(META_NEXT_MAILBOX_ID)?);
        let mailbox = Mailbox {
            id,
            account,
            name: name.clone(),
            special_use,
            subscribed: true,
            uid_validity,
            uid_next: Uid(1),
            highest_modseq: ModSeq(1),
            message_count: 0,
            size_bytes: 0,
            digest: MailboxDigest::default(),
        };
        self.put_mailbox(&mailbox)?;
        self.mailbox_names.insert((account.0, name.as_str()), id.0).map_err(db)?;
        // Recorded from the start: every expunge of this mailbox is known.
        let log = ExpungeLog { kept: 0, complete_above: ModSeq(0) };
        self.expunge_logs.insert(id.0, encode(&log).as_slice()).map_err(db)?;
        Ok(id)
    }

    fn append_message(
        &mut self,
        mailbox_id: MailboxId,
        body: &maildr_types::BlobRef,
        flags: maildr_types::SystemFlags,
        keywords: &[String],
        internal_date: maildr_types::UnixSeconds,
    ) -> Result<Uid, StoreError> {
        let mut mailbox = self.get_mailbox(mailbox_id)?;
        let uid = mailbox.uid_next;
        let modseq = ModSeq(mailbox.highest_modseq.0 + 1);
        assert!(modseq > mailbox.highest_modseq, "MODSEQ of mailbox {mailbox_id} must only grow");
        assert!(uid.0 < u32::MAX, "UID space of mailbox {mailbox_id} exhausted");
        let message = Message {
            uid,
            modseq,
            flags,
            keywords: normalise_keywords(keywords.to_vec()),
            internal_date,
            size_bytes: body.size_bytes,
            body: body.hash,
        };
        let key = (mailbox_id.0, uid.0);
        assert!(self.messages.get(key).map_err(db)?.is_none(), "UID {uid} reused in mailbox {mailbox_id}");
        self.messages.insert(key, encode(&message).as_slice()).map_err(db)?;
        self.by_modseq.insert((mailbox_id.0, modseq.0, uid.0), ()).map_err(db)?;
        mailbox.uid_next = Uid(uid.0 + 1);
        mailbox.highest_modseq = modseq;
        mailbox.message_count += 1;
        mailbox.size_bytes += body.size_bytes;
        mailbox.digest.toggle(&message);
        self.put_mailbox(&mailbox)?;
        let refs = self.blob_refs.get(body.hash.0.as_slice()).map_err(db)?.map(|v| v.value()).unwrap_or(0);
        self.blob_refs.insert(body.hash.0.as_slice(), refs + 1).map_err(db)?;
        Ok(uid)
    }

    fn remove_account(&mut self, account: &Account) -> Result<(), StoreError> {
        for (name, id) in self.mailbox_names_of(account.id)? {
            self.remove_all_messages(id)?;
            self.forget_expunged(id)?;
            self.mailboxes.remove(id.0).map_err(db)?;
            self.mailbox_names.remove((account.id.0, name.as_str())).map_err(db)?;
        }
        // Aliases pointing only at this account go with it; others lose the target.
        let mut touched = Vec::new();
        for row in self.aliases.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            let alias: Alias = decode("alias", v.value())?;
            if alias.targets.contains(&account.address) {
                touched.push(alias);
            }
        }
        for mut alias in touched {
            alias.targets.retain(|t| t != &account.address);
            if alias.targets.is_empty() {
                self.aliases.remove(alias.address.as_str()).map_err(db)?;
            } else {
                self.aliases.insert(alias.address.as_str(), encode(&alias).as_slice()).map_err(db)?;
            }
        }
        self.accounts.remove(account.address.as_str()).map_err(db)?;
        self.account_ids.remove(account.id.0).map_err(db)?;
        Ok(())
    }
}

fn normalise_keywords(mut keywords: Vec<String>) -> Vec<String> {
    keywords.sort();
    keywords.dedup();
    keywords
}

/// The flags and keywords a message has after a STORE.
fn combine_flags(message: &Message, op: FlagOp, flags: SystemFlags, keywords: &[String]) -> (SystemFlags, Vec<String>) {
    match op {
        FlagOp::Replace => (flags, normalise_keywords(keywords.to_vec())),
        FlagOp::Add => {
            let mut k = message.keywords.clone();
            k.extend(keywords.iter().cloned());
            (SystemFlags(message.flags.0 | flags.0), normalise_keywords(k))
        }
        FlagOp::Remove => {
            let k = message.keywords.iter().filter(|x| !keywords.contains(x)).cloned().collect();
            (SystemFlags(message.flags.0 & !flags.0), k)
        }
    }
}
