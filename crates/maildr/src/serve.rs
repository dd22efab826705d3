//! `maildr serve`: wire one site together and run it until told to stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use maildr_cluster::{Cluster, WritePathLimits};
use maildr_config::SiteConfig;
use maildr_smtp::{SmtpListeners, SmtpService};
use maildr_store::{Command, Store};
use maildr_types::{Clock as _, Domain, EmailAddress, SystemClock};

use crate::tls;

pub struct ServeArgs {
    pub config: Option<PathBuf>,
    pub dev: bool,
    pub data_dir: Option<PathBuf>,
    /// Bootstrapping a brand-new cluster whose sites start one at a time: a site
    /// with no Raft state does not wait for a majority of the voters to answer.
    pub new_cluster: bool,
}

/// Where a running site says which addresses it listens on (for scripts and tests).
pub const ENDPOINTS_FILE: &str = "run/endpoints.json";

pub fn load_config(config: Option<&Path>, dev: bool, data_dir: Option<&Path>) -> Result<SiteConfig> {
    let mut site = match config {
        Some(path) => SiteConfig::load(path)?,
        None if dev => SiteConfig::default(),
        None => anyhow::bail!("give --config FILE (see `maildr config example`), or --dev for a local trial site"),
    };
    if let Some(dir) = data_dir {
        site.site.data_dir = dir.to_path_buf();
    } else if config.is_none() {
        site.site.data_dir = PathBuf::from(".maildr/dev");
    }
    Ok(site)
}

/// In dev mode an empty site gets `example.test` with alice and bob.
fn bootstrap_dev(store: &Store) -> Result<Vec<(String, String)>> {
    if !store.domains()?.is_empty() {
        return Ok(Vec::new());
    }
    let domain = Domain::parse("example.test").expect("valid");
    store.apply(Command::AddDomain { domain, at: SystemClock.now() })??;
    let mut created = Vec::new();
    for user in ["alice", "bob"] {
        let address = EmailAddress::parse(&format!("{user}@example.test")).expect("valid");
        let password = maildr_frontend::generate_password();
        store.apply(Command::add_account(
            address.clone(),
            maildr_frontend::hash_password(&password),
            0,
            SystemClock.now(),
        ))??;
        created.push((address.to_string(), password));
    }
    Ok(created)
}

