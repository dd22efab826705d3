//! `lab.json`: what a lab supervisor started, where, and with which accounts.
//!
//! The file is the lab's only memory between commands (`up` writes it, `status`,
//! `kill`, `start`, `down` read and update it), and the document scripts and the
//! drill engine read to find endpoints and passwords. It is replaced by
//! write-temp-and-rename, so a reader never sees half of it. It holds lab
//! passwords and is written readable by its owner only.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::topology::{ports, Net, Role, SiteSpec, Wan};

/// The state file's name inside the lab directory.
pub const STATE_FILE: &str = "lab.json";

/// Everything the lab supervisor knows about one lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabState {
    /// The lab directory (absolute).
    pub dir: PathBuf,
    pub net: Net,
    /// The hosted mail domain.
    pub domain: String,
    /// The lab CA certificate clients should trust.
    pub ca: PathBuf,
    pub links: LinksState,
    pub sites: Vec<SiteState>,
    /// Accounts created at bootstrap, with their passwords.
    pub accounts: Vec<AccountState>,
    /// Bearer token of the admin HTTP API (data sites and the standby).
    #[serde(default)]
    pub api_token: String,
    /// Whether the primary steers DNS. `false` (`lab up --no-steering`): a lab
    /// built for drills that must fail, where DNS keeps naming the first primary.
    #[serde(default = "steering_default")]
    pub steering: bool,
    /// `Some` for a netns lab (`lab up --netns`): its WAN and the clients'
    /// namespace. Absent from a loopback lab's file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsState>,
    /// `Some` when `lab up --backup` started an S3 server for the sites' backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3State>,
}

/// The lab's S3-compatible object store (see `s3_server`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3State {
    /// The SeaweedFS executable.
    pub weed: PathBuf,
    /// Where the sites reach its S3 gateway (`http://IP:PORT`).
    pub endpoint: String,
    pub bucket: String,
    /// Its data; also the `-dir=` argument that identifies its process.
    pub data_dir: PathBuf,
    /// Its S3 identities (the sites').
    pub identities: PathBuf,
    pub log: PathBuf,
    /// `None` when not started, or stopped.
    pub pid: Option<u32>,
}

/// The network of a netns lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetnsState {
    /// The virtual WAN every site and the client namespace are on.
    pub wan: Wan,
    /// The namespace clients run in: the supervisor, the drill engine, tests.
    pub client: String,
    /// The client namespace's address on the WAN.
    pub client_ip: Ipv4Addr,
}

fn steering_default() -> bool {
    true
}

/// The process that runs every fault-proxy link and their control API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinksState {
    /// Base URL of the link-control API (`GET /links`, `PUT /links/{name}/faults`, ...).
    pub control: String,
    /// `None` when not started, or stopped by `lab down --keep`.
    pub pid: Option<u32>,
    pub names: Vec<String>,
    pub log: PathBuf,
}

impl LinksState {
    /// The link-control API's address, from `control`.
    pub fn control_addr(&self) -> Result<std::net::SocketAddr, String> {
        self.control
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .map_err(|e| format!("lab link control {:?}: {e}", self.control))
    }
}

/// One site process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteState {
    pub site: String,
    pub node_id: u64,
    pub role: Role,
    pub ip: Ipv4Addr,
    /// `None` when not started, or stopped by `lab down --keep`.
    pub pid: Option<u32>,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// Standard output and error of `maildr serve`, appended across restarts.
    pub log: PathBuf,
    pub ports: SitePorts,
    /// The site's network namespace in a netns lab; absent on loopback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
}

/// The ports a site listens on, on its own IP; `None` for services not built yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SitePorts {
    pub smtp: u16,
    pub submission: u16,
    pub submissions: u16,
    pub imap: u16,
    pub imaps: u16,
    pub replication: u16,
    pub dns: Option<u16>,
    pub http: Option<u16>,
}

impl SitePorts {
    /// The ports of a lab site of this role (DNS on data sites, the admin API on data
    /// sites and the standby).
    pub fn lab(role: Role) -> SitePorts {
        let data = role == Role::Data;
        SitePorts {
            smtp: ports::SMTP,
            submission: ports::SUBMISSION,
            submissions: ports::SUBMISSIONS,
            imap: ports::IMAP,
            imaps: ports::IMAPS,
            replication: ports::REPLICATION,
            dns: data.then_some(ports::DNS),
            http: role.has_api().then_some(ports::HTTP),
        }
    }
}

