//! Password checks for every front end that logs users in (SMTP AUTH, IMAP
//! LOGIN and AUTHENTICATE): bounded, answered "busy" rather than queued without end, and slowed
//! down per source address after failures.
//!
//! An argon2 check costs 19 MiB and tens of milliseconds of a core. Unbounded, a
//! flood of logins puts hundreds of hashing threads against replication's few,
//! and a site that cannot commit loses its elections. So at most
//! [`password_checks_max`] run at once (four per core: the scheduler then still
//! gives replication's threads their share of every core); the others wait their
//! turn without holding a thread. The checks run on their own threads at a lower
//! priority, never on tokio's blocking pool, where storage I/O runs. (An unknown account is answered at once: checking
//! it against a decoy hash, so that timing would not tell which accounts exist,
//! was tried, and made a lab's probes for a not-yet-created account cost as much as
//! real logins, until they timed out the site's other probes.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Source addresses remembered for login-failure delays.
pub const LOGIN_FAILURE_SOURCES_MAX: usize = 10_000;
/// A source's failures are forgotten after this long without another.
pub const LOGIN_FAILURE_MEMORY: Duration = Duration::from_secs(15 * 60);
/// Longest a login waits for one of the [`password_checks_max`] slots; then it is
/// answered "busy, try again" without any hashing. Under a flood, checks for
/// clients that already gave up would otherwise fill every slot ahead of the
/// clients still waiting.
pub const PASSWORD_CHECK_WAIT_MAX: Duration = Duration::from_millis(500);
/// The delay doubles with each failure up to this many doublings (64 times).
const LOGIN_FAILURE_DOUBLINGS_MAX: u32 = 6;

/// How many password checks run at once on this machine: four per core. (One
/// per core was tried: a three-site lab on two cores, whose observers each log in
/// to every data site four times a second, then queued logins behind checks for
/// clients that had already given up, until every probe timed out.)
pub fn password_checks_max() -> usize {
    std::thread::available_parallelism().map_or(4, |n| 4 * n.get())
}

fn permits() -> &'static Semaphore {
    static PERMITS: OnceLock<Semaphore> = OnceLock::new();
    PERMITS.get_or_init(|| Semaphore::new(password_checks_max()))
}

/// Scheduling priority of the password-hashing threads: nice +10, below the
/// runtime's and the blocking pool's threads.
const HASHING_NICENESS: i32 = 10;

type HashingJob = Box<dyn FnOnce() + Send>;

/// The threads password checks run on: their own, [`password_checks_max`] of
/// them (one per slot), at [`HASHING_NICENESS`]. Not tokio's blocking pool,
/// where storage I/O runs (log appends, applies, body writes): a check never
/// queues ahead of a write there, and under a login flood the scheduler gives
/// replication's threads the cores first.
struct HashingThreads {
    jobs: Mutex<std::sync::mpsc::Sender<HashingJob>>,
}

impl HashingThreads {
    fn start() -> HashingThreads {
        let (jobs, queue) = std::sync::mpsc::channel::<HashingJob>();
        let queue = std::sync::Arc::new(Mutex::new(queue));
        for n in 0..password_checks_max() {
            let queue = std::sync::Arc::clone(&queue);
            let spawned = std::thread::Builder::new().name(format!("password-{n}")).spawn(move || {
                lower_this_threads_priority();
                loop {
                    let job = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "starting a password-hashing thread");
            }
        }
        HashingThreads { jobs: Mutex::new(jobs) }
    }

    fn run(&self, job: HashingJob) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        // Only fails if every thread is gone; the caller then sees no answer (no match).
        let _ = jobs.send(job);
    }
}

fn hashing_threads() -> &'static HashingThreads {
    static THREADS: OnceLock<HashingThreads> = OnceLock::new();
    THREADS.get_or_init(HashingThreads::start)
}

