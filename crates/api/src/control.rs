//! The seam between the admin API and the control plane (`maildr-control`: health
//! probes from every site, the failover event log, DNS steering, forced failover).
//!
//! The API serves five endpoints from whatever implements [`ControlPlane`]; the
//! binary hands one in with [`crate::ApiState::with_control_plane`]. Without one
//! those endpoints answer 503 "control plane not running". The answers are the
//! contract's types (`maildr_api_types::control`); forced failover is
//! `maildr_cluster::ops::failover` and answers its typed report.
//!
//! This module must never decide anything about failover itself: it only carries
//! requests to the control plane and its answers back.

use std::future::Future;
use std::pin::Pin;

use maildr_api_types::cluster::FailoverReport;
pub use maildr_api_types::cluster::FailoverRequest;
use maildr_api_types::control::{DnsRecords, EventList, HealthHistory, HealthReport};
use maildr_cluster::ops::OpsError;

/// What a control-plane call returns (boxed so the trait can be a `dyn` object).
pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ControlPlaneError>> + Send + 'a>>;

/// Why the control plane did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    /// The request names something that does not exist (409 is for state conflicts).
    #[error("{0}")]
    NotFound(String),
    /// The current state refuses the request (for failover: the target is not
    /// eligible, a failover is under way, …).
    #[error("{0}")]
    Refused(String),
    /// Try again later.
    #[error("{0}")]
    Unavailable(String),
    /// This control plane does not offer it (yet).
    #[error("{0}")]
    NotImplemented(String),
    /// A cluster operation refused or failed (answered like the `/api/cluster` ones).
    #[error(transparent)]
    Ops(#[from] OpsError),
}

/// The control plane as the admin API sees it.
pub trait ControlPlane: Send + Sync {
    /// Health of every site as seen by every observer.
    fn health(&self) -> ControlFuture<'_, HealthReport>;
    /// The failover event log: detected, elected, dns_committed, dns_served, with
    /// timestamps in milliseconds; replicated events after `after_id`, at most `limit`.
    fn events(&self, after_id: u64, limit: usize) -> ControlFuture<'_, EventList>;
    /// The DNS records this site serves.
    fn dns_records(&self) -> ControlFuture<'_, DnsRecords>;
    /// This site's probe history of every data site it observes (or of `site` only),
    /// the most recent `limit` samples each, oldest first. `NotFound` for a site it
    /// does not observe.
    fn history(&self, site: Option<String>, limit: usize) -> ControlFuture<'_, HealthHistory>;
    /// Force a failover to a standby (`maildr_cluster::ops::failover`); the API has
    /// already checked the fields.
    fn failover(&self, request: FailoverRequest) -> ControlFuture<'_, FailoverReport>;
}

/// Most events one `GET /api/events` returns.
pub const EVENTS_LIMIT_MAX: usize = 10_000;

/// Most samples per site one `GET /api/health/history` returns.
pub const HISTORY_LIMIT_MAX: usize = 10_000;

/// The control plane of `maildr-control`, as the API serves it.
impl ControlPlane for maildr_control::ControlPlane {
    fn health(&self) -> ControlFuture<'_, HealthReport> {
        Box::pin(async move { Ok(maildr_control::ControlPlane::health(self).await) })
    }

    fn events(&self, after_id: u64, limit: usize) -> ControlFuture<'_, EventList> {
        Box::pin(async move {
            // A small redb read under the store's own lock; not worth a blocking-pool hop.
            let events = maildr_control::ControlPlane::events(self, after_id, limit.min(EVENTS_LIMIT_MAX))
                .map_err(|e| ControlPlaneError::Unavailable(e.to_string()))?;
            Ok(EventList { events })
        })
    }

    fn dns_records(&self) -> ControlFuture<'_, DnsRecords> {
        Box::pin(async move {
            match maildr_control::ControlPlane::dns_records(self) {
                Some(records) => Ok(records),
                None => Err(ControlPlaneError::NotImplemented("this site runs no DNS server (dns.listen)".into())),
            }
        })
    }

    fn history(&self, site: Option<String>, limit: usize) -> ControlFuture<'_, HealthHistory> {
        Box::pin(async move {
            match maildr_control::ControlPlane::histories(self, site.as_deref(), limit.min(HISTORY_LIMIT_MAX)) {
                Some(history) => Ok(history),
                None => Err(ControlPlaneError::NotFound(format!(
                    "site {} observes no data site named {:?}",
                    maildr_control::ControlPlane::site(self),
                    site.unwrap_or_default()
                ))),
            }
        })
    }

    fn failover(&self, request: FailoverRequest) -> ControlFuture<'_, FailoverReport> {
        Box::pin(async move {
            let client = maildr_control::ControlPlane::cluster_client(self);
            Ok(maildr_cluster::ops::failover(client, &request.to, &request.by, request.accept_data_loss).await?)
        })
    }
}
