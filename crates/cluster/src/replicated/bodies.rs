//! Message body replication: bodies travel beside the Raft log, never in it.
//!
//! [`Replicated::put_body`] stores the body here and pushes it to every peer. On the
//! primary it returns at once for a body of up to [`BODY_WITH_ENTRY_MAX`], with
//! its own copy still being written: the entry, the push and this site's fsyncs
//! go on side by side. A voter acknowledges the entry only once it holds the body
//! (`entry_bodies`), so the commit proves a second copy, and the write waits for
//! this site's copy beside the commit ([`Replicated::local_body_stored`]). A larger body returns once at least one
//! peer has it durable, before its entry is proposed. On a site that will forward the write it returns at once: the primary
//! proposes a forwarded write only once it holds the body itself
//! ([`Replicated::await_entry_body`], pushed meanwhile or fetched from here), so
//! the body is on this site and the primary before the entry exists, and the push
//! and the forward travel together instead of one after the other. Should this site
//! become primary before it writes, the write waits for the pushes as a primary's
//! would ([`Replicated::confirm_body_pushed`]). Peers store a pushed body only if it hashes
//! to its announced name. A site whose applied state refers to a body it lacks (it was
//! down during the push, or it installed a snapshot, which carries metadata only)
//! fetches it from a peer in the background ([`fetch_missing_bodies`]); readers that
//! need it sooner ask for it with [`Replicated::ensure_bodies`]. This module also
//! answers the body channel (pieces pushed and asked for, and which bodies are held).
//!
//! This module must never store a body under a name it does not hash to, nor
//! acknowledge a body before it is durable.

use std::sync::Arc;
use std::time::{Duration, Instant};

use maildr_config::SiteRole;
use maildr_types::{BlobHash, BlobRef};
use tokio::sync::watch;

use super::Replicated;
use crate::raft::network::{PeerCallError, PeerClient};
use crate::raft::wire::{BodyPiece, BodyReply, BodyRpc, PeerRequest, PeerResponse, BODY_CHUNK_BYTES, HOLDS_BODIES_MAX};
use crate::WriteError;

/// Most bodies received in pieces at once; beyond it one of them is dropped (its
/// sender's push then fails and the body is fetched later instead).
const PARTIAL_BODIES_MAX: usize = 16;

/// Bodies being written at this site right now, by a push, a fetch or `put_body`,
/// with how many writers each has. A body is on disk once renamed into place but
/// durable only once its writer returns (its directory's fsync comes last), so a
/// voter counts a body as held only when it is on disk and in no writer's hands
/// (`entry_bodies`): that spares the voter an fsync of its own per body.
#[derive(Debug, Default)]
pub(super) struct BodiesBeingWritten(std::sync::Mutex<std::collections::HashMap<BlobHash, usize>>);

impl BodiesBeingWritten {
    /// Note a writer of `hash` until the guard is dropped.
    pub(super) fn begin(self: &Arc<Self>, hash: BlobHash) -> BodyWriting {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(hash).or_insert(0) += 1;
        BodyWriting { set: Arc::clone(self), hash }
    }

    pub(super) fn contains(&self, hash: &BlobHash) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(hash)
    }
}

/// One writer of a body, noted in [`BodiesBeingWritten`] while it lives.
pub(super) struct BodyWriting {
    set: Arc<BodiesBeingWritten>,
    hash: BlobHash,
}

impl Drop for BodyWriting {
    fn drop(&mut self) {
        let mut writers = self.set.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = writers.get_mut(&self.hash) {
            *count -= 1;
            if *count == 0 {
                writers.remove(&self.hash);
            }
        }
    }
}

/// Bodies being written here while their entries go out, each with the outcome of
/// its write once known (`None` until then).
pub(super) type LocalPuts = std::collections::HashMap<BlobHash, watch::Receiver<Option<Result<(), String>>>>;

