//! The replication channel's wire format: length-prefixed postcard frames over TCP.
//!
//! Sites talk to each other (and `maildr cluster` talks to a site) with one small
//! request/response protocol: a connection opens with [`PeerRequest::Hello`] carrying
//! the cluster secret, then carries one request at a time, each answered by one
//! response. Raft RPCs, forwarded writes, message body pushes and fetches and the
//! control requests of `maildr cluster` all share it, so one fault-proxy link between
//! two sites carries everything that crosses between them.
//!
//! A frame is a 4-byte big-endian length and that many bytes of postcard. Frames
//! larger than [`FRAME_MAX_BYTES`] are refused before anything is allocated, so a
//! confused or hostile peer cannot make a site allocate without bound.

use std::io;

use maildr_store::{Applied, Command, CommandError};
use maildr_types::BlobHash;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::apply_delay::ApplyHold;
use super::{NodeId, TypeConfig};
use crate::status::{ForcedFailoverRecord, MailboxDigest, MessageSummary, SiteStatus};

/// Largest frame accepted: a message body of the largest configurable size (1 GiB is
/// refused by the config) is far beyond this, but bodies above it are pushed in
/// [`BODY_CHUNK_BYTES`] pieces.
pub const FRAME_MAX_BYTES: u32 = 64 * 1024 * 1024;

/// Bodies travel in pieces of at most this size.
pub const BODY_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// One request on the replication channel.
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
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A write sent by a site that is not primary to the primary.
    Forward(Command),
    /// Store a piece of a message body. `offset` 0 starts a body; the piece with
    /// `last` set completes it, and the receiver answers only once the whole body is
    /// durable and matches `hash`.
    PutBody {
        hash: BlobHash,
        offset: u64,
        last: bool,
        bytes: Vec<u8>,
    },
    /// Read a piece of a message body held by the receiver.
    GetBody {
        hash: BlobHash,
        offset: u64,
    },
    Control(ControlRequest),
}

/// The answer to one [`PeerRequest`], in the variant of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    Hello,
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    Forward(Result<ForwardedWrite, ForwardError>),
    PutBody(Result<(), String>),
    /// `None`: the receiver does not hold the body.
    GetBody(Option<BodyPiece>),
    Control(Result<ControlResponse, String>),
    /// The request was refused before it was looked at (bad secret, no Hello first,
    /// a request this site does not serve).
    Refused(String),
}

/// A write committed by the primary on behalf of another site.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardedWrite {
    /// Log index of the entry; the forwarding site waits until it has applied it.
    pub log_index: u64,
    pub outcome: Result<Applied, CommandError>,
}

/// Why the primary did not commit a forwarded write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the primary (any more); it names the one it knows.
    NotPrimary { primary: Option<NodeId> },
    /// The primary could not commit in time (no quorum, shutting down).
    Unavailable(String),
}

/// A piece of a message body.
#[derive(Debug, Serialize, Deserialize)]
pub struct BodyPiece {
    pub total_bytes: u64,
    pub bytes: Vec<u8>,
}

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
    /// The messages of one mailbox, for listing what diverges.
    Messages { mailbox: u64 },
    /// Apply a command through the cluster (admin commands of the operator).
    Write(Command),
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
    /// Which of these bodies the receiver holds durably (a witness asks the data
    /// sites before it drops its copies).
    HoldsBodies(Vec<BlobHash>),
}

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
    /// One flag per body asked about, in order: held durably here.
    HeldBodies(Vec<bool>),
}

/// Write one frame.
pub async fn write_frame<T: Serialize>(stream: &mut (impl AsyncWrite + Unpin), value: &T) -> io::Result<()> {
    let bytes = postcard::to_stdvec(value).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|len| *len <= FRAME_MAX_BYTES)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("frame of {} bytes", bytes.len())))?;
    let mut out = Vec::with_capacity(4 + bytes.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&bytes);
    stream.write_all(&out).await?;
    stream.flush().await
}

/// Read one frame; `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<T: DeserializeOwned>(stream: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len);
    if len > FRAME_MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes announced; at most {FRAME_MAX_BYTES} accepted"),
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    stream.read_exact(&mut bytes).await?;
    postcard::from_bytes(&bytes).map(Some).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_frames_are_refused_unread() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let hello = PeerRequest::Hello { secret: "s".repeat(16), from: Some(2), to: Some(1) };
        write_frame(&mut a, &hello).await.unwrap();
        match read_frame::<PeerRequest>(&mut b).await.unwrap() {
            Some(PeerRequest::Hello { secret, from, to }) => {
                assert_eq!((secret.len(), from, to), (16, Some(2), Some(1)))
            }
            other => panic!("{other:?}"),
        }
        a.write_all(&(FRAME_MAX_BYTES + 1).to_be_bytes()).await.unwrap();
        let err = read_frame::<PeerRequest>(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        drop(a);
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(read_frame::<PeerRequest>(&mut b).await.is_err(), "garbage is an error, not a panic");
        drop(a);
        assert!(read_frame::<PeerRequest>(&mut b).await.unwrap().is_none(), "clean close between frames");
    }
}
