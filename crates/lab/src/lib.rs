//! The lab: a whole multi-site maildr deployment on one machine.
//!
//! `topology` derives every address of a lab from its `--net`; `state` is the
//! `lab.json` file the supervisor (`maildr lab`, in the binary) keeps between
//! commands; `fault_proxy` and `link_control` run the inter-site links that faults
//! are injected into; `link_client` and `hooks_client` are the clients the
//! supervisor and the drill engine use to set those faults and to stop and start
//! one service of a running site. The lab is outside the mail path: nothing here
//! is ever used by a production site.

pub mod fault_proxy;
pub mod hooks_client;
pub mod http_client;
pub mod link_client;
pub mod link_control;
pub mod state;
pub mod topology;
