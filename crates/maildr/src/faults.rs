//! Fault hooks of a running site: every mail and DNS service runs under a switch
//! of `maildr_frontend::switchboard` that a drill can turn off and on again
//! through the admin API (`/api/faults/services`, only with `[faults] hooks = true`).
//!
//! This module only wires `smtp`, `submission`, `imap` and `dns` to their switches
//! and answers the admin API's `FaultHooks`; it must never touch replication, the
//! store, the control plane or the admin API.

use std::sync::Arc;

use maildr_api::faults::{FaultHookError, FaultHookFuture, FaultHooks, Service, ServiceState};
use maildr_dns::{DnsServer, ZoneSet};
use maildr_frontend::switchboard::{SwitchError, SwitchState, Switchboard};
use maildr_imap::{ImapListeners, ImapService};
use maildr_smtp::{ListenerKind, SmtpListeners, SmtpService};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The switches of every service of one site. Cheap to clone.
#[derive(Clone)]
pub struct SiteHooks {
    site: String,
    board: Switchboard<Service>,
}

impl SiteHooks {
    pub fn new(site: &str) -> SiteHooks {
        SiteHooks { site: site.to_string(), board: Switchboard::new() }
    }

    /// SMTP: the MX listener as `smtp`, both submission listeners as `submission`.
    pub fn run_smtp(
        &self,
        smtp: Arc<SmtpService>,
        mut listeners: SmtpListeners,
        stop: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        let parts: [(Service, &[ListenerKind]); 2] = [
            (Service::Smtp, &[ListenerKind::Mx]),
            (Service::Submission, &[ListenerKind::Submission, ListenerKind::Submissions]),
        ];
        let mut tasks = Vec::new();
        for (service, kinds) in parts {
            let part = listeners.take(kinds);
            let smtp = Arc::clone(&smtp);
            tasks.push(self.board.run(
                service,
                part.local_addrs(),
                part,
                |addrs| async move { SmtpListeners::bind_addrs(&addrs).await.map_err(|e| e.to_string()) },
                move |part, stop| maildr_smtp::serve(Arc::clone(&smtp), part, stop),
                stop.clone(),
            ));
        }
        tasks
    }

    /// IMAP: both listeners as `imap`.
    pub fn run_imap(
        &self,
        imap: Arc<ImapService>,
        listeners: ImapListeners,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        self.board.run(
            Service::Imap,
            listeners.local_addrs(),
            listeners,
            |addrs| async move { ImapListeners::bind_addrs(&addrs).await.map_err(|e| e.to_string()) },
            move |listeners, stop| maildr_imap::serve(Arc::clone(&imap), listeners, stop),
            stop,
        )
    }

    /// The authoritative DNS server (UDP and TCP) as `dns`. Bound again, it keeps
    /// reporting to the same record of what is served, so `dns_served` events stay
    /// true across a stop.
    pub fn run_dns(
        &self,
        server: DnsServer,
        zones: watch::Receiver<Arc<ZoneSet>>,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let addr = server.local_addr();
        let reporter = server.served_reporter();
        self.board.run(
            Service::Dns,
            vec![((), addr)],
            server,
            move |_| {
                let reporter = reporter.clone();
                async move { DnsServer::bind_reporting(addr, reporter).await.map_err(|e| e.to_string()) }
            },
            move |server, stop| server.serve(zones.clone(), stop),
            stop,
        )
    }
}

fn service_state(state: SwitchState<Service>) -> ServiceState {
    ServiceState {
        service: state.service,
        running: state.running,
        listen: state.listen.iter().map(|a| a.to_string()).collect(),
    }
}

impl FaultHooks for SiteHooks {
    fn services(&self) -> Vec<ServiceState> {
        self.board.states().into_iter().map(service_state).collect()
    }

    fn set_running(&self, service: Service, running: bool) -> FaultHookFuture<'_> {
        Box::pin(async move {
            match self.board.set_running(service, running).await {
                Ok(state) => Ok(service_state(state)),
                Err(SwitchError::NotHere) => Err(FaultHookError::NotHere { site: self.site.clone(), service }),
                Err(e) => Err(FaultHookError::Failed(e.to_string())),
            }
        })
    }
}
