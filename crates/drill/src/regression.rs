//! What got worse since the previous drill of the same scenario.
//!
//! A drill that passes can still be worse than the one before it: the
//! failover took twice as long, a phase that used to happen did not, mail
//! that was acknowledged went missing. Each drill's report compares it with
//! the previous one in the archive ([`compare_with_previous`], called before
//! the report is archived), and the drill service's history flags the same
//! regressions on its trend with the same rule ([`regressions`]), so the two
//! never disagree.
//!
//! The baseline is the newest earlier drill of the same plan name that
//! measured something: a tabletop exercise measured nothing, and an aborted
//! drill stopped before its figures meant anything (an aborted drill is
//! itself compared, and "no longer passed" is then its regression).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::archive::{Archive, ArchiveError};
use crate::report::{DrillMode, Report, Rto, Verdict};

/// A phase regresses when it is this much slower than the previous drill's, in
/// percent, and by at least [`REGRESSION_MS_MIN`].
pub const REGRESSION_PERCENT: u64 = 20;
/// Smaller slow-downs are noise, whatever the ratio.
pub const REGRESSION_MS_MIN: u64 = 500;

/// One RTO phase, named as in report.json's `rto` (without `_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtoPhase {
    Detect,
    Elect,
    DnsCommitted,
    DnsServed,
    FirstSmtpOk,
    FirstImapOk,
    Total,
}

impl RtoPhase {
    /// In the order they happen in a failover.
    pub const ALL: [RtoPhase; 7] = [
        RtoPhase::Detect,
        RtoPhase::Elect,
        RtoPhase::DnsCommitted,
        RtoPhase::DnsServed,
        RtoPhase::FirstSmtpOk,
        RtoPhase::FirstImapOk,
        RtoPhase::Total,
    ];

    /// The name in report.json and in the drill service's history.
    pub fn key(self) -> &'static str {
        match self {
            RtoPhase::Detect => "detect",
            RtoPhase::Elect => "elect",
            RtoPhase::DnsCommitted => "dns_committed",
            RtoPhase::DnsServed => "dns_served",
            RtoPhase::FirstSmtpOk => "first_smtp_ok",
            RtoPhase::FirstImapOk => "first_imap_ok",
            RtoPhase::Total => "total",
        }
    }

    /// This phase's figure in a report's RTO.
    pub fn of(self, rto: &Rto) -> Option<u64> {
        match self {
            RtoPhase::Detect => rto.detect_ms,
            RtoPhase::Elect => rto.elect_ms,
            RtoPhase::DnsCommitted => rto.dns_committed_ms,
            RtoPhase::DnsServed => rto.dns_served_ms,
            RtoPhase::FirstSmtpOk => rto.first_smtp_ok_ms,
            RtoPhase::FirstImapOk => rto.first_imap_ok_ms,
            RtoPhase::Total => rto.total_ms,
        }
    }
}

/// One thing worse than in the previous drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Regression {
    /// The phase took longer, beyond [`REGRESSION_PERCENT`] and
    /// [`REGRESSION_MS_MIN`].
    Slower { phase: RtoPhase, now_ms: u64, was_ms: u64 },
    /// The phase was seen before and not now.
    NotReached { phase: RtoPhase, was_ms: u64 },
    /// More acknowledged mail was lost.
    MoreLost { now: u64, was: u64 },
    /// The previous drill passed; this one did not.
    NoLongerPassed { now: Verdict },
}

impl Regression {
    /// The RTO phase it is about, for the two kinds that have one.
    pub fn phase(&self) -> Option<RtoPhase> {
        match self {
            Regression::Slower { phase, .. } | Regression::NotReached { phase, .. } => Some(*phase),
            Regression::MoreLost { .. } | Regression::NoLongerPassed { .. } => None,
        }
    }
}

/// English, for logs and the drill service's history (`rto total: 20000 ms,
/// was 10000 ms`); the rendered report says it in its own language.
impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Regression::Slower { phase, now_ms, was_ms } => {
                write!(f, "rto {}: {now_ms} ms, was {was_ms} ms", phase.key())
            }
            Regression::NotReached { phase, was_ms } => write!(f, "rto {}: not reached, was {was_ms} ms", phase.key()),
            Regression::MoreLost { now, was } => write!(f, "rpo: {now} lost, was {was}"),
            Regression::NoLongerPassed { now } => write!(f, "verdict: {}, was passed", now.word()),
        }
    }
}

/// The figures of one drill that regressions are judged on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    pub verdict: Verdict,
    pub rto: Rto,
    pub rpo_lost: u64,
}

impl Figures {
    pub fn of(report: &Report) -> Figures {
        Figures { verdict: report.verdict, rto: report.rto.clone(), rpo_lost: report.rpo.lost }
    }
}

/// What is worse in `now` than in `before`: a slower RTO phase (beyond both
/// thresholds), a phase seen before and not now, more acknowledged mail lost,
/// a passed drill no longer passing.
pub fn regressions(before: &Figures, now: &Figures) -> Vec<Regression> {
    let mut out = Vec::new();
    for phase in RtoPhase::ALL {
        match (phase.of(&before.rto), phase.of(&now.rto)) {
            (Some(was_ms), Some(now_ms))
                if now_ms > was_ms
                    && now_ms - was_ms >= REGRESSION_MS_MIN
                    && (now_ms - was_ms) * 100 > was_ms * REGRESSION_PERCENT =>
            {
                out.push(Regression::Slower { phase, now_ms, was_ms })
            }
            (Some(was_ms), None) => out.push(Regression::NotReached { phase, was_ms }),
            _ => {}
        }
    }
    if now.rpo_lost > before.rpo_lost {
        out.push(Regression::MoreLost { now: now.rpo_lost, was: before.rpo_lost });
    }
    if before.verdict == Verdict::Passed && now.verdict != Verdict::Passed {
        out.push(Regression::NoLongerPassed { now: now.verdict });
    }
    out
}

