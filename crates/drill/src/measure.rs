//! From raw observations to the figures an auditor reads: RTO phases, RPO,
//! service gaps, latency percentiles, objectives met or missed.
//!
//! Pure functions over samples, events and counts, so every rule here is unit
//! tested without a deployment. Nothing here talks to the network.

use std::collections::BTreeMap;

use crate::flow::{MailFlow, Message};
use crate::plan::Objectives;
use crate::report::{ObjectiveResult, ProbeCount, ProbeSample, Protocol, Rpo, Rto, ServiceGap};

/// Most lost-message tags listed in a report.
pub const LOST_TAGS_MAX: usize = 100;

/// A control-plane event as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEvent {
    pub at_ms: u64,
    pub kind: String,
    pub site: Option<String>,
    pub detail: String,
}

/// When a protocol came back after the fault, from the clients' side: the first
/// success of an exchange that began after the first failure following the fault
/// was seen (exchanges overlap: one that began before the outage showed and
/// finishes after it says nothing about recovery); when nothing failed, the first
/// success after the fault. Milliseconds after `fault_at_ms`.
pub fn first_ok_after_fault(samples: &[ProbeSample], protocol: Protocol, fault_at_ms: u64) -> Option<u64> {
    let after: Vec<&ProbeSample> =
        samples.iter().filter(|s| s.protocol == protocol && s.at_ms >= fault_at_ms).collect();
    match after.iter().find(|s| !s.outcome.is_ok()) {
        Some(failure) => after
            .iter()
            .filter(|s| s.outcome.is_ok() && s.at_ms >= failure.at_ms && started_at_ms(s) >= failure.at_ms)
            .map(|s| s.at_ms - fault_at_ms)
            .min(),
        None => after.iter().find(|s| s.outcome.is_ok()).map(|s| s.at_ms - fault_at_ms),
    }
}

/// When a sample's exchange began: its answer time less the exchange and the
/// client's own name lookup.
pub fn started_at_ms(s: &ProbeSample) -> u64 {
    s.at_ms.saturating_sub(s.latency_ms).saturating_sub(s.lookup_ms.unwrap_or(0))
}

/// The longest stretch between two successes of a protocol with only failures
/// between them (0 when nothing failed between successes). A failure streak at
/// the end counts up to `end_at_ms`.
pub fn longest_gap(samples: &[ProbeSample], protocol: Protocol, end_at_ms: u64) -> ServiceGap {
    let mut best = ServiceGap { protocol, longest_ms: 0, from_at_ms: None, to_at_ms: None };
    let mut last_ok: Option<u64> = None;
    let mut failed_since_ok = false;
    let mut first = None;
    for s in samples.iter().filter(|s| s.protocol == protocol) {
        first.get_or_insert(s.at_ms);
        if s.outcome.is_ok() {
            if failed_since_ok {
                let from = last_ok.or(first).unwrap_or(s.at_ms);
                if s.at_ms.saturating_sub(from) > best.longest_ms {
                    best = ServiceGap {
                        protocol,
                        longest_ms: s.at_ms.saturating_sub(from),
                        from_at_ms: Some(from),
                        to_at_ms: Some(s.at_ms),
                    };
                }
            }
            last_ok = Some(s.at_ms);
            failed_since_ok = false;
        } else {
            failed_since_ok = true;
        }
    }
    if failed_since_ok {
        let from = last_ok.or(first).unwrap_or(end_at_ms);
        if end_at_ms.saturating_sub(from) > best.longest_ms {
            best = ServiceGap {
                protocol,
                longest_ms: end_at_ms.saturating_sub(from),
                from_at_ms: Some(from),
                to_at_ms: None,
            };
        }
    }
    best
}

