//! `maildr backup` and `maildr restore`: take, list and verify backups, and restore
//! an account's messages or a whole site from them.
//!
//! A backup of a cluster member is taken by the running site (through its admin
//! API), because only it can copy its store at one applied index while mail keeps
//! flowing; a site alone is backed up while stopped. Listing, verifying and
//! restoring read the targets directly with the site's key. Every backup,
//! verification and restore is appended to the audit log (`--audit-dir`, the drills'
//! data directory by default).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use maildr_api_types::{BackupList, BackupReport, BackupVerifyReport, NewClusterSeed, RestoreReport};
use maildr_backup::rebuild::Point;
use maildr_backup::restore::{AccountRestore, Destination};
use maildr_backup::{parse_moment, BackupId, BackupKey, Backups};
use maildr_config::SiteConfig;
use maildr_drill::audit::{AuditEvent, AuditLog};
use maildr_lab::http_client::{JsonApi, Method};
use maildr_types::{EmailAddress, MailboxName};

/// Where the audit log is kept (shared with `maildr drill`).
const DEFAULT_AUDIT_DIR: &str = ".maildr/drills";

#[derive(Args, Clone)]
pub struct Common {
    /// The site's configuration file (its `[backup]` section).
    #[arg(long)]
    config: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Directory of the audit log the operation is recorded in.
    #[arg(long, default_value = DEFAULT_AUDIT_DIR)]
    audit_dir: PathBuf,
}

