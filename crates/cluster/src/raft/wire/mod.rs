//! The replication channel's wire format: length-prefixed postcard frames over TCP
//! (see `crate::raft::transport` for the connection itself).
//!
//! Sites talk to each other (and `maildr cluster` talks to a site) with one small
//! request/response protocol: a connection opens with [`PeerRequest::Hello`] carrying
//! the cluster secret, then carries one request at a time, each answered by one
//! response. Three conversations share it, each with its own enum and limits, so one
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
pub use control::{ControlRequest, ControlResponse};
pub use forward::{ForwardError, ForwardedWrite};
pub use frame::{read_frame, write_frame};
pub use raft_rpc::{RaftReply, RaftRpc};

use super::NodeId;

/// One request on the replication channel: the Hello that opens a connection, then
/// one of the channels.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// First request of every connection. `from` is the caller's node id, or `None`
    /// for an operator's command; `to` is the node id the caller means to reach.
    /// A site refuses a connection meant for another node id: after a site lost its
    /// data and came back under a new id, Raft traffic for its old id must not reach
    /// it (its empty log would look like a follower's log going backwards).
    Hello {
        secret: String,
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
    Hello,
    Raft(RaftReply),
    Body(BodyReply),
    Forward(Result<ForwardedWrite, ForwardError>),
    Control(Result<ControlResponse, String>),
    /// The request was refused before it was looked at (bad secret, no Hello first,
    /// a request this site does not serve).
    Refused(String),
}