impl SiteState {
    /// A site not started yet, with the lab's file layout under `dir/sites/<name>/`.
    pub fn planned(dir: &Path, spec: &SiteSpec) -> SiteState {
        let home = site_dir(dir, &spec.name);
        SiteState {
            site: spec.name.clone(),
            node_id: spec.node_id,
            role: spec.role,
            ip: spec.ip,
            pid: None,
            config: home.join("site.toml"),
            data_dir: home.join("data"),
            log: home.join("serve.log"),
            ports: SitePorts::lab(spec.role),
            netns: None,
        }
    }
}

/// Where a site's config, certificate, data and log live.
pub fn site_dir(dir: &Path, site: &str) -> PathBuf {
    dir.join("sites").join(site)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountState {
    pub address: String,
    pub password: String,
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read lab state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("lab state {path} is not valid: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write lab state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl LabState {
    /// The state file of the lab in `dir`.
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// Read `dir/lab.json`; `Ok(None)` when there is none.
    pub fn load(dir: &Path) -> Result<Option<LabState>, StateError> {
        let path = Self::path(dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|source| StateError::Parse { path, source })
    }

    /// Replace `self.dir/lab.json` atomically (temporary file, fsync, rename).
    pub fn save(&self) -> Result<(), StateError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = Self::path(&self.dir);
        let tmp = path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("lab state serializes"))?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|source| StateError::Write { path: path.clone(), source })
    }

    pub fn site(&self, name: &str) -> Option<&SiteState> {
        self.sites.iter().find(|s| s.site == name)
    }

    pub fn site_mut(&mut self, name: &str) -> Option<&mut SiteState> {
        self.sites.iter_mut().find(|s| s.site == name)
    }

    /// Every network namespace of the lab: the sites', then the client's.
    pub fn namespaces(&self) -> Vec<String> {
        let sites = self.sites.iter().filter_map(|s| s.netns.clone());
        sites.chain(self.netns.iter().map(|n| n.client.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Topology;

    #[test]
    fn state_survives_a_save_and_load_and_ports_a_role_lacks_are_null() {
        let dir = std::env::temp_dir().join(format!("maildr-lab-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(LabState::load(&dir).unwrap().is_none());
        let topo = Topology::three_sites("127.9".parse().unwrap());
        let mut state = LabState {
            dir: dir.clone(),
            net: topo.net,
            domain: "example.test".into(),
            ca: dir.join("ca.pem"),
            links: LinksState {
                control: "http://127.9.99.1:2790".into(),
                pid: Some(7),
                names: topo.links().into_iter().map(|l| l.name).collect(),
                log: dir.join("links.log"),
            },
            sites: topo.sites.iter().map(|s| SiteState::planned(&dir, s)).collect(),
            accounts: vec![AccountState { address: "probe@example.test".into(), password: "pw".into() }],
            api_token: "token".into(),
            steering: false,
            netns: None,
            s3: None,
        };
        state.site_mut("sh").unwrap().pid = Some(42);
        state.save().unwrap();
        assert_eq!(LabState::load(&dir).unwrap().unwrap(), state);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(json["net"], "127.9");
        assert_eq!(json["sites"][2]["role"], "witness");
        assert_eq!(json["sites"][0]["ports"]["dns"], 5353, "data sites serve DNS");
        assert_eq!(json["sites"][2]["ports"]["dns"], serde_json::Value::Null, "the witness serves no DNS");
        assert_eq!(json["api_token"], "token");
        assert_eq!(json["steering"], false);
        let mut without = json.clone();
        without.as_object_mut().unwrap().remove("steering");
        let older: LabState = serde_json::from_value(without).unwrap();
        assert!(older.steering, "a lab.json written before the key steers DNS");
        assert_eq!(json["sites"][1]["config"], dir.join("sites/sh/site.toml").to_str().unwrap());
        assert!(json.get("netns").is_none() && json["sites"][0].get("netns").is_none(), "a loopback lab has none");
        assert!(state.namespaces().is_empty());
        state.netns = Some(NetnsState {
            wan: Wan::default(),
            client: "maildr9-client".into(),
            client_ip: Wan::default().client(),
        });
        state.site_mut("bj").unwrap().netns = Some("maildr9-bj".into());
        state.save().unwrap();
        assert_eq!(LabState::load(&dir).unwrap().unwrap(), state);
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).unwrap()).unwrap();
        assert_eq!(json["netns"]["wan"], "198.18.0.0/24");
        assert_eq!(json["sites"][0]["netns"], "maildr9-bj");
        assert_eq!(state.namespaces(), ["maildr9-bj", "maildr9-client"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
