//! IMAP4rev1 for one maildr site: real mail clients read, organise and
//! resynchronise mail here.
//!
//! Two listeners share one [`ImapService`]: implicit TLS (993 in production) and
//! plain (lab 2143, logins from loopback only unless configured). Everything a
//! client sees — UIDs, UIDVALIDITY, MODSEQ, flags — is replicated state read from
//! the store, never session- or site-local, so a client that fails over to another
//! site finds its mail unchanged. Every change goes through the cluster's write
//! path. This crate must never write to the store directly nor panic on input.
//! The one exception to "replicated, never site-local" is `\Recent`, which RFC
//! 3501 lets be approximate: it is per site (see `recent.rs`).

mod blocking;
mod bodies;
mod cmd;
mod flags;
mod mime;
mod names;
mod recent;
mod reply;
mod search;
mod session;
mod transport;
mod vanished;
mod view;

pub use cmd::list::LIST_PATTERN_BYTES_MAX;
pub use vanished::{SEQ_MATCH_PAIRS_CHECKED_MAX, VANISHED_RANGES_PER_RESPONSE_MAX};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maildr_cluster::Cluster;
use maildr_config::ImapSection;
use maildr_types::{system_clock, EmailAddress, SharedClock};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

/// What every IMAP session of a site shares.
pub struct ImapService {
    pub(crate) cluster: Cluster,
    pub(crate) config: ImapSection,
    tls: Option<TlsAcceptor>,
    /// Decides the times commands carry: an APPEND's internal date when the client
    /// gives none, a new mailbox's UIDVALIDITY.
    pub(crate) clock: SharedClock,
    connections: Arc<Semaphore>,
    sessions: Mutex<HashMap<EmailAddress, u32>>,
    /// Failed logins per source address (the delay before the next answer).
    pub(crate) login_failures: maildr_frontend::passwords::LoginFailures,
    /// Which messages sessions of this site were told of first (`\Recent`).
    pub(crate) recent: recent::RecentMarks,
}

/// Counts one logged-in session of an account while it lives.
pub(crate) struct SessionGuard {
    service: Arc<ImapService>,
    account: EmailAddress,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut sessions = self.service.sessions.lock().expect("session table lock");
        if let Some(n) = sessions.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                sessions.remove(&self.account);
            }
        }
    }
}

impl ImapService {
    pub fn new(cluster: Cluster, config: ImapSection, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<Self> {
        ImapService::with_clock(cluster, config, tls, system_clock())
    }

    /// A service that reads the time from `clock` (tests pin it).
    pub fn with_clock(
        cluster: Cluster,
        config: ImapSection,
        tls: Option<Arc<rustls::ServerConfig>>,
        clock: SharedClock,
    ) -> Arc<Self> {
        let connections = Arc::new(Semaphore::new(config.connections_max as usize));
        let login_failures =
            maildr_frontend::passwords::LoginFailures::new(Duration::from_millis(config.auth_failure_delay_ms));
        Arc::new(ImapService {
            cluster,
            config,
            tls: tls.map(TlsAcceptor::from),
            clock,
            connections,
            sessions: Mutex::new(HashMap::new()),
            login_failures,
            recent: recent::RecentMarks::default(),
        })
    }

    pub(crate) fn session_started(self: &Arc<Self>, account: &EmailAddress) -> Option<SessionGuard> {
        let mut sessions = self.sessions.lock().expect("session table lock");
        let n = sessions.entry(account.clone()).or_insert(0);
        if *n >= self.config.sessions_per_account_max {
            return None;
        }
        *n += 1;
        Some(SessionGuard { service: Arc::clone(self), account: account.clone() })
    }
}

/// Which IMAP listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapListenerKind {
    Plain,
    Tls,
}

