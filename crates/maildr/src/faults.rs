//! Fault hooks of a running site: every mail and DNS service runs under a switch
//! that a drill can turn off and on again through the admin API
//! (`/api/faults/services`, only with `[faults] hooks = true`).
//!
//! Off must look to clients like the service is down: its listening sockets are
//! closed (a TCP connect is refused, a UDP query gets no answer) and its open
//! connections are dropped. That is what dropping a service's serving future does
//! (`maildr_frontend::serve_listeners` and `DnsServer::serve` own their sockets).
//! On again, the service listens on the same addresses it had.
//!
//! Every service runs under its switch whether hooks are on or not, so a site
//! behaves the same until a hook is used. This module must never touch
//! replication, the store, the control plane or the admin API: only the listeners
//! of `smtp`, `submission`, `imap` and `dns`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maildr_api::faults::{FaultHookError, FaultHookFuture, FaultHooks, Service, ServiceState};
use maildr_dns::{DnsServer, ZoneSet};
use maildr_imap::{ImapListeners, ImapService};
use maildr_smtp::{ListenerKind, SmtpListeners, SmtpService};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest a hook request waits for its change to take effect, in milliseconds.
const SWITCH_TIMEOUT_MS: u64 = 10_000;
/// Attempts to listen again on a stopped service's addresses.
const REBIND_ATTEMPTS_MAX: u32 = 10;
/// Pause between two of those attempts, in milliseconds.
const REBIND_PAUSE_MS: u64 = 50;

/// What is in effect for one service, as its supervisor last reported.
#[derive(Debug, Clone)]
struct Effect {
    running: bool,
    /// Why the last start failed (the service then stays stopped).
    error: Option<String>,
}

/// One service's switch.
struct Switch {
    service: Service,
    listen: Vec<SocketAddr>,
    /// What the hooks ask for: running or not.
    wanted: watch::Sender<bool>,
    /// What the supervisor did about it.
    effect: watch::Sender<Effect>,
    /// One hook request at a time per service, so each waits for its own change.
    requests: tokio::sync::Mutex<()>,
}

impl Switch {
    fn state(&self) -> ServiceState {
        ServiceState {
            service: self.service,
            running: self.effect.borrow().running,
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// The switches of every service of one site. Cheap to clone.
#[derive(Clone)]
pub struct Switchboard {
    site: String,
    switches: Arc<Mutex<Vec<Arc<Switch>>>>,
}

impl Switchboard {
    pub fn new(site: &str) -> Switchboard {
        Switchboard { site: site.to_string(), switches: Arc::default() }
    }

    fn switch(&self, service: Service) -> Option<Arc<Switch>> {
        let switches = self.switches.lock().unwrap_or_else(|p| p.into_inner());
        switches.iter().find(|s| s.service == service).cloned()
    }

    /// Serve `service` from `listeners` (bound to `addrs`) under a new switch
    /// until `stop`. `serve` runs the service on a set of listeners (its future
    /// owns them); `bind` listens on `addrs` again after a hook stopped it.
    fn run<K, L, B, BF, S, SF>(
        &self,
        service: Service,
        addrs: Vec<(K, SocketAddr)>,
        listeners: L,
        bind: B,
        serve: S,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()>
    where
        K: Clone + Send + Sync + 'static,
        L: Send + 'static,
        B: Fn(Vec<(K, SocketAddr)>) -> BF + Send + Sync + 'static,
        BF: Future<Output = Result<L, String>> + Send + 'static,
        S: Fn(L, watch::Receiver<bool>) -> SF + Send + 'static,
        SF: Future<Output = ()> + Send + 'static,
    {
        let switch = Arc::new(Switch {
            service,
            listen: addrs.iter().map(|(_, a)| *a).collect(),
            wanted: watch::channel(true).0,
            effect: watch::channel(Effect { running: true, error: None }).0,
            requests: tokio::sync::Mutex::new(()),
        });
        self.switches.lock().unwrap_or_else(|p| p.into_inner()).push(Arc::clone(&switch));
        tokio::spawn(supervise(switch, listeners, move || bind(addrs.clone()), serve, stop))
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
            tasks.push(self.run(
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
        self.run(
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
        self.run(
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

/// Run one service, stopping and starting it as its switch says, until `stop`.
async fn supervise<L, B, BF, S, SF>(
    switch: Arc<Switch>,
    mut listeners: L,
    bind: B,
    serve: S,
    mut stop: watch::Receiver<bool>,
) where
    B: Fn() -> BF,
    BF: Future<Output = Result<L, String>>,
    S: Fn(L, watch::Receiver<bool>) -> SF,
    SF: Future<Output = ()>,
{
    let service = switch.service;
    let mut wanted = switch.wanted.subscribe();
    loop {
        let mut serving = Box::pin(serve(listeners, stop.clone()));
        tokio::select! {
            // The site is stopping; the service gave its sessions their grace.
            () = &mut serving => return,
            _ = wanted.wait_for(|running| !*running) => {}
        }
        // The future owns the sockets and the session tasks: dropping it closes
        // the listeners now and aborts every open connection.
        drop(serving);
        tracing::warn!(%service, "service stopped by a fault hook");
        switch.effect.send_replace(Effect { running: false, error: None });
        listeners = loop {
            tokio::select! {
                _ = stop.wait_for(|stopping| *stopping) => return,
                _ = wanted.wait_for(|running| *running) => {}
            }
            match bind_again(&bind).await {
                Ok(bound) => break bound,
                Err(e) => {
                    tracing::error!(%service, error = %e, "service could not listen again; it stays stopped");
                    switch.wanted.send_replace(false);
                    switch.effect.send_replace(Effect { running: false, error: Some(e) });
                }
            }
        };
        tracing::warn!(%service, "service started again by a fault hook");
        switch.effect.send_replace(Effect { running: true, error: None });
    }
}

/// Listen again, retrying briefly (a socket just closed may take a moment to free).
async fn bind_again<L, B, BF>(bind: &B) -> Result<L, String>
where
    B: Fn() -> BF,
    BF: Future<Output = Result<L, String>>,
{
    let mut attempt = 1;
    loop {
        match bind().await {
            Ok(bound) => return Ok(bound),
            Err(e) if attempt >= REBIND_ATTEMPTS_MAX => return Err(format!("{e} ({attempt} attempts)")),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(REBIND_PAUSE_MS)).await;
            }
        }
    }
}

impl FaultHooks for Switchboard {
    fn services(&self) -> Vec<ServiceState> {
        let mut states: Vec<ServiceState> =
            self.switches.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|s| s.state()).collect();
        states.sort_by_key(|s| s.service);
        states
    }

    fn set_running(&self, service: Service, running: bool) -> FaultHookFuture<'_> {
        Box::pin(async move {
            let switch =
                self.switch(service).ok_or_else(|| FaultHookError::NotHere { site: self.site.clone(), service })?;
            let _one_at_a_time = switch.requests.lock().await;
            let mut effect = switch.effect.subscribe();
            if effect.borrow_and_update().running == running {
                return Ok(switch.state());
            }
            switch.wanted.send_replace(running);
            let verb = if running { "start" } else { "stop" };
            match tokio::time::timeout(Duration::from_millis(SWITCH_TIMEOUT_MS), effect.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(FaultHookError::Failed(format!(
                        "{service} did not {verb} within {SWITCH_TIMEOUT_MS} ms (is the site stopping?)"
                    )))
                }
            }
            let error = effect.borrow().error.clone();
            if let Some(e) = error {
                return Err(FaultHookError::Failed(format!("{service} could not listen again: {e}; it stays stopped")));
            }
            Ok(switch.state())
        })
    }
}
