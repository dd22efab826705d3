//! What `lab up` writes before anything runs: the lab CA, one certificate per
//! site, and each site's config file.
//!
//! Configs are built as typed `SiteConfig` values and checked with the same
//! `check()` that `maildr serve` runs, so a lab never starts on a config the
//! server would refuse.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::state::{site_dir, SiteState};
use crate::topology::{ports, Role, SiteSpec, Topology, DOMAIN};
use anyhow::{Context, Result};
use maildr_config::{ClusterMember, SiteConfig, SiteRole};

/// Cluster timings for a lab on one machine: elections in under a second.
const ELECTION_TIMEOUT_MIN_MS: u64 = 300;
const ELECTION_TIMEOUT_MAX_MS: u64 = 600;
const HEARTBEAT_INTERVAL_MS: u64 = 100;
/// Heartbeat on the netns lab's WAN. Replication gives every AppendEntries one
/// heartbeat interval to be answered, so the interval must exceed the worst round
/// trip between sites: the combined drill's 40 ± 10 ms each way is 100 ms.
const WAN_HEARTBEAT_INTERVAL_MS: u64 = 150;
/// Election timeouts on the netns lab's WAN: four to eight of its heartbeats, as
/// on loopback (a pre-vote is refused for `min` after the primary was heard).
const WAN_ELECTION_TIMEOUT_MIN_MS: u64 = 600;
const WAN_ELECTION_TIMEOUT_MAX_MS: u64 = 1_200;
const BODY_PUSH_TIMEOUT_MS: u64 = 2_000;
const WRITE_TIMEOUT_MS: u64 = 3_000;
/// Control-plane timings for a lab: a dead site is detected in about a second.
const PROBE_INTERVAL_MS: u64 = 250;
const PROBE_TIMEOUT_MS: u64 = 1_000;
/// Probe timeout on the netns lab's WAN: a probe takes several round trips (TCP,
/// TLS, EHLO, LOGIN), and a lost SYN waits a second for its retransmission, so the
/// loopback lab's second would call a healthy site behind a lossy link down.
const WAN_PROBE_TIMEOUT_MS: u64 = 2_500;
const DOWN_AFTER_FAILURES: u32 = 3;
/// Base delay after a failed login in the lab: at most 64 times it (640 ms) stays
/// under a probe's timeout.
const AUTH_FAILURE_DELAY_MS: u64 = 10;
const READD_HOLDDOWN_MS: u64 = 2_000;
/// TTL of the lab's DNS records: clients follow a failover within seconds.
const DNS_TTL_SECS: u32 = 2;
/// A lab site cut off from the majority stops answering DNS after this long.
const DNS_WITHDRAW_AFTER_MS: u64 = 2_000;

/// The secrets every site config of one lab shares.
pub struct LabSecrets {
    /// The cluster secret.
    pub cluster: String,
    /// The admin API's bearer token.
    pub api_token: String,
    /// The probe account and its password.
    pub probe: (String, String),
}

/// A site's certificate and key files: for its mail services, and for mutual TLS
/// with the other sites (issued by the lab's cluster CA).
pub struct SiteTls {
    /// The lab CA every site's mail certificate chains to.
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub cluster_ca: PathBuf,
    pub cluster_cert: PathBuf,
    pub cluster_key: PathBuf,
}

