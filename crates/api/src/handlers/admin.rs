//! Domains, accounts and aliases: the same commands as `maildr admin`.
//!
//! Each handler parses everything it was given (addresses and domains into
//! `maildr_types` values, passwords within their bounds) before it writes one
//! command, so a refused request changes nothing. Password hashing (argon2) runs on
//! the blocking pool. Handlers must never return a password hash, and return a
//! password only when they generated it.

use axum::http::StatusCode;
use axum::Json;
use maildr_api_types::admin::{
    AccountCreated, AccountView, AliasView, DomainView, NewAccount, NewAlias, NewDomain, NewPassword, NewQuota,
    PasswordSet,
};
use maildr_store::{Command, Store, StoreError};
use maildr_types::{Domain, EmailAddress};
use serde::Deserialize;
use utoipa::IntoParams;

use super::refusals::{NotAcknowledged, NotJson, Unauthorized};
use crate::error::{ErrorBody, Failure};
use crate::extract::{JsonBody, PathText, QueryParams};
use crate::ApiState;

/// The given password checked against its bounds, or a generated one (`true`).
fn password_or_generated(given: Option<String>) -> Result<(String, bool), Failure> {
    match given {
        None => Ok((maildr_frontend::generate_password(), true)),
        Some(p) => match maildr_frontend::check_chosen_password(&p) {
            Ok(()) => Ok((p, false)),
            Err(refused) => Err(Failure::invalid("password", format!("password: {refused}"))),
        },
    }
}

/// Argon2 on the blocking pool: it takes tens of milliseconds by design.
async fn hash_password(password: String) -> Result<String, Failure> {
    tokio::task::spawn_blocking(move || maildr_frontend::hash_password(&password))
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("hashing the password failed: {e}")))
}

fn parse_domain(field: &str, raw: &str) -> Result<Domain, Failure> {
    Domain::parse(raw).map_err(|e| Failure::invalid(field, format!("{field}: {e}")))
}

fn parse_address(field: &str, raw: &str) -> Result<EmailAddress, Failure> {
    EmailAddress::parse(raw).map_err(|e| Failure::invalid(field, format!("{field}: {e}")))
}

/// Read the store on the blocking pool (redb reads may touch the disk).
async fn read<T, F>(state: &ApiState, what: &'static str, f: F) -> Result<T, Failure>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = state.cluster().store();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| Failure::new(StatusCode::INTERNAL_SERVER_ERROR, format!("reading {what} failed: {e}")))?
        .map_err(|e| Failure::store(what, e))
}

/// Narrow a list to one domain.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DomainFilter {
    /// Only entries of this domain.
    pub domain: Option<String>,
}

/// Remove one target of an alias instead of the whole alias.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AliasTarget {
    /// Remove only this target.
    pub target: Option<String>,
}

#[utoipa::path(get, path = "/api/domains", tag = "domains",
    responses((status = 200, description = "Hosted domains", body = [DomainView]),
        Unauthorized))]
pub async fn list_domains(state: axum::extract::State<ApiState>) -> Result<Json<Vec<DomainView>>, Failure> {
    let domains = read(&state, "domains", |s| s.domains()).await?;
    Ok(Json(domains.iter().map(|d| DomainView { name: d.name.to_string(), created_at: d.created_at.0 }).collect()))
}

#[utoipa::path(post, path = "/api/domains", tag = "domains", request_body = NewDomain,
    responses((status = 201, description = "Domain added", body = DomainView),
        (status = 409, description = "Already hosted", body = ErrorBody),
        (status = 422, description = "Invalid domain", body = ErrorBody),
        NotJson, Unauthorized, NotAcknowledged))]
pub async fn add_domain(
    state: axum::extract::State<ApiState>,
    JsonBody(body): JsonBody<NewDomain>,
) -> Result<(StatusCode, Json<DomainView>), Failure> {
    let domain = parse_domain("domain", &body.domain)?;
    let at = state.now();
    state.cluster().write(Command::AddDomain { domain: domain.clone(), at }).await?;
    Ok((StatusCode::CREATED, Json(DomainView { name: domain.to_string(), created_at: at.0 })))
}

#[utoipa::path(delete, path = "/api/domains/{domain}", tag = "domains",
    params(("domain" = String, Path, description = "The hosted domain", example = "example.test")),
    responses((status = 204, description = "Domain removed"),
        (status = 404, description = "Not hosted", body = ErrorBody),
        (status = 409, description = "Still has accounts or aliases", body = ErrorBody),
        (status = 422, description = "Invalid domain", body = ErrorBody),
        Unauthorized, NotAcknowledged))]
