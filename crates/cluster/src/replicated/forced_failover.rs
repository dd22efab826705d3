//! Forced failover to a standby (or a held lagged site), and the refusals that keep
//! the old cluster from coming back after one.
//!
//! When quorum is gone for good (both cities lost), the operator may promote the
//! standby (`maildr cluster failover --force`), accepting that entries the lost
//! primary committed after the standby's last one are lost. openraft 0.9 changes
//! membership only through a quorum, so the standby rewrites its own Raft state, as
//! etcd's `--force-new-cluster` does. The running `Raft` owns the log store, so the
//! rewrite happens between two runs of the site:
//! 1. `ControlRequest::ForceFailover` checks that this is a standby that has not heard
//!    from a primary for [`PRIMARY_SILENCE_ELECTION_TIMEOUTS`] election timeouts (the
//!    last contact is kept in [`PRIMARY_CONTACT_FILE`] across restarts) and that no
//!    member it can reach leads or follows a primary,
//!    stops taking Raft traffic, writes [`FORCE_FAILOVER_FILE`] into the data
//!    directory, answers, and asks its owner to restart it
//!    ([`Replicated::restart_requested`]; `maildr serve` re-executes itself, keeping
//!    its pid).
//! 2. [`Replicated::start`] finds the file and, before `Raft::new`, appends a
//!    membership entry whose only voter is this site under a new term, with a vote
//!    for itself in that term ([`crate::raft::LogStore::force_single_voter`]). openraft
//!    takes the last membership entry in the log as effective even if uncommitted, and
//!    a lone voter elects itself at its first tick; its first entry as leader commits
//!    everything the standby's log holds. [`PROMOTED_FILE`] then records the promotion
//!    for good: from now on the site acts as a data site ([`Replicated::effective_role`])
//!    and serves mail, whatever its configured role.
//! 3. Once it leads, it commits a `forced_failover` event naming the operator and the
//!    last index it had.
//!
//! The old sites still count themselves (and each other) as voters of the old
//! membership. A promoted site refuses Raft traffic from any node outside its own
//! membership, so an old site cannot pull it back or overwrite its log. The old sites
//! must not be restarted with their data: they could form the old quorum again. Wipe
//! each one's data directory, give it a new `node_id`, start it and run
//! `maildr cluster rejoin` against the promoted site.
//!
//! This module also keeps what the standby last heard from a primary (the evidence
//! that the quorum is gone). It must never promote a site that heard from a primary
//! within [`PRIMARY_SILENCE_ELECTION_TIMEOUTS`] election timeouts, nor while a member
//! it reaches has a primary, nor without the operator's name, nor let Raft traffic
//! from outside the new membership in.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use maildr_config::{ClusterMember, SiteRole};
use maildr_store::{Command, ControlEventKind, Store};
use tokio::sync::watch;

use super::{Replicated, StartError};
use crate::raft::network::PeerDirectory;
use crate::raft::wire::{ControlRequest, ControlResponse, PeerRequest, PeerResponse};
use crate::raft::{self, NodeId, StateMachineStore};
use crate::record_file;
use crate::status::{ForcedFailoverRecord, PrimaryContact};

/// Written into the data directory when a forced failover is accepted, removed once
/// [`Replicated::start`] has rewritten the Raft state.
pub const FORCE_FAILOVER_FILE: &str = "force-failover.json";

/// Written into the data directory once a standby has been promoted; it stays.
pub const PROMOTED_FILE: &str = "promoted.json";

/// A standby refuses a forced failover while it heard from a primary within this
/// many (longest) election timeouts: the quorum is then alive, and a planned
/// switchover is the tool.
pub const PRIMARY_SILENCE_ELECTION_TIMEOUTS: u64 = 2;

