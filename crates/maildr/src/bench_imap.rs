//! `maildr bench imap`: FETCH and SEARCH throughput on a large mailbox; with
//! `--logins`, what a login costs instead (`bench_imap_logins.rs`).
//!
//! Starts a private site in a temporary directory, fills one INBOX with
//! `--messages` messages through the real write path, then runs `--sessions`
//! concurrent IMAP sessions that each repeat a FETCH of every message's
//! (FLAGS UID RFC822.SIZE ENVELOPE) and a header SEARCH, bounded by rounds and
//! time. Prints figures; decides nothing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use maildr_client::imap;
use maildr_store::Command;
use maildr_types::{Clock as _, EmailAddress, SystemFlags};

#[derive(Args)]
pub struct ImapBench {
    /// Messages in the mailbox.
    #[arg(long, default_value_t = 10_000)]
    messages: u32,
    /// Concurrent IMAP sessions.
    #[arg(long, default_value_t = 4)]
    sessions: u32,
    /// FETCH and SEARCH rounds per session.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Stop after this many seconds even if rounds remain.
    #[arg(long, default_value_t = 300)]
    duration_max_secs: u64,
    /// Where the private site keeps its data (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Login-heavy mode: clients loop connect, LOGIN, SELECT INBOX, FETCH one
    /// message, LOGOUT; prints logins/s with the credential cache and without.
    #[arg(long)]
    logins: bool,
    /// Login clients (with --logins).
    #[arg(long, default_value_t = 10)]
    clients: u32,
    /// Logins per client at most (with --logins); --duration-max-secs also bounds them.
    #[arg(long, default_value_t = 200)]
    logins_per_client: u32,
    /// Address of the private site's IMAP listener (with --logins).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Run the login loop against this plain-IMAP server instead of a private
    /// site (with --logins, --user and --password).
    #[arg(long, requires_all = ["logins", "user", "password"])]
    server: Option<std::net::SocketAddr>,
    /// Account for --server.
    #[arg(long)]
    user: Option<String>,
    /// Password for --server.
    #[arg(long)]
    password: Option<String>,
}

/// How long one IMAP command of the benchmark may take (a FETCH of every message
/// of a large mailbox included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

