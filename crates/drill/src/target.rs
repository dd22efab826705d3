//! Where a drill runs and how it breaks things there.
//!
//! A [`Target`] is the deployment as clients see it (sites, their endpoints, the
//! domain, probe accounts, the admin API token) plus a [`FaultInjector`]. For the
//! lab both come from `lab.json`, and faults go through the lab supervisor's own
//! commands (`maildr lab kill|start|pause|resume|stop-service|start-service`) and
//! the fault proxy's link control. For a real deployment they come from a
//! deployment file, and faults run the operator's hook commands (ssh, systemctl,
//! a firewall script): the drill never needs to know how a site is hosted.
//!
//! A deployment file may also describe a mail system that is not maildr
//! (`control = "none"`): no admin API, so the drill learns who is primary from
//! what DNS says for `mail.` and judges health, convergence and loss by talking to
//! every site as a client does (see [`ControlPlane`]).
//!
//! The [`Ledger`] records every fault the drill injected so `restore` and the
//! rollback undo exactly those, even after an abort.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use maildr_lab::fault_proxy::{DirectionFaults, LinkFaults};
use maildr_lab::link_client::LinkClient;
use maildr_lab::state::LabState;
use serde::Deserialize;

use crate::plan::Service;
use maildr_lab::http_client::JsonApi;

/// Longest one hook command or lab command may run.
const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What a site is (`data`, `witness`, `standby`, `lagged`): the one definition in
/// `maildr-types`, as deployment files and the lab name it.
pub use maildr_types::SiteRole;

/// One site's client-facing endpoints.
#[derive(Debug, Clone)]
pub struct SiteEndpoints {
    pub name: String,
    pub role: SiteRole,
    pub ip: IpAddr,
    /// The MX (port 25 role) listener.
    pub smtp: SocketAddr,
    /// Submission with STARTTLS.
    pub submission: SocketAddr,
    /// Plain IMAP.
    pub imap: SocketAddr,
    /// IMAP over implicit TLS: what the drill reads through when it has a CA to
    /// verify the site with (a site refuses plaintext logins from other hosts).
    pub imaps: Option<SocketAddr>,
    /// Authoritative DNS, data sites only.
    pub dns: Option<SocketAddr>,
    /// The admin API, data sites only.
    pub api: Option<SocketAddr>,
}

impl SiteEndpoints {
    /// Where the drill reads mail at this site, and whether over TLS: implicit TLS
    /// when the drill has a CA and the site an IMAPS port, else plain IMAP.
    pub fn imap_endpoint(&self, have_ca: bool) -> (SocketAddr, bool) {
        match self.imaps {
            Some(addr) if have_ca => (addr, true),
            _ => (self.imap, false),
        }
    }
}

/// How the drill learns the deployment's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlPlane {
    /// maildr's admin API on every data site: the cluster's members, leader, lag,
    /// events, switchover, backups.
    #[default]
    AdminApi,
    /// None the drill can ask (another mail system): the primary is the site DNS
    /// names for `mail.`; health is whether a site answers SMTP and IMAP; a planned
    /// switchover is the deployment's `switchover` hook; no event log.
    None,
}

impl ControlPlane {
    pub fn name(self) -> &'static str {
        match self {
            ControlPlane::AdminApi => "admin_api",
            ControlPlane::None => "none",
        }
    }
}

/// An account the probes use.
#[derive(Debug, Clone)]
pub struct Account {
    pub address: String,
    pub password: String,
}

/// A deployment as the drill reaches it.
pub struct Target {
    /// `lab` or `deployment`.
    pub kind: &'static str,
    /// The lab directory or the deployment file.
    pub location: PathBuf,
    pub domain: String,
    pub sites: Vec<SiteEndpoints>,
    pub api_token: String,
    pub control: ControlPlane,
    /// DNS servers of the deployment outside its sites (a DNS provider's, or the
    /// one server a pair of other mail servers is steered by).
    pub extra_dns: Vec<SocketAddr>,
    /// PEM of the CA the sites' certificates chain to (`None`: the system's roots
    /// are not offered; submission then needs a CA file).
    pub ca_pem: Option<Vec<u8>>,
    /// Submits mail with AUTH.
    pub sender: Account,
    /// Receives the MX flow; its INBOX is what the IMAP probe reads.
    pub mx_recipient: Account,
    /// Receives the submission flow.
    pub submission_recipient: Account,
    pub injector: FaultInjector,
}