#[derive(Subcommand)]
pub enum BackupAction {
    /// Take a backup now: the running site copies its store at its applied index and
    /// writes it, with the bodies the targets lack, to every target. Exit 1 when a
    /// target failed.
    Run {
        #[command(flatten)]
        common: Common,
    },
    /// Backups and the archived log on every target.
    List {
        #[command(flatten)]
        common: Common,
    },
    /// Check a backup: every object exists, decrypts and hashes to its name; with
    /// `--restore-test`, restore it into a scratch site and compare. Exit 0 all good,
    /// 1 a problem found, 2 could not check.
    Verify {
        #[command(flatten)]
        common: Common,
        /// The backup (default: the newest).
        #[arg(long)]
        backup: Option<String>,
        /// Restore into a scratch site, compare digests and counts, read a sample over IMAP.
        #[arg(long)]
        restore_test: bool,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Approve that backup ID may be deleted by hand (recorded in the audit log); a
    /// deletion needs the approval of someone other than the person deleting.
    ApproveDelete {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        backup: String,
        /// Who approves.
        #[arg(long)]
        by: String,
    },
    /// Delete backup ID from every target, once a second person approved it
    /// (`approve-delete`). Its bodies and archive go at the next prune.
    Delete {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        backup: String,
        /// Who deletes; must not be the only approver.
        #[arg(long)]
        by: String,
    },
    /// Write a new random backup key file (mode 0600); refuses to overwrite one.
    Keygen {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RestoreArgs {
    #[command(subcommand)]
    site: Option<RestoreSite>,
    /// The site's configuration file (its `[backup]` section); required.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Directory of the audit log the operation is recorded in.
    #[arg(long, default_value = DEFAULT_AUDIT_DIR)]
    audit_dir: PathBuf,
    /// The account whose messages to restore; required.
    #[arg(long)]
    account: Option<String>,
    /// The moment to restore: RFC 3339, or `YYYY-MM-DD HH:MM[:SS]` in UTC; required.
    #[arg(long)]
    at: Option<String>,
    /// Only this mailbox (default: every mailbox of the account).
    #[arg(long)]
    mailbox: Option<String>,
    /// Into this new mailbox (default `Restored <time>`).
    #[arg(long, conflicts_with = "into_account")]
    into_mailbox: Option<String>,
    /// Into `Restored <time>` of this other account.
    #[arg(long)]
    into_account: Option<String>,
    /// Read only this target (default: the first that can serve the moment).
    #[arg(long)]
    target: Option<String>,
}

#[derive(Subcommand)]
pub enum RestoreSite {
    /// Rebuild a whole site into an empty data directory from the targets alone
    /// (every site lost). With a config that names `[[cluster.members]]`, the
    /// directory becomes that site's, the first of a new cluster of those members
    /// (start the others empty with `serve --new-cluster`); with a config without
    /// them, it is served as a site alone.
    Site {
        #[command(flatten)]
        common: Common,
        /// Exactly this backup.
        #[arg(long, conflicts_with = "at", required_unless_present = "at")]
        backup: Option<String>,
        /// Or the state at this moment (a backup plus the archived log).
        #[arg(long)]
        at: Option<String>,
        /// The new site's data directory (must be empty).
        #[arg(long)]
        data_dir: PathBuf,
        /// Read only this target (default: the first that can serve it).
        #[arg(long)]
        target: Option<String>,
    },
}

fn load(common: &Common) -> Result<(SiteConfig, Backups)> {
    let config = SiteConfig::load(&common.config)?;
    let backups = Backups::from_config(&config).context("backups")?;
    Ok((config, backups))
}

fn audit(common: &Common, action: &str, detail: serde_json::Value) {
    let record = AuditLog::open(common.audit_dir.join(maildr_drill::audit::FILE_NAME))
        .and_then(|log| log.append(AuditEvent::new(maildr_drill::audit::os_user(), action).detail(detail)));
    if let Err(e) = record {
        eprintln!("warning: not recorded in the audit log: {e}");
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// `maildr backup …`; returns the exit code.
pub fn run(action: BackupAction) -> i32 {
    let result = match action {
        BackupAction::Run { common } => backup_run(&common),
        BackupAction::List { common } => backup_list(&common),
        BackupAction::Verify { common, backup, restore_test, target } => {
            backup_verify(&common, backup.as_deref(), restore_test, target.as_deref())
        }
        BackupAction::ApproveDelete { common, backup, by } => approve_delete(&common, &backup, &by).map(|_| 0),
        BackupAction::Delete { common, backup, by } => delete(&common, &backup, &by),
        BackupAction::Keygen { out } => keygen(&out).map(|_| 0),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        2
    })
}

fn approve_delete(common: &Common, backup: &str, by: &str) -> Result<()> {
    let (_, backups) = load(common)?;
    let id = BackupId::parse(backup).with_context(|| format!("{backup:?} is not a backup id"))?;
    let audit = AuditLog::open(common.audit_dir.join(maildr_drill::audit::FILE_NAME))?;
    let approved = maildr_drill::approval::approve(
        &common.audit_dir,
        &format!("delete backup {id}"),
        &maildr_backup::catalog::deletion_sha256(&backups, &id),
        by,
        &audit,
    )?;
    println!("{} approved deleting backup {id} (audit record {})", approved.approval.by, approved.audit_seq);
    Ok(())
}

fn delete(common: &Common, backup: &str, by: &str) -> Result<i32> {
    let (_, backups) = load(common)?;
    let id = BackupId::parse(backup).with_context(|| format!("{backup:?} is not a backup id"))?;
    let by = maildr_drill::approval::ApproverName::parse(by)?;
    let approvals = maildr_drill::approval::approvals_for(
        &common.audit_dir,
        &maildr_backup::catalog::deletion_sha256(&backups, &id),
    )?;
    let fold = |name: &str| name.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    let others: Vec<&str> =
        approvals.iter().filter(|a| fold(&a.by) != fold(by.as_str())).map(|a| a.by.as_str()).collect();
    if others.is_empty() {
        bail!(
            "deleting backup {id} needs the approval of a second person: `maildr backup approve-delete --backup {id} \
             --by <someone other than {}>` (approvals so far: {})",
            by.as_str(),
            if approvals.is_empty() {
                "none".into()
            } else {
                approvals.iter().map(|a| a.by.clone()).collect::<Vec<_>>().join(", ")
            }
        );
    }
    let results = runtime()?.block_on(maildr_backup::catalog::delete(&backups, &id));
    let mut failed = false;
    let mut detail = Vec::new();
    for (target, result) in &results {
        match result {
            Ok(true) => println!("  {target}: deleted"),
            Ok(false) => println!("  {target}: not there"),
            Err(e) => {
                failed = true;
                println!("  {target}: FAILED: {e}");
            }
        }
        detail.push(serde_json::json!({"target": target, "ok": result.is_ok()}));
    }
    let record = AuditLog::open(common.audit_dir.join(maildr_drill::audit::FILE_NAME)).and_then(|log| {
        log.append(AuditEvent::new(by.as_str(), "backup_deleted").detail(serde_json::json!({
            "backup": id.to_string(), "approved_by": others, "targets": detail, "os_user": maildr_drill::audit::os_user(),
        })))
    });
    if let Err(e) = record {
        eprintln!("warning: not recorded in the audit log: {e}");
    }
    println!("backup {id} deleted by {}, approved by {}", by.as_str(), others.join(", "));
    Ok(if failed { 1 } else { 0 })
}

fn keygen(out: &Path) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {}", out.display()))?;
    writeln!(file, "{}", BackupKey::generate_hex()?)?;
    file.sync_all()?;
    println!("wrote a new backup key to {}; keep a copy apart from the backup targets", out.display());
    Ok(())
}

fn backup_run(common: &Common) -> Result<i32> {
    let (config, backups) = load(common)?;
    let started = Instant::now();
    let report: BackupReport = if config.cluster.members.is_empty() {
        runtime()?.block_on(offline_backup(&config, &backups))?
    } else {
        let (Some(listen), Some(token)) = (config.api.listen, config.api.token.clone()) else {
            bail!(
                "the running site takes the backup through its admin API: set [api] listen and token in {}",
                common.config.display()
            );
        };
        let api = JsonApi { api: "admin API", addr: listen, bearer: Some(token) };
        runtime()?.block_on(async {
            let body = api.request_within(Duration::from_secs(3600), Method::POST, "/api/backups", None).await?;
            serde_json::from_slice::<BackupReport>(&body).context("reading the backup report")
        })?
    };
    audit(common, "backup", serde_json::to_value(&report).unwrap_or_default());
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "backup {} of site {} at log index {} ({}): {} messages, {} bytes in {} mailboxes, {} bodies, {:.1} s",
            report.id,
            report.site,
            report.applied_index,
            report.taken_at,
            report.messages,
            report.message_bytes,
            report.mailboxes,
            report.bodies,
            started.elapsed().as_secs_f64()
        );
        for t in &report.targets {
            match &t.error {
                None => println!(
                    "  {} ({}): complete, {} new bodies, {} bytes written",
                    t.target, t.kind, t.bodies_uploaded, t.bytes_uploaded
                ),
                Some(e) => println!("  {} ({}): FAILED: {e}", t.target, t.kind),
            }
        }
    }
    Ok(if report.ok { 0 } else { 1 })
}

/// A backup of a stopped site alone: its store opened (the lock refuses a running
/// site) and copied.
pub(crate) async fn offline_backup(config: &SiteConfig, backups: &Backups) -> Result<BackupReport> {
    let data_dir = config.site.data_dir.clone();
    let work = backups.work_dir.join(format!("take-{}", maildr_backup::now_ms()));
    let site = backups.site.clone();
    let fingerprint = backups.key.fingerprint().to_string();
    let started = Instant::now();
    let (copied, blobs) = tokio::task::spawn_blocking(move || -> Result<_> {
        let store = maildr_store::Store::open(&data_dir)
            .with_context(|| format!("opening {} (a site alone is backed up while stopped)", data_dir.display()))?;
        let applied = store.commands_applied()?;
        std::fs::create_dir_all(&work)?;
        std::fs::copy(data_dir.join(maildr_store::DATABASE_FILE), work.join(maildr_store::DATABASE_FILE))?;
        let blobs = store.blobs().clone();
        drop(store);
        let copied = maildr_backup::take::describe_copy(&work, &site, applied, maildr_backup::now_ms(), &fingerprint);
        let _ = std::fs::remove_dir_all(&work);
        Ok((copied?, blobs))
    })
    .await??;
    Ok(maildr_backup::take::upload(backups, copied, std::sync::Arc::new(blobs), started).await)
}

fn backup_list(common: &Common) -> Result<i32> {
    let (_, backups) = load(common)?;
    let list: BackupList = runtime()?.block_on(maildr_backup::catalog::list(&backups));
    if common.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!("{:<28} {:>10} {:<24} {:>9} {:>12}  targets", "backup", "index", "taken at", "messages", "bytes");
        for b in &list.backups {
            println!(
                "{:<28} {:>10} {:<24} {:>9} {:>12}  {}",
                b.id,
                b.applied_index,
                b.taken_at,
                b.messages,
                b.message_bytes,
                b.targets.join(",")
            );
        }
        for a in &list.archives {
            println!(
                "archive on {}: {} segments, entries {}-{}, last at {}{}",
                a.target,
                a.segments,
                a.first_index,
                a.last_index,
                a.last_at.as_deref().unwrap_or("-"),
                if a.gaps.is_empty() { String::new() } else { format!(", GAPS {}", a.gaps.join(" ")) }
            );
        }
        for u in &list.unreachable {
            println!("unreachable: {u}");
        }
    }
    Ok(if list.unreachable.is_empty() { 0 } else { 1 })
}