/// Whether a past drill is a baseline for the next drill of its scenario: it
/// injected faults and measured them (not a tabletop exercise, not aborted).
pub fn is_baseline(verdict: Verdict, mode: Option<DrillMode>) -> bool {
    mode != Some(DrillMode::Tabletop) && verdict != Verdict::Aborted
}

/// A drill compared with the previous drill of its scenario (report.json's
/// `regressions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Comparison {
    /// The drill compared with.
    pub previous_drill_id: String,
    pub previous_started_at_ms: u64,
    pub previous_verdict: Verdict,
    /// What got worse; empty when nothing did.
    pub found: Vec<Regression>,
    /// Each RTO phase of the previous drill, for the report's table
    /// (`None`: not seen then).
    pub previous_rto: Rto,
    pub previous_rpo_lost: u64,
}

/// `report` compared with the newest archived drill of the same plan name
/// that started before it and is a baseline ([`is_baseline`]); `None` for a
/// tabletop exercise and for the first drill of a scenario. Archive entries
/// that cannot be read are passed over, as the history does.
pub fn compare_with_previous(archive: &Archive, report: &Report) -> Result<Option<Comparison>, ArchiveError> {
    if report.is_tabletop() {
        return Ok(None);
    }
    let history = archive.history()?;
    let previous = history.rows.iter().find(|row| {
        row.plan_name == report.plan.name
            && row.drill_id != report.drill_id
            && row.started_at_ms <= report.started_at_ms
            && is_baseline(row.verdict, row.mode)
    });
    let Some(row) = previous else { return Ok(None) };
    let before = archive.load(&row.drill_id)?;
    let found = regressions(&Figures::of(&before), &Figures::of(report));
    Ok(Some(Comparison {
        previous_drill_id: before.drill_id,
        previous_started_at_ms: before.started_at_ms,
        previous_verdict: before.verdict,
        found,
        previous_rto: before.rto,
        previous_rpo_lost: before.rpo.lost,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(total: Option<u64>, lost: u64, verdict: Verdict) -> Figures {
        Figures { verdict, rto: Rto { total_ms: total, ..Rto::default() }, rpo_lost: lost }
    }

    #[test]
    fn slower_phases_more_loss_and_a_lost_pass_are_regressions_and_noise_is_not() {
        let before = figures(Some(10_000), 0, Verdict::Passed);
        assert!(regressions(&before, &figures(Some(11_000), 0, Verdict::Passed)).is_empty(), "10 % slower is noise");
        assert!(
            regressions(&before, &figures(Some(12_000), 0, Verdict::Passed)).is_empty(),
            "20 % exactly is not over"
        );
        assert!(regressions(&before, &figures(Some(10_400), 0, Verdict::Passed)).is_empty());
        let worse = regressions(&before, &figures(Some(12_500), 2, Verdict::Failed));
        assert_eq!(
            worse,
            vec![
                Regression::Slower { phase: RtoPhase::Total, now_ms: 12_500, was_ms: 10_000 },
                Regression::MoreLost { now: 2, was: 0 },
                Regression::NoLongerPassed { now: Verdict::Failed },
            ]
        );
        let words: Vec<String> = worse.iter().map(|r| r.to_string()).collect();
        assert_eq!(words, ["rto total: 12500 ms, was 10000 ms", "rpo: 2 lost, was 0", "verdict: failed, was passed"]);
        assert_eq!(
            regressions(&before, &figures(None, 0, Verdict::Passed)),
            vec![Regression::NotReached { phase: RtoPhase::Total, was_ms: 10_000 }]
        );
        // 400 ms -> 700 ms is 75 % slower but under the 500 ms floor.
        let small = figures(Some(400), 0, Verdict::Passed);
        assert!(regressions(&small, &figures(Some(700), 0, Verdict::Passed)).is_empty());
        // At the floor and over the ratio: a regression.
        assert_eq!(regressions(&small, &figures(Some(900), 0, Verdict::Passed)).len(), 1);
        // A phase not seen before and seen now is no regression; nor is a failed
        // drill failing again.
        let failed = figures(None, 3, Verdict::Failed);
        assert!(regressions(&failed, &figures(Some(5_000), 3, Verdict::Failed)).is_empty());
    }

    #[test]
    fn regressions_read_and_write_as_tagged_json() {
        let r = Regression::Slower { phase: RtoPhase::FirstSmtpOk, now_ms: 3_000, was_ms: 1_000 };
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "slower", "phase": "first_smtp_ok", "now_ms": 3000, "was_ms": 1000})
        );
        assert_eq!(serde_json::from_value::<Regression>(json).unwrap(), r);
    }

    #[test]
    fn tabletop_exercises_and_aborted_drills_are_no_baseline() {
        assert!(is_baseline(Verdict::Passed, None));
        assert!(is_baseline(Verdict::Failed, Some(DrillMode::Live)));
        assert!(!is_baseline(Verdict::Aborted, None));
        assert!(!is_baseline(Verdict::Passed, Some(DrillMode::Tabletop)));
    }
}