impl Replicated {
    /// What this site last heard from a primary, aged to now.
    pub(super) fn primary_contact(&self) -> Option<PrimaryContact> {
        let contact = self.primary_contact.lock().unwrap_or_else(|p| p.into_inner()).clone();
        contact.map(|(at, c)| PrimaryContact {
            heard_ms_ago: u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX),
            ..c
        })
    }

    /// Note an AppendEntries accepted from primary `primary`. On a site a forced
    /// failover may promote (standby, lagged), the contact is also saved in
    /// [`PRIMARY_CONTACT_FILE`] at most every [`PRIMARY_CONTACT_SAVE_EVERY`], so a
    /// restart does not forget that the primary was alive.
    pub(super) fn note_primary_contact(&self, primary: Option<NodeId>, term: u64, committed: Option<u64>) {
        let Some(primary) = primary else { return };
        let last_log_index_then = self.raft.metrics().borrow().last_log_index;
        let contact =
            PrimaryContact { primary, term, heard_ms_ago: 0, primary_committed_index: committed, last_log_index_then };
        *self.primary_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), contact.clone()));
        if !self.configured_role.is_learner() {
            return;
        }
        {
            let mut saved = self.primary_contact_saved.lock().unwrap_or_else(|p| p.into_inner());
            if saved.is_some_and(|at| at.elapsed() < PRIMARY_CONTACT_SAVE_EVERY) {
                return;
            }
            *saved = Some(Instant::now());
        }
        let path = self.data_dir.join(PRIMARY_CONTACT_FILE);
        let record = SavedContact { at_ms: record_file::now_ms(), contact };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = record_file::write(&path, &record) {
                tracing::warn!(path = %path.display(), error = %e, "saving the last contact with the primary");
            }
        });
    }

    /// Why Raft traffic led or requested by `from` is refused, if it is: during a
    /// forced failover, and afterwards from any node outside the new membership (an
    /// old site must not pull the promoted site back into the old cluster).
    pub(super) fn refuse_raft_from(&self, from: Option<NodeId>) -> Option<String> {
        if self.promoting.load(Ordering::SeqCst) {
            return Some(format!("{} is being promoted by a forced failover", self.site));
        }
        self.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).as_ref()?;
        let member =
            from.is_some_and(|id| self.raft.metrics().borrow().membership_config.membership().get_node(&id).is_some());
        (!member).then(|| {
            format!(
                "{} was promoted by a forced failover and node {from:?} is not in its membership: wipe that site's \
                 data, give it a new node_id and run `maildr cluster rejoin`",
                self.site
            )
        })
    }

    /// Accept a forced failover (see the module documentation): check, stop Raft
    /// traffic, write the marker file. The caller answers, then requests the restart.
    pub(super) async fn force_failover(&self, by: String) -> Result<ForcedFailoverRecord, String> {
        let by = by.trim().to_string();
        if by.is_empty() {
            return Err("a forced failover names the operator who forces it (--by)".into());
        }
        if let Some(done) = self.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            return Err(format!("{} was already promoted by a forced failover ({})", self.site, done.event_detail()));
        }
        let held = self.apply_delay.as_ref().and_then(|d| d.current_hold());
        self.refuse_promotion_of_role(held.is_some())?;
        let m = self.raft.metrics().borrow().clone();
        if m.membership_config.membership().voter_ids().any(|v| v == self.me) {
            return Err(format!("{} is already a voter", self.site));
        }
        let Some(last_log_index) = m.last_log_index else {
            return Err(format!("{} holds no Raft log: it never received the cluster's state", self.site));
        };
        // A held lagged site keeps what it applied; the rest of its log goes.
        let last_log_index = match &held {
            Some(_) => m.last_applied.map_or(0, |l| l.index),
            None => last_log_index,
        };
        let contact = self.primary_contact();
        let silence_ms = PRIMARY_SILENCE_ELECTION_TIMEOUTS * self.election_timeout_max_ms;
        if let Some(c) = contact.as_ref().filter(|c| c.heard_ms_ago < silence_ms) {
            return Err(format!(
                "{} heard from the primary (node {}) {} ms ago: the quorum is alive; use `maildr cluster switchover`",
                self.site, c.primary, c.heard_ms_ago
            ));
        }
        if let Some(reason) = self.primary_seen_by_a_reachable_member().await {
            return Err(reason);
        }
        if self.promoting.swap(true, Ordering::SeqCst) {
            return Err(format!("a forced failover of {} is already under way", self.site));
        }
        let record = ForcedFailoverRecord {
            by,
            at_ms: record_file::now_ms(),
            last_log_index,
            // Provisional: the restart records the log's own last entry (see `promote`);
            // openraft's metrics give the last index but not its term.
            last_log_term: m.last_applied.filter(|l| l.index == last_log_index).map_or(0, |l| l.leader_id.term),
            primary_committed_index: contact.and_then(|c| c.primary_committed_index),
            event_recorded: false,
        };
        let path = self.data_dir.join(FORCE_FAILOVER_FILE);
        let written = {
            let (path, record) = (path.clone(), record.clone());
            tokio::task::spawn_blocking(move || write_record(&path, &record)).await
        };
        match written {
            Ok(Ok(())) => {
                tracing::warn!(site = %self.site, by = %record.by, last_log_index, "forced failover accepted; restarting");
                Ok(record)
            }
            Ok(Err(e)) => {
                self.promoting.store(false, Ordering::SeqCst);
                Err(e.to_string())
            }
            Err(e) => {
                self.promoting.store(false, Ordering::SeqCst);
                Err(format!("writing {}: {e}", path.display()))
            }
        }
    }

    /// Ask every member this site can reach: why a promotion is refused if one
    /// leads or follows a primary (this site may only be cut off from a healthy
    /// quorum). Members that do not answer within [`FORCE_FAILOVER_ASK_TIMEOUT`]
    /// are taken as lost.
    async fn primary_seen_by_a_reachable_member(&self) -> Option<String> {
        for peer in self.directory.all() {
            let request = PeerRequest::Control(ControlRequest::Status);
            let Ok(PeerResponse::Control(Ok(ControlResponse::Status(status)))) =
                peer.call(&request, FORCE_FAILOVER_ASK_TIMEOUT, true).await
            else {
                continue;
            };
            if let Some(primary) = status.primary_seen() {
                return Some(format!(
                    "{} answers that node {primary} is the primary (term {}): the quorum is alive; use `maildr \
                     cluster switchover`",
                    peer.site, status.term
                ));
            }
        }
        None
    }

    /// Refused unless this is a standby, or a lagged site that is `held`.
    fn refuse_promotion_of_role(&self, held: bool) -> Result<(), String> {
        match (self.configured_role, held) {
            (SiteRole::Standby, _) | (SiteRole::Lagged, true) => Ok(()),
            (SiteRole::Lagged, false) => Err(format!(
                "{} is a lagged site that is not held: hold it first (`maildr cluster hold-apply`), so that the \
                     state it is promoted with is the one you chose",
                self.site
            )),
            (role, _) => Err(format!(
                "{} is a {} site; a forced failover promotes only a standby or a held lagged site (with a \
                     quorum, use `maildr cluster switchover`)",
                self.site,
                role.name()
            )),
        }
    }
}

