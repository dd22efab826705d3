//! Every site's DNS follows the replicated truth: this feed rebuilds the zones
//! from the committed steering and the hosted domains whenever either changes,
//! and hands them to the DNS server, and to the external providers
//! (`[[dns.providers]]`) when this site is the primary the steering names.
//!
//! It reads the store as applied on this site and nothing else, so every site
//! that has applied the same entries serves the same zones. It never decides
//! anything: with no committed steering yet it serves no zone at all.
//!
//! Only the primary publishes externally: an external server keeps whatever it was
//! sent last, and a site that restarts behind (or cut off) would otherwise send it
//! the steering it had before the failover. The primary has applied the newest
//! steering it committed; a site that lost the lead publishes nothing more.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use maildr_cluster::Cluster;
use maildr_dns::{DnsProvider, ServedState, SiteAddress, Zone, ZoneInput, ZoneSet};
use maildr_store::{ControlEventKind, Steering};
use maildr_types::Domain;
use tokio::sync::watch;

use crate::ControlPlane;

/// How often the feed looks for a new steering serial or domain list.
const ZONE_POLL_MS: u64 = 100;
/// Pause before publishing again to an external provider that failed.
const EXTERNAL_RETRY_MS: u64 = 1_000;

/// A hosted domain and its DKIM record (selector, TXT text), if it has a key.
type DomainInput = (Domain, Option<(String, String)>);

/// What the zones are built from: the committed steering and the hosted domains
/// with their DKIM records, or `None` when no steering has been committed yet.
fn zone_inputs(cluster: &Cluster) -> Option<(Steering, Vec<DomainInput>)> {
    let store = cluster.store();
    let steering = store.steering().ok()??;
    let keys = store.dkim_keys().ok()?;
    let domains = store
        .domains()
        .ok()?
        .into_iter()
        .map(|d| {
            let dkim =
                keys.iter().find(|(k, _)| k == d.name.as_str()).map(|(_, key)| (key.selector.clone(), key.dns_text()));
            (d.name, dkim)
        })
        .collect();
    Some((steering, domains))
}

/// The zone of every domain under `steering`.
fn build_zones(steering: &Steering, domains: &[DomainInput], sites: &[SiteAddress], ttl_secs: u32) -> Vec<Zone> {
    domains
        .iter()
        .filter_map(|(domain, dkim)| {
            let input = ZoneInput {
                domain: domain.clone(),
                serial: steering.serial,
                ttl_secs,
                sites: sites.to_vec(),
                primary: steering.primary.clone(),
                mx: steering.mx.clone(),
                dkim: dkim.clone(),
            };
            Zone::build(&input).map_err(|e| tracing::error!(%domain, error = %e, "zone not built")).ok()
        })
        .collect()
}

/// Keep `zones` (the local server's zone set) and `external` providers in step
/// with the committed steering until `stop`.
pub async fn feed(
    cluster: Cluster,
    sites: Vec<SiteAddress>,
    ttl_secs: u32,
    withdraw_after_ms: u64,
    zones: watch::Sender<Arc<ZoneSet>>,
    external: Vec<Arc<dyn DnsProvider>>,
    mut stop: watch::Receiver<bool>,
) {
    // What the local server got, and what the external providers accepted.
    // Per domain: its name, the steering serial and its DKIM record.
    type Shown = Vec<(Domain, u32, Option<(String, String)>)>;
    let mut shown: Option<Shown> = None;
    let mut published: Option<Shown> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(ZONE_POLL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // A site cut off from the majority cannot know who is primary now: it
        // stops answering so resolvers ask the servers that do know.
        if let Some(silent_ms) = cut_off(&cluster, withdraw_after_ms) {
            if shown.take().is_some() {
                zones.send_replace(Arc::new(ZoneSet::new()));
                tracing::warn!(silent_ms, "no contact with a majority: DNS answers withdrawn until it returns");
            }
            continue;
        }
        // Cheap reads every tick; zones are built only when the serial or the
        // domain list changed.
        let Some((steering, domains)) = zone_inputs(&cluster) else {
            continue;
        };
        let key: Shown = domains.iter().map(|(d, dkim)| (d.clone(), steering.serial, dkim.clone())).collect();
        let publish = !external.is_empty() && published.as_ref() != Some(&key) && publishes(&cluster, &steering);
        if shown.as_ref() == Some(&key) && !publish {
            continue;
        }
        let built = build_zones(&steering, &domains, &sites, ttl_secs);
        if shown.as_ref() != Some(&key) {
            zones.send_replace(Arc::new(ZoneSet::from_zones(built.iter().cloned())));
            tracing::info!(zones = ?key, "DNS zones rebuilt from the committed steering");
            shown = Some(key.clone());
        }
        if !publish {
            continue;
        }
        if publish_external(&external, &built).await {
            tracing::info!(zones = ?key, providers = external.len(), "DNS zones published to the external providers");
            published = Some(key);
        } else {
            // Try again after a pause, without flooding an unreachable server.
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(EXTERNAL_RETRY_MS)) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

/// How long this site has been without contact with a majority, when that is
/// longer than `withdraw_after_ms` (0: never). A replicated site that has not
/// heard from a majority since it started counts as cut off too: restarted after
/// an outage, its zones name whoever was primary before it went down.
fn cut_off(cluster: &Cluster, withdraw_after_ms: u64) -> Option<u64> {
    if withdraw_after_ms == 0 {
        return None;
    }
    Some(cluster.replication()?.quorum_silence_ms()).filter(|ms| *ms > withdraw_after_ms)
}

/// Whether this site publishes `steering` to external providers: it is the Raft
/// primary and the steering names it primary.
fn publishes(cluster: &Cluster, steering: &Steering) -> bool {
    cluster
        .replication()
        .is_some_and(|r| r.is_primary() && steering.primary.is_some() && r.primary_site() == steering.primary)
}

/// Publish every zone to every provider that covers its domain; false when any failed.
async fn publish_external(external: &[Arc<dyn DnsProvider>], built: &[Zone]) -> bool {
    let mut all = true;
    for provider in external {
        for zone in built.iter().filter(|z| provider.covers(z.origin())) {
            if let Err(e) = provider.publish(zone).await {
                tracing::warn!(provider = %provider.describe(), error = %e, "zone not published; will retry");
                all = false;
            }
        }
    }
    all
}

/// Log a local `dns_served` event whenever the server begins answering from a new
/// serial of a zone.
pub async fn record_served(
    plane: Arc<ControlPlane>,
    mut served: watch::Receiver<ServedState>,
    mut stop: watch::Receiver<bool>,
) {
    let mut seen: std::collections::BTreeMap<Domain, u32> = std::collections::BTreeMap::new();
    loop {
        let state = served.borrow_and_update().clone();
        for (domain, zone) in state.zones {
            if seen.get(&domain) == Some(&zone.serial) {
                continue;
            }
            seen.insert(domain.clone(), zone.serial);
            let at_ms = zone
                .since
                .duration_since(UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            plane.record_local_event(ControlEventKind::DnsServed, format!("{domain} serial {}", zone.serial), at_ms);
        }
        tokio::select! {
            changed = served.changed() => if changed.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}