fn backup_verify(common: &Common, backup: Option<&str>, restore_test: bool, target: Option<&str>) -> Result<i32> {
    let (_, mut backups) = load(common)?;
    if let Some(name) = target {
        backups = backups.only_target(name)?;
    }
    let id = backup
        .map(|b| BackupId::parse(b).with_context(|| format!("{b:?} is not a backup id (b-<time>-<index>)")))
        .transpose()?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let (report, verdict): (BackupVerifyReport, _) = runtime()?.block_on(maildr_backup::verify::verify(
        &backups,
        id.as_ref(),
        restore_test.then_some(exe.as_path()),
    ));
    audit(common, "backup_verify", serde_json::to_value(&report).unwrap_or_default());
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "backup {} on {}: {} objects, {} bytes checked{}",
            report.backup,
            report.targets.join(", "),
            report.objects_checked,
            report.bytes_checked,
            if report.restore_tested {
                format!("; restored into a scratch site, {} messages read over IMAP", report.messages_read_over_imap)
            } else {
                String::new()
            }
        );
        for p in &report.problems {
            println!("  PROBLEM {} {}: {}", p.target, p.object, p.problem);
        }
        println!("{}", if report.ok { "good" } else { "NOT GOOD" });
    }
    Ok(verdict.exit_code())
}