pub async fn remove_domain(
    state: axum::extract::State<ApiState>,
    PathText(domain): PathText,
) -> Result<StatusCode, Failure> {
    let domain = parse_domain("domain", &domain)?;
    state.cluster().write(Command::RemoveDomain { domain }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/accounts", tag = "accounts", params(DomainFilter),
    responses((status = 200, description = "Accounts", body = [AccountView]),
        (status = 422, description = "Invalid domain", body = ErrorBody),
        Unauthorized))]
pub async fn list_accounts(
    state: axum::extract::State<ApiState>,
    QueryParams(filter): QueryParams<DomainFilter>,
) -> Result<Json<Vec<AccountView>>, Failure> {
    let domain = filter.domain.as_deref().map(|d| parse_domain("domain", d)).transpose()?;
    let accounts = read(&state, "accounts", move |s| s.accounts(domain.as_ref())).await?;
    Ok(Json(accounts.iter().map(account_view).collect()))
}

#[utoipa::path(post, path = "/api/accounts", tag = "accounts", request_body = NewAccount,
    responses((status = 201, description = "Account added with its INBOX, Sent, Drafts, Trash and Junk",
            body = AccountCreated),
        (status = 404, description = "Domain not hosted", body = ErrorBody),
        (status = 409, description = "Address already taken", body = ErrorBody),
        (status = 422, description = "Invalid address, password or quota", body = ErrorBody),
        NotJson, Unauthorized, NotAcknowledged))]
pub async fn add_account(
    state: axum::extract::State<ApiState>,
    JsonBody(body): JsonBody<NewAccount>,
) -> Result<(StatusCode, Json<AccountCreated>), Failure> {
    let address = parse_address("address", &body.address)?;
    let (password, generated) = password_or_generated(body.password)?;
    let password_hash = hash_password(password.clone()).await?;
    let at = state.now();
    let command = Command::add_account(address.clone(), password_hash, body.quota_bytes, at);
    state.cluster().write(command).await?;
    let created = AccountCreated {
        address: address.to_string(),
        quota_bytes: body.quota_bytes,
        password: generated.then_some(password),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(get, path = "/api/accounts/{address}", tag = "accounts",
    params(("address" = String, Path, description = "The account's address", example = "alice@example.test")),
    responses((status = 200, description = "The account", body = AccountView),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "Invalid address", body = ErrorBody),
        Unauthorized))]
pub async fn get_account(
    state: axum::extract::State<ApiState>,
    PathText(address): PathText,
) -> Result<Json<AccountView>, Failure> {
    let address = parse_address("address", &address)?;
    let wanted = address.clone();
    match read(&state, "the account", move |s| s.account(&wanted)).await? {
        Some(account) => Ok(Json(account_view(&account))),
        None => Err(Failure::new(StatusCode::NOT_FOUND, format!("no account {address}")).at("address")),
    }
}

#[utoipa::path(delete, path = "/api/accounts/{address}", tag = "accounts",
    params(("address" = String, Path, description = "The account's address", example = "alice@example.test")),
    responses((status = 204, description = "Account removed with all its mail"),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "Invalid address", body = ErrorBody),
        Unauthorized, NotAcknowledged))]
pub async fn remove_account(
    state: axum::extract::State<ApiState>,
    PathText(address): PathText,
) -> Result<StatusCode, Failure> {
    let address = parse_address("address", &address)?;
    state.cluster().write(Command::RemoveAccount { address }).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(put, path = "/api/accounts/{address}/password", tag = "accounts", request_body = NewPassword,
    params(("address" = String, Path, description = "The account's address", example = "alice@example.test")),
    responses((status = 200, description = "Password changed", body = PasswordSet),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "Invalid address or password", body = ErrorBody),
        NotJson, Unauthorized, NotAcknowledged))]
pub async fn set_password(
    state: axum::extract::State<ApiState>,
    PathText(address): PathText,
    JsonBody(body): JsonBody<NewPassword>,
) -> Result<Json<PasswordSet>, Failure> {
    let address = parse_address("address", &address)?;
    let (password, generated) = password_or_generated(body.password)?;
    let password_hash = hash_password(password.clone()).await?;
    state.cluster().write(Command::SetPassword { address: address.clone(), password_hash }).await?;
    Ok(Json(PasswordSet { address: address.to_string(), password: generated.then_some(password) }))
}

