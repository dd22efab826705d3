//! Entry points for fuzzing the replication channel's frame decoding: the bytes a
//! peer sends on one connection, read with the limits a site uses, both as a site
//! reads them (a Hello within [`HANDSHAKE_FRAME_MAX_BYTES`], then requests within
//! the frame limit) and as a caller reads them (the challenge and the answer to its
//! Hello within the handshake limit, then responses).
//! Used by `fuzz/` (cargo-fuzz) and by ordinary tests; never by the server.
//!
//! It lives in this crate because the wire format must never be named outside it.
//! Every decoded value must be written again as a frame within the frame limit,
//! and that frame must read back and write to the same bytes: a value one site
//! accepts is one it can forward and store (the Raft log holds entries in the same
//! encoding).

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use maildr_store::{Command, CommandError};
use maildr_types::{BlobHash, BlobRef, Domain, EmailAddress, SystemFlags, UnixSeconds};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::{CommittedLeaderId, EntryPayload, LogId, Membership, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::raft::transport::HANDSHAKE_FRAME_MAX_BYTES;
use crate::raft::wire::{
    read_frame, read_frame_within, write_frame, BodyPiece, BodyReply, BodyRpc, ControlRequest, ControlResponse,
    ForwardError, PeerRequest, PeerResponse, RaftReply, RaftRpc,
};
use crate::raft::{Entry, SiteNode};

/// The bytes a peer sends on one connection, read as a site reads them and as a
/// caller reads them. Panics when a decoded value does not round-trip.
pub fn frames(bytes: &[u8]) {
    // A site reads the caller's Hello under the handshake limit, then requests.
    read_connection::<PeerRequest>(bytes, 1);
    // A caller reads the challenge and the answer to its Hello under it, then responses.
    read_connection::<PeerResponse>(bytes, 2);
}

/// Connections as peers send them, for seeding the fuzzer and the corpus test:
/// a caller's Hello and requests of every channel, and a site's challenge and
/// responses, each as one stream of frames and each frame alone.
pub fn seeds() -> Vec<Vec<u8>> {
    let requests = sample_requests();
    let responses = sample_responses();
    let mut seeds = vec![frame_stream(&requests), frame_stream(&responses)];
    seeds.extend(requests.iter().map(|r| frame_stream(std::slice::from_ref(r))));
    seeds.extend(responses.iter().map(|r| frame_stream(std::slice::from_ref(r))));
    seeds
}

fn read_connection<T: Serialize + DeserializeOwned>(mut bytes: &[u8], handshake_frames: usize) {
    for frame in 0.. {
        let read = if frame < handshake_frames {
            now(read_frame_within::<T>(&mut bytes, HANDSHAKE_FRAME_MAX_BYTES))
        } else {
            now(read_frame::<T>(&mut bytes))
        };
        // A site closes the connection on a frame it cannot read.
        let Ok(Some(value)) = read else { return };
        round_trip(&value);
    }
}

/// A decoded value is written as a frame, read back, and written to the same bytes.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) {
    let mut written = Vec::new();
    if let Err(e) = now(write_frame(&mut written, value)) {
        panic!("a value read from a frame cannot be written as one: {e}");
    }
    let mut reader = written.as_slice();
    let again: T = match now(read_frame(&mut reader)) {
        Ok(Some(again)) => again,
        Ok(None) => panic!("a written frame reads as a closed connection"),
        Err(e) => panic!("a value read from a frame and written again does not read back: {e}"),
    };
    assert!(reader.is_empty(), "reading a written frame left {} bytes", reader.len());
    let mut rewritten = Vec::new();
    if let Err(e) = now(write_frame(&mut rewritten, &again)) {
        panic!("a value read back cannot be written again: {e}");
    }
    assert!(written == rewritten, "a frame read back is written to other bytes");
}

/// Runs a future that reads or writes memory only, so it never waits.
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("reading or writing memory never waits"),
    }
}

fn frame_stream<T: Serialize>(values: &[T]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        if let Err(e) = now(write_frame(&mut out, value)) {
            panic!("a sample frame is small: {e}");
        }
    }
    out
}

fn address(raw: &str) -> EmailAddress {
    EmailAddress::parse(raw).expect("sample addresses are valid")
}

