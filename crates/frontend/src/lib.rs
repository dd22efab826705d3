//! What every protocol front end of a site (SMTP, IMAP, later the admin API)
//! shares and must not write twice: the accept loop with graceful shutdown, and
//! password hashing. It knows nothing of any protocol and never touches the store.

use std::fmt::Debug;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long sessions in progress get to finish after shutdown is signalled.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (out of file descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// Accepted connections waiting to be handed to a session task.
const ACCEPT_QUEUE: usize = 64;

/// Accept on every listener until `shutdown` turns true, running `handle` for each
/// connection as its own task; then give sessions [`SHUTDOWN_GRACE`] to finish.
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
    let mut accepts = JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
    for (kind, listener) in listeners {
        let tx = tx.clone();
        accepts.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, peer)) => {
                        if tx.send((kind, stream, peer)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(listener = ?kind, error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            Some((kind, stream, peer)) = rx.recv() => {
                let _ = stream.set_nodelay(true);
                sessions.spawn(handle(kind, stream, peer));
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    accepts.abort_all();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, async { while sessions.join_next().await.is_some() {} }).await;
    sessions.abort_all();
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
