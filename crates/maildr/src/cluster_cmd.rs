//! `maildr cluster`: bootstrap, inspect, switch over, fail over and verify a
//! replicated cluster.
//!
//! These commands talk to running sites over the replication channel, presenting the
//! cluster secret from the site's config file, exactly as sites talk to each other.
//! They never open a site's files: everything they report is what the sites say.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use maildr_cluster::raft::network::PeerClient;
use maildr_cluster::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use maildr_cluster::status::{MailboxDigest, SiteStatus};
use maildr_config::{ClusterMember, SiteConfig, SiteRole};

#[derive(Subcommand)]
pub enum ClusterAction {
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
    /// Compare every mailbox's digest across all sites at one applied index; exits
    /// 1 when any diverges.
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

/// How long one control request may take.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);

/// Talks to the sites named in one site's configuration.
pub struct ControlClient {
    config: SiteConfig,
}

impl ControlClient {
    pub fn new(config: SiteConfig) -> Result<ControlClient> {
        if config.cluster.members.is_empty() {
            bail!("site {} has no [[cluster.members]]: it is not part of a cluster", config.site.name);
        }
        Ok(ControlClient { config })
    }

    /// The site whose config this is.
    pub fn local(&self) -> &ClusterMember {
        self.config.cluster_self().expect("config check: node_id is a member")
    }

    pub fn members(&self) -> &[ClusterMember] {
        &self.config.cluster.members
    }

    fn client(&self, member: &ClusterMember) -> PeerClient {
        // Our own site is reached at its listen address; others at the configured
        // address (in the lab: through this site's fault-proxy link).
        let addr = if member.node_id == self.config.cluster.node_id {
            self.config.cluster.listen.to_string()
        } else {
            member.addr.clone()
        };
        PeerClient::new(
            member.node_id,
            member.site.clone(),
            addr,
            self.config.cluster.secret.clone().unwrap_or_default(),
            None,
        )
    }

    /// This site's replication listener.
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.config.cluster.listen
    }

    pub async fn call(&self, member: &ClusterMember, request: ControlRequest) -> Result<ControlResponse> {
        self.call_with_timeout(member, request, CONTROL_TIMEOUT).await
    }

    pub async fn call_with_timeout(
        &self,
        member: &ClusterMember,
        request: ControlRequest,
        timeout: Duration,
    ) -> Result<ControlResponse> {
        let client = self.client(member);
        match client.call(&PeerRequest::Control(request), timeout, false).await? {
            PeerResponse::Control(Ok(response)) => Ok(response),
            PeerResponse::Control(Err(reason)) => Err(anyhow!("site {}: {reason}", member.site)),
            other => Err(anyhow!("site {} answered {other:?}", member.site)),
        }
    }

    pub async fn status_of(&self, member: &ClusterMember) -> Result<SiteStatus> {
        match self.call(member, ControlRequest::Status).await? {
            ControlResponse::Status(s) => Ok(*s),
            other => Err(anyhow!("site {} answered status with {other:?}", member.site)),
        }
    }

    pub fn member_named(&self, site: &str) -> Result<&ClusterMember> {
        self.members().iter().find(|m| m.site == site).with_context(|| {
            let names: Vec<&str> = self.members().iter().map(|m| m.site.as_str()).collect();
            format!("no member site {site:?}; members are {}", names.join(", "))
        })
    }
}

