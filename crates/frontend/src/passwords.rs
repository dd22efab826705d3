//! Password checks for every front end that logs users in (SMTP AUTH, IMAP
//! LOGIN and AUTHENTICATE): bounded, equally slow for unknown accounts, and slowed
//! down per source address after failures.
//!
//! An argon2 check costs 19 MiB and tens of milliseconds of a core. Unbounded, a
//! flood of logins takes every core and the blocking pool from replication, and a
//! site that cannot commit loses its elections. So at most
//! [`password_checks_max`] run at once (half the machine's cores, at least one);
//! the others wait their turn without holding a thread. An unknown account is
//! checked against a decoy hash, so the answer takes as long as for a known one
//! and its timing does not tell which accounts exist.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Source addresses remembered for login-failure delays.
pub const LOGIN_FAILURE_SOURCES_MAX: usize = 10_000;
/// A source's failures are forgotten after this long without another.
pub const LOGIN_FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// The delay doubles with each failure up to this many doublings (64 times).
const LOGIN_FAILURE_DOUBLINGS_MAX: u32 = 6;

/// How many password checks run at once on this machine.
pub fn password_checks_max() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(password_checks_max()))
}

/// The hash unknown accounts are checked against (of a random password).
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| crate::hash_password(&crate::generate_password()))
}

/// Whether `password` matches `phc` (an account's argon2 hash), or `false` after
/// the same work when there is no account (`None`). Waits for one of the
/// [`password_checks_max`] slots; the hashing runs on the blocking pool.
pub async fn check_password(phc: Option<String>, password: String) -> bool {
    let _slot = permits().acquire().await.expect("the password-check semaphore is never closed");
    let known = phc.is_some();
    let matched = tokio::task::spawn_blocking(move || {
        let phc = phc.as_deref().unwrap_or_else(|| decoy());
        crate::verify_password(phc, &password)
    })
    .await
    .unwrap_or(false);
    matched && known
}

/// Failed logins per source address, for a delay before the next answer that
/// doubles with each failure. Bounded to [`LOGIN_FAILURE_SOURCES_MAX`] sources.
pub struct LoginFailures {
    base: Duration,
    by_source: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginFailures {
    /// `base` is the delay after one failure.
    pub fn new(base: Duration) -> LoginFailures {
        LoginFailures { base, by_source: Mutex::new(HashMap::new()) }
    }

    /// How long to wait before answering a login from `ip`.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let table = self.by_source.lock().expect("login failure table lock");
        match table.get(&ip) {
            Some((n, at)) if *n > 0 && at.elapsed() < LOGIN_FAILURE_MEMORY => {
                self.base.saturating_mul(1 << (*n - 1).min(LOGIN_FAILURE_DOUBLINGS_MAX))
            }
            _ => Duration::ZERO,
        }
    }

    pub fn failed(&self, ip: IpAddr) {
        let mut table = self.by_source.lock().expect("login failure table lock");
        if table.len() >= LOGIN_FAILURE_SOURCES_MAX && !table.contains_key(&ip) {
            table.retain(|_, (_, at)| at.elapsed() < LOGIN_FAILURE_MEMORY);
            if table.len() >= LOGIN_FAILURE_SOURCES_MAX {
                table.clear();
            }
        }
        let entry = table.entry(ip).or_insert((0, Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
    }

    pub fn succeeded(&self, ip: IpAddr) {
        self.by_source.lock().expect("login failure table lock").remove(&ip);
    }

    /// Sources remembered now.
    pub fn sources(&self) -> usize {
        self.by_source.lock().expect("login failure table lock").len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_double_the_delay_per_source_up_to_the_cap_and_a_success_clears_it() {
        let f = LoginFailures::new(Duration::from_millis(10));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert_eq!(f.delay(a), Duration::ZERO);
        f.failed(a);
        assert_eq!(f.delay(a), Duration::from_millis(10));
        f.failed(a);
        assert_eq!(f.delay(a), Duration::from_millis(20));
        for _ in 0..20 {
            f.failed(a);
        }
        assert_eq!(f.delay(a), Duration::from_millis(640), "64 times the base at most");
        assert_eq!(f.delay(b), Duration::ZERO, "another source is not slowed");
        f.succeeded(a);
        assert_eq!(f.delay(a), Duration::ZERO);
    }

    #[test]
    fn the_table_holds_its_limit_of_sources() {
        let f = LoginFailures::new(Duration::from_millis(1));
        for i in 0..LOGIN_FAILURE_SOURCES_MAX {
            f.failed(IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]));
        }
        assert_eq!(f.sources(), LOGIN_FAILURE_SOURCES_MAX);
        let known = IpAddr::from([10, 0, 0, 5]);
        f.failed(known);
        assert_eq!(f.sources(), LOGIN_FAILURE_SOURCES_MAX, "a known source does not grow the table");
        f.failed(IpAddr::from([11, 0, 0, 1]));
        assert_eq!(f.sources(), 1, "one source past the limit: every recent one is forgotten but it");
    }

    #[tokio::test]
    async fn unknown_accounts_are_checked_and_never_match() {
        let hash = crate::hash_password("right");
        assert!(check_password(Some(hash.clone()), "right".into()).await);
        assert!(!check_password(Some(hash), "wrong".into()).await);
        assert!(!check_password(None, "right".into()).await);
        assert!(!check_password(None, String::new()).await);
        assert!(password_checks_max() >= 1);
    }
}
