//! The readiness gate: before every fault, may the deployment take it now?
//!
//! A drill on a real deployment must never cause the outage it rehearses. The
//! steady-state check asks whether every site is healthy; this gate asks whether the
//! deployment survives *this* fault *now*: the voters still up must all have heard
//! from each other recently, the ones that remain after the fault must still form a
//! majority among themselves (and hold a data site, which serves mail), replication
//! must be caught up, and the newest backup young enough when the plan asks. Not
//! ready: the fault is not injected, and the drill ends as `aborted` naming why
//! (e.g. "sh has not heard from hz for 12 s: after killing bj no majority remains").
//!
//! Pure functions over what the admin API reports (`MemberView`s with each member's
//! own `SiteStatus`), so every rule is unit tested without a deployment.

use std::collections::BTreeSet;

use maildr_api_types::cluster::MemberView;
use serde::{Deserialize, Serialize};

/// What the gate demands; the plan's `[readiness]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadinessPolicy {
    /// Every voter still up must have heard from every other within this long.
    #[serde(default = "default_heard_within_ms")]
    pub heard_within_ms: u64,
    /// Every data site's replication lag, as the primary sees it, at most this long.
    #[serde(default = "default_lag_seconds_max")]
    pub lag_seconds_max: u64,
    /// When set: the newest backup must be at most this old (seconds).
    #[serde(default)]
    pub backup_age_max_s: Option<u64>,
}

fn default_heard_within_ms() -> u64 {
    5_000
}
fn default_lag_seconds_max() -> u64 {
    10
}

impl Default for ReadinessPolicy {
    fn default() -> Self {
        ReadinessPolicy {
            heard_within_ms: default_heard_within_ms(),
            lag_seconds_max: default_lag_seconds_max(),
            backup_age_max_s: None,
        }
    }
}

/// The fault about to be injected, as the gate needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intended {
    /// What it does, for messages ("killing bj").
    pub doing: String,
    /// The site it takes out of the cluster (killed, paused, cut off), if any.
    pub takes_out: Option<String>,
}

/// Why the deployment cannot take the fault now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

/// Check the cluster (`members`, as one data site's admin API reported them, each
/// with its own status) against `policy` for the fault `intended`, with the sites
/// in `already_out` taken out by earlier faults of the drill.
pub fn check(
    members: &[MemberView],
    already_out: &[String],
    intended: &Intended,
    policy: &ReadinessPolicy,
) -> Result<(), NotReady> {
    let voters: Vec<&MemberView> = members.iter().filter(|m| is_voter(m)).collect();
    if voters.is_empty() {
        return Err(NotReady("the cluster reports no voting member".into()));
    }
    let up: Vec<&MemberView> = voters.iter().copied().filter(|m| !already_out.contains(&m.site)).collect();
    for m in &up {
        if !m.reachable || m.status.is_none() {
            let why = m.error.as_deref().unwrap_or("no status");
            return Err(NotReady(format!("{} does not answer ({why})", m.site)));
        }
    }
    let remaining: Vec<&MemberView> =
        up.iter().copied().filter(|m| intended.takes_out.as_deref() != Some(m.site.as_str())).collect();
    let majority = voters.len() / 2 + 1;
    if remaining.len() < majority {
        return Err(NotReady(format!(
            "after {} only {} of {} voters remain ({}): no majority",
            intended.doing,
            remaining.len(),
            voters.len(),
            names(&remaining)
        )));
    }
    // Every pair of voters still up must hear each other.
    let mut stale: Vec<(String, String, Option<u64>)> = Vec::new();
    for a in &up {
        for b in up.iter().filter(|b| b.site != a.site) {
            let heard = heard_ms_ago(a, &b.site);
            if heard.is_none_or(|ms| ms > policy.heard_within_ms) {
                stale.push((a.site.clone(), b.site.clone(), heard));
            }
        }
    }
    if let Some((a, b, heard)) = stale.first() {
        let since = match heard {
            Some(ms) => format!("has not heard from {b} for {} s", ms.div_ceil(1000)),
            None => format!("has never heard from {b}"),
        };
        let consequence = if connected_majority(&remaining, &stale, majority) {
            String::new()
        } else {
            format!(": after {} no majority remains", intended.doing)
        };
        return Err(NotReady(format!("{a} {since}{consequence}")));
    }
    if !remaining.iter().any(|m| m.role == "data") {
        return Err(NotReady(format!("after {} no data site remains to serve mail", intended.doing)));
    }
    let replicas = members.iter().filter(|m| matches!(m.role.as_str(), "data" | "standby"));
    for m in replicas.filter(|m| !already_out.contains(&m.site)) {
        if let Some(lag) = m.lag_seconds.filter(|l| *l > policy.lag_seconds_max as f64) {
            return Err(NotReady(format!(
                "{} lags {lag:.1} s behind the primary (readiness.lag_seconds_max = {})",
                m.site, policy.lag_seconds_max
            )));
        }
    }
    Ok(())
}