/// Nice this thread (Linux schedules threads one by one; `setpriority` on a
/// thread id changes only that thread).
fn lower_this_threads_priority() {
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments.
    let changed = unsafe {
        match libc::id_t::try_from(libc::syscall(libc::SYS_gettid)) {
            Ok(tid) => libc::setpriority(libc::PRIO_PROCESS, tid, HASHING_NICENESS),
            Err(_) => -1,
        }
    };
    if changed != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "password-hashing thread keeps its priority");
    }
}

/// The scheduling priority (nice value) of the password-hashing threads, as
/// the kernel reports them (for tests: `/proc/self/task/<tid>/stat`).
pub fn hashing_thread_niceness() -> Vec<i32> {
    let _ = hashing_threads();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return Vec::new() };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| stat.contains("(password-"))
        // Field 19 (nice), counted after the closing parenthesis of the name.
        .filter_map(|stat| stat.rsplit_once(')')?.1.split_whitespace().nth(16)?.parse().ok())
        .collect()
}

/// What a password check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Matches,
    /// Wrong password, or no such account.
    DoesNotMatch,
    /// Every slot stayed busy for [`PASSWORD_CHECK_WAIT_MAX`]: nothing was checked;
    /// the client should try again (not a failed login).
    Busy,
}

/// Check `password` against `phc` (an account's argon2 hash). Waits at most
/// [`PASSWORD_CHECK_WAIT_MAX`] for one of the [`password_checks_max`] slots; the
/// hashing runs on the password threads. `None` (no such account) takes the same
/// path and as long, without hashing: it waits for a slot like any check, frees it
/// at once, and answers after [`typical_check_time`], so that neither the answer
/// nor its timing tells which accounts exist, and it costs no CPU.
pub async fn check_password(phc: Option<String>, password: String) -> PasswordCheck {
    check_password_with(phc, password, CredentialCache::Use).await
}

/// Whether a password check may use the verified-credential cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialCache {
    /// Accept a credential verified within the TTL; remember a match.
    Use,
    /// Always run argon2 and remember nothing (to measure what argon2 costs).
    Bypass,
}

/// [`check_password`], with or without the verified-credential cache.
pub async fn check_password_with(phc: Option<String>, password: String, cache: CredentialCache) -> PasswordCheck {
    let cached = cache == CredentialCache::Use;
    // Verified moments ago against this very stored hash: no argon2 again (see
    // `credential_cache`); failures are never remembered.
    if cached && phc.as_deref().is_some_and(|phc| crate::credential_cache::recently_verified(phc, &password)) {
        return PasswordCheck::Matches;
    }
    let Ok(Ok(slot)) = tokio::time::timeout(PASSWORD_CHECK_WAIT_MAX, permits().acquire()).await else {
        return PasswordCheck::Busy;
    };
    let Some(phc) = phc else {
        drop(slot);
        tokio::time::sleep(typical_check_time()).await;
        return PasswordCheck::DoesNotMatch;
    };
    let (answer, matched) = tokio::sync::oneshot::channel();
    hashing_threads().run(Box::new(move || {
        let started = Instant::now();
        let matched = crate::verify_password(&phc, &password);
        note_check_time(started.elapsed());
        if matched && cached {
            crate::credential_cache::remember_verified(&phc, &password);
        }
        let _ = answer.send(matched);
    }));
    let matched = matched.await.unwrap_or(false);
    drop(slot);
    if matched {
        PasswordCheck::Matches
    } else {
        PasswordCheck::DoesNotMatch
    }
}

/// What a check is taken to cost before any was measured.
const CHECK_TIME_DEFAULT: Duration = Duration::from_millis(50);

/// Recent checks' duration in microseconds (a moving average; 0: none yet).
static TYPICAL_CHECK_MICROS: AtomicU64 = AtomicU64::new(0);

fn note_check_time(took: Duration) {
    let took = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
    let _ = TYPICAL_CHECK_MICROS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
        Some(if old == 0 { took } else { old.saturating_mul(7).saturating_add(took) / 8 })
    });
}

