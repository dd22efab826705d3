//! The synthetic client traffic that runs through a whole drill: what users and
//! other mail servers would have seen.
//!
//! - **MX flow**: uniquely tagged messages to the domain, sent like a sending MTA
//!   does: MX hosts resolved from the target's DNS, tried in preference order, a
//!   4xx or a failed connection retried later (a sender's queue), a 250 recorded
//!   as *acknowledged* with the site that gave it.
//! - **Submission flow**: messages submitted with STARTTLS and AUTH through
//!   `mail.<domain>`, retried the same way.
//! - **IMAP probe**: login, SELECT INBOX and a header fetch through `mail.`.
//! - **DNS probe**: `mail.` and MX asked of every DNS server of the target.
//!
//! Every exchange becomes a [`ProbeSample`]; every message a [`Message`] whose
//! fate the reconciliation checks afterwards. Load is bounded: one exchange at a
//! time per flow, at the plan's intervals, at most [`MESSAGES_MAX`] messages.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maildr_client::imap::{ImapError, Session};
use maildr_client::smtp::{self, Envelope, Login, Reply, Security, SmtpError};
use maildr_client::{dns, Tls};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::plan::ProbeSettings;
use crate::report::{ProbeOutcome, ProbeSample, Protocol};
use crate::target::Target;

/// Most messages one flow sends in a drill.
pub const MESSAGES_MAX: usize = 20_000;
/// Most samples kept (older ones are not dropped: new ones stop being recorded).
pub const SAMPLES_MAX: usize = 200_000;
/// Most retries of deferred messages per round of a flow.
const RETRIES_PER_ROUND_MAX: usize = 8;
/// The header that carries a message's tag.
pub const TAG_HEADER: &str = "X-Maildr-Drill";
/// Bytes of filler in a probe message body (a typical small mail).
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
}

/// Everything a probe task needs, shared.
struct Ctx {
    drill_id: String,
    domain: String,
    mail_name: String,
    dns_servers: Vec<SocketAddr>,
    /// Site IP → (name, MX listener, submission listener, IMAP listener and
    /// whether it is implicit TLS).
    sites: BTreeMap<IpAddr, (String, SocketAddr, SocketAddr, (SocketAddr, bool))>,
    tls: Option<Tls>,
    sender: Login,
    mx_recipient: String,
    submission_recipient: String,
    imap_login: Login,
    settings: ProbeSettings,
    recorded: Arc<Mutex<Recorded>>,
}

