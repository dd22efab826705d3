//! The DR control plane of one site: it watches every data site through the eyes
//! of clients and, on the primary, turns what the observers agree on into committed
//! DNS steering, with every step in an event log a drill can measure.
//!
//! - Every site (data, witness, standby) is an **observer**: each round it probes
//!   every data site (SMTP banner and EHLO, IMAP greeting and probe login, and the
//!   replication channel through the same link the site replicates on), and keeps
//!   a verdict and a bounded history per site ([`health`], [`probe`]).
//! - The **primary** asks every observer for its view, counts votes, and commits a
//!   [`Command::SetSteering`] when the steering should change ([`steer`]): a site is
//!   removed only when a majority of all observers calls it down, and listed again
//!   only after it has been up and caught up for the hold-down. On election it
//!   points `mail.` at itself at once, before asking anyone.
//! - Every decision is a committed command, so every surviving site derives the
//!   same DNS zones from the same state (see `maildr-dns`).
//!
//! - A **forced failover** asked through the admin API is carried to the standby by
//!   [`maildr_cluster::ops::failover`], the same operation as `maildr cluster
//!   failover`; the operator decides it, not this crate.
//!
//! This crate never decides who is primary (Raft does), never writes to a store
//! except through [`Cluster::write`], and never changes DNS without a commit.

pub mod health;
pub mod probe;
pub mod steer;
pub mod zones;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maildr_cluster::ops::ControlClient;
use maildr_cluster::{Cluster, Replicated, WriteError};
use maildr_config::{ControlSection, MxPolicy, SiteConfig, SiteRole};
use maildr_store::{Command, ControlEventKind, Steering};
use tokio::sync::watch;

pub use health::{Observations, Sample, TargetHealth};
pub use steer::Votes;

/// Local events kept (those that are not replicated, like `dns_served`).
const LOCAL_EVENTS_MAX: usize = 1_000;

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> i64 {
    maildr_types::Clock::now_ms(&maildr_types::SystemClock)
}

pub use maildr_api_types::control::{
    DnsRecord, DnsRecords, EventList, EventView, HealthHistory, HealthReport, ObserverReport, SiteHistory, SiteVerdict,
    SteeringView,
};

/// The committed steering as the admin API shows it (the store's record is the
/// replicated state; the API's view is the contract, kept apart from it).
fn steering_view(s: Steering) -> SteeringView {
    let Steering { serial, primary, mx, down, reason, changed_at_ms } = s;
    SteeringView { serial, primary, mx, down, reason, changed_at_ms }
}