impl Target {
    pub fn site(&self, name: &str) -> Option<&SiteEndpoints> {
        self.sites.iter().find(|s| s.name == name)
    }

    pub fn data_sites(&self) -> impl Iterator<Item = &SiteEndpoints> {
        self.sites.iter().filter(|s| s.role == SiteRole::Data)
    }

    /// The accounts whose INBOXes the drill's mail lands in: the MX recipient,
    /// and the submission recipient when it is another account. One account
    /// named twice is read once, or each of its messages would count twice.
    pub fn reconciled_accounts(&self) -> Vec<Account> {
        let mut accounts = vec![self.mx_recipient.clone()];
        if self.submission_recipient.address != self.mx_recipient.address {
            accounts.push(self.submission_recipient.clone());
        }
        accounts
    }

    /// Every authoritative DNS server: the sites' own in site order, then the
    /// deployment's others.
    pub fn dns_servers(&self) -> Vec<SocketAddr> {
        self.sites.iter().filter_map(|s| s.dns).chain(self.extra_dns.iter().copied()).collect()
    }

    /// The admin API client of a site.
    pub fn api(&self, site: &SiteEndpoints) -> Option<JsonApi> {
        site.api.map(|addr| JsonApi { api: "admin API", addr, bearer: Some(self.api_token.clone()) })
    }

    /// The site whose address this is (for naming what DNS pointed at).
    pub fn site_at(&self, ip: IpAddr) -> Option<&SiteEndpoints> {
        self.sites.iter().find(|s| s.ip == ip)
    }

    /// The lab in `dir`, as `lab.json` describes it; `exe` is the maildr binary
    /// whose `lab` commands inject the faults.
    pub fn lab(dir: &Path, exe: &Path) -> Result<Target, String> {
        let state = LabState::load(dir).map_err(|e| e.to_string())?.ok_or_else(|| {
            format!("no lab in {} (start one with `maildr lab up --dir {}`)", dir.display(), dir.display())
        })?;
        let account = |local: &str| -> Result<Account, String> {
            let address = format!("{local}@{}", state.domain);
            state
                .accounts
                .iter()
                .find(|a| a.address == address)
                .map(|a| Account { address: a.address.clone(), password: a.password.clone() })
                .ok_or_else(|| format!("the lab has no account {address}"))
        };
        let sites = state
            .sites
            .iter()
            .map(|s| {
                let ip = IpAddr::V4(s.ip);
                SiteEndpoints {
                    name: s.site.clone(),
                    role: match s.role {
                        maildr_lab::topology::Role::Data => SiteRole::Data,
                        maildr_lab::topology::Role::Witness => SiteRole::Witness,
                        maildr_lab::topology::Role::Standby => SiteRole::Standby,
                        maildr_lab::topology::Role::Lagged => SiteRole::Lagged,
                    },
                    ip,
                    smtp: SocketAddr::new(ip, s.ports.smtp),
                    submission: SocketAddr::new(ip, s.ports.submission),
                    imap: SocketAddr::new(ip, s.ports.imap),
                    imaps: Some(SocketAddr::new(ip, s.ports.imaps)),
                    dns: s.ports.dns.map(|p| SocketAddr::new(ip, p)),
                    api: s.ports.http.map(|p| SocketAddr::new(ip, p)),
                }
            })
            .collect();
        let links = state.links.control_addr()?;
        let ca_pem = std::fs::read(&state.ca).map_err(|e| format!("lab CA {}: {e}", state.ca.display()))?;
        Ok(Target {
            kind: "lab",
            location: dir.to_path_buf(),
            domain: state.domain.clone(),
            sites,
            api_token: state.api_token.clone(),
            control: ControlPlane::AdminApi,
            extra_dns: Vec::new(),
            ca_pem: Some(ca_pem),
            sender: account("probe")?,
            mx_recipient: account("alice")?,
            submission_recipient: account("bob")?,
            injector: FaultInjector::Lab {
                exe: exe.to_path_buf(),
                dir: dir.to_path_buf(),
                links: LinkClient::new(links),
                link_names: state.links.names.clone(),
            },
        })
    }

