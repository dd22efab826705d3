//! Cross-site verification: every mailbox's digest compared across the sites at one
//! applied index, and, on request, the messages that differ.
//!
//! It only reads (`Digests`, `Messages`); it must never change a site, and never
//! compare sites read at different applied indexes.

pub use maildr_api_types::cluster::{Divergence, MessageDifference, VerifyReport};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use maildr_config::{ClusterMember, SiteRole};

use super::{ControlClient, OpsError, SiteDigests};
use crate::status::{MailboxDigest, MessageSummary};

/// How long `verify` keeps trying to read every site at one applied index.
pub const VERIFY_DEADLINE: Duration = Duration::from_secs(60);

/// How long a site waits to apply the index `verify` asks it to reach.
const VERIFY_APPLY_WAIT_MS: u64 = 10_000;

/// Pause between two attempts of `verify` while writes keep coming.
const VERIFY_RETRY_PAUSE: Duration = Duration::from_millis(200);

/// The sites whose view differs from the one shared by more than half of them.
fn outliers<T: PartialEq>(views: &BTreeMap<String, T>) -> Vec<String> {
    let majority = views.values().find(|v| views.values().filter(|w| w == v).count() * 2 > views.len());
    match majority {
        Some(m) => views.iter().filter(|(_, v)| *v != m).map(|(site, _)| site.clone()).collect(),
        None => Vec::new(),
    }
}

/// Every message of one mailbox the sites do not all agree on, by UID.
fn message_differences(lists: &[(String, Vec<MessageSummary>)]) -> Vec<MessageDifference> {
    let uids: std::collections::BTreeSet<u32> = lists.iter().flat_map(|(_, l)| l.iter().map(|m| m.uid)).collect();
    let mut out = Vec::new();
    for uid in uids {
        let by_site: BTreeMap<String, Option<MessageSummary>> =
            lists.iter().map(|(site, l)| (site.clone(), l.iter().find(|m| m.uid == uid).cloned())).collect();
        let present: Vec<&MessageSummary> = by_site.values().flatten().collect();
        let mut fields: Vec<String> = Vec::new();
        if present.len() < by_site.len() {
            fields.push("absent".into());
        }
        if let Some((first, others)) = present.split_first() {
            for field in others.iter().flat_map(|other| first.differing_fields(other)) {
                if !fields.iter().any(|f| f == field) {
                    fields.push(field.into());
                }
            }
        }
        if !fields.is_empty() {
            out.push(MessageDifference { uid, fields, by_site });
        }
    }
    out
}

/// Compare digests of every reachable site at the same applied index: ask the
/// sites for their applied index, have every site wait until it applied at least
/// the highest, read digests with the index they were read at, and retry while
/// sites read at different indexes (writes kept coming).
pub async fn verify(client: &ControlClient, list_messages: bool) -> Result<VerifyReport, OpsError> {
    let deadline = Instant::now() + VERIFY_DEADLINE;
    let (lagged, compared): (Vec<&ClusterMember>, Vec<&ClusterMember>) =
        client.members().iter().partition(|m| m.role == SiteRole::Lagged);
    let lagged: Vec<String> = lagged.into_iter().map(|m| m.site.clone()).collect();
    let mut ahead = DIGEST_MARK_AHEAD_MIN;
    loop {
        let (mut reads, unreachable) = read_digests(client, &compared).await?;
        if reads.len() < 2 {
            return Err(OpsError::TooFewSites(unreachable.join(", ")));
        }
        if reads.iter().any(|(_, d)| d.applied_index != reads[0].1.applied_index) {
            if Instant::now() > deadline {
                return Err(OpsError::KeptApplying(VERIFY_DEADLINE.as_secs()));
            }
            // Writes keep coming: ask every site for its digests at one index a
            // little ahead of them all, read by each apply on its way past it.
            let highest = reads.iter().map(|(_, d)| d.applied_index).max().unwrap_or(0);
            match read_digests_at(client, &reads, highest + ahead).await {
                Some(marked) => reads = marked,
                None => {
                    ahead = (ahead * 2).min(DIGEST_MARK_AHEAD_MAX);
                    tokio::time::sleep(VERIFY_RETRY_PAUSE).await;
                    continue;
                }
            }
        }
        let index = reads[0].1.applied_index;
        let mut by_mailbox: BTreeMap<u64, BTreeMap<String, Option<MailboxDigest>>> = BTreeMap::new();
        for (member, digests) in &reads {
            for m in &digests.mailboxes {
                by_mailbox.entry(m.mailbox).or_default().insert(member.site.clone(), Some(m.clone()));
            }
        }
        let mailboxes = by_mailbox.len();
        let mut diverging = Vec::new();
        for (mailbox, mut views) in by_mailbox {
            for (member, _) in &reads {
                views.entry(member.site.clone()).or_insert(None);
            }
            let first = views.values().next().cloned().flatten();
            if views.values().all(|v| *v == first) {
                continue;
            }
            diverging.push(divergence(client, &reads, mailbox, views, list_messages).await?);
        }
        return Ok(VerifyReport {
            applied_index: index,
            sites: reads.iter().map(|(m, _)| m.site.clone()).collect(),
            unreachable,
            lagged,
            mailboxes,
            diverging,
        });
    }
}