pub async fn run(action: ClusterAction) -> Result<()> {
    match action {
        ClusterAction::Init { config } => {
            let client = ControlClient::new(SiteConfig::load(&config)?)?;
            let local = client.local().clone();
            match client.call(&local, ControlRequest::Init).await? {
                ControlResponse::Initialized { already } => {
                    let status = client.status_of(&local).await?;
                    let leader = status.leader.and_then(|l| client.members().iter().find(|m| m.node_id == l));
                    let leader = leader.map(|m| m.site.as_str()).unwrap_or("?");
                    if already {
                        println!("cluster already initialised; primary is {leader}");
                    } else {
                        println!("cluster initialised with {} voters; primary is {leader}", status.voters.len());
                    }
                    Ok(())
                }
                other => bail!("unexpected answer to init: {other:?}"),
            }
        }
        ClusterAction::Status { config, json } => status(ControlClient::new(SiteConfig::load(&config)?)?, json).await,
        ClusterAction::Switchover { config, to } => {
            let client = ControlClient::new(SiteConfig::load(&config)?)?;
            let target = client.member_named(&to)?.clone();
            if target.role != maildr_config::SiteRole::Data {
                bail!("{to} is a {} site; only data sites become primary", target.role.name());
            }
            let local = client.local().clone();
            let leader = client.status_of(&local).await?.leader.context("no primary is known; switchover needs one")?;
            let primary = client
                .members()
                .iter()
                .find(|m| m.node_id == leader)
                .with_context(|| format!("the primary (node {leader}) is not in this config"))?
                .clone();
            match client.call(&primary, ControlRequest::HandOver { to: target.node_id }).await? {
                ControlResponse::BecamePrimary { unavailable_ms, term } => {
                    println!("{to} is primary (term {term}); writes were unavailable for at most {unavailable_ms} ms");
                    Ok(())
                }
                other => bail!("unexpected answer to switchover: {other:?}"),
            }
        }
        ClusterAction::Failover { force, to, config, accept_data_loss, by } => {
            anyhow::ensure!(force, "a forced failover needs --force");
            let config = SiteConfig::load(&config)?;
            let silence_ms =
                maildr_cluster::replicated::PRIMARY_SILENCE_ELECTION_TIMEOUTS * config.cluster.election_timeout_max_ms;
            failover(&ControlClient::new(config)?, &to, accept_data_loss, &by, silence_ms).await
        }
        ClusterAction::Rejoin { config } => {
            let client = ControlClient::new(SiteConfig::load(&config)?)?;
            let me = client.local().clone();
            let mut primary = None;
            for member in client.members().iter().filter(|m| m.node_id != me.node_id) {
                if let Ok(status) = client.status_of(member).await {
                    if let Some(leader) = status.leader {
                        primary =
                            client.members().iter().find(|m| m.node_id == leader).cloned().or(Some(member.clone()));
                        break;
                    }
                }
            }
            let primary = primary.context("no reachable member knows a primary")?;
            let request = ControlRequest::Rejoin {
                node_id: me.node_id,
                site: me.site.clone(),
                addr: client.listen_addr().to_string(),
            };
            match client.call_with_timeout(&primary, request, Duration::from_secs(600)).await? {
                ControlResponse::Rejoined { replaced, voters } => {
                    match replaced {
                        Some(old) => println!("{} rejoined as node {} in place of node {old}", me.site, me.node_id),
                        None => println!("{} is a voter as node {}", me.site, me.node_id),
                    }
                    println!("voters now: {voters:?}");
                    Ok(())
                }
                other => bail!("unexpected answer to rejoin: {other:?}"),
            }
        }
        ClusterAction::Verify { config, messages, json } => {
            let client = ControlClient::new(SiteConfig::load(&config)?)?;
            let report = verify(&client, messages).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.render());
            }
            if !report.diverging.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// How long `failover` waits for the promoted standby to restart and lead.
const FAILOVER_WAIT: Duration = Duration::from_secs(60);

/// `maildr cluster failover --force`: report what may be lost, then (only with the
/// operator's acceptance) promote the standby and wait until it leads.
async fn failover(client: &ControlClient, to: &str, accept_data_loss: bool, by: &str, silence_ms: u64) -> Result<()> {
    let target = client.member_named(to)?.clone();
    if target.role != SiteRole::Standby {
        bail!(
            "{to} is a {} site; a forced failover promotes only a standby (with a quorum, use `maildr cluster \
             switchover`)",
            target.role.name()
        );
    }
    if by.trim().is_empty() {
        bail!("--by names the operator who forces the failover; it is recorded");
    }
    let status = client.status_of(&target).await.with_context(|| format!("asking standby {to} for its status"))?;
    if let Some(done) = &status.forced_failover {
        bail!("{to} was already promoted by a forced failover ({})", done.event_detail());
    }
    print!("{}", loss_report(&status));
    if let Some(contact) = status.primary_contact.as_ref().filter(|c| c.heard_ms_ago < silence_ms) {
        bail!(
            "{to} heard from the primary (node {}) {} ms ago: the quorum is alive; use `maildr cluster switchover`",
            contact.primary,
            contact.heard_ms_ago
        );
    }
    if !accept_data_loss {
        bail!("refused: nothing changed. Add --accept-data-loss to promote {to} knowing the loss above");
    }
    match client.call(&target, ControlRequest::ForceFailover { by: by.to_string() }).await? {
        ControlResponse::ForcedFailover(record) => {
            println!("{to} accepted the forced failover by {} and restarts as the only voter", record.by)
        }
        other => bail!("unexpected answer to failover: {other:?}"),
    }
    let deadline = Instant::now() + FAILOVER_WAIT;
    loop {
        let answer = client.call_with_timeout(&target, ControlRequest::Status, Duration::from_secs(3)).await;
        if let Ok(ControlResponse::Status(s)) = &answer {
            if s.state == "Leader" && s.forced_failover.is_some() {
                println!("{to} is primary (term {}) and serves mail; the old sites must rejoin as new sites", s.term);
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "{to} accepted the forced failover but does not lead after {} s; see its log",
                FAILOVER_WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a forced failover to the standby `s` may lose, in words.
fn loss_report(s: &SiteStatus) -> String {
    let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("none".into());
    let mut out = format!(
        "standby {} (node {}): last log index {}, applied index {}\n",
        s.site,
        s.node_id,
        show(s.last_log_index),
        show(s.applied_index)
    );
    match &s.primary_contact {
        Some(c) => out.push_str(&format!(
            "last heard from the primary (node {}, term {}) {:.1} s ago; the primary had committed index {} then, \
             and the standby was {} entries behind\n",
            c.primary,
            c.term,
            c.heard_ms_ago as f64 / 1000.0,
            show(c.primary_committed_index),
            c.lag_entries_then()
        )),
        None => out.push_str("it has not heard from a primary since it started\n"),
    }
    let since = match &s.primary_contact {
        Some(c) => format!("{:.1} s ago", c.heard_ms_ago as f64 / 1000.0),
        None => "before the standby last started".into(),
    };
    out.push_str(&format!(
        "MAY BE LOST: whatever the old primary committed after index {}: what the standby lacked at the last \
         contact, and all mail acknowledged since then ({since})\n",
        show(s.last_log_index)
    ));
    out
}

/// What `maildr cluster status --json` prints.
#[derive(serde::Serialize)]
struct ClusterStatus {
    /// Site name of the primary, as the answering sites agree.
    leader: Option<String>,
    term: Option<u64>,
    members: Vec<MemberView>,
}

#[derive(serde::Serialize)]
struct MemberView {
    site: String,
    node_id: u64,
    role: String,
    reachable: bool,
    error: Option<String>,
    state: Option<String>,
    term: Option<u64>,
    leader: Option<String>,
    last_log_index: Option<u64>,
    applied_index: Option<u64>,
    lag_entries: Option<u64>,
    lag_seconds: Option<f64>,
    last_heard_ms_ago: Option<u64>,
    missing_bodies: Option<u64>,
    status: Option<SiteStatus>,
}

async fn status(client: ControlClient, json: bool) -> Result<()> {
    let mut answers = Vec::new();
    for member in client.members() {
        answers.push((member, client.status_of(member).await.map_err(|e| e.to_string())));
    }
    let statuses: BTreeMap<u64, &SiteStatus> =
        answers.iter().filter_map(|(m, a)| a.as_ref().ok().map(|s| (m.node_id, s))).collect();
    let site_of = |id: u64| client.members().iter().find(|m| m.node_id == id).map(|m| m.site.clone());
    // The primary is the reachable site that says it leads in the highest term.
    let primary = statuses.values().filter(|s| s.state == "Leader").max_by_key(|s| s.term);
    let leader = primary.map(|p| p.node_id);
    let local_id = client.local().node_id;
    let mut members = Vec::new();
    for (member, answer) in &answers {
        let s = answer.as_ref().ok();
        let from_primary = primary.and_then(|p| p.peers.iter().find(|peer| peer.node_id == member.node_id));
        let from_local =
            statuses.get(&local_id).and_then(|l| l.peers.iter().find(|peer| peer.node_id == member.node_id));
        members.push(MemberView {
            site: member.site.clone(),
            node_id: member.node_id,
            role: member.role.name().into(),
            reachable: answer.is_ok(),
            error: answer.as_ref().err().cloned(),
            state: s.map(|s| s.state.clone()),
            term: s.map(|s| s.term),
            leader: s.and_then(|s| s.leader).and_then(site_of),
            last_log_index: s.and_then(|s| s.last_log_index),
            applied_index: s.and_then(|s| s.applied_index),
            lag_entries: if Some(member.node_id) == leader {
                Some(0)
            } else {
                from_primary.and_then(|p| p.lag_entries)
            },
            lag_seconds: if Some(member.node_id) == leader {
                Some(0.0)
            } else {
                from_primary.and_then(|p| p.lag_seconds)
            },
            last_heard_ms_ago: if member.node_id == local_id {
                Some(0)
            } else {
                from_local.and_then(|p| p.last_heard_ms_ago)
            },
            missing_bodies: s.map(|s| s.missing_bodies),
            status: s.cloned(),
        });
    }
    let report = ClusterStatus { leader: leader.and_then(site_of), term: primary.map(|p| p.term), members };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "primary: {} (term {})",
            report.leader.as_deref().unwrap_or("none"),
            report.term.map(|t| t.to_string()).unwrap_or("-".into())
        );
        println!("SITE\tNODE\tROLE\tSTATE\tTERM\tLAST_LOG\tAPPLIED\tLAG_ENTRIES\tLAG_S\tHEARD_MS_AGO\tMISSING_BODIES");
        let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("-".into());
        for m in &report.members {
            if let Some(e) = &m.error {
                println!("{}\t{}\t{}\tUNREACHABLE: {e}", m.site, m.node_id, m.role);
                continue;
            }
            println!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                m.site,
                m.node_id,
                m.role,
                m.state.as_deref().unwrap_or("-"),
                show(m.term),
                show(m.last_log_index),
                show(m.applied_index),
                show(m.lag_entries),
                m.lag_seconds.map(|s| format!("{s:.1}")).unwrap_or("-".into()),
                show(m.last_heard_ms_ago),
                show(m.missing_bodies),
            );
        }
    }
    Ok(())
}

/// What `maildr cluster verify` found.
#[derive(serde::Serialize)]
pub struct VerifyReport {
    pub applied_index: u64,
    pub sites: Vec<String>,
    pub unreachable: Vec<String>,
    pub mailboxes: usize,
    pub diverging: Vec<Divergence>,
}

#[derive(serde::Serialize)]
pub struct Divergence {
    pub mailbox: u64,
    pub name: String,
    /// Each site's view of the mailbox (`None`: the site has no such mailbox).
    pub by_site: BTreeMap<String, Option<MailboxDigest>>,
    /// With `--messages`: for each site, the UIDs whose record differs from the
    /// first site's (or exists on one side only).
    pub differing_uids: BTreeMap<String, Vec<u32>>,
}

impl VerifyReport {
    fn render(&self) -> String {
        let mut out = format!(
            "compared {} mailboxes on {} at applied index {}\n",
            self.mailboxes,
            self.sites.join(", "),
            self.applied_index
        );
        for site in &self.unreachable {
            out.push_str(&format!("not compared: {site} is unreachable\n"));
        }
        if self.diverging.is_empty() {
            out.push_str("no divergence\n");
        }
        for d in &self.diverging {
            out.push_str(&format!("DIVERGES: mailbox {} ({})\n", d.mailbox, d.name));
            for (site, digest) in &d.by_site {
                match digest {
                    Some(g) => out.push_str(&format!(
                        "  {site}: {} messages, uidnext {}, digest {}\n",
                        g.message_count, g.uid_next, g.digest
                    )),
                    None => out.push_str(&format!("  {site}: no such mailbox\n")),
                }
            }
            for (site, uids) in &d.differing_uids {
                out.push_str(&format!("  {site} differs in UIDs {uids:?}\n"));
            }
        }
        out
    }
}

/// Compare digests of every reachable site at the same applied index: ask the
/// primary for its applied index, have every site wait until it applied at least
/// that, read digests with the index they were read at, and retry while sites read
/// at different indexes (writes kept coming).
pub async fn verify(client: &ControlClient, list_messages: bool) -> Result<VerifyReport> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut statuses = Vec::new();
        for member in client.members() {
            if let Ok(s) = client.status_of(member).await {
                statuses.push((member.clone(), s));
            }
        }
        let target = statuses.iter().filter_map(|(_, s)| s.applied_index).max().unwrap_or(0);
        let mut reads = Vec::new();
        let mut unreachable = Vec::new();
        for member in client.members() {
            let request = ControlRequest::Digests { applied_at_least: target, wait_ms: 10_000 };
            match client.call(member, request).await {
                Ok(ControlResponse::Digests { applied_index, mailboxes }) => {
                    reads.push((member.clone(), applied_index, mailboxes))
                }
                Ok(other) => bail!("site {} answered digests with {other:?}", member.site),
                Err(e) => {
                    tracing::warn!(site = %member.site, error = %e, "not compared");
                    unreachable.push(member.site.clone());
                }
            }
        }
        if reads.len() < 2 {
            bail!("fewer than two sites answered; nothing to compare (unreachable: {})", unreachable.join(", "));
        }
        let index = reads[0].1;
        if reads.iter().any(|(_, i, _)| *i != index) {
            if Instant::now() > deadline {
                bail!("sites kept applying new entries; could not read them all at one index within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        let mut by_mailbox: BTreeMap<u64, BTreeMap<String, Option<MailboxDigest>>> = BTreeMap::new();
        for (member, _, mailboxes) in &reads {
            for m in mailboxes {
                by_mailbox.entry(m.mailbox).or_default().insert(member.site.clone(), Some(m.clone()));
            }
        }
        let mailboxes = by_mailbox.len();
        let mut diverging = Vec::new();
        for (mailbox, mut views) in by_mailbox {
            for (member, _, _) in &reads {
                views.entry(member.site.clone()).or_insert(None);
            }
            let first = views.values().next().cloned().flatten();
            if views.values().all(|v| *v == first) {
                continue;
            }
            let name = views.values().flatten().next().map(|m| m.name.clone()).unwrap_or_default();
            let mut differing_uids = BTreeMap::new();
            if list_messages {
                let mut lists = Vec::new();
                for (member, _, _) in &reads {
                    let list = match client.call(member, ControlRequest::Messages { mailbox }).await? {
                        ControlResponse::Messages(list) => list,
                        other => bail!("site {} answered messages with {other:?}", member.site),
                    };
                    lists.push((member.site.clone(), list));
                }
                let (_, reference) = &lists[0];
                for (site, list) in &lists[1..] {
                    let mut uids: Vec<u32> = list
                        .iter()
                        .filter(|m| !reference.iter().any(|r| r.same_state(m)))
                        .map(|m| m.uid)
                        .chain(reference.iter().filter(|r| !list.iter().any(|m| r.same_state(m))).map(|m| m.uid))
                        .collect();
                    uids.sort_unstable();
                    uids.dedup();
                    differing_uids.insert(site.clone(), uids);
                }
            }
            diverging.push(Divergence { mailbox, name, by_site: views, differing_uids });
        }
        return Ok(VerifyReport {
            applied_index: index,
            sites: reads.iter().map(|(m, _, _)| m.site.clone()).collect(),
            unreachable,
            mailboxes,
            diverging,
        });
    }
}
