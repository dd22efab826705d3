//! `maildr lab`: the supervisor of a whole multi-site deployment on one machine.
//!
//! `lab up` writes a CA, certificates and one config per site, starts one
//! `maildr serve` process per site on its own loopback address plus one process
//! running every inter-site fault-proxy link (`lab links`, hidden), bootstraps
//! the cluster, domain and accounts through the running sites, and waits until
//! the lab is healthy. `stop-service`/`start-service` stop and start one service
//! of a running data site through its admin API's fault hooks. Everything later
//! commands need is in `lab.json` (`maildr_lab::state`); the addresses come from
//! `maildr_lab::topology`.
//!
//! The supervisor only starts, signals and observes processes, and asks a site's
//! fault hooks to stop or start one of its services: it never opens a
//! site's store, and it creates accounts with the same `maildr admin` commands an
//! operator would run. It never signals a pid whose command line is not one it
//! started (see `process`).

mod files;
mod process;

use std::ffi::OsStr;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use maildr_api::faults::Service;
use maildr_lab::state::{AccountState, LabState, LinksState, SiteState};
use maildr_lab::topology::{Net, Role, Topology, DOMAIN};
use serde_json::{json, Value};

use process::{LabProc, Liveness, Signal, Started};

/// How long stopped processes get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long the links process may take to serve its control API.
const LINKS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Cluster init and provisioning, from the moment every site runs.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);
/// Health (banners, greetings, a leader), in total.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// One `maildr admin` or `maildr cluster status` run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// One TCP connect or read of a health probe.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds of a probe.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);
/// How long `kill`/`pause`/`resume` wait to see the signal take effect.
const SIGNAL_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Accounts created in every lab (local parts at `DOMAIN`).
const ACCOUNTS: [&str; 3] = ["probe", "alice", "bob"];
/// Names `lab up` writes in the lab directory: a directory holding anything else
/// and no `lab.json` is not ours to wipe.
const LAB_ENTRIES: [&str; 6] = ["lab.json", "lab.json.tmp", "sites", "ca.pem", "ca-key.pem", "links.log"];

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
    /// Run the lab's fault-proxy links and their control API until SIGTERM
    /// (started by `lab up`).
    #[command(hide = true)]
    Links {
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
    match &action {
        LabAction::Up { dir, net, json, snapshot_after_entries, standby, lagged, dns_provider_config, no_steering } => {
            let topology = if *standby { Topology::with_standby(*net) } else { Topology::three_sites(*net) };
            let topology = if lagged.is_some() { topology.with_lagged() } else { topology };
            let dns_providers = match dns_provider_config {
                Some(file) => files::read_dns_providers(file)?,
                None => Vec::new(),
            };
            let options = UpOptions {
                snapshot_after_entries: *snapshot_after_entries,
                steering: !*no_steering,
                dns_providers,
                lagged_apply_delay_secs: lagged.unwrap_or(0),
            };
            up(&dir_of(dir)?, topology, *json, &options)
        }
        LabAction::Status { dir, json } => status(&dir_of(dir)?, *json),
        LabAction::Down { dir, keep } => down(&dir_of(dir)?, *keep),
        LabAction::Kill { site, dir } => kill(&dir_of(dir)?, site),
        LabAction::Start { site, dir } => start(&dir_of(dir)?, site),
        LabAction::Pause { site, dir } => pause_or_resume(&dir_of(dir)?, site, Signal::Stop),
        LabAction::Resume { site, dir } => pause_or_resume(&dir_of(dir)?, site, Signal::Cont),
        LabAction::StopService { site, service, dir } => switch_service(&dir_of(dir)?, site, *service, false),
        LabAction::StartService { site, service, dir } => switch_service(&dir_of(dir)?, site, *service, true),
        LabAction::Links { dir } => links(&dir_of(dir)?),
    }
}

// ---------------------------------------------------------------- lab up

/// How `lab up` builds the sites' configs.
#[derive(Debug, Clone)]
struct UpOptions {
    snapshot_after_entries: u64,
    /// `false`: the data sites never change the first DNS steering.
    steering: bool,
    /// `[[dns.providers]]` of every data site.
    dns_providers: Vec<maildr_config::DnsProviderConfig>,
    /// `cluster.apply_delay_secs` of the lagged site, when there is one.
    lagged_apply_delay_secs: u64,
}