/// The `q`-quantile (0..=1) of the latencies, nearest rank.
pub fn percentile(latencies: &mut [u64], q: f64) -> Option<u64> {
    if latencies.is_empty() {
        return None;
    }
    latencies.sort_unstable();
    // A float-to-int `as` saturates (NaN gives 0), and the clamp keeps the rank in range.
    #[allow(clippy::cast_possible_truncation)]
    let rank = ((q * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len());
    Some(latencies[rank - 1])
}

/// Ok/failed counts and latency percentiles of the successful exchanges.
pub fn probe_counts(samples: &[ProbeSample]) -> Vec<ProbeCount> {
    Protocol::ALL
        .iter()
        .map(|p| {
            let of: Vec<&ProbeSample> = samples.iter().filter(|s| s.protocol == *p).collect();
            let mut ok: Vec<u64> = of.iter().filter(|s| s.outcome.is_ok()).map(|s| s.latency_ms).collect();
            let ok_n = ok.len() as u64;
            ProbeCount {
                protocol: *p,
                ok: ok_n,
                failed: of.len() as u64 - ok_n,
                p50_ms: percentile(&mut ok, 0.50),
                p99_ms: percentile(&mut ok, 0.99),
            }
        })
        .collect()
}

/// The first event of `kind` at or after the fault, in ms after it.
fn event_after(events: &[ClusterEvent], kind: &str, fault_at_ms: u64) -> Option<u64> {
    events.iter().filter(|e| e.kind == kind && e.at_ms >= fault_at_ms).map(|e| e.at_ms - fault_at_ms).min()
}

/// The RTO phases of a drill whose first fault was at `fault_at_ms`.
pub fn rto(fault_at_ms: Option<u64>, events: &[ClusterEvent], samples: &[ProbeSample]) -> Rto {
    let Some(fault) = fault_at_ms else { return Rto::default() };
    let mut rto = Rto {
        fault_at_ms: Some(fault),
        detect_ms: event_after(events, "detected", fault),
        elect_ms: event_after(events, "elected", fault),
        dns_committed_ms: event_after(events, "dns_committed", fault),
        dns_served_ms: event_after(events, "dns_served", fault),
        first_smtp_ok_ms: first_ok_after_fault(samples, Protocol::Smtp, fault),
        first_imap_ok_ms: first_ok_after_fault(samples, Protocol::Imap, fault),
        total_ms: None,
    };
    rto.total_ms = [
        rto.detect_ms,
        rto.elect_ms,
        rto.dns_committed_ms,
        rto.dns_served_ms,
        rto.first_smtp_ok_ms,
        rto.first_imap_ok_ms,
    ]
    .into_iter()
    .flatten()
    .max();
    rto
}

/// How many times each tag was found in the mailboxes of each site.
pub type Found = BTreeMap<String, BTreeMap<String, u32>>;

/// Acknowledged against found: `found` maps site → tag → copies.
pub fn rpo(messages: &[Message], found: &Found) -> Rpo {
    let mut r = Rpo { reconciled_at: found.keys().cloned().collect(), ..Default::default() };
    for m in messages {
        r.deferred += u64::from(m.deferred);
        if m.acknowledged.is_none() {
            r.refused += u64::from(m.refused.is_some());
            r.given_up += u64::from(m.given_up);
            continue;
        }
        r.acknowledged += 1;
        let copies: Vec<u32> = found.values().map(|tags| tags.get(&m.tag).copied().unwrap_or(0)).collect();
        if !found.is_empty() && copies.iter().all(|c| *c >= 1) {
            r.found += 1;
        } else {
            r.lost += 1;
            if r.lost_tags.len() < LOST_TAGS_MAX {
                r.lost_tags.push(m.tag.clone());
            }
        }
        r.duplicated += u64::from(copies.iter().any(|c| *c > 1));
    }
    r
}

/// Where each flow's messages are read back: (recipient, flow).
pub fn recipients(messages: &[Message]) -> Vec<(String, MailFlow)> {
    let mut out: Vec<(String, MailFlow)> = Vec::new();
    for m in messages {
        if !out.iter().any(|(r, _)| r == &m.recipient) {
            out.push((m.recipient.clone(), m.flow));
        }
    }
    out
}

/// Inputs to the objectives.
pub struct Measured<'a> {
    pub rto: &'a Rto,
    pub rpo: &'a Rpo,
    /// Whether the reconciliation read at least one site (RPO is unknown otherwise).
    pub reconciled: bool,
    pub smtp_p99_ms: Option<u64>,
}

