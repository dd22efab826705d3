//! A voter acknowledges an entry only once it holds the entry's message body
//! durably.
//!
//! Rule 1 of the design (a 250 only for a message whose entry is quorum-committed
//! and whose body is durable on two sites) used to rest on the primary: it pushed a
//! body and waited for a peer to hold it before it proposed the entry, so every
//! message paid two round trips one after the other. With this rule on the
//! followers, a commit itself proves the body is on two sites (the primary, which
//! stored it before proposing, and the voter whose acknowledgement made the
//! majority), so the primary proposes a small body's entry while the push is still
//! on its way ([`super::bodies`]) and the two travel side by side.
//!
//! An AppendEntries whose uncommitted entries name a body this voter lacks waits a
//! moment for the push under way (a quarter of a heartbeat interval,
//! [`BODY_WAIT_HEARTBEAT_SHARE`], inside openraft's deadline for the call). Bodies still missing then
//! are fetched in the background, and the voter appends only the entries before
//! the first of them: it answers `PartialSuccess` up to there, and the primary
//! sends the rest again. A body counts as held once it is on disk and no writer
//! of it is still at work ([`super::bodies::BodiesBeingWritten`]: a writer returns
//! only after the directory's fsync), so the voter adds no fsync of its own.
//! Entries the primary has already committed need no such
//! wait: they had their two copies when they committed, and a site catching up
//! fetches their bodies later, as before. Learners' acknowledgements count for no
//! commit, so they never wait.
//!
//! This module must never let a voter acknowledge an uncommitted entry whose body
//! it does not hold durably, nor hold back an entry the primary has committed.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use maildr_types::BlobHash;
use openraft::raft::AppendEntriesRequest;
use openraft::{EntryPayload, LogId};

use super::Replicated;
use crate::raft::{NodeId, TypeConfig};

/// The share of a heartbeat interval an append waits for bodies on their way
/// (1/N): openraft gives the whole call one heartbeat interval, from which the
/// round trip (up to half of it on the wan-degradation drill's links), the log's
/// own fsync and the way back must also come. A body later than this costs its
/// entry one more round trip (`PartialSuccess`); a call past the deadline costs
/// far more (openraft counts the follower unreachable and backs off).
const BODY_WAIT_HEARTBEAT_SHARE: u32 = 4;

/// How often a waiting append looks whether its bodies have arrived.
const BODY_WAIT_POLL: Duration = Duration::from_millis(2);

/// Bodies being fetched in the background for held-back entries, so a retried
/// append does not start the same fetch again.
#[derive(Debug, Default)]
pub(super) struct BodyFetches(Mutex<BTreeSet<BlobHash>>);

impl BodyFetches {
    /// `true` when no fetch of `hash` was under way (the caller starts one).
    fn begin(&self, hash: BlobHash) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(hash)
    }

    fn end(&self, hash: &BlobHash) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(hash);
    }
}

/// The entries of `rpc` a voter must hold the body of before it acknowledges them:
/// (position in `rpc.entries`, body), for those after the primary's commit index.
pub(super) fn bodies_to_hold(rpc: &AppendEntriesRequest<TypeConfig>) -> Vec<(usize, BlobHash)> {
    let committed = rpc.leader_commit.map(|l| l.index);
    rpc.entries
        .iter()
        .enumerate()
        .filter(|(_, entry)| committed.is_none_or(|c| entry.log_id.index > c))
        .filter_map(|(at, entry)| match &entry.payload {
            EntryPayload::Normal(command) => command.new_body().map(|hash| (at, hash)),
            _ => None,
        })
        .collect()
}

/// What [`Replicated::hold_back_entries_without_bodies`] did to an append.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Held {
    /// Every entry may be acknowledged.
    Nothing,
    /// The entries from the first one whose body is missing were dropped; a success
    /// must be answered as `PartialSuccess(matching)`.
    From { matching: Option<LogId<NodeId>>, entries: usize },
}

/// Drop the entries of `rpc` from position `first_missing` on; what a success then
/// matches is the last entry kept, or the entry before the request.
pub(super) fn drop_from(rpc: &mut AppendEntriesRequest<TypeConfig>, first_missing: usize) -> Held {
    assert!(first_missing < rpc.entries.len(), "a position inside the request");
    let entries = rpc.entries.len() - first_missing;
    rpc.entries.truncate(first_missing);
    let matching = rpc.entries.last().map(|e| e.log_id).or(rpc.prev_log_id);
    Held::From { matching, entries }
}

