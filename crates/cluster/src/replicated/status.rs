//! What a site tells about itself, and asks its peers about: its status (Raft state,
//! per-peer lag, write metrics), how long it has been cut off from a majority, the
//! control plane's observations, and the digests and messages `verify` compares.
//!
//! This module only reads: it must never change Raft or store state.

use std::sync::Arc;
use std::time::Duration;

use maildr_types::MailboxId;

use super::{ObservationSource, Replicated};
use crate::raft::network::PeerClient;
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::raft::NodeId;
use crate::status::{MailboxDigest, MailboxDigestOf, MessageSummary, MessageSummaryOf, PeerStatus, SiteStatus};

impl Replicated {
    /// This site's view of itself and its peers.
    pub fn status(&self) -> SiteStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let last_log_index = m.last_log_index;
        let caught_up = self.caught_up_at.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let peers = self
            .directory
            .all()
            .map(|peer| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&peer.node_id)).map(|l| l.map(|l| l.index));
                let lag_entries =
                    matched.map(|matched| last_log_index.unwrap_or(0).saturating_sub(matched.unwrap_or(0)));
                let lag_seconds = lag_entries.map(|lag| match (lag, caught_up.get(&peer.node_id)) {
                    (0, _) => 0.0,
                    (_, Some(at)) => at.elapsed().as_secs_f64(),
                    (_, None) => f64::NAN,
                });
                let lag_bytes = matched
                    .and_then(|matched| self.log_store.lag_bytes(matched.unwrap_or(0), last_log_index.unwrap_or(0)));
                PeerStatus {
                    node_id: peer.node_id,
                    site: peer.site.clone(),
                    role: self.role_of(peer.node_id).map(|r| r.name().to_string()).unwrap_or_default(),
                    last_heard_ms_ago: peer
                        .last_heard()
                        .map(|t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
                    matched_index: matched.flatten(),
                    lag_entries,
                    lag_seconds: lag_seconds.filter(|s| s.is_finite()),
                    lag_bytes: lag_bytes.map(|l| l.bytes),
                    lag_bytes_estimated: lag_bytes.is_some_and(|l| l.estimated),
                }
            })
            .collect();
        let metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        let mut counters = metrics.counters.clone();
        counters.commit_latency_ms_p50 = metrics.commit_latency.quantile(0.5);
        counters.commit_latency_ms_p99 = metrics.commit_latency.quantile(0.99);
        counters.body_push_latency_ms_p50 = metrics.body_push_latency.quantile(0.5);
        counters.body_push_latency_ms_p99 = metrics.body_push_latency.quantile(0.99);
        SiteStatus {
            site: self.site.clone(),
            node_id: self.me,
            role: self.role.name().into(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            initialized: !voters.is_empty(),
            voters,
            learners,
            peers,
            missing_bodies: self.state_machine.missing_bodies().len() as u64,
            metrics: counters,
            primary_contact: self.primary_contact(),
            forced_failover: self.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            apply_delay: self.apply_delay_status(last_log_index, m.last_applied.map(|l| l.index)),
            certificate_expires_at: self.security.certificate_expires_at(),
        }
    }

    /// How long ago this site last knew itself part of a majority: the age of the
    /// contact (an answer, or a request) with the voters it needs besides itself,
    /// the most recent ones first. Heartbeats, forwarded writes and the control
    /// plane's status calls all count, so a follower whose primary died but who
    /// still hears the witness is not cut off, while a partitioned site is.
    /// `u64::MAX` when it has not heard from enough voters since it started.
    /// (openraft's `millis_since_quorum_ack` is aged only when metrics are
    /// reported, and exists only on the leader.)
    pub fn quorum_silence_ms(&self) -> u64 {
        let m = self.raft.metrics().borrow().clone();
        let others: Vec<NodeId> = m.membership_config.membership().voter_ids().filter(|v| *v != self.me).collect();
        let needed = others.len().div_ceil(2);
        if needed == 0 {
            return 0;
        }
        let mut ages: Vec<u64> = others
            .iter()
            .map(|v| {
                self.peer(*v)
                    .and_then(|p| p.last_heard())
                    .map_or(u64::MAX, |t| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX))
            })
            .collect();
        ages.sort_unstable();
        ages[needed - 1]
    }

    /// Let peers ask this site for its control-plane observations.
    pub fn set_observation_source(&self, source: ObservationSource) {
        *self.observations.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// This site's own observations (empty when no control plane runs).
    pub fn local_observations(&self) -> Vec<u8> {
        let source = self.observations.lock().unwrap_or_else(|p| p.into_inner()).clone();
        source.map(|f| f()).unwrap_or_default()
    }

    /// Ask every other member for its observations; `None` for a member that did
    /// not answer within `timeout`.
    pub async fn peer_observations(&self, timeout: Duration) -> Vec<(String, Option<Vec<u8>>)> {
        let peers: Vec<Arc<PeerClient>> = self.directory.all().cloned().collect();
        let calls = peers.into_iter().map(|peer| async move {
            let answer = peer.call(&PeerRequest::Control(ControlRequest::Observations), timeout, true).await;
            let bytes = match answer {
                Ok(PeerResponse::Control(Ok(ControlResponse::Observations(bytes)))) => Some(bytes),
                _ => None,
            };
            (peer.site.clone(), bytes)
        });
        futures_join_all(calls).await
    }

    /// Ask member `site` for its Raft status over the replication channel (through
    /// the same link the site replicates on).
    pub async fn peer_status(&self, site: &str, timeout: Duration) -> Result<SiteStatus, String> {
        let peer = self.directory.by_site(site).ok_or_else(|| format!("no member site {site:?}"))?;
        match peer.call(&PeerRequest::Control(ControlRequest::Status), timeout, true).await {
            Ok(PeerResponse::Control(Ok(ControlResponse::Status(s)))) => Ok(*s),
            Ok(other) => Err(format!("{site} answered {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Every mailbox's digest, read at one applied index once at least
    /// `applied_at_least` is applied (waiting at most `wait_ms`).
    pub(super) async fn digests(
        &self,
        applied_at_least: u64,
        wait_ms: u64,
    ) -> Result<(u64, Vec<MailboxDigest>), String> {
        let wait = Duration::from_millis(wait_ms.min(60_000));
        self.raft
            .wait(Some(wait))
            .applied_index_at_least(Some(applied_at_least), "verify")
            .await
            .map_err(|e| format!("{} has not applied entry {applied_at_least}: {e}", self.site))?;
        let sm = self.state_machine.clone();
        let read = tokio::task::spawn_blocking(move || {
            sm.at_applied_index(|index, store| {
                Ok::<_, maildr_store::StoreError>((index.unwrap_or(0), MailboxDigest::all(store)?))
            })
        });
        read.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
    }

    /// Every mailbox's digest at exactly log index `index`, read by the apply on
    /// its way past it (waiting at most `wait_ms`); refused when this site has
    /// applied past it already.
    pub(super) async fn digests_at(&self, index: u64, wait_ms: u64) -> Result<Vec<MailboxDigest>, String> {
        let wait = Duration::from_millis(wait_ms.min(60_000));
        let sm = self.state_machine.clone();
        let marked = tokio::task::spawn_blocking(move || sm.mark_digests(index)).await.map_err(|e| e.to_string())?;
        if let Some(now) = marked.map_err(|e| format!("{}: {e}", self.site))? {
            return Ok(now);
        }
        let deadline = std::time::Instant::now() + wait;
        loop {
            if let Some(digests) = self.state_machine.marked_digests(index) {
                return Ok(digests);
            }
            if std::time::Instant::now() >= deadline {
                self.state_machine.forget_digest_mark(index);
                return Err(format!("{} did not reach entry {index} within {} ms", self.site, wait.as_millis()));
            }
            tokio::time::sleep(DIGEST_MARK_POLL).await;
        }
    }

    /// The messages of one mailbox, each with whether its body is here.
    pub(super) async fn messages(&self, mailbox: u64) -> Result<Vec<MessageSummary>, String> {
        let store = self.store();
        tokio::task::spawn_blocking(move || {
            let messages = store.messages(MailboxId(mailbox)).map_err(|e| e.to_string())?;
            let present = |m: &maildr_store::Message| store.blobs().contains(&m.body);
            Ok(messages.iter().map(|m| MessageSummary::of(m, present(m))).collect())
        })
        .await
        .map_err(|e| e.to_string())?
    }
}

/// How often a site waiting for the apply to reach a digest mark looks.
const DIGEST_MARK_POLL: Duration = Duration::from_millis(10);

/// Run futures concurrently and collect their outputs in order (a small stand-in
/// for `futures::future::join_all`, to keep the dependency set lean).
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("observation calls do not panic"));
    }
    out
}