/// A served DNS record as the admin API shows it.
fn dns_record(r: maildr_dns::RecordView) -> DnsRecord {
    let maildr_dns::RecordView { name, rtype, ttl, data } = r;
    DnsRecord { name, rtype, ttl, data }
}

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("the control plane needs a replicated site ([[cluster.members]])")]
    NotReplicated,
    #[error("cluster configuration: {0}")]
    Cluster(#[from] maildr_cluster::ops::OpsError),
    #[error("data site {0} has no mail_ip in the cluster members")]
    NoMailIp(String),
    #[error("the probes' CA (control.probe_ca_file): {0}")]
    ProbeTls(String),
    #[error("reading the store: {0}")]
    Store(#[from] maildr_store::StoreError),
}

/// A data site as the probes reach it.
#[derive(Debug, Clone)]
struct ProbeTarget {
    site: String,
    smtp: SocketAddr,
    imap: SocketAddr,
}

/// The control plane of this site. Cheap to share (`Arc`).
pub struct ControlPlane {
    site: String,
    role: SiteRole,
    cluster: Cluster,
    replicated: Arc<Replicated>,
    /// Reaches every member over the replication channel (forced failover).
    members: ControlClient,
    settings: ControlSection,
    mx_policy: MxPolicy,
    targets: Vec<ProbeTarget>,
    /// TLS for the probes (`control.probe_ca_file`); `None`: plaintext, loopback only.
    probe_tls: Option<probe::ProbeTls>,
    data_dir: PathBuf,
    observer: Mutex<health::Observer>,
    local_events: Mutex<VecDeque<EventView>>,
    /// The zones this site's DNS server answers from, when it runs one.
    served_zones: Mutex<Option<watch::Receiver<Arc<maildr_dns::ZoneSet>>>>,
}

impl ControlPlane {
    /// Start probing (every site) and deciding (on the primary) until `stop`.
    pub fn start(
        cluster: Cluster,
        config: &SiteConfig,
        data_dir: &Path,
        stop: watch::Receiver<bool>,
    ) -> Result<Arc<ControlPlane>, ControlError> {
        let replicated = cluster.replication().cloned().ok_or(ControlError::NotReplicated)?;
        let c = &config.control;
        let targets = config
            .cluster
            .members
            .iter()
            .filter(|m| m.role == SiteRole::Data)
            .map(|m| {
                let ip: IpAddr = m.mail_ip.ok_or_else(|| ControlError::NoMailIp(m.site.clone()))?;
                Ok(ProbeTarget {
                    site: m.site.clone(),
                    smtp: SocketAddr::new(ip, c.probe_smtp_port),
                    imap: SocketAddr::new(ip, c.probe_imap_port),
                })
            })
            .collect::<Result<Vec<_>, ControlError>>()?;
        let probe_tls = match &c.probe_ca_file {
            Some(path) => {
                let pem =
                    std::fs::read(path).map_err(|e| ControlError::ProbeTls(format!("{}: {e}", path.display())))?;
                let tls = maildr_client::Tls::from_ca_pem(&pem)
                    .map_err(|e| ControlError::ProbeTls(format!("{}: {e}", path.display())))?;
                Some(probe::ProbeTls { tls, name_template: c.probe_tls_name.clone() })
            }
            None => None,
        };
        let observer = health::Observer::new(
            targets.iter().map(|t| t.site.clone()),
            c.down_after_failures,
            c.history_samples_max as usize,
        );
        let plane = Arc::new(ControlPlane {
            site: config.site.name.clone(),
            role: config.role(),
            cluster,
            replicated: Arc::clone(&replicated),
            members: ControlClient::from_cluster(&config.site.name, config.cluster.clone())?,
            settings: c.clone(),
            mx_policy: config.dns.mx_policy,
            targets,
            probe_tls,
            data_dir: data_dir.to_path_buf(),
            observer: Mutex::new(observer),
            local_events: Mutex::new(VecDeque::new()),
            served_zones: Mutex::new(None),
        });
        let weak = Arc::downgrade(&plane);
        replicated.set_observation_source(Arc::new(move || match weak.upgrade() {
            Some(plane) => serde_json::to_vec(&plane.observations()).unwrap_or_default(),
            None => Vec::new(),
        }));
        tokio::spawn(observe_loop(Arc::clone(&plane), stop.clone()));
        if plane.role == SiteRole::Data {
            tokio::spawn(decide_loop(Arc::clone(&plane), stop));
        }
        tracing::info!(site = %plane.site, targets = plane.targets.len(), "control plane started");
        Ok(plane)
    }

    /// This site's own observations.
    pub fn observations(&self) -> Observations {
        let free = free_disk_bytes(&self.data_dir);
        self.observer.lock().unwrap_or_else(|p| p.into_inner()).report(&self.site, self.role.name(), now_ms(), free)
    }

    /// Tell the control plane which zones this site's DNS server answers from.
    pub fn set_served_zones(&self, zones: watch::Receiver<Arc<maildr_dns::ZoneSet>>) {
        *self.served_zones.lock().unwrap_or_else(|p| p.into_inner()) = Some(zones);
    }

    /// The DNS records this site serves now (empty when it runs no DNS server or
    /// no steering is committed yet), with each zone's serial.
    pub fn dns_records(&self) -> Option<DnsRecords> {
        let zones = self.served_zones.lock().unwrap_or_else(|p| p.into_inner()).as_ref()?.borrow().clone();
        Some(DnsRecords {
            site: self.site.clone(),
            serials: zones.serials().into_iter().map(|(d, s)| (d.to_string(), s)).collect(),
            records: zones.records_view().into_iter().map(dns_record).collect(),
        })
    }

    /// This site's name.
    pub fn site(&self) -> &str {
        &self.site
    }

    /// The client of every member's replication channel, with this site's secret.
    pub fn cluster_client(&self) -> &ControlClient {
        &self.members
    }

    /// This observer's history of every data site it probes, or of `site` only
    /// (`None` when it does not probe that site): the last `limit` samples of each.
    pub fn histories(&self, site: Option<&str>, limit: usize) -> Option<HealthHistory> {
        if site.is_some_and(|s| !self.targets.iter().any(|t| t.site == s)) {
            return None;
        }
        let observer = self.observer.lock().unwrap_or_else(|p| p.into_inner());
        let sites = self
            .targets
            .iter()
            .filter(|t| site.is_none_or(|s| s == t.site))
            .map(|t| SiteHistory {
                site: t.site.clone(),
                samples: observer.history(&t.site, limit).unwrap_or_default(),
            })
            .collect();
        Some(HealthHistory { observer: self.site.clone(), samples_max: self.settings.history_samples_max, sites })
    }

    /// The committed steering, as applied here.
    pub fn steering(&self) -> Option<Steering> {
        self.cluster.store().steering().ok().flatten()
    }

    /// Every observer's view (peers asked now), the votes and the committed steering.
    pub async fn health(&self) -> HealthReport {
        let observers = self.gather(Duration::from_millis(self.settings.probe_timeout_ms)).await;
        let votes = self.votes(&observers);
        let steering = self.steering();
        let verdicts = self
            .targets
            .iter()
            .map(|t| {
                let v = votes.get(&t.site).copied().unwrap_or_default();
                SiteVerdict {
                    site: t.site.clone(),
                    votes: v,
                    majority_down: v.majority_down(),
                    listed: steering.as_ref().is_some_and(|s| s.mx.contains(&t.site)),
                }
            })
            .collect();
        HealthReport {
            site: self.site.clone(),
            primary: self.replicated.primary_site(),
            observers,
            verdicts,
            steering: steering.map(steering_view),
        }
    }

    /// The failover timeline: replicated events after `after_id` and this site's
    /// local ones, ordered by time, at most `limit`.
    pub fn events(&self, after_id: u64, limit: usize) -> Result<Vec<EventView>, ControlError> {
        let mut out: Vec<EventView> = self
            .cluster
            .store()
            .events(after_id, limit)?
            .into_iter()
            .map(|e| EventView {
                id: Some(e.id),
                at_ms: e.at_ms,
                kind: e.kind.name().to_string(),
                site: e.site,
                detail: e.detail,
                source: "cluster".into(),
            })
            .collect();
        out.extend(self.local_events.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned());
        out.sort_by_key(|e| e.at_ms);
        let skip = out.len().saturating_sub(limit);
        Ok(out.split_off(skip))
    }

    /// Record an event that only this site sees (e.g. its DNS server began serving
    /// a new zone serial).
    pub fn record_local_event(&self, kind: ControlEventKind, detail: String, at_ms: i64) {
        let mut events = self.local_events.lock().unwrap_or_else(|p| p.into_inner());
        if events.len() == LOCAL_EVENTS_MAX {
            events.pop_front();
        }
        events.push_back(EventView {
            id: None,
            at_ms,
            kind: kind.name().to_string(),
            site: Some(self.site.clone()),
            detail,
            source: self.site.clone(),
        });
    }

    /// Ask every observer (this site included) for its observations.
    async fn gather(&self, timeout: Duration) -> Vec<ObserverReport> {
        let mut out = vec![ObserverReport {
            observer: self.site.clone(),
            reachable: true,
            observations: Some(self.observations()),
        }];
        for (site, bytes) in self.replicated.peer_observations(timeout).await {
            let observations = bytes.and_then(|b| serde_json::from_slice::<Observations>(&b).ok());
            out.push(ObserverReport { observer: site, reachable: observations.is_some(), observations });
        }
        out
    }

    /// Votes per data site from observers that have finished at least one round.
    fn votes(&self, observers: &[ObserverReport]) -> BTreeMap<String, Votes> {
        let total = self.replicated.members().len();
        let mut votes: BTreeMap<String, Votes> =
            self.targets.iter().map(|t| (t.site.clone(), Votes { down: 0, up: 0, observers: total })).collect();
        for o in observers.iter().filter_map(|o| o.observations.as_ref()).filter(|o| o.rounds > 0) {
            for t in &o.targets {
                if let Some(v) = votes.get_mut(&t.site) {
                    if t.up {
                        v.up += 1;
                    } else {
                        v.down += 1;
                    }
                }
            }
        }
        votes
    }

    /// One probe round against every data site, concurrently.
    async fn probe_round(self: &Arc<Self>) {
        let timeout = Duration::from_millis(self.settings.probe_timeout_ms);
        let login = match (&self.settings.probe_account, &self.settings.probe_password) {
            (Some(account), Some(password)) => {
                Some(probe::ProbeLogin { account: account.clone(), password: password.clone() })
            }
            _ => None,
        };
        let mut tasks = Vec::new();
        for target in self.targets.clone() {
            let plane = Arc::clone(self);
            let login = login.clone();
            tasks.push(tokio::spawn(async move {
                let helo = format!("probe.{}", plane.site);
                let (smtp, imap, replication) = tokio::join!(
                    probe::smtp(target.smtp, &target.site, plane.probe_tls.as_ref(), &helo, timeout),
                    probe::imap(target.imap, &target.site, plane.probe_tls.as_ref(), login.as_ref(), timeout),
                    async {
                        if target.site == plane.site {
                            return Ok(None);
                        }
                        let started = Instant::now();
                        plane.replicated.peer_status(&target.site, timeout).await.map(|_| Some(started.elapsed()))
                    },
                );
                let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
                let errors: Vec<String> = [smtp.as_ref().err(), imap.as_ref().err(), replication.as_ref().err()]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let sample = Sample {
                    at_ms: now_ms(),
                    ok: errors.is_empty(),
                    smtp_ms: smtp.as_ref().ok().map(ms),
                    imap_ms: imap.as_ref().ok().map(ms),
                    replication_ms: replication.as_ref().ok().and_then(|d| d.as_ref().map(ms)),
                    error: (!errors.is_empty()).then(|| errors.join("; ")),
                };
                (target.site, sample)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            if let Ok(result) = task.await {
                results.push(result);
            }
        }
        let lags: BTreeMap<String, Option<u64>> = if self.replicated.is_primary() {
            self.replicated.status().peers.into_iter().map(|p| (p.site, p.lag_entries)).collect()
        } else {
            BTreeMap::new()
        };
        let mut observer = self.observer.lock().unwrap_or_else(|p| p.into_inner());
        for (site, sample) in results {
            if !sample.ok && observer.last_ok(&site) != Some(false) {
                tracing::warn!(target_site = %site, error = ?sample.error, "probe failed");
            }
            observer.record(&site, sample);
            let lag = if site == self.site { Some(0) } else { lags.get(&site).copied().flatten() };
            observer.set_lag(&site, lag);
        }
        observer.finish_round();
    }

    /// On the primary: commit the steering the observers call for, if it differs.
    async fn decide(&self, held_up_since: &mut BTreeMap<String, Instant>) -> Result<(), String> {
        // The term this decision is taken in: its writes are refused once the lead
        // has moved, so a slow decision never lands after a newer primary's.
        let Some(term) = self.replicated.leading_term() else {
            held_up_since.clear();
            return Ok(());
        };
        let store = self.cluster.store();
        let committed = store.steering().map_err(|e| e.to_string())?;
        if !self.settings.steering && committed.is_some() {
            // `control.steering = false` (a lab built to fail drills): the first
            // steering stands, whoever is primary and whatever the observers say.
            return Ok(());
        }
        let data_sites: Vec<String> = self.targets.iter().map(|t| t.site.clone()).collect();
        let elected = committed.as_ref().and_then(|c| c.primary.as_deref()) != Some(self.site.as_str());
        // A new primary points mail at itself first, without waiting for observers
        // that may be dead (the old primary among them).
        let votes = if elected {
            BTreeMap::new()
        } else {
            let observers = self.gather(Duration::from_millis(self.settings.probe_timeout_ms)).await;
            self.votes(&observers)
        };
        let status = self.replicated.status();
        let lags: BTreeMap<String, Option<u64>> =
            status.peers.iter().map(|p| (p.site.clone(), p.lag_entries)).collect();
        let down: BTreeSet<String> = committed.as_ref().map(|c| c.down.iter().cloned().collect()).unwrap_or_default();
        held_up_since.retain(|site, _| down.contains(site));
        for site in &down {
            let up = votes.get(site).is_some_and(|v| v.majority_up());
            let caught_up =
                lags.get(site).copied().flatten().is_some_and(|lag| lag <= self.settings.readd_lag_entries_max);
            if up && caught_up {
                held_up_since.entry(site.clone()).or_insert_with(Instant::now);
            } else {
                held_up_since.remove(site);
            }
        }
        let holddown = Duration::from_millis(self.settings.readd_holddown_ms);
        let held_up: BTreeSet<String> =
            held_up_since.iter().filter(|(_, since)| since.elapsed() >= holddown).map(|(s, _)| s.clone()).collect();
        let Some(decision) = steer::decide(&steer::DecisionInput {
            primary: &self.site,
            data_sites: &data_sites,
            committed: committed.as_ref(),
            votes: &votes,
            held_up: &held_up,
            policy: self.mx_policy,
        }) else {
            return Ok(());
        };
        let write = |command: Command| async move {
            match self.cluster.write_as_primary(command, term).await {
                Ok(_) => Ok(()),
                Err(WriteError::Refused(e)) => Err(e.to_string()),
                Err(WriteError::Unavailable(e)) => Err(e),
            }
        };
        let mut reasons = Vec::new();
        if decision.new_primary {
            let term = status.term;
            let previous = committed.as_ref().and_then(|c| c.primary.clone());
            let detail = match &previous {
                Some(p) => format!("{} is primary in term {term}; previous primary {p}", self.site),
                None => format!("{} is primary in term {term}", self.site),
            };
            write(Command::RecordEvent {
                kind: ControlEventKind::Elected,
                site: Some(self.site.clone()),
                detail,
                at_ms: now_ms(),
            })
            .await?;
            reasons.push(format!("{} elected", self.site));
        }
        for site in &decision.newly_down {
            let v = votes.get(site).copied().unwrap_or_default();
            write(Command::RecordEvent {
                kind: ControlEventKind::Detected,
                site: Some(site.clone()),
                detail: format!("{} of {} observers call {site} down", v.down, v.observers),
                at_ms: now_ms(),
            })
            .await?;
            reasons.push(format!("{site} down"));
        }
        for site in &decision.recovered {
            write(Command::RecordEvent {
                kind: ControlEventKind::Recovered,
                site: Some(site.clone()),
                detail: format!("{site} healthy and caught up for {} ms", holddown.as_millis()),
                at_ms: now_ms(),
            })
            .await?;
            reasons.push(format!("{site} back"));
        }
        if reasons.is_empty() {
            reasons.push("policy".into());
        }
        write(Command::SetSteering {
            primary: Some(decision.primary.clone()),
            mx: decision.mx.clone(),
            down: decision.down.clone(),
            reason: reasons.join(", "),
            at_ms: now_ms(),
        })
        .await?;
        for site in decision.recovered {
            held_up_since.remove(&site);
        }
        tracing::info!(primary = %decision.primary, mx = ?decision.mx, down = ?decision.down, "DNS steering committed");
        Ok(())
    }
}

async fn observe_loop(plane: Arc<ControlPlane>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(plane.settings.probe_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => plane.probe_round().await,
            _ = stop.changed() => return,
        }
    }
}

async fn decide_loop(plane: Arc<ControlPlane>, mut stop: watch::Receiver<bool>) {
    let mut raft = plane.replicated.raft_changes();
    let mut tick = tokio::time::interval(Duration::from_millis(plane.settings.probe_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held_up_since = BTreeMap::new();
    let mut was_primary = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = raft.changed() => {
                if changed.is_err() {
                    return;
                }
                // React at once only when this site just became primary.
                let primary = plane.replicated.is_primary();
                let became = primary && !was_primary;
                was_primary = primary;
                if !became {
                    continue;
                }
            }
            _ = stop.changed() => return,
        }
        if let Err(e) = plane.decide(&mut held_up_since).await {
            tracing::warn!(error = %e, "DNS steering not committed; retrying next round");
        }
    }
}

/// Free bytes on the file system holding `path`.
fn free_disk_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid out pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}