/// The backup-age part of the gate: `newest_age_s` is the age of the newest backup
/// the primary lists (`None`: there is none).
/// The gate for a deployment without a control plane (another mail system): there
/// are no voters and no replication figures to judge, only what clients see.
/// Every data site still up must answer SMTP and IMAP (`members` as the drill
/// found them), and a data site must remain after the fault.
pub fn check_sites_answer(members: &[MemberView], already_out: &[String], intended: &Intended) -> Result<(), NotReady> {
    let up: Vec<&MemberView> = members.iter().filter(|m| m.role == "data" && !already_out.contains(&m.site)).collect();
    if let Some(m) = up.iter().find(|m| !m.reachable) {
        let why = m.error.as_deref().unwrap_or("no answer");
        return Err(NotReady(format!("{} does not answer clients ({why})", m.site)));
    }
    let remaining: Vec<&MemberView> =
        up.iter().copied().filter(|m| intended.takes_out.as_deref() != Some(m.site.as_str())).collect();
    if remaining.is_empty() {
        return Err(NotReady(format!("after {} no data site remains to serve mail", intended.doing)));
    }
    Ok(())
}

pub fn check_backup_age(newest_age_s: Option<u64>, policy: &ReadinessPolicy) -> Result<(), NotReady> {
    let Some(max) = policy.backup_age_max_s else { return Ok(()) };
    match newest_age_s {
        None => Err(NotReady(format!("no backup exists (readiness.backup_age_max_s = {max})"))),
        Some(age) if age > max => {
            Err(NotReady(format!("the newest backup is {age} s old (readiness.backup_age_max_s = {max})")))
        }
        Some(_) => Ok(()),
    }
}

fn is_voter(m: &MemberView) -> bool {
    m.role == "data" || m.role == "witness"
}

fn names(members: &[&MemberView]) -> String {
    if members.is_empty() {
        return "none".into();
    }
    members.iter().map(|m| m.site.as_str()).collect::<Vec<_>>().join(", ")
}

/// How long ago `member` last heard from `peer`, as `member` itself reports it.
fn heard_ms_ago(member: &MemberView, peer: &str) -> Option<u64> {
    member.status.as_ref()?.peers.iter().find(|p| p.site == peer)?.last_heard_ms_ago
}

