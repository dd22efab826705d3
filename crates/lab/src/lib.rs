//! The lab: a whole multi-site maildr deployment on one machine.
//!
//! `topology` derives every address of a lab from its `--net`; `state` is the
//! `lab.json` file the supervisor keeps between commands; `supervisor` is what
//! `maildr lab` runs (up, status, down, kill, start, pause, resume, stop-service,
//! start-service, links), with `files` (configs and certificates), `bootstrap`
//! (starting and provisioning the sites) and `process` (pids, signals, liveness,
//! bounded runs) under it, and `s3_server` (the lab's object store for backups);
//! `fault_proxy` and `link_control` run the inter-site
//! links that faults are injected into; `link_client` and `hooks_client` are the
//! clients the supervisor and the drill engine use to set those faults and to stop
//! and start one service of a running site. The lab is outside the mail path:
//! nothing here is ever used by a production site, and it links no server crate
//! (it drives sites through the `maildr` executable its caller names).

mod bootstrap;
pub mod fault_proxy;
pub mod files;
pub mod hooks_client;
pub mod http_client;
pub mod link_client;
pub mod link_control;
pub mod netns;
pub mod process;
pub mod s3_server;
pub mod state;
pub mod supervisor;
pub mod topology;
pub mod wire;
