//! `maildr bench imap --logins`: what a login costs. `--clients` clients each
//! loop connect, LOGIN, SELECT INBOX, FETCH one message, LOGOUT, bounded by
//! `--logins-per-client` and `--duration-max-secs`.
//!
//! Without `--server`, a private site (one account, one message) is measured
//! twice: with the verified-credential cache (what a site runs) and without it
//! (`imap.credential_cache = false`: an argon2 verification per login). With
//! `--server`, the same loop runs against any IMAP server on plain IMAP (the
//! Dovecot comparison in `bench/imap_logins.sh`). Prints figures; decides nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use maildr_client::imap;
use maildr_store::Command;
use maildr_types::{Clock as _, EmailAddress};

/// How long one command of a login loop may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What the login loop runs, and against what.
pub struct LoginLoop {
    pub clients: u32,
    pub logins_per_client: u32,
    pub duration_max: Duration,
}

/// What a run of the loop measured.
struct LoginFigures {
    logins: usize,
    failures: usize,
    first_failure: Option<String>,
    elapsed: Duration,
    /// Each completed loop's duration, sorted.
    loops: Vec<Duration>,
}

impl LoginFigures {
    fn print(&self, label: &str, clients: u32) {
        let rate = self.logins as f64 / self.elapsed.as_secs_f64().max(1e-9);
        // The p-th percentile (nearest rank) of the sorted loop times, in ms.
        let pct = |p: usize| {
            let i = (self.loops.len() * p).div_ceil(100).clamp(1, self.loops.len().max(1)) - 1;
            self.loops.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{label}: {rate:.1} logins/s ({} logins by {clients} clients in {:.1} s; login+select+fetch+logout p50 {:.1} ms, p99 {:.1} ms; {} failed)",
            self.logins,
            self.elapsed.as_secs_f64(),
            pct(50),
            pct(99),
            self.failures
        );
        if let Some(first) = &self.first_failure {
            println!("  first failure: {first}");
        }
    }
}

/// One loop: connect, LOGIN, SELECT INBOX, FETCH 1, LOGOUT.
async fn one_login(server: SocketAddr, user: &str, password: &str) -> Result<(), imap::ImapError> {
    let mut session = imap::Session::connect(server, None, COMMAND_TIMEOUT).await?;
    session.login(user, password).await?;
    let inbox = session.select("INBOX").await?;
    if inbox.exists > 0 {
        session.fetch("1", "(FLAGS BODY.PEEK[])").await?;
    }
    session.logout().await;
    Ok(())
}

/// Run the loop against `server` with these credentials.
async fn measure(server: SocketAddr, user: &str, password: &str, plan: &LoginLoop) -> Result<LoginFigures> {
    let deadline = Instant::now() + plan.duration_max;
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..plan.clients {
        let (user, password, rounds) = (user.to_string(), password.to_string(), plan.logins_per_client);
        workers.push(tokio::spawn(async move {
            let (mut loops, mut failures) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                if Instant::now() >= deadline {
                    break;
                }
                let t = Instant::now();
                match one_login(server, &user, &password).await {
                    Ok(()) => loops.push(t.elapsed()),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (loops, failures)
        }));
    }
    let (mut loops, mut failures) = (Vec::new(), Vec::new());
    for w in workers {
        let (l, f) = w.await.context("a login client panicked")?;
        loops.extend(l);
        failures.extend(f);
    }
    let elapsed = started.elapsed();
    loops.sort_unstable();
    Ok(LoginFigures {
        logins: loops.len(),
        failures: failures.len(),
        first_failure: failures.into_iter().next(),
        elapsed,
        loops,
    })
}

/// The loop against another IMAP server.
pub async fn run_against(server: SocketAddr, user: &str, password: &str, plan: LoginLoop) -> Result<()> {
    one_login(server, user, password).await.with_context(|| format!("a first login to {server} as {user}"))?;
    let figures = measure(server, user, password, &plan).await?;
    figures.print(&format!("logins ({server})"), plan.clients);
    Ok(())
}

/// The loop against a private maildr site, with the credential cache and without.
pub async fn run_private(dir: Option<PathBuf>, listen: SocketAddr, plan: LoginLoop) -> Result<()> {
    let remove_dir = dir.is_none();
    let dir =
        dir.unwrap_or_else(|| std::env::temp_dir().join(format!("maildr-imap-logins-bench-{}", std::process::id())));
    let (user, password) = ("reader@bench.test", "bench-pw");
    let store = crate::bench::bench_store(&dir, user, password)?;
    let address = EmailAddress::parse(user)?;
    let phc = store.account(&address)?.context("the bench account")?.password_hash;
    println!("maildr's stored hash: {}", argon2_parameters(&phc));
    let cluster = maildr_cluster::Cluster::single_site(store, maildr_cluster::WritePathLimits::default());
    let body = b"From: a@bench.test\r\nTo: reader@bench.test\r\nSubject: one\r\n\r\nthe one message\r\n".to_vec();
    let blob = cluster.put_body(body).await?;
    let deliver = Command::Deliver {
        recipients: vec![address],
        body: blob,
        internal_date: maildr_types::SystemClock.now(),
        flags: Default::default(),
        retry_key: None,
    };
    cluster.write(deliver).await?;
    for cache in [true, false] {
        let mut config =
            maildr_config::ImapSection { plain_listen: listen, credential_cache: cache, ..Default::default() };
        config.sessions_per_account_max = config.sessions_per_account_max.max(plan.clients + 1);
        let listeners = maildr_imap::ImapListeners::bind(&config, false).await?;
        let addr = listeners.local_addrs()[0].1;
        let service = maildr_imap::ImapService::new(cluster.clone(), config, None);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(maildr_imap::serve(service, listeners, rx));
        let figures = measure(addr, user, password, &plan).await;
        let _ = stop.send(true);
        let _ = server.await;
        let label = if cache { "credential cache on" } else { "credential cache off" };
        figures?.print(&format!("logins (maildr, {label})"), plan.clients);
    }
    drop(cluster);
    if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// `argon2id m=19456,t=2,p=1` from a PHC string (what a comparison must match).
fn argon2_parameters(phc: &str) -> String {
    let mut fields = phc.split('$').filter(|f| !f.is_empty());
    let algorithm = fields.next().unwrap_or("?");
    let params = fields.find(|f| f.starts_with("m=")).unwrap_or("?");
    format!("{algorithm} {params}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn argon2_parameters_come_from_the_phc_string() {
        let phc = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA";
        assert_eq!(super::argon2_parameters(phc), "argon2id m=19456,t=2,p=1");
    }
}