/// Whether some `majority` of `remaining` hear each other pairwise (no pair of them
/// in `stale`).
fn connected_majority(remaining: &[&MemberView], stale: &[(String, String, Option<u64>)], majority: usize) -> bool {
    let n = remaining.len();
    if n > 16 {
        // Far beyond any deployment (voters are a handful); do not search.
        return false;
    }
    let cut = |a: &str, b: &str| stale.iter().any(|(x, y, _)| (x == a && y == b) || (x == b && y == a));
    (0u32..1 << n).any(|set| {
        let chosen: BTreeSet<usize> = (0..n).filter(|i| set & (1 << i) != 0).collect();
        chosen.len() >= majority
            && chosen.iter().all(|i| chosen.iter().all(|j| i == j || !cut(&remaining[*i].site, &remaining[*j].site)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use maildr_api_types::status::{PeerStatus, SiteStatus};

    fn member(site: &str, role: &str, heard: &[(&str, Option<u64>)]) -> MemberView {
        let status: SiteStatus = serde_json::from_value(serde_json::json!({
            "site": site, "node_id": 1, "role": role, "state": "Follower", "term": 2, "leader": 1,
            "last_log_index": 10, "applied_index": 10, "snapshot_index": null, "initialized": true,
            "voters": [1, 2, 3], "learners": [], "peers": [], "missing_bodies": 0,
            "metrics": serde_json::to_value(maildr_api_types::status::WriteMetrics::default()).expect("metrics"), "primary_contact": null, "forced_failover": null, "apply_delay": null,
        }))
        .map(|mut s: SiteStatus| {
            s.peers = heard
                .iter()
                .map(|(p, ms)| PeerStatus {
                    node_id: 0,
                    site: (*p).into(),
                    role: String::new(),
                    last_heard_ms_ago: *ms,
                    matched_index: None,
                    lag_entries: None,
                    lag_seconds: None,
                    lag_bytes: None,
                    lag_bytes_estimated: false,
                })
                .collect();
            s
        })
        .expect("a site status");
        MemberView {
            site: site.into(),
            node_id: 1,
            role: role.into(),
            reachable: true,
            error: None,
            state: None,
            term: None,
            leader: None,
            last_log_index: None,
            applied_index: None,
            lag_entries: Some(0),
            lag_seconds: Some(0.0),
            lag_bytes: None,
            lag_bytes_estimated: false,
            last_heard_ms_ago: None,
            missing_bodies: None,
            status: Some(status),
        }
    }

    fn healthy() -> Vec<MemberView> {
        vec![
            member("bj", "data", &[("sh", Some(50)), ("hz", Some(60))]),
            member("sh", "data", &[("bj", Some(70)), ("hz", Some(80))]),
            member("hz", "witness", &[("bj", Some(40)), ("sh", Some(90))]),
        ]
    }

    fn killing(site: &str) -> Intended {
        Intended { doing: format!("killing {site}"), takes_out: Some(site.into()) }
    }

    #[test]
    fn a_healthy_cluster_may_lose_its_primary() {
        assert_eq!(check(&healthy(), &[], &killing("bj"), &ReadinessPolicy::default()), Ok(()));
    }

    #[test]
    fn a_survivor_cut_off_from_the_witness_is_named_with_the_consequence() {
        let mut m = healthy();
        m[1] = member("sh", "data", &[("bj", Some(70)), ("hz", Some(12_000))]);
        let err = check(&m, &[], &killing("bj"), &ReadinessPolicy::default()).unwrap_err();
        assert_eq!(err.0, "sh has not heard from hz for 12 s: after killing bj no majority remains");
    }

    #[test]
    fn a_stale_link_is_named_with_the_consequence_only_when_no_majority_is_left() {
        let mut m = healthy();
        m[0] = member("bj", "data", &[("sh", Some(70)), ("hz", Some(9_000))]);
        let err = check(&m, &[], &killing("sh"), &ReadinessPolicy::default()).unwrap_err();
        assert_eq!(err.0, "bj has not heard from hz for 9 s: after killing sh no majority remains");
        let m2 = {
            let mut m = healthy();
            m[0] = member("bj", "data", &[("sh", Some(70)), ("hz", None)]);
            m
        };
        let err = check(
            &m2,
            &[],
            &Intended { doing: "stopping DNS on bj".into(), takes_out: None },
            &ReadinessPolicy::default(),
        )
        .unwrap_err();
        assert_eq!(err.0, "bj has never heard from hz");
    }

    #[test]
    fn a_second_site_out_leaves_no_majority() {
        let err = check(&healthy(), &["bj".to_string()], &killing("hz"), &ReadinessPolicy::default()).unwrap_err();
        assert_eq!(err.0, "after killing hz only 1 of 3 voters remain (sh): no majority");
    }

    #[test]
    fn sites_already_out_do_not_count_as_stale() {
        let m = vec![
            member("bj", "data", &[("sh", Some(20_000)), ("hz", Some(20_000))]),
            member("sh", "data", &[("bj", Some(20_000)), ("hz", Some(80))]),
            member("hz", "witness", &[("bj", Some(20_000)), ("sh", Some(90))]),
        ];
        let stop_dns = Intended { doing: "stopping DNS on sh".into(), takes_out: None };
        assert_eq!(check(&m, &["bj".to_string()], &stop_dns, &ReadinessPolicy::default()), Ok(()));
    }

    #[test]
    fn only_the_witness_left_serves_no_mail() {
        let m = vec![member("bj", "data", &[("hz", Some(50))]), member("hz", "witness", &[("bj", Some(50))])];
        // Two voters: losing one leaves no majority anyway.
        assert!(check(&m, &[], &killing("bj"), &ReadinessPolicy::default()).is_err());
        let five: Vec<MemberView> = ["a", "b", "c"]
            .iter()
            .map(|s| member(s, "witness", &[("a", Some(1)), ("b", Some(1)), ("c", Some(1)), ("d", Some(1))]))
            .chain([member("d", "data", &[("a", Some(1)), ("b", Some(1)), ("c", Some(1))])])
            .collect();
        let err = check(&five, &[], &killing("d"), &ReadinessPolicy::default()).unwrap_err();
        assert_eq!(err.0, "after killing d no data site remains to serve mail");
    }

    #[test]
    fn lag_and_unanswered_members_are_refused() {
        let mut m = healthy();
        m[1].lag_seconds = Some(42.5);
        let err = check(&m, &[], &killing("bj"), &ReadinessPolicy::default()).unwrap_err();
        assert_eq!(err.0, "sh lags 42.5 s behind the primary (readiness.lag_seconds_max = 10)");
        let mut m = healthy();
        m[2].reachable = false;
        m[2].error = Some("connection refused".into());
        let err = check(&m, &[], &killing("bj"), &ReadinessPolicy::default()).unwrap_err();
        assert_eq!(err.0, "hz does not answer (connection refused)");
    }

    #[test]
    fn backup_age_is_checked_only_when_asked() {
        let policy = ReadinessPolicy { backup_age_max_s: Some(3600), ..ReadinessPolicy::default() };
        assert_eq!(check_backup_age(None, &ReadinessPolicy::default()), Ok(()));
        assert_eq!(check_backup_age(Some(60), &policy), Ok(()));
        assert!(check_backup_age(Some(7200), &policy).unwrap_err().0.contains("7200 s old"));
        assert!(check_backup_age(None, &policy).unwrap_err().0.contains("no backup exists"));
    }

    #[test]
    fn without_a_control_plane_every_data_site_must_answer_and_one_must_remain() {
        let site = |name: &str, error: Option<&str>| MemberView {
            site: name.into(),
            node_id: 0,
            role: "data".into(),
            reachable: error.is_none(),
            error: error.map(String::from),
            state: None,
            term: None,
            leader: None,
            last_log_index: None,
            applied_index: None,
            lag_entries: None,
            lag_seconds: None,
            lag_bytes: None,
            lag_bytes_estimated: false,
            last_heard_ms_ago: None,
            missing_bodies: None,
            status: None,
        };
        let kill_pa = Intended { doing: "killing pa".into(), takes_out: Some("pa".into()) };
        assert_eq!(check_sites_answer(&[site("pa", None), site("pb", None)], &[], &kill_pa), Ok(()));
        let silent = check_sites_answer(&[site("pa", None), site("pb", Some("SMTP refused"))], &[], &kill_pa);
        assert_eq!(silent.unwrap_err().0, "pb does not answer clients (SMTP refused)");
        let alone = check_sites_answer(&[site("pa", None), site("pb", None)], &["pb".into()], &kill_pa);
        assert_eq!(alone.unwrap_err().0, "after killing pa no data site remains to serve mail");
    }
}
