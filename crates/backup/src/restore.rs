//! Restores: messages of an account back into the live cluster, or a whole site
//! rebuilt from the targets alone.
//!
//! An account restore rebuilds the state at the moment asked for in a scratch
//! directory, then writes the chosen messages back through the running site's
//! normal write path (the operations client: each body stored on two sites, each
//! message an `Append` committed by a quorum) into mailboxes that do not exist yet,
//! keeping flags, keywords and internal dates. It never changes or removes what is
//! there now: if a destination mailbox exists, nothing is written.
//!
//! A site restore writes the rebuilt store and every body it refers to into an
//! empty data directory; started without `[[cluster.members]]` it serves them.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use futures_util::{stream, StreamExt};
use maildr_api_types::{MailboxRestored, RestoreReport};
use maildr_cluster::ops::ControlClient;
use maildr_store::{Command, Message, Store};
use maildr_types::{BlobHash, EmailAddress, MailboxName, UidValidity, UnixSeconds};
use sha2::Digest as _;

use crate::manifest::show_time;
use crate::rebuild::{open_blocking, rebuild, Point, Rebuilt};
use crate::{BackupError, Backups, Target};

/// Bodies fetched from the target at once while restoring.
pub const BODY_FETCHES_IN_FLIGHT: usize = 16;
/// Restored bodies stored through the cluster at once: each call is a new
/// authenticated connection to the site, which accepts only a few from one
/// address while they are still authenticating (`UNAUTHENTICATED_PER_SOURCE_MAX`,
/// 16, shared with everything else that address does); a restore under load once
/// met that limit with 16 at once.
pub const BODY_STORES_IN_FLIGHT: usize = 4;

/// Where restored messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// `Restored <time>` in the same account (with the source mailbox's name below
    /// it when more than one mailbox is restored).
    Default,
    /// This mailbox of the same account (with source names below it when more than
    /// one mailbox is restored).
    Mailbox(MailboxName),
    /// `Restored <time>` in another account (with the source mailbox's name below
    /// it when more than one mailbox is restored): every account already has an
    /// INBOX, Sent, …, and a restore never writes into an existing mailbox.
    Account(EmailAddress),
}

/// An account restore as asked.
#[derive(Debug, Clone)]
pub struct AccountRestore {
    pub account: EmailAddress,
    /// The moment to restore, ms since the epoch.
    pub at_ms: u64,
    /// Only this mailbox (else every mailbox of the account).
    pub mailbox: Option<MailboxName>,
    pub into: Destination,
}

fn new_report(rebuilt: &Rebuilt) -> RestoreReport {
    RestoreReport {
        backup: rebuilt.backup.id.to_string(),
        target: rebuilt.target.clone(),
        applied_index: rebuilt.applied_index,
        stands_at: show_time(rebuilt.stands_at_ms),
        stands_at_ms: rebuilt.stands_at_ms,
        archived_entries_replayed: rebuilt.replayed,
        messages: 0,
        bytes: 0,
        mailboxes: Vec::new(),
        short_of_target: rebuilt.short_of_target.clone(),
        new_cluster: None,
    }
}

/// Read one body from a target, checking it is the body it claims to be.
pub async fn fetch_body(backups: &Backups, target: &Target, hash: &BlobHash) -> Result<Vec<u8>, BackupError> {
    let key = backups.key.body_object(hash);
    let sealed = target
        .get(&key)
        .await?
        .ok_or_else(|| BackupError::Refused(format!("target {}: body object {key} is missing", target.name())))?;
    let body = backups.key.open(&key, &sealed)?;
    if sha2::Sha256::digest(&body).as_slice() != hash.0 {
        return Err(BackupError::Refused(format!("target {}: body object {key} holds other content", target.name())));
    }
    Ok(body)
}