/// Where a standby or lagged site keeps its last contact with a primary.
pub const PRIMARY_CONTACT_FILE: &str = "primary-contact.json";

/// The saved contact is refreshed at most this often; a contact read back after a
/// restart counts as this much more recent than saved.
pub const PRIMARY_CONTACT_SAVE_EVERY: Duration = Duration::from_secs(1);

/// How long each member has to answer a standby's check before a forced failover.
const FORCE_FAILOVER_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The last contact with a primary, as saved (wall-clock time in ms).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SavedContact {
    at_ms: i64,
    contact: PrimaryContact,
}

/// The saved last contact with a primary, as an instant of this process (at most
/// [`PRIMARY_CONTACT_SAVE_EVERY`] later than saved, to be on the safe side).
pub(super) fn read_primary_contact(data_dir: &Path) -> Option<(Instant, PrimaryContact)> {
    let path = data_dir.join(PRIMARY_CONTACT_FILE);
    let saved: SavedContact = match record_file::read(&path) {
        Ok(saved) => saved?,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the saved contact with the primary is unreadable");
            return None;
        }
    };
    let saved_ms_ago = u64::try_from(record_file::now_ms().saturating_sub(saved.at_ms)).unwrap_or(0);
    let age = Duration::from_millis(saved_ms_ago).saturating_sub(PRIMARY_CONTACT_SAVE_EVERY);
    let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
    Some((at, saved.contact))
}

