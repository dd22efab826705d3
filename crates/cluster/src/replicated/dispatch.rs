//! The one RPC dispatcher of a site: accepts connections of the replication channel,
//! lets the transport authenticate each one (TLS, challenge, Hello), then routes every request by channel to
//! the job that answers it (Raft RPCs to openraft, bodies to `bodies`, forwarded
//! writes to `write`, control requests to their job).
//!
//! This module holds no job of its own: it must never decide anything a job module
//! decides, only route and answer. Raft RPCs from nodes a forced failover left out
//! are refused here, before openraft sees them.

use std::sync::Arc;
use std::time::Duration;

use openraft::raft::AppendEntriesResponse;
use tokio::sync::watch;

use super::entry_bodies::Held;
use super::Replicated;
use crate::raft::transport::{self, PeerListener, Unauthenticated};
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse, RaftReply, RaftRpc};
use crate::WriteError;

/// Accept peers (and `maildr cluster` commands) until told to stop.
pub(super) async fn serve_peers(site: Arc<Replicated>, listener: PeerListener, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(Some(connection)) => {
                    let site = Arc::clone(&site);
                    let from = connection.from;
                    tokio::spawn(async move {
                        if let Err(e) = serve_connection(&site, connection).await {
                            tracing::debug!(%from, error = %e, "replication connection ended");
                        }
                    });
                }
                Ok(None) => {} // over the limits for unauthenticated connections: closed
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a replication connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn serve_connection(site: &Arc<Replicated>, connection: Unauthenticated) -> std::io::Result<()> {
    let from = connection.from;
    let Some((mut stream, caller)) = transport::handshake(connection, &site.security, site.me, &site.site)
        .await
        .inspect_err(|e| tracing::info!(%from, error = %e, "replication connection not authenticated"))?
    else {
        return Ok(());
    };
    tracing::debug!(%from, site = caller.site.as_deref().unwrap_or("-"), node = ?caller.from, "replication connection authenticated");
    let peer = caller.from.and_then(|id| site.directory.get(id));
    while let Some(request) = transport::next_request(&mut stream, site.security.idle_timeout).await? {
        if let Some(peer) = &peer {
            peer.mark_heard();
        }
        let response = site.handle(request).await;
        let restart = matches!(response, PeerResponse::Control(Ok(ControlResponse::ForcedFailover(_))));
        let written = transport::answer(&mut stream, &response).await;
        if restart {
            // Only now that the operator has the answer: the restart ends this process.
            let _ = site.restart.send_replace(true);
        }
        written?;
    }
    Ok(())
}

impl Replicated {
    pub(super) async fn handle(self: &Arc<Self>, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::Hello { .. } => PeerResponse::Refused("Hello only opens a connection".into()),
            PeerRequest::Raft(rpc) => self.serve_raft(rpc).await,
            PeerRequest::Body(rpc) => PeerResponse::Body(self.serve_body(rpc).await),
            PeerRequest::Forward(command) => PeerResponse::Forward(self.commit_forwarded(command).await),
            PeerRequest::Control(request) => PeerResponse::Control(self.control(request).await),
        }
    }

    async fn serve_raft(self: &Arc<Self>, rpc: RaftRpc) -> PeerResponse {
        let leader = match &rpc {
            RaftRpc::AppendEntries(rpc) => rpc.vote.leader_id().voted_for(),
            RaftRpc::Vote(rpc) => rpc.vote.leader_id().voted_for(),
            RaftRpc::InstallSnapshot(rpc) => rpc.vote.leader_id().voted_for(),
        };
        if let Some(refusal) = self.refuse_raft_from(leader) {
            return PeerResponse::Refused(refusal);
        }
        let reply = match rpc {
            RaftRpc::AppendEntries(mut rpc) => {
                let (term, committed) = (rpc.vote.leader_id().get_term(), rpc.leader_commit.map(|l| l.index));
                // A primary of this site's term or a newer one sent this: it is alive
                // now, however long storing the entries takes (see `campaign`).
                if rpc.vote.is_committed() && term >= self.raft.metrics().borrow().current_term {
                    self.heard_from_primary();
                }
                let held = self.hold_back_entries_without_bodies(&mut rpc).await;
                let response = match (self.raft.append_entries(rpc).await, held) {
                    (Ok(AppendEntriesResponse::Success), Held::From { matching, .. }) => {
                        Ok(AppendEntriesResponse::PartialSuccess(matching))
                    }
                    (response, _) => response,
                };
                if matches!(response, Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))) {
                    self.note_primary_contact(leader, term, committed);
                }
                // A primary whose entries conflict with this site's is still a
                // primary heard from (it backs off to where the logs agree).
                if response.as_ref().is_ok_and(|r| !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                    self.heard_from_primary();
                    self.greater_log.clear();
                }
                RaftReply::AppendEntries(response)
            }
            RaftRpc::Vote(rpc) => {
                let theirs = rpc.last_log_id;
                let response = self.raft.vote(rpc).await;
                if response.as_ref().is_ok_and(|r| r.vote_granted) {
                    self.heard_from_leadership();
                }
                if response.as_ref().is_ok_and(|r| !r.vote_granted && r.last_log_id > theirs) {
                    self.saw_shorter_candidate();
                }
                RaftReply::Vote(response)
            }
            RaftRpc::InstallSnapshot(rpc) => RaftReply::InstallSnapshot(self.raft.install_snapshot(rpc).await),
        };
        PeerResponse::Raft(reply)
    }

    /// Route a control request to its job.
    async fn control(&self, request: ControlRequest) -> Result<ControlResponse, String> {
        Ok(match request {
            ControlRequest::Init => ControlResponse::Initialized { already: self.init().await? },
            ControlRequest::Status => ControlResponse::Status(Box::new(self.status())),
            ControlRequest::BecomePrimary => self.become_primary().await?.into(),
            ControlRequest::HandOver { to } => self.hand_over(to).await?.into(),
            ControlRequest::Digests { applied_at_least, wait_ms } => {
                let (applied_index, mailboxes) = self.digests(applied_at_least, wait_ms).await?;
                ControlResponse::Digests { applied_index, mailboxes }
            }
            ControlRequest::DigestsAt { index, wait_ms } => {
                ControlResponse::Digests { applied_index: index, mailboxes: self.digests_at(index, wait_ms).await? }
            }
            ControlRequest::Messages { mailbox } => ControlResponse::Messages(self.messages(mailbox).await?),
            ControlRequest::Rejoin { node_id, site, addr } => {
                let rejoined = self.rejoin(node_id, site, addr).await?;
                ControlResponse::Rejoined { replaced: rejoined.replaced, voters: rejoined.voters }
            }
            ControlRequest::Observations => ControlResponse::Observations(self.local_observations()),
            ControlRequest::PreVote { candidate } => ControlResponse::PreVote(self.answer_pre_vote(candidate)),
            ControlRequest::ForceFailover { by } => ControlResponse::ForcedFailover(self.force_failover(by).await?),
            ControlRequest::HoldApply { by } => ControlResponse::ApplyHeld(self.hold_apply(by).await?),
            ControlRequest::ReleaseApply => ControlResponse::ApplyReleased(self.release_apply().await?),
            ControlRequest::Write(command) => match self.write(command).await {
                Ok(applied) => ControlResponse::Written(Ok(applied)),
                Err(WriteError::Refused(e)) => ControlResponse::Written(Err(e)),
                Err(WriteError::Unavailable(reason)) => return Err(reason),
            },
            ControlRequest::Queue => {
                let store = self.store();
                let mut messages = store.queued().map_err(|e| e.to_string())?;
                let total = messages.len() as u64;
                messages.truncate(crate::raft::wire::QUEUE_LIST_MAX);
                let left = store.queue_totals().map_err(|e| e.to_string())?;
                ControlResponse::Queue { messages, total, left }
            }
            ControlRequest::StoreBody(body) => {
                crate::raft::wire::check_store_body(body.len())?;
                match self.put_body(body).await {
                    Ok(body) => ControlResponse::BodyStored(body),
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
    }
}

impl From<super::handover::NewPrimary> for ControlResponse {
    fn from(p: super::handover::NewPrimary) -> ControlResponse {
        ControlResponse::BecamePrimary { unavailable_ms: p.unavailable_ms, term: p.term }
    }
}