/// Each objective of the plan with what was measured; absent objectives are left out.
pub fn objectives(o: &Objectives, m: &Measured<'_>) -> Vec<ObjectiveResult> {
    let mut out = Vec::new();
    let mut push = |name: &str, target: Option<u64>, measured: Option<u64>, unit: &str| {
        if let Some(target) = target {
            out.push(ObjectiveResult {
                name: name.into(),
                target,
                measured,
                unit: unit.into(),
                met: measured.is_some_and(|v| v <= target),
            });
        }
    };
    push("rto_smtp_ms", o.rto_smtp_ms, m.rto.first_smtp_ok_ms, "ms");
    push("rto_imap_ms", o.rto_imap_ms, m.rto.first_imap_ok_ms, "ms");
    push("rto_total_ms", o.rto_total_ms, m.rto.total_ms, "ms");
    let lost = m.rpo.lost.max(m.rpo.missing_during_outage.unwrap_or(0));
    push("rpo_messages", Some(o.rpo_messages), m.reconciled.then_some(lost), "messages");
    push("max_deferred", o.max_deferred, Some(m.rpo.deferred), "messages");
    push("smtp_p99_ms", o.smtp_p99_ms, m.smtp_p99_ms, "ms");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::ProbeOutcome;

    fn s(at_ms: u64, protocol: Protocol, ok: bool) -> ProbeSample {
        ProbeSample {
            at_ms,
            protocol,
            target: "bj".into(),
            outcome: if ok { ProbeOutcome::Ok } else { ProbeOutcome::Unreachable },
            latency_ms: at_ms % 7,
            lookup_ms: None,
            detail: String::new(),
        }
    }

    fn msg(tag: &str, acked: bool, deferred: bool) -> Message {
        Message {
            tag: tag.into(),
            flow: MailFlow::Mx,
            recipient: "alice@example.test".into(),
            first_attempt_at_ms: 0,
            attempts: 1,
            acknowledged: acked.then(|| (1, "sh".to_string())),
            deferred,
            refused: None,
            given_up: !acked,
            last_reply: String::new(),
        }
    }

    #[test]
    fn an_exchange_begun_before_the_outage_showed_does_not_count_as_recovery() {
        let at = |at_ms: u64, ok: bool, latency_ms: u64| ProbeSample { latency_ms, ..s(at_ms, Protocol::Imap, ok) };
        let samples = vec![
            at(1_010, false, 5),  // the outage shows
            at(1_066, true, 300), // began at 766, before it showed
            at(2_500, false, 3_000),
            at(3_200, true, 50), // began at 3150: the service is back
        ];
        assert_eq!(first_ok_after_fault(&samples, Protocol::Imap, 1_000), Some(2_200));
    }

    #[test]
    fn samples_out_of_time_order_measure_without_panicking() {
        let samples =
            vec![s(5_000, Protocol::Smtp, true), s(4_000, Protocol::Smtp, false), s(3_000, Protocol::Smtp, true)];
        let gap = longest_gap(&samples, Protocol::Smtp, 2_000);
        assert!(gap.longest_ms <= 2_000, "{gap:?}");
        let windows = load_windows(&samples, 1_000, Some(4_500), Some(4_000), 3_000);
        assert_eq!(windows.len(), 3);
        assert!(windows.iter().all(|w| w.from_ms <= w.to_ms), "{windows:?}");
    }

    #[test]
    fn recovery_is_the_first_success_after_the_outage_the_fault_caused() {
        let samples = [
            s(900, Protocol::Imap, true),
            s(1100, Protocol::Imap, true),
            s(1500, Protocol::Imap, false),
            s(2000, Protocol::Imap, false),
            s(4200, Protocol::Imap, true),
            s(1050, Protocol::Smtp, true),
        ];
        assert_eq!(first_ok_after_fault(&samples, Protocol::Imap, 1000), Some(3200));
        assert_eq!(first_ok_after_fault(&samples, Protocol::Smtp, 1000), Some(50), "never failed: first success");
        assert_eq!(first_ok_after_fault(&samples, Protocol::Dns, 1000), None);
        let gap = longest_gap(&samples, Protocol::Imap, 5000);
        assert_eq!((gap.longest_ms, gap.from_at_ms, gap.to_at_ms), (3100, Some(1100), Some(4200)));
    }

    #[test]
    fn an_outage_that_never_ends_is_a_gap_to_the_end_and_no_recovery() {
        let samples = [s(100, Protocol::Smtp, true), s(200, Protocol::Smtp, false), s(300, Protocol::Smtp, false)];
        let gap = longest_gap(&samples, Protocol::Smtp, 1000);
        assert_eq!((gap.longest_ms, gap.to_at_ms), (900, None));
        assert_eq!(first_ok_after_fault(&samples, Protocol::Smtp, 150), None);
        assert_eq!(longest_gap(&[], Protocol::Smtp, 1000).longest_ms, 0);
    }

    #[test]
    fn rto_phases_come_from_events_after_the_fault_and_total_is_the_latest() {
        let ev = |at_ms, kind: &str| ClusterEvent { at_ms, kind: kind.into(), site: None, detail: String::new() };
        let events = [
            ev(500, "elected"),
            ev(1300, "elected"),
            ev(1400, "detected"),
            ev(1600, "dns_committed"),
            ev(1700, "dns_served"),
        ];
        let samples = [s(1200, Protocol::Smtp, false), s(1900, Protocol::Smtp, true), s(2500, Protocol::Imap, true)];
        let r = rto(Some(1000), &events, &samples);
        assert_eq!(r.elect_ms, Some(300), "the election before the fault does not count");
        assert_eq!(r.detect_ms, Some(400));
        assert_eq!(r.dns_served_ms, Some(700));
        assert_eq!(r.first_smtp_ok_ms, Some(900));
        assert_eq!(r.first_imap_ok_ms, Some(1500));
        assert_eq!(r.total_ms, Some(1500));
        assert_eq!(rto(None, &events, &samples), Rto::default());
    }

    #[test]
    fn rpo_counts_an_acknowledged_message_missing_at_any_site_as_lost() {
        let messages = [msg("a", true, false), msg("b", true, true), msg("c", false, true), msg("d", true, false)];
        let found: Found = BTreeMap::from([
            ("bj".to_string(), BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 2), ("d".to_string(), 1)])),
            ("sh".to_string(), BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 1)])),
        ]);
        let r = rpo(&messages, &found);
        assert_eq!((r.acknowledged, r.found, r.lost, r.duplicated, r.deferred, r.given_up), (3, 2, 1, 1, 2, 1));
        assert_eq!(r.lost_tags, vec!["d".to_string()]);
        let none = rpo(&messages, &Found::new());
        assert_eq!(none.lost, 3, "with no site read, nothing acknowledged is proven present");
    }

    #[test]
    fn objectives_are_met_only_when_measured_within_target() {
        let r = Rto { first_smtp_ok_ms: Some(900), first_imap_ok_ms: None, total_ms: Some(900), ..Default::default() };
        let p = Rpo { lost: 0, deferred: 7, ..Default::default() };
        let o = Objectives {
            rto_smtp_ms: Some(1000),
            rto_imap_ms: Some(1000),
            max_deferred: Some(5),
            ..Default::default()
        };
        let got = objectives(&o, &Measured { rto: &r, rpo: &p, reconciled: true, smtp_p99_ms: None });
        let met: Vec<(&str, bool)> = got.iter().map(|o| (o.name.as_str(), o.met)).collect();
        assert_eq!(
            met,
            [("rto_smtp_ms", true), ("rto_imap_ms", false), ("rpo_messages", true), ("max_deferred", false)]
        );
        let unknown = objectives(&o, &Measured { rto: &r, rpo: &p, reconciled: false, smtp_p99_ms: None });
        assert!(!unknown.iter().find(|o| o.name == "rpo_messages").unwrap().met, "an unmeasured RPO is not met");
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&mut v, 0.5), Some(50));
        assert_eq!(percentile(&mut v, 0.99), Some(99));
        assert_eq!(percentile(&mut [7], 0.99), Some(7));
        assert_eq!(percentile(&mut [], 0.5), None);
    }
}

