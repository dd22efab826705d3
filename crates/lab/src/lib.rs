//! The lab: a whole multi-site maildr deployment on one machine.
//!
//! Today this crate holds the fault proxy that inter-site links run through; the
//! supervisor that writes site configs and starts one process per site comes with
//! the replication issue. The lab is outside the mail path: nothing here is ever
//! used by a production site.

pub mod fault_proxy;
pub mod link_control;
