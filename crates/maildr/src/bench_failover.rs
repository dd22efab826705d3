//! `maildr bench failover`: how long a lost primary takes to be replaced, as the
//! surviving data site and its clients see it, over many trials.
//!
//! Each trial waits until the lab is healthy (every site up, one primary, the
//! other data site caught up), puts a steady SMTP load on both data sites' MXs,
//! kills the primary (SIGKILL, like a power cut) and measures from the kill:
//! when the survivor is elected, when it has committed its first entry as
//! primary, when its MX answers 250 to a message sent after the kill, and when
//! its DNS server names it as `mail.`. Then it starts the killed site again. With
//! `--switchover` a trial is a planned hand-over instead, and the figure is the
//! write unavailability the clients saw (the longest time without any 250). It
//! prints every trial and p50/p90/p99/max; it decides nothing.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use maildr_client::smtp::{self, Envelope, Step};
use maildr_config::{ClusterMember, SiteConfig, SiteRole};
use maildr_lab::fault_proxy::{DirectionFaults, LinkFaults};
use maildr_lab::link_client::LinkClient;
use maildr_lab::state::LabState;

use crate::cluster_cmd::ControlClient;

#[derive(Args)]
pub struct FailoverBench {
    /// Trials to run (each a kill, or with `--switchover` a hand-over).
    #[arg(long, default_value_t = 10)]
    trials: u32,
    /// Measure planned switchovers instead of killing the primary.
    #[arg(long)]
    switchover: bool,
    /// Steady SMTP load over both data sites' MXs, messages per second in all.
    #[arg(long, default_value_t = 40)]
    load_per_sec: u32,
    /// Round-trip delay added between every pair of sites, in milliseconds.
    #[arg(long, default_value_t = 0)]
    inter_site_delay_ms: u64,
    /// Network of the temporary lab (first two octets).
    #[arg(long, default_value = "127.251")]
    net: String,
    /// A running lab to use instead of a temporary one (its primary is killed!).
    #[arg(long)]
    lab_dir: Option<PathBuf>,
    /// Give up on a trial (and report it as not recovered) after this long.
    #[arg(long, default_value_t = 60)]
    trial_timeout_secs: u64,
}

/// Most trials one run may ask for.
const TRIALS_MAX: u32 = 1_000;
/// Most load one run may ask for, in messages per second.
const LOAD_PER_SEC_MAX: u32 = 1_000;
/// SMTP connections of the steady load (half at each data site's MX).
const LOAD_CONNECTIONS: u32 = 8;
/// How often the survivor's status and DNS are asked during a trial.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// How long one status or DNS question may take.
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one SMTP exchange of the load may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the lab has to be healthy again between trials.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Most log entries the restarted site may lag behind before the next trial.
const READY_LAG_ENTRIES_MAX: u64 = 20;

/// What one kill trial measured, in milliseconds from the kill.
#[derive(Debug, Default, Clone)]
struct KillTrial {
    killed: String,
    survivor: String,
    elected_ms: Option<u64>,
    first_commit_ms: Option<u64>,
    first_250_ms: Option<u64>,
    dns_ms: Option<u64>,
}

/// What one switchover trial measured.
#[derive(Debug, Default, Clone)]
struct SwitchoverTrial {
    from: String,
    to: String,
    /// The hand-over's own report of its write unavailability.
    reported_ms: Option<u64>,
    /// The longest time no load connection got a 250, around the hand-over.
    observed_gap_ms: Option<u64>,
    /// From the request to the new primary's first 250 to a message sent after it.
    first_250_ms: Option<u64>,
    /// Load messages answered with anything but 250 (or not answered) around the
    /// hand-over, each a client that waits for its next try.
    not_accepted: usize,
}

/// Stops a temporary lab however the benchmark ends.
struct TemporaryLab {
    dir: PathBuf,
}

impl Drop for TemporaryLab {
    fn drop(&mut self) {
        let exe = std::env::current_exe().expect("own executable");
        let _ = std::process::Command::new(exe).args(["lab", "down", "--dir"]).arg(&self.dir).output();
    }
}

