//! The site-wide budget for message data held in memory: SMTP DATA being received,
//! IMAP literals being read and FETCH answers being sent.
//!
//! Every protocol limit is per connection (a message size, a literal size), so
//! without a budget the memory a site may need is the product of a limit and the
//! connection count: 1,000 SMTP clients each sending a 25 MiB message at once ask
//! for 25 GiB. Here every such buffer beyond a connection's small free allowance
//! ([`UNCHARGED_BYTES_PER_BUFFER`]) is charged to one budget
//! ([`MessageMemory::configure`], `site.message_memory_max_bytes`); a buffer that
//! cannot grow is refused at once (SMTP `452 4.3.1`, IMAP `NO`/`BYE`), never
//! waited for while holding other memory, so the budget cannot deadlock and the
//! site never runs out of memory. Ordinary mail (below the allowance) is never
//! refused for memory, so a flood of large messages does not stop small ones.
//!
//! This module must never be bypassed for a buffer whose size a client decides.

use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget when the configuration gives none.
pub const MESSAGE_MEMORY_DEFAULT_BYTES: u64 = 512 * 1024 * 1024;

/// Bytes of each buffer not charged to the budget, so that ordinary messages and
/// commands are served whatever large ones do (bounded by the connection limits).
pub const UNCHARGED_BYTES_PER_BUFFER: usize = 128 * 1024;

/// The budget is counted in units of this many bytes.
const UNIT_BYTES: u64 = 1024;

/// The budget of this process, set once at start by [`MessageMemory::configure`].
#[derive(Debug)]
pub struct MessageMemory {
    units: Arc<Semaphore>,
    total_bytes: u64,
}

static GLOBAL: OnceLock<MessageMemory> = OnceLock::new();

impl MessageMemory {
    /// Set the site's budget; the first call wins (a site configures it once,
    /// before serving). Returns the budget in force.
    pub fn configure(total_bytes: u64) -> &'static MessageMemory {
        GLOBAL.get_or_init(|| MessageMemory::new(total_bytes))
    }

    /// The site's budget (the default if none was configured).
    pub fn global() -> &'static MessageMemory {
        MessageMemory::configure(MESSAGE_MEMORY_DEFAULT_BYTES)
    }

    /// A budget of its own, apart from the site's (tests and benchmarks of one
    /// front end). It lives as long as the process.
    pub fn separate(total_bytes: u64) -> &'static MessageMemory {
        Box::leak(Box::new(MessageMemory::new(total_bytes)))
    }

    fn new(total_bytes: u64) -> MessageMemory {
        let units = (total_bytes / UNIT_BYTES).min(Semaphore::MAX_PERMITS as u64) as usize;
        MessageMemory { units: Arc::new(Semaphore::new(units)), total_bytes }
    }

    /// The whole budget, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Bytes of the budget not held by any buffer now.
    pub fn available_bytes(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT_BYTES
    }

    /// An empty charge that buffers grow with [`MemoryCharge::cover`].
    pub fn charge(&'static self) -> MemoryCharge {
        MemoryCharge { budget: self, permit: None }
    }
}

/// What one buffer holds of the budget; returned when dropped.
#[derive(Debug)]
pub struct MemoryCharge {
    budget: &'static MessageMemory,
    permit: Option<OwnedSemaphorePermit>,
}

/// The budget is spent: the buffer cannot grow now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the site's memory budget for message data ({total_bytes} bytes) is spent")]
pub struct BudgetSpent {
    pub total_bytes: u64,
}

impl MemoryCharge {
    /// Make the charge cover a buffer of `bytes` (beyond the free allowance), taking
    /// more of the budget if needed; never waits. On `Err` the charge is unchanged.
    pub fn cover(&mut self, bytes: usize) -> Result<(), BudgetSpent> {
        let charged = bytes.saturating_sub(UNCHARGED_BYTES_PER_BUFFER) as u64;
        let wanted_units = charged.div_ceil(UNIT_BYTES);
        let held = self.held_units();
        if wanted_units <= held {
            return Ok(());
        }
        let more = u32::try_from(wanted_units - held).map_err(|_| self.spent())?;
        let permit = Arc::clone(&self.budget.units).try_acquire_many_owned(more).map_err(|_| self.spent())?;
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }

    /// Give everything back (the buffer was emptied).
    pub fn release(&mut self) {
        self.permit = None;
    }

    /// Bytes of the budget this charge holds.
    pub fn held_bytes(&self) -> u64 {
        self.held_units() * UNIT_BYTES
    }

    fn held_units(&self) -> u64 {
        self.permit.as_ref().map_or(0, |p| p.num_permits() as u64)
    }

    fn spent(&self) -> BudgetSpent {
        BudgetSpent { total_bytes: self.budget.total_bytes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(bytes: u64) -> &'static MessageMemory {
        MessageMemory::separate(bytes)
    }

    #[test]
    fn buffers_below_the_allowance_take_nothing() {
        let budget = budget(0);
        let mut charge = budget.charge();
        assert_eq!(charge.cover(UNCHARGED_BYTES_PER_BUFFER), Ok(()));
        assert_eq!(charge.held_bytes(), 0);
        assert!(charge.cover(UNCHARGED_BYTES_PER_BUFFER + 1).is_err());
    }

    #[test]
    fn the_budget_is_shared_up_to_its_last_byte_and_returned_on_drop() {
        let budget = budget(1024 * 1024);
        let mut first = budget.charge();
        first.cover(UNCHARGED_BYTES_PER_BUFFER + 512 * 1024).unwrap();
        let mut second = budget.charge();
        second.cover(UNCHARGED_BYTES_PER_BUFFER + 512 * 1024).unwrap();
        assert_eq!(budget.available_bytes(), 0);
        // At the limit: one byte more is refused and the charge is unchanged.
        assert_eq!(
            second.cover(UNCHARGED_BYTES_PER_BUFFER + 512 * 1024 + 1),
            Err(BudgetSpent { total_bytes: 1 << 20 })
        );
        assert_eq!(second.held_bytes(), 512 * 1024);
        drop(first);
        assert_eq!(budget.available_bytes(), 512 * 1024);
        second.release();
        assert_eq!(budget.available_bytes(), 1024 * 1024);
    }

    #[test]
    fn covering_a_smaller_buffer_keeps_what_is_held() {
        let budget = budget(1024 * 1024);
        let mut charge = budget.charge();
        charge.cover(UNCHARGED_BYTES_PER_BUFFER + 10_000).unwrap();
        let held = charge.held_bytes();
        charge.cover(10).unwrap();
        assert_eq!(charge.held_bytes(), held);
    }
}
