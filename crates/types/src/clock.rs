//! The wall clock, in one place.
//!
//! Commands carry their own timestamps (`at`, `internal_date`, `uid_validity`), decided
//! before they are proposed, so that every replica applies the same values. The code
//! that decides them reads the time through a [`Clock`], never through
//! `SystemTime::now()` itself: production uses [`SystemClock`], and a test pins the
//! time with [`PinnedClock`] to check what a command or a reply carries.
//!
//! This module must never be read by the code that applies commands (the store's
//! `apply`): that code takes its time from the command.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{UidValidity, UnixSeconds};

/// Where the time of day comes from.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch, UTC.
    fn now_ms(&self) -> i64;

    /// Whole seconds since the Unix epoch, UTC.
    fn now(&self) -> UnixSeconds {
        UnixSeconds(self.now_ms().div_euclid(1000))
    }
}

/// A clock that can be shared by every session of a service.
pub type SharedClock = Arc<dyn Clock>;

/// The operating system's clock. A clock set before 1970 reads as the epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The system clock behind an `Arc`, as services hold it.
pub fn system_clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that stands still until it is moved: for tests.
#[derive(Debug, Default)]
pub struct PinnedClock {
    now_ms: AtomicI64,
}

impl PinnedClock {
    /// A clock pinned at `now_ms` milliseconds since the epoch.
    pub fn at_ms(now_ms: i64) -> PinnedClock {
        PinnedClock { now_ms: AtomicI64::new(now_ms) }
    }

    /// Move the clock to `now_ms`.
    pub fn set_ms(&self, now_ms: i64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }

    /// Move the clock forward by `ms`.
    pub fn advance_ms(&self, ms: i64) {
        self.now_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for PinnedClock {
    fn now_ms(&self) -> i64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

impl UidValidity {
    /// The UIDVALIDITY a mailbox created at `at` proposes: its creation time in
    /// seconds, clamped into the 32-bit range IMAP allows (non-zero). The store still
    /// raises it past any value it gave out before (`AddAccount`, `CreateMailbox`), so
    /// a clock that runs backwards never reuses one.
    pub fn proposed_at(at: UnixSeconds) -> UidValidity {
        let seconds = at.0.clamp(1, i64::from(u32::MAX));
        UidValidity(u32::try_from(seconds).expect("clamped into the u32 range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pinned_clock_reads_what_it_was_set_to() {
        let clock = PinnedClock::at_ms(1_700_000_000_999);
        assert_eq!(clock.now(), UnixSeconds(1_700_000_000));
        clock.advance_ms(1);
        assert_eq!(clock.now(), UnixSeconds(1_700_000_001));
        clock.set_ms(-1);
        assert_eq!(clock.now(), UnixSeconds(-1), "before the epoch rounds down, not towards zero");
    }

    #[test]
    fn the_system_clock_is_after_2020() {
        assert!(SystemClock.now().0 > 1_577_836_800);
    }

    #[test]
    fn uid_validity_is_the_creation_second_clamped_to_a_nonzero_u32() {
        assert_eq!(UidValidity::proposed_at(UnixSeconds(1_700_000_000)), UidValidity(1_700_000_000));
        assert_eq!(UidValidity::proposed_at(UnixSeconds(0)), UidValidity(1));
        assert_eq!(UidValidity::proposed_at(UnixSeconds(-5)), UidValidity(1));
        assert_eq!(UidValidity::proposed_at(UnixSeconds(i64::MAX)), UidValidity(u32::MAX));
    }
}
