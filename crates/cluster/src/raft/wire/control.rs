//! The control conversation: the operator's requests (`maildr cluster`, the admin API,
//! through `crate::ops::ControlClient`) and the few sites ask each other (status,
//! observations, the hand-over's `BecomePrimary`).
//!
//! Every request here is answered by the receiving site's own checks; a site never
//! trusts the caller to have checked. This module must never carry Raft RPCs or body
//! bytes, which have their own channels and limits.

use maildr_store::{Applied, Command, CommandError};
use serde::{Deserialize, Serialize};

use crate::raft::apply_delay::ApplyHold;
use crate::raft::NodeId;
use crate::status::{ForcedFailoverRecord, MailboxDigest, MessageSummary, SiteStatus};

/// Requests of `maildr cluster` (and of sites asking each other for status).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlRequest {
    /// Bootstrap the cluster with every configured member; harmless when it is
    /// already initialised.
    Init,
    /// This site's own view: role, term, leader, indexes, peers.
    Status,
    /// Make the receiver primary: refused unless it is a data site that has
    /// everything the current primary has. Sent by a primary that has gone quiet
    /// to hand over its lead.
    BecomePrimary,
    /// To the primary: hand the lead to data site `to` (planned switchover).
    HandOver { to: NodeId },
    /// Per-mailbox digests at one applied index, once the site has applied at least
    /// `applied_at_least` (bounded wait).
    Digests { applied_at_least: u64, wait_ms: u64 },
    /// Per-mailbox digests at exactly log index `index`, which the site has not
    /// applied yet: its apply stops there to read them (bounded wait). What
    /// `verify` asks when writes never let every site stand at one index.
    DigestsAt { index: u64, wait_ms: u64 },
    /// The messages of one mailbox, for listing what diverges.
    Messages { mailbox: u64 },
    /// Apply a command through the cluster (admin commands of the operator).
    Write(Command),
    /// From a voter about to campaign: would the receiver vote for it, judging only
    /// whether a primary still leads (a pre-vote). Granted unless the receiver leads
    /// or heard from a primary within the shortest election timeout. Changes nothing
    /// on the receiver.
    PreVote { candidate: NodeId },
    /// On the primary: make the site that lost its data, now running empty under
    /// the new node id, a learner, wait until it has caught up, then let it replace
    /// its old node id among the voters.
    Rejoin { node_id: NodeId, site: String, addr: String },
    /// What this site's control plane observes of the data sites (health probes),
    /// as the JSON its control plane produces; empty when it runs none.
    Observations,
    /// To a standby, when quorum is gone: make it the only voter of a new cluster
    /// (a forced failover, recorded as done `by` the named operator). Refused unless
    /// the receiver is a standby that has not heard from a primary for two election
    /// timeouts. The site answers, then restarts itself to rewrite its Raft state.
    ForceFailover { by: String },
    /// To a lagged site: stop applying entries, durably, until released (recorded
    /// as asked `by` the named operator). Holding a held site keeps the first hold.
    HoldApply { by: String },
    /// To a lagged site: resume applying.
    ReleaseApply,
    /// Store a message body through the write path (here and pushed to the peers,
    /// as for a delivery) before a `Write` that refers to it: restores write
    /// messages back this way. At most [`STORE_BODY_BYTES_MAX`].
    StoreBody(Vec<u8>),
    /// The outbound queue as this site's state holds it (at most
    /// [`QUEUE_LIST_MAX`] messages, by queue id).
    Queue,
}

/// Most queued messages one `Queue` answer lists.
pub const QUEUE_LIST_MAX: usize = 10_000;

/// Largest body one `StoreBody` carries (under the frame limit with room to spare).
pub const STORE_BODY_BYTES_MAX: usize = 48 * 1024 * 1024;

/// Whether a `StoreBody` of `len` bytes may be stored; the refusal says why.
/// Checked before anything is written.
pub fn check_store_body(len: usize) -> Result<(), String> {
    if len > STORE_BODY_BYTES_MAX {
        return Err(format!("a body of {len} bytes is over the {STORE_BODY_BYTES_MAX} bytes one request carries"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_at_the_limit_is_stored_and_one_byte_more_is_refused_with_the_sizes() {
        assert_eq!(check_store_body(STORE_BODY_BYTES_MAX), Ok(()));
        let refused = check_store_body(STORE_BODY_BYTES_MAX + 1).unwrap_err();
        assert!(refused.contains(&(STORE_BODY_BYTES_MAX + 1).to_string()), "{refused}");
        assert!(refused.contains(&STORE_BODY_BYTES_MAX.to_string()), "{refused}");
    }
}

/// The answer to a [`ControlRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControlResponse {
    Initialized {
        already: bool,
    },
    Status(Box<SiteStatus>),
    /// The receiver is primary now; writes were unavailable for this long.
    BecamePrimary {
        unavailable_ms: u64,
        term: u64,
    },
    Digests {
        applied_index: u64,
        mailboxes: Vec<MailboxDigest>,
    },
    Messages(Vec<MessageSummary>),
    Written(Result<Applied, CommandError>),
    /// The answer to a pre-vote: granted, or why not.
    PreVote(Result<(), String>),
    Rejoined {
        replaced: Option<NodeId>,
        voters: Vec<NodeId>,
    },
    /// JSON from the site's control plane (see `ControlRequest::Observations`).
    Observations(Vec<u8>),
    /// The standby accepted the forced failover and is restarting to carry it out.
    ForcedFailover(ForcedFailoverRecord),
    /// The lagged site holds (since this hold).
    ApplyHeld(ApplyHold),
    /// The lagged site applies again; the hold it lifted, if it was held.
    ApplyReleased(Option<ApplyHold>),
    /// The body is stored on this site and pushed to its peers (see
    /// `Replicated::put_body` for when a peer's copy is awaited).
    BodyStored(maildr_types::BlobRef),
    /// The outbound queue (`ControlRequest::Queue`): the messages listed, and how
    /// many the queue holds in all.
    Queue {
        messages: Vec<maildr_store::QueuedMessage>,
        total: u64,
        /// How messages and recipients have left the queue.
        left: maildr_store::QueueTotals,
    },
    /// The answer to every control request of a site that has no Raft state yet
    /// and is still checking, before it starts, that no member counts its node id
    /// (to `Status`: it counts no one as a member).
    Fresh,
}