impl ImapListenerKind {
    pub fn name(self) -> &'static str {
        match self {
            ImapListenerKind::Plain => "imap",
            ImapListenerKind::Tls => "imaps",
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for IMAP ({kind}) on {addr}: {source}")]
pub struct BindError {
    pub kind: &'static str,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Bound IMAP listeners, before serving.
pub struct ImapListeners {
    listeners: Vec<(ImapListenerKind, TcpListener)>,
}

impl ImapListeners {
    pub async fn bind(config: &ImapSection, with_tls: bool) -> Result<ImapListeners, BindError> {
        let mut wanted = vec![(ImapListenerKind::Plain, config.plain_listen)];
        if with_tls {
            wanted.push((ImapListenerKind::Tls, config.tls_listen));
        }
        Self::bind_addrs(&wanted).await
    }

    /// Bind exactly these listeners (a stopped service listens again where it did).
    pub async fn bind_addrs(wanted: &[(ImapListenerKind, SocketAddr)]) -> Result<ImapListeners, BindError> {
        match maildr_frontend::bind_listeners(wanted).await {
            Ok(listeners) => Ok(ImapListeners { listeners }),
            Err(f) => Err(BindError { kind: f.kind.name(), addr: f.addr, source: f.source }),
        }
    }

    pub fn local_addrs(&self) -> Vec<(ImapListenerKind, SocketAddr)> {
        self.listeners.iter().map(|(k, l)| (*k, l.local_addr().expect("bound listener has an address"))).collect()
    }
}

/// Serve until `shutdown` turns true.
pub async fn serve(service: Arc<ImapService>, listeners: ImapListeners, shutdown: watch::Receiver<bool>) {
    maildr_frontend::serve_listeners(listeners.listeners, shutdown, move |kind, stream, peer| {
        handle_connection(Arc::clone(&service), kind, stream, peer)
    })
    .await;
}

async fn handle_connection(
    service: Arc<ImapService>,
    kind: ImapListenerKind,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) {
    let Ok(permit) = Arc::clone(&service.connections).try_acquire_owned() else {
        use tokio::io::AsyncWriteExt;
        let mut stream = stream;
        let _ = stream.write_all(b"* BYE [UNAVAILABLE] too many connections, try again later\r\n").await;
        return;
    };
    let memory = maildr_frontend::memory::MessageMemory::global();
    let stream = match kind {
        ImapListenerKind::Plain => transport::Transport::new(Box::new(stream), memory),
        ImapListenerKind::Tls => {
            let acceptor = service.tls.clone().expect("the TLS listener is bound only with TLS");
            match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(stream)).await {
                Ok(Ok(tls)) => transport::Transport::new(Box::new(tls), memory),
                _ => {
                    tracing::debug!(%peer, "IMAP TLS handshake failed");
                    return;
                }
            }
        }
    };
    session::Session::new(Arc::clone(&service), peer, kind == ImapListenerKind::Tls).run(stream).await;
    drop(permit);
}

/// Entry points for fuzzing the parts of the command path that see untrusted
/// bytes without a socket: command decoding plus the evaluation maildr does on a
/// decoded command, and everything FETCH computes from a stored message.
/// Used by `fuzz/` (cargo-fuzz) and by ordinary tests; never by the server.
pub mod fuzzing {
    use std::num::NonZeroU32;

    use imap_codec::decode::Decoder;
    use imap_codec::imap_types::command::CommandBody;
    use imap_codec::CommandCodec;

    /// Decode one command and run what the server would run on its arguments.
    pub fn command(bytes: &[u8]) {
        let Ok((_, command)) = CommandCodec::default().decode(bytes) else { return };
        match &command.body {
            CommandBody::Fetch { sequence_set, .. }
            | CommandBody::Copy { sequence_set, .. }
            | CommandBody::Move { sequence_set, .. }
            | CommandBody::ExpungeUid { sequence_set } => {
                for n in [1, 2, 1000, u32::MAX] {
                    let _ = crate::view::set_contains(sequence_set, n, 1000);
                }
            }
            CommandBody::Store { sequence_set, flags, .. } => {
                let _ = crate::view::set_contains(sequence_set, 1, 1);
                let _ = crate::flags::split(flags);
            }
            CommandBody::Append { flags, message, .. } => {
                let _ = crate::flags::split(flags);
                let bytes = match message {
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    imap_codec::imap_types::extensions::binary::LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                message_views(&bytes);
            }
            CommandBody::Create { mailbox }
            | CommandBody::Delete { mailbox }
            | CommandBody::Select { mailbox, .. }
            | CommandBody::Status { mailbox, .. } => mailbox_name(mailbox),
            CommandBody::Rename { from, to } => {
                mailbox_name(from);
                mailbox_name(to);
            }
            _ => {}
        }
    }

    /// What a mailbox argument goes through: decoding, resolution against a
    /// legacy name, and the spelling a stored name is sent back in.
    fn mailbox_name(mailbox: &imap_codec::imap_types::mailbox::Mailbox<'_>) {
        let imap_codec::imap_types::mailbox::Mailbox::Other(other) = mailbox else { return };
        let legacy = || Ok(vec![maildr_types::MailboxName::parse("&ZeVnLIqe-").expect("valid name")]);
        if let Ok(name) = crate::names::resolve(other.as_ref(), legacy, true) {
            let _ = crate::names::wire_name(&name);
        }
    }

    /// Everything FETCH derives from a message's bytes.
    pub fn message_views(bytes: &[u8]) {
        let header = crate::mime::header_of(bytes);
        let _ = crate::mime::header_fields(header, &["subject".into(), "from".into()], false);
        let _ = crate::mime::header_fields(header, &["received".into()], true);
        let Some(parsed) = crate::mime::parse(bytes) else { return };
        let _ = crate::mime::envelope(&parsed);
        let _ = crate::mime::body_structure(&parsed, true);
        let _ = crate::mime::body_structure(&parsed, false);
        let n = |v: u32| NonZeroU32::new(v).expect("non-zero literal");
        for path in [vec![n(1)], vec![n(2)], vec![n(1), n(1)], vec![n(2), n(1), n(3)], vec![n(1); 40]] {
            if let Some(part) = crate::mime::resolve(&parsed, &path) {
                let _ = crate::mime::header_of(part.body);
            }
        }
        let _ = crate::mime::header_text(&parsed, "Subject");
    }
}
