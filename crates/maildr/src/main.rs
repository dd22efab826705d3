//! The `maildr` binary: parses the command line and wires the crates together.
//! It holds no mail logic of its own.

mod admin;
mod backup_cmd;
mod bench;
mod bench_backup;
mod bench_failover;
mod bench_imap;
mod bench_imap_logins;
mod bench_replication;
mod cluster_cmd;
mod dns_cmd;
mod drill_cmd;
mod drill_service_cmd;
mod faults;
mod lab;
mod queue_cmd;
mod serve;
mod tls;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "maildr", version, about = "Multi-site mail with measured disaster recovery")]
struct Cli {
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run a site: SMTP MX and submission over the site's store.
    Serve {
        /// Site configuration file (see `maildr config example`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Local trial site on 127.0.0.1 with lab ports; creates example.test with
        /// alice and bob (passwords printed) when the data directory is empty.
        #[arg(long)]
        dev: bool,
        /// Data directory; overrides `site.data_dir` (dev default: .maildr/dev).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// A brand-new cluster's site that never held data, started alone or after
        /// `cluster init`: with no Raft state, it does not wait for a majority of the
        /// voters to confirm that none counts its node id as a member, and starts even
        /// if one does. Sites of a new cluster started together need no flag. Never
        /// for a site that lost its data (it must rejoin under a new node id).
        #[arg(long)]
        new_cluster: bool,
    },
    /// Configuration files.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// A replicated cluster: init, status, switchover, verify.
    Cluster {
        #[command(subcommand)]
        action: cluster_cmd::ClusterAction,
    },
    /// Manage domains, accounts and aliases (through the running cluster when the
    /// config names cluster members; else on a stopped site); inspect a stopped store.
    Admin {
        /// The site's data directory.
        #[arg(long, required_unless_present = "config")]
        data_dir: Option<PathBuf>,
        /// Or the site's config file, whose `site.data_dir` is used.
        #[arg(long)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// The lab: a whole multi-site deployment on this machine, one process per site.
    Lab {
        #[command(subcommand)]
        action: lab::LabAction,
    },
    /// DNS: print the zone for sites, primary and MX; push it with RFC 2136 + TSIG.
    Dns {
        #[command(subcommand)]
        action: dns_cmd::DnsAction,
    },
    /// Drills: rehearse a failover, measure RTO and RPO through clients, report.
    Drill {
        #[command(subcommand)]
        action: drill_cmd::DrillAction,
    },
    /// The drill audit log.
    Audit {
        #[command(subcommand)]
        action: drill_cmd::AuditAction,
    },
    /// Backups: take, list and verify them (`[backup]` in the site's config).
    Backup {
        #[command(subcommand)]
        action: backup_cmd::BackupAction,
    },
    /// The replicated outbound queue: list, retry, delete.
    Queue {
        #[command(subcommand)]
        action: queue_cmd::QueueAction,
    },
    /// Restore an account's messages at a moment into new mailboxes of the running
    /// cluster (`--account ADDR --at TIME`), or a whole site (`restore site`).
    Restore(backup_cmd::RestoreArgs),
    /// Benchmarks that print figures.
    Bench {
        #[command(subcommand)]
        which: BenchWhich,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Print a complete commented example with every default.
    Example,
    /// Parse and check a config file; exits non-zero with the key and reason.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum BenchWhich {
    /// Durable SMTP deliveries per second and DATA→250 latency.
    Smtp(bench::SmtpBench),
    /// FETCH and SEARCH throughput on a large mailbox with concurrent sessions.
    Imap(bench_imap::ImapBench),
    /// SMTP ingest on one site alone vs three replicated sites (a temporary lab),
    /// optionally with an inter-site delay.
    Replication(bench_replication::ReplicationBench),
    /// Backup and restore throughput of one large mailbox (20,000 messages by default).
    Backup(bench_backup::BackupBench),
    /// How long a killed primary takes to be replaced (election, first commit,
    /// first SMTP 250 and DNS at the survivor), over many trials on a lab; or,
    /// with --switchover, the write unavailability of planned hand-overs.
    Failover(bench_failover::FailoverBench),
}

pub(crate) fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default_filter},rustls=error")));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Top::Serve { config, dev, data_dir, new_cluster } => {
            runtime()?.block_on(serve::run(serve::ServeArgs { config, dev, data_dir, new_cluster }))
        }
        Top::Config { action } => match action {
            ConfigAction::Example => {
                print!("{}", maildr_config::SiteConfig::example());
                Ok(())
            }
            ConfigAction::Check { file } => {
                maildr_config::SiteConfig::load(&file)?;
                println!("{}: ok", file.display());
                Ok(())
            }
        },
        Top::Cluster { action } => {
            init_logging("warn");
            runtime()?.block_on(cluster_cmd::run(action))
        }
        Top::Admin { data_dir, config, command } => {
            let config = config.map(|c| maildr_config::SiteConfig::load(&c)).transpose()?;
            let dir = match (data_dir, &config) {
                (Some(d), _) => d,
                (None, Some(c)) => c.site.data_dir.clone(),
                (None, None) => unreachable!("clap requires one of them"),
            };
            let cluster = config.filter(|c| !c.cluster.members.is_empty());
            admin::run(dir, cluster, command)
        }
        Top::Lab { action } => lab::run(action),
        Top::Dns { action } => dns_cmd::run(action),
        Top::Drill { action } => std::process::exit(drill_cmd::run(action)),
        Top::Audit { action } => std::process::exit(drill_cmd::audit(action)),
        Top::Backup { action } => std::process::exit(backup_cmd::run(action)),
        Top::Restore(args) => std::process::exit(backup_cmd::restore(args)),
        Top::Queue { action } => {
            init_logging("warn");
            runtime()?.block_on(queue_cmd::run(action))
        }
        Top::Bench { which } => {
            init_logging("warn");
            match which {
                BenchWhich::Smtp(args) => runtime()?.block_on(bench::run(args)),
                BenchWhich::Imap(args) => runtime()?.block_on(bench_imap::run(args)),
                BenchWhich::Replication(args) => runtime()?.block_on(bench_replication::run(args)),
                BenchWhich::Backup(args) => runtime()?.block_on(bench_backup::run(args)),
                BenchWhich::Failover(args) => runtime()?.block_on(bench_failover::run(args)),
            }
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