pub async fn run(args: FailoverBench) -> Result<()> {
    anyhow::ensure!((1..=TRIALS_MAX).contains(&args.trials), "--trials must be 1 to {TRIALS_MAX}");
    anyhow::ensure!(args.load_per_sec <= LOAD_PER_SEC_MAX, "--load-per-sec is at most {LOAD_PER_SEC_MAX}");
    let temp = tempfile::tempdir()?;
    let (dir, _temporary) = match &args.lab_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let dir = temp.path().join("lab");
            let exe = std::env::current_exe()?;
            let out =
                std::process::Command::new(exe).args(["lab", "up", "--net", &args.net, "--dir"]).arg(&dir).output()?;
            let lab = TemporaryLab { dir: dir.clone() };
            if !out.status.success() {
                bail!(
                    "lab up failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            (dir, Some(lab))
        }
    };
    let lab = Lab::load(&dir)?;
    if args.inter_site_delay_ms > 0 {
        lab.delay_links(args.inter_site_delay_ms).await?;
    }
    let first = lab.state.sites.first().context("the lab has no site")?;
    let site_config = SiteConfig::load(&first.config)?;
    let election = (site_config.cluster.election_timeout_min_ms, site_config.cluster.election_timeout_max_ms);
    let client = ControlClient::new(site_config)?;
    println!(
        "failover bench: {} {} on {} (election timeout {}–{} ms), load {} messages/s, inter-site delay {} ms RTT",
        args.trials,
        if args.switchover { "switchovers" } else { "kills of the primary" },
        dir.display(),
        election.0,
        election.1,
        args.load_per_sec,
        args.inter_site_delay_ms
    );
    let timeout = Duration::from_secs(args.trial_timeout_secs);
    if args.switchover {
        let mut trials = Vec::new();
        for n in 1..=args.trials {
            let (primary, other) = lab.wait_ready(&client).await?;
            let t = switchover_trial(&lab, &client, &primary, &other, args.load_per_sec, timeout).await?;
            println!(
                "trial {n:>3}: {} -> {}: reported {} ms, clients saw no 250 for {} ms, first 250 at the new primary {} ms, {} not accepted",
                t.from,
                t.to,
                shown(t.reported_ms),
                shown(t.observed_gap_ms),
                shown(t.first_250_ms),
                t.not_accepted
            );
            trials.push(t);
        }
        summary(&[
            ("unavailable, as reported", trials.iter().map(|t| t.reported_ms).collect()),
            ("no 250 at any MX", trials.iter().map(|t| t.observed_gap_ms).collect()),
            ("first 250 at the new primary", trials.iter().map(|t| t.first_250_ms).collect()),
        ]);
    } else {
        let mut trials = Vec::new();
        for n in 1..=args.trials {
            let (primary, survivor) = lab.wait_ready(&client).await?;
            let t = kill_trial(&lab, &client, &primary, &survivor, args.load_per_sec, timeout).await?;
            println!(
                "trial {n:>3}: killed {}, survivor {}: elected {} ms, first commit {} ms, first 250 {} ms, DNS {} ms",
                t.killed,
                t.survivor,
                shown(t.elected_ms),
                shown(t.first_commit_ms),
                shown(t.first_250_ms),
                shown(t.dns_ms)
            );
            let exe = std::env::current_exe()?;
            maildr_lab::supervisor::start(&exe, &dir, &t.killed, false)?;
            trials.push(t);
        }
        summary(&[
            ("elected", trials.iter().map(|t| t.elected_ms).collect()),
            ("first write committed", trials.iter().map(|t| t.first_commit_ms).collect()),
            ("first SMTP 250 at the survivor", trials.iter().map(|t| t.first_250_ms).collect()),
            ("DNS names the survivor", trials.iter().map(|t| t.dns_ms).collect()),
        ]);
    }
    if args.inter_site_delay_ms > 0 && args.lab_dir.is_some() {
        lab.delay_links(0).await?;
    }
    Ok(())
}

fn shown(ms: Option<u64>) -> String {
    ms.map_or_else(|| "never".to_string(), |m| m.to_string())
}