/// Restore messages of an account at a moment into the running cluster that
/// `client`'s site belongs to.
pub async fn restore_account(
    backups: &Backups,
    client: &ControlClient,
    request: &AccountRestore,
    scratch: &Path,
) -> Result<RestoreReport, BackupError> {
    let rebuilt = rebuild(backups, &Point::At(request.at_ms), scratch).await?;
    let target = backups.target_named(&rebuilt.target)?;
    let store = open_blocking(scratch).await?;
    let plan = plan_account(&store, request, &rebuilt)?;
    drop(store);

    // Nothing is written if any destination exists now.
    let live = client
        .digests(client.local(), 0, 0)
        .await
        .map_err(|e| BackupError::Refused(format!("reading the live mailboxes: {e}")))?;
    let existing: BTreeSet<(String, String)> =
        live.mailboxes.iter().map(|m| (m.account_address.clone(), m.name.clone())).collect();
    for (_, into_account, into_name, _) in &plan {
        if existing.contains(&(into_account.to_string(), into_name.to_string())) {
            return Err(BackupError::Refused(format!(
                "mailbox {into_name} of {into_account} exists; restores never write into an existing mailbox (choose \
                 --into-mailbox)"
            )));
        }
    }

    let mut report = new_report(&rebuilt);
    for (from, into_account, into_name, messages) in plan {
        let uid_validity = UidValidity::proposed_at(UnixSeconds(i64::try_from(crate::now_ms() / 1000).unwrap_or(0)));
        write(client, Command::CreateMailbox { account: into_account.clone(), name: into_name.clone(), uid_validity })
            .await?;
        let mut restored = MailboxRestored {
            from: from.to_string(),
            account: into_account.to_string(),
            into: into_name.to_string(),
            messages: 0,
            bytes: 0,
        };
        let hashes: Vec<BlobHash> = messages.iter().map(|m| m.body).collect();
        let mut bodies = stream::iter(hashes)
            .map(|hash| {
                let target = target.clone();
                async move {
                    let body = fetch_body(backups, &target, &hash).await?;
                    let size = body.len() as u64;
                    let stored = client
                        .store_body(body)
                        .await
                        .map_err(|e| BackupError::Refused(format!("storing a restored body: {e}")))?;
                    Ok::<_, BackupError>((stored, size))
                }
            })
            .buffered(BODY_STORES_IN_FLIGHT);
        for message in &messages {
            let Some(stored) = bodies.next().await else { break };
            let (body, size) = stored?;
            write(
                client,
                Command::Append {
                    account: into_account.clone(),
                    mailbox: into_name.clone(),
                    body,
                    flags: message.flags,
                    keywords: message.keywords.clone(),
                    internal_date: message.internal_date,
                },
            )
            .await?;
            restored.messages += 1;
            restored.bytes += size;
        }
        report.messages += restored.messages;
        report.bytes += restored.bytes;
        tracing::info!(from = %restored.from, into = %restored.into, messages = restored.messages, "mailbox restored");
        report.mailboxes.push(restored);
    }
    Ok(report)
}

type Planned = (MailboxName, EmailAddress, MailboxName, Vec<Message>);