/// Read a forced-failover record (`None` when the file does not exist).
pub(super) fn read_record(path: &Path) -> Result<Option<ForcedFailoverRecord>, StartError> {
    record_file::read(path).map_err(|e| StartError::ForcedFailover { path: path.into(), detail: e.to_string() })
}

/// Write a forced-failover record durably.
fn write_record(path: &Path, record: &ForcedFailoverRecord) -> Result<(), StartError> {
    record_file::write(path, record)
        .map_err(|e| StartError::ForcedFailover { path: path.into(), detail: e.to_string() })
}

/// Carry out the accepted forced failover `record` found at start (see [`promote`]).
/// A held lagged site is promoted with the state it applied, not with the log it
/// received since (which may hold the corruption it was held for).
pub(super) async fn promote_pending(
    data_dir: &Path,
    member: &ClusterMember,
    log_store: &raft::LogStore,
    state_machine: &StateMachineStore,
    record: ForcedFailoverRecord,
) -> Result<ForcedFailoverRecord, StartError> {
    let keep_through = match member.role {
        SiteRole::Lagged => state_machine.applied_log_id()?,
        _ => None,
    };
    promote(data_dir, member.node_id, member, log_store, record, keep_through).await
}

/// Carry out an accepted forced failover before Raft starts: make this site the only
/// voter in its log, record the promotion in [`PROMOTED_FILE`], then remove the
/// marker. A crash anywhere in between repeats the steps on the next start (the
/// rewrite is idempotent).
async fn promote(
    data_dir: &Path,
    me: NodeId,
    member: &ClusterMember,
    log_store: &raft::LogStore,
    mut record: ForcedFailoverRecord,
    keep_through: Option<openraft::LogId<NodeId>>,
) -> Result<ForcedFailoverRecord, StartError> {
    let node = Replicated::site_node(member);
    let rewritten = {
        let log_store = log_store.clone();
        tokio::task::spawn_blocking(move || log_store.force_single_voter(me, node, keep_through))
            .await
            .map_err(|e| StartError::Raft(format!("rewriting the Raft log for the forced failover: {e}")))??
    };
    record.last_log_index = rewritten.previous_last.index;
    record.last_log_term = rewritten.previous_last.leader_id.term;
    record.event_recorded = false;
    let (promoted, marker) = (data_dir.join(PROMOTED_FILE), data_dir.join(FORCE_FAILOVER_FILE));
    write_record(&promoted, &record)?;
    std::fs::remove_file(&marker)
        .and_then(|()| record_file::sync_parent(&marker))
        .map_err(|e| StartError::ForcedFailover { path: marker.clone(), detail: format!("removing it: {e}") })?;
    tracing::warn!(
        site = %member.site,
        by = %record.by,
        last_log_index = record.last_log_index,
        membership = %rewritten.membership,
        "forced failover: this site is now the only voter of its cluster"
    );
    Ok(record)
}