impl Replicated {
    /// On a voter, before it appends `rpc`: make sure it holds durably the body of
    /// every entry it will acknowledge (see the module documentation), waiting a
    /// moment for pushes under way and dropping the entries from the first body
    /// still missing.
    pub(super) async fn hold_back_entries_without_bodies(
        self: &Arc<Self>,
        rpc: &mut AppendEntriesRequest<TypeConfig>,
    ) -> Held {
        let needed = bodies_to_hold(rpc);
        if needed.is_empty() {
            return Held::Nothing;
        }
        let voter = self.raft.metrics().borrow().membership_config.membership().voter_ids().any(|v| v == self.me);
        if !voter {
            return Held::Nothing;
        }
        let store = self.store();
        let deadline = Instant::now() + Duration::from_millis(self.heartbeat_interval_ms) / BODY_WAIT_HEARTBEAT_SHARE;
        // Held durably: on disk, and no writer of it still at work (a body is
        // renamed into place before its directory's fsync; see `bodies`).
        let held = |hash: &BlobHash| store.blobs().contains(hash) && !self.bodies_being_written.contains(hash);
        let first_missing = loop {
            let missing = needed.iter().find(|(_, hash)| !held(hash)).copied();
            match missing {
                None => break None,
                Some(_) if Instant::now() < deadline => tokio::time::sleep(BODY_WAIT_POLL).await,
                Some(found) => break Some(found),
            }
        };
        let Some((at, hash)) = first_missing else { return Held::Nothing };
        for (_, hash) in needed.iter().filter(|(later, _)| *later >= at) {
            self.fetch_in_background(*hash);
        }
        tracing::debug!(%hash, entries = rpc.entries.len() - at, "holding back entries until their bodies are here");
        let held = drop_from(rpc, at);
        if let Held::From { entries, .. } = held {
            self.metrics.lock().unwrap_or_else(|p| p.into_inner()).counters.entries_held_for_bodies += entries as u64;
        }
        held
    }

