//! The queue runner: on the primary, every [`TICK`] it starts an attempt for each
//! due queued message (at most `outbound.concurrency` at once, at most
//! `outbound.connections_per_destination` connections to one destination), and
//! each attempt ends by committing its outcome to the replicated queue.
//!
//! Nothing here keeps state that matters across a failover: what is in flight on
//! a primary that dies is simply due again on the next one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use maildr_client::Tls;
use maildr_cluster::Cluster;
use maildr_config::OutboundSection;
use maildr_store::{Applied, Command, QueuedMessage};
use maildr_types::SharedClock;
use maildr_types::{EmailAddress, SystemFlags, UnixSeconds};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::dsn::{self, Failure};
use crate::route::{RouteError, Router};
use crate::transfer::{transfer, Handover, Unreachable, Verdict};

/// How often the runner looks for due messages.
pub const TICK: Duration = Duration::from_millis(500);

/// What the runner needs besides the cluster.
#[derive(Debug, Clone)]
pub struct OutboundSettings {
    pub section: OutboundSection,
    /// This site's host name: the EHLO name unless `outbound.helo_name` is set,
    /// and the reporting MTA of notifications.
    pub hostname: String,
    /// DNS servers for MX and address lookups (`smtp.resolvers`; empty: the
    /// system's).
    pub resolvers: Vec<std::net::SocketAddr>,
}

struct Context {
    cluster: Cluster,
    settings: OutboundSettings,
    clock: SharedClock,
    router: Router,
    tls: Tls,
    /// One semaphore per destination (`host addr`).
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// Start the runner; it stops when `stop` turns true. Fails only when the
/// resolver cannot be set up.
pub fn spawn(
    cluster: Cluster,
    settings: OutboundSettings,
    clock: SharedClock,
    mut stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, String> {
    let router = Router::new(&settings.section, &settings.resolvers)?;
    let concurrency = settings.section.concurrency as usize;
    let ctx = Arc::new(Context {
        cluster,
        settings,
        clock,
        router,
        tls: crate::tls::opportunistic(),
        slots: Mutex::new(HashMap::new()),
    });
    Ok(tokio::spawn(async move {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<u64>();
        let mut in_flight: HashSet<u64> = HashSet::new();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                Some(id) = done_rx.recv() => { in_flight.remove(&id); continue; }
                changed = stop.changed() => if changed.is_err() { return; },
            }
            if *stop.borrow() {
                return;
            }
            while let Ok(id) = done_rx.try_recv() {
                in_flight.remove(&id);
            }
            let is_primary = ctx.cluster.replication().is_none_or(|r| r.is_primary());
            if !is_primary {
                continue;
            }
            let now = ctx.clock.now_ms();
            let queue = match ctx.cluster.store().queued() {
                Ok(q) => q,
                Err(e) => {
                    tracing::error!(error = %e, "reading the outbound queue failed");
                    continue;
                }
            };
            for message in queue {
                if in_flight.len() >= concurrency {
                    break;
                }
                if message.next_attempt_at_ms > now || in_flight.contains(&message.id) {
                    continue;
                }
                in_flight.insert(message.id);
                let (ctx, done) = (Arc::clone(&ctx), done_tx.clone());
                tokio::spawn(async move {
                    let id = message.id;
                    attempt(&ctx, message).await;
                    let _ = done.send(id);
                });
            }
        }
    }))
}

impl Context {
    async fn slot(&self, key: &str) -> tokio::sync::OwnedSemaphorePermit {
        let semaphore = {
            let mut slots = self.slots.lock().expect("slots lock");
            let per = self.settings.section.connections_per_destination as usize;
            Arc::clone(slots.entry(key.to_string()).or_insert_with(|| Arc::new(Semaphore::new(per))))
        };
        semaphore.acquire_owned().await.expect("destination semaphores are never closed")
    }

    fn helo(&self) -> &str {
        if self.settings.section.helo_name.is_empty() {
            &self.settings.hostname
        } else {
            &self.settings.section.helo_name
        }
    }

