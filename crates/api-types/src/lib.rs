//! The admin HTTP API's contract: every request and response body of
//! `/api/...`, as serde types with their OpenAPI schemas.
//!
//! The server (`maildr-api`) answers with these types and derives its OpenAPI
//! document (`/api/openapi.json`) from them; its clients (the drill engine, the
//! lab's hooks client, `maildr` commands) read answers into the same types, so a
//! renamed or retyped field breaks the build instead of a drill. The cluster
//! builds its status and reports as these types too, and sends some of them
//! between sites on the replication channel.
//!
//! A leaf crate: it depends on `maildr-types` only and must never depend on a
//! server crate, so a client can use it without pulling a server in. It holds
//! plain data and pure presentation (`render`); it must never change the JSON a
//! field name or shape has today (scripts and schemathesis read it).

pub mod admin;
pub mod backup;
pub mod cluster;
pub mod control;
pub mod error;
pub mod faults;
pub mod openapi;
pub mod queue;
pub mod status;

pub use admin::{
    AccountCreated, AccountView, AliasView, DomainView, Live, NewAccount, NewAlias, NewDomain, NewPassword, NewQuota,
    PasswordSet,
};
pub use backup::{
    ArchiveSummary, BackupList, BackupReport, BackupSummary, BackupVerifyReport, MailboxRestored, NewClusterSeed,
    RestoreReport, RestoreRequest, TargetOutcome, VerifyBackupRequest, VerifyProblem,
};
pub use cluster::{
    ClusterStatus, Divergence, FailoverLoss, FailoverReport, FailoverRequest, MemberView, MessageDifference,
    SwitchoverReport, SwitchoverRequest, VerifyReport, VerifyRequest,
};
pub use control::{
    DnsRecord, DnsRecords, EventList, EventView, HealthHistory, HealthReport, Observations, ObserverReport, Sample,
    SiteHistory, SiteVerdict, SteeringView, TargetHealth, Votes,
};
pub use error::ErrorBody;
pub use faults::{Service, ServiceState, ServiceSwitch, ServicesView};
pub use status::{
    ApplyDelayStatus, ApplyHold, ForcedFailoverRecord, MailboxDigest, MessageSummary, PeerStatus, PrimaryContact,
    SiteStatus, WriteMetrics,
};
