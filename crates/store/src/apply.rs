//! The one function that changes mail state: [`Tables::apply`].
//!
//! Every command first checks all its preconditions, then writes. A refused command
//! therefore leaves the transaction untouched, which lets many commands share one
//! transaction (group commit) without savepoints. Nothing here reads a clock, draws
//! a random number or touches a file outside the database.

use maildr_types::{AccountId, EmailAddress, MailboxId, MailboxName, ModSeq, Uid, UidValidity};
use redb::{ReadableTable, Table, WriteTransaction};

use crate::command::{Applied, Command, CommandError, Placement};
use crate::model::{Account, Alias, DomainRecord, Mailbox, MailboxDigest, Message};
use crate::{
    decode, encode, StoreError, ACCOUNTS, ALIASES, BLOB_REFS, DOMAINS, MAILBOXES, MAILBOX_NAMES, MESSAGES, META,
    META_COMMANDS_APPLIED, META_LAST_UID_VALIDITY, META_NEXT_ACCOUNT_ID, META_NEXT_MAILBOX_ID,
};

type Outcome = Result<Result<Applied, CommandError>, StoreError>;

pub(crate) struct Tables<'txn> {
    meta: Table<'txn, &'static str, u64>,
    domains: Table<'txn, &'static str, &'static [u8]>,
    accounts: Table<'txn, &'static str, &'static [u8]>,
    aliases: Table<'txn, &'static str, &'static [u8]>,
    mailboxes: Table<'txn, u64, &'static [u8]>,
    mailbox_names: Table<'txn, (u64, &'static str), u64>,
    messages: Table<'txn, (u64, u32), &'static [u8]>,
    blob_refs: Table<'txn, &'static [u8], u64>,
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
            mailboxes: txn.open_table(MAILBOXES)?,
            mailbox_names: txn.open_table(MAILBOX_NAMES)?,
            messages: txn.open_table(MESSAGES)?,
            blob_refs: txn.open_table(BLOB_REFS)?,
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
                Ok(Ok(Applied::Done))
            }
            Command::AddAccount { address, password_hash, quota_bytes, uid_validity, at } => {
                if self.domains.get(address.domain_str()).map_err(db)?.is_none() {
                    return Ok(Err(CommandError::DomainUnknown(address.domain())));
                }
                if self.accounts.get(address.as_str()).map_err(db)?.is_some() {
                    return Ok(Err(CommandError::AccountExists(address.clone())));
                }
                if self.aliases.get(address.as_str()).map_err(db)?.is_some() {
                    return Ok(Err(CommandError::AddressIsAlias(address.clone())));
                }
                // UIDVALIDITY must differ from any earlier mailbox's, even when an
                // account is re-created within the same second or the proposer's
                // clock stepped back: take the larger of the proposed value and
                // one past the last given out. Deterministic: it depends on state.
                let last = self.meta_get(META_LAST_UID_VALIDITY)?;
                let uid_validity = UidValidity((uid_validity.0 as u64).max(last + 1).min(u32::MAX as u64) as u32);
                self.meta.insert(META_LAST_UID_VALIDITY, uid_validity.0 as u64).map_err(db)?;
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
                if self.domains.get(alias.domain_str()).map_err(db)?.is_none() {
                    return Ok(Err(CommandError::DomainUnknown(alias.domain())));
                }
                if self.accounts.get(alias.as_str()).map_err(db)?.is_some() {
                    return Ok(Err(CommandError::AddressIsAccount(alias.clone())));
                }
                if self.accounts.get(target.as_str()).map_err(db)?.is_none() {
                    return Ok(Err(CommandError::AliasTargetNotLocal(target.clone())));
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
            Command::Deliver { recipients, body, internal_date, flags } => {
                if recipients.is_empty() {
                    return Ok(Err(CommandError::NoRecipients));
                }
                let mut unique: Vec<&EmailAddress> = recipients.iter().collect();
                unique.sort();
                unique.dedup();
                // Check everything first: all recipients get the message or none does.
                let mut targets = Vec::with_capacity(unique.len());
                for address in unique {
                    let Some(account) = self.get_account(address)? else {
                        return Ok(Err(CommandError::AccountUnknown(address.clone())));
                    };
                    if account.would_exceed_quota(body.size_bytes) {
                        return Ok(Err(CommandError::OverQuota(address.clone())));
                    }
                    let inbox = self
                        .mailbox_id(account.id, &MailboxName::inbox())?
                        .ok_or_else(|| StoreError::Corrupt(format!("account {} has no INBOX", account.address)))?;
                    targets.push((account, inbox));
                }
                let mut placements = Vec::with_capacity(targets.len());
                for (mut account, inbox) in targets {
                    let uid = self.append_message(inbox, body, *flags, *internal_date)?;
                    account.used_bytes += body.size_bytes;
                    self.put_account(&account)?;
                    placements.push(Placement { account: account.address.clone(), mailbox: inbox, uid });
                }
                Ok(Ok(Applied::Delivered { placements }))
            }
        }
    }

    fn meta_get(&self, key: &str) -> Result<u64, StoreError> {
        Ok(self.meta.get(key).map_err(db)?.map(|v| v.value()).unwrap_or(0))
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
        Ok(id)
    }

    fn append_message(
        &mut self,
        mailbox_id: MailboxId,
        body: &maildr_types::BlobRef,
        flags: maildr_types::SystemFlags,
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
            keywords: Vec::new(),
            internal_date,
            size_bytes: body.size_bytes,
            body: body.hash,
        };
        let key = (mailbox_id.0, uid.0);
        assert!(self.messages.get(key).map_err(db)?.is_none(), "UID {uid} reused in mailbox {mailbox_id}");
        self.messages.insert(key, encode(&message).as_slice()).map_err(db)?;
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
        let mut boxes = Vec::new();
        for row in self.mailbox_names.range((account.id.0, "")..(account.id.0 + 1, "")).map_err(db)? {
            let (k, v) = row.map_err(db)?;
            boxes.push((k.value().1.to_string(), MailboxId(v.value())));
        }
        for (name, id) in boxes {
            let mut bodies = Vec::new();
            for row in self.messages.range((id.0, 0)..=(id.0, u32::MAX)).map_err(db)? {
                let (k, v) = row.map_err(db)?;
                let message: Message = decode("message", v.value())?;
                bodies.push((k.value().1, message.body));
            }
            for (uid, body) in bodies {
                self.messages.remove((id.0, uid)).map_err(db)?;
                let refs = self.blob_refs.get(body.0.as_slice()).map_err(db)?.map(|v| v.value()).unwrap_or(0);
                assert!(refs > 0, "blob {body} referenced by a message has no reference count");
                if refs == 1 {
                    // The file stays until a sweep removes unreferenced blobs; a
                    // replica that is behind may still need to serve it.
                    self.blob_refs.remove(body.0.as_slice()).map_err(db)?;
                } else {
                    self.blob_refs.insert(body.0.as_slice(), refs - 1).map_err(db)?;
                }
            }
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
        Ok(())
    }
}
