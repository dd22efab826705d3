//! When a voter campaigns to become primary.
//!
//! openraft 0.9's own election timer waits a whole leader lease (its
//! `election_timeout_max`) *plus* a random election timeout after the last
//! heartbeat before a follower campaigns, and a voter refuses votes for a lease
//! after its last heartbeat. A witness whose timeouts were simply made longer (so
//! that data sites campaign first) also refused votes for that longer lease: a
//! killed primary was replaced only after about 3.5 election timeouts, the
//! survivor's first attempts refused by the witness.
//!
//! So openraft's timer is off on every site (`enable_elect = false`), every voter
//! has the same lease (the configured `election_timeout_max_ms`), and this module
//! starts elections itself: a data site once it has heard nothing from a primary
//! for the lease plus a random part of the spread between the configured minimum
//! and maximum ([`first_attempt_after`]), a witness after
//! [`WITNESS_ELECTION_PATIENCE`] times that. An attempt that did not make it
//! primary is repeated after a heartbeat interval (plus jitter), doubling up to
//! the first wait, while no primary is heard from: a voter whose lease was a few
//! milliseconds from running out is asked again at once, not a whole election
//! timeout later.
//!
//! Two signals change the waits. A site whose vote a voter refused because the
//! voter's log is longer cannot win: it waits [`SHORTER_LOG_WAITS`] first waits
//! before it campaigns again, instead of raising the term over the site that can.
//! A site that refused a candidate for a shorter log (a witness holding entries a
//! lagging data site lacks) campaigns at its next look, whatever its patience.
//!
//! Before it raises the term, a voter asks the others whether they would vote for
//! it at all (a *pre-vote*, as etcd's Raft does): a voter says no while it leads or
//! has heard from a primary within the shortest election timeout. A site that
//! merely lost a few heartbeats on a lossy link (the primary is alive, the witness
//! hears it) so never unseats the primary: without this, such a site campaigned, the
//! primary (whose own lease openraft does not renew) granted the vote, and the lead
//! moved back and forth across the lossy link while mail waited.
//!
//! This module must never campaign on a site that is not a voter, nor while a
//! primary is heard from within the lease, nor while a hand-over has silenced
//! this site on purpose, nor without a majority of pre-votes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use maildr_config::SiteRole;
use openraft::{RaftMetrics, ServerState};
use tokio::sync::watch;

use super::Replicated;
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::raft::{NodeId, SiteNode};

/// How many times longer than a data site a witness waits before it campaigns.
pub(super) const WITNESS_ELECTION_PATIENCE: u32 = 3;

/// The silence after which a voter first campaigns: the lease (`max_ms`) plus a
/// random part of half the spread, times `patience`.
pub(super) fn first_attempt_after(min_ms: u64, max_ms: u64, patience: u32, random: f64) -> Duration {
    assert!(max_ms > min_ms && (0.0..=1.0).contains(&random), "a spread and a fraction");
    let spread = (max_ms - min_ms) / 2;
    // random is in 0..=1, so the product is at most `spread`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let jitter = (spread as f64 * random) as u64;
    Duration::from_millis((max_ms + jitter) * u64::from(patience))
}

/// The wait between two attempts while no primary emerges: a heartbeat interval
/// plus up to as much again at random (two candidates do not keep colliding).
pub(super) fn retry_after(heartbeat_ms: u64, random: f64) -> Duration {
    assert!((0.0..=1.0).contains(&random), "a fraction");
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let jitter = (heartbeat_ms as f64 * random) as u64;
    Duration::from_millis(heartbeat_ms + jitter)
}

/// How many first waits a candidate with a shorter log than a voter's waits.
const SHORTER_LOG_WAITS: u32 = 2;

/// How long refusing a shorter candidate makes this site campaign at once.
const SHORTER_CANDIDATE_URGENCY: Duration = Duration::from_secs(2);

/// How often the campaign loop looks at the silence.
const CAMPAIGN_TICK_MIN: Duration = Duration::from_millis(5);