    /// Fetch `hash` from a peer unless that is under way already.
    fn fetch_in_background(self: &Arc<Self>, hash: BlobHash) {
        if self.store().blobs().contains(&hash) || !self.body_fetches.begin(hash) {
            return;
        }
        let site = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = site.ensure_bodies(&[hash], site.body_push_timeout).await {
                tracing::debug!(%hash, error = %e, "fetching the body of a held-back entry");
            }
            site.body_fetches.end(&hash);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maildr_store::Command;
    use maildr_types::BlobRef;
    use openraft::{CommittedLeaderId, Entry, Vote};

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(2, 1), index)
    }

    fn entry(index: u64, body: Option<u8>) -> Entry<TypeConfig> {
        let payload = match body {
            Some(b) => EntryPayload::Normal(Command::Deliver {
                recipients: Vec::new(),
                body: BlobRef { hash: BlobHash([b; 32]), size_bytes: 10 },
                internal_date: maildr_types::UnixSeconds(0),
                flags: maildr_types::SystemFlags(0),
                retry_key: None,
            }),
            None => EntryPayload::Blank,
        };
        Entry { log_id: log_id(index), payload }
    }

    fn append(prev: u64, committed: Option<u64>, entries: Vec<Entry<TypeConfig>>) -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(prev)),
            leader_commit: committed.map(log_id),
            entries,
        }
    }

    #[test]
    fn only_bodies_of_entries_after_the_primarys_commit_must_be_held() {
        let rpc =
            append(9, Some(11), vec![entry(10, Some(1)), entry(11, Some(2)), entry(12, None), entry(13, Some(3))]);
        assert_eq!(bodies_to_hold(&rpc), [(3, BlobHash([3; 32]))]);
        let nothing_committed = append(9, None, vec![entry(10, Some(1)), entry(11, None)]);
        assert_eq!(bodies_to_hold(&nothing_committed), [(0, BlobHash([1; 32]))]);
        assert!(bodies_to_hold(&append(9, Some(9), vec![entry(10, None)])).is_empty());
    }

    #[test]
    fn a_held_back_append_matches_up_to_the_last_entry_kept() {
        let mut rpc = append(9, Some(9), vec![entry(10, Some(1)), entry(11, Some(2)), entry(12, Some(3))]);
        assert_eq!(drop_from(&mut rpc, 1), Held::From { matching: Some(log_id(10)), entries: 2 });
        assert_eq!(rpc.entries.len(), 1);
        let mut rpc = append(9, Some(9), vec![entry(10, Some(1))]);
        assert_eq!(
            drop_from(&mut rpc, 0),
            Held::From { matching: Some(log_id(9)), entries: 1 },
            "nothing kept: it matches the entry before the request"
        );
        assert!(rpc.entries.is_empty());
    }

    /// A follower voter of a three-site cluster in this process, whose peers do not
    /// exist: the test plays its primary (node 1) by calling its RPC router.
    async fn follower(dir: &std::path::Path) -> Arc<Replicated> {
        use maildr_config::{ClusterMember, ClusterSection, SiteRole};
        let member = |node_id, site: &str, role| ClusterMember {
            node_id,
            site: site.into(),
            role,
            addr: "127.0.0.1:1".into(),
            mail_ip: None,
        };
        let cluster = ClusterSection {
            node_id: 2,
            listen: "127.0.0.1:0".parse().unwrap(),
            secret: Some("0123456789abcdef".into()),
            members: vec![
                member(1, "bj", SiteRole::Data),
                member(2, "sh", SiteRole::Data),
                member(3, "hz", SiteRole::Witness),
            ],
            body_push_timeout_ms: 200,
            ..ClusterSection::default()
        };
        let limits = crate::WritePathLimits { batch_commands_max: 16, queue_commands_max: 64, write_timeout_ms: 5_000 };
        Replicated::start(dir, "sh", &cluster, limits, super::super::FreshStart::NewCluster).await.unwrap()
    }

    async fn send(
        site: &Arc<Replicated>,
        rpc: AppendEntriesRequest<TypeConfig>,
    ) -> openraft::raft::AppendEntriesResponse<NodeId> {
        use crate::raft::wire::{PeerRequest, PeerResponse, RaftReply, RaftRpc};
        match site.handle(PeerRequest::Raft(RaftRpc::AppendEntries(rpc))).await {
            PeerResponse::Raft(RaftReply::AppendEntries(Ok(response))) => response,
            other => panic!("AppendEntries answered {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_voter_acknowledges_an_uncommitted_entry_only_once_it_holds_the_body() {
        use crate::raft::wire::{BodyReply, BodyRpc, PeerRequest, PeerResponse};
        use crate::raft::SiteNode;
        use openraft::raft::AppendEntriesResponse;
        use openraft::Membership;

        let dir = tempfile::tempdir().unwrap();
        let site = follower(dir.path()).await;
        let nodes = [(1, "bj"), (2, "sh"), (3, "hz")]
            .into_iter()
            .map(|(id, name)| (id, SiteNode { site: name.into(), addr: "127.0.0.1:1".into() }))
            .collect::<std::collections::BTreeMap<NodeId, SiteNode>>();
        let voters = nodes.keys().copied().collect::<BTreeSet<NodeId>>();
        let membership =
            Entry { log_id: log_id(0), payload: EntryPayload::Membership(Membership::new(vec![voters], nodes)) };
        let mut first = append(0, None, vec![membership]);
        first.prev_log_id = None;
        assert_eq!(send(&site, first).await, AppendEntriesResponse::Success);
        let has_log = |index: u64, within_ms: u64| {
            let wait = site.raft.wait(Some(Duration::from_millis(within_ms)));
            async move { wait.log_index(Some(index), "appended").await.is_ok() }
        };
        assert!(has_log(0, 5_000).await);

        // The primary has committed index 0 only; entry 1 names a body that has not
        // reached this site: it is not appended, and the answer matches only up to 0.
        let body = b"Subject: held back\r\n\r\nthe body\r\n".to_vec();
        let hash = maildr_store::blob::hash_body(&body);
        let deliver = |index| Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Command::Deliver {
                recipients: Vec::new(),
                body: BlobRef { hash, size_bytes: body.len() as u64 },
                internal_date: maildr_types::UnixSeconds(0),
                flags: maildr_types::SystemFlags(0),
                retry_key: None,
            }),
        };
        assert_eq!(
            send(&site, append(0, Some(0), vec![deliver(1)])).await,
            AppendEntriesResponse::PartialSuccess(Some(log_id(0)))
        );
        assert!(!has_log(1, 300).await, "an entry whose body is missing was appended");
        assert_eq!(site.metrics.lock().unwrap().counters.entries_held_for_bodies, 1);

        // The push arrives: the same append is acknowledged whole.
        let put = BodyRpc::Put { hash, offset: 0, last: true, bytes: body.clone() };
        assert!(matches!(site.handle(PeerRequest::Body(put)).await, PeerResponse::Body(BodyReply::Put(Ok(())))));
        assert_eq!(send(&site, append(0, Some(0), vec![deliver(1)])).await, AppendEntriesResponse::Success);
        assert!(has_log(1, 5_000).await);

        let entry_with = |index, hash: BlobHash| Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(Command::Deliver {
                recipients: Vec::new(),
                body: BlobRef { hash, size_bytes: 10 },
                internal_date: maildr_types::UnixSeconds(0),
                flags: maildr_types::SystemFlags(0),
                retry_key: None,
            }),
        };

        // A body on disk whose writer has not returned (its directory not yet
        // fsynced) is not held yet; once the writer is done, it is.
        let second = b"Subject: second\r\n\r\nanother body\r\n".to_vec();
        let second_hash = maildr_store::blob::hash_body(&second);
        let writing = site.bodies_being_written.begin(second_hash);
        site.store().blobs().put(&second).unwrap();
        assert_eq!(
            send(&site, append(1, Some(1), vec![entry_with(2, second_hash)])).await,
            AppendEntriesResponse::PartialSuccess(Some(log_id(1)))
        );
        drop(writing);
        assert_eq!(
            send(&site, append(1, Some(1), vec![entry_with(2, second_hash)])).await,
            AppendEntriesResponse::Success
        );
        assert!(has_log(2, 5_000).await);

        // An entry the primary has committed is appended without its body (a site
        // catching up fetches those later): another body, never pushed here.
        let committed = entry_with(3, BlobHash([7; 32]));
        assert_eq!(send(&site, append(2, Some(3), vec![committed])).await, AppendEntriesResponse::Success);
        assert!(has_log(3, 5_000).await);
        site.shutdown().await;
    }
}
