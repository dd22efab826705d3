//! The Raft conversation: openraft's AppendEntries, Vote and InstallSnapshot, carried
//! as openraft defines them.
//!
//! Only openraft's `RaftNetwork` (`raft/network.rs`) sends these and only the
//! dispatcher's Raft route answers them. This module must never carry anything but
//! openraft's own RPCs: bodies and operator requests have their own channels.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{Deserialize, Serialize};

use crate::raft::{NodeId, TypeConfig};

/// A Raft RPC from the primary (or a candidate) to a member.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
}

/// The answer to a [`RaftRpc`], in the variant of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
}
