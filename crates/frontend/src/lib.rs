//! What every protocol front end of a site (SMTP, IMAP, DNS, later the admin API)
//! shares and must not write twice: the accept loop with graceful shutdown, the
//! switches that stop and start a service for fault hooks (`switchboard`), the
//! site-wide budget for message data in memory (`memory`), and
//! password hashing and checking (`passwords`). It knows nothing of any protocol
//! and never touches the store.

pub mod credential_cache;
pub mod memory;
pub mod passwords;
pub mod switchboard;

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::task::Poll;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long sessions in progress get to finish after shutdown is signalled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A listener that could not be bound: which one, where, and why.
#[derive(Debug)]
pub struct BindFailure<K> {
    pub kind: K,
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Bind one TCP listener per `(kind, address)`, in order; the first failure stops.
pub async fn bind_listeners<K: Copy>(wanted: &[(K, SocketAddr)]) -> Result<Vec<(K, TcpListener)>, BindFailure<K>> {
    let mut listeners = Vec::with_capacity(wanted.len());
    for &(kind, addr) in wanted {
        let listener = TcpListener::bind(addr).await.map_err(|source| BindFailure { kind, addr, source })?;
        listeners.push((kind, listener));
    }
    Ok(listeners)
}

/// Accept on every listener until `shutdown` turns true, running `handle` for each
/// connection as its own task; then give sessions [`SHUTDOWN_GRACE`] to finish.
///
/// The listeners live inside this future, not in tasks of their own: dropping the
/// future closes them at once (a new connection is refused) and aborts every
/// session. That is how a fault hook stops one service of a running site.
pub async fn serve_listeners<K, F, Fut>(
    listeners: Vec<(K, TcpListener)>,
    mut shutdown: watch::Receiver<bool>,
    handle: F,
) where
    K: Copy + Debug + Send + 'static,
    F: Fn(K, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut sessions = JoinSet::new();
    // The listener polled first; it rotates so a busy listener cannot starve the others.
    let mut first = 0;
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            (kind, accepted) = accept_any(&listeners, &mut first) => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    sessions.spawn(handle(kind, stream, peer));
                }
                Err(e) => {
                    tracing::warn!(listener = ?kind, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    drop(listeners);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while sessions.join_next().await.is_some() {} }).await;
    sessions.abort_all();
}

/// The next connection on any of `listeners` (pending forever when there are none).
async fn accept_any<K: Copy>(
    listeners: &[(K, TcpListener)],
    first: &mut usize,
) -> (K, std::io::Result<(TcpStream, SocketAddr)>) {
    std::future::poll_fn(|cx| {
        let n = listeners.len();
        for i in 0..n {
            let index = (*first + i) % n;
            let (kind, listener) = &listeners[index];
            if let Poll::Ready(accepted) = listener.poll_accept(cx) {
                *first = (index + 1) % n;
                return Poll::Ready((*kind, accepted));
            }
        }
        Poll::Pending
    })
    .await
}

/// Longest password an operator may choose, in bytes (the admin API and `maildr admin`).
pub const PASSWORD_LEN_MAX_BYTES: usize = 1024;

/// Why a chosen password is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRefused {
    #[error("must not be empty")]
    Empty,
    #[error("longer than {PASSWORD_LEN_MAX_BYTES} bytes")]
    TooLong,
}

/// Check a password an operator chose against its bounds.
pub fn check_chosen_password(password: &str) -> Result<(), PasswordRefused> {
    if password.is_empty() {
        return Err(PasswordRefused::Empty);
    }
    if password.len() > PASSWORD_LEN_MAX_BYTES {
        return Err(PasswordRefused::TooLong);
    }
    Ok(())
}

/// Verify a password against an argon2 PHC string.
pub fn verify_password(phc: &str, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    match PasswordHash::new(phc) {
        Ok(parsed) => argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A random password of 20 letters and digits, without look-alikes (0/O, 1/l/I),
/// for accounts created without one.
pub fn generate_password() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    const GENERATED_PASSWORD_LEN: usize = 20;
    let mut rng = rand::thread_rng();
    (0..GENERATED_PASSWORD_LEN).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect()
}

/// Hash a password for storage (argon2id, random salt).
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters accepts any password")
        .to_string()
}

#[cfg(test)]
mod password_bounds {
    use super::*;

    #[test]
    fn a_chosen_password_is_refused_empty_and_one_byte_past_the_limit() {
        assert_eq!(check_chosen_password(""), Err(PasswordRefused::Empty));
        assert_eq!(check_chosen_password(&"p".repeat(PASSWORD_LEN_MAX_BYTES)), Ok(()));
        assert_eq!(check_chosen_password(&"p".repeat(PASSWORD_LEN_MAX_BYTES + 1)), Err(PasswordRefused::TooLong));
        assert_eq!(PasswordRefused::TooLong.to_string(), "longer than 1024 bytes");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_passwords_verify_only_with_the_right_password() {
        let h = hash_password("correct horse");
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong"));
        assert!(!verify_password("garbage", "x"));
    }
}