#[utoipa::path(put, path = "/api/accounts/{address}/quota", tag = "accounts", request_body = NewQuota,
    params(("address" = String, Path, description = "The account's address", example = "alice@example.test")),
    responses((status = 200, description = "Quota set", body = AccountView),
        (status = 404, description = "No such account", body = ErrorBody),
        (status = 422, description = "Invalid address or quota", body = ErrorBody),
        NotJson, Unauthorized, NotAcknowledged))]
pub async fn set_quota(
    state: axum::extract::State<ApiState>,
    PathText(address): PathText,
    JsonBody(body): JsonBody<NewQuota>,
) -> Result<Json<AccountView>, Failure> {
    let address = parse_address("address", &address)?;
    state.cluster().write(Command::SetQuota { address: address.clone(), quota_bytes: body.quota_bytes }).await?;
    let wanted = address.clone();
    match read(&state, "the account", move |s| s.account(&wanted)).await? {
        Some(account) => Ok(Json(account_view(&account))),
        // Removed by someone else right after: the quota was set, the account is gone.
        None => Err(Failure::new(StatusCode::NOT_FOUND, format!("no account {address}")).at("address")),
    }
}

#[utoipa::path(get, path = "/api/aliases", tag = "aliases", params(DomainFilter),
    responses((status = 200, description = "Aliases", body = [AliasView]),
        (status = 422, description = "Invalid domain", body = ErrorBody),
        Unauthorized))]
pub async fn list_aliases(
    state: axum::extract::State<ApiState>,
    QueryParams(filter): QueryParams<DomainFilter>,
) -> Result<Json<Vec<AliasView>>, Failure> {
    let domain = filter.domain.as_deref().map(|d| parse_domain("domain", d)).transpose()?;
    let aliases = read(&state, "aliases", move |s| s.aliases(domain.as_ref())).await?;
    Ok(Json(aliases.iter().map(alias_view).collect()))
}

fn account_view(a: &maildr_store::Account) -> AccountView {
    AccountView {
        address: a.address.to_string(),
        quota_bytes: a.quota_bytes,
        used_bytes: a.used_bytes,
        created_at: a.created_at.0,
    }
}

fn alias_view(a: &maildr_store::Alias) -> AliasView {
    AliasView { address: a.address.to_string(), targets: a.targets.iter().map(|t| t.to_string()).collect() }
}

#[utoipa::path(post, path = "/api/aliases", tag = "aliases", request_body = NewAlias,
    responses((status = 201, description = "Target added to the alias (created if new)", body = AliasView),
        (status = 404, description = "Domain not hosted", body = ErrorBody),
        (status = 409, description = "Address is an account, target exists or is not local", body = ErrorBody),
        (status = 422, description = "Invalid address", body = ErrorBody),
        NotJson, Unauthorized, NotAcknowledged))]
pub async fn add_alias(
    state: axum::extract::State<ApiState>,
    JsonBody(body): JsonBody<NewAlias>,
) -> Result<(StatusCode, Json<AliasView>), Failure> {
    let alias = parse_address("alias", &body.alias)?;
    let target = parse_address("target", &body.target)?;
    state.cluster().write(Command::AddAlias { alias: alias.clone(), target: target.clone() }).await?;
    let domain = alias.domain();
    let all = read(&state, "aliases", move |s| s.aliases(Some(&domain))).await?;
    let view = all
        .iter()
        .find(|a| a.address == alias)
        .map(alias_view)
        .unwrap_or_else(|| AliasView { address: alias.to_string(), targets: vec![target.to_string()] });
    Ok((StatusCode::CREATED, Json(view)))
}

#[utoipa::path(delete, path = "/api/aliases/{address}", tag = "aliases",
    params(("address" = String, Path, description = "The alias address", example = "team@example.test"), AliasTarget),
    responses((status = 204, description = "Alias (or the one target) removed"),
        (status = 404, description = "No such alias or target", body = ErrorBody),
        (status = 422, description = "Invalid address", body = ErrorBody),
        Unauthorized, NotAcknowledged))]
pub async fn remove_alias(
    state: axum::extract::State<ApiState>,
    PathText(address): PathText,
    QueryParams(query): QueryParams<AliasTarget>,
) -> Result<StatusCode, Failure> {
    let alias = parse_address("address", &address)?;
    let target = query.target.as_deref().map(|t| parse_address("target", t)).transpose()?;
    state.cluster().write(Command::RemoveAlias { alias, target }).await?;
    Ok(StatusCode::NO_CONTENT)
}
