//! Planned switchover, and a witness giving up a lead it had to take.
//!
//! openraft 0.9 has no leadership transfer, and a voter refuses votes while its
//! leader lease runs, which every acknowledged heartbeat renews. So the primary
//! checks the target is a caught-up data site, holds new writes until the target
//! matches the whole log, goes quiet (no heartbeats, no campaigns) and sends it
//! `BecomePrimary`; the target `trigger().elect()`s and wins once the lease runs
//! out, then the old primary resumes as a follower.
//!
//! This module must never hand the lead to anything but a data site, nor leave the
//! primary quiet (or its writes held) after the hand-over ends, whatever its outcome.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use maildr_config::SiteRole;
use openraft::ServerState;

use super::Replicated;
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::raft::NodeId;

/// Entries a site may lack and still be handed the lead (it gets them while it
/// campaigns; a vote is refused only to a log behind the voter's).
const CAUGHT_UP_SLACK_ENTRIES: u64 = 64;

/// How often a held write (or a transfer waiting for its target) looks again.
pub(super) const HANDOVER_WRITE_HOLD_POLL: Duration = Duration::from_millis(5);

/// How many leases (`election_timeout_max_ms`) the target of a hand-over keeps
/// campaigning before it gives up: it wins once the voters' leases, one lease after
/// the quiet primary's last heartbeat, have run out, so a few leases are ample.
const BECOME_PRIMARY_LEASES: u32 = 5;

/// The least time the target of a hand-over keeps campaigning, however short the
/// lease (a vote still costs a busy voter an fsync).
const BECOME_PRIMARY_MIN: Duration = Duration::from_secs(3);

/// How much longer than its target campaigns the primary waits for the answer to
/// `BecomePrimary` (the answer's own way back) before it speaks again.
const HANDOVER_ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// How long the target of a hand-over keeps campaigning, for a lease of `lease_ms`.
/// The primary stays quiet (and holds writes) at most this plus
/// [`HANDOVER_ANSWER_MARGIN`]: a target that died or froze after it was asked
/// costs that long, no more.
pub(super) fn become_primary_timeout(lease_ms: u64) -> Duration {
    (Duration::from_millis(lease_ms) * BECOME_PRIMARY_LEASES).max(BECOME_PRIMARY_MIN)
}

/// How long a leadership transfer holds writes for the target to match the log.
const HANDOVER_CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// The new primary after a hand-over.
#[derive(Debug, Clone, Copy)]
pub(super) struct NewPrimary {
    /// How long writes were unavailable, as the new primary measured it.
    pub unavailable_ms: u64,
    /// The term it leads in.
    pub term: u64,
}

impl Replicated {
    /// On the primary: give the lead to data site `to`, refused unless it has every
    /// entry but a few. openraft 0.9 has no leadership transfer, and a voter refuses
    /// votes while its leader lease runs (renewed by every acknowledged heartbeat), so
    /// the primary goes quiet (no heartbeats, no campaigns) and asks `to` to campaign;
    /// once the lease runs out, `to` wins. Used by planned switchovers and by a witness
    /// that had to lead.
    pub(super) async fn hand_over(&self, to: NodeId) -> Result<NewPrimary, String> {
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader != Some(self.me) {
            return Err(format!("{} is not the primary (it knows {:?})", self.site, m.current_leader));
        }
        if to == self.me {
            return Ok(NewPrimary { unavailable_ms: 0, term: m.current_term });
        }
        if self.role_of(to) != Some(SiteRole::Data) {
            return Err(format!("node {to} is not a data site; only data sites become primary"));
        }
        let peer = self.peer(to).ok_or_else(|| format!("node {to} is not in {}'s configuration", self.site))?;
        let matched = m.replication.as_ref().and_then(|r| r.get(&to).copied().flatten()).map(|l| l.index).unwrap_or(0);
        let last = m.last_log_index.unwrap_or(0);
        if matched + CAUGHT_UP_SLACK_ENTRIES < last {
            return Err(format!(
                "{} is not caught up: it has {matched} of {last} entries; try again when it is",
                peer.site
            ));
        }
        // A target that answers nothing (down, frozen, cut off) would keep this
        // primary quiet and its writes held until the answer's deadline.
        let lease = Duration::from_millis(self.election_timeout_max_ms);
        match self.last_heard_from(to).map(|at| at.elapsed()) {
            Some(ago) if ago < lease => {}
            Some(ago) => {
                return Err(format!(
                    "{} has not answered for {} ms (longer than the {} ms lease): it may be down",
                    peer.site,
                    ago.as_millis(),
                    lease.as_millis()
                ))
            }
            None => return Err(format!("{} has not answered since this site started", peer.site)),
        }
        if self.handing_over.swap(true, Ordering::SeqCst) {
            return Err(format!("{} is already handing over its lead", self.site));
        }
        // Leadership transfer (Raft thesis 3.10): new writes are held from here on,
        // so the target can match the whole log; a target behind the log would lose
        // its election to the voters' up-to-date check, and entries still flowing
        // would keep the followers' leader lease fresh.
        let holding_since = Instant::now();
        let transfer_deadline = holding_since + HANDOVER_CATCH_UP_TIMEOUT;
        loop {
            let m = self.raft.metrics().borrow().clone();
            let last = m.last_log_index.unwrap_or(0);
            let matched =
                m.replication.as_ref().and_then(|r| r.get(&to).copied().flatten()).map(|l| l.index).unwrap_or(0);
            if matched >= last {
                break;
            }
            if Instant::now() >= transfer_deadline {
                self.handing_over.store(false, Ordering::SeqCst);
                return Err(format!(
                    "{} did not match the whole log ({matched} of {last} entries) within {} ms with writes held; try again",
                    peer.site,
                    HANDOVER_CATCH_UP_TIMEOUT.as_millis()
                ));
            }
            tokio::time::sleep(HANDOVER_WRITE_HOLD_POLL).await;
        }
        let caught_up_ms = holding_since.elapsed().as_millis();
        self.raft.runtime_config().heartbeat(false);
        let answer_within = become_primary_timeout(self.election_timeout_max_ms) + HANDOVER_ANSWER_MARGIN;
        let answer = peer.call(&PeerRequest::Control(ControlRequest::BecomePrimary), answer_within, true).await;
        self.raft.runtime_config().heartbeat(true);
        self.handing_over.store(false, Ordering::SeqCst);
        tracing::info!(
            to = %peer.site,
            caught_up_ms,
            writes_held_ms = holding_since.elapsed().as_millis(),
            ok = matches!(answer, Ok(PeerResponse::Control(Ok(_)))),
            "hand-over ended; held writes go on"
        );
        match answer {
            Ok(PeerResponse::Control(Ok(ControlResponse::BecamePrimary { unavailable_ms, term }))) => {
                Ok(NewPrimary { unavailable_ms, term })
            }
            Ok(PeerResponse::Control(Err(reason))) => Err(reason),
            Ok(other) => Err(format!("{} answered {other:?}", peer.site)),
            Err(e) => Err(e.to_string()),
        }
    }