/// Generate the lab CA (`dir/ca.pem`, key beside it) and a certificate for every
/// site signed by it, valid for `<site>.example.test`, `mail.example.test`,
/// `example.test` and the site's IP; and a cluster CA (`dir/cluster-ca/`) with a
/// cluster certificate for every site, as `maildr cluster certs` issues them.
/// Returns the CA path and each site's files.
pub fn write_certs(exe: &Path, dir: &Path, topology: &Topology) -> Result<(PathBuf, Vec<SiteTls>)> {
    let ca_key = rcgen::KeyPair::generate().context("generating the lab CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).context("lab CA parameters")?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("maildr lab CA ({})", dir.display()));
    let ca_cert = ca_params.self_signed(&ca_key).context("signing the lab CA")?;
    let ca_path = dir.join("ca.pem");
    write_file(&ca_path, ca_cert.pem().as_bytes(), 0o644)?;
    write_file(&dir.join("ca-key.pem"), ca_key.serialize_pem().as_bytes(), 0o600)?;
    let cluster_ca = dir.join("cluster-ca");
    cluster_certs(exe, &["ca".as_ref(), "--label".as_ref(), "lab".as_ref(), "--dir".as_ref(), cluster_ca.as_os_str()])?;
    let mut out = Vec::new();
    for site in &topology.sites {
        let hostname = format!("{}.{DOMAIN}", site.name);
        let key = rcgen::KeyPair::generate().with_context(|| format!("generating the key of site {}", site.name))?;
        let mut params = rcgen::CertificateParams::new(vec![
            hostname.clone(),
            format!("mail.{DOMAIN}"),
            DOMAIN.to_string(),
            site.ip.to_string(),
        ])
        .with_context(|| format!("certificate parameters of site {}", site.name))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, hostname);
        let cert = params
            .signed_by(&key, &ca_cert, &ca_key)
            .with_context(|| format!("signing the certificate of site {}", site.name))?;
        let tls_dir = site_dir(dir, &site.name).join("tls");
        std::fs::create_dir_all(&tls_dir).with_context(|| format!("creating {}", tls_dir.display()))?;
        let node_id = site.node_id.to_string();
        cluster_certs(
            exe,
            &[
                "issue".as_ref(),
                "--ca-dir".as_ref(),
                cluster_ca.as_os_str(),
                "--site".as_ref(),
                site.name.as_ref(),
                "--node-id".as_ref(),
                node_id.as_ref(),
                "--out".as_ref(),
                tls_dir.as_os_str(),
            ],
        )?;
        let files = SiteTls {
            ca: ca_path.clone(),
            cert: tls_dir.join("cert.pem"),
            key: tls_dir.join("key.pem"),
            cluster_ca: cluster_ca.join("ca.pem"),
            cluster_cert: tls_dir.join(format!("{}-cluster.pem", site.name)),
            cluster_key: tls_dir.join(format!("{}-cluster-key.pem", site.name)),
        };
        write_file(&files.cert, cert.pem().as_bytes(), 0o644)?;
        write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
        out.push(files);
    }
    Ok((ca_path, out))
}

