//! `maildr bench backup`: how fast a mailbox is backed up and restored.
//!
//! Fills a private store in a temporary directory with one mailbox of `--messages`
//! messages, then takes a full backup (every body uploaded), an incremental one
//! (nothing new: only the state and the manifest), and restores the whole site
//! from the target, printing messages/s and MB/s for each. The target is a
//! temporary directory, or the `[[backup.targets]]` of `--config` (an S3 bucket,
//! say), beside a plain `cp -a` of the site's files with one `sync` in the same
//! run. It prints figures; it decides nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use maildr_backup::rebuild::Point;
use maildr_backup::{BackupId, BackupKey, Backups, Target};
use maildr_store::Command;
use maildr_types::{Clock as _, EmailAddress, SystemFlags};

#[derive(Args)]
pub struct BackupBench {
    /// Messages in the mailbox.
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 5120)]
    size: usize,
    /// Back up to this site config's targets with its key instead of a temporary directory.
    #[arg(long)]
    config: Option<PathBuf>,
}

pub async fn run(args: BackupBench) -> Result<()> {
    anyhow::ensure!(args.messages > 0, "--messages must be positive");
    let work = tempfile::tempdir().context("a temporary directory")?;
    let site_dir = work.path().join("site");
    let reader = EmailAddress::parse("reader@bench.test")?;
    let store = crate::bench::bench_store(&site_dir, reader.as_str(), "bench-pw")?;
    let fill = Instant::now();
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for i in 0..args.messages {
        let mut body = format!(
            "From: Sender {i} <sender{}@example.test>\r\nTo: reader@bench.test\r\nSubject: message number {i}\r\n\
             Message-ID: <{i}@bench.test>\r\n\r\n",
            i % 97
        )
        .into_bytes();
        while body.len() < args.size {
            body.extend_from_slice(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n");
        }
        bytes += body.len() as u64;
        let blob = store.blobs().put(&body)?;
        let flags = if i % 3 == 0 { SystemFlags(SystemFlags::SEEN) } else { SystemFlags::default() };
        batch.push(Command::Deliver {
            recipients: vec![reader.clone()],
            body: blob,
            internal_date: maildr_types::SystemClock.now(),
            flags,
            retry_key: None,
        });
        if batch.len() == 1000 {
            store.apply_batch(&std::mem::take(&mut batch))?;
        }
    }
    store.apply_batch(&batch)?;
    drop(store);
    println!(
        "filled one mailbox with {} messages ({:.1} MB) in {:.1} s",
        args.messages,
        mb(bytes),
        fill.elapsed().as_secs_f64()
    );

    let mut config = match &args.config {
        Some(path) => maildr_config::SiteConfig::load(path)?,
        None => maildr_config::SiteConfig::default(),
    };
    config.site.data_dir = site_dir.clone();
    config.cluster.members.clear();
    let backups = match &args.config {
        Some(_) => Backups::from_config(&config)?,
        None => Backups {
            site: "bench".into(),
            key: Arc::new(BackupKey::random()?),
            targets: vec![Target::dir("bench", &work.path().join("target"))],
            work_dir: work.path().join("backup-work"),
            config: config.backup.clone(),
        },
    };
    let targets: Vec<String> = backups.targets.iter().map(|t| format!("{} ({})", t.name(), t.kind())).collect();
    println!("targets: {}", targets.join(", "));
    println!("{:<22} {:>9} {:>9} {:>9} {:>11} {:>9}", "phase", "messages", "MB", "seconds", "messages/s", "MB/s");
    let line = |phase: &str, seconds: f64| {
        println!(
            "{phase:<22} {:>9} {:>9.1} {seconds:>9.2} {:>11.0} {:>9.1}",
            args.messages,
            mb(bytes),
            args.messages as f64 / seconds,
            mb(bytes) / seconds
        );
    };

    let started = Instant::now();
    let full = crate::backup_cmd::offline_backup(&config, &backups).await?;
    anyhow::ensure!(full.ok, "the full backup failed: {:?}", full.targets);
    line("backup (full)", started.elapsed().as_secs_f64());
    let started = Instant::now();
    let incremental = crate::backup_cmd::offline_backup(&config, &backups).await?;
    anyhow::ensure!(incremental.ok, "the incremental backup failed: {:?}", incremental.targets);
    let uploaded: u64 = incremental.targets.iter().map(|t| t.bodies_uploaded).sum();
    line(&format!("backup (incr., {uploaded} new)"), started.elapsed().as_secs_f64());

    // The reference, measured in the same run on the same disk: a plain copy of the
    // site's files (no encryption, no per-file fsync), made durable with one sync.
    let started = Instant::now();
    let copy = work.path().join("plain-copy");
    let status = std::process::Command::new("cp").arg("-a").arg(&site_dir).arg(&copy).status()?;
    let synced = std::process::Command::new("sync").arg("-f").arg(&copy).status()?;
    anyhow::ensure!(status.success() && synced.success(), "cp -a / sync failed");
    line("reference: cp -a+sync", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let id = BackupId::parse(&full.id).context("the backup's id")?;
    let restored =
        maildr_backup::restore::restore_site(&backups, &Point::Backup(id), &work.path().join("restored")).await?;
    anyhow::ensure!(restored.messages == args.messages, "restored {} of {} messages", restored.messages, args.messages);
    line("restore (whole site)", started.elapsed().as_secs_f64());
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_000_000.0
}
