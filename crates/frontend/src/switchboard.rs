//! Switches that stop and start one service of a running site, for fault hooks.
//!
//! A service is a bind function and a serve function: serving a set of listeners
//! until shutdown, and binding those same addresses again. Under its switch the
//! service runs until told to stop; stopped, its serving future is dropped, which
//! closes its listening sockets (a TCP connect is refused, a UDP query gets no
//! answer) and aborts its open connections, so to clients it looks down. Started
//! again, it binds the same addresses it had.
//!
//! The switchboard knows no protocol and no service names: services are keyed by
//! whatever the caller uses (the binary uses the admin API's `Service`). It must
//! never touch replication, the store or anything but the listeners handed to it.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest a switch request waits for its change to take effect, in milliseconds.
pub const SWITCH_TIMEOUT_MS: u64 = 10_000;
/// Attempts to listen again on a stopped service's addresses.
const REBIND_ATTEMPTS_MAX: u32 = 10;
/// Pause between two of those attempts, in milliseconds.
const REBIND_PAUSE_MS: u64 = 50;

/// What one service is doing, as its switch reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchState<S> {
    pub service: S,
    /// Listening and serving; `false` once a switch stopped it.
    pub running: bool,
    /// The addresses it listens on while running (and will listen on again).
    pub listen: Vec<SocketAddr>,
}

/// Why a switch request failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// No service runs under that key here.
    #[error("no such service here")]
    NotHere,
    /// The service did not report the change in time (the site may be stopping).
    #[error("{service} did not {verb} within {SWITCH_TIMEOUT_MS} ms (is the site stopping?)")]
    Timeout { service: String, verb: &'static str },
    /// Listening again failed; the service stays stopped.
    #[error("{service} could not listen again: {reason}; it stays stopped")]
    Rebind { service: String, reason: String },
}

/// What is in effect for one service, as its supervisor last reported.
#[derive(Debug, Clone)]
struct Effect {
    running: bool,
    /// Why the last start failed (the service then stays stopped).
    error: Option<String>,
}

/// One service's switch.
struct Switch<S> {
    service: S,
    listen: Vec<SocketAddr>,
    /// What is asked for: running or not.
    wanted: watch::Sender<bool>,
    /// What the supervisor did about it.
    effect: watch::Sender<Effect>,
    /// One request at a time per service, so each waits for its own change.
    requests: tokio::sync::Mutex<()>,
}

impl<S: Copy> Switch<S> {
    fn state(&self) -> SwitchState<S> {
        SwitchState { service: self.service, running: self.effect.borrow().running, listen: self.listen.clone() }
    }
}

/// The switches of every service of one site. Cheap to clone.
pub struct Switchboard<S> {
    switches: Arc<Mutex<Vec<Arc<Switch<S>>>>>,
}

impl<S> Clone for Switchboard<S> {
    fn clone(&self) -> Self {
        Switchboard { switches: Arc::clone(&self.switches) }
    }
}

impl<S> Default for Switchboard<S> {
    fn default() -> Self {
        Switchboard { switches: Arc::default() }
    }
}

impl<S> Switchboard<S>
where
    S: Copy + Eq + Ord + Display + Send + Sync + 'static,
{
    pub fn new() -> Switchboard<S> {
        Switchboard::default()
    }

    fn switch(&self, service: S) -> Option<Arc<Switch<S>>> {
        let switches = self.switches.lock().unwrap_or_else(|p| p.into_inner());
        switches.iter().find(|s| s.service == service).cloned()
    }

    /// Serve `service` from `listeners` (bound to `addrs`) under a new switch
    /// until `stop`. `serve` runs the service on a set of listeners (its future
    /// owns them); `bind` listens on `addrs` again after a switch stopped it.
    pub fn run<K, L, B, BF, F, SF>(
        &self,
        service: S,
        addrs: Vec<(K, SocketAddr)>,
        listeners: L,
        bind: B,
        serve: F,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()>
    where
        K: Clone + Send + Sync + 'static,
        L: Send + 'static,
        B: Fn(Vec<(K, SocketAddr)>) -> BF + Send + Sync + 'static,
        BF: Future<Output = Result<L, String>> + Send + 'static,
        F: Fn(L, watch::Receiver<bool>) -> SF + Send + 'static,
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

    /// Every service under a switch, in key order.
    pub fn states(&self) -> Vec<SwitchState<S>> {
        let mut states: Vec<SwitchState<S>> =
            self.switches.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|s| s.state()).collect();
        states.sort_by_key(|s| s.service);
        states
    }

    /// Stop or start `service` and wait (at most [`SWITCH_TIMEOUT_MS`]) until that
    /// is in effect. Asking for what is already in effect changes nothing.
    pub async fn set_running(&self, service: S, running: bool) -> Result<SwitchState<S>, SwitchError> {
        let switch = self.switch(service).ok_or(SwitchError::NotHere)?;
        let _one_at_a_time = switch.requests.lock().await;
        let mut effect = switch.effect.subscribe();
        if effect.borrow_and_update().running == running {
            return Ok(switch.state());
        }
        switch.wanted.send_replace(running);
        let verb = if running { "start" } else { "stop" };
        match tokio::time::timeout(Duration::from_millis(SWITCH_TIMEOUT_MS), effect.changed()).await {
            Ok(Ok(())) => {}
            _ => return Err(SwitchError::Timeout { service: service.to_string(), verb }),
        }
        let error = effect.borrow().error.clone();
        if let Some(reason) = error {
            return Err(SwitchError::Rebind { service: service.to_string(), reason });
        }
        Ok(switch.state())
    }
}

/// Run one service, stopping and starting it as its switch says, until `stop`.
async fn supervise<S, L, B, BF, F, SF>(
    switch: Arc<Switch<S>>,
    mut listeners: L,
    bind: B,
    serve: F,
    mut stop: watch::Receiver<bool>,
) where
    S: Display,
    B: Fn() -> BF,
    BF: Future<Output = Result<L, String>>,
    F: Fn(L, watch::Receiver<bool>) -> SF,
    SF: Future<Output = ()>,
{
    let service = &switch.service;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{bind_listeners, serve_listeners};

    async fn serve_echo(listeners: Vec<((), tokio::net::TcpListener)>, stop: watch::Receiver<bool>) {
        serve_listeners(listeners, stop, |(), stream, _| async move { drop(stream) }).await
    }

    async fn bind(addrs: Vec<((), SocketAddr)>) -> Result<Vec<((), tokio::net::TcpListener)>, String> {
        bind_listeners(&addrs).await.map_err(|e| e.source.to_string())
    }

    #[tokio::test]
    async fn a_stopped_service_refuses_connections_and_listens_again_on_the_same_address() {
        let listeners = bind(vec![((), "127.0.0.1:0".parse().unwrap())]).await.unwrap();
        let addr = listeners[0].1.local_addr().unwrap();
        let (stop_tx, stop) = watch::channel(false);
        let board: Switchboard<u8> = Switchboard::new();
        let task = board.run(7, vec![((), addr)], listeners, bind, serve_echo, stop);
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        let stopped = board.set_running(7, false).await.unwrap();
        assert!(!stopped.running);
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
        let started = board.set_running(7, true).await.unwrap();
        assert_eq!(started.listen, vec![addr]);
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
        assert_eq!(board.states(), vec![started]);
        assert!(matches!(board.set_running(8, false).await, Err(SwitchError::NotHere)));
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }
}