/// p50/p90/p99/max per figure (nearest rank); trials that never reached a point
/// are counted apart.
fn summary(rows: &[(&str, Vec<Option<u64>>)]) {
    println!("{:<32} {:>7} {:>7} {:>7} {:>7} {:>7}", "ms from the fault", "p50", "p90", "p99", "max", "never");
    for (name, values) in rows {
        let mut seen: Vec<u64> = values.iter().flatten().copied().collect();
        seen.sort_unstable();
        let never = values.len() - seen.len();
        let rank = |p: f64| -> String {
            if seen.is_empty() {
                return "-".into();
            }
            // Nearest rank: the smallest value with at least p of the values at or below it.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let i = ((p * seen.len() as f64).ceil() as usize).clamp(1, seen.len()) - 1;
            seen[i].to_string()
        };
        println!(
            "{name:<32} {:>7} {:>7} {:>7} {:>7} {never:>7}",
            rank(0.5),
            rank(0.9),
            rank(0.99),
            seen.last().map_or("-".into(), u64::to_string)
        );
    }
}

/// The lab, as its state file describes it.
struct Lab {
    dir: PathBuf,
    state: LabState,
}

impl Lab {
    fn load(dir: &Path) -> Result<Lab> {
        let state = LabState::load(dir)?.with_context(|| format!("no lab in {}", dir.display()))?;
        Ok(Lab { dir: dir.to_path_buf(), state })
    }

    fn mx(&self, site: &str) -> Result<SocketAddr> {
        let s = self.state.site(site).with_context(|| format!("no site {site}"))?;
        Ok(SocketAddr::new(s.ip.into(), s.ports.smtp))
    }

    fn dns(&self, site: &str) -> Result<(SocketAddr, IpAddr)> {
        let s = self.state.site(site).with_context(|| format!("no site {site}"))?;
        let port = s.ports.dns.with_context(|| format!("{site} serves no DNS"))?;
        Ok((SocketAddr::new(s.ip.into(), port), s.ip.into()))
    }

    async fn delay_links(&self, rtt_ms: u64) -> Result<()> {
        let links = LinkClient::new(self.state.links.control_addr().map_err(anyhow::Error::msg)?);
        let one_way = DirectionFaults { latency_ms: rtt_ms / 2, ..Default::default() };
        for name in &self.state.links.names {
            let faults = LinkFaults { forward: one_way, backward: one_way, connection_loss_percent: 0 };
            links.set_faults(name, &faults).await?;
        }
        Ok(())
    }

