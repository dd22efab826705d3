//! `maildr bench replication`: SMTP ingest on one site alone against three sites in
//! sync, optionally with a WAN delay between the sites.
//!
//! The single site is the private in-process site of `maildr bench smtp`. The three
//! sites are a real lab (`maildr lab up` in a temporary directory: three processes,
//! replication through the fault proxy), loaded at the primary's MX and, separately,
//! at the other data site's MX (every write forwarded to the primary). A delay is put
//! on every inter-site link through the lab's link control. It prints figures; it
//! decides nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::Args;
use maildr_config::SiteConfig;
use maildr_lab::fault_proxy::{DirectionFaults, LinkFaults};
use maildr_lab::link_client::LinkClient;

use crate::bench::{load, Figures, LoadShape, PrivateSite};
use crate::cluster_cmd::ControlClient;

#[derive(Args)]
pub struct ReplicationBench {
    #[command(flatten)]
    load: LoadShape,
    /// Round-trip delay added between every pair of sites, in milliseconds (half
    /// each way), e.g. 30 for two cities; 0 for plain loopback.
    #[arg(long, default_value_t = 0)]
    inter_site_delay_ms: u64,
    /// Network of the temporary lab (first two octets).
    #[arg(long, default_value = "127.250")]
    net: String,
}

/// Stops the temporary lab however the benchmark ends.
struct TemporaryLab {
    dir: PathBuf,
}

impl Drop for TemporaryLab {
    fn drop(&mut self) {
        let exe = std::env::current_exe().expect("own executable");
        let _ = Command::new(exe).args(["lab", "down", "--dir"]).arg(&self.dir).output();
    }
}

fn lab_up(dir: &Path, net: &str) -> Result<()> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).args(["lab", "up", "--net", net, "--dir"]).arg(dir).output()?;
    if !out.status.success() {
        bail!("lab up failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

pub async fn run(args: ReplicationBench) -> Result<()> {
    let temp = tempfile::tempdir()?;
    println!(
        "replication bench: {} messages of {} B per run, concurrency {}, inter-site delay {} ms RTT",
        args.load.messages, args.load.size, args.load.concurrency, args.inter_site_delay_ms
    );

    let site = PrivateSite::start(Some(temp.path().join("single"))).await?;
    let single = load(site.mx, "sink@bench.test", &args.load).await;
    site.stop().await;
    let single = single?;

    let lab_dir = temp.path().join("lab");
    let lab = TemporaryLab { dir: lab_dir.clone() };
    lab_up(&lab_dir, &args.net)?;
    let state = maildr_lab::state::LabState::load(&lab_dir)?.context("lab state missing after lab up")?;
    let client = ControlClient::new(SiteConfig::load(&state.site("bj").context("no site bj")?.config)?)?;
    let primary_id = client.status_of(client.local()).await?.leader.context("the lab has no primary")?;
    let primary = client.members().iter().find(|m| m.node_id == primary_id).context("primary not a member")?;
    let follower = client
        .members()
        .iter()
        .find(|m| m.role == maildr_config::SiteRole::Data && m.node_id != primary_id)
        .context("no second data site")?;
    if args.inter_site_delay_ms > 0 {
        let links = LinkClient::new(state.links.control_addr().map_err(anyhow::Error::msg)?);
        let one_way = DirectionFaults { latency_ms: args.inter_site_delay_ms / 2, ..Default::default() };
        for name in &state.links.names {
            links
                .set_faults(name, &LinkFaults { forward: one_way, backward: one_way, connection_loss_percent: 0 })
                .await?;
        }
    }
    let mx_of = |site: &str| -> Result<std::net::SocketAddr> {
        let s = state.site(site).with_context(|| format!("no site {site}"))?;
        Ok(std::net::SocketAddr::new(s.ip.into(), s.ports.smtp))
    };
    let rcpt = "alice@example.test";
    let at_primary = load(mx_of(&primary.site)?, rcpt, &args.load).await?;
    let at_follower = load(mx_of(&follower.site)?, rcpt, &args.load).await?;
    drop(lab);

    let row = |name: &str, f: &Figures| {
        println!(
            "{name:<38} {:>8.0} {:>9.2} {:>9.2} {:>9} {:>8}",
            f.per_sec(),
            f.p50_ms,
            f.p99_ms,
            f.accepted,
            f.refused
        )
    };
    println!("{:<38} {:>8} {:>9} {:>9} {:>9} {:>8}", "setup", "msgs/s", "p50 ms", "p99 ms", "accepted", "refused");
    row("one site alone", &single);
    row(&format!("3 sites, at the primary ({})", primary.site), &at_primary);
    row(&format!("3 sites, at the other data site ({})", follower.site), &at_follower);
    Ok(())
}
