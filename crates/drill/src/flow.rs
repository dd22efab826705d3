//! The synthetic client traffic that runs through a whole drill: what users and
//! other mail servers would have seen, at the load the plan's `[load]` asks for.
//!
//! - **MX flow**: uniquely tagged messages to the domain at `load.smtp_per_second`,
//!   sent like a sending MTA does: MX hosts resolved from the target's DNS, tried
//!   in preference order, a 4xx or a failed connection retried a second later from
//!   the sender's queue, a 250 recorded as *acknowledged* with the site that gave
//!   it. At most `load.concurrency` connections at once; the rest queue.
//! - **Submission flow**: messages submitted with STARTTLS and AUTH through
//!   `mail.<domain>` at `load.submissions_per_second`, queued and retried the same way.
//! - **IMAP probe**: login, SELECT INBOX and a header fetch through `mail.`, one
//!   round started every `probes.imap_interval_ms` (every 100 ms right after a
//!   fault); rounds overlap, so one stuck on a dead site does not delay the next.
//! - **IDLE sessions**: `load.imap_idle_sessions` sessions held open with IDLE on
//!   the MX recipient's INBOX, reconnecting through `mail.` when their site goes.
//! - **DNS probe**: `mail.` and MX asked of every DNS server of the target.
//!
//! Names are resolved like a real resolver does ([`dns::Resolver`]: every server at
//! once, the first answer wins, a server that timed out is left out for a while), and
//! the lookup time is recorded apart from the exchange's (`lookup_ms`), so a dead
//! name server's timeout is never counted as the mail service's downtime. A sample's
//! time is the moment of the answer. Every exchange becomes a [`ProbeSample`]; every
//! message a [`Message`] whose fate the reconciliation checks afterwards. Load is
//! bounded in rate, connections and count ([`MESSAGES_MAX`] per flow).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maildr_client::imap::{ImapError, Session};
use maildr_client::smtp::{self, Envelope, Login, Reply, Security, SmtpError};
use maildr_client::{dns, Tls};
use tokio::sync::{watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

use crate::plan::{LoadProfile, ProbeSettings, DENSE_INTERVAL_MS};
use crate::report::{IdleSummary, ProbeOutcome, ProbeSample, Protocol};
use crate::target::Target;

/// Most messages one flow sends in a drill.
pub const MESSAGES_MAX: usize = 20_000;
/// Most samples kept (older ones are not dropped: new ones stop being recorded).
pub const SAMPLES_MAX: usize = 200_000;
/// How long a deferred message waits in the sender's queue before its next attempt.
const RETRY_AFTER_MS: u64 = 1_000;
/// Most IMAP probe rounds in flight at once. Rounds start every
/// [`DENSE_INTERVAL_MS`] after a fault and a survivor may hold each one until it
/// knows who leads, so up to `timeout_ms / DENSE_INTERVAL_MS` (30 with the
/// default 3 s) are in flight while it decides: the bound must stay above that,
/// or the probe stops starting rounds and may see the recovery late (16 was
/// below it; the observer test once found the drill's IMAP RTO 12 % late).
const IMAP_ROUNDS_IN_FLIGHT_MAX: usize = 64;
/// How long an IDLE session waits for a push before it renews its IDLE.
const IDLE_RENEW: Duration = Duration::from_secs(20);
/// Pause before an IDLE session that lost its site tries again.
const IDLE_RECONNECT_PAUSE_MS: u64 = 100;
/// The header that carries a message's tag.
pub const TAG_HEADER: &str = "X-Maildr-Drill";
/// Bytes of filler in a check's probe message body (a typical small mail).
const BODY_FILLER_BYTES: usize = 2048;

pub fn now_ms() -> u64 {
    u64::try_from(maildr_types::Clock::now_ms(&maildr_types::SystemClock)).unwrap_or(0)
}

/// Which flow a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailFlow {
    Mx,
    Submission,
}