/// How far ahead of the highest applied index `verify` first asks for digests
/// while writes keep coming, and the most it asks ahead after misses (a site
/// already past the mark, or writes stopping short of it).
const DIGEST_MARK_AHEAD_MIN: u64 = 8;
const DIGEST_MARK_AHEAD_MAX: u64 = 4096;

/// Every site of `reads` asked at once for its digests at log index `index`:
/// `None` unless every one of them answered at that index.
async fn read_digests_at(
    client: &ControlClient,
    reads: &[(ClusterMember, SiteDigests)],
    index: u64,
) -> Option<Vec<(ClusterMember, SiteDigests)>> {
    let mut asks = tokio::task::JoinSet::new();
    for (member, _) in reads {
        let (client, member) = (client.clone(), member.clone());
        asks.spawn(async move {
            let digests = client.digests_at(&member, index, VERIFY_APPLY_WAIT_MS).await;
            (member, digests)
        });
    }
    let mut marked = Vec::with_capacity(reads.len());
    while let Some(answer) = asks.join_next().await {
        match answer {
            Ok((member, Ok(digests))) if digests.applied_index == index => marked.push((member, digests)),
            Ok((member, outcome)) => {
                tracing::info!(site = %member.site, index, ?outcome, "digests at the mark not read");
                return None;
            }
            Err(_) => return None,
        }
    }
    // In the order `reads` had, which names the sites in configuration order.
    marked.sort_by_key(|(m, _)| reads.iter().position(|(r, _)| r.site == m.site));
    Some(marked)
}

/// The digests read, by site, and the sites that did not answer.
type Reads = (Vec<(ClusterMember, SiteDigests)>, Vec<String>);

/// Every compared site's digests, read once each has applied at least the highest
/// applied index any of them reports; and the sites that did not answer.
async fn read_digests(client: &ControlClient, compared: &[&ClusterMember]) -> Result<Reads, OpsError> {
    let mut statuses = Vec::new();
    for member in compared.iter().copied() {
        if let Ok(s) = client.status_of(member).await {
            statuses.push(s);
        }
    }
    let target = statuses.iter().filter_map(|s| s.applied_index).max().unwrap_or(0);
    let mut reads = Vec::new();
    let mut unreachable = Vec::new();
    for member in compared.iter().copied() {
        let mut tries = 0;
        loop {
            tries += 1;
            match client.digests(member, target, VERIFY_APPLY_WAIT_MS).await {
                Ok(digests) => reads.push((member.clone(), digests)),
                Err(e @ OpsError::Unexpected { .. }) => return Err(e),
                // A connection turned away (a site busy with handshakes after a
                // failover refuses some) is not a site that is down: ask again.
                Err(OpsError::Unreachable(e)) if tries < VERIFY_READ_TRIES => {
                    tracing::info!(site = %member.site, error = %e, tries, "digests not read; asking again");
                    tokio::time::sleep(VERIFY_READ_PAUSE).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(site = %member.site, error = %e, "not compared");
                    unreachable.push(member.site.clone());
                }
            }
            break;
        }
    }
    Ok((reads, unreachable))
}

