//! `maildr bench smtp`: a bounded load of durable deliveries and the figures it gave.
//!
//! By default the benchmark starts a private site in a temporary directory (same
//! store, same write path, same fsyncs as `maildr serve`) and removes it afterwards;
//! `--target` points it at a running MX instead. It prints figures; it decides
//! nothing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use maildr_client::smtp::{self, Envelope, Step};
use maildr_types::Clock as _;

/// The shape of an SMTP load, shared by the SMTP and replication benches.
#[derive(Args, Clone, Debug)]
pub struct LoadShape {
    /// Messages to send (in each measured run).
    #[arg(long, default_value_t = 2000)]
    pub messages: u64,
    /// Concurrent SMTP connections.
    #[arg(long, default_value_t = 20)]
    pub concurrency: u64,
    /// Size of each message in bytes.
    #[arg(long, default_value_t = 5120)]
    pub size: usize,
    /// Stop (each run) after this many seconds even if messages remain.
    #[arg(long, default_value_t = 300)]
    pub duration_max_secs: u64,
}

#[derive(Args)]
pub struct SmtpBench {
    #[command(flatten)]
    load: LoadShape,
    /// An MX to load instead of a private temporary site; needs `--rcpt`.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// Recipient at the target (default: the private site's sink account).
    #[arg(long)]
    rcpt: Option<String>,
    /// Where the private site keeps its data (default: a temporary directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// How long one SMTP exchange of the load may take before the worker gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

fn body_of(size: usize) -> Vec<u8> {
    let mut body = b"From: load@bench.test\r\nTo: sink@bench.test\r\nSubject: bench\r\n\r\n".to_vec();
    let line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n";
    while body.len() < size {
        let take = (size - body.len()).min(line.len());
        body.extend_from_slice(&line[..take]);
    }
    if !body.ends_with(b"\r\n") {
        body.truncate(body.len().saturating_sub(2));
        body.extend_from_slice(b"\r\n");
    }
    body
}

pub async fn run(args: SmtpBench) -> Result<()> {
    let mut private = None;
    let (target, rcpt) = match args.target {
        Some(t) => (t, args.rcpt.clone().context("--target needs --rcpt")?),
        None => {
            let site = PrivateSite::start(args.data_dir.clone()).await?;
            let addr = site.mx;
            private = Some(site);
            (addr, "sink@bench.test".to_string())
        }
    };
    let figures = load(target, &rcpt, &args.load).await?;
    println!("smtp bench: target {target}, {} B messages, concurrency {}", args.load.size, args.load.concurrency);
    figures.print();
    if let Some(site) = private {
        site.stop().await;
    }
    Ok(())
}

/// What one load gave.
pub struct Figures {
    pub accepted: usize,
    pub refused: u64,
    pub elapsed: Duration,
    /// DATA→250 latencies in milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Figures {
    pub fn per_sec(&self) -> f64 {
        self.accepted as f64 / self.elapsed.as_secs_f64()
    }

    pub fn print(&self) {
        println!(
            "accepted {} messages in {:.2} s, {} refused",
            self.accepted,
            self.elapsed.as_secs_f64(),
            self.refused
        );
        println!("throughput {:.0} messages/s", self.per_sec());
        println!("latency DATA→250 ms: p50 {:.2}  p99 {:.2}  max {:.2}", self.p50_ms, self.p99_ms, self.max_ms);
    }
}

/// Send `shape.messages` messages of `shape.size` bytes to `rcpt` at the MX `target`
/// over `shape.concurrency` connections, bounded by `shape.duration_max_secs`.
pub async fn load(target: SocketAddr, rcpt: &str, shape: &LoadShape) -> Result<Figures> {
    let LoadShape { messages, concurrency, size, duration_max_secs } = *shape;
    anyhow::ensure!(concurrency > 0 && messages > 0, "messages and concurrency must be positive");
    let body = Arc::new(body_of(size));
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(duration_max_secs);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (body, next, rcpt) = (Arc::clone(&body), Arc::clone(&next), rcpt.to_string());
        let total = messages;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0u64;
            let mut session = smtp::Session::connect(target, None, REPLY_TIMEOUT).await?;
            anyhow::ensure!(session.banner().code == 220, "{target} greeted with {}", session.banner());
            let ehlo = session.ehlo("bench.test").await?;
            anyhow::ensure!(ehlo.code == 250, "{target} answered EHLO with {ehlo}");
            let to = [rcpt];
            loop {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if seq >= total || Instant::now() >= deadline {
                    break;
                }
                // Unique content per message, as real mail is: no body deduplication.
                let mut data = format!("X-Bench-Seq: {seq}\r\n").into_bytes();
                data.extend_from_slice(&body);
                let envelope = Envelope { helo: "bench.test", from: "load@bench.test", to: &to, data: &data };
                let t0 = Instant::now();
                let outcome = session.send_message(&envelope).await?;
                match outcome.step {
                    Step::Message if outcome.reply.code == 250 => latencies.push(t0.elapsed()),
                    Step::Message => failures += 1,
                    step => anyhow::bail!("{target} answered {step} with {}", outcome.reply),
                }
            }
            session.quit().await;
            anyhow::Ok((latencies, failures))
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.await??;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        // With p in 0..=1 the index lies in 0..len; a float-to-int `as` saturates, never wraps.
        #[allow(clippy::cast_possible_truncation)]
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    Ok(Figures {
        accepted: latencies.len(),
        refused: failures,
        elapsed,
        p50_ms: pct(0.5),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    })
}

pub struct PrivateSite {
    pub mx: SocketAddr,
    dir: PathBuf,
    remove_dir: bool,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

/// A fresh store in `dir` (which must not exist yet) hosting `bench.test` with the
/// one account `address`.
pub fn bench_store(dir: &std::path::Path, address: &str, password: &str) -> Result<maildr_store::Store> {
    use maildr_store::Command;
    if dir.exists() {
        bail!("{} already exists; the benchmark wants a fresh directory", dir.display());
    }
    let store = maildr_store::Store::open(dir)?;
    let at = maildr_types::SystemClock.now();
    store.apply(Command::AddDomain { domain: maildr_types::Domain::parse("bench.test")?, at })??;
    let address = maildr_types::EmailAddress::parse(address)?;
    store.apply(Command::add_account(address, maildr_frontend::hash_password(password), 0, at))??;
    Ok(store)
}

impl PrivateSite {
    pub async fn start(dir: Option<PathBuf>) -> Result<Self> {
        let remove_dir = dir.is_none();
        let dir = dir.unwrap_or_else(|| std::env::temp_dir().join(format!("maildr-bench-{}", std::process::id())));
        let store = bench_store(&dir, "sink@bench.test", "unused-password")?;
        let config = maildr_config::SiteConfig::default();
        let mut smtp = config.smtp.clone();
        smtp.mx_listen = "127.0.0.1:0".parse()?;
        smtp.submission_listen = "127.0.0.1:0".parse()?;
        let limits = maildr_cluster::WritePathLimits::default();
        let cluster = maildr_cluster::Cluster::single_site(store, limits);
        let listeners = maildr_smtp::SmtpListeners::bind(&smtp, false).await?;
        let mx = listeners.local_addrs()[0].1;
        let service = maildr_smtp::SmtpService::new(cluster, smtp, "bench.test".into(), None);
        let (stop, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(maildr_smtp::serve(service, listeners, rx));
        println!("private site in {} (durable: every 250 is fsynced)", dir.display());
        Ok(PrivateSite { mx, dir, remove_dir, stop, server })
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
