//! The failover decision, as a pure function: given what the observers say and
//! what is committed, where should DNS send clients now?
//!
//! It exists apart from the control loop so that the rules (majority, hold-down,
//! primary first) are tested without clocks or sockets. It never decides who is
//! primary: Raft does; this only follows.

use std::collections::{BTreeMap, BTreeSet};

use maildr_config::MxPolicy;
use maildr_store::Steering;

pub use maildr_api_types::control::Votes;

/// The steering the primary wants committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub primary: String,
    pub mx: Vec<String>,
    pub down: Vec<String>,
    /// Sites a majority has newly judged down.
    pub newly_down: Vec<String>,
    /// Sites listed again after the hold-down.
    pub recovered: Vec<String>,
    /// The primary changed (this site was elected since the last commit).
    pub new_primary: bool,
}

/// Inputs of one decision.
pub struct DecisionInput<'a> {
    /// The primary's site name (the site deciding).
    pub primary: &'a str,
    /// Every data site, in configuration order.
    pub data_sites: &'a [String],
    pub committed: Option<&'a Steering>,
    /// Votes per data site; a site without an entry keeps its committed state.
    pub votes: &'a BTreeMap<String, Votes>,
    /// Sites that were down and have since been up (by majority) and caught up
    /// for at least the hold-down.
    pub held_up: &'a BTreeSet<String>,
    pub policy: MxPolicy,
}

/// The steering to commit, or `None` when what is committed is already right.
pub fn decide(input: &DecisionInput<'_>) -> Option<Decision> {
    let me = input.primary;
    let was_down: BTreeSet<&str> =
        input.committed.map(|c| c.down.iter().map(String::as_str).collect()).unwrap_or_default();
    let mut down = BTreeSet::new();
    let mut newly_down = Vec::new();
    let mut recovered = Vec::new();
    for site in input.data_sites.iter().filter(|s| s.as_str() != me) {
        let votes = input.votes.get(site).copied();
        let judged_down = votes.is_some_and(|v| v.majority_down());
        if was_down.contains(site.as_str()) {
            if !judged_down && input.held_up.contains(site) {
                recovered.push(site.clone());
            } else {
                down.insert(site.clone());
            }
        } else if judged_down {
            down.insert(site.clone());
            newly_down.push(site.clone());
        }
    }
    let mut mx = vec![me.to_string()];
    if input.policy == MxPolicy::AllHealthy {
        mx.extend(input.data_sites.iter().filter(|s| s.as_str() != me && !down.contains(*s)).cloned());
    }
    let down: Vec<String> = down.into_iter().collect();
    let new_primary = input.committed.and_then(|c| c.primary.as_deref()) != Some(me);
    let unchanged = input.committed.is_some_and(|c| c.primary.as_deref() == Some(me) && c.mx == mx && c.down == down);
    if unchanged {
        return None;
    }
    Some(Decision { primary: me.to_string(), mx, down, newly_down, recovered, new_primary })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sites() -> Vec<String> {
        vec!["bj".into(), "sh".into()]
    }

    fn committed(primary: &str, mx: &[&str], down: &[&str]) -> Steering {
        Steering {
            serial: 7,
            primary: Some(primary.into()),
            mx: mx.iter().map(|s| s.to_string()).collect(),
            down: down.iter().map(|s| s.to_string()).collect(),
            reason: String::new(),
            changed_at_ms: 0,
        }
    }

    fn votes(down: usize, up: usize) -> Votes {
        Votes { down, up, observers: 3 }
    }

    fn run(
        primary: &str,
        c: Option<&Steering>,
        v: &[(&str, Votes)],
        held_up: &[&str],
        policy: MxPolicy,
    ) -> Option<Decision> {
        let data_sites = sites();
        let votes: BTreeMap<String, Votes> = v.iter().map(|(s, v)| (s.to_string(), *v)).collect();
        let held_up: BTreeSet<String> = held_up.iter().map(|s| s.to_string()).collect();
        decide(&DecisionInput {
            primary,
            data_sites: &data_sites,
            committed: c,
            votes: &votes,
            held_up: &held_up,
            policy,
        })
    }

    #[test]
    fn the_first_decision_lists_the_primary_first_and_every_healthy_site() {
        let d = run("bj", None, &[], &[], MxPolicy::AllHealthy).unwrap();
        assert_eq!((d.mx, d.down, d.new_primary), (vec!["bj".into(), "sh".into()], vec![], true));
        let d = run("bj", None, &[], &[], MxPolicy::PrimaryOnly).unwrap();
        assert_eq!(d.mx, vec!["bj".to_string()]);
    }

    #[test]
    fn nothing_is_committed_when_the_committed_steering_is_right() {
        let c = committed("bj", &["bj", "sh"], &[]);
        assert_eq!(run("bj", Some(&c), &[("sh", votes(0, 3))], &[], MxPolicy::AllHealthy), None);
    }

    #[test]
    fn a_new_primary_points_mail_at_itself_and_keeps_the_old_one_until_a_majority_calls_it_down() {
        let c = committed("bj", &["bj", "sh"], &[]);
        let d = run("sh", Some(&c), &[("bj", votes(1, 0))], &[], MxPolicy::AllHealthy).unwrap();
        assert_eq!((d.primary.as_str(), d.mx.clone(), d.new_primary), ("sh", vec!["sh".into(), "bj".into()], true));
        let c = committed("sh", &["sh", "bj"], &[]);
        let d = run("sh", Some(&c), &[("bj", votes(2, 0))], &[], MxPolicy::AllHealthy).unwrap();
        assert_eq!((d.mx, d.down.clone(), d.newly_down), (vec!["sh".into()], vec!["bj".into()], vec!["bj".into()]));
        assert!(!d.new_primary);
    }

    #[test]
    fn one_observer_does_not_move_dns_and_a_majority_does() {
        let c = committed("bj", &["bj", "sh"], &[]);
        assert_eq!(run("bj", Some(&c), &[("sh", votes(1, 2))], &[], MxPolicy::AllHealthy), None);
        let d = run("bj", Some(&c), &[("sh", votes(2, 1))], &[], MxPolicy::AllHealthy).unwrap();
        assert_eq!(d.mx, vec!["bj".to_string()]);
    }

    #[test]
    fn a_site_that_was_down_returns_only_after_the_hold_down() {
        let c = committed("bj", &["bj"], &["sh"]);
        assert_eq!(run("bj", Some(&c), &[("sh", votes(0, 3))], &[], MxPolicy::AllHealthy), None, "still held down");
        let d = run("bj", Some(&c), &[("sh", votes(0, 3))], &["sh"], MxPolicy::AllHealthy).unwrap();
        assert_eq!((d.mx, d.down, d.recovered), (vec!["bj".into(), "sh".into()], vec![], vec!["sh".into()]));
        // Silence (no votes) keeps a down site down.
        assert_eq!(run("bj", Some(&c), &[], &[], MxPolicy::AllHealthy), None);
    }

    #[test]
    fn the_primary_never_lists_itself_as_down() {
        let c = committed("bj", &["bj", "sh"], &[]);
        assert_eq!(run("bj", Some(&c), &[("bj", votes(3, 0))], &[], MxPolicy::AllHealthy), None);
    }
}
