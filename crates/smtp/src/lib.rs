//! SMTP for one maildr site: the inbound MX and authenticated submission.
//!
//! Three listeners share one [`SmtpService`]: the MX port (mail from the world for
//! hosted domains only; STARTTLS offered, AUTH never), submission with STARTTLS,
//! and submission with implicit TLS. AUTH is offered only over TLS. A message is
//! acknowledged (250 after DATA) only once the cluster's write path reports it
//! durable. This crate must never write to the store directly, and must never
//! panic on anything a client sends.

mod auth;
mod conn;
/// Entry points for `fuzz/` and the corpus tests; never used by the server.
pub mod fuzzing;
pub mod inbound_auth;
mod session;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use maildr_cluster::Cluster;
use maildr_config::SmtpSection;
use maildr_types::{system_clock, SharedClock};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

pub use session::count_header_fields;

/// Which role a listener plays; decides what the session allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// Inbound MX: hosted recipients only, no AUTH.
    Mx,
    /// Submission, plain until STARTTLS.
    Submission,
    /// Submission with TLS from the first byte.
    Submissions,
}

impl ListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Mx => "mx",
            ListenerKind::Submission => "submission",
            ListenerKind::Submissions => "submissions",
        }
    }
}

/// What every session of a site shares.
pub struct SmtpService {
    pub(crate) cluster: Cluster,
    pub(crate) config: SmtpSection,
    pub(crate) hostname: String,
    pub(crate) tls: Option<TlsAcceptor>,
    /// Decides the time a message is received (its internal date and `Received:` stamp).
    pub(crate) clock: SharedClock,
    connections: Arc<Semaphore>,
    /// Failed AUTH per source address (the delay before its next answer).
    pub(crate) login_failures: maildr_frontend::passwords::LoginFailures,
    pub(crate) outbound: OutboundPolicy,
    /// SPF/DKIM/DMARC checks of MX mail (`smtp.authentication_checks`).
    pub(crate) inbound_auth: Option<Arc<inbound_auth::InboundAuth>>,
}

/// What submission needs to know of outbound delivery (`[outbound]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Authenticated submissions to other domains are queued; otherwise refused
    /// with 550 5.7.1.
    pub enabled: bool,
    /// Beyond this many queued messages, recipients in other domains get 452.
    pub queue_messages_max: u64,
    /// How long a queued message may wait before it is bounced.
    pub lifetime_ms: i64,
}

impl OutboundPolicy {
    pub fn disabled() -> OutboundPolicy {
        OutboundPolicy { enabled: false, queue_messages_max: 0, lifetime_ms: 0 }
    }
}

impl SmtpService {
    pub fn new(
        cluster: Cluster,
        config: SmtpSection,
        hostname: String,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Arc<Self> {
        SmtpService::with_clock(cluster, config, hostname, tls, system_clock())
    }

    /// A service that reads the time from `clock` (tests pin it).
    pub fn with_clock(
        cluster: Cluster,
        config: SmtpSection,
        hostname: String,
        tls: Option<Arc<rustls::ServerConfig>>,
        clock: SharedClock,
    ) -> Arc<Self> {
        SmtpService::with_outbound(cluster, config, hostname, tls, clock, OutboundPolicy::disabled())
    }

    /// A service that queues submissions to other domains as `outbound` says.
    pub fn with_outbound(
        cluster: Cluster,
        config: SmtpSection,
        hostname: String,
        tls: Option<Arc<rustls::ServerConfig>>,
        clock: SharedClock,
        outbound: OutboundPolicy,
    ) -> Arc<Self> {
        let inbound_auth = if config.authentication_checks {
            let timeout = std::time::Duration::from_millis(config.authentication_checks_timeout_ms);
            match inbound_auth::InboundAuth::new(&config.resolvers, &hostname, timeout) {
                Ok(checker) => Some(Arc::new(checker)),
                Err(why) => {
                    tracing::error!(why, "SPF/DKIM/DMARC checks are off: no resolver");
                    None
                }
            }
        } else {
            None
        };
        let connections = Arc::new(Semaphore::new(config.connections_max as usize));
        let login_failures = maildr_frontend::passwords::LoginFailures::new(std::time::Duration::from_millis(
            config.auth_failure_delay_ms,
        ));
        Arc::new(SmtpService {
            cluster,
            config,
            hostname,
            tls: tls.map(TlsAcceptor::from),
            clock,
            connections,
            login_failures,
            outbound,
            inbound_auth,
        })
    }
}

/// Bound listeners, before serving. Binding first lets the caller learn the real
/// ports (config port 0 means "any free port", which tests use).
pub struct SmtpListeners {
    listeners: Vec<(ListenerKind, TcpListener)>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for SMTP {kind} on {addr}: {source}")]
pub struct BindError {
    pub kind: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

impl SmtpListeners {
    /// Bind the MX and submission listeners, and the implicit-TLS one when TLS is
    /// available.
    pub async fn bind(config: &SmtpSection, with_tls: bool) -> Result<SmtpListeners, BindError> {
        let mut wanted =
            vec![(ListenerKind::Mx, config.mx_listen), (ListenerKind::Submission, config.submission_listen)];
        if with_tls {
            wanted.push((ListenerKind::Submissions, config.submissions_listen));
        }
        Self::bind_addrs(&wanted).await
    }

    /// Bind exactly these listeners (a stopped service listens again where it did).
    pub async fn bind_addrs(wanted: &[(ListenerKind, SocketAddr)]) -> Result<SmtpListeners, BindError> {
        match maildr_frontend::bind_listeners(wanted).await {
            Ok(listeners) => Ok(SmtpListeners { listeners }),
            Err(f) => Err(BindError { kind: f.kind.name(), addr: f.addr, source: f.source }),
        }
    }

    /// Move the listeners of `kinds` out into a set of their own, to be served (and
    /// stopped) apart from the rest.
    pub fn take(&mut self, kinds: &[ListenerKind]) -> SmtpListeners {
        let (taken, kept) = std::mem::take(&mut self.listeners).into_iter().partition(|(k, _)| kinds.contains(k));
        self.listeners = kept;
        SmtpListeners { listeners: taken }
    }

    /// The address each listener is bound to.
    pub fn local_addrs(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.listeners.iter().map(|(k, l)| (*k, l.local_addr().expect("a bound listener has an address"))).collect()
    }
}

/// Serve all listeners until `shutdown` turns true.
pub async fn serve(service: Arc<SmtpService>, listeners: SmtpListeners, shutdown: watch::Receiver<bool>) {
    maildr_frontend::serve_listeners(listeners.listeners, shutdown, move |kind, stream, peer| {
        handle_connection(Arc::clone(&service), kind, stream, peer)
    })
    .await;
}

async fn handle_connection(
    service: Arc<SmtpService>,
    kind: ListenerKind,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let Ok(permit) = Arc::clone(&service.connections).try_acquire_owned() else {
        use tokio::io::AsyncWriteExt;
        let mut stream = stream;
        let _ = stream.write_all(b"421 4.3.2 Too many connections, try again later\r\n").await;
        return;
    };
    let session = session::Session::new(Arc::clone(&service), kind, peer, kind == ListenerKind::Submissions);
    match kind {
        ListenerKind::Submissions => {
            let acceptor = service.tls.clone().expect("the implicit-TLS listener is bound only with TLS");
            let idle = Duration::from_secs(service.config.idle_timeout_secs);
            match tokio::time::timeout(idle, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => session.run(Box::new(tls)).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
        _ => session.run(Box::new(stream)).await,
    }
    drop(permit);
}
