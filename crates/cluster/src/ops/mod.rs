//! Operator actions on a whole cluster: every member's status, planned switchover,
//! forced failover to a standby, the lagged site's hold, rejoin and cross-site
//! verification, shared by `maildr cluster`, the admin HTTP API and the control plane.
//!
//! [`ControlClient`] (`client.rs`) is the operations client: one typed method per
//! control request to one site. The modules here combine its answers into reports:
//! `status.rs` (every member), `switchover.rs`, `failover.rs`, `lagged.rs`,
//! `membership.rs` (init, rejoin) and `verify.rs`. Printing them is the caller's
//! business. They never open a site's files: everything they report is what the
//! sites say, and they never change state except through a site's own control
//! requests (`HandOver`, `ForceFailover`, ...), which the site checks again itself.

mod client;
mod failover;
mod lagged;
mod membership;
mod status;
mod switchover;
mod verify;

use std::time::Duration;

pub use crate::raft::network::PeerCallError;
pub use client::{ControlClient, QueueSnapshot, Rejoined, SiteDigests, REJOIN_TIMEOUT};
pub use failover::{failover, failover_loss, wait_until_promoted, FailoverLoss, FailoverReport};
pub use lagged::{hold_apply, release_apply};
pub use membership::{init, rejoin, InitReport, RejoinReport};
pub use status::{cluster_status, ClusterStatus, MemberView};
pub use switchover::{switchover, SwitchoverReport};
pub use verify::{verify, Divergence, MessageDifference, VerifyReport, VERIFY_DEADLINE};

/// How long one control request may take, unless the caller says otherwise.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(20);

/// How long `maildr cluster status` waits for each member (all are asked at once):
/// one that has not answered by then is shown UNREACHABLE. An operator asks during
/// an outage, and a frozen site (its socket accepts, nothing answers) would
/// otherwise hold the whole picture back for [`CONTROL_TIMEOUT`].
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `cluster init` asks again a site that is still in its fresh-start check.
pub const INIT_FRESH_WAIT: Duration = Duration::from_secs(30);

/// Why an operator action did not happen (or not completely).
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("site {0} has no [[cluster.members]]: it is not part of a cluster")]
    NotACluster(String),
    #[error("no member site {site:?}; members are {members}")]
    UnknownMember { site: String, members: String },
    #[error("{site} is a {role} site; only data sites become primary")]
    NotADataSite { site: String, role: &'static str },
    #[error("the cluster's certificates: {0}")]
    Certificates(#[from] crate::certs::CertError),
    #[error("no reachable member knows a primary; switchover and rejoin need one")]
    NoPrimary,
    #[error("the primary (node {0}) is not in this config")]
    PrimaryNotConfigured(u64),
    /// The site got no answer through.
    #[error(transparent)]
    Unreachable(#[from] PeerCallError),
    /// The site answered with a refusal (for a switchover: the target is not a
    /// caught-up data site, a hand-over is already running, …).
    #[error("site {site}: {reason}")]
    Refused { site: String, reason: String },
    /// The site has no Raft state yet and is still checking that no member counts
    /// its node id (it waits for a majority of the voters to answer).
    #[error(
        "site {0} is starting with no Raft state: it waits for a majority of the voters to confirm that none counts \
         its node id as a member; start the other sites (or, for a brand-new cluster started one site at a time, \
         restart it with `maildr serve --new-cluster`)"
    )]
    Starting(String),
    /// The site answered something this version does not expect.
    #[error("site {site} answered {what}")]
    Unexpected { site: String, what: String },
    #[error("fewer than two sites answered; nothing to compare (unreachable: {0})")]
    TooFewSites(String),
    #[error("sites kept applying new entries; could not read them all at one index within {0} s")]
    KeptApplying(u64),
    #[error(
        "{site} is a {role} site; a forced failover promotes only a standby or a held lagged site (with a quorum, use \
         switchover)"
    )]
    NotAStandby { site: String, role: &'static str },
    #[error("a forced failover names the operator who forces it; it is recorded")]
    NoOperator,
    #[error("{site} was already promoted by a forced failover ({detail})")]
    AlreadyPromoted { site: String, detail: String },
    #[error(
        "{site} heard from the primary (node {primary}) {heard_ms_ago} ms ago: the quorum is alive; use switchover"
    )]
    PrimaryAlive { site: String, primary: u64, heard_ms_ago: u64 },
    /// A member the operator reached still has a primary: the quorum is alive.
    #[error(
        "{site} answers that node {primary} is the primary (term {term}): the quorum is alive; use switchover (a \
         standby cut off from the cities is not a lost quorum)"
    )]
    QuorumAlive { site: String, primary: u64, term: u64 },
    /// Nothing was changed: the operator has not accepted the loss.
    #[error("refused: nothing changed. Accept the data loss to promote {site} knowing what it lacks")]
    DataLossNotAccepted { site: String },
    #[error("{site} is a {role} site; only a lagged site delays and holds its applies")]
    NotLagged { site: String, role: &'static str },
    #[error("{site} accepted the forced failover but does not lead after {secs} s; see its log")]
    NotPromoted { site: String, secs: u64 },
}