/// The largest body whose entry the primary proposes while the body's push is still
/// on its way (one piece, one round trip, well inside a heartbeat interval on a
/// WAN); a larger one is proposed only once a peer holds it, so it never holds up
/// the entries behind it at the voters (`entry_bodies`).
pub(super) const BODY_WITH_ENTRY_MAX: u64 = 256 * 1024;

/// How often a primary looks whether a forwarded write's body has arrived.
const BODY_ARRIVAL_POLL: Duration = Duration::from_millis(2);

impl Replicated {
    /// Store a body here and push it to every peer; see the module documentation
    /// for when it returns.
    pub async fn put_body(&self, body: Vec<u8>) -> Result<BlobRef, WriteError> {
        let started = Instant::now();
        let body = Arc::new(body);
        // The pushes start before this site's own copy is durable, and the two go
        // on side by side: a write waits for the slower, not for their sum.
        let hash = {
            let body = Arc::clone(&body);
            tokio::task::spawn_blocking(move || maildr_store::blob::hash_body(&body))
                .await
                .map_err(|e| WriteError::Unavailable(format!("hashing the message body failed: {e}")))?
        };
        let local_put = {
            let store = self.store();
            let body = Arc::clone(&body);
            let writing = self.bodies_being_written.begin(hash);
            tokio::task::spawn_blocking(move || {
                let _writing = writing;
                store.blobs().put(&body)
            })
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let mut pushes = 0;
        for peer in self.directory.all() {
            pushes += 1;
            let peer = Arc::clone(peer);
            let body = Arc::clone(&body);
            let tx = tx.clone();
            let timeout = self.body_push_timeout;
            // Each push runs to its end even after the write returns: the more
            // sites hold the body early, the fewer fetches later.
            tokio::spawn(async move {
                let result = push_body(&peer, hash, &body, timeout).await;
                if let Err(e) = &result {
                    tracing::debug!(peer = %peer.site, error = %e, "body push failed");
                }
                let _ = tx.send(result.is_ok()).await;
            });
        }
        drop(tx);
        let size = body.len() as u64;
        let metrics = Arc::clone(&self.metrics);
        let first_ack = async move {
            let mut failures = 0;
            while let Some(ok) = rx.recv().await {
                if ok {
                    let mut metrics = metrics.lock().unwrap_or_else(|p| p.into_inner());
                    metrics.counters.body_pushes += 1;
                    metrics.counters.body_push_bytes += size;
                    metrics.body_push_latency.record(started.elapsed().as_secs_f64() * 1000.0);
                    return Ok(());
                }
                failures += 1;
            }
            Err(failures)
        };
        let m = self.raft.metrics().borrow().clone();
        let lone = m.membership_config.membership().voter_ids().eq([self.me]);
        let forwarding = m.current_leader.is_some_and(|l| l != self.me);
        if !lone && !forwarding && size <= BODY_WITH_ENTRY_MAX {
            // The entry may go out at once: a voter acknowledges it only once the
            // push has reached it (`entry_bodies`), so its commit proves a second
            // copy; this site's own copy is awaited by the write (`write`), beside
            // the commit.
            let (stored_tx, stored_rx) = watch::channel(None);
            self.local_puts.lock().unwrap_or_else(|p| p.into_inner()).insert(hash, stored_rx);
            let local_puts = Arc::clone(&self.local_puts);
            let state_machine = self.state_machine.clone();
            tokio::spawn(async move {
                let stored = match local_put.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(format!("storing the message body failed: {e}")),
                    Err(e) => Err(format!("body writer failed: {e}")),
                };
                if stored.is_ok() {
                    state_machine.body_arrived(&hash);
                }
                local_puts.lock().unwrap_or_else(|p| p.into_inner()).remove(&hash);
                let _ = stored_tx.send(Some(stored));
            });
            tokio::spawn(async move {
                if let Err(failures) = first_ack.await {
                    tracing::debug!(failures, "a body proposed with its entry reached no other site by push");
                }
            });
            return Ok(BlobRef { hash, size_bytes: size });
        }
        let local = local_put
            .await
            .map_err(|e| WriteError::Unavailable(format!("body writer failed: {e}")))?
            .map_err(|e| WriteError::Unavailable(format!("storing the message body failed: {e}")))?;
        debug_assert_eq!(local.hash, hash, "the store names a body by the hash of its bytes");
        if lone {
            // A site promoted by a forced failover is its own quorum until others
            // rejoin: its log commits on this one site, and so may bodies.
            return Ok(local);
        }
        if forwarding {
            self.bodies_in_flight.lock().unwrap_or_else(|p| p.into_inner()).begin(local.hash);
            let in_flight = Arc::clone(&self.bodies_in_flight);
            let hash = local.hash;
            tokio::spawn(async move {
                let pushed = first_ack.await.is_ok();
                in_flight.lock().unwrap_or_else(|p| p.into_inner()).end(hash, pushed);
            });
            return Ok(local);
        }
        match first_ack.await {
            Ok(()) => Ok(local),
            Err(failures) => Err(WriteError::Unavailable(format!(
                "the message body reached no other site ({failures} of {pushes} pushes failed within {} ms)",
                self.body_push_timeout.as_millis()
            ))),
        }
    }

