//! DNS for the disaster-recovery control plane.
//!
//! The control loop decides which site is primary and which sites are in the MX
//! list; this crate turns that committed decision into DNS. `zone` builds records
//! (pure), `server` answers for them authoritatively, `provider` pushes them to the
//! local server or to a DNS server hosted elsewhere (RFC 2136 with TSIG).
//!
//! **Never:** decide failover, read cluster state, or invent a serial: the caller
//! passes every decision in.

/// Entry points for `fuzz/` and the corpus tests; never used by the server.
pub mod fuzzing;
pub mod provider;
pub mod server;
pub mod zone;

pub use provider::{
    BuiltInProvider, DnsProvider, ProviderError, PublishFuture, Rfc2136Provider, TsigAlgorithm, TsigKey,
};
pub use server::{DnsServer, DnsServerError, ServedState, ServedZone, ServerLimits};
pub use zone::{Lookup, RecordView, SiteAddress, Zone, ZoneError, ZoneInput, ZoneSet};