/// On a promoted site: once it leads, commit the `forced_failover` event (once; the
/// flag in [`PROMOTED_FILE`] and a look at the event log keep it single).
pub(super) async fn record_forced_failover(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    let mut metrics = site.raft.metrics();
    loop {
        let record = site.forced_failover.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(mut record) = record.filter(|r| !r.event_recorded) else { return };
        if site.is_primary() {
            let detail = record.event_detail();
            let already = already_recorded(&site.store(), &site.site, &detail);
            let written = match already {
                true => Ok(()),
                false => {
                    let command = Command::RecordEvent {
                        kind: ControlEventKind::ForcedFailover,
                        site: Some(site.site.clone()),
                        detail,
                        at_ms: record.at_ms,
                    };
                    site.write(command).await.map(drop).map_err(|e| e.to_string())
                }
            };
            match written {
                Ok(()) => {
                    record.event_recorded = true;
                    let path = site.data_dir.join(PROMOTED_FILE);
                    if let Err(e) = write_record(&path, &record) {
                        tracing::warn!(error = %e, "noting that the forced_failover event is recorded");
                    }
                    *site.forced_failover.lock().unwrap_or_else(|p| p.into_inner()) = Some(record);
                    tracing::info!(site = %site.site, "forced_failover event committed");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "recording the forced_failover event; will retry"),
            }
        }
        tokio::select! {
            _ = stop.changed() => return,
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Whether the event log already holds this site's forced_failover event with `detail`.
fn already_recorded(store: &Store, site: &str, detail: &str) -> bool {
    const PAGE: usize = 1_000;
    let mut after = 0;
    loop {
        let Ok(events) = store.events(after, PAGE) else { return false };
        if events.iter().any(|e| {
            e.kind == ControlEventKind::ForcedFailover && e.site.as_deref() == Some(site) && e.detail == detail
        }) {
            return true;
        }
        match events.last() {
            Some(last) if events.len() == PAGE => after = last.id,
            _ => return false,
        }
    }
}

/// A site that comes back with its old log must not rejoin a cluster that a forced
/// failover replaced (it and the other old sites could form the old quorum again):
/// ask the configured standbys, the only sites a forced failover promotes.
pub(super) async fn refuse_after_forced_failover(
    data_dir: &Path,
    directory: &PeerDirectory,
    members: &[ClusterMember],
    me: NodeId,
) -> Result<(), StartError> {
    let fenced_path = data_dir.join(FENCED_FILE);
    match record_file::read::<Fenced>(&fenced_path) {
        Ok(Some(fenced)) => {
            return Err(StartError::SupersededByForcedFailover {
                node_id: me,
                peer: fenced.peer,
                detail: fenced.detail,
            })
        }
        Ok(None) => {}
        Err(e) => {
            return Err(StartError::ForcedFailover { path: fenced_path, detail: e.to_string() });
        }
    }
    let superseded = promoted_without(directory, members, me).await;
    if let Err(StartError::SupersededByForcedFailover { peer, detail, .. }) = &superseded {
        let fenced = Fenced { at_ms: record_file::now_ms(), peer: peer.clone(), detail: detail.clone() };
        record_file::write(&fenced_path, &fenced)
            .map_err(|e| StartError::ForcedFailover { path: fenced_path, detail: e.to_string() })?;
    }
    superseded
}

/// Written into an old site's data directory once it learned that a standby was
/// promoted without it; from then on it refuses to start, reachable or not, until
/// an operator wipes it and rejoins it under a new node id.
pub const FENCED_FILE: &str = "fenced.json";

/// How often a running site asks the standbys whether one was promoted without it.
pub const FENCE_CHECK_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Fenced {
    at_ms: i64,
    /// The promoted site that told.
    peer: String,
    detail: String,
}

/// On a running site that was not promoted: ask the standbys every
/// [`FENCE_CHECK_EVERY`] whether one was promoted by a forced failover without this
/// site (it was cut off, or came back while cut off). If so, record [`FENCED_FILE`]
/// and restart, which then refuses: the site stops serving mail and DNS, so two
/// clusters do not both take mail once the network heals.
pub(super) async fn fence_if_superseded(site: Arc<Replicated>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(FENCE_CHECK_EVERY) => {}
        }
        let checked = refuse_after_forced_failover(&site.data_dir, &site.directory, &site.members, site.me).await;
        if let Err(e) = checked {
            tracing::error!(site = %site.site, error = %e, "fenced: this site stops serving mail and DNS");
            let _ = site.restart.send_replace(true);
            return;
        }
    }
}

/// Whether a standby reports a forced failover whose membership leaves `me` out.
async fn promoted_without(directory: &PeerDirectory, members: &[ClusterMember], me: NodeId) -> Result<(), StartError> {
    let standbys = members.iter().filter(|m| m.role.is_learner() && m.node_id != me);
    for peer in standbys.filter_map(|m| directory.get(m.node_id)) {
        let request = PeerRequest::Control(ControlRequest::Status);
        if let Ok(PeerResponse::Control(Ok(ControlResponse::Status(status)))) =
            peer.call(&request, Duration::from_secs(2), true).await
        {
            if let Some(record) = status.forced_failover {
                if !status.voters.contains(&me) && !status.learners.contains(&me) {
                    return Err(StartError::SupersededByForcedFailover {
                        node_id: me,
                        peer: peer.site.clone(),
                        detail: record.event_detail(),
                    });
                }
            }
        }
    }
    Ok(())
}
