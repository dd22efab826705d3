//! Domains, accounts and aliases (`/api/domains`, `/api/accounts`, `/api/aliases`)
//! and liveness: the requests the admin API reads and the answers it gives. No
//! answer here ever holds a password hash; a password appears only when the server
//! generated it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The process is up and serving HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Live {
    /// Always `true`.
    pub live: bool,
}

/// A hosted domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DomainView {
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDomain {
    /// The domain to host, e.g. `example.test`.
    #[schema(format = Hostname, example = "example.test")]
    pub domain: String,
}

/// An account (never its password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountView {
    pub address: String,
    /// Storage allowed; 0 means unlimited.
    pub quota_bytes: u64,
    pub used_bytes: u64,
    /// Unix seconds.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    #[schema(format = Email, example = "alice@example.test")]
    pub address: String,
    /// The password; when absent one is generated and returned once.
    #[serde(default)]
    #[schema(max_length = 1024, min_length = 1)]
    pub password: Option<String>,
    /// Storage quota; 0 (the default) means unlimited.
    #[serde(default)]
    pub quota_bytes: u64,
}

/// A new account, with its password when it was generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountCreated {
    pub address: String,
    pub quota_bytes: u64,
    /// The generated password; shown this once, absent when the caller chose it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// The new password; when absent one is generated and returned once.
    #[serde(default)]
    #[schema(max_length = 1024, min_length = 1)]
    pub password: Option<String>,
}

/// A password changed, with the new one when it was generated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PasswordSet {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewQuota {
    /// Storage quota; 0 means unlimited.
    pub quota_bytes: u64,
}

/// An alias and the local accounts it delivers to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AliasView {
    pub address: String,
    pub targets: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAlias {
    /// The alias address (created if it does not exist).
    #[schema(format = Email, example = "team@example.test")]
    pub alias: String,
    /// A local account it delivers to (added to the alias's targets).
    #[schema(format = Email, example = "alice@example.test")]
    pub target: String,
}