    /// Wait until every site answers, they agree on one primary, and the other
    /// data site has applied nearly all the primary has; (primary, other).
    async fn wait_ready(&self, client: &ControlClient) -> Result<(ClusterMember, ClusterMember)> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let last = match self.ready(client).await {
                Ok(pair) => return Ok(pair),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("the lab in {} was not healthy within {READY_TIMEOUT:?}: {last}", self.dir.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn ready(&self, client: &ControlClient) -> Result<(ClusterMember, ClusterMember)> {
        let mut leader = None;
        let mut applied = Vec::new();
        for member in client.members() {
            let s = client.status_within(member, POLL_TIMEOUT).await?;
            let l = s.leader.with_context(|| format!("{} knows no primary", member.site))?;
            anyhow::ensure!(*leader.get_or_insert(l) == l, "the sites disagree on the primary");
            anyhow::ensure!(s.missing_bodies == 0, "{} lacks {} bodies", member.site, s.missing_bodies);
            if member.role == SiteRole::Data {
                applied.push(s.applied_index.unwrap_or(0));
            }
        }
        let (lo, hi) = (applied.iter().min().copied().unwrap_or(0), applied.iter().max().copied().unwrap_or(0));
        anyhow::ensure!(hi - lo <= READY_LAG_ENTRIES_MAX, "a data site lags {} entries", hi - lo);
        let leader = leader.context("no members")?;
        let primary = client.members().iter().find(|m| m.node_id == leader).context("primary not configured")?;
        anyhow::ensure!(primary.role == SiteRole::Data, "the primary {} is not a data site", primary.site);
        let other = client
            .members()
            .iter()
            .find(|m| m.role == SiteRole::Data && m.node_id != leader)
            .context("no second data site")?;
        Ok((primary.clone(), other.clone()))
    }
}

/// Every reply the steady load got: (when it arrived, when its exchange began,
/// which MX, whether it was 250).
#[derive(Default)]
struct Replies(Mutex<Vec<(Instant, Instant, SocketAddr, bool)>>);

impl Replies {
    fn push(&self, arrived: Instant, began: Instant, mx: SocketAddr, ok: bool) {
        self.0.lock().expect("replies lock").push((arrived, began, mx, ok));
    }

    /// The first 250 at `mx` to an exchange begun at or after `since`.
    fn first_ok_after(&self, mx: SocketAddr, since: Instant) -> Option<Instant> {
        let r = self.0.lock().expect("replies lock");
        r.iter().filter(|(_, began, m, ok)| *ok && *m == mx && *began >= since).map(|(at, ..)| *at).min()
    }

    /// The longest time between two 250s (at any MX) that arrived in `from..to`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Option<Duration> {
        let r = self.0.lock().expect("replies lock");
        let mut oks: Vec<Instant> =
            r.iter().filter(|(at, _, _, ok)| *ok && *at >= from && *at <= to).map(|r| r.0).collect();
        oks.sort_unstable();
        oks.windows(2).map(|w| w[1] - w[0]).max()
    }

    /// Replies other than 250 (and exchanges that failed) that arrived in `from..to`.
    fn failed_between(&self, from: Instant, to: Instant) -> usize {
        let r = self.0.lock().expect("replies lock");
        r.iter().filter(|(at, _, _, ok)| !*ok && *at >= from && *at <= to).count()
    }
}

/// The steady load: `LOAD_CONNECTIONS` connections split over `mxs`, each paced to
/// its share of `per_sec`, until `stop` turns true. Each connection sends on its
/// own clock of fixed slots, staggered across the connections, and skips the
/// slots it missed while it waited for an answer: so a 250 is due every
/// `1 / per_sec` however long a hand-over held some of them. (Pacing each
/// connection from its last answer instead lines them all up behind the first
/// hold, and every later gap is then measured in steps of the whole pace.)
fn start_load(
    mxs: &[SocketAddr],
    per_sec: u32,
    replies: Arc<Replies>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let pace = Duration::from_secs_f64(f64::from(LOAD_CONNECTIONS) / f64::from(per_sec.max(1)));
    let start = tokio::time::Instant::now();
    (0..LOAD_CONNECTIONS)
        .map(|i| {
            let mx = mxs[i as usize % mxs.len()];
            let (replies, mut stop) = (Arc::clone(&replies), stop.clone());
            let first_slot = start + pace * i / LOAD_CONNECTIONS;
            tokio::spawn(async move {
                let next_slot = move || {
                    let late = tokio::time::Instant::now().saturating_duration_since(first_slot);
                    let slots = late.as_nanos().div_ceil(pace.as_nanos().max(1));
                    first_slot + pace * u32::try_from(slots).unwrap_or(u32::MAX)
                };
                let mut seq = 0u64;
                while !*stop.borrow() {
                    let session = tokio::select! {
                        s = connect(mx) => s,
                        _ = stop.changed() => return,
                    };
                    let Some(mut session) = session else {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    loop {
                        if *stop.borrow() {
                            session.quit().await;
                            return;
                        }
                        seq += 1;
                        let data = format!(
                            "From: load@bench.test\r\nTo: alice@example.test\r\nSubject: failover bench {i}-{seq}\r\n\r\nx\r\n"
                        );
                        let to = ["alice@example.test".to_string()];
                        let envelope =
                            Envelope { helo: "bench.test", from: "load@bench.test", to: &to, data: data.as_bytes() };
                        let began = Instant::now();
                        let sent = tokio::select! {
                            s = session.send_message(&envelope) => s,
                            _ = stop.changed() => return,
                        };
                        match sent {
                            Ok(outcome) => {
                                let ok = matches!(outcome.step, Step::Message) && outcome.reply.code == 250;
                                replies.push(Instant::now(), began, mx, ok);
                                if outcome.reply.code == 421 {
                                    break;
                                }
                            }
                            Err(_) => {
                                replies.push(Instant::now(), began, mx, false);
                                break;
                            }
                        }
                        tokio::time::sleep_until(next_slot()).await;
                    }
                }
            })
        })
        .collect()
}

async fn connect(mx: SocketAddr) -> Option<smtp::Session> {
    let mut session = smtp::Session::connect(mx, None, REPLY_TIMEOUT).await.ok()?;
    if session.banner().code != 220 {
        return None;
    }
    (session.ehlo("bench.test").await.ok()?.code == 250).then_some(session)
}

fn ms_since(t0: Instant, at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(t0).as_millis()).unwrap_or(u64::MAX)
}

async fn kill_trial(
    lab: &Lab,
    client: &ControlClient,
    primary: &ClusterMember,
    survivor: &ClusterMember,
    per_sec: u32,
    timeout: Duration,
) -> Result<KillTrial> {
    let (mx_primary, mx_survivor) = (lab.mx(&primary.site)?, lab.mx(&survivor.site)?);
    let (dns_survivor, survivor_ip) = lab.dns(&survivor.site)?;
    let mail_name = format!("mail.{}", lab.state.domain);
    let replies = Arc::new(Replies::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = start_load(&[mx_primary, mx_survivor], per_sec, Arc::clone(&replies), stop_rx);
    // Let the load settle into its pace before the fault.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut t = KillTrial { killed: primary.site.clone(), survivor: survivor.site.clone(), ..KillTrial::default() };
    let t0 = Instant::now();
    maildr_lab::supervisor::kill(&lab.dir, &primary.site)?
        .with_context(|| format!("{} was not running", primary.site))?;
    let deadline = t0 + timeout;
    let mut leading_from_index = None;
    while Instant::now() < deadline {
        let asked = Instant::now();
        if t.first_commit_ms.is_none() {
            if let Ok(s) = client.status_within(survivor, POLL_TIMEOUT).await {
                if s.leader == Some(survivor.node_id) && s.state == "Leader" {
                    let at = ms_since(t0, asked);
                    t.elected_ms.get_or_insert(at);
                    // The entry a new primary appends on election, and all before it.
                    let index = *leading_from_index.get_or_insert(s.last_log_index.unwrap_or(0));
                    if s.applied_index.unwrap_or(0) >= index {
                        t.first_commit_ms = Some(at);
                    }
                }
            }
        }
        if t.dns_ms.is_none() {
            let answer = maildr_client::dns::addresses(&[dns_survivor], &mail_name, POLL_TIMEOUT).await;
            if answer.is_ok_and(|a| a == [survivor_ip]) {
                t.dns_ms = Some(ms_since(t0, asked));
            }
        }
        t.first_250_ms = replies.first_ok_after(mx_survivor, t0).map(|at| ms_since(t0, at));
        if t.first_commit_ms.is_some() && t.dns_ms.is_some() && t.first_250_ms.is_some() {
            break;
        }
        tokio::time::sleep(POLL_EVERY.saturating_sub(asked.elapsed())).await;
    }
    let _ = stop_tx.send(true);
    for worker in load {
        let _ = worker.await;
    }
    Ok(t)
}

async fn switchover_trial(
    lab: &Lab,
    client: &ControlClient,
    primary: &ClusterMember,
    other: &ClusterMember,
    per_sec: u32,
    timeout: Duration,
) -> Result<SwitchoverTrial> {
    let (mx_primary, mx_other) = (lab.mx(&primary.site)?, lab.mx(&other.site)?);
    let replies = Arc::new(Replies::default());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let load = start_load(&[mx_primary, mx_other], per_sec, Arc::clone(&replies), stop_rx);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut t = SwitchoverTrial { from: primary.site.clone(), to: other.site.clone(), ..SwitchoverTrial::default() };
    let t0 = Instant::now();
    let report = tokio::time::timeout(timeout, maildr_cluster::ops::switchover(client, &other.site)).await;
    if let Ok(Ok(report)) = &report {
        t.reported_ms = Some(report.unavailable_ms);
    }
    let done = Instant::now();
    let deadline = t0 + timeout;
    while Instant::now() < deadline {
        if let Some(at) = replies.first_ok_after(mx_other, done) {
            t.first_250_ms = Some(ms_since(t0, at));
            break;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    // A second of load after the new primary's first 250, so a gap that ends late
    // is seen ending.
    tokio::time::sleep(Duration::from_secs(1)).await;
    t.not_accepted = replies.failed_between(t0 - Duration::from_secs(1), Instant::now());
    t.observed_gap_ms = replies
        .longest_gap(t0 - Duration::from_secs(1), Instant::now())
        .map(|g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX));
    let _ = stop_tx.send(true);
    for worker in load {
        let _ = worker.await;
    }
    if let Ok(Err(e)) = report {
        bail!("switchover {} -> {}: {e}", primary.site, other.site);
    }
    Ok(t)
}