/// One synthetic message and what happened to it.
#[derive(Debug, Clone)]
pub struct Message {
    pub tag: String,
    pub flow: MailFlow,
    pub recipient: String,
    pub first_attempt_at_ms: u64,
    pub attempts: u32,
    /// When and by which site it was acknowledged with 250.
    pub acknowledged: Option<(u64, String)>,
    /// Got a 4xx (or no answer) at least once.
    pub deferred: bool,
    /// Refused with 5xx: the sender gives up.
    pub refused: Option<String>,
    /// Still not acknowledged when the retry time ran out.
    pub given_up: bool,
    pub last_reply: String,
}

impl Message {
    pub fn pending(&self) -> bool {
        self.acknowledged.is_none() && self.refused.is_none() && !self.given_up
    }
}

/// What the flows recorded so far.
#[derive(Default)]
pub struct Recorded {
    pub samples: Vec<ProbeSample>,
    pub messages: BTreeMap<String, Message>,
    pub idle: IdleSummary,
}

impl Recorded {
    fn sample(&mut self, sample: ProbeSample) {
        if self.samples.len() < SAMPLES_MAX {
            self.samples.push(sample);
        }
    }
}

/// Counters for the live progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub acknowledged: u64,
    pub pending: u64,
    pub deferred: u64,
    pub imap_ok: u64,
    pub imap_failed: u64,
}

/// The running flows.
pub struct Flows {
    recorded: Arc<Mutex<Recorded>>,
    sending: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    dense_until_ms: Arc<AtomicU64>,
    dense_for_ms: u64,
}

/// Everything a probe task needs, shared.
struct Ctx {
    drill_id: String,
    domain: String,
    mail_name: String,
    resolver: dns::Resolver,
    /// Site IP → (name, MX listener, submission listener, IMAP listener and
    /// whether it is implicit TLS).
    sites: BTreeMap<IpAddr, (String, SocketAddr, SocketAddr, (SocketAddr, bool))>,
    tls: Option<Tls>,
    sender: Login,
    mx_recipient: String,
    submission_recipient: String,
    imap_login: Login,
    settings: ProbeSettings,
    load: LoadProfile,
    recorded: Arc<Mutex<Recorded>>,
    /// Until when (ms since the epoch) probes sample densely.
    dense_until_ms: Arc<AtomicU64>,
}

impl Ctx {
    /// The pause between two probe rounds whose normal pause is `interval_ms`.
    fn interval_ms(&self, interval_ms: u64) -> u64 {
        if now_ms() < self.dense_until_ms.load(Ordering::Relaxed) {
            interval_ms.min(DENSE_INTERVAL_MS)
        } else {
            interval_ms
        }
    }
}