fn up(dir: &Path, topology: Topology, json: bool, options: &UpOptions) -> Result<()> {
    clear_previous(dir)?;
    check_addresses_free(&topology)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut state = write_lab(dir, &topology, options)?;
    state.save()?;
    let exe = std::env::current_exe().context("finding the maildr binary")?;
    let mut started = Started::default();
    if let Err(e) = start_and_bootstrap(&exe, &topology, &mut state, &mut started) {
        started.stop(STOP_GRACE);
        state.links.pid = None;
        state.sites.iter_mut().for_each(|s| s.pid = None);
        let _ = state.save();
        return Err(e.context(format!("lab up in {} failed; every process it started is stopped", dir.display())));
    }
    started.release();
    print_status(&state, json);
    Ok(())
}

/// Stop what an earlier lab in `dir` left running (only processes that are really
/// its own), then wipe the directory.
fn clear_previous(dir: &Path) -> Result<()> {
    match LabState::load(dir) {
        Ok(Some(old)) => {
            let stopped = process::stop_all(&lab_procs(&old), STOP_GRACE)?;
            if !stopped.is_empty() {
                let names: Vec<String> = stopped.iter().map(|p| format!("{} (pid {})", p.label, p.pid)).collect();
                eprintln!("stopped the earlier lab in {}: {}", dir.display(), names.join(", "));
            }
        }
        Ok(None) => {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return Ok(());
            };
            for entry in entries {
                let name = entry.with_context(|| format!("listing {}", dir.display()))?.file_name();
                if !LAB_ENTRIES.iter().any(|n| OsStr::new(n) == name) {
                    bail!(
                        "{} holds {:?} and no lab.json: it is not a lab directory, so lab up will not wipe it; \
                         choose another --dir",
                        dir.display(),
                        name
                    );
                }
            }
        }
        Err(e) => bail!("{e}; not touching {}: stop its processes and remove it by hand", dir.display()),
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing the earlier lab in {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Refuse early, with a useful message, when another lab already uses this net.
fn check_addresses_free(topology: &Topology) -> Result<()> {
    for addr in topology.bound_addrs() {
        if let Err(e) = std::net::TcpListener::bind(addr) {
            bail!(
                "cannot listen on {addr} ({e}): is another lab running on --net {}? Stop it or choose another --net",
                topology.net
            );
        }
    }
    Ok(())
}

/// Certificates, configs and the initial state (no process yet).
fn write_lab(dir: &Path, topology: &Topology, options: &UpOptions) -> Result<LabState> {
    let (ca, tls) = files::write_certs(dir, topology)?;
    let accounts: Vec<AccountState> = ACCOUNTS
        .iter()
        .map(|user| AccountState { address: format!("{user}@{DOMAIN}"), password: crate::serve::generate_password() })
        .collect();
    let probe = accounts.iter().find(|a| a.address.starts_with("probe@")).expect("the lab has a probe account");
    let secrets = files::LabSecrets {
        cluster: hex::encode(rand::random::<[u8; 24]>()),
        api_token: hex::encode(rand::random::<[u8; 24]>()),
        probe: (probe.address.clone(), probe.password.clone()),
    };
    let sites: Vec<SiteState> = topology.sites.iter().map(|s| SiteState::planned(dir, s)).collect();
    for ((spec, site), tls) in topology.sites.iter().zip(&sites).zip(&tls) {
        let mut config = files::site_config(topology, spec, site, tls, &secrets);
        config.cluster.snapshot_after_entries = options.snapshot_after_entries;
        if spec.role == Role::Data {
            config.control.steering = options.steering;
            config.dns.providers = options.dns_providers.clone();
        }
        if spec.role == Role::Lagged {
            config.cluster.apply_delay_secs = options.lagged_apply_delay_secs;
        }
        files::write_config(&site.config, &config)?;
    }
    Ok(LabState {
        dir: dir.to_path_buf(),
        net: topology.net,
        domain: DOMAIN.to_string(),
        ca,
        links: LinksState {
            control: format!("http://{}", topology.control_addr()),
            pid: None,
            names: topology.links().into_iter().map(|l| l.name).collect(),
            log: dir.join("links.log"),
        },
        sites,
        accounts,
        api_token: secrets.api_token,
        steering: options.steering,
    })
}

fn start_and_bootstrap(exe: &Path, topology: &Topology, state: &mut LabState, started: &mut Started) -> Result<()> {
    let dir = state.dir.clone();
    let child = process::spawn_detached(
        exe,
        &[OsStr::new("lab"), OsStr::new("links"), OsStr::new("--dir"), dir.as_os_str()],
        &state.links.log,
    )?;
    state.links.pid = Some(child.id());
    started.push("the links process".into(), state.links.log.clone(), child);
    state.save()?;
    let control = topology.control_addr();
    if let Err(reason) = wait_for(started, Instant::now() + LINKS_START_TIMEOUT, || tcp_accepts(control))? {
        bail!(
            "the links process did not serve {control} within {} s ({reason}); see {}{}",
            LINKS_START_TIMEOUT.as_secs(),
            state.links.log.display(),
            process::log_tail(&state.links.log)
        );
    }
    for i in 0..state.sites.len() {
        let site = &state.sites[i];
        let child = spawn_site(exe, site)?;
        let pid = child.id();
        started.push(format!("site {}", site.site), site.log.clone(), child);
        state.sites[i].pid = Some(pid);
        state.save()?;
    }
    bootstrap(exe, state, started)?;
    wait_healthy(exe, state, started)
}

fn spawn_site(exe: &Path, site: &SiteState) -> Result<std::process::Child> {
    process::spawn_detached(exe, &[OsStr::new("serve"), OsStr::new("--config"), site.config.as_os_str()], &site.log)
}

/// The first data site's config: where the cluster and admin commands are sent.
fn bootstrap_config(state: &LabState) -> &Path {
    &state.sites.iter().find(|s| s.role == Role::Data).expect("a lab has a data site").config
}

/// `cluster init`, then the domain and accounts, all through the running sites.
fn bootstrap(exe: &Path, state: &LabState, started: &mut Started) -> Result<()> {
    let deadline = Instant::now() + BOOTSTRAP_TIMEOUT;
    for site in &state.sites {
        let addr = SocketAddr::from((site.ip, site.ports.replication));
        if let Err(reason) = wait_for(started, deadline, || tcp_accepts(addr))? {
            bail!(
                "site {} did not listen for replication on {addr} within {} s ({reason}); see {}{}",
                site.site,
                BOOTSTRAP_TIMEOUT.as_secs(),
                site.log.display(),
                process::log_tail(&site.log)
            );
        }
    }
    let config = bootstrap_config(state);
    let mut init = Command::new(exe);
    init.arg("cluster").arg("init").arg("--config").arg(config);
    let out = process::run_bounded(init, None, deadline.saturating_duration_since(Instant::now()))?;
    if !out.status.success() {
        bail!(
            "`maildr cluster init --config {}` failed ({}): {}; site logs: {}",
            config.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            site_logs(state)
        );
    }
    admin(exe, config, &["domain", "add", &state.domain], None)?;
    for account in &state.accounts {
        admin(
            exe,
            config,
            &["user", "add", &account.address, "--password-stdin"],
            Some(&format!("{}\n", account.password)),
        )?;
    }
    Ok(())
}

fn admin(exe: &Path, config: &Path, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut command = Command::new(exe);
    command.arg("admin").arg("--config").arg(config).args(args);
    let out = process::run_bounded(command, stdin, COMMAND_TIMEOUT)?;
    if !out.status.success() {
        bail!(
            "`maildr admin --config {} {}` failed ({}): {}",
            config.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn site_logs(state: &LabState) -> String {
    state.sites.iter().map(|s| s.log.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// Every data site answers SMTP and IMAP, and the cluster has a leader.
fn wait_healthy(exe: &Path, state: &LabState, started: &mut Started) -> Result<()> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    for site in state.sites.iter().filter(|s| s.role == Role::Data) {
        site_answers(site, started, deadline)?;
    }
    let config = bootstrap_config(state);
    if let Err(reason) = wait_for(started, deadline, || cluster_has_leader(exe, config, deadline))? {
        bail!(
            "the cluster has no leader after {} s (`maildr cluster status --config {} --json`: {reason}); site logs: {}",
            HEALTH_TIMEOUT.as_secs(),
            config.display(),
            site_logs(state)
        );
    }
    Ok(())
}

/// Wait until `site` greets on its SMTP and IMAP ports.
fn site_answers(site: &SiteState, started: &mut Started, deadline: Instant) -> Result<()> {
    let smtp = SocketAddr::from((site.ip, site.ports.smtp));
    let imap = SocketAddr::from((site.ip, site.ports.imap));
    for (service, addr, greeting, bye) in [("SMTP", smtp, "220", "QUIT\r\n"), ("IMAP", imap, "* OK", "a LOGOUT\r\n")] {
        if let Err(reason) = wait_for(started, deadline, || greets(addr, greeting, bye))? {
            bail!(
                "site {} did not answer {service} on {addr} in time ({reason}); see {}{}",
                site.site,
                site.log.display(),
                process::log_tail(&site.log)
            );
        }
    }
    Ok(())
}

/// Probe until it passes. `Err` when a started process exits; `Ok(Err(reason))`
/// when `deadline` passes, with the probe's last complaint.
fn wait_for(
    started: &mut Started,
    deadline: Instant,
    mut probe: impl FnMut() -> std::result::Result<(), String>,
) -> Result<std::result::Result<(), String>> {
    loop {
        started.check_running()?;
        match probe() {
            Ok(()) => return Ok(Ok(())),
            Err(reason) if Instant::now() >= deadline => return Ok(Err(reason)),
            Err(_) => std::thread::sleep(PROBE_INTERVAL),
        }
    }
}

fn tcp_accepts(addr: SocketAddr) -> std::result::Result<(), String> {
    TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT).map(drop).map_err(|e| e.to_string())
}

/// Connect, read the first line, check it starts with `greeting`, say `bye`.
fn greets(addr: SocketAddr, greeting: &str, bye: &str) -> std::result::Result<(), String> {
    use std::io::Read;
    let mut s = TcpStream::connect_timeout(&addr, PROBE_IO_TIMEOUT).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(PROBE_IO_TIMEOUT)).map_err(|e| e.to_string())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 512 && !line.ends_with(b"\n") {
        match s.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => line.push(byte[0]),
            Err(e) => return Err(format!("reading the greeting: {e}")),
        }
    }
    let _ = s.write_all(bye.as_bytes());
    let line = String::from_utf8_lossy(&line).trim_end().to_string();
    if line.starts_with(greeting) {
        Ok(())
    } else {
        Err(format!("greeting {line:?}"))
    }
}

fn cluster_has_leader(exe: &Path, config: &Path, deadline: Instant) -> std::result::Result<(), String> {
    // One run may not stretch the health bound by more than a probe's worth.
    let timeout = deadline.saturating_duration_since(Instant::now()).clamp(PROBE_IO_TIMEOUT, COMMAND_TIMEOUT);
    let mut command = Command::new(exe);
    command.arg("cluster").arg("status").arg("--config").arg(config).arg("--json");
    let out = process::run_bounded(command, None, timeout).map_err(|e| format!("{e:#}"))?;
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("output is not JSON: {e}"))?;
    if v.get("leader").is_none_or(Value::is_null) {
        return Err("no leader yet".into());
    }
    Ok(())
}

// ---------------------------------------------------------------- status

/// Every process `state` records, with the argument that proves it is ours.
fn lab_procs(state: &LabState) -> Vec<LabProc> {
    links_proc(state).into_iter().chain(state.sites.iter().filter_map(site_proc)).collect()
}

fn site_proc(site: &SiteState) -> Option<LabProc> {
    site.pid.map(|pid| LabProc { label: format!("site {}", site.site), pid, marker: site.config.clone() })
}

fn links_proc(state: &LabState) -> Option<LabProc> {
    state.links.pid.map(|pid| LabProc { label: "the links process".into(), pid, marker: state.dir.clone() })
}

fn load_required(dir: &Path) -> Result<LabState> {
    match LabState::load(dir)? {
        Some(state) => Ok(state),
        None => {
            bail!("no lab in {} (no lab.json); start one with `maildr lab up --dir {}`", dir.display(), dir.display())
        }
    }
}

fn status(dir: &Path, json: bool) -> Result<()> {
    let state = load_required(dir)?;
    if !print_status(&state, json) {
        let _ = std::io::stdout().flush();
        std::process::exit(1);
    }
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
fn print_status(state: &LabState, json: bool) -> bool {
    let links_live = links_proc(state).and_then(|p| p.state());
    let sites_live: Vec<Option<Liveness>> = state.sites.iter().map(|s| site_proc(s).and_then(|p| p.state())).collect();
    let all_alive = links_live.is_some() && sites_live.iter().all(Option::is_some);
    if json {
        let mut v = serde_json::to_value(state).expect("lab state serializes");
        v["links"]["alive"] = json!(links_live.is_some());
        for (site, live) in v["sites"].as_array_mut().expect("sites is an array").iter_mut().zip(&sites_live) {
            site["alive"] = json!(live.is_some());
            site["paused"] = json!(*live == Some(Liveness::Paused));
        }
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON prints"));
        return all_alive;
    }
    println!("lab {}  (net {}, domain {})", state.dir.display(), state.net, state.domain);
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
    for (s, live) in state.sites.iter().zip(&sites_live) {
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
        state_word(links_live),
        state.links.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        state.links.control,
        state.links.names.join(" ")
    );
    println!("accounts:");
    for a in &state.accounts {
        println!("  {:<24} {}", a.address, a.password);
    }
    if !state.steering {
        println!("DNS steering: off (lab up --no-steering): DNS keeps naming the first primary");
    }
    println!("CA (clients trust it): {}", state.ca.display());
    println!("logs: {}/sites/<site>/serve.log, {}", state.dir.display(), state.links.log.display());
    all_alive
}

// ---------------------------------------------------------------- down, kill, start, pause, resume

fn down(dir: &Path, keep: bool) -> Result<()> {
    let Some(mut state) = LabState::load(dir)? else {
        println!("no lab in {} (no lab.json): nothing to stop", dir.display());
        return Ok(());
    };
    let stopped = process::stop_all(&lab_procs(&state), STOP_GRACE)?;
    let what = if stopped.is_empty() {
        "no lab process was running".to_string()
    } else {
        format!(
            "stopped {}",
            stopped.iter().map(|p| format!("{} (pid {})", p.label, p.pid)).collect::<Vec<_>>().join(", ")
        )
    };
    if keep {
        state.links.pid = None;
        state.sites.iter_mut().for_each(|s| s.pid = None);
        state.save()?;
        println!("{what}; kept {}", dir.display());
    } else {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        println!("{what}; removed {}", dir.display());
    }
    Ok(())
}

fn find_site<'a>(state: &'a LabState, name: &str) -> Result<&'a SiteState> {
    state.site(name).with_context(|| {
        let names: Vec<&str> = state.sites.iter().map(|s| s.site.as_str()).collect();
        format!("the lab in {} has no site {name:?} (sites: {})", state.dir.display(), names.join(", "))
    })
}

fn kill(dir: &Path, name: &str) -> Result<()> {
    let state = load_required(dir)?;
    let site = find_site(&state, name)?;
    let Some(proc) = site_proc(site).filter(|p| p.state().is_some()) else {
        println!("site {name} is not running");
        return Ok(());
    };
    process::signal(proc.pid, Signal::Kill)?;
    if !process::wait_gone(std::slice::from_ref(&proc), Instant::now() + SIGNAL_SETTLE_TIMEOUT).is_empty() {
        bail!("site {name} (pid {}) is still there {} s after SIGKILL", proc.pid, SIGNAL_SETTLE_TIMEOUT.as_secs());
    }
    println!("killed site {name} (pid {})", proc.pid);
    Ok(())
}

fn pause_or_resume(dir: &Path, name: &str, sig: Signal) -> Result<()> {
    let state = load_required(dir)?;
    let site = find_site(&state, name)?;
    let Some(proc) = site_proc(site).filter(|p| p.state().is_some()) else {
        bail!("site {name} is not running (`maildr lab start {name}` starts it)");
    };
    let (want, done) = match sig {
        Signal::Stop => (Liveness::Paused, "paused"),
        _ => (Liveness::Running, "resumed"),
    };
    process::signal(proc.pid, sig)?;
    let deadline = Instant::now() + SIGNAL_SETTLE_TIMEOUT;
    while process::liveness(proc.pid) != want {
        if Instant::now() >= deadline {
            bail!(
                "site {name} (pid {}) is not {done} {} s after the signal",
                proc.pid,
                SIGNAL_SETTLE_TIMEOUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{done} site {name} (pid {})", proc.pid);
    Ok(())
}

fn start(dir: &Path, name: &str) -> Result<()> {
    let mut state = load_required(dir)?;
    let site = find_site(&state, name)?.clone();
    if let Some(proc) = site_proc(&site).filter(|p| p.state().is_some()) {
        println!("site {name} is already running (pid {})", proc.pid);
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding the maildr binary")?;
    let mut started = Started::default();
    let child = spawn_site(&exe, &site)?;
    let pid = child.id();
    started.push(format!("site {name}"), site.log.clone(), child);
    state.site_mut(name).expect("found above").pid = Some(pid);
    state.save()?;
    let ready = (|| {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        let addr = SocketAddr::from((site.ip, site.ports.replication));
        if let Err(reason) = wait_for(&mut started, deadline, || tcp_accepts(addr))? {
            bail!(
                "site {name} did not listen on {addr} in time ({reason}); see {}{}",
                site.log.display(),
                process::log_tail(&site.log)
            );
        }
        if site.role == Role::Data {
            site_answers(&site, &mut started, deadline)?;
        }
        Ok(())
    })();
    if let Err(e) = ready {
        started.stop(STOP_GRACE);
        state.site_mut(name).expect("found above").pid = None;
        let _ = state.save();
        return Err(e.context(format!("site {name} did not come back; it is stopped again")));
    }
    started.release();
    println!("started site {name} (pid {pid})");
    Ok(())
}

// ---------------------------------------------------------------- stop-service, start-service

fn parse_service(name: &str) -> std::result::Result<Service, String> {
    Service::parse(name).ok_or_else(|| {
        let known: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
        format!("no service {name:?}: the services are {}", known.join(", "))
    })
}

/// Stop or start `service` of data site `name` through its admin API's fault hooks.
fn switch_service(dir: &Path, name: &str, service: Service, running: bool) -> Result<()> {
    let state = load_required(dir)?;
    let site = find_site(&state, name)?;
    // The standby has an admin API (for a forced failover) but no services to stop.
    let (Role::Data, Some(port)) = (site.role, site.ports.http) else {
        let data: Vec<&str> = state.sites.iter().filter(|s| s.role == Role::Data).map(|s| s.site.as_str()).collect();
        let api = if site.ports.http.is_some() { "no fault hooks" } else { "no admin API and so no fault hooks" };
        bail!(
            "site {name} is a {} site: it has {api}; only data sites have them ({})",
            site.role.name(),
            data.join(", ")
        );
    };
    match site_proc(site).and_then(|p| p.state()) {
        Some(Liveness::Running) => {}
        Some(Liveness::Paused) => bail!("site {name} is paused (`maildr lab resume {name}` resumes it)"),
        _ => bail!("site {name} is not running (`maildr lab start {name}` starts it)"),
    }
    let addr = SocketAddr::from((site.ip, port));
    let client = maildr_lab::hooks_client::HooksClient::new(addr, &state.api_token);
    let verb = if running { "start" } else { "stop" };
    let answer = crate::runtime()?
        .block_on(client.set_running(service.name(), running))
        .with_context(|| format!("could not {verb} {service} at site {name}"))?;
    let listen: Vec<&str> =
        answer["listen"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let now = if answer["running"] == json!(true) { "running" } else { "stopped" };
    println!("{service} at site {name} is {now} ({})", listen.join(", "));
    Ok(())
}

// ---------------------------------------------------------------- the links process

fn links(dir: &Path) -> Result<()> {
    let state = load_required(dir)?;
    let topology = Topology::for_roles(state.net, state.sites.iter().map(|s| s.role));
    let specs = topology.links();
    crate::runtime()?.block_on(async {
        maildr_lab::link_control::serve_links(&specs, topology.control_addr(), stop_signal()).await
    })?;
    tracing::info!("links stopped");
    Ok(())
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