impl Replicated {
    /// Note that this site heard from a primary (an accepted append) or granted a
    /// vote: either restarts the silence a campaign waits for.
    pub(super) fn heard_from_leadership(&self) {
        *self.heard_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    /// Note that this site refused a candidate with a shorter log than its own.
    pub(super) fn saw_shorter_candidate(&self) {
        *self.shorter_candidate_seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    fn urgent(&self) -> bool {
        let seen = *self.shorter_candidate_seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.is_some_and(|at| at.elapsed() < SHORTER_CANDIDATE_URGENCY)
    }

    fn silence(&self) -> Duration {
        self.heard_at.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// Note that a primary's append reached this site (accepted, or refused only
    /// for a conflicting log): a primary leads.
    pub(super) fn heard_from_primary(&self) {
        *self.primary_heard_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.heard_from_leadership();
    }

    /// This site's answer to `candidate`'s pre-vote (see the module docs).
    pub(super) fn answer_pre_vote(&self, candidate: NodeId) -> Result<(), String> {
        // Whether the candidate may lead is the real vote's question (log and
        // term): a site restored alone seeds a new cluster whose other members
        // start empty, knowing no membership yet, and must be able to win.
        let m = self.raft.metrics().borrow().clone();
        tracing::debug!(candidate, "asked for a pre-vote");
        if m.state == ServerState::Leader {
            return Err(format!("{} is the primary", self.site));
        }
        match self.primary_heard_ago(&m) {
            Some(ago) if ago < Duration::from_millis(self.election_timeout_min_ms) => {
                Err(format!("{} heard from the primary {} ms ago", self.site, ago.as_millis()))
            }
            _ => Ok(()),
        }
    }

    /// How long ago this site last heard from the primary it knows: an append, or
    /// any request or answer of the primary's process (a body push, a forwarded
    /// write's answer). Appends alone can be held up behind a slow one while the
    /// primary is plainly alive.
    fn primary_heard_ago(&self, m: &RaftMetrics<NodeId, SiteNode>) -> Option<Duration> {
        let appended = *self.primary_heard_at.lock().unwrap_or_else(|p| p.into_inner());
        let other_traffic = m.current_leader.and_then(|l| self.directory.get(l)).and_then(|p| p.last_heard());
        [appended, other_traffic].into_iter().flatten().max().map(|at| at.elapsed())
    }
}

/// Ask every other voter of `m`'s membership for its pre-vote, each within
/// `timeout`; `Ok` as soon as a majority (this site included) grants, else the
/// refusals and silences that stopped it.
async fn pre_vote(site: &Replicated, m: &RaftMetrics<NodeId, SiteNode>, timeout: Duration) -> Result<(), Vec<String>> {
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().collect();
    let majority = voters.len() / 2 + 1;
    let mut granted = usize::from(voters.contains(&site.me));
    let mut asks = tokio::task::JoinSet::new();
    let mut refusals = Vec::new();
    for id in voters.into_iter().filter(|v| *v != site.me) {
        let peer =
            site.directory.get(id).or_else(|| membership.get_node(&id).and_then(|n| site.directory.by_site(&n.site)));
        let Some(peer) = peer else {
            refusals.push(format!("node {id}: no address"));
            continue;
        };
        let request = PeerRequest::Control(ControlRequest::PreVote { candidate: site.me });
        asks.spawn(async move {
            let answer = match peer.call(&request, timeout, true).await {
                Ok(PeerResponse::Control(Ok(ControlResponse::PreVote(answer)))) => answer,
                Ok(other) => Err(format!("{}: unexpected answer {other:?}", peer.site)),
                Err(e) => Err(e.to_string()),
            };
            answer
        });
    }
    while granted < majority {
        match asks.join_next().await {
            Some(Ok(Ok(()))) => granted += 1,
            Some(Ok(Err(why))) => refusals.push(why),
            Some(Err(e)) => refusals.push(e.to_string()),
            None => return Err(refusals),
        }
    }
    Ok(())
}

/// Campaign when the silence says so (see the module docs), until `stop`.
pub(super) async fn campaign_when_silent(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    let patience = if site.role == SiteRole::Witness { WITNESS_ELECTION_PATIENCE } else { 1 };
    let (min, max, heartbeat) =
        (site.election_timeout_min_ms, site.election_timeout_max_ms, site.heartbeat_interval_ms);
    let tick = Duration::from_millis(heartbeat / 4).max(CAMPAIGN_TICK_MIN);
    let mut wait = first_attempt_after(min, max, patience, rand::random::<f64>());
    let mut attempts_in_a_row = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() { return },
        }
        let m = site.raft.metrics().borrow().clone();
        let voter = m.membership_config.membership().voter_ids().any(|v| v == site.me);
        let leading = m.state == ServerState::Leader;
        if leading || !voter || site.handing_over.load(std::sync::atomic::Ordering::SeqCst) {
            site.heard_from_leadership();
            attempts_in_a_row = 0;
            continue;
        }
        // A lone voter (a standby promoted by a forced failover) has no one to
        // wait for; a site that refused a shorter candidate may be the only one
        // that can win.
        let alone = m.membership_config.membership().voter_ids().count() == 1;
        let first = first_attempt_after(min, max, patience, 1.0);
        let now_wait = if alone && attempts_in_a_row == 0 {
            Duration::ZERO
        } else if site.urgent() {
            wait.min(Duration::from_millis(heartbeat))
        } else if site.greater_log.ago().is_some_and(|ago| ago < first * SHORTER_LOG_WAITS) {
            first * SHORTER_LOG_WAITS
        } else {
            wait
        };
        if site.silence() < now_wait {
            continue;
        }
        // The primary's process was heard from lately, only its appends are late.
        if m.current_leader.is_some_and(|l| l != site.me)
            && site.primary_heard_ago(&m).is_some_and(|ago| ago < Duration::from_millis(min))
        {
            continue;
        }
        attempts_in_a_row += 1;
        if !alone {
            let silence = site.silence();
            let timeout = Duration::from_millis(min / 2).max(Duration::from_millis(heartbeat));
            if let Err(refusals) = pre_vote(&site, &m, timeout).await {
                tracing::info!(
                    silence_ms = u64::try_from(silence.as_millis()).unwrap_or(u64::MAX),
                    refusals = %refusals.join("; "),
                    "no primary heard from, but no majority would vote: not campaigning"
                );
                site.heard_from_leadership();
                let doubled = 1u64 << attempts_in_a_row.saturating_sub(1).min(16);
                wait = retry_after(heartbeat.saturating_mul(doubled), rand::random::<f64>()).min(first);
                continue;
            }
        }
        tracing::info!(
            silence_ms = u64::try_from(site.silence().as_millis()).unwrap_or(u64::MAX),
            attempt = attempts_in_a_row,
            term = m.current_term,
            "no primary heard from: campaigning"
        );
        if let Err(e) = site.raft.trigger().elect().await {
            tracing::warn!(error = %e, "starting an election");
        }
        site.heard_from_leadership();
        // Until a primary is heard from again, try again after a heartbeat or so,
        // doubling up to the first wait.
        let doubled = 1u64 << attempts_in_a_row.saturating_sub(1).min(16);
        wait = retry_after(heartbeat.saturating_mul(doubled), rand::random::<f64>()).min(first);
        let m = site.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader || m.current_leader.is_some_and(|l| l != site.me) {
            wait = first_attempt_after(min, max, patience, rand::random::<f64>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_data_site_campaigns_after_the_lease_and_within_a_quarter_more() {
        assert_eq!(first_attempt_after(400, 800, 1, 0.0), Duration::from_millis(800));
        assert_eq!(first_attempt_after(400, 800, 1, 1.0), Duration::from_millis(1_000));
        assert_eq!(first_attempt_after(1_500, 3_000, 1, 0.5), Duration::from_millis(3_375));
        // Never more than 1.5 × the longest election timeout (2× with min = 0+).
        for r in [0.0, 0.3, 0.99, 1.0] {
            assert!(first_attempt_after(1, 3_000, 1, r) <= Duration::from_millis(4_500));
        }
    }

    #[test]
    fn a_witness_waits_its_patience_times_longer() {
        assert_eq!(first_attempt_after(400, 800, WITNESS_ELECTION_PATIENCE, 0.0), Duration::from_millis(2_400));
        assert_eq!(retry_after(100, 0.0), Duration::from_millis(100));
        assert_eq!(retry_after(100, 1.0), Duration::from_millis(200));
    }
}