/// `maildr restore …`; returns the exit code.
pub fn restore(args: RestoreArgs) -> i32 {
    let result = match args.site {
        Some(RestoreSite::Site { common, backup, at, data_dir, target }) => {
            restore_site(&common, backup, at, &data_dir, target.as_deref())
        }
        None => restore_account(args),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        2
    })
}

fn print_restore(common: &Common, report: &RestoreReport, data_dir: Option<&Path>) -> Result<()> {
    if common.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    println!(
        "restored {} messages ({} bytes) as of log index {} ({}), from backup {} on {} plus {} archived entries",
        report.messages,
        report.bytes,
        report.applied_index,
        report.stands_at,
        report.backup,
        report.target,
        report.archived_entries_replayed
    );
    for m in &report.mailboxes {
        println!("  {} {} -> {}: {} messages, {} bytes", m.account, m.from, m.into, m.messages, m.bytes);
    }
    if let Some(short) = &report.short_of_target {
        println!("  NOTE: {short}");
    }
    if let Some(seed) = &report.new_cluster {
        println!(
            "seeded a new cluster of voters {:?} (this site is node {}); its log starts after index {}. Start this \
             site with `maildr serve --config {} --data-dir {}`, then every other site, with an empty data directory, with \
             `maildr serve --config <its config> --new-cluster`: each installs this site's snapshot ({} bytes) \
             and fetches the bodies",
            seed.voters,
            seed.node_id,
            seed.applied_index,
            common.config.display(),
            data_dir.map_or_else(|| "DIR".into(), |d| d.display().to_string()),
            seed.snapshot_bytes
        );
    }
    Ok(())
}