    pub(super) async fn become_primary(&self) -> Result<NewPrimary, String> {
        if self.role != SiteRole::Data {
            return Err(format!("{} is a {} site; only data sites become primary", self.site, self.role.name()));
        }
        let m = self.raft.metrics().borrow().clone();
        if m.current_leader == Some(self.me) {
            return Ok(NewPrimary { unavailable_ms: 0, term: m.current_term });
        }
        let primary = m.current_leader.ok_or("no primary is known; switchover needs a healthy cluster")?;
        let peer = self.peer(primary).ok_or("the primary is not in this site's configuration")?;
        let primary_status =
            match peer.call(&PeerRequest::Control(ControlRequest::Status), Duration::from_secs(3), true).await {
                Ok(PeerResponse::Control(Ok(ControlResponse::Status(s)))) => s,
                Ok(other) => return Err(format!("primary {} answered status with {other:?}", peer.site)),
                Err(e) => return Err(format!("primary unreachable: {e}")),
            };
        let have = m.last_applied.map(|l| l.index).unwrap_or(0);
        let want = primary_status.last_log_index.unwrap_or(0);
        if have + CAUGHT_UP_SLACK_ENTRIES < want {
            return Err(format!(
                "{} is not caught up: applied {have}, primary {} has {want}; try again when it is",
                self.site, peer.site
            ));
        }
        // The old primary asked for this: campaign without a pre-vote (the voters
        // may still count the quiet primary as alive), again every couple of
        // heartbeats until a voter's lease has run out and the vote is won.
        let started = Instant::now();
        let deadline = started + become_primary_timeout(self.election_timeout_max_ms);
        let me = self.me;
        let led_and_committed = move |m: &openraft::RaftMetrics<NodeId, crate::raft::SiteNode>| {
            m.state == ServerState::Leader
                && m.current_leader == Some(me)
                && m.last_applied.is_some_and(|l| l.leader_id.term == m.current_term)
        };
        // The wait doubles: an election whose votes take longer than the wait (a
        // busy voter's fsync) would otherwise be replaced by the next one forever.
        let mut again = Duration::from_millis(2 * self.heartbeat_interval_ms);
        let longest = Duration::from_millis(4 * self.election_timeout_max_ms);
        let mut elections = 0u32;
        let done = loop {
            let leading = self.raft.metrics().borrow().state == ServerState::Leader;
            if !leading {
                elections += 1;
                self.raft.trigger().elect().await.map_err(|e| e.to_string())?;
            }
            let wait = again.min(deadline.saturating_duration_since(Instant::now()));
            again = (again * 2).min(longest);
            match self.raft.wait(Some(wait)).metrics(led_and_committed, "primary, committed in its term").await {
                Ok(m) => break m,
                Err(_) if Instant::now() < deadline => continue,
                Err(e) => return Err(format!("{} did not become primary: {e}", self.site)),
            }
        };
        let unavailable_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(term = done.current_term, elections, unavailable_ms, "primary by hand-over");
        Ok(NewPrimary { unavailable_ms, term: done.current_term })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_over_target_campaigns_five_leases_and_at_least_three_seconds() {
        assert_eq!(become_primary_timeout(3_000), Duration::from_secs(15));
        assert_eq!(become_primary_timeout(601), Duration::from_millis(3_005));
        assert_eq!(become_primary_timeout(600), BECOME_PRIMARY_MIN, "five leases of 600 ms is exactly the least");
        assert_eq!(become_primary_timeout(599), BECOME_PRIMARY_MIN);
        assert_eq!(become_primary_timeout(1), BECOME_PRIMARY_MIN);
    }
}