/// Which mailboxes of the rebuilt store go where, with their messages in UID order.
fn plan_account(store: &Store, request: &AccountRestore, rebuilt: &Rebuilt) -> Result<Vec<Planned>, BackupError> {
    let account = store.account(&request.account)?.ok_or_else(|| {
        BackupError::Refused(format!("{} had no account at {}", request.account, show_time(rebuilt.stands_at_ms)))
    })?;
    let mut mailboxes = store.mailboxes(account.id)?;
    if let Some(only) = &request.mailbox {
        mailboxes.retain(|m| &m.name == only);
        if mailboxes.is_empty() {
            return Err(BackupError::Refused(format!(
                "{} had no mailbox {only} at {}",
                request.account,
                show_time(rebuilt.stands_at_ms)
            )));
        }
    }
    let several = mailboxes.len() > 1;
    let stamp = crate::manifest::time_of(request.at_ms).format("%Y-%m-%d %H:%M:%S").to_string();
    let mut plan = Vec::new();
    for mailbox in mailboxes {
        let (into_account, into_name) = match &request.into {
            Destination::Account(other) if several => (other.clone(), format!("Restored {stamp}/{}", mailbox.name)),
            Destination::Account(other) => (other.clone(), format!("Restored {stamp}")),
            Destination::Mailbox(name) if several => (request.account.clone(), format!("{name}/{}", mailbox.name)),
            Destination::Mailbox(name) => (request.account.clone(), name.to_string()),
            Destination::Default if several => (request.account.clone(), format!("Restored {stamp}/{}", mailbox.name)),
            Destination::Default => (request.account.clone(), format!("Restored {stamp}")),
        };
        let into_name = MailboxName::parse(&into_name)
            .map_err(|e| BackupError::Refused(format!("destination mailbox {into_name:?}: {e}")))?;
        let mut messages = store.messages(mailbox.id)?;
        messages.sort_by_key(|m| m.uid);
        plan.push((mailbox.name, into_account, into_name, messages));
    }
    Ok(plan)
}

async fn write(client: &ControlClient, command: Command) -> Result<(), BackupError> {
    let what = command.kind();
    match client.write(command).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(refused)) => Err(BackupError::Refused(format!("the cluster refused {what}: {refused}"))),
        Err(e) => Err(BackupError::Refused(format!("{what} not committed: {e}"))),
    }
}

/// Rebuild a whole site into the empty data directory `data_dir`: the store at
/// `point` and every body it refers to.
pub async fn restore_site(backups: &Backups, point: &Point, data_dir: &Path) -> Result<RestoreReport, BackupError> {
    if data_dir.exists()
        && std::fs::read_dir(data_dir)
            .map_err(|e| BackupError::Io(format!("{}: {e}", data_dir.display())))?
            .next()
            .is_some()
    {
        return Err(BackupError::Refused(format!(
            "{} is not empty; a site is restored into an empty directory",
            data_dir.display()
        )));
    }
    let rebuilt = rebuild(backups, point, data_dir).await?;
    let target = backups.target_named(&rebuilt.target)?;
    let store = open_blocking(data_dir).await?;
    let wanted = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || store.referenced_blobs())
            .await
            .map_err(|e| BackupError::Io(e.to_string()))??
    };
    let mut report = new_report(&rebuilt);
    let mut fetched = stream::iter(wanted)
        .map(|hash| {
            let target = target.clone();
            let store = Arc::clone(&store);
            async move {
                let body = fetch_body(backups, &target, &hash).await?;
                let size = body.len() as u64;
                tokio::task::spawn_blocking(move || store.blobs().put(&body))
                    .await
                    .map_err(|e| BackupError::Io(e.to_string()))??;
                Ok::<_, BackupError>(size)
            }
        })
        .buffer_unordered(BODY_FETCHES_IN_FLIGHT);
    while let Some(size) = fetched.next().await {
        report.bytes += size?;
    }
    let summary = {
        let store = Arc::clone(&store);
        tokio::task::spawn_blocking(move || -> Result<Vec<MailboxRestored>, BackupError> {
            let accounts = store.accounts(None)?;
            Ok(store
                .all_mailboxes()?
                .into_iter()
                .map(|m| {
                    let account =
                        accounts.iter().find(|a| a.id == m.account).map_or_else(String::new, |a| a.address.to_string());
                    MailboxRestored {
                        from: m.name.to_string(),
                        account,
                        into: m.name.to_string(),
                        messages: m.message_count,
                        bytes: m.size_bytes,
                    }
                })
                .collect())
        })
        .await
        .map_err(|e| BackupError::Io(e.to_string()))??
    };
    report.messages = summary.iter().map(|m| m.messages).sum();
    report.mailboxes = summary;
    Ok(report)
}