    /// A deployment described by a file (see `docs/drills.md`, "Deployment targets").
    pub fn deployment(file: &Path) -> Result<Target, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
        let d: DeploymentFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let read = |p: &Path| -> Result<String, String> {
            let p = base.join(p);
            std::fs::read_to_string(&p).map(|s| s.trim().to_string()).map_err(|e| format!("{}: {e}", p.display()))
        };
        let account = |a: &AccountFile| -> Result<Account, String> {
            Ok(Account { address: a.address.clone(), password: read(&a.password_file)? })
        };
        if d.sites.iter().filter(|s| s.role == SiteRole::Data).count() < 2 {
            return Err(format!("{}: a deployment drill needs at least two data sites", file.display()));
        }
        let sites = d
            .sites
            .iter()
            .map(|s| SiteEndpoints {
                name: s.name.clone(),
                role: s.role,
                ip: s.ip,
                smtp: SocketAddr::new(s.ip, s.smtp_port),
                submission: SocketAddr::new(s.ip, s.submission_port),
                imap: SocketAddr::new(s.ip, s.imap_port),
                imaps: s.imaps_port.map(|p| SocketAddr::new(s.ip, p)),
                dns: s.dns_port.map(|p| SocketAddr::new(s.ip, p)),
                api: s.api_port.map(|p| SocketAddr::new(s.ip, p)),
            })
            .collect();
        let api_token = match (&d.api_token_file, d.control) {
            (Some(f), _) => read(f)?,
            (None, ControlPlane::None) => String::new(),
            (None, ControlPlane::AdminApi) => {
                return Err(format!(
                    "{}: api_token_file is required (or `control = \"none\"` for a system without maildr's admin API)",
                    file.display()
                ))
            }
        };
        if d.control == ControlPlane::None && d.sites.iter().any(|s| s.api_port.is_some()) {
            return Err(format!(
                "{}: `control = \"none\"` and a site's api_port contradict each other",
                file.display()
            ));
        }
        Ok(Target {
            kind: "deployment",
            location: file.to_path_buf(),
            domain: d.domain.clone(),
            sites,
            api_token,
            control: d.control,
            extra_dns: d.dns_servers.clone(),
            ca_pem: match &d.ca_file {
                Some(p) => Some(std::fs::read(base.join(p)).map_err(|e| format!("{}: {e}", p.display()))?),
                None => None,
            },
            sender: account(&d.accounts.sender)?,
            mx_recipient: account(&d.accounts.mx_recipient)?,
            submission_recipient: account(&d.accounts.submission_recipient)?,
            injector: FaultInjector::Hooks { hooks: d.hooks, dir: base.to_path_buf() },
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeploymentFile {
    domain: String,
    /// `admin_api` (maildr, the default) or `none` (another mail system).
    #[serde(default)]
    control: ControlPlane,
    /// File holding the admin API bearer token (relative to the deployment file);
    /// required with the admin API.
    api_token_file: Option<PathBuf>,
    /// DNS servers outside the sites that answer for the domain.
    #[serde(default)]
    dns_servers: Vec<SocketAddr>,
    ca_file: Option<PathBuf>,
    accounts: AccountsFile,
    sites: Vec<SiteFile>,
    #[serde(default)]
    hooks: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsFile {
    sender: AccountFile,
    mx_recipient: AccountFile,
    submission_recipient: AccountFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountFile {
    address: String,
    password_file: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    name: String,
    role: SiteRole,
    ip: IpAddr,
    #[serde(default = "port_25")]
    smtp_port: u16,
    #[serde(default = "port_587")]
    submission_port: u16,
    #[serde(default = "port_143")]
    imap_port: u16,
    /// IMAP over implicit TLS (993); with `ca_file`, the drill reads mail here.
    imaps_port: Option<u16>,
    dns_port: Option<u16>,
    api_port: Option<u16>,
}

fn port_25() -> u16 {
    25
}
fn port_587() -> u16 {
    587
}
fn port_143() -> u16 {
    143
}

/// The hook names a deployment file may define, and the placeholders each gets.
pub const HOOKS: [(&str, &str); 11] = [
    ("kill_site", "{site}"),
    ("start_site", "{site}"),
    ("pause_site", "{site}"),
    ("resume_site", "{site}"),
    ("stop_service", "{site} {service}"),
    ("start_service", "{site} {service}"),
    ("partition", "{site}"),
    ("heal_partition", "{site}"),
    ("degrade_link", "{a} {b} {latency_ms} {jitter_ms} {loss_percent}"),
    ("heal_link", "{a} {b}"),
    // A planned switchover of a system without maildr's admin API.
    ("switchover", "{site}"),
];

/// How faults reach the target.
pub enum FaultInjector {
    Lab { exe: PathBuf, dir: PathBuf, links: LinkClient, link_names: Vec<String> },
    Hooks { hooks: BTreeMap<String, Vec<String>>, dir: PathBuf },
}

/// A fault the injector can put on or take off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    Killed(String),
    Paused(String),
    ServiceStopped(String, Service),
    Partitioned(String),
    Degraded(String, String),
}

impl Fault {
    pub fn describe(&self) -> String {
        match self {
            Fault::Killed(s) => format!("{s} killed"),
            Fault::Paused(s) => format!("{s} paused"),
            Fault::ServiceStopped(s, svc) => format!("{} stopped on {s}", svc.name()),
            Fault::Partitioned(s) => format!("{s} partitioned"),
            Fault::Degraded(a, b) => format!("links {a}<->{b} degraded"),
        }
    }

    /// Whether this fault touches `site`.
    pub fn involves(&self, site: &str) -> bool {
        match self {
            Fault::Killed(s) | Fault::Paused(s) | Fault::ServiceStopped(s, _) | Fault::Partitioned(s) => s == site,
            Fault::Degraded(a, b) => a == site || b == site,
        }
    }
}

/// The faults in place, in the order they were put on.
#[derive(Debug, Default)]
pub struct Ledger {
    pub active: Vec<Fault>,
}

impl Ledger {
    /// Sites that cannot answer at all: killed or paused.
    pub fn dead(&self) -> Vec<String> {
        self.sites(|f| matches!(f, Fault::Killed(_) | Fault::Paused(_)))
    }

    /// Sites that cannot be asked about the cluster: dead, or cut off.
    pub fn unreachable(&self) -> Vec<String> {
        self.sites(|f| matches!(f, Fault::Killed(_) | Fault::Paused(_) | Fault::Partitioned(_)))
    }

    /// Sites whose DNS server was stopped alone.
    pub fn dns_stopped(&self) -> Vec<String> {
        self.sites(|f| matches!(f, Fault::ServiceStopped(_, Service::Dns)))
    }

    fn sites(&self, which: impl Fn(&Fault) -> bool) -> Vec<String> {
        self.active
            .iter()
            .filter(|f| which(f))
            .filter_map(|f| match f {
                Fault::Killed(s) | Fault::Paused(s) | Fault::ServiceStopped(s, _) | Fault::Partitioned(s) => {
                    Some(s.clone())
                }
                // A degraded link belongs to two sites and makes neither unreachable.
                Fault::Degraded(..) => None,
            })
            .collect()
    }
}

impl FaultInjector {
    /// Whether this injector can do `action` (a hook name); the lab can do all.
    pub fn supports(&self, action: &str) -> bool {
        match self {
            FaultInjector::Lab { .. } => true,
            FaultInjector::Hooks { hooks, .. } => hooks.get(action).is_some_and(|argv| !argv.is_empty()),
        }
    }

    pub async fn kill(&self, site: &str) -> Result<String, String> {
        self.lab_or_hook(&["kill", site], "kill_site", &[("site", site)]).await
    }

    pub async fn start(&self, site: &str) -> Result<String, String> {
        self.lab_or_hook(&["start", site], "start_site", &[("site", site)]).await
    }

    pub async fn pause(&self, site: &str) -> Result<String, String> {
        self.lab_or_hook(&["pause", site], "pause_site", &[("site", site)]).await
    }

    pub async fn resume(&self, site: &str) -> Result<String, String> {
        self.lab_or_hook(&["resume", site], "resume_site", &[("site", site)]).await
    }

    pub async fn stop_service(&self, site: &str, service: Service) -> Result<String, String> {
        let svc = service.name();
        self.lab_or_hook(&["stop-service", site, svc], "stop_service", &[("site", site), ("service", svc)]).await
    }

    pub async fn start_service(&self, site: &str, service: Service) -> Result<String, String> {
        let svc = service.name();
        self.lab_or_hook(&["start-service", site, svc], "start_service", &[("site", site), ("service", svc)]).await
    }

    /// A planned switchover to `site` by the deployment's own means (the
    /// `switchover` hook; the lab's maildr sites switch over through the admin API).
    pub async fn switchover(&self, site: &str) -> Result<String, String> {
        match self {
            FaultInjector::Lab { .. } => Err("the lab switches over through the admin API".into()),
            FaultInjector::Hooks { .. } => self.hook("switchover", &[("site", site)]).await,
        }
    }

    /// Cut every link to and from `site`.
    pub async fn partition(&self, site: &str) -> Result<String, String> {
        match self {
            FaultInjector::Lab { links, link_names, .. } => {
                let mut cut = Vec::new();
                for name in link_names.iter().filter(|n| link_touches(n, site)) {
                    links.set_faults(name, &LinkFaults::partition()).await.map_err(|e| e.to_string())?;
                    cut.push(name.as_str());
                }
                Ok(format!("links blackholed: {}", cut.join(", ")))
            }
            FaultInjector::Hooks { .. } => self.hook("partition", &[("site", site)]).await,
        }
    }

    pub async fn heal_partition(&self, site: &str) -> Result<String, String> {
        match self {
            FaultInjector::Lab { links, link_names, .. } => {
                for name in link_names.iter().filter(|n| link_touches(n, site)) {
                    links.heal(name).await.map_err(|e| e.to_string())?;
                }
                Ok(format!("links of {site} healed"))
            }
            FaultInjector::Hooks { .. } => self.hook("heal_partition", &[("site", site)]).await,
        }
    }

    pub async fn degrade(
        &self,
        a: &str,
        b: &str,
        latency_ms: u64,
        jitter_ms: u64,
        loss_percent: u8,
    ) -> Result<String, String> {
        match self {
            FaultInjector::Lab { links, .. } => {
                let dir = DirectionFaults { latency_ms, jitter_ms, ..Default::default() };
                let faults = LinkFaults { forward: dir, backward: dir, connection_loss_percent: loss_percent };
                for name in [format!("{a}-{b}"), format!("{b}-{a}")] {
                    links.set_faults(&name, &faults).await.map_err(|e| e.to_string())?;
                }
                Ok(format!("links {a}-{b} and {b}-{a}: {latency_ms} ms ± {jitter_ms} ms each way, {loss_percent}% of new connections dropped"))
            }
            FaultInjector::Hooks { .. } => {
                let (l, j, p) = (latency_ms.to_string(), jitter_ms.to_string(), loss_percent.to_string());
                self.hook(
                    "degrade_link",
                    &[("a", a), ("b", b), ("latency_ms", &l), ("jitter_ms", &j), ("loss_percent", &p)],
                )
                .await
            }
        }
    }

    pub async fn heal_link(&self, a: &str, b: &str) -> Result<String, String> {
        match self {
            FaultInjector::Lab { links, .. } => {
                for name in [format!("{a}-{b}"), format!("{b}-{a}")] {
                    links.heal(&name).await.map_err(|e| e.to_string())?;
                }
                Ok(format!("links {a}<->{b} healed"))
            }
            FaultInjector::Hooks { .. } => self.hook("heal_link", &[("a", a), ("b", b)]).await,
        }
    }

    /// Take one fault off.
    pub async fn undo(&self, fault: &Fault) -> Result<String, String> {
        match fault {
            Fault::Killed(s) => self.start(s).await,
            Fault::Paused(s) => self.resume(s).await,
            Fault::ServiceStopped(s, svc) => self.start_service(s, *svc).await,
            Fault::Partitioned(s) => self.heal_partition(s).await,
            Fault::Degraded(a, b) => self.heal_link(a, b).await,
        }
    }

    async fn lab_or_hook(&self, lab_args: &[&str], hook: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        match self {
            FaultInjector::Lab { exe, dir, .. } => {
                let mut argv: Vec<String> = vec![exe.display().to_string(), "lab".into()];
                argv.extend(lab_args.iter().map(|s| s.to_string()));
                argv.extend(["--dir".to_string(), dir.display().to_string()]);
                run(&argv, dir).await
            }
            FaultInjector::Hooks { .. } => self.hook(hook, vars).await,
        }
    }

    async fn hook(&self, name: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        let FaultInjector::Hooks { hooks, dir } = self else {
            unreachable!("hooks are only run for deployment targets")
        };
        let template =
            hooks.get(name).filter(|a| !a.is_empty()).ok_or_else(|| format!("the deployment has no `{name}` hook"))?;
        let argv: Vec<String> = template
            .iter()
            .map(|arg| vars.iter().fold(arg.clone(), |acc, (k, v)| acc.replace(&format!("{{{k}}}"), v)))
            .collect();
        run(&argv, dir).await
    }
}

fn link_touches(link: &str, site: &str) -> bool {
    link.split_once('-').is_some_and(|(a, b)| a == site || b == site)
}

/// Run a command to completion (bounded), its output as evidence.
async fn run(argv: &[String], dir: &Path) -> Result<String, String> {
    let shown = argv.join(" ");
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..]).current_dir(dir).kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(HOOK_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("`{shown}` did not finish within {} s", HOOK_TIMEOUT.as_secs()))?
        .map_err(|e| format!("`{shown}`: {e}"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().chars().take(2000).collect::<String>();
    if out.status.success() {
        Ok(format!("`{shown}`: {}", text(&out.stdout)))
    } else {
        Err(format!("`{shown}` failed ({}): {} {}", out.status, text(&out.stderr), text(&out.stdout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_touching_a_site_are_found_by_name() {
        assert!(link_touches("bj-sh", "bj"));
        assert!(link_touches("sh-bj", "bj"));
        assert!(!link_touches("sh-hz", "bj"));
    }

    #[tokio::test]
    async fn a_missing_hook_is_named_and_a_failing_hook_reports_its_output() {
        let hooks = BTreeMap::from([
            ("kill_site".to_string(), vec!["sh".to_string(), "-c".to_string(), "echo killing {site}".to_string()]),
            ("pause_site".to_string(), vec!["sh".to_string(), "-c".to_string(), "echo no >&2; exit 3".to_string()]),
        ]);
        let inj = FaultInjector::Hooks { hooks, dir: std::env::temp_dir() };
        assert!(inj.kill("bj").await.unwrap().contains("killing bj"));
        let err = inj.pause("bj").await.unwrap_err();
        assert!(err.contains("no") && err.contains("exit status: 3"), "{err}");
        assert_eq!(inj.start("bj").await.unwrap_err(), "the deployment has no `start_site` hook");
        assert!(!inj.supports("start_site"));
    }

    #[test]
    fn a_deployment_without_a_control_plane_needs_no_token_and_may_not_name_an_api() {
        let dir = tempfile::tempdir().unwrap();
        for user in ["probe", "alice", "bob"] {
            std::fs::write(dir.path().join(user), format!("{user}-pw\n")).unwrap();
        }
        let file = |head: &str, api_port: &str| {
            let text = format!(
                "domain = \"pair.test\"\n{head}\ndns_servers = [\"127.0.0.53:53\"]\n\
                 [accounts]\nsender = {{ address = \"probe@pair.test\", password_file = \"probe\" }}\n\
                 mx_recipient = {{ address = \"alice@pair.test\", password_file = \"alice\" }}\n\
                 submission_recipient = {{ address = \"bob@pair.test\", password_file = \"bob\" }}\n\
                 [[sites]]\nname = \"pa\"\nrole = \"data\"\nip = \"127.0.0.1\"\n{api_port}\n\
                 [[sites]]\nname = \"pb\"\nrole = \"data\"\nip = \"127.0.0.2\"\n"
            );
            let path = dir.path().join("deployment.toml");
            std::fs::write(&path, text).unwrap();
            Target::deployment(&path)
        };
        let pair = file("control = \"none\"", "").unwrap();
        assert_eq!(pair.control, ControlPlane::None);
        assert_eq!(pair.dns_servers(), vec!["127.0.0.53:53".parse::<SocketAddr>().unwrap()]);
        assert_eq!(pair.sender.password, "probe-pw");
        let no_token = file("", "").err().unwrap();
        assert!(no_token.contains("api_token_file is required"), "{no_token}");
        let both = file("control = \"none\"", "api_port = 8080").err().unwrap();
        assert!(both.contains("contradict"), "{both}");
        let names = |t: &Target| t.reconciled_accounts().into_iter().map(|a| a.address).collect::<Vec<_>>();
        assert_eq!(names(&pair), ["alice@pair.test", "bob@pair.test"]);
        let mut one_inbox = pair;
        one_inbox.submission_recipient = one_inbox.mx_recipient.clone();
        assert_eq!(names(&one_inbox), ["alice@pair.test"], "one account is read once");
    }
}
