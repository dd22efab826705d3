//! QRESYNC's answer to "what vanished since MODSEQ n" (RFC 7162 §3.2.5, §3.2.6,
//! §3.2.10), shared by `SELECT … (QRESYNC …)` and `UID FETCH … (CHANGEDSINCE n
//! VANISHED)`, and the spelling of VANISHED responses.
//!
//! The store keeps the UIDs each expunge removed with the MODSEQ it took
//! (replicated, so the answer is the same at every site). When the client's MODSEQ
//! is older than what the store kept, the answer is every UID the client may hold
//! that is not in the mailbox: RFC 7162 lets VANISHED (EARLIER) name UIDs the
//! client never saw, so this is a correct answer, only a longer one. The client's
//! sequence-match data then shortens it.
//!
//! Sequence sets are never expanded into memory: membership is tested per number,
//! gaps are computed from the view's messages, and the sequence-match pairs
//! walked are at most [`SEQ_MATCH_PAIRS_CHECKED_MAX`].

use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::response::Data;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use maildr_store::{Store, StoreError};
use maildr_types::{ModSeq, Uid};

use crate::reply::nz;
use crate::view::{set_contains, View};

/// UID ranges per VANISHED response; a longer answer is split into several
/// responses, so no response line grows with the mailbox.
pub const VANISHED_RANGES_PER_RESPONSE_MAX: usize = 1_000;

/// Pairs of sequence-match data compared with the mailbox; later pairs are
/// ignored (the answer may then name more UIDs, never fewer than it must).
pub const SEQ_MATCH_PAIRS_CHECKED_MAX: usize = 1_024;

/// What a client said it knows, as the QRESYNC parameter or the UID FETCH set
/// gives it.
pub struct Known<'a> {
    /// The UIDs the client holds; `None` stands for `1:<UIDNEXT-1>`.
    pub uids: Option<&'a SequenceSet>,
    /// `(known-sequence-set, known-uid-set)`, already checked by [`check_seq_match`].
    pub seq_match: Option<(&'a SequenceSet, &'a SequenceSet)>,
}

/// Does the set use `*`? QRESYNC's known-uids and sequence-match data may not.
pub fn uses_asterisk(set: &SequenceSet) -> bool {
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(v) => matches!(v, SeqOrUid::Asterisk),
        Sequence::Range(a, b) => matches!(a, SeqOrUid::Asterisk) || matches!(b, SeqOrUid::Asterisk),
    })
}

/// The numbers of a set without `*`, in the order written, lazily.
fn numbers(set: &SequenceSet) -> impl Iterator<Item = u32> + '_ {
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => u32::MAX,
    };
    set.0.as_ref().iter().flat_map(move |seq| match seq {
        Sequence::Single(s) => value(s)..=value(s),
        Sequence::Range(a, b) => value(a).min(value(b))..=value(a).max(value(b)),
    })
}

/// How many numbers a set without `*` holds (counted per range, not expanded).
fn count(set: &SequenceSet) -> u64 {
    set.0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(_) => 1,
            Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b)) => u64::from(a.get().abs_diff(b.get())) + 1,
            Sequence::Range(..) => 1,
        })
        .sum()
}

/// Check sequence-match data as RFC 7162 §3.2.5 gives it: no `*`, as many
/// sequence numbers as UIDs, both ascending. The reason when it is not.
pub fn check_seq_match(seqs: &SequenceSet, uids: &SequenceSet) -> Result<(), &'static str> {
    if uses_asterisk(seqs) || uses_asterisk(uids) {
        return Err("* is not allowed in sequence-match data");
    }
    if count(seqs) != count(uids) {
        return Err("sequence-match data pairs as many message numbers as UIDs");
    }
    let ascending = |set: &SequenceSet| {
        let mut last = 0;
        set.0.as_ref().iter().all(|seq| {
            let (lo, hi) = match seq {
                Sequence::Single(SeqOrUid::Value(v)) => (v.get(), v.get()),
                Sequence::Range(SeqOrUid::Value(a), SeqOrUid::Value(b)) => (a.get().min(b.get()), a.get().max(b.get())),
                _ => return false,
            };
            let fine = lo > last;
            last = hi;
            fine
        })
    };
    if !ascending(seqs) || !ascending(uids) {
        return Err("sequence-match data must be in ascending order");
    }
    Ok(())
}