impl Flows {
    /// Start every flow against `target`.
    pub fn start(target: &Target, drill_id: &str, settings: &ProbeSettings) -> Result<Flows, String> {
        let tls = target.ca_pem.as_deref().map(Tls::from_ca_pem).transpose().map_err(|e| e.to_string())?;
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let ctx = Arc::new(Ctx {
            drill_id: drill_id.to_string(),
            domain: target.domain.clone(),
            mail_name: format!("mail.{}", target.domain),
            dns_servers: target.dns_servers(),
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
            recorded: recorded.clone(),
        });
        let (sending, sending_rx) = watch::channel(true);
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for flow in [MailFlow::Mx, MailFlow::Submission] {
            tasks.push(tokio::spawn(mail_flow(ctx.clone(), flow, sending_rx.clone(), stop_rx.clone())));
        }
        tasks.push(tokio::spawn(imap_probe(ctx.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(dns_probe(ctx, stop_rx)));
        Ok(Flows { recorded, sending, stop, tasks })
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
        (r.samples.clone(), r.messages.values().cloned().collect())
    }

    /// Stop sending new messages, keep retrying deferred ones for at most
    /// `drain_ms`, then stop every probe and return what was recorded.
    pub async fn finish(self, drain_ms: u64) -> (Vec<ProbeSample>, Vec<Message>) {
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
        (r.samples.clone(), r.messages.values().cloned().collect())
    }
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

async fn mail_flow(ctx: Arc<Ctx>, flow: MailFlow, sending: watch::Receiver<bool>, mut stop: watch::Receiver<bool>) {
    let interval_ms = match flow {
        MailFlow::Mx => ctx.settings.smtp_interval_ms,
        MailFlow::Submission => ctx.settings.submission_interval_ms,
    };
    let mut sent = 0usize;
    loop {
        // Retries first, oldest first, like a queue run.
        let now = now_ms();
        let due: Vec<String> = {
            let mut r = ctx.recorded.lock().expect("recorded lock");
            let retry_for = ctx.settings.retry_for_ms;
            for m in r.messages.values_mut().filter(|m| m.flow == flow && m.pending()) {
                if now.saturating_sub(m.first_attempt_at_ms) > retry_for {
                    m.given_up = true;
                }
            }
            r.messages
                .values()
                .filter(|m| m.flow == flow && m.pending() && m.attempts > 0)
                .take(RETRIES_PER_ROUND_MAX)
                .map(|m| m.tag.clone())
                .collect()
        };
        for tag in due {
            attempt(&ctx, flow, &tag).await;
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
                    first_attempt_at_ms: now_ms(),
                    attempts: 0,
                    acknowledged: None,
                    deferred: false,
                    refused: None,
                    given_up: false,
                    last_reply: String::new(),
                },
            );
            attempt(&ctx, flow, &tag).await;
        }
        if pause(&mut stop, interval_ms).await {
            return;
        }
    }
}

/// One delivery attempt of one message, through every host the flow would try.
async fn attempt(ctx: &Ctx, flow: MailFlow, tag: &str) {
    let recipient = {
        let mut r = ctx.recorded.lock().expect("recorded lock");
        let Some(m) = r.messages.get_mut(tag) else { return };
        m.attempts += 1;
        m.recipient.clone()
    };
    let data = message_bytes(ctx, tag, &recipient);
    let timeout = Duration::from_millis(ctx.settings.timeout_ms);
    let (protocol, hosts) = match flow {
        MailFlow::Mx => (Protocol::Smtp, mx_hosts(ctx, timeout).await),
        MailFlow::Submission => (Protocol::Submission, mail_host(ctx, timeout).await.map(|h| vec![h])),
    };
    let hosts = match hosts {
        Ok(h) => h,
        Err(e) => {
            record_attempt(ctx, tag, protocol, "dns", ProbeOutcome::Unreachable, 0, &e, None);
            if let Some(m) = ctx.recorded.lock().expect("recorded lock").messages.get_mut(tag) {
                m.deferred = true;
            }
            return;
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
        let latency = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (outcome, detail) = classify_smtp(&result);
        let acked = matches!(&result, Ok(r) if r.is_success());
        record_attempt(ctx, tag, protocol, &site, outcome, latency, &detail, acked.then(|| site.clone()));
        // A sending MTA moves to the next MX host when one does not answer or
        // defers at once; a 250 or a 5xx ends the attempt.
        if matches!(outcome, ProbeOutcome::Ok | ProbeOutcome::Refused) {
            return;
        }
    }
    // No host took it: the message waits in the sender's queue.
    if let Some(m) = ctx.recorded.lock().expect("recorded lock").messages.get_mut(tag) {
        m.deferred = true;
    }
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
        detail: detail.chars().take(200).collect(),
    });
}

fn message_bytes(ctx: &Ctx, tag: &str, recipient: &str) -> Vec<u8> {
    probe_message(&ctx.drill_id, &ctx.domain, tag, recipient)
}

