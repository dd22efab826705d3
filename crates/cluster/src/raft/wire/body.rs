//! The body conversation: message bodies pushed to peers before the entry that refers
//! to them is proposed, fetched by a site that lacks them, and the witness's question
//! which bodies a data site holds.
//!
//! Bodies never enter the Raft log; they travel here in pieces of at most
//! [`BODY_CHUNK_BYTES`], so one body never needs a frame beyond the frame limit. This
//! module must never carry Raft state or operator requests.

use maildr_types::BlobHash;
use serde::{Deserialize, Serialize};

/// Bodies travel in pieces of at most this size.
pub const BODY_CHUNK_BYTES: usize = 16 * 1024 * 1024;

/// Most bodies one [`BodyRpc::Holds`] question names.
pub const HOLDS_BODIES_MAX: usize = 1024;

/// A request about message bodies.
#[derive(Debug, Serialize, Deserialize)]
pub enum BodyRpc {
    /// Store a piece of a message body. `offset` 0 starts a body; the piece with
    /// `last` set completes it, and the receiver answers only once the whole body is
    /// durable and matches `hash`.
    Put { hash: BlobHash, offset: u64, last: bool, bytes: Vec<u8> },
    /// Read a piece of a message body held by the receiver.
    Get { hash: BlobHash, offset: u64 },
    /// Which of these bodies the receiver holds durably (a witness asks the data
    /// sites before it drops its copies); at most [`HOLDS_BODIES_MAX`].
    Holds(Vec<BlobHash>),
}

/// The answer to a [`BodyRpc`], in the variant of the same name.
#[derive(Debug, Serialize, Deserialize)]
pub enum BodyReply {
    Put(Result<(), String>),
    /// `None`: the receiver does not hold the body.
    Get(Option<BodyPiece>),
    /// One flag per body asked about, in order: held durably here.
    Holds(Result<Vec<bool>, String>),
}

/// A piece of a message body.
#[derive(Debug, Serialize, Deserialize)]
pub struct BodyPiece {
    pub total_bytes: u64,
    pub bytes: Vec<u8>,
}