fn write_endpoints(data_dir: &Path, value: &serde_json::Value) -> Result<()> {
    let path = data_dir.join(ENDPOINTS_FILE);
    let dir = path.parent().expect("endpoints file has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub async fn run(args: ServeArgs) -> Result<()> {
    // Before anything is announced: a supervisor may send SIGTERM as soon as the
    // site says it is up, and that must stop it cleanly, not kill it.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let config = load_config(args.config.as_deref(), args.dev, args.data_dir.as_deref())?;
    crate::init_logging(&config.log.level);
    let data_dir = config.site.data_dir.clone();
    std::fs::create_dir_all(&data_dir).with_context(|| format!("creating data directory {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize().with_context(|| format!("resolving {}", data_dir.display()))?;
    let limits = WritePathLimits {
        batch_commands_max: config.store.batch_commands_max as usize,
        queue_commands_max: config.store.queue_commands_max as usize,
        write_timeout_ms: config.store.write_timeout_ms,
    };
    maildr_frontend::memory::MessageMemory::configure(config.site.message_memory_max_bytes);
    let replicated = !config.cluster.members.is_empty();
    if replicated && args.dev {
        anyhow::bail!("--dev runs a single site; drop it, or drop [[cluster.members]] from the config");
    }
    let cluster = if replicated {
        let fresh_start = if args.new_cluster {
            maildr_cluster::FreshStart::NewCluster
        } else {
            maildr_cluster::FreshStart::AwaitMajority
        };
        // A fresh site may wait for its peers here; SIGTERM stops that wait.
        let starting =
            maildr_cluster::Replicated::start(&data_dir, &config.site.name, &config.cluster, limits, fresh_start);
        let site = tokio::select! {
            started = starting => started.with_context(|| format!("starting replication of site {}", config.site.name))?,
            _ = term.recv() => anyhow::bail!("stopped by SIGTERM while starting replication"),
        };
        Cluster::replicated(site)
    } else {
        let store = Store::open(&data_dir)?;
        if args.dev {
            for (address, password) in bootstrap_dev(&store)? {
                println!("created dev account {address} with password {password}");
            }
        }
        Cluster::single_site(store, limits)
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let hooks = crate::faults::SiteHooks::new(&config.site.name);
    let control = start_control_plane(&config, &data_dir, &cluster, stop_rx.clone())?;
    let dns_addr = start_dns(&config, &cluster, control.as_ref(), &hooks, stop_rx.clone()).await?;
    let backups = start_backups(&config, &cluster, stop_rx.clone())?;
    let api = start_api(&config, &cluster, control.as_ref(), &hooks, backups, stop_rx.clone()).await?;
    let api_addr = api.as_ref().map(|(addr, _)| *addr);
    let api_task = api.map(|(_, task)| task);
    // A standby promoted by a forced failover serves mail whatever its config says.
    let role = cluster.replication().map(|r| r.effective_role()).unwrap_or(config.role());
    if !role.serves_mail() {
        return serve_without_mail(&config, &data_dir, cluster, stop_tx, api_task, &mut term).await;
    }
    let tls_files = tls::ensure_files(
        &data_dir,
        &config.site.hostname,
        config.tls.cert_path.as_deref(),
        config.tls.key_path.as_deref(),
    )?;
    let tls_config = tls::server_config(&tls_files)?;
    let listeners = SmtpListeners::bind(&config.smtp, true).await?;
    let imap_listeners = maildr_imap::ImapListeners::bind(&config.imap, true).await?;
    let addrs = listeners.local_addrs();
    let mut smtp = serde_json::Map::new();
    for (kind, addr) in &addrs {
        smtp.insert(kind.name().into(), addr.to_string().into());
    }
    let mut imap = serde_json::Map::new();
    for (kind, addr) in imap_listeners.local_addrs() {
        imap.insert(kind.name().into(), addr.to_string().into());
    }
    let endpoints = serde_json::json!({
        "site": config.site.name,
        "pid": std::process::id(),
        "data_dir": data_dir,
        "smtp": smtp,
        "imap": imap,
        "tls_ca": tls_files.ca.as_ref().unwrap_or(&tls_files.cert),
        "role": role.name(),
        "replication": cluster.replication().map(|r| r.listen_addr().to_string()),
        "dns": dns_addr.map(|a| a.to_string()),
        "api": api_addr.map(|a| a.to_string()),
    });
    write_endpoints(&data_dir, &endpoints)?;
    let mut listing: Vec<String> = addrs.iter().map(|(k, a)| format!("{} {}", k.name(), a)).collect();
    listing.extend(imap_listeners.local_addrs().iter().map(|(k, a)| format!("{} {}", k.name(), a)));
    listing.extend(dns_addr.map(|a| format!("dns {a}")));
    listing.extend(api_addr.map(|a| format!("api http://{a}")));
    println!("maildr site {} serving from {}: {}", config.site.name, data_dir.display(), listing.join(", "));
    if let Some(ca) = &tls_files.ca {
        println!("clients trust the lab CA in {}", ca.display());
    }
    let imap_service =
        maildr_imap::ImapService::new(cluster.clone(), config.imap.clone(), Some(Arc::clone(&tls_config)));
    let outbound = maildr_smtp::OutboundPolicy {
        enabled: config.outbound.enabled,
        queue_messages_max: config.outbound.queue_messages_max,
        lifetime_ms: i64::try_from(config.outbound.lifetime_secs.saturating_mul(1000)).unwrap_or(i64::MAX),
    };
    let service = SmtpService::with_outbound(
        cluster.clone(),
        config.smtp.clone(),
        config.site.hostname.clone(),
        Some(tls_config),
        maildr_types::system_clock(),
        outbound,
    );
    // The queue runner works while this site is primary (every site runs one).
    let outbound_runner = if config.outbound.enabled {
        let settings = maildr_outbound::OutboundSettings {
            section: config.outbound.clone(),
            hostname: config.site.hostname.clone(),
            resolvers: config.smtp.resolvers.clone(),
        };
        let runner = maildr_outbound::spawn(cluster.clone(), settings, maildr_types::system_clock(), stop_rx.clone())
            .map_err(|e| anyhow::anyhow!("outbound delivery: {e}"))?;
        Some(runner)
    } else {
        None
    };
    // Each service under its fault-hook switch (they do nothing unless hooks are on).
    let smtp_servers = hooks.run_smtp(service, listeners, stop_rx.clone());
    let imap_server = hooks.run_imap(imap_service, imap_listeners, stop_rx);
    // A site that learns it was superseded by a forced failover asks to restart,
    // and the restart refuses to serve (see `maildr_cluster::replicated::FENCED_FILE`).
    let restart = match cluster.replication() {
        Some(replication) => tokio::select! {
            _ = wait_for_stop_signal(&mut term) => false,
            _ = replication.restart_requested() => true,
        },
        None => {
            wait_for_stop_signal(&mut term).await;
            false
        }
    };
    tracing::info!(restart, "stopping: no new connections; sessions get a few seconds to finish");
    let _ = stop_tx.send(true);
    for server in smtp_servers {
        let _ = server.await;
    }
    let _ = imap_server.await;
    if let Some(runner) = outbound_runner {
        let _ = runner.await;
    }
    if let Some(api) = api_task {
        let _ = api.await;
    }
    drop(control);
    if let Some(replication) = cluster.replication() {
        replication.shutdown().await;
    }
    if restart {
        return Err(restart_in_place());
    }
    Ok(())
}

/// The DR control plane, when the config turns it on (replicated sites only).
fn start_control_plane(
    config: &SiteConfig,
    data_dir: &Path,
    cluster: &Cluster,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Arc<maildr_control::ControlPlane>>> {
    if !config.control.enabled {
        return Ok(None);
    }
    if cluster.replication().is_none() {
        anyhow::bail!("control.enabled needs [[cluster.members]]: the control plane steers a replicated cluster");
    }
    let plane = maildr_control::ControlPlane::start(cluster.clone(), config, data_dir, stop)
        .context("starting the control plane")?;
    Ok(Some(plane))
}

/// The backup service (archiver, schedules, retention), on a data site of a cluster
/// whose config names backup targets. A site alone is backed up while stopped
/// (`maildr backup run`).
fn start_backups(
    config: &SiteConfig,
    cluster: &Cluster,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<Arc<maildr_backup::BackupService>>> {
    if !config.backup.enabled() {
        return Ok(None);
    }
    let Some(replicated) = cluster.replication() else {
        tracing::warn!(
            "backups of a site alone are taken while it is stopped (`maildr backup run`); none are scheduled"
        );
        return Ok(None);
    };
    if !replicated.effective_role().serves_mail() {
        return Ok(None);
    }
    let backups = maildr_backup::Backups::from_config(config).context("backup configuration")?;
    let exe = std::env::current_exe().context("finding this executable for restore tests")?;
    // The site's own audit log: the same hash-chained format as the drills' (verify
    // it with `maildr audit verify --file <data_dir>/audit.jsonl`).
    let log_path = config.site.data_dir.join(maildr_drill::audit::FILE_NAME);
    let log = Arc::new(maildr_drill::audit::AuditLog::open(&log_path).context("opening the site's audit log")?);
    let site = config.site.name.clone();
    let audit: maildr_backup::schedule::AuditHook = Arc::new(move |action: &str, detail: serde_json::Value| {
        let event = maildr_drill::audit::AuditEvent::new(format!("site {site}"), action).detail(detail);
        if let Err(e) = log.append(event) {
            tracing::error!(error = %e, action, "writing the audit log failed");
        }
    });
    let service = maildr_backup::BackupService::start(backups, cluster.clone(), exe, audit, stop)
        .context("starting the backup service")?;
    Ok(Some(service))
}

/// The admin HTTP API, when `api.listen` is set: its address, and the task serving
/// it, which ends once `stop` is sent and the requests under way are answered.
async fn start_api(
    config: &SiteConfig,
    cluster: &Cluster,
    control: Option<&Arc<maildr_control::ControlPlane>>,
    hooks: &crate::faults::SiteHooks,
    backups: Option<Arc<maildr_backup::BackupService>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>> {
    let (Some(listen), Some(token)) = (config.api.listen, config.api.token.clone()) else {
        return Ok(None);
    };
    let settings = maildr_api::ApiSettings { listen, token, site: config.site.name.clone() };
    let mut state =
        maildr_api::ApiState::new(&settings, cluster.clone(), &config.cluster).context("starting the admin API")?;
    if let Some(plane) = control {
        state = state.with_control_plane(Arc::clone(plane) as Arc<dyn maildr_api::ControlPlane>);
    }
    if config.faults.hooks {
        state = state.with_fault_hooks(Arc::new(hooks.clone()));
    }
    if let Some(service) = backups {
        state = state.with_backups(service);
    }
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("admin API on {listen}"))?;
    let addr = listener.local_addr().with_context(|| format!("admin API on {listen}"))?;
    let task = tokio::spawn(async move {
        if let Err(e) = maildr_api::serve(listener, state, stop).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(Some((addr, task)))
}

/// The authoritative DNS server, fed from the committed steering; its address.
async fn start_dns(
    config: &SiteConfig,
    cluster: &Cluster,
    control: Option<&Arc<maildr_control::ControlPlane>>,
    hooks: &crate::faults::SiteHooks,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<std::net::SocketAddr>> {
    let Some(listen) = config.dns.listen else {
        return Ok(None);
    };
    if !config.role().serves_mail() {
        return Ok(None);
    }
    if cluster.replication().is_none() {
        anyhow::bail!("dns.listen needs [[cluster.members]]: the zones follow the replicated steering");
    }
    let sites: Vec<maildr_dns::SiteAddress> = config
        .cluster
        .members
        .iter()
        .filter(|m| m.role == maildr_config::SiteRole::Data)
        .filter_map(|m| Some(maildr_dns::SiteAddress { site: m.site.clone(), ip: m.mail_ip? }))
        .collect();
    // Secrets are read before anything binds: a bad one stops the site at start.
    let providers = crate::dns_cmd::configured_providers(&config.dns)?;
    let server = maildr_dns::DnsServer::bind(listen).await.with_context(|| format!("DNS on {listen}"))?;
    let addr = server.local_addr();
    let (zones_tx, zones_rx) = tokio::sync::watch::channel(Arc::new(maildr_dns::ZoneSet::new()));
    if let Some(plane) = control {
        plane.set_served_zones(zones_rx.clone());
        tokio::spawn(maildr_control::zones::record_served(Arc::clone(plane), server.served(), stop.clone()));
    }
    tokio::spawn(maildr_control::zones::feed(
        cluster.clone(),
        sites,
        config.dns.ttl_secs,
        config.dns.withdraw_after_ms,
        zones_tx,
        providers,
        stop.clone(),
    ));
    hooks.run_dns(server, zones_rx, stop);
    Ok(Some(addr))
}

/// A witness or standby: replication (and the control plane's probes) only, no
/// mail listeners.
async fn serve_without_mail(
    config: &SiteConfig,
    data_dir: &Path,
    cluster: Cluster,
    stop: tokio::sync::watch::Sender<bool>,
    api: Option<tokio::task::JoinHandle<()>>,
    term: &mut tokio::signal::unix::Signal,
) -> Result<()> {
    let replication = cluster.replication().expect("only cluster members have roles without mail").clone();
    let endpoints = serde_json::json!({
        "site": config.site.name,
        "pid": std::process::id(),
        "data_dir": data_dir,
        "role": config.role().name(),
        "replication": replication.listen_addr().to_string(),
    });
    write_endpoints(data_dir, &endpoints)?;
    println!(
        "maildr site {} ({}) replicating on {}; it serves no mail",
        config.site.name,
        config.role().name(),
        replication.listen_addr()
    );
    let restart = tokio::select! {
        _ = wait_for_stop_signal(term) => false,
        _ = replication.restart_requested() => true,
    };
    tracing::info!(restart, "stopping");
    let _ = stop.send(true);
    // A forced failover asked through this site's own API is answered before the
    // restart replaces the process.
    if let Some(api) = api {
        let _ = api.await;
    }
    replication.shutdown().await;
    if restart {
        return Err(restart_in_place());
    }
    Ok(())
}

/// Replace this process by a fresh run of the same binary with the same arguments
/// (a forced failover rewrites the Raft state before Raft starts). `exec` keeps the
/// pid, which the lab supervisor tracks; every file and socket Rust opened is
/// close-on-exec, so the databases' locks and the listeners are free for the new run.
/// Returns only if `exec` failed.
fn restart_in_place() -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return anyhow::Error::new(e).context("finding this binary to restart the site"),
    };
    let error = std::process::Command::new(&exe).args(std::env::args_os().skip(1)).exec();
    anyhow::Error::new(error).context(format!("restarting the site: exec {}", exe.display()))
}

async fn wait_for_stop_signal(term: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