/// How long a real password check takes lately on this machine (a moving average
/// of the last few; [`CHECK_TIME_DEFAULT`] until one was measured).
pub fn typical_check_time() -> Duration {
    match TYPICAL_CHECK_MICROS.load(Ordering::Relaxed) {
        0 => CHECK_TIME_DEFAULT,
        micros => Duration::from_micros(micros),
    }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_accounts_never_match_and_a_full_house_answers_busy() {
        let hash = crate::hash_password("right");
        assert_eq!(check_password(Some(hash.clone()), "right".into()).await, PasswordCheck::Matches);
        assert_eq!(check_password(Some(hash), "wrong".into()).await, PasswordCheck::DoesNotMatch);
        // An unknown account: no match, after at least as long as a real check takes.
        let typical = typical_check_time();
        let started = std::time::Instant::now();
        assert_eq!(check_password(None, "right".into()).await, PasswordCheck::DoesNotMatch);
        assert!(started.elapsed() >= typical / 2, "answered long before a real check would have been");
        assert_eq!(check_password(None, String::new()).await, PasswordCheck::DoesNotMatch);
        // With every slot taken (one test owns the process-wide slots), a check
        // answers busy after its wait, without hashing.
        let held = permits().acquire_many(password_checks_max() as u32).await.unwrap();
        let started = std::time::Instant::now();
        let hash = crate::hash_password("right");
        assert_eq!(check_password(Some(hash.clone()), "right".into()).await, PasswordCheck::Busy);
        assert!(started.elapsed() >= PASSWORD_CHECK_WAIT_MAX, "it waited its time first");
        // An unknown account is busy alike, so a full house does not tell either.
        assert_eq!(check_password(None, "right".into()).await, PasswordCheck::Busy);
        drop(held);
        assert_eq!(check_password(Some(hash.clone()), "right".into()).await, PasswordCheck::Matches);

        // Verified once, the same credentials need no slot and no hashing: with every
        // slot taken they still match at once. A wrong password is never
        // remembered, and a changed stored hash (a password change) misses.
        let held = permits().acquire_many(password_checks_max() as u32).await.unwrap();
        let started = std::time::Instant::now();
        assert_eq!(check_password(Some(hash.clone()), "right".into()).await, PasswordCheck::Matches);
        assert!(started.elapsed() < PASSWORD_CHECK_WAIT_MAX, "answered from the credential cache");
        assert_eq!(check_password(Some(hash), "wrong".into()).await, PasswordCheck::Busy);
        let changed = crate::hash_password("right");
        assert_eq!(check_password(Some(changed), "right".into()).await, PasswordCheck::Busy);
        drop(held);

        // Bypassing the cache (the login benchmark's "cache off"): a match is
        // not remembered, and a remembered one is not taken: it hashes again, so
        // with every slot taken it is busy.
        let fresh = crate::hash_password("right");
        let bypass = |phc: &String| check_password_with(Some(phc.clone()), "right".into(), CredentialCache::Bypass);
        assert_eq!(bypass(&fresh).await, PasswordCheck::Matches);
        assert!(!crate::credential_cache::recently_verified(&fresh, "right"), "a bypassing check remembers nothing");
        assert_eq!(check_password(Some(fresh.clone()), "right".into()).await, PasswordCheck::Matches);
        assert!(crate::credential_cache::recently_verified(&fresh, "right"));
        let slots = u32::try_from(password_checks_max()).expect("four per core fits");
        let held = permits().acquire_many(slots).await.unwrap();
        assert_eq!(bypass(&fresh).await, PasswordCheck::Busy);
        drop(held);
    }

    #[test]
    fn checks_run_on_their_own_threads_at_a_lower_priority() {
        // The threads name and nice themselves as they start.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut niceness = hashing_thread_niceness();
        while (niceness.len() < password_checks_max() || niceness.iter().any(|n| *n != HASHING_NICENESS))
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            niceness = hashing_thread_niceness();
        }
        assert_eq!(niceness.len(), password_checks_max(), "one thread per slot: {niceness:?}");
        assert!(niceness.iter().all(|n| *n == HASHING_NICENESS), "{niceness:?}");
    }
}