fn sample_requests() -> Vec<PeerRequest> {
    let log_id = |term, index| LogId::new(CommittedLeaderId::new(term, 1), index);
    let deliver = Command::Deliver {
        recipients: vec![address("alice@example.test"), address("bob@example.test")],
        body: BlobRef { hash: BlobHash([7; 32]), size_bytes: 1234 },
        internal_date: UnixSeconds(1_700_000_000),
        flags: SystemFlags(SystemFlags::SEEN),
        retry_key: Some("sha256:00ff".into()),
    };
    let membership = Membership::new(
        vec![BTreeSet::from([1, 2])],
        BTreeMap::from([
            (1, SiteNode { site: "bj".into(), addr: "127.0.0.1:7001".into() }),
            (2, SiteNode { site: "sh".into(), addr: "127.0.0.1:7002".into() }),
        ]),
    );
    let entries: Vec<Entry> = vec![
        Entry { log_id: log_id(2, 5), payload: EntryPayload::Blank },
        Entry { log_id: log_id(2, 6), payload: EntryPayload::Normal(deliver) },
        Entry { log_id: log_id(2, 7), payload: EntryPayload::Membership(membership) },
    ];
    let domain = Domain::parse("example.test").expect("a sample domain is valid");
    vec![
        PeerRequest::Hello { proof: Some(vec![0xab; 32]), from: Some(2), to: Some(1) },
        PeerRequest::Raft(RaftRpc::Vote(VoteRequest { vote: Vote::new(3, 2), last_log_id: Some(log_id(2, 7)) })),
        PeerRequest::Raft(RaftRpc::AppendEntries(AppendEntriesRequest {
            vote: Vote::new_committed(2, 1),
            prev_log_id: Some(log_id(2, 4)),
            entries,
            leader_commit: Some(log_id(2, 4)),
        })),
        PeerRequest::Body(BodyRpc::Put {
            hash: BlobHash([1; 32]),
            offset: 0,
            last: true,
            bytes: b"Subject: x\r\n\r\n".to_vec(),
        }),
        PeerRequest::Body(BodyRpc::Get { hash: BlobHash([1; 32]), offset: 16 }),
        PeerRequest::Body(BodyRpc::Holds(vec![BlobHash([1; 32]), BlobHash([2; 32])])),
        PeerRequest::Forward(Command::add_account(
            address("carol@example.test"),
            "$argon2id$x".into(),
            0,
            UnixSeconds(1),
        )),
        PeerRequest::Control(ControlRequest::Status),
        PeerRequest::Control(ControlRequest::Write(Command::AddDomain { domain, at: UnixSeconds(1) })),
        PeerRequest::Control(ControlRequest::Rejoin { node_id: 9, site: "sh".into(), addr: "127.0.0.1:7002".into() }),
        PeerRequest::Control(ControlRequest::HoldApply { by: "operator".into() }),
    ]
}

fn sample_responses() -> Vec<PeerResponse> {
    vec![
        PeerResponse::Challenge(vec![0x5a; crate::raft::wire::CHALLENGE_BYTES]),
        PeerResponse::Hello,
        PeerResponse::Raft(RaftReply::Vote(Ok(VoteResponse {
            vote: Vote::new(3, 2),
            vote_granted: true,
            last_log_id: Some(LogId::new(CommittedLeaderId::new(2, 1), 7)),
        }))),
        PeerResponse::Raft(RaftReply::AppendEntries(Ok(AppendEntriesResponse::Success))),
        PeerResponse::Body(BodyReply::Get(Some(BodyPiece { total_bytes: 32, bytes: vec![b'x'; 16] }))),
        PeerResponse::Body(BodyReply::Holds(Ok(vec![true, false]))),
        PeerResponse::Forward(Err(ForwardError::NotPrimary { primary: Some(1) })),
        PeerResponse::Control(Ok(ControlResponse::Written(Err(CommandError::AccountUnknown(address(
            "dave@example.test",
        )))))),
        PeerResponse::Control(Ok(ControlResponse::Rejoined { replaced: Some(2), voters: vec![1, 9] })),
        PeerResponse::Control(Ok(ControlResponse::Fresh)),
        PeerResponse::Refused("wrong cluster secret".into()),
    ]
}
