//! The seam between the admin API and a site's fault hooks: what a drill uses to
//! stop and start one service of a running site (its listeners closed, its
//! connections dropped) while everything else of the site keeps running.
//!
//! The binary hands an implementation of [`FaultHooks`] in with
//! [`crate::ApiState::with_fault_hooks`], and only when the site's config turns
//! the hooks on (`[faults] hooks = true`); without one every fault route answers
//! 404 and changes nothing. This module must never be the way a production site
//! is managed: it only breaks and mends services on purpose.

use std::future::Future;
use std::pin::Pin;

pub use maildr_api_types::faults::{Service, ServiceState, ServiceSwitch, ServicesView};

/// Why a hook did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum FaultHookError {
    /// This site does not run that service (e.g. `dns` without `dns.listen`).
    #[error("site {site} runs no {service} service")]
    NotHere { site: String, service: Service },
    /// The change could not be made (e.g. the address is taken by now); the
    /// service is as the message says.
    #[error("{0}")]
    Failed(String),
}

/// What a hook call returns (boxed so the trait can be a `dyn` object).
pub type FaultHookFuture<'a> = Pin<Box<dyn Future<Output = Result<ServiceState, FaultHookError>> + Send + 'a>>;

/// A site's fault hooks as the admin API sees them.
pub trait FaultHooks: Send + Sync {
    /// Every service this site runs, with its state.
    fn services(&self) -> Vec<ServiceState>;
    /// Stop (`running: false`) or start `service`. Resolves once the change is in
    /// effect: the listeners closed and the connections dropped, or listening again.
    fn set_running(&self, service: Service, running: bool) -> FaultHookFuture<'_>;
}