/// A tagged probe message (CRLF line ends).
pub fn probe_message(drill_id: &str, domain: &str, tag: &str, recipient: &str) -> Vec<u8> {
    let filler: String = "The quick brown fox jumps over the lazy dog. ".repeat(BODY_FILLER_BYTES / 45);
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

/// The MX hosts in preference order with their listeners.
async fn mx_hosts(ctx: &Ctx, timeout: Duration) -> Result<Vec<Host>, String> {
    let per_server = dns_timeout(ctx, timeout);
    let names = dns::exchanges(&ctx.dns_servers, &format!("{}.", ctx.domain), per_server)
        .await
        .map_err(|e| format!("MX: {e}"))?;
    if names.is_empty() {
        return Err(format!("no MX record for {}", ctx.domain));
    }
    let mut out = Vec::new();
    for name in names {
        let addrs = dns::addresses(&ctx.dns_servers, &name, per_server).await.map_err(|e| format!("{name}: {e}"))?;
        out.extend(addrs.iter().filter_map(|ip| host_at(ctx, *ip)));
    }
    if out.is_empty() {
        return Err(format!("the MX hosts of {} resolve to no known site", ctx.domain));
    }
    Ok(out)
}

/// Where `mail.<domain>` points.
async fn mail_host(ctx: &Ctx, timeout: Duration) -> Result<Host, String> {
    let name = format!("{}.", ctx.mail_name);
    let addrs =
        dns::addresses(&ctx.dns_servers, &name, dns_timeout(ctx, timeout)).await.map_err(|e| format!("{name}: {e}"))?;
    addrs.iter().find_map(|ip| host_at(ctx, *ip)).ok_or_else(|| format!("{name} resolves to {addrs:?}, no known site"))
}

fn host_at(ctx: &Ctx, ip: IpAddr) -> Option<Host> {
    ctx.sites.get(&ip).map(|(name, mx, sub, _)| (name.clone(), *mx, *sub))
}

/// Each DNS server gets a share of the probe deadline, like a stub resolver's
/// per-server timeout.
fn dns_timeout(ctx: &Ctx, timeout: Duration) -> Duration {
    let n = u32::try_from(ctx.dns_servers.len().max(1)).unwrap_or(u32::MAX);
    (timeout / (n + 1)).max(Duration::from_millis(200))
}

/// A probe's sample, taken now, of an exchange that began at `started`; the detail
/// is cut to 200 characters.
fn sample_now(
    protocol: Protocol,
    target: String,
    outcome: ProbeOutcome,
    started: std::time::Instant,
    detail: &str,
) -> ProbeSample {
    ProbeSample {
        at_ms: now_ms(),
        protocol,
        target,
        outcome,
        latency_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        detail: detail.chars().take(200).collect(),
    }
}

async fn imap_probe(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    loop {
        let started = std::time::Instant::now();
        let timeout = Duration::from_millis(ctx.settings.timeout_ms);
        let (target, outcome, detail) = match imap_round(&ctx, timeout).await {
            Ok((site, bytes)) => (site, ProbeOutcome::Ok, format!("read {bytes} header bytes")),
            Err((site, outcome, detail)) => (site, outcome, detail),
        };
        let sample = sample_now(Protocol::Imap, target, outcome, started, &detail);
        ctx.recorded.lock().expect("recorded lock").sample(sample);
        if pause(&mut stop, ctx.settings.imap_interval_ms).await {
            return;
        }
    }
}

async fn imap_round(ctx: &Ctx, timeout: Duration) -> Result<(String, usize), (String, ProbeOutcome, String)> {
    let name = format!("{}.", ctx.mail_name);
    let ips = dns::addresses(&ctx.dns_servers, &name, dns_timeout(ctx, timeout))
        .await
        .map_err(|e| ("dns".to_string(), ProbeOutcome::Unreachable, e.to_string()))?;
    let Some((site, addr)) = ips.iter().find_map(|ip| ctx.sites.get(ip).map(|(n, _, _, imap)| (n.clone(), *imap)))
    else {
        return Err(("dns".into(), ProbeOutcome::Unreachable, format!("{name} resolves to {ips:?}")));
    };
    let fail = |e: ImapError| {
        let outcome = match e {
            ImapError::Timeout { .. } => ProbeOutcome::Timeout,
            ImapError::Greeting { .. } | ImapError::Refused { .. } | ImapError::Bye { .. } => ProbeOutcome::Deferred,
            _ => ProbeOutcome::Unreachable,
        };
        (site.clone(), outcome, e.to_string())
    };
    let (addr, over_tls) = addr;
    let tls = ctx.tls.as_ref().filter(|_| over_tls).map(|t| (t, ctx.mail_name.as_str()));
    let mut session = Session::connect(addr, tls, timeout).await.map_err(fail)?;
    session.login(&ctx.imap_login.user, &ctx.imap_login.password).await.map_err(fail)?;
    let exists = session.select("INBOX").await.map_err(fail)?.exists;
    let bytes = session.fetch_newest_header(exists).await.map_err(fail)?;
    session.logout().await;
    Ok((site, bytes))
}

async fn dns_probe(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mail = format!("{}.", ctx.mail_name);
    let domain = format!("{}.", ctx.domain);
    loop {
        for server in &ctx.dns_servers {
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
            let sample = sample_now(Protocol::Dns, target, outcome, started, &detail);
            ctx.recorded.lock().expect("recorded lock").sample(sample);
        }
        if pause(&mut stop, ctx.settings.dns_interval_ms).await {
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
