//! Bringing a written lab to life: start the links process, the S3 server if the
//! lab has one, and one `maildr serve` per site, initialise the cluster, create the domain and accounts, and wait
//! until every data site greets and the cluster has a leader.
//!
//! Everything goes through the `maildr` executable the caller names, as an
//! operator would run it (`serve`, `cluster init`, `admin`, `cluster status`):
//! this module never opens a site's store or links a server crate. Every wait has
//! a deadline, and a started process that exits fails the wait at once.

use std::ffi::OsStr;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::Value;

use crate::process::{self, Started};
use crate::state::{LabState, SiteState};
use crate::topology::{Role, Topology};

/// How long the links process may take to serve its control API.
const LINKS_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Cluster init and provisioning, from the moment every site runs.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(60);
/// Health (banners, greetings, a leader), in total.
pub(crate) const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// One `maildr admin` or `maildr cluster status` run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// One TCP connect or read of a health probe.
const PROBE_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between two rounds of a probe.
const PROBE_INTERVAL: Duration = Duration::from_millis(200);

/// Start every process of the lab `state` describes (recording their pids in
/// `started` and in `lab.json`), bootstrap it, and wait until it is healthy.
pub(crate) fn start_and_bootstrap(
    exe: &Path,
    topology: &Topology,
    state: &mut LabState,
    started: &mut Started,
) -> Result<()> {
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
    if let Some(s3) = state.s3.as_mut() {
        crate::s3_server::start(s3, topology.control_addr().ip(), started)?;
        state.save()?;
    }
    for i in 0..state.sites.len() {
        let site = &state.sites[i];
        let child = spawn_site(exe, site, false)?;
        let pid = child.id();
        started.push(format!("site {}", site.site), site.log.clone(), child);
        state.sites[i].pid = Some(pid);
        state.save()?;
    }
    bootstrap(exe, state, started)?;
    wait_healthy(exe, state, started)
}

/// `maildr serve --config <site config> [--new-cluster]`, detached, output appended
/// to the site's log. In a netns lab the process starts inside the site's own
/// namespace.
pub(crate) fn spawn_site(exe: &Path, site: &SiteState, new_cluster: bool) -> Result<std::process::Child> {
    let mut args = vec![OsStr::new("serve"), OsStr::new("--config"), site.config.as_os_str()];
    if new_cluster {
        args.push(OsStr::new("--new-cluster"));
    }
    process::spawn_detached_in(exe, &args, &site.log, site.netns.as_deref())
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
pub(crate) fn site_answers(site: &SiteState, started: &mut Started, deadline: Instant) -> Result<()> {
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
pub(crate) fn wait_for(
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

pub(crate) fn tcp_accepts(addr: SocketAddr) -> std::result::Result<(), String> {
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
