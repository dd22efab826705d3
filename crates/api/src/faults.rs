//! The seam between the admin API and a site's fault hooks: what a drill uses to
//! stop and start one service of a running site (its listeners closed, its
//! connections dropped) while everything else of the site keeps running.
//!
//! The binary hands an implementation of [`FaultHooks`] in with
//! [`crate::ApiState::with_fault_hooks`], and only when the site's config turns
//! the hooks on (`[faults] hooks = true`); without one every fault route answers
//! 404 and changes nothing. This module must never be the way a production site
//! is managed: it only breaks and mends services on purpose.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A service of a site that a fault hook can stop and start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// The MX listener.
    Smtp,
    /// Both submission listeners (STARTTLS and implicit TLS).
    Submission,
    /// Both IMAP listeners (plain and implicit TLS).
    Imap,
    /// The authoritative DNS server, UDP and TCP.
    Dns,
}

impl Service {
    /// Every service, in the order they are listed.
    pub const ALL: [Service; 4] = [Service::Smtp, Service::Submission, Service::Imap, Service::Dns];

    /// The name used in paths and answers.
    pub fn name(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Imap => "imap",
            Service::Dns => "dns",
        }
    }

    /// The service called `name`, if there is one.
    pub fn parse(name: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One service as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServiceState {
    pub service: Service,
    /// Listening and serving; `false` once a hook stopped it.
    pub running: bool,
    /// The addresses it listens on while running (and will listen on again).
    pub listen: Vec<String>,
}

/// Every service of the site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ServicesView {
    pub site: String,
    pub services: Vec<ServiceState>,
}

/// The body of `PUT /api/faults/services/{service}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSwitch {
    /// `false` stops the service, `true` starts it again.
    pub running: bool,
}

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
