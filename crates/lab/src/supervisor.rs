//! The lab supervisor behind `maildr lab`: up, status, down, kill, start, pause,
//! resume, stop-service, start-service, and the links process.
//!
//! `up` writes a CA, certificates and one config per site (`files`), starts one
//! `maildr serve` process per site on its own loopback address plus one process
//! running every inter-site fault-proxy link (`maildr lab links`), bootstraps the
//! cluster, domain and accounts through the running sites, and waits until the
//! lab is healthy (`bootstrap`). Everything later commands need is in `lab.json`
//! (`state`); the addresses come from `topology`.
//!
//! The supervisor only starts, signals and observes processes through the
//! `maildr` executable its caller names, and asks a site's fault hooks to stop or
//! start one of its services: it never opens a site's store, links no server
//! crate, and creates accounts with the same `maildr admin` commands an operator
//! would run. It never signals a pid whose command line is not one it started
//! (see `process`). It prints nothing: results go back to the caller, which prints.

use std::ffi::OsStr;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::bootstrap::{self, HEALTH_TIMEOUT};
use crate::files;
use crate::netns;
use crate::process::{self, LabProc, Liveness, Signal, Started};
use crate::s3_server;
use crate::state::{AccountState, LabState, LinksState, NetnsState, SiteState};
use crate::topology::{Role, Topology, DOMAIN};

/// How long stopped processes get between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long `kill`/`pause`/`resume` wait to see the signal take effect.
const SIGNAL_SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Accounts created in every lab (local parts at `DOMAIN`).
const ACCOUNTS: [&str; 3] = ["probe", "alice", "bob"];
/// Names `lab up` writes in the lab directory: a directory holding anything else
/// and no `lab.json` is not ours to wipe.
const LAB_ENTRIES: [&str; 9] =
    ["lab.json", "lab.json.tmp", "sites", "ca.pem", "ca-key.pem", "links.log", "backup", "s3", "audit"];

/// How `up` builds the sites' configs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Sites snapshot their state after this many entries.
    pub snapshot_after_entries: u64,
    /// `false`: the data sites never change the first DNS steering.
    pub steering: bool,
    /// `[[dns.providers]]` of every data site.
    pub dns_providers: Vec<maildr_config::DnsProviderConfig>,
    /// `cluster.apply_delay_secs` of the lagged site, when there is one.
    pub lagged_apply_delay_secs: u64,
    /// Makes the password of each lab account (the server's generator, passed in
    /// so the lab links no server crate).
    pub generate_password: fn() -> String,
    /// Back up: a key and a directory target per data site (`<dir>/backup/`).
    pub backup: bool,
    /// Further `[[backup.targets]]` of every site that backs up.
    pub backup_targets: Vec<maildr_config::BackupTargetConfig>,
    /// `backup.schedule` of every site that backs up (empty: none).
    pub backup_schedule: String,
    /// With `backup`: also start an S3 server for the lab and back up to it, when
    /// SeaweedFS (`weed`) is installed.
    pub backup_s3: bool,
    /// Outbound delivery on every site, with these `[[outbound.routes]]` (empty:
    /// outbound stays off).
    pub outbound_routes: Vec<maildr_config::OutboundRoute>,
    /// `smtp.resolvers` of every site (empty: the lab's own DNS servers).
    pub resolvers: Vec<std::net::SocketAddr>,
}

/// The resolvers a lab site asks for SPF, DKIM and DMARC when none were given:
/// the lab's own DNS servers (its own first), which answer for the lab's zone and
/// refuse every other name at once. The lab so never asks a resolver outside its
/// own addresses, and a check never waits on one that cannot be reached.
fn lab_resolvers(topology: &Topology, site: &crate::topology::SiteSpec) -> Vec<SocketAddr> {
    let own = std::iter::once(site).filter(|s| s.role == Role::Data);
    let others = topology.sites.iter().filter(|s| s.role == Role::Data && s.name != site.name);
    own.chain(others).map(|s| s.addr(crate::topology::ports::DNS)).collect()
}

/// The lab's first retry after a temporary outbound failure, in seconds (a
/// production site waits a minute), and its longest wait.
pub const LAB_OUTBOUND_RETRY_SECS: (u64, u64) = (2, 30);

// ---------------------------------------------------------------- up

