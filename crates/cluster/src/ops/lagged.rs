//! The lagged site's hold, asked by the operator: stop its applies to keep the state
//! from before a corruption, and let it apply again.
//!
//! It must never ask anything but a configured lagged site, nor hold without the
//! operator's name.

use maildr_config::{ClusterMember, SiteRole};

use super::{ControlClient, OpsError};
use crate::raft::apply_delay::ApplyHold;

/// Stop the lagged site `site` from applying anything further, recording `by` as
/// the operator: the state it holds is then kept for recovery until released.
/// Refused (nothing changed) for any other role.
pub async fn hold_apply(client: &ControlClient, site: &str, by: &str) -> Result<ApplyHold, OpsError> {
    if by.trim().is_empty() {
        return Err(OpsError::NoOperator);
    }
    let target = lagged_member(client, site)?;
    client.hold_apply(&target, by.trim()).await
}

/// Let the lagged site `site` apply again; the hold it lifted, if it was held.
pub async fn release_apply(client: &ControlClient, site: &str) -> Result<Option<ApplyHold>, OpsError> {
    let target = lagged_member(client, site)?;
    client.release_apply(&target).await
}

fn lagged_member(client: &ControlClient, site: &str) -> Result<ClusterMember, OpsError> {
    let target = client.member_named(site)?;
    if target.role != SiteRole::Lagged {
        return Err(OpsError::NotLagged { site: site.to_string(), role: target.role.name() });
    }
    Ok(target.clone())
}
