//! The one way an IMAP session reads the store: redb reads and blob reads.
//!
//! Store reads are synchronous (redb transactions, blob files) and may take a
//! while on a large mailbox or a slow disk. A session must never run them on an
//! async worker as if they were free, or every other session on that worker
//! stalls behind them. They run through [`store_read`]:
//!
//! - on a multi-threaded runtime (the server's) inside
//!   `tokio::task::block_in_place`: the runtime hands this worker's other tasks to
//!   another thread while the read runs, and the read may borrow the session's
//!   view and fill its reply queue without copying either. `spawn_blocking` would
//!   need the view moved out and back and the replies collected and copied, for the
//!   same effect on the server's runtime;
//! - on a current-thread runtime (some tests), where `block_in_place` panics, the
//!   read runs inline: there is no other worker to hand tasks to anyway.
//!
//! This module must never hold a read across an `.await` nor be bypassed: a
//! command that reads the store calls it.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run a synchronous store read without stalling other sessions.
pub(crate) fn store_read<T>(read: impl FnOnce() -> T) -> T {
    let multi_thread = Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(read)
    } else {
        read()
    }
}