/// How often a site's digests are asked for before it counts as unreachable, and
/// the pause between two tries.
const VERIFY_READ_TRIES: u32 = 3;
const VERIFY_READ_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// The divergence of one mailbox, with the messages that differ when asked for.
async fn divergence(
    client: &ControlClient,
    reads: &[(ClusterMember, SiteDigests)],
    mailbox: u64,
    views: BTreeMap<String, Option<MailboxDigest>>,
    list_messages: bool,
) -> Result<Divergence, OpsError> {
    let some = views.values().flatten().next();
    let name = some.map(|m| m.name.clone()).unwrap_or_default();
    let account = some.map(|m| m.account_address.clone()).unwrap_or_default();
    let mut differing_uids = BTreeMap::new();
    let mut messages = Vec::new();
    if list_messages {
        let mut lists = Vec::new();
        for (member, _) in reads {
            lists.push((member.site.clone(), client.messages(member, mailbox).await?));
        }
        differing_uids = uids_differing_from_the_first(&lists);
        messages = message_differences(&lists);
    }
    let outliers = outliers(&views);
    Ok(Divergence { mailbox, account, name, by_site: views, outliers, differing_uids, messages })
}

/// For each site after the first, the UIDs whose record differs from the first
/// site's (or exists on one side only).
fn uids_differing_from_the_first(lists: &[(String, Vec<MessageSummary>)]) -> BTreeMap<String, Vec<u32>> {
    let mut differing_uids = BTreeMap::new();
    let (_, reference) = &lists[0];
    for (site, list) in &lists[1..] {
        let mut uids: Vec<u32> = list
            .iter()
            .filter(|m| !reference.iter().any(|r| r.same_state(m)))
            .map(|m| m.uid)
            .chain(reference.iter().filter(|r| !list.iter().any(|m| r.same_state(m))).map(|m| m.uid))
            .collect();
        uids.sort_unstable();
        uids.dedup();
        differing_uids.insert(site.clone(), uids);
    }
    differing_uids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(uid: u32, modseq: u64, flags: u8) -> MessageSummary {
        MessageSummary {
            uid,
            modseq,
            flags,
            keywords: Vec::new(),
            internal_date: 1_700_000_000,
            size_bytes: 100,
            body: "00".repeat(32),
            body_present: true,
        }
    }

    #[test]
    fn the_site_disagreeing_with_the_majority_is_the_outlier() {
        let views: BTreeMap<String, u8> = [("bj".into(), 1), ("hz".into(), 1), ("sh".into(), 2)].into();
        assert_eq!(outliers(&views), ["sh"]);
        let split: BTreeMap<String, u8> = [("bj".into(), 1), ("sh".into(), 2)].into();
        assert!(outliers(&split).is_empty(), "two sites that disagree: no majority, no suspect");
    }

    #[test]
    fn only_messages_the_sites_disagree_on_are_listed_with_what_differs() {
        let same = message(1, 3, 0);
        let lists = vec![
            ("bj".to_string(), vec![same.clone(), message(2, 4, 0), message(3, 5, 0)]),
            ("hz".to_string(), vec![same.clone(), message(2, 4, 0), message(3, 5, 0)]),
            ("sh".to_string(), vec![same, message(2, 6, maildr_types::SystemFlags::FLAGGED)]),
        ];
        let differences = message_differences(&lists);
        let listed: Vec<(u32, Vec<String>)> = differences.iter().map(|d| (d.uid, d.fields.clone())).collect();
        assert_eq!(listed, [(2, vec!["modseq".into(), "flags".into()]), (3, vec!["absent".into()])]);
        assert_eq!(differences[1].by_site["sh"], None);

        let report = VerifyReport {
            applied_index: 9,
            sites: vec!["bj".into(), "hz".into(), "sh".into()],
            unreachable: vec![],
            lagged: vec!["lg".into()],
            mailboxes: 4,
            diverging: vec![Divergence {
                mailbox: 7,
                account: "bob@example.test".into(),
                name: "INBOX".into(),
                by_site: BTreeMap::new(),
                outliers: vec!["sh".into()],
                differing_uids: BTreeMap::new(),
                messages: differences,
            }],
        };
        let text = report.render();
        assert!(text.contains("DIVERGES: bob@example.test INBOX (mailbox 7)\n"), "{text}");
        assert!(text.contains("  UID 2 differs: modseq, flags\n"), "{text}");
        assert!(text.contains("    sh: modseq 6, flags (\\Flagged),"), "{text}");
        assert!(text.contains("  UID 3 differs: absent\n    bj: modseq 5"), "{text}");
        assert!(text.contains("    sh: no such message\n"), "{text}");
        assert!(text.contains("not compared: lg is lagged"), "{text}");
    }
}
