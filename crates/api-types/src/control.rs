//! The control plane's answers (`/api/health`, `/api/health/history`,
//! `/api/events`, `/api/dns/records`): health of every site as every observer sees
//! it, the votes, the committed steering, the failover timeline and the DNS records
//! a site serves. Observers also send [`Observations`] to the primary as JSON on
//! the replication channel, so the primary reads the same type the API shows.
//!
//! Plain data; this module must never decide anything about failover.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One event of the failover timeline, replicated or local to this site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    /// Position in the replicated log; absent for local events.
    pub id: Option<u64>,
    pub at_ms: i64,
    /// `detected`, `recovered`, `elected`, `dns_committed`, `dns_served`, …
    pub kind: String,
    pub site: Option<String>,
    pub detail: String,
    /// The site whose log this comes from: `cluster` for replicated events.
    pub source: String,
}

/// What one observer says, or that it could not be asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ObserverReport {
    pub observer: String,
    pub reachable: bool,
    pub observations: Option<Observations>,
}

/// The votes about one data site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteVerdict {
    pub site: String,
    pub votes: Votes,
    pub majority_down: bool,
    /// Listed in the committed MX records.
    pub listed: bool,
}

/// Health of every site as every observer sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthReport {
    /// The site answering.
    pub site: String,
    pub primary: Option<String>,
    pub observers: Vec<ObserverReport>,
    pub verdicts: Vec<SiteVerdict>,
    pub steering: Option<SteeringView>,
}

/// The DNS records a site serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DnsRecords {
    pub site: String,
    /// Zone serial by domain.
    pub serials: BTreeMap<String, u32>,
    pub records: Vec<DnsRecord>,
}

/// One observer's probe history of the data sites it watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthHistory {
    /// The observing site (the one answering).
    pub observer: String,
    /// Samples kept per site (`control.history_samples_max`).
    pub samples_max: u32,
    pub sites: Vec<SiteHistory>,
}

/// The probe rounds of one observed site, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SiteHistory {
    pub site: String,
    pub samples: Vec<Sample>,
}

/// `GET /api/events`: the failover timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// The committed DNS steering, as `GET /api/health` shows it: where clients and
/// senders are sent now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SteeringView {
    /// Zone serial; grows by one with every change.
    pub serial: u32,
    pub primary: Option<String>,
    pub mx: Vec<String>,
    pub down: Vec<String>,
    pub reason: String,
    pub changed_at_ms: i64,
}

/// One DNS record as served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DnsRecord {
    /// Owner name, fully qualified with the trailing dot.
    pub name: String,
    /// Record type mnemonic (`A`, `MX`, ...).
    pub rtype: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// Record data in zone-file presentation form.
    pub data: String,
}

/// One probe round against one site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Sample {
    pub at_ms: i64,
    pub ok: bool,
    pub smtp_ms: Option<f64>,
    pub imap_ms: Option<f64>,
    /// Replication channel round trip (status call); absent for the observer itself.
    pub replication_ms: Option<f64>,
    pub error: Option<String>,
}

/// An observer's view of one data site.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TargetHealth {
    pub site: String,
    /// False once `down_after_failures` consecutive rounds failed.
    pub up: bool,
    pub consecutive_failures: u32,
    pub last_probe_ms: Option<i64>,
    pub last_ok_ms: Option<i64>,
    pub last_error: Option<String>,
    pub smtp_ms: Option<f64>,
    pub imap_ms: Option<f64>,
    pub replication_ms: Option<f64>,
    /// Replication lag of the site in entries, as the primary reports it.
    pub lag_entries: Option<u64>,
}

/// Everything one observer reports to the primary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Observations {
    pub observer: String,
    pub observer_role: String,
    pub at_ms: i64,
    /// Free space where the observer keeps its data, in bytes.
    pub free_disk_bytes: Option<u64>,
    /// Probe rounds done so far (0: no verdict yet).
    pub rounds: u64,
    pub targets: Vec<TargetHealth>,
}

/// What the observers that answered say about one data site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Votes {
    /// Observers whose probes call the site down.
    pub down: usize,
    /// Observers whose probes call it up.
    pub up: usize,
    /// Every configured observer (every cluster member), answering or not.
    pub observers: usize,
}

impl Votes {
    /// More than half of all observers call the site down: one broken link does
    /// not move DNS, and observers that cannot be asked do not count either way.
    pub fn majority_down(&self) -> bool {
        self.down * 2 > self.observers
    }

    pub fn majority_up(&self) -> bool {
        self.up * 2 > self.observers
    }
}
