//! What a site reports about itself and its peers: the answers behind
//! `maildr cluster status` and `maildr cluster verify`.
//!
//! The reports themselves are the admin API's contract and live in
//! `maildr-api-types` (re-exported here); this module builds them from the store
//! and keeps the bounded windows (entry sizes, latencies) they are computed from.
//! They are observations at one moment, never inputs to a decision that must be
//! safe (Raft makes those).

pub use maildr_api_types::status::{
    ApplyDelayStatus, ApplyHold, ForcedFailoverRecord, MailboxDigest, MessageSummary, PeerStatus, PrimaryContact,
    SiteStatus, WriteMetrics,
};

/// A [`MailboxDigest`] read from this site's store (the type is the admin API's,
/// in `maildr-api-types`, which knows nothing of the store).
pub trait MailboxDigestOf {
    /// The digest of mailbox `m` of the account with address `account_address`.
    fn of(m: &maildr_store::Mailbox, account_address: &str) -> MailboxDigest;
    /// Every mailbox of the store, ordered by mailbox id. Call it where no write can
    /// come between its reads (under the state machine's lock).
    fn all(store: &maildr_store::Store) -> Result<Vec<MailboxDigest>, maildr_store::StoreError>;
}

impl MailboxDigestOf for MailboxDigest {
    fn of(m: &maildr_store::Mailbox, account_address: &str) -> MailboxDigest {
        MailboxDigest {
            mailbox: m.id.0,
            account: m.account.0,
            account_address: account_address.to_string(),
            name: m.name.as_str().to_string(),
            uid_validity: m.uid_validity.0,
            uid_next: m.uid_next.0,
            highest_modseq: m.highest_modseq.0,
            message_count: m.message_count,
            digest: m.digest.to_hex(),
        }
    }

    fn all(store: &maildr_store::Store) -> Result<Vec<MailboxDigest>, maildr_store::StoreError> {
        let addresses: std::collections::BTreeMap<u64, String> =
            store.accounts(None)?.into_iter().map(|a| (a.id.0, a.address.as_str().to_string())).collect();
        Ok(store
            .all_mailboxes()?
            .iter()
            .map(|m| MailboxDigest::of(m, addresses.get(&m.account.0).map_or("", String::as_str)))
            .collect())
    }
}

/// A [`MessageSummary`] of a message in this site's store.
pub trait MessageSummaryOf {
    /// The message `m`; `body_present` says whether this site holds its body file.
    fn of(m: &maildr_store::Message, body_present: bool) -> MessageSummary;
}

impl MessageSummaryOf for MessageSummary {
    fn of(m: &maildr_store::Message, body_present: bool) -> MessageSummary {
        MessageSummary {
            uid: m.uid.0,
            modseq: m.modseq.0,
            flags: m.flags.0,
            keywords: m.keywords.clone(),
            internal_date: m.internal_date.0,
            size_bytes: m.size_bytes,
            body: m.body.to_hex(),
            body_present,
        }
    }
}

/// Newest log entries whose encoded size the primary keeps, for `lag_bytes`.
pub const ENTRY_SIZES_MAX: u64 = 10_000;

/// The encoded size of each of the newest log entries of this site, recorded by the
/// log store as it appends them (the bytes it writes are what the replication
/// channel sends), so a peer's lag in bytes is a sum over a bounded window, with no
/// log read. Entries a truncation removed are forgotten with it; entries appended
/// before the site started are unknown (and estimated).
#[derive(Debug, Default)]
pub(crate) struct EntrySizes {
    /// Log index → encoded size in bytes; at most [`ENTRY_SIZES_MAX`] of them.
    sizes: std::collections::BTreeMap<u64, u64>,
}

/// A peer's lag in bytes, and whether part of it is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LagBytes {
    pub bytes: u64,
    pub estimated: bool,
}

impl EntrySizes {
    /// Entry `index` was appended with this encoded size (replacing any entry of
    /// that index, as a log does).
    pub fn appended(&mut self, index: u64, size_bytes: u64) {
        self.sizes.insert(index, size_bytes);
        while self.sizes.len() as u64 > ENTRY_SIZES_MAX {
            self.sizes.pop_first();
        }
    }

    /// The entries from `index` on were removed from the log.
    pub fn truncated_from(&mut self, index: u64) {
        self.sizes.split_off(&index);
    }