    /// Wait until this site's own copy of the body `hash` is durable, when
    /// `put_body` left it being written (see there); `Err` when it could not be.
    pub(super) async fn local_body_stored(&self, hash: BlobHash) -> Result<(), String> {
        let pending = self.local_puts.lock().unwrap_or_else(|p| p.into_inner()).get(&hash).cloned();
        match pending {
            Some(mut stored) => match stored.wait_for(Option::is_some).await {
                Ok(result) => result.clone().expect("waited for a result"),
                Err(_) => Err("the body writer ended without a result".into()),
            },
            // Done already (it leaves the list once durable), or never started
            // here: either way the store says whether the body is here.
            None if self.store().blobs().contains(&hash) => Ok(()),
            None => Err(format!("the message body {hash} is not stored at this site")),
        }
    }

    /// Before this site proposes `command` as primary: if its body was stored here
    /// while another site led (so `put_body` did not wait for a peer), wait until a
    /// push has reached a peer, until `deadline`.
    pub(super) async fn confirm_body_pushed(
        &self,
        command: &maildr_store::Command,
        deadline: Instant,
    ) -> Result<(), String> {
        let Some(hash) = command.new_body() else { return Ok(()) };
        loop {
            match self.bodies_in_flight.lock().unwrap_or_else(|p| p.into_inner()).state(&hash) {
                None => return Ok(()),
                Some(PushState::Failed) => return Err(format!("the message body {hash} reached no other site")),
                Some(PushState::InFlight) => {}
            }
            if Instant::now() >= deadline {
                return Err(format!("the message body {hash} reached no other site in time"));
            }
            tokio::time::sleep(BODY_ARRIVAL_POLL).await;
        }
    }

    /// The primary's rule for forwarded writes (see the module documentation): wait
    /// until this site holds the body `hash`, first for the push under way (up to
    /// `arrival`), then fetching it from peers ([`Replicated::ensure_bodies`], up to
    /// the body push timeout). `Err`: the entry must not be proposed.
    pub(super) async fn await_entry_body(&self, hash: BlobHash, arrival: Duration) -> Result<(), String> {
        let started = Instant::now();
        while !self.store().blobs().contains(&hash) {
            if started.elapsed() >= arrival {
                return self.ensure_bodies(&[hash], self.body_push_timeout).await.map_err(|e| e.to_string());
            }
            tokio::time::sleep(BODY_ARRIVAL_POLL).await;
        }
        Ok(())
    }

