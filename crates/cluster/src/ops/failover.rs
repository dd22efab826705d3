//! Forced failover, for when the quorum is gone for good: what the standby may lose,
//! the operator's acceptance, the request, and the wait until the standby leads.
//!
//! It must never ask a site to promote itself before the operator accepted the loss
//! it reports, nor without the operator's name; the standby checks again itself.

use std::time::{Duration, Instant};

use maildr_config::SiteRole;
use serde::Serialize;
use utoipa::ToSchema;

use super::{ControlClient, OpsError};
use crate::status::{ApplyDelayStatus, ForcedFailoverRecord, PrimaryContact, SiteStatus};

/// How long one status call may take while waiting for a promoted standby.
const FAILOVER_POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause between two status calls while waiting for a promoted standby.
const FAILOVER_POLL_PAUSE: Duration = Duration::from_millis(200);

/// What a forced failover to a standby may lose, from the standby's own status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailoverLoss {
    /// The standby's site name.
    pub site: String,
    pub node_id: u64,
    /// The standby's last log index: what the lost primary committed after it is lost.
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// The last time the standby heard from a primary (`heard_ms_ago`: how long ago),
    /// and the primary's commit index then; absent when it has not since it started.
    pub primary_contact: Option<PrimaryContact>,
    /// Committed entries the standby lacked at that contact (the primary may have
    /// committed more since, unseen from the standby).
    pub lag_entries_at_contact: Option<u64>,
    /// For a held lagged site: its delay and hold. It is promoted with what it
    /// applied; the entries after its applied index are discarded.
    pub apply_delay: Option<ApplyDelayStatus>,
}

impl FailoverLoss {
    fn of(status: &SiteStatus) -> FailoverLoss {
        FailoverLoss {
            site: status.site.clone(),
            node_id: status.node_id,
            last_log_index: status.last_log_index,
            applied_index: status.applied_index,
            primary_contact: status.primary_contact.clone(),
            lag_entries_at_contact: status.primary_contact.as_ref().map(PrimaryContact::lag_entries_then),
            apply_delay: status.apply_delay.clone(),
        }
    }

    /// The loss in words, as `maildr cluster failover` prints it.
    pub fn render(&self) -> String {
        let show = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or("none".into());
        if let Some(hold) = self.apply_delay.as_ref().and_then(|d| d.hold.as_ref()) {
            return format!(
                "lagged site {} (node {}): held by {} at applied index {}; its log holds up to index {}\n\
                 DISCARDED: the {} entries after index {} that it received but did not apply, and everything the \
                 old cluster committed since. The new cluster starts from the state at index {}.\n",
                self.site,
                self.node_id,
                hold.by,
                show(self.applied_index),
                show(self.last_log_index),
                self.last_log_index.unwrap_or(0).saturating_sub(self.applied_index.unwrap_or(0)),
                show(self.applied_index),
                show(self.applied_index),
            );
        }
        let mut out = format!(
            "standby {} (node {}): last log index {}, applied index {}\n",
            self.site,
            self.node_id,
            show(self.last_log_index),
            show(self.applied_index)
        );
        match &self.primary_contact {
            Some(c) => out.push_str(&format!(
                "last heard from the primary (node {}, term {}) {:.1} s ago; the primary had committed index {} \
                 then, and the standby was {} entries behind\n",
                c.primary,
                c.term,
                c.heard_ms_ago as f64 / 1000.0,
                show(c.primary_committed_index),
                c.lag_entries_then()
            )),
            None => out.push_str("it has not heard from a primary since it started\n"),
        }
        let since = match &self.primary_contact {
            Some(c) => format!("{:.1} s ago", c.heard_ms_ago as f64 / 1000.0),
            None => "before the standby last started".into(),
        };
        out.push_str(&format!(
            "MAY BE LOST: whatever the old primary committed after index {}: what the standby lacked at the last \
             contact, and all mail acknowledged since then ({since})\n",
            show(self.last_log_index)
        ));
        out
    }
}

/// A forced failover the standby accepted: it restarts as the only voter and leads
/// once it is back (poll its status for `state: Leader`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FailoverReport {
    /// What may be lost, as the standby reported just before it was promoted.
    pub loss: FailoverLoss,
    /// The standby's record: who forced it, when, and its last log index.
    pub accepted: ForcedFailoverRecord,
}

/// What a forced failover to `to` would lose. Refused unless `to` is a standby that
/// answers and was not promoted already; changes nothing.
pub async fn failover_loss(client: &ControlClient, to: &str) -> Result<FailoverLoss, OpsError> {
    let target = client.member_named(to)?;
    if !target.role.is_learner() {
        return Err(OpsError::NotAStandby { site: to.to_string(), role: target.role.name() });
    }
    let status = client.status_of(target).await?;
    if let Some(done) = &status.forced_failover {
        return Err(OpsError::AlreadyPromoted { site: to.to_string(), detail: done.event_detail() });
    }
    if target.role == SiteRole::Lagged && status.apply_delay.as_ref().is_none_or(|d| d.hold.is_none()) {
        return Err(OpsError::Refused {
            site: to.to_string(),
            reason: "a lagged site is promoted only while held: run `maildr cluster hold-apply` first, so that the \
                     state it keeps is the one you chose"
                .into(),
        });
    }
    Ok(FailoverLoss::of(&status))
}

/// Forced failover, for when the quorum is gone for good: promote the standby `to`
/// to the only voter of a new cluster, recording `by` as the operator. Refused
/// (nothing changed) for anything but a standby, while the standby still hears from
/// a primary, and unless `accept_data_loss`. Returns once the standby accepted; it
/// then restarts, and [`wait_until_promoted`] waits for it to lead.
pub async fn failover(
    client: &ControlClient,
    to: &str,
    by: &str,
    accept_data_loss: bool,
) -> Result<FailoverReport, OpsError> {
    if by.trim().is_empty() {
        return Err(OpsError::NoOperator);
    }
    let loss = failover_loss(client, to).await?;
    if let Some(c) = loss.primary_contact.as_ref().filter(|c| c.heard_ms_ago < client.primary_silence_ms()) {
        return Err(OpsError::PrimaryAlive { site: to.to_string(), primary: c.primary, heard_ms_ago: c.heard_ms_ago });
    }
    if !accept_data_loss {
        return Err(OpsError::DataLossNotAccepted { site: to.to_string() });
    }
    let target = client.member_named(to)?.clone();
    let accepted = client.force_failover(&target, by.trim()).await?;
    Ok(FailoverReport { loss, accepted })
}

/// Wait until the standby `to`, promoted by [`failover`], leads; its status then.
pub async fn wait_until_promoted(client: &ControlClient, to: &str, within: Duration) -> Result<SiteStatus, OpsError> {
    let target = client.member_named(to)?.clone();
    let deadline = Instant::now() + within;
    loop {
        // The standby restarts in between: an unanswered call is expected.
        if let Ok(s) = client.status_within(&target, FAILOVER_POLL_TIMEOUT).await {
            if s.state == "Leader" && s.forced_failover.is_some() {
                return Ok(s);
            }
        }
        if Instant::now() >= deadline {
            return Err(OpsError::NotPromoted { site: to.to_string(), secs: within.as_secs() });
        }
        tokio::time::sleep(FAILOVER_POLL_PAUSE).await;
    }
}
