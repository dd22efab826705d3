//! What one observer knows about the data sites it probes: the verdict per site
//! (up until `down_after_failures` rounds in a row failed) and a bounded history
//! of probe results.
//!
//! Plain data and bookkeeping: no sockets, no clock (times come in as arguments).

use std::collections::{BTreeMap, VecDeque};

pub use maildr_api_types::control::{Observations, Sample, TargetHealth};

/// The bookkeeping of one observer.
pub struct Observer {
    down_after_failures: u32,
    history_max: usize,
    targets: BTreeMap<String, (TargetHealth, VecDeque<Sample>)>,
    rounds: u64,
}

impl Observer {
    pub fn new(sites: impl IntoIterator<Item = String>, down_after_failures: u32, history_max: usize) -> Observer {
        assert!(down_after_failures > 0 && history_max > 0, "config check keeps these positive");
        let targets = sites
            .into_iter()
            .map(|site| {
                let health = TargetHealth {
                    site: site.clone(),
                    up: true,
                    consecutive_failures: 0,
                    last_probe_ms: None,
                    last_ok_ms: None,
                    last_error: None,
                    smtp_ms: None,
                    imap_ms: None,
                    replication_ms: None,
                    lag_entries: None,
                };
                (site, (health, VecDeque::new()))
            })
            .collect();
        Observer { down_after_failures, history_max, targets, rounds: 0 }
    }

    /// Record one round's sample for `site`.
    pub fn record(&mut self, site: &str, sample: Sample) {
        let Some((health, history)) = self.targets.get_mut(site) else {
            return;
        };
        health.last_probe_ms = Some(sample.at_ms);
        health.smtp_ms = sample.smtp_ms;
        health.imap_ms = sample.imap_ms;
        health.replication_ms = sample.replication_ms;
        if sample.ok {
            health.consecutive_failures = 0;
            health.last_ok_ms = Some(sample.at_ms);
            health.last_error = None;
            health.up = true;
        } else {
            health.consecutive_failures = health.consecutive_failures.saturating_add(1);
            health.last_error = sample.error.clone();
            if health.consecutive_failures >= self.down_after_failures {
                health.up = false;
            }
        }
        if history.len() == self.history_max {
            history.pop_front();
        }
        history.push_back(sample);
    }

    pub fn set_lag(&mut self, site: &str, lag_entries: Option<u64>) {
        if let Some((health, _)) = self.targets.get_mut(site) {
            health.lag_entries = lag_entries;
        }
    }

    pub fn finish_round(&mut self) {
        self.rounds += 1;
    }

    pub fn report(&self, observer: &str, role: &str, at_ms: i64, free_disk_bytes: Option<u64>) -> Observations {
        Observations {
            observer: observer.to_string(),
            observer_role: role.to_string(),
            at_ms,
            free_disk_bytes,
            rounds: self.rounds,
            targets: self.targets.values().map(|(h, _)| h.clone()).collect(),
        }
    }

    /// Whether the last round against `site` succeeded (`None` before any round).
    pub fn last_ok(&self, site: &str) -> Option<bool> {
        self.targets.get(site)?.1.back().map(|s| s.ok)
    }

    /// The last `limit` samples of `site`, oldest first (`None` for a site not observed).
    pub fn history(&self, site: &str, limit: usize) -> Option<Vec<Sample>> {
        let (_, history) = self.targets.get(site)?;
        Some(history.iter().skip(history.len().saturating_sub(limit)).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64, ok: bool) -> Sample {
        Sample { at_ms, ok, smtp_ms: None, imap_ms: None, replication_ms: None, error: (!ok).then(|| "x".into()) }
    }

    #[test]
    fn a_site_is_down_only_after_enough_failed_rounds_in_a_row_and_up_after_one_good_one() {
        let mut o = Observer::new(["bj".to_string()], 3, 4);
        let up = |o: &Observer| o.report("hz", "witness", 0, None).targets[0].up;
        o.record("bj", sample(1, false));
        o.record("bj", sample(2, false));
        assert!(up(&o));
        o.record("bj", sample(3, true));
        o.record("bj", sample(4, false));
        o.record("bj", sample(5, false));
        assert!(up(&o), "the good round reset the count");
        o.record("bj", sample(6, false));
        assert!(!up(&o));
        o.record("bj", sample(7, true));
        assert!(up(&o));
        let at = |samples: Vec<Sample>| samples.iter().map(|s| s.at_ms).collect::<Vec<_>>();
        assert_eq!(at(o.history("bj", usize::MAX).unwrap()), [4, 5, 6, 7], "history is bounded");
        assert_eq!(at(o.history("bj", 2).unwrap()), [6, 7], "the most recent, oldest first");
        assert!(o.history("bj", 0).unwrap().is_empty());
        o.record("nowhere", sample(8, false));
        assert!(o.history("nowhere", 10).is_none());
    }
}
