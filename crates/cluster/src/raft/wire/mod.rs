//! The replication channel's wire format: length-prefixed postcard frames over TCP
//! (see `crate::raft::transport` for the connection itself).
//!
//! Sites talk to each other (and `maildr cluster` talks to a site) with one small
//! request/response protocol: a connection opens with the site's
//! [`PeerResponse::Challenge`] and the caller's [`PeerRequest::Hello`] answering it,
//! then carries one request at a time, each answered by one response. Three conversations share it, each with its own enum and limits, so one
//! fault-proxy link between two sites carries everything that crosses between them:
//! - [`RaftRpc`] (`raft_rpc.rs`): openraft's AppendEntries, Vote, InstallSnapshot;
//! - [`BodyRpc`] (`body.rs`): message body pieces and the witness's `Holds` question;
//! - [`ControlRequest`] (`control.rs`): operator and site-to-site control requests;
//!
//! plus `Forward` (`forward.rs`), the write path's own request to the primary.
//!
//! All sites run the same version; the format may change between versions. This
//! module must never be named outside this crate: other crates reach a site through
//! `crate::ops::ControlClient`.

mod body;
mod control;
mod forward;
mod frame;
mod raft_rpc;

use maildr_store::Command;
use serde::{Deserialize, Serialize};

pub use body::{BodyPiece, BodyReply, BodyRpc, BODY_CHUNK_BYTES, HOLDS_BODIES_MAX};
pub use control::{check_store_body, ControlRequest, ControlResponse, QUEUE_LIST_MAX};
pub use forward::{ForwardError, ForwardedWrite};
pub use frame::{read_frame, read_frame_within, write_frame};
pub use raft_rpc::{RaftReply, RaftRpc};

use super::NodeId;

/// Length of the random challenge that opens a connection.
pub const CHALLENGE_BYTES: usize = 32;

/// One request on the replication channel: the Hello that opens a connection, then
/// one of the channels.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// First request of every connection, answering the site's challenge. `from` is
    /// the caller's node id, or `None` for an operator's command; `to` is the node id
    /// the caller means to reach; `proof` is the HMAC-SHA256 of the challenge, `from`
    /// and `to` under the cluster secret (when the cluster has one).
    /// A site refuses a connection meant for another node id: after a site lost its
    /// data and came back under a new id, Raft traffic for its old id must not reach
    /// it (its empty log would look like a follower's log going backwards).
    Hello {
        proof: Option<Vec<u8>>,
        from: Option<NodeId>,
        to: Option<NodeId>,
    },
    Raft(RaftRpc),
    Body(BodyRpc),
    /// A write sent by a site that is not primary to the primary.
    Forward(Command),
    Control(ControlRequest),
}

/// The answer to one [`PeerRequest`], in the variant of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The first frame of every connection, from the site: [`CHALLENGE_BYTES`] random
    /// bytes the caller's Hello must prove the secret over.
    Challenge(Vec<u8>),
    Hello,
    Raft(RaftReply),
    Body(BodyReply),
    Forward(Result<ForwardedWrite, ForwardError>),
    Control(Result<ControlResponse, String>),
    /// The request was refused before it was looked at (wrong proof, certificate or node id, no Hello first,
    /// a request this site does not serve).
    Refused(String),
}
