//! Forced failover, for when the quorum is gone for good: what the standby may lose,
//! the operator's acceptance, the request, and the wait until the standby leads.
//!
//! It must never ask a site to promote itself before the operator accepted the loss
//! it reports, nor without the operator's name; the standby checks again itself.

pub use maildr_api_types::cluster::{FailoverLoss, FailoverReport};
use std::time::{Duration, Instant};

use maildr_config::SiteRole;

use super::{ControlClient, OpsError};
use crate::status::SiteStatus;

/// How long one status call may take while waiting for a promoted standby.
const FAILOVER_POLL_TIMEOUT: Duration = Duration::from_secs(3);

/// Pause between two status calls while waiting for a promoted standby.
const FAILOVER_POLL_PAUSE: Duration = Duration::from_millis(200);

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
    refuse_while_a_member_has_a_primary(client, to).await?;
    if !accept_data_loss {
        return Err(OpsError::DataLossNotAccepted { site: to.to_string() });
    }
    let target = client.member_named(to)?.clone();
    let accepted = client.force_failover(&target, by.trim()).await?;
    Ok(FailoverReport { loss, accepted })
}

/// Ask every other member the operator can reach: refused while one leads or
/// follows a primary (the standby may only be cut off from a healthy quorum; it
/// checks again itself, from where it stands). Members that do not answer within
/// [`FAILOVER_ASK_TIMEOUT`] are taken as lost.
async fn refuse_while_a_member_has_a_primary(client: &ControlClient, to: &str) -> Result<(), OpsError> {
    for member in client.members().iter().filter(|m| m.site != to) {
        let Ok(status) = client.status_within(member, FAILOVER_ASK_TIMEOUT).await else { continue };
        if let Some(primary) = status.primary_seen() {
            return Err(OpsError::QuorumAlive { site: status.site.clone(), primary, term: status.term });
        }
    }
    Ok(())
}

/// How long each member has to answer before a forced failover counts it as lost.
const FAILOVER_ASK_TIMEOUT: Duration = Duration::from_secs(3);

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