impl Flows {
    /// Start every flow against `target`.
    pub fn start(
        target: &Target,
        drill_id: &str,
        settings: &ProbeSettings,
        load: &LoadProfile,
    ) -> Result<Flows, String> {
        let tls = target.ca_pem.as_deref().map(Tls::from_ca_pem).transpose().map_err(|e| e.to_string())?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let dense_until_ms = Arc::new(AtomicU64::new(0));
        let ctx = Arc::new(Ctx {
            drill_id: drill_id.to_string(),
            domain: target.domain.clone(),
            mail_name: format!("mail.{}", target.domain),
            resolver: dns::Resolver::new(target.dns_servers()),
            sites: target
                .sites
                .iter()
                .map(|s| (s.ip, (s.name.clone(), s.smtp, s.submission, s.imap_endpoint(tls.is_some()))))
                .collect(),
            tls,
            sender: Login { user: target.sender.address.clone(), password: target.sender.password.clone() },
            mx_recipient: target.mx_recipient.address.clone(),
            submission_recipient: target.submission_recipient.address.clone(),
            imap_login: Login {
                user: target.mx_recipient.address.clone(),
                password: target.mx_recipient.password.clone(),
            },
            settings: settings.clone(),
            load: load.clone(),
            recorded: recorded.clone(),
            dense_until_ms: dense_until_ms.clone(),
        });
        recorded.lock().expect("recorded lock").idle.sessions = load.imap_idle_sessions;
        let (sending, sending_rx) = watch::channel(true);
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for flow in [MailFlow::Mx, MailFlow::Submission] {
            tasks.push(tokio::spawn(mail_flow(ctx.clone(), flow, sending_rx.clone(), stop_rx.clone())));
        }
        for _ in 0..load.imap_idle_sessions {
            tasks.push(tokio::spawn(idle_session(ctx.clone(), stop_rx.clone())));
        }
        tasks.push(tokio::spawn(imap_probe(ctx.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(dns_probe(ctx, stop_rx)));
        Ok(Flows { recorded, sending, stop, tasks, dense_until_ms, dense_for_ms: settings.dense_for_ms })
    }

    /// A fault was just injected: sample densely for `probes.dense_for_ms`.
    pub fn fault_injected(&self) {
        self.dense_until_ms.fetch_max(now_ms() + self.dense_for_ms, Ordering::Relaxed);
    }

    pub fn counters(&self) -> Counters {
        let r = self.recorded.lock().expect("recorded lock");
        let mut c = Counters::default();
        for m in r.messages.values() {
            if m.acknowledged.is_some() {
                c.acknowledged += 1;
            } else if m.pending() {
                c.pending += 1;
            }
            c.deferred += u64::from(m.deferred);
        }
        for s in r.samples.iter().filter(|s| s.protocol == Protocol::Imap) {
            if s.outcome.is_ok() {
                c.imap_ok += 1;
            } else {
                c.imap_failed += 1;
            }
        }
        c
    }

    /// Add a message a check sent outside the flows, so the reconciliation
    /// accounts for it too.
    pub fn record_message(&self, message: Message) {
        let mut r = self.recorded.lock().expect("recorded lock");
        if r.messages.len() < 2 * MESSAGES_MAX {
            r.messages.insert(message.tag.clone(), message);
        }
    }

    /// A copy of what was recorded so far.
    pub fn snapshot(&self) -> (Vec<ProbeSample>, Vec<Message>) {
        let r = self.recorded.lock().expect("recorded lock");
        let mut samples = r.samples.clone();
        samples.sort_by_key(|s| s.at_ms);
        (samples, r.messages.values().cloned().collect())
    }

    /// Stop sending new messages, keep retrying deferred ones for at most
    /// `drain_ms`, then stop every probe and return what was recorded.
    pub async fn finish(self, drain_ms: u64) -> Finished {
        let _ = self.sending.send(false);
        let deadline = tokio::time::Instant::now() + Duration::from_millis(drain_ms);
        while tokio::time::Instant::now() < deadline {
            if self.counters().pending == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let mut r = self.recorded.lock().expect("recorded lock");
        // What is still unacknowledged when the drill ends was never confirmed.
        for m in r.messages.values_mut().filter(|m| m.pending()) {
            m.given_up = true;
        }
        // Answers are recorded as they come, by tasks in parallel: put them in
        // time order for the measurements.
        r.samples.sort_by_key(|s| s.at_ms);
        Finished {
            samples: std::mem::take(&mut r.samples),
            messages: r.messages.values().cloned().collect(),
            idle: r.idle.clone(),
        }
    }
}

/// Everything the flows recorded, once they stopped.
#[derive(Debug, Default)]
pub struct Finished {
    pub samples: Vec<ProbeSample>,
    pub messages: Vec<Message>,
    pub idle: IdleSummary,
}

/// Sleep `ms` unless told to stop; true when stopping.
async fn pause(stop: &mut watch::Receiver<bool>, ms: u64) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms)) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}

