//! The drill engine: rehearse a failover on a real deployment and prove what
//! happened.
//!
//! A drill is a [`plan::Plan`] (TOML; `scenarios/` ships a library) run against a
//! target (the lab, or a deployment described by a file). The engine stands
//! outside the deployment like a client: it injects faults through the lab
//! supervisor, the fault proxy and the admin API, watches through SMTP, IMAP and
//! DNS as users and other MTAs do, reads the cluster's event log over the admin
//! API, and writes a [`report::Report`]. It never opens a site's store and never
//! links server code.
//!
//! - `plan`: the plan format, parsed once into typed steps.
//! - `report`: the report model (report.json); `render` turns it into Markdown and
//!   self-contained HTML with SVG charts.
//! - `audit`: the append-only, hash-chained audit log of drill actions and approvals.
//! - `approval`: approvals bound to a plan's SHA-256.
//! - `archive`: reports kept under the drill data directory, and the history.
//! - `readiness`: the gate before every fault (can the deployment take it now?).
//! - `regression`: what got worse since the previous drill of the scenario.
//! - `guard`: one drill at a time per data directory, and the global stop.
//! - `progress`: the phases a running drill entered, in a file a supervisor (the
//!   drill service) watches.
//! - `tabletop`: a plan walked through by people in their roles, nothing
//!   touched; their acknowledgements and decisions timed and graded.

pub mod approval;
pub mod archive;
pub mod audit;
pub mod flow;
pub mod guard;
pub mod measure;
pub mod plan;
pub mod progress;
pub mod readiness;
pub mod regression;
pub mod render;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod tabletop;
pub mod target;