    /// Make sure the bodies are here, fetching missing ones from peers; gives up
    /// after `wait` and says which are still missing.
    pub async fn ensure_bodies(&self, hashes: &[BlobHash], wait: Duration) -> Result<(), WriteError> {
        let deadline = Instant::now() + wait;
        for hash in hashes {
            if self.store().blobs().contains(hash) {
                continue;
            }
            loop {
                if self.fetch_body(hash, deadline.saturating_duration_since(Instant::now())).await.is_ok() {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(WriteError::Unavailable(format!("message body {hash} is not on this site yet")));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Fetch one body from whichever peer has it, verify and store it.
    async fn fetch_body(&self, hash: &BlobHash, timeout: Duration) -> Result<(), String> {
        let mut reasons = Vec::new();
        let mut peers: Vec<_> = self.directory.all().cloned().collect();
        // Data sites hold every body; ask them first.
        peers.sort_by_key(|p| self.members.iter().find(|m| m.node_id == p.node_id).map(|m| m.role != SiteRole::Data));
        for peer in peers {
            match fetch_from(&peer, hash, timeout).await {
                Ok(Some(bytes)) => {
                    // Checked before anything is written: a peer's wrong bytes never
                    // reach the disk, under their own hash or any other.
                    let store = self.store();
                    let want = *hash;
                    let writing = self.bodies_being_written.begin(want);
                    let stored = tokio::task::spawn_blocking(move || {
                        let _writing = writing;
                        if maildr_store::blob::hash_body(&bytes) != want {
                            return Ok(None);
                        }
                        store.blobs().put(&bytes).map(Some)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                    if stored.is_none() {
                        reasons.push(format!("{} sent a body that does not match its hash; not stored", peer.site));
                        continue;
                    }
                    self.state_machine.body_arrived(hash);
                    self.metrics.lock().unwrap_or_else(|p| p.into_inner()).counters.bodies_fetched += 1;
                    return Ok(());
                }
                Ok(None) => reasons.push(format!("{} does not have it", peer.site)),
                Err(e) => reasons.push(e.to_string()),
            }
        }
        Err(format!("body {hash}: {}", reasons.join("; ")))
    }

    pub(super) async fn serve_body(&self, rpc: BodyRpc) -> BodyReply {
        match rpc {
            BodyRpc::Put { hash, offset, last, bytes } => {
                BodyReply::Put(self.receive_body(hash, offset, last, bytes).await)
            }
            BodyRpc::Get { hash, offset } => BodyReply::Get(self.body_piece(hash, offset).await),
            BodyRpc::Holds(hashes) => BodyReply::Holds(self.holds_bodies(hashes).await),
        }
    }

    async fn body_piece(&self, hash: BlobHash, offset: u64) -> Option<BodyPiece> {
        let store = self.store();
        tokio::task::spawn_blocking(move || {
            let body = store.blobs().get(&hash).ok()?;
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(body.len());
            let end = (start + BODY_CHUNK_BYTES).min(body.len());
            Some(BodyPiece { total_bytes: body.len() as u64, bytes: body[start..end].to_vec() })
        })
        .await
        .ok()
        .flatten()
    }

    async fn receive_body(&self, hash: BlobHash, offset: u64, last: bool, bytes: Vec<u8>) -> Result<(), String> {
        let body = {
            let mut partial = self.partial_bodies.lock().unwrap_or_else(|p| p.into_inner());
            let body = match (offset, partial.remove(&hash)) {
                (0, _) => bytes,
                (offset, Some(mut so_far)) if so_far.len() as u64 == offset => {
                    so_far.extend_from_slice(&bytes);
                    so_far
                }
                _ => return Err(format!("body {hash}: piece at offset {offset} does not follow what was received")),
            };
            if body.len() > 2 * 1024 * 1024 * 1024 {
                return Err("body larger than 2 GiB".into());
            }
            if !last {
                if partial.len() >= PARTIAL_BODIES_MAX {
                    let dropped = *partial.keys().next().expect("not empty");
                    partial.remove(&dropped);
                }
                partial.insert(hash, body);
                return Ok(());
            }
            body
        };
        let store = self.store();
        let writing = self.bodies_being_written.begin(hash);
        let stored = tokio::task::spawn_blocking(move || {
            let _writing = writing;
            let computed = maildr_store::blob::hash_body(&body);
            if computed != hash {
                return Err(format!("body announced as {hash} hashes to {computed}; not stored"));
            }
            store.blobs().put(&body).map_err(|e| e.to_string())
        });
        let stored = stored.await.map_err(|e| e.to_string())??;
        self.state_machine.body_arrived(&stored.hash);
        Ok(())
    }

    /// Which of `hashes` this site holds durably (asked by a witness that wants to
    /// drop the bodies both data sites hold).
    async fn holds_bodies(&self, hashes: Vec<BlobHash>) -> Result<Vec<bool>, String> {
        if hashes.len() > HOLDS_BODIES_MAX {
            return Err(format!("{} hashes in one question; at most {HOLDS_BODIES_MAX}", hashes.len()));
        }
        let store = self.store();
        let held = tokio::task::spawn_blocking(move || store.blobs().held_durably(&hashes))
            .await
            .map_err(|e| format!("checking bodies: {e}"))?
            .map_err(|e| format!("checking bodies: {e}"))?;
        Ok(held)
    }
}

async fn push_body(peer: &PeerClient, hash: BlobHash, body: &[u8], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut offset = 0usize;
    loop {
        let end = (offset + BODY_CHUNK_BYTES).min(body.len());
        let last = end == body.len();
        let piece = BodyRpc::Put { hash, offset: offset as u64, last, bytes: body[offset..end].to_vec() };
        let request = PeerRequest::Body(piece);
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Pieces go in order, each acknowledged before the next; the receiver
        // assembles them by hash, whichever connection they come on.
        match peer.call(&request, remaining, offset == 0 && last).await.map_err(|e| e.to_string())? {
            PeerResponse::Body(BodyReply::Put(Ok(()))) if last => return Ok(()),
            PeerResponse::Body(BodyReply::Put(Ok(()))) => offset = end,
            PeerResponse::Body(BodyReply::Put(Err(e))) => return Err(format!("{}: {e}", peer.site)),
            other => return Err(format!("{} answered PutBody with {other:?}", peer.site)),
        }
    }
}

async fn fetch_from(peer: &PeerClient, hash: &BlobHash, timeout: Duration) -> Result<Option<Vec<u8>>, PeerCallError> {
    let deadline = Instant::now() + timeout;
    let mut body = Vec::new();
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let request = PeerRequest::Body(BodyRpc::Get { hash: *hash, offset: body.len() as u64 });
        match peer.call(&request, remaining, true).await? {
            PeerResponse::Body(BodyReply::Get(None)) => return Ok(None),
            PeerResponse::Body(BodyReply::Get(Some(BodyPiece { total_bytes, bytes }))) => {
                if bytes.is_empty() && (body.len() as u64) < total_bytes {
                    return Ok(None);
                }
                body.extend_from_slice(&bytes);
                if body.len() as u64 >= total_bytes {
                    return Ok(Some(body));
                }
            }
            _ => return Ok(None),
        }
    }
}

/// Fetch bodies that applied entries refer to but this site lacks.
pub(super) async fn fetch_missing_bodies(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    loop {
        let missing = site.state_machine.missing_bodies();
        let mut failed = false;
        for hash in &missing {
            if *stop.borrow() {
                return;
            }
            if site.store().blobs().contains(hash) {
                site.state_machine.body_arrived(hash);
                continue;
            }
            if let Err(e) = site.fetch_body(hash, Duration::from_secs(10)).await {
                tracing::debug!(error = %e, "fetching a missing body");
                failed = true;
            }
        }
        let pause = if failed { Duration::from_millis(500) } else { Duration::from_secs(5) };
        tokio::select! {
            _ = stop.changed() => return,
            _ = site.state_machine.missing_bodies_added() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use maildr_config::{ClusterMember, ClusterSection, SiteRole};
    use maildr_store::blob::hash_body;

    use crate::raft::transport::{self, ChannelSecurity, PeerListener};
    use crate::raft::wire::{BodyPiece, BodyReply, BodyRpc, PeerRequest, PeerResponse};
    use crate::replicated::{FreshStart, Replicated};
    use crate::WritePathLimits;

    fn member(node_id: u64, site: &str, addr: String) -> ClusterMember {
        ClusterMember { node_id, site: site.into(), role: SiteRole::Data, addr, mail_ip: None }
    }

    /// A peer that authenticates like a member and answers every body request with
    /// `bytes`, whatever was asked for.
    async fn lying_peer(cluster: &ClusterSection, bytes: Vec<u8>) -> std::net::SocketAddr {
        let security = ChannelSecurity::from_config(cluster).unwrap();
        let listener = PeerListener::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok(Some(connection)) = listener.accept().await {
                let (security, bytes) = (security.clone(), bytes.clone());
                tokio::spawn(async move {
                    let Ok(Some((mut stream, _))) = transport::handshake(connection, &security, 2, "sh").await else {
                        return;
                    };
                    while let Ok(Some(request)) = transport::next_request(&mut stream, Duration::from_secs(5)).await {
                        let answer = match request {
                            PeerRequest::Body(BodyRpc::Get { .. }) => {
                                PeerResponse::Body(BodyReply::Get(Some(BodyPiece {
                                    total_bytes: bytes.len() as u64,
                                    bytes: bytes.clone(),
                                })))
                            }
                            _ => PeerResponse::Refused("only bodies here".into()),
                        };
                        if transport::answer(&mut stream, &answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_that_does_not_match_its_hash_is_never_stored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = ClusterSection {
            node_id: 1,
            listen: "127.0.0.1:0".parse().unwrap(),
            secret: Some("0123456789abcdef".into()),
            ..ClusterSection::default()
        };
        let wanted = b"Subject: the body asked for\r\n\r\nhello\r\n".to_vec();
        let sent = b"Subject: another body\r\n\r\nforged\r\n".to_vec();
        let liar = lying_peer(&cluster, sent.clone()).await;
        cluster.members = vec![member(1, "bj", "127.0.0.1:1".into()), member(2, "sh", liar.to_string())];
        let limits = WritePathLimits { batch_commands_max: 16, queue_commands_max: 64, write_timeout_ms: 5_000 };
        let site = Replicated::start(dir.path(), "bj", &cluster, limits, FreshStart::NewCluster).await.unwrap();
        let hash = hash_body(&wanted);
        let refused = site.fetch_body(&hash, Duration::from_secs(2)).await;
        let why = refused.expect_err("a body that does not match its hash was accepted");
        assert!(why.contains("sh sent a body that does not match its hash; not stored"), "{why}");
        let still_missing = site.ensure_bodies(&[hash], Duration::from_millis(300)).await;
        assert!(still_missing.is_err(), "{still_missing:?}");
        // Neither under the name asked for nor under the forged bytes' own.
        assert!(!site.store().blobs().contains(&hash));
        assert!(!site.store().blobs().contains(&hash_body(&sent)));
        site.shutdown().await;
    }
}

/// Bodies stored at a site that forwards their writes, whose pushes have not yet
/// reached a peer (or all failed). Entries end with their pushes; failed ones are
/// kept a little for a write that may still ask, then dropped.
#[derive(Default)]
pub(super) struct BodiesInFlight {
    pushes: std::collections::HashMap<BlobHash, (PushState, Instant)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PushState {
    InFlight,
    Failed,
}

/// How long a failed push is remembered for a write that may still ask about it.
const FAILED_PUSH_KEPT: Duration = Duration::from_secs(60);

impl BodiesInFlight {
    fn begin(&mut self, hash: BlobHash) {
        self.pushes.retain(|_, (state, at)| *state == PushState::InFlight || at.elapsed() < FAILED_PUSH_KEPT);
        self.pushes.insert(hash, (PushState::InFlight, Instant::now()));
    }

    fn end(&mut self, hash: BlobHash, pushed: bool) {
        if pushed {
            self.pushes.remove(&hash);
        } else {
            self.pushes.insert(hash, (PushState::Failed, Instant::now()));
        }
    }

    fn state(&self, hash: &BlobHash) -> Option<PushState> {
        self.pushes.get(hash).map(|(state, _)| *state)
    }
}