/// One mail flow: new messages at the flow's rate into the sender's queue, and the
/// queue worked off with at most `load.concurrency` connections.
async fn mail_flow(ctx: Arc<Ctx>, flow: MailFlow, sending: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
    let rate = match flow {
        MailFlow::Mx => ctx.load.smtp_per_second,
        MailFlow::Submission => ctx.load.submissions_per_second,
    };
    if rate == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / u64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let permits = Arc::new(Semaphore::new(ctx.load.concurrency as usize));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<(String, bool)>();
    // The sender's queue: (due at, sequence) → tag.
    let mut queue: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut seq = 0u64;
    let mut sent = 0usize;
    let mut in_flight: JoinSet<()> = JoinSet::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if *stop.borrow() {
            break;
        }
        while in_flight.try_join_next().is_some() {}
        let now = now_ms();
        while let Ok((tag, retry)) = done_rx.try_recv() {
            if retry {
                seq += 1;
                queue.insert((now + RETRY_AFTER_MS, seq), tag);
            }
        }
        if *sending.borrow() && sent < MESSAGES_MAX {
            sent += 1;
            let tag = format!("{}-{}-{sent:05}", ctx.drill_id, if flow == MailFlow::Mx { "mx" } else { "sub" });
            let recipient = match flow {
                MailFlow::Mx => ctx.mx_recipient.clone(),
                MailFlow::Submission => ctx.submission_recipient.clone(),
            };
            ctx.recorded.lock().expect("recorded lock").messages.insert(
                tag.clone(),
                Message {
                    tag: tag.clone(),
                    flow,
                    recipient,
                    first_attempt_at_ms: now,
                    attempts: 0,
                    acknowledged: None,
                    deferred: false,
                    refused: None,
                    given_up: false,
                    last_reply: String::new(),
                },
            );
            seq += 1;
            queue.insert((now, seq), tag);
        }
        // Work off what is due, oldest first, while connections are free.
        while let Some(entry) = queue.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else { break };
            let tag = entry.remove();
            let expired = {
                let mut r = ctx.recorded.lock().expect("recorded lock");
                match r.messages.get_mut(&tag) {
                    Some(m) if now.saturating_sub(m.first_attempt_at_ms) > ctx.settings.retry_for_ms => {
                        m.given_up = true;
                        true
                    }
                    Some(_) => false,
                    None => true,
                }
            };
            if expired {
                continue;
            }
            let (ctx, done) = (ctx.clone(), done_tx.clone());
            in_flight.spawn(async move {
                let retry = attempt(&ctx, flow, &tag).await;
                drop(permit);
                let _ = done.send((tag, retry));
            });
        }
    }
    // Attempts under way finish (each within its deadline); nothing new starts.
    while in_flight.join_next().await.is_some() {}
}