/// The UIDs, as ascending disjoint ranges, the client must be told vanished from
/// the view's mailbox since `since`. UIDs the view still holds are left out: the
/// session tells of those itself (`* VANISHED`) when it may.
pub fn vanished_since(
    store: &Store,
    view: &View,
    since: ModSeq,
    known: &Known<'_>,
) -> Result<Vec<(u32, u32)>, StoreError> {
    let largest = view.uid_next.0.saturating_sub(1);
    let wanted = |uid: u32| known.uids.is_none_or(|set| set_contains(set, uid, largest));
    let held = |uid: u32| view.messages.binary_search_by_key(&Uid(uid), |m| m.uid).is_ok();
    if let Some(expunged) = store.expunged_since(view.mailbox, since)? {
        let uids: Vec<u32> = expunged.into_iter().map(|u| u.0).filter(|u| wanted(*u) && !held(*u)).collect();
        return Ok(ranges(&uids));
    }
    // The record does not reach back to `since`: every UID the client may hold
    // that the mailbox lacks, above what its sequence-match data proves it knows.
    let floor = known.seq_match.map(|(seqs, uids)| matched_floor(view, seqs, uids)).unwrap_or(0);
    let mut out = Vec::new();
    let mut next = floor.saturating_add(1);
    let present = view.messages.iter().map(|m| m.uid.0).filter(|u| *u > floor).chain(std::iter::once(view.uid_next.0));
    for uid in present {
        if uid > next {
            intersect(next, uid - 1, known.uids, largest, &mut out);
        }
        next = next.max(uid.saturating_add(1));
    }
    Ok(out)
}

/// The highest UID up to which the client's sequence-match pairs still agree
/// with the view: below it no message vanished since the client's mapping, so
/// none needs naming. Pairs are compared in order until the first that differs.
fn matched_floor(view: &View, seqs: &SequenceSet, uids: &SequenceSet) -> u32 {
    let mut floor = 0;
    for (seq, uid) in numbers(seqs).zip(numbers(uids)).take(SEQ_MATCH_PAIRS_CHECKED_MAX) {
        let index = usize::try_from(seq).unwrap_or(usize::MAX).saturating_sub(1);
        match view.messages.get(index) {
            Some(m) if m.uid.0 == uid => floor = uid,
            _ => break,
        }
    }
    floor
}

/// Push the parts of `lo..=hi` inside `set` (all of it without one) as ranges.
fn intersect(lo: u32, hi: u32, set: Option<&SequenceSet>, largest: u32, out: &mut Vec<(u32, u32)>) {
    let Some(set) = set else {
        push_range(out, lo, hi);
        return;
    };
    let value = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    let mut parts: Vec<(u32, u32)> = set
        .0
        .as_ref()
        .iter()
        .map(|seq| match seq {
            Sequence::Single(s) => (value(s), value(s)),
            Sequence::Range(a, b) => (value(a).min(value(b)), value(a).max(value(b))),
        })
        .map(|(a, b)| (a.max(lo), b.min(hi)))
        .filter(|(a, b)| a <= b)
        .collect();
    parts.sort_unstable();
    for (a, b) in parts {
        push_range(out, a, b);
    }
}

/// Append a range to ascending ranges, merging with the last where they touch.
fn push_range(out: &mut Vec<(u32, u32)>, lo: u32, hi: u32) {
    if let Some(last) = out.last_mut() {
        if lo <= last.1.saturating_add(1) {
            last.1 = last.1.max(hi);
            return;
        }
    }
    out.push((lo, hi));
}

/// Ascending UIDs as ranges.
pub fn ranges(uids: &[u32]) -> Vec<(u32, u32)> {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    for uid in sorted {
        push_range(&mut out, uid, uid);
    }
    out
}

/// VANISHED responses naming `ranges`, at most [`VANISHED_RANGES_PER_RESPONSE_MAX`]
/// ranges each; none for no ranges.
pub fn responses(ranges: &[(u32, u32)], earlier: bool) -> Vec<Data<'static>> {
    ranges
        .chunks(VANISHED_RANGES_PER_RESPONSE_MAX)
        .filter_map(|chunk| {
            let seqs: Vec<Sequence> = chunk
                .iter()
                .map(|(a, b)| {
                    if a == b {
                        Sequence::Single(SeqOrUid::Value(nz(*a)))
                    } else {
                        Sequence::Range(SeqOrUid::Value(nz(*a)), SeqOrUid::Value(nz(*b)))
                    }
                })
                .collect();
            Vec1::try_from(seqs).ok().map(|s| Data::Vanished { earlier, known_uids: SequenceSet(s) })
        })
        .collect()
}