pub async fn run(args: ImapBench) -> Result<()> {
    if args.logins {
        return run_logins(args).await;
    }
    anyhow::ensure!(args.messages > 0 && args.sessions > 0 && args.rounds > 0, "all counts must be positive");
    let remove_dir = args.data_dir.is_none();
    let dir =
        args.data_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("maildr-imap-bench-{}", std::process::id())));
    let reader = EmailAddress::parse("reader@bench.test")?;
    let store = crate::bench::bench_store(&dir, reader.as_str(), "bench-pw")?;
    let cluster = maildr_cluster::Cluster::single_site(store, maildr_cluster::WritePathLimits::default());
    let fill = Instant::now();
    let mut pending = Vec::new();
    for i in 0..args.messages {
        let c = cluster.clone();
        let to = reader.clone();
        pending.push(tokio::spawn(async move {
            let body = format!(
                "From: Sender {i} <sender{}@example.test>\r\nTo: reader@bench.test\r\nSubject: message number {i}\r\nMessage-ID: <{i}@bench.test>\r\nDate: Tue, 03 Mar 2026 10:00:00 +0000\r\n\r\n{}\r\n",
                i % 97,
                "Lorem ipsum dolor sit amet, consectetur adipiscing elit.\r\n".repeat(40)
            );
            let blob = c.put_body(body.into_bytes()).await?;
            let flags = if i % 3 == 0 { SystemFlags(SystemFlags::SEEN) } else { SystemFlags::default() };
            c.write(Command::Deliver { recipients: vec![to], body: blob, internal_date: maildr_types::SystemClock.now(), flags, retry_key: None }).await?;
            anyhow::Ok(())
        }));
        if pending.len() >= 64 {
            for p in pending.drain(..) {
                p.await??;
            }
        }
    }
    for p in pending {
        p.await??;
    }
    println!("filled INBOX with {} messages in {:.1} s", args.messages, fill.elapsed().as_secs_f64());
    let mut config = maildr_config::ImapSection { plain_listen: "127.0.0.1:0".parse()?, ..Default::default() };
    config.sessions_per_account_max = config.sessions_per_account_max.max(args.sessions + 1);
    let listeners = maildr_imap::ImapListeners::bind(&config, false).await?;
    let addr = listeners.local_addrs()[0].1;
    let service = maildr_imap::ImapService::new(cluster, config, None);
    let (stop, rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(maildr_imap::serve(service, listeners, rx));

    let deadline = Instant::now() + Duration::from_secs(args.duration_max_secs);
    let fetch_time = Arc::new(std::sync::Mutex::new(Vec::new()));
    let search_time = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for s in 0..args.sessions {
        let (fetch_time, search_time) = (Arc::clone(&fetch_time), Arc::clone(&search_time));
        let rounds = args.rounds;
        workers.push(tokio::spawn(async move {
            let mut session = imap::Session::connect(addr, None, COMMAND_TIMEOUT).await.context("connecting")?;
            session.login("reader@bench.test", "bench-pw").await?;
            session.examine("INBOX").await?;
            let mut bytes = 0;
            for round in 0..rounds {
                if Instant::now() > deadline {
                    break;
                }
                let t = Instant::now();
                let before = session.bytes_read();
                session.fetch("1:*", "(FLAGS UID RFC822.SIZE ENVELOPE)").await?;
                bytes += session.bytes_read() - before;
                fetch_time.lock().expect("lock").push(t.elapsed());
                let t = Instant::now();
                let needle = format!("FROM sender{}@ SUBJECT \"number {}\"", (s + round) % 97, round);
                session.search(&needle).await?;
                search_time.lock().expect("lock").push(t.elapsed());
            }
            session.logout().await;
            anyhow::Ok(bytes)
        }));
    }
    let mut bytes = 0;
    for w in workers {
        bytes += w.await??;
    }
    let elapsed = started.elapsed();
    let fetches = fetch_time.lock().expect("lock").clone();
    let searches = search_time.lock().expect("lock").clone();
    let mean = |v: &[Duration]| v.iter().map(|d| d.as_secs_f64()).sum::<f64>() / v.len().max(1) as f64;
    let n = f64::from(args.messages);
    println!(
        "imap bench: {} messages, {} sessions, {} rounds each, {:.1} s",
        args.messages,
        args.sessions,
        args.rounds,
        elapsed.as_secs_f64()
    );
    println!(
        "FETCH 1:* (FLAGS UID RFC822.SIZE ENVELOPE): {} done, mean {:.0} ms, {:.0} messages/s per session, {:.0} messages/s all sessions",
        fetches.len(),
        mean(&fetches) * 1000.0,
        n / mean(&fetches).max(1e-9),
        n * fetches.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "SEARCH FROM+SUBJECT over all messages: {} done, mean {:.0} ms, {:.0} messages scanned/s all sessions",
        searches.len(),
        mean(&searches) * 1000.0,
        n * searches.len() as f64 / elapsed.as_secs_f64()
    );
    println!("received {:.1} MB", bytes as f64 / 1e6);
    let _ = stop.send(true);
    let _ = server.await;
    if remove_dir {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

async fn run_logins(args: ImapBench) -> Result<()> {
    use crate::bench_imap_logins::{run_against, run_private, LoginLoop};
    anyhow::ensure!(
        args.clients > 0 && args.logins_per_client > 0,
        "--clients and --logins-per-client must be positive"
    );
    let plan = LoginLoop {
        clients: args.clients,
        logins_per_client: args.logins_per_client,
        duration_max: Duration::from_secs(args.duration_max_secs),
    };
    match (args.server, args.user, args.password) {
        (Some(server), Some(user), Some(password)) => run_against(server, &user, &password, plan).await,
        _ => run_private(args.data_dir, args.listen, plan).await,
    }
}