fn restore_account(args: RestoreArgs) -> Result<i32> {
    let (Some(config), Some(account), Some(at)) = (args.config, args.account.as_deref(), args.at.as_deref()) else {
        bail!("give --config, --account and --at (or `restore site`)");
    };
    let common = Common { config, json: args.json, audit_dir: args.audit_dir.clone() };
    let (config, mut backups) = load(&common)?;
    if let Some(name) = &args.target {
        backups = backups.only_target(name)?;
    }
    let account = EmailAddress::parse(account)?;
    let at_ms = parse_moment(at).with_context(|| format!("--at {at:?} is not a time"))?;
    let mailbox = args.mailbox.as_deref().map(MailboxName::parse).transpose()?;
    let into = match (&args.into_mailbox, &args.into_account) {
        (Some(name), _) => Destination::Mailbox(MailboxName::parse(name)?),
        (None, Some(other)) => Destination::Account(EmailAddress::parse(other)?),
        (None, None) => Destination::Default,
    };
    if config.cluster.members.is_empty() {
        bail!("restoring messages into a site alone is not supported yet; restore the site (`restore site`) beside it");
    }
    let client = maildr_cluster::ops::ControlClient::new(config.clone())?;
    let scratch = backups.work_dir.join(format!("restore-{}", maildr_backup::now_ms()));
    let request = AccountRestore { account, at_ms, mailbox, into };
    let result = runtime()?.block_on(maildr_backup::restore::restore_account(&backups, &client, &request, &scratch));
    let _ = std::fs::remove_dir_all(&scratch);
    let report = result?;
    audit(&common, maildr_drill::audit::action::RESTORE, serde_json::to_value(&report).unwrap_or_default());
    print_restore(&common, &report, None)?;
    Ok(0)
}

fn restore_site(
    common: &Common,
    backup: Option<String>,
    at: Option<String>,
    data_dir: &Path,
    target: Option<&str>,
) -> Result<i32> {
    let (config, mut backups) = load(common)?;
    if let Some(name) = target {
        backups = backups.only_target(name)?;
    }
    let point = match (backup, at) {
        (Some(id), _) => Point::Backup(BackupId::parse(&id).with_context(|| format!("{id:?} is not a backup id"))?),
        (None, Some(at)) => Point::At(parse_moment(&at).with_context(|| format!("--at {at:?} is not a time"))?),
        (None, None) => bail!("give --backup or --at"),
    };
    let mut report = runtime()?.block_on(maildr_backup::restore::restore_site(&backups, &point, data_dir))?;
    if !config.cluster.members.is_empty() {
        // The config names a cluster: the restored site becomes the first state of it.
        let seeded = maildr_cluster::replicated::seed_restored_site(data_dir, &config.cluster, report.applied_index)
            .with_context(|| format!("seeding a new cluster with the site restored into {}", data_dir.display()))?;
        report.new_cluster = Some(NewClusterSeed {
            node_id: config.cluster.node_id,
            voters: seeded.voters.into_iter().collect(),
            applied_index: seeded.applied.index,
            snapshot_bytes: seeded.snapshot_bytes,
        });
    }
    audit(common, "restore_site", serde_json::to_value(&report).unwrap_or_default());
    print_restore(common, &report, Some(data_dir))?;
    Ok(0)
}
