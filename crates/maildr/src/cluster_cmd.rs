//! `maildr cluster`: bootstrap, inspect, switch over, fail over and verify a
//! replicated cluster.
//!
//! These commands talk to running sites over the replication channel, with the
//! site's cluster certificate and secret from its config file, exactly as sites talk
//! to each other (`certs` alone works offline: it issues those certificates).
//! They never open a site's files: everything they report is what the sites say.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Subcommand;
use maildr_cluster::{certs, ops};
use maildr_config::SiteConfig;

#[derive(Subcommand)]
pub enum ClusterAction {
    /// Issue the cluster's own certificates for mutual TLS between sites (offline,
    /// on the operator's machine; copy each site's files to its host).
    Certs {
        #[command(subcommand)]
        action: CertsAction,
    },
    /// Bootstrap a new cluster from this site's member list (once; harmless later).
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Every member: role, Raft state, term, primary, log and applied index, lag,
    /// and when each was last heard from.
    Status {
        #[arg(long)]
        config: PathBuf,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover: make the data site TO primary (refused unless it is
    /// healthy and caught up) and report how long writes were unavailable.
    Switchover {
        #[arg(long)]
        config: PathBuf,
        /// Site name of the new primary.
        #[arg(long)]
        to: String,
    },
    /// Forced failover, for when the quorum is gone for good (both data sites lost):
    /// make the standby TO the only voter of a new cluster and let it serve mail.
    /// It first prints what may be lost (the standby's last index, and how far behind
    /// it was when it last heard from the primary); without --accept-data-loss it
    /// stops there. Refused while the standby still hears from a primary.
    Failover {
        /// Required: this is not the routine tool (`switchover` is, with a quorum).
        #[arg(long, required = true)]
        force: bool,
        /// Site name of the standby to promote.
        #[arg(long)]
        to: String,
        /// The standby's config (its secret and address).
        #[arg(long)]
        config: PathBuf,
        /// Promote even though entries the lost primary committed after the
        /// standby's last one are lost.
        #[arg(long)]
        accept_data_loss: bool,
        /// The operator forcing it; recorded in the cluster's event log.
        #[arg(long)]
        by: String,
    },
    /// Bring back a site that lost its data directory: run it empty under a NEW
    /// node_id (in its config), then run this with its config. The primary catches it
    /// up and swaps its old node id for the new one among the voters.
    Rejoin {
        #[arg(long)]
        config: PathBuf,
    },
    /// Stop the lagged site SITE from applying anything further (durably, until
    /// `release-apply`): when logical corruption is noticed within its apply delay,
    /// this keeps the state from before it. Prints the index it holds at.
    HoldApply {
        #[arg(long)]
        config: PathBuf,
        /// Site name of the lagged site.
        #[arg(long)]
        site: String,
        /// The operator asking for it; recorded with the hold.
        #[arg(long)]
        by: String,
    },
    /// Let the lagged site SITE apply again (entries whose delay has passed are
    /// applied at once).
    ReleaseApply {
        #[arg(long)]
        config: PathBuf,
        /// Site name of the lagged site.
        #[arg(long)]
        site: String,
    },
    /// Compare every mailbox's digest across all sites at one applied index. Exits
    /// 0 when all agree, 1 when any mailbox diverges, 2 when the sites could not be
    /// compared (fewer than two answered, writes kept coming, a bad config).
    Verify {
        #[arg(long)]
        config: PathBuf,
        /// Also list the messages that differ in diverging mailboxes.
        #[arg(long)]
        messages: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CertsAction {
    /// Create a new cluster CA in DIR (ca.pem, and ca-key.pem: keep it offline).
    /// For a rollover, create a second one and list both in every site's
    /// `cluster.ca_files` before issuing from the new one.
    Ca {
        #[arg(long)]
        dir: PathBuf,
        /// Tells this CA apart from others in its name (e.g. the year).
        #[arg(long, default_value = "1")]
        label: String,
        #[arg(long, default_value_t = certs::CA_VALIDITY_DAYS_DEFAULT)]
        days: u32,
    },
    /// Issue SITE (node NODE_ID) a certificate from the CA in CA_DIR, written to OUT
    /// as <site>-cluster.pem and <site>-cluster-key.pem.
    Issue {
        #[arg(long)]
        ca_dir: PathBuf,
        #[arg(long)]
        site: String,
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = certs::SITE_CERT_VALIDITY_DAYS_DEFAULT)]
        days: u32,
    },
    /// Print the site, node id and expiry a certificate names.
    Show { file: PathBuf },
}

fn run_certs(action: CertsAction) -> Result<()> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match action {
        CertsAction::Ca { dir, label, days } => {
            let ca = certs::create_ca(&dir, &label, days)?;
            println!(
                "cluster CA {} ({}); its key is {}",
                ca.cert.display(),
                certificate_expiry(ca.not_after_unix, now),
                ca.key.display()
            );
        }
        CertsAction::Issue { ca_dir, site, node_id, out, days } => {
            let issued = certs::issue_site_cert(&ca_dir, &site, node_id, days, &out)?;
            println!(
                "{site} (node {node_id}): {} and {} ({})",
                issued.cert.display(),
                issued.key.display(),
                certificate_expiry(issued.not_after_unix, now)
            );
        }
        CertsAction::Show { file } => {
            let id = certs::identity(&certs::read_first_cert(&file)?)?;
            println!(
                "site {}, node {}, {}",
                id.site.as_deref().unwrap_or("-"),
                id.node_id.map(|n| n.to_string()).unwrap_or("-".into()),
                certificate_expiry(id.not_after_unix, now)
            );
        }
    }
    Ok(())
}

/// The client of the replication channel lives in the cluster crate, shared with
/// the admin HTTP API; `admin` reaches it through here.
pub use maildr_cluster::ops::ControlClient;

pub async fn run(action: ClusterAction) -> Result<()> {
    match action {
        ClusterAction::Certs { action } => run_certs(action),
        ClusterAction::Init { config } => {
            let report = ops::init(&ControlClient::new(SiteConfig::load(&config)?)?).await?;
            let leader = report.primary.as_deref().unwrap_or("?");
            if report.already {
                println!("cluster already initialised; primary is {leader}");
            } else {
                println!("cluster initialised with {} voters; primary is {leader}", report.voters);
            }
            Ok(())
        }
        ClusterAction::Status { config, json } => status(ControlClient::new(SiteConfig::load(&config)?)?, json).await,
        ClusterAction::Switchover { config, to } => {
            let client = ControlClient::new(SiteConfig::load(&config)?)?;
            let report = ops::switchover(&client, &to).await?;
            println!(
                "{} is primary (term {}); writes were unavailable for at most {} ms",
                report.primary, report.term, report.unavailable_ms
            );
            Ok(())
        }
        ClusterAction::Failover { force, to, config, accept_data_loss, by } => {
            anyhow::ensure!(force, "a forced failover needs --force");
            failover(&ControlClient::new(SiteConfig::load(&config)?)?, &to, accept_data_loss, &by).await
        }
        ClusterAction::Rejoin { config } => {
            let report = ops::rejoin(&ControlClient::new(SiteConfig::load(&config)?)?).await?;
            match report.replaced {
                Some(old) => println!("{} rejoined as node {} in place of node {old}", report.site, report.node_id),
                None => println!("{} is a voter as node {}", report.site, report.node_id),
            }
            println!("voters now: {:?}", report.voters);
            Ok(())
        }
        ClusterAction::HoldApply { config, site, by } => {
            let client = ControlClient::new(SiteConfig::load(&config)?)?;
            let hold = ops::hold_apply(&client, &site, &by).await?;
            let index = hold.applied_index.map(|i| i.to_string()).unwrap_or("none".into());
            println!(
                "{site} holds at applied index {index} (held by {}); it applies nothing until release-apply",
                hold.by
            );
            Ok(())
        }
        ClusterAction::ReleaseApply { config, site } => {
            let client = ControlClient::new(SiteConfig::load(&config)?)?;
            match ops::release_apply(&client, &site).await? {
                Some(lifted) => println!("{site} applies again (the hold by {} is lifted)", lifted.by),
                None => println!("{site} was not held; it applies as usual"),
            }
            Ok(())
        }
        ClusterAction::Verify { config, messages, json } => {
            // Like diff(1): a script must tell "they differ" from "could not compare".
            let report = match verify(&config, messages).await {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    std::process::exit(VERIFY_EXIT_NOT_COMPARED);
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if !report.diverging.is_empty() {
                std::process::exit(VERIFY_EXIT_DIVERGES);
            }
            Ok(())
        }
    }
}

/// `maildr cluster verify` exits with this when a mailbox diverges.
const VERIFY_EXIT_DIVERGES: i32 = 1;
/// `maildr cluster verify` exits with this when it could not compare the sites.
const VERIFY_EXIT_NOT_COMPARED: i32 = 2;

async fn verify(config: &std::path::Path, list_messages: bool) -> Result<ops::VerifyReport> {
    let client = ControlClient::new(SiteConfig::load(config)?)?;
    Ok(ops::verify(&client, list_messages).await?)
}

/// How long `failover` waits for the promoted standby to restart and lead.
const FAILOVER_WAIT: Duration = Duration::from_secs(60);

/// `maildr cluster failover --force`: report what may be lost, then (only with the
/// operator's acceptance) promote the standby and wait until it leads. The checks and
/// the request are `ops::failover`, shared with the admin API.
async fn failover(client: &ControlClient, to: &str, accept_data_loss: bool, by: &str) -> Result<()> {
    print!("{}", ops::failover_loss(client, to).await?.render());
    let report = match ops::failover(client, to, by, accept_data_loss).await {
        Ok(report) => report,
        Err(ops::OpsError::DataLossNotAccepted { .. }) => {
            bail!("refused: nothing changed. Add --accept-data-loss to promote {to} knowing the loss above")
        }
        Err(e) => return Err(e.into()),
    };
    println!("{to} accepted the forced failover by {} and restarts as the only voter", report.accepted.by);
    let status = ops::wait_until_promoted(client, to, FAILOVER_WAIT).await?;
    println!("{to} is primary (term {}) and serves mail; the old sites must rejoin as new sites", status.term);
    Ok(())
}

async fn status(client: ControlClient, json: bool) -> Result<()> {
    let report = ops::cluster_status(&client, ops::STATUS_TIMEOUT).await;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "primary: {} (term {})",
            report.leader.as_deref().unwrap_or("none"),
            report.term.map(|t| t.to_string()).unwrap_or("-".into())
        );
        println!(
            "SITE\tNODE\tROLE\tSTATE\tTERM\tLAST_LOG\tAPPLIED\tLAG_ENTRIES\tLAG_BYTES\tLAG_S\tHEARD_MS_AGO\tMISSING_BODIES"
        );
        let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
        for m in &report.members {
            // `~`: partly estimated (the peer lacks entries the primary has not measured).
            let lag_bytes = match m.lag_bytes {
                Some(bytes) if m.lag_bytes_estimated => format!("~{bytes}"),
                other => show(other),
            };
            if let Some(e) = &m.error {
                // What the primary knows of it still tells how far behind it is.
                println!(
                    "{}\t{}\t{}\tUNREACHABLE\t-\t-\t-\t{}\t{}\t{}\t{}\t-\t({e})",
                    m.site,
                    m.node_id,
                    m.role,
                    show(m.lag_entries),
                    lag_bytes,
                    m.lag_seconds.map(|s| format!("{s:.1}")).unwrap_or("-".into()),
                    show(m.last_heard_ms_ago),
                );
                continue;
            }
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                m.site,
                m.node_id,
                m.role,
                m.state.as_deref().unwrap_or("-"),
                show(m.term),
                show(m.last_log_index),
                show(m.applied_index),
                show(m.lag_entries),
                lag_bytes,
                m.lag_seconds.map(|s| format!("{s:.1}")).unwrap_or("-".into()),
                show(m.last_heard_ms_ago),
                show(m.missing_bodies),
            );
        }
        for (site, delay) in
            report.members.iter().filter_map(|m| Some((&m.site, m.status.as_ref()?.apply_delay.as_ref()?)))
        {
            let held = match &delay.hold {
                Some(h) => format!(
                    "HELD at applied index {} by {}",
                    h.applied_index.map(|i| i.to_string()).unwrap_or("none".into()),
                    h.by
                ),
                None => "applying".into(),
            };
            println!(
                "{site}: lagged by {} s; {} entries wait to be applied; {held}",
                delay.delay_secs, delay.pending_entries
            );
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for (site, at) in
            report.members.iter().filter_map(|m| Some((&m.site, m.status.as_ref()?.certificate_expires_at?)))
        {
            println!("{site}: cluster certificate {}", certificate_expiry(at, now));
        }
    }
    Ok(())
}

/// "expires 2027-12-06 (364 days)", or "EXPIRED 2026-01-02 (3 days ago)".
fn certificate_expiry(at: i64, now: i64) -> String {
    let date = time::OffsetDateTime::from_unix_timestamp(at).map(|t| t.date().to_string()).unwrap_or(at.to_string());
    let days = (at - now).div_euclid(86_400);
    if at <= now {
        format!("EXPIRED {date} ({} days ago)", -days)
    } else {
        format!("expires {date} ({days} days)")
    }
}