/// Run `maildr cluster certs ARGS` (the lab issues cluster certificates as an
/// operator does).
fn cluster_certs(exe: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
    let mut command = std::process::Command::new(exe);
    command.arg("cluster").arg("certs").args(args);
    let out = crate::process::run_bounded(command, None, std::time::Duration::from_secs(30))?;
    if !out.status.success() {
        anyhow::bail!(
            "`maildr cluster certs {}` failed ({}): {}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The config of `site`: listeners on its own IP, and every other member reached
/// through the fault-proxy link from this site to that member (on loopback) or at
/// its own address (in a netns lab).
pub fn site_config(
    topology: &Topology,
    site: &SiteSpec,
    state: &SiteState,
    tls: &SiteTls,
    secrets: &LabSecrets,
) -> SiteConfig {
    let mut c = SiteConfig::default();
    c.site.name = site.name.clone();
    c.site.hostname = format!("{}.{DOMAIN}", site.name);
    c.site.data_dir = state.data_dir.clone();
    c.smtp.mx_listen = site.addr(ports::SMTP);
    c.smtp.submission_listen = site.addr(ports::SUBMISSION);
    c.smtp.submissions_listen = site.addr(ports::SUBMISSIONS);
    c.imap.plain_listen = site.addr(ports::IMAP);
    c.imap.tls_listen = site.addr(ports::IMAPS);
    c.tls.cert_path = Some(tls.cert.clone());
    c.tls.key_path = Some(tls.key.clone());
    c.store.write_timeout_ms = WRITE_TIMEOUT_MS;
    c.cluster.node_id = site.node_id;
    c.cluster.listen = site.replication_addr();
    c.cluster.secret = Some(secrets.cluster.clone());
    c.cluster.ca_files = vec![tls.cluster_ca.clone()];
    c.cluster.cert_file = Some(tls.cluster_cert.clone());
    c.cluster.key_file = Some(tls.cluster_key.clone());
    (c.cluster.election_timeout_min_ms, c.cluster.election_timeout_max_ms, c.cluster.heartbeat_interval_ms) =
        if topology.wan.is_some() {
            (WAN_ELECTION_TIMEOUT_MIN_MS, WAN_ELECTION_TIMEOUT_MAX_MS, WAN_HEARTBEAT_INTERVAL_MS)
        } else {
            (ELECTION_TIMEOUT_MIN_MS, ELECTION_TIMEOUT_MAX_MS, HEARTBEAT_INTERVAL_MS)
        };
    c.cluster.body_push_timeout_ms = BODY_PUSH_TIMEOUT_MS;
    c.cluster.members = topology
        .sites
        .iter()
        .map(|m| {
            let addr: SocketAddr = topology.peer_addr(site, m);
            ClusterMember {
                node_id: m.node_id,
                site: m.name.clone(),
                role: match m.role {
                    Role::Data => SiteRole::Data,
                    Role::Witness => SiteRole::Witness,
                    Role::Standby => SiteRole::Standby,
                    Role::Lagged => SiteRole::Lagged,
                },
                addr: addr.to_string(),
                mail_ip: (m.role == Role::Data).then_some(std::net::IpAddr::V4(m.ip)),
            }
        })
        .collect();
    if site.role == Role::Data {
        c.dns.listen = Some(site.addr(ports::DNS));
        // Drills stop and start this site's services through its admin API.
        c.faults.hooks = true;
    }
    // The standby has the API too: when both cities are lost, it is the site an
    // operator (or the drill engine) forces the failover through.
    if site.role.has_api() {
        c.api.listen = Some(site.addr(ports::HTTP));
        c.api.token = Some(secrets.api_token.clone());
    }
    c.dns.ttl_secs = DNS_TTL_SECS;
    c.dns.withdraw_after_ms = DNS_WITHDRAW_AFTER_MS;
    // Every observer of the loopback lab probes from 127.0.0.1, and its probes fail
    // until `lab up` has made the probe account: with the default 500 ms, doubled
    // per failure from one address up to 32 s, every later login from 127.0.0.1
    // (probes and tests alike) would wait longer than a probe may take.
    c.imap.auth_failure_delay_ms = AUTH_FAILURE_DELAY_MS;
    c.smtp.auth_failure_delay_ms = AUTH_FAILURE_DELAY_MS;
    c.control.enabled = true;
    c.control.probe_interval_ms = PROBE_INTERVAL_MS;
    c.control.probe_timeout_ms = if topology.wan.is_some() { WAN_PROBE_TIMEOUT_MS } else { PROBE_TIMEOUT_MS };
    c.control.down_after_failures = DOWN_AFTER_FAILURES;
    c.control.readd_holddown_ms = READD_HOLDDOWN_MS;
    c.control.probe_smtp_port = ports::SMTP;
    // The probes verify every site's mail certificate against the lab CA, over
    // STARTTLS and implicit TLS, as they must across hosts.
    c.control.probe_imap_port = ports::IMAPS;
    c.control.probe_ca_file = Some(tls.ca.clone());
    c.control.probe_tls_name = format!("{{site}}.{DOMAIN}");
    c.control.probe_account = Some(secrets.probe.0.clone());
    c.control.probe_password = Some(secrets.probe.1.clone());
    c.log.level = "info".into();
    c
}

/// The lab's `[backup]` section: a new key in `<dir>/backup/backup.key` (mode 0600)
/// and one directory target per data site, plus `extra` targets; log archived
/// every second, no schedules.
pub fn write_backup_setup(
    dir: &Path,
    topology: &Topology,
    extra: &[maildr_config::BackupTargetConfig],
) -> Result<maildr_config::BackupSection> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let backup_dir = dir.join("backup");
    std::fs::create_dir_all(&backup_dir).with_context(|| format!("creating {}", backup_dir.display()))?;
    let key_file = backup_dir.join("backup.key");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key_file)
        .with_context(|| format!("writing {}", key_file.display()))?;
    writeln!(file, "{}", hex::encode(rand::random::<[u8; 32]>()))?;
    let mut targets: Vec<maildr_config::BackupTargetConfig> = topology
        .sites
        .iter()
        .filter(|s| s.role == Role::Data)
        .map(|s| maildr_config::BackupTargetConfig {
            name: s.name.clone(),
            kind: maildr_config::BackupTargetKind::Dir,
            path: Some(backup_dir.join(&s.name)),
            endpoint: None,
            bucket: None,
            region: "us-east-1".into(),
            prefix: String::new(),
            access_key_id: None,
            secret_access_key_file: None,
        })
        .collect();
    targets.extend(extra.iter().cloned());
    Ok(maildr_config::BackupSection {
        key_file: Some(key_file),
        schedule: String::new(),
        verify_schedule: String::new(),
        archive_every_secs: 1,
        targets,
        ..maildr_config::BackupSection::default()
    })
}

/// The `[[backup.targets]]` tables of `path` (a fragment of a site config holding
/// nothing else), with relative secret files made relative to `path`'s directory.
pub fn read_backup_targets(path: &Path) -> Result<Vec<maildr_config::BackupTargetConfig>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fragment {
        backup: Section,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Section {
        targets: Vec<maildr_config::BackupTargetConfig>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let fragment: Fragment = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(fragment
        .backup
        .targets
        .into_iter()
        .map(|mut t| {
            t.secret_access_key_file = t.secret_access_key_file.map(|f| if f.is_relative() { base.join(f) } else { f });
            t
        })
        .collect())
}

/// The `[[dns.providers]]` tables of `path` (a fragment of a site config holding
/// nothing else), with relative secret files made relative to `path`'s directory.
pub fn read_dns_providers(path: &Path) -> Result<Vec<maildr_config::DnsProviderConfig>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Fragment {
        dns: Dns,
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Dns {
        providers: Vec<maildr_config::DnsProviderConfig>,
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let fragment: Fragment =
        toml::from_str(&text).with_context(|| format!("{}: expected only [[dns.providers]] tables", path.display()))?;
    let base = std::path::absolute(path)
        .with_context(|| format!("resolving {}", path.display()))?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    Ok(fragment
        .dns
        .providers
        .into_iter()
        .map(|mut p| {
            p.tsig_secret_file = base.join(&p.tsig_secret_file);
            p
        })
        .collect())
}

/// Check `config` as `maildr serve` would and write it to `path`.
pub fn write_config(path: &Path, config: &SiteConfig) -> Result<()> {
    config
        .check(path)
        .with_context(|| format!("the lab built a config the server would refuse: {}", path.display()))?;
    let text = toml::to_string(config).with_context(|| format!("serializing {}", path.display()))?;
    let text = format!("# Written by `maildr lab up`; rewritten on every `lab up`.\n{text}");
    // Round trip, so what is on disk is exactly what was checked.
    let parsed = SiteConfig::parse(&text, path).with_context(|| format!("re-reading {}", path.display()))?;
    anyhow::ensure!(&parsed == config, "{} does not read back as written", path.display());
    write_file(path, text.as_bytes(), 0o600)
}

pub(crate) fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes).with_context(|| format!("writing {}", path.display()))
}
