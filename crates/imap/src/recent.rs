//! Which session sees a message as `\Recent`.
//!
//! RFC 3501 §2.3.2: a message is recent in the one session that is the first to
//! be told of it; later sessions never see it so. The store has no notion of
//! sessions, and replicating "who looked first" would turn every SELECT into a
//! write, so this is per site and in process: for each mailbox (and
//! UIDVALIDITY), the highest UID some read-write session has already been told
//! of. A session that learns of messages above the mark raises it and holds
//! those messages as recent. RFC 3501 lets recent-ness be approximate, and it is
//! at the edges: a client that fails over to another site, or a site that
//! restarts, sees as recent again what was recent before; two sessions on two
//! sites may both see a new message as recent.
//!
//! EXAMINE and STATUS only read the mark (EXAMINE "MUST NOT cause messages to
//! lose the \Recent flag", §6.3.2). This module must never be used to decide
//! anything that is replicated.

use std::collections::HashMap;
use std::sync::Mutex;

use maildr_types::{MailboxId, UidValidity};

/// Most mailboxes with a mark. Past it the table starts over, which has the
/// effect of a restart: recent messages may be recent once more.
pub(crate) const RECENT_MAILBOXES_MAX: usize = 1 << 20;

/// The mailbox a mark belongs to: its UIDs restart with a new UIDVALIDITY.
pub(crate) type MailboxKey = (MailboxId, UidValidity);

/// Per mailbox, the highest UID a read-write session has been told of.
#[derive(Default)]
pub(crate) struct RecentMarks {
    marks: Mutex<HashMap<MailboxKey, u32>>,
}

impl RecentMarks {
    /// Claim for the caller the UIDs above the mark up to `highest`: the range
    /// claimed (inclusive), if any. No other session gets them.
    pub(crate) fn claim(&self, mailbox: MailboxKey, highest: u32) -> Option<(u32, u32)> {
        let mut marks = self.marks.lock().expect("recent marks lock");
        if marks.len() >= RECENT_MAILBOXES_MAX && !marks.contains_key(&mailbox) {
            marks.clear();
        }
        let mark = marks.entry(mailbox).or_insert(0);
        if highest <= *mark {
            return None;
        }
        let claimed = (*mark + 1, highest);
        *mark = highest;
        Some(claimed)
    }

    /// The mark, unchanged: UIDs above it are still recent for whoever comes.
    pub(crate) fn peek(&self, mailbox: MailboxKey) -> u32 {
        self.marks.lock().expect("recent marks lock").get(&mailbox).copied().unwrap_or(0)
    }
}

/// The UIDs a session holds as recent, as sorted, disjoint inclusive ranges.
#[derive(Debug, Default)]
pub(crate) struct RecentUids {
    ranges: Vec<(u32, u32)>,
}

impl RecentUids {
    /// Add a range above every range held (claims only go up).
    pub(crate) fn add(&mut self, (first, last): (u32, u32)) {
        assert!(first <= last, "a recent range is ordered");
        match self.ranges.last_mut() {
            Some((_, end)) if end.saturating_add(1) >= first => *end = (*end).max(last),
            Some((_, end)) => {
                assert!(*end < first, "recent ranges only go up");
                self.ranges.push((first, last));
            }
            None => self.ranges.push((first, last)),
        }
    }

    pub(crate) fn contains(&self, uid: u32) -> bool {
        let i = self.ranges.partition_point(|(_, end)| *end < uid);
        self.ranges.get(i).is_some_and(|(start, _)| *start <= uid)
    }

    /// The ranges held, ascending.
    pub(crate) fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    /// The highest UID held, 0 when none.
    pub(crate) fn highest(&self) -> u32 {
        self.ranges.last().map(|(_, end)| *end).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_claim_gets_a_message() {
        let marks = RecentMarks::default();
        let inbox = (MailboxId(1), UidValidity(7));
        assert_eq!(marks.peek(inbox), 0);
        assert_eq!(marks.claim(inbox, 3), Some((1, 3)));
        assert_eq!(marks.claim(inbox, 3), None);
        assert_eq!(marks.claim(inbox, 2), None);
        assert_eq!(marks.claim(inbox, 5), Some((4, 5)));
        assert_eq!(marks.peek(inbox), 5);
        assert_eq!(marks.claim((MailboxId(1), UidValidity(8)), 1), Some((1, 1)));
    }

    #[test]
    fn recent_ranges_merge_and_answer_membership() {
        let mut uids = RecentUids::default();
        uids.add((1, 3));
        uids.add((4, 4));
        uids.add((9, 10));
        assert_eq!(uids.ranges, vec![(1, 4), (9, 10)]);
        assert!(uids.contains(1) && uids.contains(4) && uids.contains(9) && uids.contains(10));
        assert!(!uids.contains(0) && !uids.contains(5) && !uids.contains(11));
        assert_eq!(uids.highest(), 10);
    }
}