    /// The wait after attempt number `attempts` (0-based) failed for some recipient.
    fn backoff_ms(&self, attempts: u32) -> i64 {
        let s = &self.settings.section;
        let secs = s.retry_initial_secs.saturating_mul(1u64 << attempts.min(30)).min(s.retry_max_secs);
        i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX)
    }
}

/// One attempt at every recipient still waiting, and its record.
async fn attempt(ctx: &Context, message: QueuedMessage) {
    let id = message.id;
    let data = match read_body(ctx, &message).await {
        Ok(d) => d,
        Err(why) => {
            let deferred = message.recipients.iter().map(|r| (r.address.clone(), why.clone())).collect();
            record(ctx, &message, Vec::new(), Vec::new(), deferred).await;
            return;
        }
    };
    let data = dkim_signed(ctx, &message, data);
    let timeout = Duration::from_secs(ctx.settings.section.timeout_secs);
    let mut by_domain: BTreeMap<String, Vec<EmailAddress>> = BTreeMap::new();
    for r in &message.recipients {
        by_domain.entry(r.address.domain_str().to_ascii_lowercase()).or_default().push(r.address.clone());
    }
    let mut verdicts: Vec<(EmailAddress, Option<String>, Verdict)> = Vec::new();
    for (domain, recipients) in by_domain {
        let all =
            |remote: Option<String>, v: Verdict| recipients.iter().map(move |r| (r.clone(), remote.clone(), v.clone()));
        match ctx.router.destinations(&domain).await {
            Err(RouteError::Permanent(why)) => verdicts.extend(all(None, Verdict::Refused { reply: why })),
            Err(RouteError::Temporary(why)) => verdicts.extend(all(None, Verdict::Deferred { reason: why })),
            Ok(destinations) => {
                let handover =
                    Handover { helo: ctx.helo(), from: message.from.as_ref(), to: &recipients, data: &data, timeout };
                let mut last = String::from("no destination");
                let mut answered = None;
                for d in &destinations {
                    let _slot = ctx.slot(&format!("{} {}", d.host, d.addr)).await;
                    let outcome = match transfer(d, &handover, Some(&ctx.tls)).await {
                        Err(Unreachable::Tls(why)) => {
                            tracing::warn!(queue_id = id, destination = %d.addr, why, "STARTTLS failed; trying in clear");
                            transfer(d, &handover, None).await
                        }
                        other => other,
                    };
                    match outcome {
                        Ok(v) => {
                            answered = Some((d.host.clone(), v));
                            break;
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                match answered {
                    Some((host, v)) => {
                        verdicts.extend(recipients.iter().cloned().zip(v).map(|(r, v)| (r, Some(host.clone()), v)))
                    }
                    None => verdicts.extend(all(None, Verdict::Deferred { reason: last })),
                }
            }
        }
    }
    let now = ctx.clock.now_ms();
    let expired = now >= message.expires_at_ms;
    let (mut delivered, mut failures, mut deferred) = (Vec::new(), Vec::new(), Vec::new());
    for (recipient, remote_mta, verdict) in verdicts {
        match verdict {
            Verdict::Delivered { reply } => {
                tracing::info!(queue_id = id, %recipient, remote = ?remote_mta, reply, "delivered to another domain");
                delivered.push(recipient);
            }
            Verdict::Refused { reply } => {
                tracing::warn!(queue_id = id, %recipient, remote = ?remote_mta, reply, "refused; bouncing");
                failures.push(Failure { recipient, remote_mta, status: dsn::status_of(&reply), diagnostic: reply });
            }
            Verdict::Deferred { reason } if expired => {
                let days = (message.expires_at_ms - message.queued_at_ms) / 86_400_000;
                let hours = (message.expires_at_ms - message.queued_at_ms) / 3_600_000;
                let age = if days > 0 { format!("{days} days") } else { format!("{hours} hours") };
                failures.push(Failure {
                    recipient,
                    remote_mta,
                    status: "4.4.7".into(),
                    diagnostic: format!("the message expired after {age} in the queue; last error: {reason}"),
                });
            }
            Verdict::Deferred { reason } => {
                tracing::info!(queue_id = id, %recipient, reason, "deferred");
                deferred.push((recipient, reason));
            }
        }
    }
    let mut bounced = Vec::new();
    if !failures.is_empty() {
        match notify_sender(ctx, &message, &failures, &data).await {
            Ok(()) => bounced = failures.into_iter().map(|f| f.recipient).collect(),
            Err(why) => {
                tracing::error!(queue_id = id, why, "the bounce was not stored; the recipients wait");
                deferred.extend(
                    failures.into_iter().map(|f| (f.recipient, format!("{} (bounce not stored: {why})", f.diagnostic))),
                );
            }
        }
    }
    record(ctx, &message, delivered, bounced, deferred).await;
}

/// The message signed with its sender domain's DKIM key, when the domain has
/// one; unsigned (and said so in the log) when signing fails, rather than held.
fn dkim_signed(ctx: &Context, message: &QueuedMessage, data: Vec<u8>) -> Vec<u8> {
    let Some(domain) = message.from.as_ref().map(|f| f.domain_str().to_ascii_lowercase()) else { return data };
    match ctx.cluster.store().dkim_key(&domain) {
        Ok(Some(key)) => match crate::dkim::sign(&key, &domain, &data) {
            Ok(signed) => signed,
            Err(why) => {
                tracing::error!(queue_id = message.id, domain, why, "DKIM signing failed; sending unsigned");
                data
            }
        },
        Ok(None) => data,
        Err(e) => {
            tracing::error!(queue_id = message.id, domain, error = %e, "reading the DKIM key failed; sending unsigned");
            data
        }
    }
}

async fn read_body(ctx: &Context, message: &QueuedMessage) -> Result<Vec<u8>, String> {
    let hash = message.body.hash;
    ctx.cluster.ensure_bodies(&[hash]).await.map_err(|e| format!("the message body is not here yet: {e}"))?;
    let store = ctx.cluster.store();
    tokio::task::spawn_blocking(move || store.blobs().get(&hash))
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .map_err(|e| format!("reading the body: {e}"))
}

/// The delivery status notification into the submitter's INBOX (none for a
/// message with the null sender: a bounce is never bounced).
async fn notify_sender(
    ctx: &Context,
    message: &QueuedMessage,
    failures: &[Failure],
    data: &[u8],
) -> Result<(), String> {
    let Some(to) = message.from.as_ref().and(message.submitted_by.as_ref()) else { return Ok(()) };
    let now = ctx.clock.now_ms();
    let text = dsn::notification(
        &ctx.settings.hostname,
        message.from.as_ref().unwrap_or(to),
        message.id,
        message.queued_at_ms / 1000,
        now / 1000,
        failures,
        data,
    );
    let body = ctx.cluster.put_body(text).await.map_err(|e| e.to_string())?;
    let command = Command::Deliver {
        recipients: vec![to.clone()],
        body,
        internal_date: UnixSeconds(now / 1000),
        flags: SystemFlags::default(),
        // One notification per attempt, however often its write is retried.
        retry_key: Some(format!("dsn:{}:{}", message.id, message.attempts)),
    };
    match ctx.cluster.write(command).await {
        Ok(_) => Ok(()),
        // The submitter's account is gone: nobody to tell.
        Err(maildr_cluster::WriteError::Refused(maildr_store::CommandError::AccountUnknown(_))) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// Commit the attempt's outcome; a site that is no longer primary fails here and
/// the next primary tries again.
async fn record(
    ctx: &Context,
    message: &QueuedMessage,
    delivered: Vec<EmailAddress>,
    bounced: Vec<EmailAddress>,
    deferred: Vec<(EmailAddress, String)>,
) {
    let next_attempt_at_ms = ctx.clock.now_ms().saturating_add(ctx.backoff_ms(message.attempts));
    let command = Command::RecordDeliveryAttempt { id: message.id, delivered, bounced, deferred, next_attempt_at_ms };
    match ctx.cluster.write(command).await {
        Ok(Applied::QueueChanged { remaining, .. }) => {
            tracing::debug!(queue_id = message.id, remaining, "delivery attempt recorded")
        }
        Ok(other) => tracing::error!(queue_id = message.id, ?other, "unexpected answer to a delivery attempt"),
        Err(e) => tracing::warn!(queue_id = message.id, error = %e, "delivery attempt not recorded; it is repeated"),
    }
}
