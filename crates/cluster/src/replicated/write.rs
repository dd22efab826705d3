//! The write path of a replicated site: commit on the primary, forward from anywhere else.
//!
//! A write on the primary is `Raft::client_write`, which returns once a quorum of
//! voters has the entry fsynced and the primary has applied it. A data site that is not
//! primary forwards the command to the primary (the `Forward` request), gets the
//! entry's log index back, and answers its client only once it has applied that index
//! itself, so the client then reads its own write here. Every write has one deadline
//! (`store.write_timeout_ms`); past it the client is told "unavailable, retry" (SMTP
//! 451, IMAP NO \[UNAVAILABLE\]). A write that timed out may still commit later: the
//! client's retry is then a duplicate, never a loss.
//!
//! This module must never interpret a command (the store does), never answer a client
//! before the quorum commit, and never send one forwarded write twice.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use maildr_store::{Applied, Command};
use openraft::error::{ClientWriteError, RaftError};

use super::handover::HANDOVER_WRITE_HOLD_POLL;
use super::Replicated;
use crate::raft::network::PeerCallError;
use crate::raft::wire::{ForwardError, ForwardedWrite, PeerRequest, PeerResponse};
use crate::raft::{EntryOutcome, NodeId};
use crate::WriteError;

impl Replicated {
    /// Commit `command` through the primary; see the module documentation.
    pub async fn write(&self, command: Command) -> Result<Applied, WriteError> {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(self.limits.write_timeout_ms);
        let kind = command.kind();
        // This site's own copy of a new body may still be being written (see
        // `bodies`): the write waits for it beside the commit, not before it.
        let body = command.new_body();
        let local_copy = async {
            match body {
                Some(hash) => self.local_body_stored(hash).await,
                None => Ok(()),
            }
        };
        let (result, local_copy) = tokio::join!(self.write_by(command, deadline), local_copy);
        let result = match (result, local_copy) {
            (Ok(_), Err(why)) => {
                tracing::error!(kind, reason = %why, "committed, but this site's copy of the body failed");
                Err(WriteError::Unavailable(format!("{kind}: {why}")))
            }
            (result, _) => result,
        };
        let mut metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(WriteError::Unavailable(reason)) => {
                metrics.counters.writes_unavailable += 1;
                tracing::warn!(kind, reason = %reason, "write not committed");
            }
            _ => {
                metrics.counters.writes_committed += 1;
                metrics.commit_latency.record(started.elapsed().as_secs_f64() * 1000.0);
            }
        }
        result
    }

    /// The Raft term this site leads in, or `None` when it is not the primary.
    pub fn leading_term(&self) -> Option<u64> {
        let m = self.raft.metrics().borrow().clone();
        (m.state == openraft::ServerState::Leader && m.current_leader == Some(self.me)).then_some(m.current_term)
    }

    /// Commit `command` only as the primary of `term`, the term in which it was
    /// decided: never forwarded, and refused once the lead has moved (another
    /// primary, or a new term of this one). A decision taken while this site led can
    /// so never land after a newer primary's (the control plane's DNS steering).
    pub async fn write_as_primary(&self, command: Command, term: u64) -> Result<Applied, WriteError> {
        let deadline = Instant::now() + Duration::from_millis(self.limits.write_timeout_ms);
        let kind = command.kind();
        let stale = |now: Option<u64>| {
            WriteError::Unavailable(format!(
                "{kind} not committed: decided as primary in term {term}, but {}",
                match now {
                    Some(t) => format!("this site now leads in term {t}"),
                    None => "this site no longer leads".to_string(),
                }
            ))
        };
        match self.leading_term() {
            Some(now) if now == term => {}
            now => return Err(stale(now)),
        }
        let result = match tokio::time::timeout_at(deadline.into(), self.raft.client_write(command)).await {
            Err(_) => Err(WriteError::Unavailable(format!("{kind} not committed: the quorum did not confirm in time"))),
            Ok(Ok(response)) => outcome(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(stale(self.leading_term())),
            Ok(Err(e)) => Err(WriteError::Unavailable(format!("{kind} not committed: {e}"))),
        };
        let mut metrics = self.metrics.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Err(_) => metrics.counters.writes_unavailable += 1,
            Ok(_) => metrics.counters.writes_committed += 1,
        }
        result
    }

    async fn write_by(&self, command: Command, deadline: Instant) -> Result<Applied, WriteError> {
        let unavailable = |why: &str| WriteError::Unavailable(format!("{} not committed: {why}", command.kind()));
        let mut primary_hint: Option<NodeId> = None;
        loop {
            if Instant::now() >= deadline {
                return Err(unavailable("no primary with a quorum answered in time"));
            }
            let target = match primary_hint.take() {
                Some(p) => Some(p),
                None => self.raft.metrics().borrow().current_leader,
            };
            match target {
                Some(primary) if primary == self.me => {
                    if self.handing_over.load(Ordering::SeqCst) {
                        // A leadership transfer holds new writes so the target can
                        // catch up completely and win its election; then they go
                        // to the new primary.
                        tokio::time::sleep(
                            HANDOVER_WRITE_HOLD_POLL.min(deadline.saturating_duration_since(Instant::now())),
                        )
                        .await;
                        continue;
                    }
                    // Stored while another site led: a peer must hold the body first.
                    self.confirm_body_pushed(&command, deadline).await.map_err(|why| unavailable(&why))?;
                    match tokio::time::timeout_at(deadline.into(), self.raft.client_write(command.clone())).await {
                        Err(_) => return Err(unavailable("the quorum did not confirm in time")),
                        Ok(Ok(response)) => return outcome(response.data),
                        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                            primary_hint = f.leader_id.filter(|l| *l != self.me);
                            if primary_hint.is_none() {
                                pause_before_retry(deadline).await;
                            }
                        }
                        Ok(Err(e)) => return Err(unavailable(&e.to_string())),
                    }
                }
                Some(primary) => match self.forward(primary, &command, deadline).await {
                    Forwarded::Done(result) => return result,
                    Forwarded::TryPrimary(next) => {
                        primary_hint = next.filter(|n| *n != primary);
                        if primary_hint.is_none() {
                            pause_before_retry(deadline).await;
                        }
                    }
                },
                None => pause_before_retry(deadline).await,
            }
        }
    }

    async fn forward(&self, primary: NodeId, command: &Command, deadline: Instant) -> Forwarded {
        let Some(peer) = self.peer(primary) else {
            return Forwarded::Done(Err(WriteError::Unavailable(format!(
                "primary {primary} is not in our configuration"
            ))));
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        self.metrics.lock().unwrap_or_else(|p| p.into_inner()).counters.writes_forwarded += 1;
        // Not idempotent: a forwarded write is sent at most once by this call.
        let response = peer.call(&PeerRequest::Forward(command.clone()), remaining, false).await;
        match response {
            Ok(PeerResponse::Forward(Ok(ForwardedWrite { log_index, outcome }))) => {
                let remaining = deadline.saturating_duration_since(Instant::now());
                let waited =
                    self.raft.wait(Some(remaining)).applied_index_at_least(Some(log_index), "read your writes").await;
                match waited {
                    Ok(_) => Forwarded::Done(outcome.map_err(WriteError::Refused)),
                    Err(e) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                        "committed at the primary as entry {log_index} but not applied here in time: {e}"
                    )))),
                }
            }
            Ok(PeerResponse::Forward(Err(ForwardError::NotPrimary { primary }))) => Forwarded::TryPrimary(primary),
            Ok(PeerResponse::Forward(Err(ForwardError::Unavailable(reason)))) => {
                Forwarded::Done(Err(WriteError::Unavailable(format!("primary {}: {reason}", peer.site))))
            }
            Ok(other) => Forwarded::Done(Err(WriteError::Unavailable(format!(
                "primary {} answered a forwarded write with {other:?}",
                peer.site
            )))),
            Err(PeerCallError::Io { source, .. }) if source.kind() == std::io::ErrorKind::ConnectionRefused => {
                // Nothing was sent: safe to look for the primary again.
                Forwarded::TryPrimary(None)
            }
            Err(e) => Forwarded::Done(Err(WriteError::Unavailable(format!("forwarding to the primary: {e}")))),
        }
    }

    /// A forwarded write, committed here as primary.
    pub(super) async fn commit_forwarded(&self, command: Command) -> Result<ForwardedWrite, ForwardError> {
        let timeout = Duration::from_millis(self.limits.write_timeout_ms);
        let deadline = Instant::now() + timeout;
        while self.handing_over.load(Ordering::SeqCst) {
            if Instant::now() >= deadline {
                return Err(ForwardError::Unavailable("a leadership transfer did not finish in time".into()));
            }
            tokio::time::sleep(HANDOVER_WRITE_HOLD_POLL).await;
        }
        // The body was pushed here as the write was forwarded: propose only once it
        // is here (see `bodies`). A push lost on the way is fetched after a
        // heartbeat interval rather than waited for.
        if let Some(body) = command.new_body() {
            let arrival = Duration::from_millis(self.heartbeat_interval_ms);
            self.await_entry_body(body, arrival).await.map_err(ForwardError::Unavailable)?;
        }
        let timeout = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
            Err(_) => Err(ForwardError::Unavailable("the quorum did not confirm in time".into())),
            Ok(Ok(response)) => match response.data {
                EntryOutcome::Command(outcome) => Ok(ForwardedWrite { log_index: response.log_id.index, outcome }),
                EntryOutcome::NoCommand => Err(ForwardError::Unavailable("entry carried no command".into())),
            },
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                Err(ForwardError::NotPrimary { primary: f.leader_id })
            }
            Ok(Err(e)) => Err(ForwardError::Unavailable(e.to_string())),
        }
    }
}