/// Start a fresh lab of `topology` in `dir` with processes of `exe` (the `maildr`
/// executable). `dir` must hold no lab: call [`clear_previous`] first. On failure
/// every process it started is stopped again.
pub fn up(exe: &Path, dir: &Path, topology: Topology, options: &UpOptions) -> Result<LabState> {
    if LabState::load(dir)?.is_some() {
        bail!("{} still holds a lab: clear it first", dir.display());
    }
    if topology.wan.is_some() {
        if !netns::is_root() {
            bail!(
                "lab up --netns must run as root: it makes network namespaces and TAP devices \
                 (the loopback lab, without --netns, needs no privileges)"
            );
        }
        netns::remove_leftovers(topology.net)?;
    } else {
        check_addresses_free(&topology)?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut state = write_lab(exe, dir, &topology, options)?;
    // Saved before any namespace exists, so a crash from here on leaves a lab.json
    // that names everything `lab down` or the next `lab up` must remove.
    state.save()?;
    let mut started = Started::default();
    let result =
        make_namespaces(&state).and_then(|()| bootstrap::start_and_bootstrap(exe, &topology, &mut state, &mut started));
    if let Err(e) = result {
        started.stop(STOP_GRACE);
        state.links.pid = None;
        state.s3.iter_mut().for_each(|s| s.pid = None);
        state.sites.iter_mut().for_each(|s| s.pid = None);
        let _ = state.save();
        let _ = remove_namespaces(&state);
        return Err(e.context(format!("lab up in {} failed; every process it started is stopped", dir.display())));
    }
    started.release();
    Ok(state)
}

/// Make the namespaces of a netns lab and move this thread into the client one,
/// where everything the supervisor starts and asks from now on runs.
fn make_namespaces(state: &LabState) -> Result<()> {
    let Some(net) = &state.netns else {
        return Ok(());
    };
    for name in state.namespaces() {
        netns::create(&name)?;
    }
    netns::enter(&net.client)
}

/// Remove a netns lab's namespaces. A process of this lab still in one (a site
/// a crashed `lab up` started but never recorded) is stopped first; the calling
/// process is never one of them.
fn remove_namespaces(state: &LabState) -> Result<()> {
    for name in state.namespaces() {
        if !netns::exists(&name) {
            continue;
        }
        let markers: Vec<&Path> =
            std::iter::once(state.dir.as_path()).chain(state.sites.iter().map(|s| s.config.as_path())).collect();
        let strays: Vec<LabProc> = netns::pids(&name)?
            .into_iter()
            .filter(|pid| *pid != std::process::id())
            .filter_map(|pid| {
                let marker = markers.iter().find(|m| process::is_ours(pid, m))?;
                Some(LabProc { label: format!("lab process {pid} in {name}"), pid, marker: marker.to_path_buf() })
            })
            .collect();
        process::stop_all(&strays, STOP_GRACE)?;
        netns::delete(&name)?;
    }
    Ok(())
}

/// Move this thread into the client namespace of the lab `state` describes, when
/// it is a netns lab: its sites are reached from there only. Call it before any
/// thread that talks to the sites is started.
pub fn enter_network(state: &LabState) -> Result<()> {
    let Some(net) = &state.netns else {
        return Ok(());
    };
    if netns::is_current(&net.client) {
        return Ok(());
    }
    if !netns::is_root() {
        bail!("the lab in {} is a netns lab: its sites are reached only as root", state.dir.display());
    }
    netns::enter(&net.client).with_context(|| format!("is the netns lab in {} still up?", state.dir.display()))
}

/// The topology of the lab `state` describes.
fn topology_of(state: &LabState) -> Topology {
    let topology = Topology::for_roles(state.net, state.sites.iter().map(|s| s.role));
    match &state.netns {
        Some(n) => topology.on_wan(n.wan),
        None => topology,
    }
}

/// Stop what an earlier lab in `dir` left running (only processes that are really
/// its own), then wipe the directory. Returns the processes it stopped.
pub fn clear_previous(dir: &Path) -> Result<Vec<LabProc>> {
    let mut stopped = Vec::new();
    match LabState::load(dir) {
        Ok(Some(old)) => {
            stopped = process::stop_all(&lab_procs(&old), STOP_GRACE)?;
            remove_namespaces(&old)?;
        }
        Ok(None) => {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return Ok(stopped);
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
        _ => Ok(stopped),
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
fn write_lab(exe: &Path, dir: &Path, topology: &Topology, options: &UpOptions) -> Result<LabState> {
    let (ca, tls) = files::write_certs(exe, dir, topology)?;
    let accounts: Vec<AccountState> = ACCOUNTS
        .iter()
        .map(|user| AccountState { address: format!("{user}@{DOMAIN}"), password: (options.generate_password)() })
        .collect();
    let probe = accounts.iter().find(|a| a.address.starts_with("probe@")).expect("the lab has a probe account");
    let secrets = files::LabSecrets {
        cluster: hex::encode(rand::random::<[u8; 24]>()),
        api_token: hex::encode(rand::random::<[u8; 24]>()),
        probe: (probe.address.clone(), probe.password.clone()),
    };
    let mut sites: Vec<SiteState> = topology.sites.iter().map(|s| SiteState::planned(dir, s)).collect();
    let netns = topology.wan.map(|wan| {
        for site in &mut sites {
            site.netns = Some(netns::name(topology.net, &site.site));
        }
        NetnsState { wan, client: netns::name(topology.net, netns::CLIENT), client_ip: wan.client() }
    });
    let mut extra_targets = options.backup_targets.clone();
    let s3 = match s3_server::find_weed().filter(|_| options.backup && options.backup_s3) {
        Some(weed) => {
            let (s3, target) = s3_server::plan(dir, topology, &weed)?;
            extra_targets.push(target);
            Some(s3)
        }
        None => None,
    };
    let backup = if options.backup {
        let mut section = files::write_backup_setup(dir, topology, &extra_targets)?;
        section.schedule = options.backup_schedule.clone();
        Some(section)
    } else {
        None
    };
    for ((spec, site), tls) in topology.sites.iter().zip(&sites).zip(&tls) {
        let mut config = files::site_config(topology, spec, site, tls, &secrets);
        if let Some(section) = backup.as_ref().filter(|_| matches!(spec.role, Role::Data | Role::Standby)) {
            config.backup = section.clone();
        }
        config.cluster.snapshot_after_entries = options.snapshot_after_entries;
        if spec.role == Role::Data {
            config.control.steering = options.steering;
            config.dns.providers = options.dns_providers.clone();
        }
        if spec.role == Role::Lagged {
            config.cluster.apply_delay_secs = options.lagged_apply_delay_secs;
        }
        config.smtp.resolvers =
            if options.resolvers.is_empty() { lab_resolvers(topology, spec) } else { options.resolvers.clone() };
        if !options.outbound_routes.is_empty() {
            config.outbound.enabled = true;
            config.outbound.routes = options.outbound_routes.clone();
            (config.outbound.retry_initial_secs, config.outbound.retry_max_secs) = LAB_OUTBOUND_RETRY_SECS;
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
        netns,
        s3,
    })
}

// ---------------------------------------------------------------- status

/// Every process `state` records, with the argument that proves it is ours.
fn lab_procs(state: &LabState) -> Vec<LabProc> {
    links_proc(state).into_iter().chain(s3_proc(state)).chain(state.sites.iter().filter_map(site_proc)).collect()
}

fn s3_proc(state: &LabState) -> Option<LabProc> {
    let s3 = state.s3.as_ref()?;
    s3.pid.map(|pid| LabProc { label: "the S3 server".into(), pid, marker: s3.data_dir.clone() })
}

fn site_proc(site: &SiteState) -> Option<LabProc> {
    site.pid.map(|pid| LabProc { label: format!("site {}", site.site), pid, marker: site.config.clone() })
}

fn links_proc(state: &LabState) -> Option<LabProc> {
    state.links.pid.map(|pid| LabProc { label: "the links process".into(), pid, marker: state.dir.clone() })
}

/// The lab in `dir`, or an error saying how to start one.
pub fn load_required(dir: &Path) -> Result<LabState> {
    match LabState::load(dir)? {
        Some(state) => Ok(state),
        None => {
            bail!("no lab in {} (no lab.json); start one with `maildr lab up --dir {}`", dir.display(), dir.display())
        }
    }
}

/// A lab and which of its processes are alive (and ours) right now.
#[derive(Debug, Clone)]
pub struct LabStatus {
    pub state: LabState,
    /// The links process: `None` when it is down.
    pub links: Option<Liveness>,
    /// The S3 server, when the lab has one: `None` when it is down.
    pub s3: Option<Liveness>,
    /// Each site of `state.sites`, in order: `None` when it is down.
    pub sites: Vec<Option<Liveness>>,
}

impl LabStatus {
    /// Look at every process `state` records.
    pub fn of(state: LabState) -> LabStatus {
        let links = links_proc(&state).and_then(|p| p.state());
        let s3 = s3_proc(&state).and_then(|p| p.state());
        let sites = state.sites.iter().map(|s| site_proc(s).and_then(|p| p.state())).collect();
        LabStatus { state, links, s3, sites }
    }

    /// Whether every process of the lab is alive.
    pub fn all_alive(&self) -> bool {
        self.links.is_some() && (self.state.s3.is_none() || self.s3.is_some()) && self.sites.iter().all(Option::is_some)
    }

    /// `lab.json` with `alive` on the links (and the S3 server) and `alive`/`paused`
    /// on each site.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(&self.state).expect("lab state serializes");
        v["links"]["alive"] = json!(self.links.is_some());
        if self.state.s3.is_some() {
            v["s3"]["alive"] = json!(self.s3.is_some());
        }
        for (site, live) in v["sites"].as_array_mut().expect("sites is an array").iter_mut().zip(&self.sites) {
            site["alive"] = json!(live.is_some());
            site["paused"] = json!(*live == Some(Liveness::Paused));
        }
        v
    }
}

/// The status of the lab in `dir`.
pub fn status(dir: &Path) -> Result<LabStatus> {
    Ok(LabStatus::of(load_required(dir)?))
}

// ---------------------------------------------------------------- down, kill, start, pause, resume

/// What `down` did.
#[derive(Debug, Clone)]
pub struct Down {
    /// The processes it stopped (none if nothing was running).
    pub stopped: Vec<LabProc>,
    /// Whether the directory was kept.
    pub kept: bool,
}

/// Stop every process of the lab in `dir`, then remove the directory (or, with
/// `keep`, mark the processes stopped in `lab.json`). `None`: there is no lab.
pub fn down(dir: &Path, keep: bool) -> Result<Option<Down>> {
    let Some(mut state) = LabState::load(dir)? else {
        return Ok(None);
    };
    let stopped = process::stop_all(&lab_procs(&state), STOP_GRACE)?;
    // Nothing runs in them any more; a kept lab is started afresh by `lab up`.
    remove_namespaces(&state)?;
    if keep {
        state.links.pid = None;
        state.s3.iter_mut().for_each(|s| s.pid = None);
        state.sites.iter_mut().for_each(|s| s.pid = None);
        state.save()?;
    } else {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(Some(Down { stopped, kept: keep }))
}

fn find_site<'a>(state: &'a LabState, name: &str) -> Result<&'a SiteState> {
    state.site(name).with_context(|| {
        let names: Vec<&str> = state.sites.iter().map(|s| s.site.as_str()).collect();
        format!("the lab in {} has no site {name:?} (sites: {})", state.dir.display(), names.join(", "))
    })
}

/// SIGKILL site `name` and wait until it is gone. Its pid, or `None` when it was
/// not running.
pub fn kill(dir: &Path, name: &str) -> Result<Option<u32>> {
    let state = load_required(dir)?;
    let site = find_site(&state, name)?;
    let Some(proc) = site_proc(site).filter(|p| p.state().is_some()) else {
        return Ok(None);
    };
    process::signal(proc.pid, Signal::Kill)?;
    if !process::wait_gone(std::slice::from_ref(&proc), Instant::now() + SIGNAL_SETTLE_TIMEOUT).is_empty() {
        bail!("site {name} (pid {}) is still there {} s after SIGKILL", proc.pid, SIGNAL_SETTLE_TIMEOUT.as_secs());
    }
    Ok(Some(proc.pid))
}

/// SIGSTOP site `name` and wait until it is stopped; its pid.
pub fn pause(dir: &Path, name: &str) -> Result<u32> {
    pause_or_resume(dir, name, Signal::Stop)
}

/// SIGCONT a paused site `name` and wait until it runs; its pid.
pub fn resume(dir: &Path, name: &str) -> Result<u32> {
    pause_or_resume(dir, name, Signal::Cont)
}

fn pause_or_resume(dir: &Path, name: &str, sig: Signal) -> Result<u32> {
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
    Ok(proc.pid)
}

/// What `start` found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiteStart {
    /// The site was running already, with this pid.
    AlreadyRunning(u32),
    /// The site was started and answers, with this pid.
    Started(u32),
}

/// Start a stopped or killed site `name` again with the same config (a process of
/// `exe`), with `new_cluster` as a site of a new cluster that never held data, and
/// wait until it answers; if it does not, it is stopped again.
pub fn start(exe: &Path, dir: &Path, name: &str, new_cluster: bool) -> Result<SiteStart> {
    let mut state = load_required(dir)?;
    enter_network(&state)?;
    let site = find_site(&state, name)?.clone();
    if let Some(proc) = site_proc(&site).filter(|p| p.state().is_some()) {
        return Ok(SiteStart::AlreadyRunning(proc.pid));
    }
    let mut started = Started::default();
    let child = bootstrap::spawn_site(exe, &site, new_cluster)?;
    let pid = child.id();
    started.push(format!("site {name}"), site.log.clone(), child);
    state.site_mut(name).expect("found above").pid = Some(pid);
    state.save()?;
    if let Err(e) = wait_started(&site, &mut started) {
        started.stop(STOP_GRACE);
        state.site_mut(name).expect("found above").pid = None;
        let _ = state.save();
        return Err(e.context(format!("site {name} did not come back; it is stopped again")));
    }
    started.release();
    Ok(SiteStart::Started(pid))
}

/// A restarted site listens for replication and, if it serves mail, greets.
fn wait_started(site: &SiteState, started: &mut Started) -> Result<()> {
    let deadline = Instant::now() + HEALTH_TIMEOUT;
    let addr = SocketAddr::from((site.ip, site.ports.replication));
    if let Err(reason) = bootstrap::wait_for(started, deadline, || bootstrap::tcp_accepts(addr))? {
        bail!(
            "site {} did not listen on {addr} in time ({reason}); see {}{}",
            site.site,
            site.log.display(),
            process::log_tail(&site.log)
        );
    }
    if site.role == Role::Data {
        bootstrap::site_answers(site, started, deadline)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- stop-service, start-service

/// A service as a site's fault hooks report it after a switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSwitched {
    pub running: bool,
    /// The addresses it listens on while running.
    pub listen: Vec<String>,
}

/// Stop or start `service` (`smtp`, `submission`, `imap`, `dns`) of data site
/// `name` through its admin API's fault hooks.
pub fn switch_service(dir: &Path, name: &str, service: &str, running: bool) -> Result<ServiceSwitched> {
    let state = load_required(dir)?;
    enter_network(&state)?;
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
    let client = crate::hooks_client::HooksClient::new(addr, &state.api_token);
    let verb = if running { "start" } else { "stop" };
    let answer = runtime()?
        .block_on(client.set_running(service, running))
        .with_context(|| format!("could not {verb} {service} at site {name}"))?;
    let listen = answer["listen"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
        .unwrap_or_default();
    Ok(ServiceSwitched { running: answer["running"] == json!(true), listen })
}

// ---------------------------------------------------------------- the links process

/// Run the fault-proxy links of the lab in `dir` and their control API until
/// SIGTERM or Ctrl-C.
pub fn links(dir: &Path) -> Result<()> {
    let state = load_required(dir)?;
    let topology = topology_of(&state);
    let control = topology.control_addr();
    let served = match &state.netns {
        None => {
            let specs = topology.links();
            runtime()?.block_on(crate::link_control::serve_links(&specs, control, stop_signal()))
        }
        Some(net) => {
            let mut ports = Vec::new();
            for site in &state.sites {
                let ns =
                    site.netns.clone().with_context(|| format!("lab.json names no namespace for {}", site.site))?;
                ports.push(crate::wire::PortSpec {
                    name: site.site.clone(),
                    netns: ns,
                    address: format!("{}/24", site.ip),
                });
            }
            ports.push(crate::wire::PortSpec {
                name: netns::CLIENT.into(),
                netns: net.client.clone(),
                address: format!("{}/24", net.client_ip),
            });
            let sites = state.sites.iter().map(|s| s.site.clone()).collect();
            runtime()?.block_on(crate::link_control::serve_wire(&ports, sites, control, stop_signal()))
        }
    };
    served?;
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

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    #[test]
    fn a_lab_site_asks_the_lab_s_own_dns_servers_its_own_first_and_nothing_outside() {
        let t = Topology::three_sites("127.5".parse().unwrap());
        let at = |name: &str| lab_resolvers(&t, t.sites.iter().find(|s| s.name == name).unwrap());
        let dns =
            |third: u8| SocketAddr::from((std::net::Ipv4Addr::new(127, 5, third, 1), crate::topology::ports::DNS));
        assert_eq!(at("bj"), [dns(10), dns(20)]);
        assert_eq!(at("sh"), [dns(20), dns(10)]);
        // The witness serves no DNS of its own; it asks the data sites'.
        assert_eq!(at("hz"), [dns(10), dns(20)]);
    }
}
