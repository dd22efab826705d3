//! Planned switchover: the primary hands its lead to a caught-up data site.
//!
//! The checks that matter are the primary's own (`replicated/handover.rs`); this
//! module must never pick a target that is not a data site, nor ask anyone but the
//! primary.

pub use maildr_api_types::cluster::SwitchoverReport;
use maildr_config::SiteRole;

use super::{ControlClient, OpsError};

/// Planned switchover: ask the primary to hand its lead to data site `to`. The
/// primary refuses unless `to` is healthy and caught up.
pub async fn switchover(client: &ControlClient, to: &str) -> Result<SwitchoverReport, OpsError> {
    let target = client.member_named(to)?.clone();
    if target.role != SiteRole::Data {
        return Err(OpsError::NotADataSite { site: to.to_string(), role: target.role.name() });
    }
    let local = client.local().clone();
    let leader = client.status_of(&local).await?.leader.ok_or(OpsError::NoPrimary)?;
    let primary =
        client.members().iter().find(|m| m.node_id == leader).ok_or(OpsError::PrimaryNotConfigured(leader))?.clone();
    client.hand_over(&primary, &target).await
}