enum Forwarded {
    Done(Result<Applied, WriteError>),
    TryPrimary(Option<NodeId>),
}

fn outcome(data: EntryOutcome) -> Result<Applied, WriteError> {
    match data {
        EntryOutcome::Command(Ok(applied)) => Ok(applied),
        EntryOutcome::Command(Err(refused)) => Err(WriteError::Refused(refused)),
        EntryOutcome::NoCommand => Err(WriteError::Unavailable("entry carried no command".into())),
    }
}

/// How long a write waits before looking for the primary again, when none is known
/// or the one it asked is gone: short, so that a write waiting through an
/// election goes to the new primary as soon as it is elected.
const PRIMARY_RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Wait a little before looking for the primary again, never past the deadline.
async fn pause_before_retry(deadline: Instant) {
    let pause = PRIMARY_RETRY_PAUSE.min(deadline.saturating_duration_since(Instant::now()));
    tokio::time::sleep(pause).await;
}

#[cfg(test)]
mod tests {
    use maildr_config::{ClusterMember, ClusterSection, SiteRole};
    use maildr_store::{Applied, Command};
    use maildr_types::{Domain, UnixSeconds};

    use crate::replicated::{FreshStart, Replicated};
    use crate::{WriteError, WritePathLimits};

    /// A one-voter cluster in this process, initialised and leading.
    async fn lone_primary(dir: &std::path::Path) -> std::sync::Arc<Replicated> {
        let cluster = ClusterSection {
            node_id: 1,
            listen: "127.0.0.1:0".parse().unwrap(),
            secret: Some("0123456789abcdef".into()),
            members: vec![ClusterMember {
                node_id: 1,
                site: "bj".into(),
                role: SiteRole::Data,
                addr: "127.0.0.1:1".into(),
                mail_ip: None,
            }],
            ..ClusterSection::default()
        };
        let limits = WritePathLimits { batch_commands_max: 16, queue_commands_max: 64, write_timeout_ms: 5_000 };
        let site = Replicated::start(dir, "bj", &cluster, limits, FreshStart::AwaitMajority).await.unwrap();
        site.init().await.unwrap();
        site
    }

    fn add_domain(name: &str) -> Command {
        Command::AddDomain { domain: Domain::parse(name).unwrap(), at: UnixSeconds(1) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_decision_of_another_term_is_refused_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let site = lone_primary(dir.path()).await;
        let term = site.leading_term().expect("the lone voter leads");
        // Decided in a term this site does not lead in (an older lead, or a newer one).
        for stale in [term - 1, term + 1] {
            let refused = site.write_as_primary(add_domain("stale.test"), stale).await;
            match refused {
                Err(WriteError::Unavailable(why)) => assert!(why.contains(&format!("term {stale}")), "{why}"),
                other => panic!("a decision of term {stale} was not refused: {other:?}"),
            }
        }
        assert!(site.store().domains().unwrap().is_empty(), "a refused decision changed the state");
        // Decided in the term it leads in: committed.
        let applied = site.write_as_primary(add_domain("current.test"), term).await;
        assert!(matches!(applied, Ok(Applied::Done)), "{applied:?}");
        assert_eq!(site.store().domains().unwrap().len(), 1);
        site.shutdown().await;
    }
}