/// One delivery attempt of one message, through every host the flow would try;
/// whether it should be tried again later.
async fn attempt(ctx: &Ctx, flow: MailFlow, tag: &str) -> bool {
    let recipient = {
        let mut r = ctx.recorded.lock().expect("recorded lock");
        let Some(m) = r.messages.get_mut(tag) else { return false };
        m.attempts += 1;
        m.recipient.clone()
    };
    let data = message_bytes(ctx, tag, &recipient);
    let timeout = Duration::from_millis(ctx.settings.timeout_ms);
    let (protocol, hosts) = match flow {
        MailFlow::Mx => (Protocol::Smtp, mx_hosts(ctx, timeout).await),
        MailFlow::Submission => (Protocol::Submission, mail_host(ctx, timeout).await.map(|(h, ms)| (vec![h], ms))),
    };
    let (hosts, lookup_ms) = match hosts {
        Ok(h) => h,
        Err((e, lookup_ms)) => {
            record_attempt(ctx, tag, protocol, "dns", ProbeOutcome::Unreachable, 0, Some(lookup_ms), &e, None);
            return defer(ctx, tag);
        }
    };
    for (site, addr_mx, addr_sub) in hosts {
        let started = std::time::Instant::now();
        let to = [recipient.clone()];
        let (addr, security, login) = match flow {
            MailFlow::Mx => (addr_mx, Security::Plain, None),
            MailFlow::Submission => match &ctx.tls {
                Some(tls) => (
                    addr_sub,
                    Security::StartTls { tls: tls.clone(), server_name: ctx.mail_name.clone() },
                    Some(&ctx.sender),
                ),
                None => (addr_sub, Security::Plain, Some(&ctx.sender)),
            },
        };
        let envelope = Envelope {
            helo: "drill.maildr.invalid",
            from: match flow {
                MailFlow::Mx => "drill-sender@drill.maildr.invalid",
                MailFlow::Submission => &ctx.sender.user,
            },
            to: &to,
            data: &data,
        };
        let result = smtp::send(addr, &security, login, &envelope, timeout).await;
        let latency = elapsed_ms(started);
        let (outcome, detail) = classify_smtp(&result);
        let acked = matches!(&result, Ok(r) if r.is_success());
        record_attempt(
            ctx,
            tag,
            protocol,
            &site,
            outcome,
            latency,
            Some(lookup_ms),
            &detail,
            acked.then(|| site.clone()),
        );
        // A sending MTA moves to the next MX host when one does not answer or
        // defers at once; a 250 or a 5xx ends the attempt.
        if matches!(outcome, ProbeOutcome::Ok | ProbeOutcome::Refused) {
            return false;
        }
    }
    // No host took it: the message waits in the sender's queue.
    defer(ctx, tag)
}

/// Mark a message deferred; whether it is still to be tried.
fn defer(ctx: &Ctx, tag: &str) -> bool {
    let mut r = ctx.recorded.lock().expect("recorded lock");
    match r.messages.get_mut(tag) {
        Some(m) => {
            m.deferred = true;
            m.pending()
        }
        None => false,
    }
}

