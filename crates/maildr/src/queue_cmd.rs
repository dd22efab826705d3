//! `maildr queue`: the replicated outbound queue, seen and steered by an operator.
//!
//! Like `maildr cluster`, these commands talk to the running site named by the
//! config over the replication channel (its cluster certificate and secret); the
//! queue is replicated state, so any member answers the same, and changes go
//! through the write path like every other admin command.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use maildr_api_types::queue::QueueList;
use maildr_cluster::ops::ControlClient;
use maildr_config::SiteConfig;
use maildr_store::{Applied, Command, QueuedMessage};

#[derive(Subcommand)]
pub enum QueueAction {
    /// Every queued message: id, sender, recipients still waiting, attempts, next
    /// attempt, expiry and the last error per recipient.
    List {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON for scripts: {"total": N, "messages": [...]}.
        #[arg(long)]
        json: bool,
    },
    /// Make a queued message (or every one, with --all) due now.
    Retry {
        #[arg(long)]
        config: PathBuf,
        /// The queue id (from `queue list`).
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<u64>,
        #[arg(long)]
        all: bool,
    },
    /// Remove a queued message without delivering it (its sender is not told).
    Delete {
        #[arg(long)]
        config: PathBuf,
        /// The queue id (from `queue list`).
        id: u64,
    },
}

pub async fn run(action: QueueAction) -> Result<()> {
    match action {
        QueueAction::List { config, json } => {
            let client = client(&config)?;
            let maildr_cluster::ops::QueueSnapshot { messages, total, left } = client.queue(client.local()).await?;
            if json {
                // The admin API's `GET /api/queue` shape.
                let list = QueueList {
                    total,
                    messages: messages.iter().map(maildr_api::queued_message_view).collect(),
                    left: maildr_api::queue_left_view(&left),
                };
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_table(&messages, total);
                println!(
                    "since the store began: {} recipient(s) delivered, {} bounced; {} message(s) finished, {} deleted",
                    left.recipients_delivered, left.recipients_bounced, left.messages_finished, left.messages_deleted
                );
            }
            Ok(())
        }
        QueueAction::Retry { config, id, all } => {
            let client = client(&config)?;
            let at_ms = maildr_types::system_clock().now_ms();
            let id = if all { None } else { id };
            match client.write(Command::RetryQueued { id, at_ms }).await? {
                Ok(Applied::QueueRetried { count }) => {
                    println!("{count} queued message(s) due now");
                    Ok(())
                }
                Ok(other) => bail!("unexpected answer: {other:?}"),
                Err(refused) => bail!("refused: {refused}"),
            }
        }
        QueueAction::Delete { config, id } => {
            let client = client(&config)?;
            match client.write(Command::RemoveQueued { id }).await? {
                Ok(_) => {
                    println!("queued message {id} removed");
                    Ok(())
                }
                Err(refused) => bail!("refused: {refused}"),
            }
        }
    }
}

fn client(config: &std::path::Path) -> Result<ControlClient> {
    let config = SiteConfig::load(config)?;
    if config.cluster.members.is_empty() {
        bail!("{} names no [[cluster.members]]: `maildr queue` talks to a cluster member", config.site.name);
    }
    ControlClient::new(config).context("the site's cluster credentials")
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|d| d.to_rfc3339()).unwrap_or_else(|| ms.to_string())
}

fn print_table(messages: &[QueuedMessage], total: u64) {
    if messages.is_empty() {
        println!("the outbound queue is empty");
        return;
    }
    println!("{:>8}  {:<28} {:>8}  {:<25}  recipients", "id", "from", "attempts", "next attempt");
    for m in messages {
        let from = m.from.as_ref().map(|a| a.to_string()).unwrap_or_else(|| "<>".into());
        println!("{:>8}  {:<28} {:>8}  {:<25}", m.id, from, m.attempts, rfc3339(m.next_attempt_at_ms));
        for r in &m.recipients {
            match &r.last_error {
                Some(e) => println!("{:>10}{} ({e})", "", r.address),
                None => println!("{:>10}{}", "", r.address),
            }
        }
    }
    if total > messages.len() as u64 {
        println!("... {} listed of {total}", messages.len());
    }
}