/// Throughput and latency of the mail flows in each window of the drill: before
/// the fault, during the outage (`fault_at_ms` to `recovered_at_ms`) and after.
/// Without a fault, one `before` window covers the whole drill.
pub fn load_windows(
    samples: &[ProbeSample],
    started_at_ms: u64,
    fault_at_ms: Option<u64>,
    recovered_at_ms: Option<u64>,
    finished_at_ms: u64,
) -> Vec<crate::report::LoadWindow> {
    use crate::report::{LoadWindow, WindowName};
    let mut bounds = Vec::new();
    match fault_at_ms {
        None => bounds.push((WindowName::Before, started_at_ms, finished_at_ms)),
        Some(fault) => {
            let recovered = recovered_at_ms.unwrap_or(finished_at_ms).clamp(fault, finished_at_ms.max(fault));
            bounds.push((WindowName::Before, started_at_ms, fault));
            bounds.push((WindowName::During, fault, recovered));
            bounds.push((WindowName::After, recovered, finished_at_ms.max(recovered)));
        }
    }
    bounds
        .into_iter()
        .map(|(window, from_ms, to_ms)| LoadWindow {
            window,
            from_ms,
            to_ms,
            flows: [Protocol::Smtp, Protocol::Submission]
                .into_iter()
                .map(|protocol| flow_window(samples, protocol, from_ms, to_ms))
                .collect(),
        })
        .collect()
}

fn flow_window(samples: &[ProbeSample], protocol: Protocol, from_ms: u64, to_ms: u64) -> crate::report::FlowWindow {
    let of: Vec<&ProbeSample> =
        samples.iter().filter(|s| s.protocol == protocol && s.at_ms >= from_ms && s.at_ms < to_ms).collect();
    let mut ok: Vec<u64> = of.iter().filter(|s| s.outcome.is_ok()).map(|s| s.latency_ms).collect();
    let acknowledged = ok.len() as u64;
    let failed_attempts =
        of.iter().filter(|s| !s.outcome.is_ok() && s.outcome != crate::report::ProbeOutcome::Refused).count() as u64;
    let seconds = (to_ms.saturating_sub(from_ms)) as f64 / 1000.0;
    crate::report::FlowWindow {
        protocol,
        acknowledged,
        per_second: if seconds > 0.0 { (acknowledged as f64 / seconds * 10.0).round() / 10.0 } else { 0.0 },
        failed_attempts,
        p50_ms: percentile(&mut ok, 0.50),
        p90_ms: percentile(&mut ok, 0.90),
        p99_ms: percentile(&mut ok, 0.99),
    }
}
