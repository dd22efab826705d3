//! One SMTP transaction that hands a message to one destination for some of its
//! recipients, and what the receiving server said about each of them.
//!
//! MAIL, then RCPT for each recipient (each gets its own answer), DATA and the
//! message once at least one recipient was accepted. STARTTLS whenever offered
//! (opportunistic; see `tls`). A connection that cannot be opened or greeted is
//! [`Unreachable`] so the caller tries the next destination; anything after that
//! is an answer per recipient. A connection lost after the message was sent but
//! before its reply is read counts as deferred: the message may arrive twice,
//! never zero times.

use std::time::Duration;

use maildr_client::smtp::{Reply, Session, SmtpError, Step};
use maildr_client::Tls;
use maildr_types::EmailAddress;

use crate::route::Destination;

/// How long the final reply to the message may take, as a multiple of the usual
/// reply deadline (RFC 5321 §4.5.3.2.6 gives 10 minutes to 5 for the others).
const FINAL_REPLY_FACTOR: u32 = 10;

/// What became of one recipient in one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The receiving server took responsibility (its reply).
    Delivered { reply: String },
    /// Refused for good (5xx): the sender is told.
    Refused { reply: String },
    /// Not now (4xx, or the exchange broke): tried again later.
    Deferred { reason: String },
}

/// The destination could not be talked to at all: try the next one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error("{0}")]
    NoSession(String),
    /// The TLS handshake after STARTTLS failed: the caller may try again in clear.
    #[error("{0}")]
    Tls(String),
}

/// The envelope and content of one hand-over.
pub struct Handover<'a> {
    pub helo: &'a str,
    /// `None`: the null reverse path.
    pub from: Option<&'a EmailAddress>,
    pub to: &'a [EmailAddress],
    /// The message with CRLF line ends.
    pub data: &'a [u8],
    /// Connect, greeting and each reply (the final one gets ten times as long).
    pub timeout: Duration,
}

/// Hand the message over to `destination`; with `tls`, upgrade with STARTTLS when
/// offered. One verdict per recipient, in order.
pub async fn transfer(
    destination: &Destination,
    handover: &Handover<'_>,
    tls: Option<&Tls>,
) -> Result<Vec<Verdict>, Unreachable> {
    let no_session = |e: String| Unreachable::NoSession(format!("{} ({}): {e}", destination.host, destination.addr));
    let mut session =
        Session::connect(destination.addr, None, handover.timeout).await.map_err(|e| no_session(e.to_string()))?;
    if session.banner().code != 220 {
        return Err(no_session(format!("greeted with {}", session.banner())));
    }
    let ehlo = session.ehlo(handover.helo).await.map_err(|e| no_session(e.to_string()))?;
    if !ehlo.is_success() {
        return Err(no_session(format!("EHLO answered {ehlo}")));
    }
    if let Some(tls) = tls.filter(|_| session.capabilities().has("STARTTLS")) {
        match session.starttls(tls, &destination.host).await {
            Ok(r) if r.code == 220 => {
                let again = session.ehlo(handover.helo).await.map_err(|e| no_session(e.to_string()))?;
                if !again.is_success() {
                    return Err(no_session(format!("EHLO after STARTTLS answered {again}")));
                }
            }
            // STARTTLS refused: go on in clear, as without the offer.
            Ok(_) => {}
            Err(e) => {
                return Err(Unreachable::Tls(format!("{} ({}): STARTTLS: {e}", destination.host, destination.addr)))
            }
        }
    }
    let verdicts = envelope_and_content(&mut session, handover).await;
    session.quit().await;
    Ok(verdicts)
}

async fn envelope_and_content(session: &mut Session, h: &Handover<'_>) -> Vec<Verdict> {
    let all = |v: Verdict| vec![v; h.to.len()];
    let broke = |step: &str, e: SmtpError| Verdict::Deferred { reason: format!("{step}: {e}") };
    let mut mail = format!("MAIL FROM:<{}>", h.from.map(|a| a.as_str()).unwrap_or(""));
    if session.capabilities().has("SIZE") {
        mail.push_str(&format!(" SIZE={}", h.data.len()));
    }
    if session.capabilities().has("8BITMIME") && h.data.iter().any(|b| *b >= 0x80) {
        mail.push_str(" BODY=8BITMIME");
    }
    mail.push_str("\r\n");
    let reply = match session.command(Step::MailFrom, &mail).await {
        Ok(r) => r,
        Err(e) => return all(broke("MAIL FROM", e)),
    };
    if !reply.is_success() {
        return all(by_reply(&reply));
    }
    let mut verdicts: Vec<Option<Verdict>> = Vec::with_capacity(h.to.len());
    for to in h.to {
        match session.command(Step::RcptTo, &format!("RCPT TO:<{to}>\r\n")).await {
            Ok(r) if r.is_success() => verdicts.push(None),
            Ok(r) => verdicts.push(Some(by_reply(&r))),
            Err(e) => {
                // The session is gone: every recipient not yet answered waits.
                let reason = broke("RCPT TO", e);
                verdicts.resize(h.to.len(), Some(reason.clone()));
                return verdicts.into_iter().map(|v| v.unwrap_or_else(|| reason.clone())).collect();
            }
        }
    }
    if verdicts.iter().all(Option::is_some) {
        return verdicts.into_iter().flatten().collect();
    }
    let outcome = match session.command(Step::Data, "DATA\r\n").await {
        Ok(r) if r.code == 354 => {
            match session.send_content(h.data, h.timeout.saturating_mul(FINAL_REPLY_FACTOR)).await {
                Ok(r) if r.is_success() => Verdict::Delivered { reply: r.to_string() },
                Ok(r) => by_reply(&r),
                Err(e) => broke("the message's final reply", e),
            }
        }
        Ok(r) => by_reply(&r),
        Err(e) => broke("DATA", e),
    };
    verdicts.into_iter().map(|v| v.unwrap_or_else(|| outcome.clone())).collect()
}

/// A refusal's verdict: 5xx is for good, anything else waits.
fn by_reply(reply: &Reply) -> Verdict {
    if reply.is_permanent() {
        Verdict::Refused { reply: reply.to_string() }
    } else {
        Verdict::Deferred { reason: reply.to_string() }
    }
}