fn elapsed_ms(started: std::time::Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn classify_smtp(result: &Result<Reply, SmtpError>) -> (ProbeOutcome, String) {
    match result {
        Ok(r) if r.is_success() => (ProbeOutcome::Ok, format!("{} {}", r.code, r.text)),
        Ok(r) if r.is_transient() => (ProbeOutcome::Deferred, format!("{} {}", r.code, r.text)),
        Ok(r) => (ProbeOutcome::Refused, format!("{} {}", r.code, r.text)),
        Err(e @ SmtpError::Timeout { .. }) => (ProbeOutcome::Timeout, e.to_string()),
        Err(e @ SmtpError::Connect { .. }) => (ProbeOutcome::Unreachable, e.to_string()),
        Err(e) => (ProbeOutcome::Unreachable, e.to_string()),
    }
}

#[allow(clippy::too_many_arguments)]
fn record_attempt(
    ctx: &Ctx,
    tag: &str,
    protocol: Protocol,
    target: &str,
    outcome: ProbeOutcome,
    latency_ms: u64,
    lookup_ms: Option<u64>,
    detail: &str,
    acknowledged_by: Option<String>,
) {
    let at_ms = now_ms();
    let mut r = ctx.recorded.lock().expect("recorded lock");
    if let Some(m) = r.messages.get_mut(tag) {
        m.last_reply = detail.chars().take(200).collect();
        match outcome {
            ProbeOutcome::Ok => m.acknowledged = acknowledged_by.map(|s| (at_ms, s)),
            ProbeOutcome::Refused => m.refused = Some(m.last_reply.clone()),
            _ => {}
        }
    }
    r.sample(ProbeSample {
        at_ms,
        protocol,
        target: target.to_string(),
        outcome,
        latency_ms,
        lookup_ms,
        detail: detail.chars().take(200).collect(),
    });
}

fn message_bytes(ctx: &Ctx, tag: &str, recipient: &str) -> Vec<u8> {
    sized_message(&ctx.drill_id, &ctx.domain, tag, recipient, ctx.load.message_bytes as usize)
}

/// A tagged probe message (CRLF line ends) of a typical small size.
pub fn probe_message(drill_id: &str, domain: &str, tag: &str, recipient: &str) -> Vec<u8> {
    sized_message(drill_id, domain, tag, recipient, BODY_FILLER_BYTES + 600)
}

/// A tagged message of about `bytes` bytes (CRLF line ends).
pub fn sized_message(drill_id: &str, domain: &str, tag: &str, recipient: &str, bytes: usize) -> Vec<u8> {
    const LINE: &str = "The quick brown fox jumps over the lazy dog. ";
    let head = 600;
    let lines = bytes.saturating_sub(head) / (LINE.len() * 2 + 2);
    let filler: String = (0..lines).map(|_| format!("{LINE}{LINE}\r\n")).collect();
    format!(
        "From: maildr drill <drill-sender@drill.maildr.invalid>\r\nTo: <{recipient}>\r\n\
         Subject: maildr drill {tag}\r\nMessage-ID: <{tag}@drill.maildr.invalid>\r\n{TAG_HEADER}: {tag}\r\n\
         Date: {}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         Synthetic message of drill {} for {}.\r\n{filler}\r\n",
        rfc2822_now(),
        drill_id,
        domain,
    )
    .into_bytes()
}

/// The current time as an RFC 5322 date (UTC).
pub fn rfc2822_now() -> String {
    let secs = now_ms() / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's
/// algorithm).
// Day and month come out in 1..=31 and 1..=12 by construction, so their casts cannot truncate.
#[allow(clippy::cast_possible_truncation)]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

type Host = (String, SocketAddr, SocketAddr);

/// The MX hosts in preference order with their listeners, and the lookup time in
/// ms (also on failure).
async fn mx_hosts(ctx: &Ctx, timeout: Duration) -> Result<(Vec<Host>, u64), (String, u64)> {
    let started = std::time::Instant::now();
    let names = ctx
        .resolver
        .exchanges(&format!("{}.", ctx.domain), timeout)
        .await
        .map_err(|e| (format!("MX: {e}"), elapsed_ms(started)))?;
    if names.answer.is_empty() {
        return Err((format!("no MX record for {}", ctx.domain), elapsed_ms(started)));
    }
    let mut out = Vec::new();
    for name in names.answer {
        let addrs =
            ctx.resolver.addresses(&name, timeout).await.map_err(|e| (format!("{name}: {e}"), elapsed_ms(started)))?;
        out.extend(addrs.answer.iter().filter_map(|ip| host_at(ctx, *ip)));
    }
    if out.is_empty() {
        return Err((format!("the MX hosts of {} resolve to no known site", ctx.domain), elapsed_ms(started)));
    }
    Ok((out, elapsed_ms(started)))
}

/// Where `mail.<domain>` points, and the lookup time in ms (also on failure).
async fn mail_host(ctx: &Ctx, timeout: Duration) -> Result<(Host, u64), (String, u64)> {
    let started = std::time::Instant::now();
    let name = format!("{}.", ctx.mail_name);
    let addrs =
        ctx.resolver.addresses(&name, timeout).await.map_err(|e| (format!("{name}: {e}"), elapsed_ms(started)))?;
    let took = elapsed_ms(started);
    addrs
        .answer
        .iter()
        .find_map(|ip| host_at(ctx, *ip))
        .map(|h| (h, took))
        .ok_or_else(|| (format!("{name} resolves to {:?}, no known site", addrs.answer), took))
}

fn host_at(ctx: &Ctx, ip: IpAddr) -> Option<Host> {
    ctx.sites.get(&ip).map(|(name, mx, sub, _)| (name.clone(), *mx, *sub))
}

/// Where `mail.` sends IMAP clients: (site, IMAP listener and whether it is
/// implicit TLS), with the lookup time in ms (also on failure).
async fn imap_host(ctx: &Ctx, timeout: Duration) -> Result<((String, (SocketAddr, bool)), u64), (String, u64)> {
    let started = std::time::Instant::now();
    let name = format!("{}.", ctx.mail_name);
    let ips = ctx.resolver.addresses(&name, timeout).await.map_err(|e| (e.to_string(), elapsed_ms(started)))?;
    let took = elapsed_ms(started);
    ips.answer
        .iter()
        .find_map(|ip| ctx.sites.get(ip).map(|(n, _, _, imap)| (n.clone(), *imap)))
        .map(|h| (h, took))
        .ok_or_else(|| (format!("{name} resolves to {:?}", ips.answer), took))
}

/// IMAP rounds started every `probes.imap_interval_ms` (denser after a fault),
/// overlapping up to [`IMAP_ROUNDS_IN_FLIGHT_MAX`].
async fn imap_probe(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut rounds: JoinSet<()> = JoinSet::new();
    loop {
        while rounds.try_join_next().is_some() {}
        if rounds.len() < IMAP_ROUNDS_IN_FLIGHT_MAX {
            let ctx = ctx.clone();
            rounds.spawn(async move {
                let sample = imap_round(&ctx).await;
                ctx.recorded.lock().expect("recorded lock").sample(sample);
            });
        }
        if pause(&mut stop, ctx.interval_ms(ctx.settings.imap_interval_ms)).await {
            break;
        }
    }
    while rounds.join_next().await.is_some() {}
}

/// One IMAP round: resolve `mail.`, connect, log in, SELECT INBOX, fetch the newest
/// header. The sample is taken when the fetch is answered (the logout is not timed).
async fn imap_round(ctx: &Ctx) -> ProbeSample {
    let timeout = Duration::from_millis(ctx.settings.timeout_ms);
    let ((site, (addr, over_tls)), lookup_ms) = match imap_host(ctx, timeout).await {
        Ok(h) => h,
        Err((detail, lookup_ms)) => {
            return sample(Protocol::Imap, "dns".into(), ProbeOutcome::Unreachable, 0, Some(lookup_ms), &detail)
        }
    };
    let started = std::time::Instant::now();
    let fail = |e: ImapError| {
        let outcome = match e {
            ImapError::Timeout { .. } => ProbeOutcome::Timeout,
            ImapError::Greeting { .. } | ImapError::Refused { .. } | ImapError::Bye { .. } => ProbeOutcome::Deferred,
            _ => ProbeOutcome::Unreachable,
        };
        (outcome, e.to_string())
    };
    let tls = ctx.tls.as_ref().filter(|_| over_tls).map(|t| (t, ctx.mail_name.as_str()));
    let round = async {
        let mut session = Session::connect(addr, tls, timeout).await.map_err(fail)?;
        session.login(&ctx.imap_login.user, &ctx.imap_login.password).await.map_err(fail)?;
        let exists = session.select("INBOX").await.map_err(fail)?.exists;
        let bytes = session.fetch_newest_header(exists).await.map_err(fail)?;
        Ok::<_, (ProbeOutcome, String)>((session, bytes))
    };
    match round.await {
        Ok((session, bytes)) => {
            let s = sample(
                Protocol::Imap,
                site,
                ProbeOutcome::Ok,
                elapsed_ms(started),
                Some(lookup_ms),
                &format!("read {bytes} header bytes"),
            );
            session.leave().await;
            s
        }
        Err((outcome, detail)) => sample(Protocol::Imap, site, outcome, elapsed_ms(started), Some(lookup_ms), &detail),
    }
}

/// A sample taken now; the detail is cut to 200 characters.
fn sample(
    protocol: Protocol,
    target: String,
    outcome: ProbeOutcome,
    latency_ms: u64,
    lookup_ms: Option<u64>,
    detail: &str,
) -> ProbeSample {
    ProbeSample {
        at_ms: now_ms(),
        protocol,
        target,
        outcome,
        latency_ms,
        lookup_ms,
        detail: detail.chars().take(200).collect(),
    }
}

/// One IMAP session held open with IDLE on the MX recipient's INBOX, reconnecting
/// through `mail.` whenever it loses its site; counts pushes and reconnections.
async fn idle_session(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let timeout = Duration::from_millis(ctx.settings.timeout_ms);
    let mut lost_at: Option<u64> = None;
    loop {
        let held = async {
            let ((_, (addr, over_tls)), _) = imap_host(&ctx, timeout).await.map_err(|(e, _)| e)?;
            let tls = ctx.tls.as_ref().filter(|_| over_tls).map(|t| (t, ctx.mail_name.as_str()));
            let mut session = Session::connect(addr, tls, timeout).await.map_err(|e| e.to_string())?;
            session.login(&ctx.imap_login.user, &ctx.imap_login.password).await.map_err(|e| e.to_string())?;
            session.select("INBOX").await.map_err(|e| e.to_string())?;
            if let Some(at) = lost_at.take() {
                let mut r = ctx.recorded.lock().expect("recorded lock");
                r.idle.reconnects += 1;
                r.idle.longest_reconnect_ms = r.idle.longest_reconnect_ms.max(now_ms().saturating_sub(at));
            }
            loop {
                let pushed = session.idle(IDLE_RENEW).await.map_err(|e| e.to_string())?;
                let exists = pushed.iter().filter(|u| u.line.contains("EXISTS")).count() as u64;
                ctx.recorded.lock().expect("recorded lock").idle.pushes += exists;
            }
            #[allow(unreachable_code)]
            Ok::<(), String>(())
        };
        tokio::select! {
            result = held => {
                if let Err(e) = result {
                    lost_at.get_or_insert(now_ms());
                    let mut r = ctx.recorded.lock().expect("recorded lock");
                    r.idle.failures += 1;
                    r.idle.last_error = e.chars().take(200).collect();
                }
            }
            _ = stop.changed() => return,
        }
        if pause(&mut stop, IDLE_RECONNECT_PAUSE_MS).await {
            return;
        }
    }
}

async fn dns_probe(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mail = format!("{}.", ctx.mail_name);
    let domain = format!("{}.", ctx.domain);
    loop {
        for server in ctx.resolver.servers() {
            let started = std::time::Instant::now();
            let timeout = Duration::from_millis(ctx.settings.timeout_ms.min(1000));
            let a = dns::addresses(std::slice::from_ref(server), &mail, timeout).await;
            let mx = dns::exchanges(std::slice::from_ref(server), &domain, timeout).await;
            let target = ctx.sites.get(&server.ip()).map(|s| s.0.clone()).unwrap_or_else(|| server.to_string());
            let (outcome, detail) = match (a, mx) {
                (Ok(a), Ok(mx)) => {
                    let at: Vec<String> = a
                        .iter()
                        .map(|ip| ctx.sites.get(ip).map(|s| s.0.clone()).unwrap_or_else(|| ip.to_string()))
                        .collect();
                    (ProbeOutcome::Ok, format!("mail.→{} MX {}", at.join(","), mx.join(",")))
                }
                (Err(e), _) | (_, Err(e)) => match e {
                    dns::DnsError::Timeout { .. } => (ProbeOutcome::Timeout, e.to_string()),
                    dns::DnsError::Rcode { .. } => (ProbeOutcome::Refused, e.to_string()),
                    _ => (ProbeOutcome::Unreachable, e.to_string()),
                },
            };
            let s = sample(Protocol::Dns, target, outcome, elapsed_ms(started), None, &detail);
            ctx.recorded.lock().expect("recorded lock").sample(s);
        }
        if pause(&mut stop, ctx.interval_ms(ctx.settings.dns_interval_ms)).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc5322() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        let d = rfc2822_now();
        assert!(d.ends_with(" +0000") && d.len() >= 30, "{d}");
    }
}
