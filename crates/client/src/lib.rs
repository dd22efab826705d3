//! maildr's protocol clients: what a sending MTA, a mail user agent and a stub
//! resolver do over real sockets — SMTP ([`smtp`]), IMAP ([`imap`]), DNS ([`dns`]),
//! with TLS trusted from a given CA ([`tls`]).
//!
//! Probes, drills, benches and tests all speak through this crate, so there is one
//! place where deadlines and read bounds are right. Every network await has a
//! deadline (the caller's, or [`TIMEOUT_DEFAULT`]) and every read is bounded by a
//! named constant, so a misbehaving peer costs an error, never memory.
//!
//! Never: depend on a maildr server crate or know server internals. The drill uses
//! these clients to judge the servers; a bug shared by server and client would hide
//! itself.

pub mod dns;
pub mod imap;
mod line;
pub mod smtp;
pub mod tls;

use std::time::Duration;

pub use line::{LineError, LINE_BYTES_MAX};
pub use tls::Tls;

/// The deadline of one exchange when the caller has none of its own.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// A byte stream to a server, plain or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// Milliseconds of a deadline, for error messages.
pub(crate) fn ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}
