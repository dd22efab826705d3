//! Outbound mail: the primary delivers the replicated outbound queue to other
//! domains.
//!
//! A submission to another domain is acknowledged once it is queued in the
//! replicated state (`Command::Submit`, committed by a quorum, its body on two
//! sites). From then on the queue entry, not any one site's disk, is the promise.
//! The [`runner`] runs on every site and works only while its site is primary: it
//! reads the due entries, finds where each recipient domain's mail goes
//! ([`route`]: a configured route, the smarthost, or the domain's MX through a
//! real resolver), hands the message over ([`transfer`]: SMTP with opportunistic
//! STARTTLS, per-recipient replies) and records the outcome
//! (`Command::RecordDeliveryAttempt`) before it forgets it. Refused recipients and
//! those still waiting when the message expires are reported to the sender as a
//! delivery status notification ([`dsn`], RFC 3464) in their INBOX.
//!
//! After a failover the new primary delivers from the same queue. A message the
//! old primary handed over but had not yet recorded is delivered again: at least
//! once, never zero times. The window is one attempt: from the remote server's
//! 250 to the commit of the attempt's record (see `docs/outbound.md`).

pub mod dkim;
pub mod dsn;
pub mod route;
pub mod runner;
mod tls;
pub mod transfer;

pub use runner::{spawn, OutboundSettings};
