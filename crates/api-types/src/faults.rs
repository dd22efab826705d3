//! The fault hooks of a site (`/api/faults/services`): which services a drill can
//! stop and start, and what each looks like now. One [`Service`] for the whole
//! workspace: the API's routes, the lab's hooks client and the drill's plans
//! (`stop_service`) all name services with it.

use std::fmt;

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
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSwitch {
    /// `false` stops the service, `true` starts it again.
    pub running: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_is_named_alike_in_paths_answers_and_plans() {
        for service in Service::ALL {
            let json = serde_json::to_string(&service).expect("a service serialises");
            assert_eq!(json, format!("\"{}\"", service.name()));
            assert_eq!(serde_json::from_str::<Service>(&json).ok(), Some(service));
            assert_eq!(Service::parse(service.name()), Some(service));
        }
        assert!(serde_json::from_str::<Service>("\"SMTP\"").is_err(), "names are lower case only");
        assert_eq!(Service::parse("pop3"), None);
    }
}
