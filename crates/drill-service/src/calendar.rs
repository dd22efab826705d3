//! The calendar's decisions, as pure functions of (schedules, approvals, the time
//! last looked at, now): which runs came due, and whether each runs or is skipped
//! and why. No clock, no I/O: the scheduler loop reads the clock and acts on the
//! answer, and the tests pin the time.
//!
//! A due time is judged once. One the service first sees more than
//! [`ON_TIME_MS`] after it (the service was down, or stalled) is skipped as
//! `missed`: a drill is never run late, when the people told about it may no
//! longer expect it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use croner::Cron;

use crate::model::{skip, ApprovalRecord, Blackout, Schedule};

/// How late after its due time a run may still start.
pub const ON_TIME_MS: u64 = 5_000;
/// Missed runs recorded one by one per schedule and look; the rest are counted
/// in one more record.
pub const MISSED_RECORDS_MAX: usize = 100;
/// Due times counted per schedule and look (a every-second cron after a long
/// outage is counted up to this, then summarised).
pub const OCCURRENCES_COUNTED_MAX: usize = 100_000;

/// Parse a cron expression (UTC; five fields, or six with seconds first).
pub fn parse_cron(text: &str) -> Result<Cron, String> {
    Cron::new(text).with_seconds_optional().parse().map_err(|e| format!("cron {text:?}: {e}"))
}

fn to_time(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

fn to_ms(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp_millis()).unwrap_or(0)
}

/// The first due time strictly after `after_ms`.
pub fn next_after(cron: &Cron, after_ms: u64) -> Option<u64> {
    cron.find_next_occurrence(&to_time(after_ms), false).ok().map(to_ms)
}

/// Due times in `(after_ms, until_ms]`, at most `max`, and whether there were more.
pub fn occurrences(cron: &Cron, after_ms: u64, until_ms: u64, max: usize) -> (Vec<u64>, bool) {
    let mut out = Vec::new();
    let mut at = after_ms;
    while let Some(next) = next_after(cron, at).filter(|n| *n <= until_ms) {
        if out.len() == max {
            return (out, true);
        }
        out.push(next);
        at = next;
    }
    (out, false)
}

/// Parse `START/END`, both RFC 3339 (`2026-01-01T00:00:00Z/2026-01-08T00:00:00Z`).
pub fn parse_blackout(text: &str) -> Result<Blackout, String> {
    let (start, end) = text.split_once('/').ok_or_else(|| format!("blackout {text:?}: expected START/END"))?;
    let parse = |s: &str| {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| to_ms(t.with_timezone(&Utc)))
            .map_err(|e| format!("blackout {text:?}: {s:?} is not an RFC 3339 time: {e}"))
    };
    let blackout = Blackout { start_ms: parse(start)?, end_ms: parse(end)? };
    if blackout.end_ms <= blackout.start_ms {
        return Err(format!("blackout {text:?}: its end is not after its start"));
    }
    Ok(blackout)
}

/// The blackout window `at_ms` falls in (start included, end excluded).
pub fn in_blackout(blackouts: &[Blackout], at_ms: u64) -> Option<Blackout> {
    blackouts.iter().copied().find(|b| b.start_ms <= at_ms && at_ms < b.end_ms)
}