    /// Bytes of the entries after `matched` up to `last`: the sum of their sizes when
    /// all are known; else the known ones scaled up to all of them (an estimate);
    /// `None` when none is known.
    pub fn lag_bytes(&self, matched: u64, last: u64) -> Option<LagBytes> {
        let lag_entries = last.saturating_sub(matched);
        if lag_entries == 0 {
            return Some(LagBytes { bytes: 0, estimated: false });
        }
        let (mut bytes, mut counted) = (0u64, 0u64);
        for size in self.sizes.range(matched + 1..=last).map(|(_, size)| *size) {
            bytes = bytes.saturating_add(size);
            counted += 1;
        }
        match counted {
            0 => None,
            c if c == lag_entries => Some(LagBytes { bytes, estimated: false }),
            c => {
                let scaled = u128::from(bytes) * u128::from(lag_entries) / u128::from(c);
                Some(LagBytes { bytes: u64::try_from(scaled).unwrap_or(u64::MAX), estimated: true })
            }
        }
    }
}

/// Latencies kept for percentiles: the most recent samples, bounded.
#[derive(Debug, Default)]
pub(crate) struct LatencyWindow {
    samples_ms: std::collections::VecDeque<f64>,
}

impl LatencyWindow {
    const CAPACITY: usize = 4096;

    pub fn record(&mut self, ms: f64) {
        if self.samples_ms.len() == Self::CAPACITY {
            self.samples_ms.pop_front();
        }
        self.samples_ms.push_back(ms);
    }

    /// The `q` quantile (0..=1) of the window, or `None` when it is empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.samples_ms.is_empty() {
            return None;
        }
        let mut samples: Vec<f64> = self.samples_ms.iter().copied().collect();
        // With q in 0..=1 the rank lies in 0..len; a float-to-int `as` saturates, never wraps.
        #[allow(clippy::cast_possible_truncation)]
        let rank = ((samples.len() - 1) as f64 * q).round() as usize;
        // Selection, not a sort: every status answer asks for four quantiles.
        let (_, at_rank, _) = samples.select_nth_unstable_by(rank, |a, b| a.total_cmp(b));
        Some(*at_rank)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_bounded_window() {
        let mut w = LatencyWindow::default();
        assert_eq!(w.quantile(0.5), None);
        for i in 1..=100 {
            w.record(i as f64);
        }
        assert_eq!(w.quantile(0.5), Some(51.0));
        assert_eq!(w.quantile(0.99), Some(99.0));
        for _ in 0..LatencyWindow::CAPACITY {
            w.record(7.0);
        }
        assert_eq!(w.quantile(0.99), Some(7.0), "old samples leave the window");
    }

    #[test]
    fn lag_in_bytes_is_the_sum_of_the_entries_a_peer_lacks() {
        let mut sizes = EntrySizes::default();
        assert_eq!(sizes.lag_bytes(2, 5), None, "nothing known yet");
        (1..=5).for_each(|i| sizes.appended(i, i * 100));
        assert_eq!(sizes.lag_bytes(2, 5), Some(LagBytes { bytes: 300 + 400 + 500, estimated: false }));
        assert_eq!(sizes.lag_bytes(5, 5), Some(LagBytes { bytes: 0, estimated: false }));
        // Entry 6 is not known: it counts at the mean of the known ones.
        assert_eq!(sizes.lag_bytes(4, 6), Some(LagBytes { bytes: 500 * 2, estimated: true }));
        // A new leader overwrote entries 4 and 5 with a single smaller one.
        sizes.truncated_from(4);
        sizes.appended(4, 7);
        assert_eq!(sizes.lag_bytes(2, 4), Some(LagBytes { bytes: 300 + 7, estimated: false }));
        assert_eq!(sizes.lag_bytes(4, 5), None, "entry 5 is gone and nothing after 4 is known");
    }

    #[test]
    fn only_the_newest_entry_sizes_are_kept_and_older_lag_is_estimated() {
        let mut sizes = EntrySizes::default();
        let last = ENTRY_SIZES_MAX + 500;
        (1..=last).for_each(|i| sizes.appended(i, 10));
        assert_eq!(sizes.sizes.len() as u64, ENTRY_SIZES_MAX, "the window stays bounded");
        assert_eq!(sizes.sizes.first_key_value().map(|(i, _)| *i), Some(501));
        assert_eq!(sizes.lag_bytes(500, last), Some(LagBytes { bytes: ENTRY_SIZES_MAX * 10, estimated: false }));
        assert_eq!(sizes.lag_bytes(0, last), Some(LagBytes { bytes: last * 10, estimated: true }));
    }
}