/// An RFC 3339 rendering of epoch ms, for messages.
pub fn rfc3339(ms: u64) -> String {
    to_time(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// What else is going on when a run comes due.
#[derive(Debug, Clone, Default)]
pub struct Situation {
    /// The global stop in force, described.
    pub stopped: Option<String>,
    /// The run in progress, described.
    pub busy: Option<String>,
}

/// What to do with one due run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip { reason: &'static str, detail: String },
}

/// Whether the run of `schedule` due at `due_at_ms`, first seen at `now_ms`, runs.
/// In order: missed, blackout, global stop, approvals, another drill running.
pub fn decide(
    schedule: &Schedule,
    due_at_ms: u64,
    now_ms: u64,
    approvals: &[ApprovalRecord],
    situation: &Situation,
) -> Decision {
    let skip = |reason, detail| Decision::Skip { reason, detail };
    let late_ms = now_ms.saturating_sub(due_at_ms);
    if late_ms > ON_TIME_MS {
        return skip(
            skip::MISSED,
            format!(
                "due at {}; the service was not running then (first seen {} s late); a drill is never run late",
                rfc3339(due_at_ms),
                late_ms / 1000
            ),
        );
    }
    if let Some(b) = in_blackout(&schedule.blackouts, due_at_ms) {
        return skip(
            skip::BLACKOUT,
            format!("due at {} inside the blackout {}/{}", rfc3339(due_at_ms), rfc3339(b.start_ms), rfc3339(b.end_ms)),
        );
    }
    if let Some(stop) = &situation.stopped {
        return skip(skip::STOPPED, stop.clone());
    }
    let approvers = approvers_of(approvals, &schedule.id, due_at_ms);
    if (approvers.len() as u64) < u64::from(schedule.approvals) {
        return skip(
            skip::NO_APPROVALS,
            format!(
                "{} of {} required approval(s) for the run due at {}{}",
                approvers.len(),
                schedule.approvals,
                rfc3339(due_at_ms),
                if approvers.is_empty() { String::new() } else { format!(" (from {})", approvers.join(", ")) }
            ),
        );
    }
    if let Some(busy) = &situation.busy {
        return skip(skip::BUSY, busy.clone());
    }
    Decision::Run
}

/// The distinct people who approved the run of `schedule_id` due at `due_at_ms`.
pub fn approvers_of(approvals: &[ApprovalRecord], schedule_id: &str, due_at_ms: u64) -> Vec<String> {
    let mut names: Vec<String> = approvals
        .iter()
        .filter(|a| a.schedule_id == schedule_id && a.due_at_ms == due_at_ms)
        .map(|a| a.by.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One thing the scheduler must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Tell the schedule's targets that its run at `due_at_ms` is coming.
    Announce { schedule_id: String, due_at_ms: u64 },
    /// A run came due: run it or record it skipped.
    Due { schedule_id: String, due_at_ms: u64, decision: Decision },
    /// More missed runs than are recorded one by one.
    MissedMore { schedule_id: String, count: usize, from_ms: u64, to_ms: u64 },
}

/// Everything due in `(checked_until_ms, now_ms]` (for a schedule created later,
/// from its creation), and announcements whose lead time has come
/// (`announced` maps a schedule to the due time it last announced). At most one
/// run is decided `Run` per look: the ones after it find the service busy.
pub fn look(
    schedules: &[Schedule],
    approvals: &[ApprovalRecord],
    announced: &BTreeMap<String, u64>,
    checked_until_ms: u64,
    now_ms: u64,
    situation: &Situation,
) -> Vec<Action> {
    let mut situation = situation.clone();
    let mut actions = Vec::new();
    for schedule in schedules {
        let Ok(cron) = parse_cron(&schedule.cron) else { continue };
        let from = checked_until_ms.max(schedule.created_at_ms);
        let (due, more) = occurrences(&cron, from, now_ms, OCCURRENCES_COUNTED_MAX);
        let mut missed = 0;
        let mut missed_span = (u64::MAX, 0);
        for due_at_ms in due {
            let decision = decide(schedule, due_at_ms, now_ms, approvals, &situation);
            if matches!(&decision, Decision::Skip { reason, .. } if *reason == skip::MISSED) {
                missed += 1;
                if missed > MISSED_RECORDS_MAX {
                    missed_span = (missed_span.0.min(due_at_ms), missed_span.1.max(due_at_ms));
                    continue;
                }
            }
            if decision == Decision::Run {
                situation.busy =
                    Some(format!("schedule {} started a drill due at {}", schedule.id, rfc3339(due_at_ms)));
            }
            actions.push(Action::Due { schedule_id: schedule.id.clone(), due_at_ms, decision });
        }
        if missed > MISSED_RECORDS_MAX || more {
            actions.push(Action::MissedMore {
                schedule_id: schedule.id.clone(),
                count: missed.saturating_sub(MISSED_RECORDS_MAX),
                from_ms: missed_span.0.min(now_ms),
                to_ms: missed_span.1,
            });
        }
        if schedule.notify_before_secs > 0 {
            if let Some(next) = next_after(&cron, now_ms) {
                let lead_ms = schedule.notify_before_secs.saturating_mul(1000);
                if next.saturating_sub(lead_ms) <= now_ms && announced.get(&schedule.id) != Some(&next) {
                    actions.push(Action::Announce { schedule_id: schedule.id.clone(), due_at_ms: next });
                }
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

    fn schedule(id: &str, cron: &str) -> Schedule {
        Schedule {
            id: id.into(),
            scenario: "node-failure".into(),
            cron: cron.into(),
            lab_dir: None,
            net: None,
            blackouts: Vec::new(),
            notify: Vec::new(),
            approvals: 0,
            notify_before_secs: 0,
            created_by: "alice".into(),
            created_at_ms: T0 - 3_600_000,
            next_due_at_ms: None,
        }
    }

    fn due(actions: &[Action]) -> Vec<(u64, Decision)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Due { due_at_ms, decision, .. } => Some((*due_at_ms, decision.clone())),
                _ => None,
            })
            .collect()
    }

    fn reason(d: &Decision) -> &'static str {
        match d {
            Decision::Run => "run",
            Decision::Skip { reason, .. } => reason,
        }
    }

    #[test]
    fn a_run_seen_on_time_runs_and_nothing_is_due_twice() {
        let s = vec![schedule("s1", "30 * * * * *")]; // every minute at :30
        let now = T0 + 30_250;
        let actions = look(&s, &[], &BTreeMap::new(), T0 + 30_000 - 250, now, &Situation::default());
        assert_eq!(due(&actions), vec![(T0 + 30_000, Decision::Run)]);
        // The next look starts where this one ended: nothing again.
        assert!(due(&look(&s, &[], &BTreeMap::new(), now, now + 250, &Situation::default())).is_empty());
        // Quarterly, five fields: the first of January, April, July, October at 03:00.
        let cron = parse_cron("0 3 1 */3 *").unwrap();
        let (q, more) = occurrences(&cron, T0, T0 + 365 * 86_400_000, 10);
        assert_eq!(q.len(), 4);
        assert!(!more);
        assert_eq!(rfc3339(q[1]), "2026-04-01T03:00:00Z");
    }

    #[test]
    fn runs_due_while_the_service_was_down_are_missed_never_run_late() {
        let s = vec![schedule("s1", "0 * * * * *")]; // every minute
                                                     // Down from T0+10 s to T0+185 s: due at +60, +120, +180 s.
        let actions = look(&s, &[], &BTreeMap::new(), T0 + 10_000, T0 + 185_000, &Situation::default());
        let got = due(&actions);
        assert_eq!(got.iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![T0 + 60_000, T0 + 120_000, T0 + 180_000]);
        assert_eq!(reason(&got[0].1), skip::MISSED);
        assert_eq!(reason(&got[1].1), skip::MISSED);
        // +180 s is seen 5 s late: still on time (ON_TIME_MS), so it runs.
        assert_eq!(got[2].1, Decision::Run);
        // One millisecond later it would be missed.
        let late = look(&s, &[], &BTreeMap::new(), T0 + 170_000, T0 + 185_001, &Situation::default());
        assert_eq!(reason(&due(&late)[0].1), skip::MISSED);
    }

    #[test]
    fn a_long_outage_records_a_bounded_number_of_missed_runs() {
        let s = vec![schedule("s1", "* * * * * *")]; // every second
        let actions = look(&s, &[], &BTreeMap::new(), T0, T0 + 3_600_000, &Situation::default());
        let got = due(&actions);
        // Due at +1 s .. +3600 s: the last six are at most 5 s late (on time): the
        // first of them runs, the other five find it running.
        assert_eq!(got.len(), MISSED_RECORDS_MAX + 6, "100 missed one by one, then the six on time");
        assert!(got[..MISSED_RECORDS_MAX].iter().all(|(_, d)| reason(d) == skip::MISSED));
        assert_eq!(got[MISSED_RECORDS_MAX], (T0 + 3_595_000, Decision::Run));
        assert!(got[MISSED_RECORDS_MAX + 1..].iter().all(|(_, d)| reason(d) == skip::BUSY));
        let more = actions.iter().find_map(|a| match a {
            Action::MissedMore { count, .. } => Some(*count),
            _ => None,
        });
        assert_eq!(more, Some(3600 - 6 - MISSED_RECORDS_MAX));
    }

    #[test]
    fn blackouts_stops_approvals_and_a_busy_service_skip_in_that_order() {
        let mut s = schedule("s1", "0 * * * * *");
        s.approvals = 2;
        s.blackouts = vec![parse_blackout("2026-01-01T00:00:30Z/2026-01-01T00:01:30Z").unwrap()];
        let approval =
            |by: &str, due: u64| ApprovalRecord { schedule_id: "s1".into(), due_at_ms: due, by: by.into(), at_ms: T0 };
        let busy = Situation { stopped: None, busy: Some("drill x".into()) };
        let stopped = Situation { stopped: Some("stopped by bob".into()), busy: Some("drill x".into()) };
        // In the blackout (start included): skipped whatever else holds.
        assert_eq!(reason(&decide(&s, T0 + 60_000, T0 + 60_000, &[], &stopped)), skip::BLACKOUT);
        // The end is excluded: at +90 s the window is over.
        assert!(in_blackout(&s.blackouts, T0 + 90_000).is_none());
        assert!(in_blackout(&s.blackouts, T0 + 30_000).is_some());
        let due = T0 + 120_000;
        assert_eq!(reason(&decide(&s, due, due, &[], &stopped)), skip::STOPPED);
        assert_eq!(reason(&decide(&s, due, due, &[], &Situation::default())), skip::NO_APPROVALS);
        // The same approver twice counts once; an approval of another run does not count.
        let twice = [approval("carol", due), approval("carol", due), approval("dave", due + 60_000)];
        match decide(&s, due, due, &twice, &Situation::default()) {
            Decision::Skip { reason, detail } => {
                assert_eq!(reason, skip::NO_APPROVALS);
                assert!(detail.contains("1 of 2") && detail.contains("carol"), "{detail}");
            }
            Decision::Run => panic!("one distinct approver of two"),
        }
        let two = [approval("carol", due), approval("dave", due)];
        assert_eq!(decide(&s, due, due, &two, &Situation::default()), Decision::Run);
        assert_eq!(reason(&decide(&s, due, due, &two, &busy)), skip::BUSY);
    }

    #[test]
    fn two_schedules_due_at_once_run_one_and_the_other_finds_the_service_busy() {
        let s = vec![schedule("a", "0 * * * * *"), schedule("b", "0 * * * * *")];
        let got = due(&look(&s, &[], &BTreeMap::new(), T0 + 59_900, T0 + 60_100, &Situation::default()));
        assert_eq!(got[0].1, Decision::Run);
        assert_eq!(reason(&got[1].1), skip::BUSY);
    }

    #[test]
    fn the_lead_time_announcement_comes_once_per_run() {
        let mut s = schedule("s1", "0 0 * * * *"); // hourly
        s.notify_before_secs = 600;
        let s = vec![s];
        let due_at = T0 + 3_600_000;
        // 11 minutes before: not yet; 10 minutes before: announced; announced once.
        assert!(look(&s, &[], &BTreeMap::new(), T0, due_at - 660_000, &Situation::default()).is_empty());
        let actions = look(&s, &[], &BTreeMap::new(), T0, due_at - 600_000, &Situation::default());
        assert_eq!(actions, vec![Action::Announce { schedule_id: "s1".into(), due_at_ms: due_at }]);
        let announced = BTreeMap::from([("s1".to_string(), due_at)]);
        assert!(look(&s, &[], &announced, due_at - 600_000, due_at - 300_000, &Situation::default()).is_empty());
    }

    #[test]
    fn blackouts_and_crons_are_parsed_or_refused_with_the_reason() {
        assert!(parse_cron("not a cron").is_err());
        assert!(parse_cron("*/5 * * * * *").is_ok());
        assert!(parse_blackout("2026-01-01T00:00:00Z").unwrap_err().contains("START/END"));
        assert!(parse_blackout("2026-01-02T00:00:00Z/2026-01-01T00:00:00Z").unwrap_err().contains("not after"));
        assert!(parse_blackout("yesterday/today").unwrap_err().contains("RFC 3339"));
        let b = parse_blackout("2026-01-01T08:00:00+08:00/2026-01-01T01:00:00Z").unwrap();
        assert_eq!((b.start_ms, b.end_ms), (T0, T0 + 3_600_000));
    }
}
