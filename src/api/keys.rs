//! Keys and share links of an organization (admin scope), and the page a share link opens.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use utoipa::ToSchema;

use super::auth::AdminKey;
use super::doc;
use super::error::ApiError;
use super::extract::{Body, BodyShape};
use super::{AppState, success};
use crate::engine::keys::{Authentication, CreatedKey, CreatedShareLink, NewCredential};
use crate::store::credentials::CredentialKind;

const NAME: &str = "a non-empty string of at most 200 bytes";
const ACCOUNTS: &str = "a list of the organization's account ids";
const EXPIRES: &str = "an RFC 3339 instant in the future, such as 2030-01-01T00:00:00Z";

/// `POST /api/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Chatbot vendor", "scope": "ingest"}))]
pub struct KeyBody {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    /// `ingest` (only posting events), `read` (figures and accounts) or `admin`.
    #[schema(pattern = "^(ingest|read|admin)$")]
    scope: String,
    /// Limits a `read` or `ingest` key to these accounts (1 to 1000, each an account of
    /// the organization); an admin key takes none.
    #[schema(min_items = 1, max_items = 1000)]
    accounts: Option<Vec<String>>,
    /// An RFC 3339 instant in the future; never expires when absent.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

impl BodyShape for KeyBody {
    const NAMES: &'static [&'static str] = &["name", "scope", "accounts", "expires_at"];
    const REQUIRED: &'static [&'static str] = &["name", "scope"];
    fn allowed(name: &str) -> &'static str {
        match name {
            "name" => NAME,
            "scope" => "one of ingest, read, admin",
            "accounts" => ACCOUNTS,
            _ => EXPIRES,
        }
    }
}

/// `POST /api/share-links`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Store manager"}))]
pub struct ShareLinkBody {
    #[schema(min_length = 1, max_length = 200, pattern = "\\S")]
    name: String,
    /// Limits the link to these accounts (1 to 1000, each an account of the organization).
    #[schema(min_items = 1, max_items = 1000)]
    accounts: Option<Vec<String>>,
    /// An RFC 3339 instant in the future; never expires when absent.
    #[schema(format = DateTime)]
    expires_at: Option<String>,
}

impl BodyShape for ShareLinkBody {
    const NAMES: &'static [&'static str] = &["name", "accounts", "expires_at"];
    const REQUIRED: &'static [&'static str] = &["name"];
    fn allowed(name: &str) -> &'static str {
        match name {
            "name" => NAME,
            "accounts" => ACCOUNTS,
            _ => EXPIRES,
        }
    }
}

fn created(data: impl serde::Serialize) -> Response {
    let mut response = success(data);
    *response.status_mut() = StatusCode::CREATED;
    response
}

fn id_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::invalid_parameter(format!("the id in the path is malformed: {e}")))
}

#[utoipa::path(post, path = "/api/keys", tag = "keys", request_body = KeyBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, description = "The key, shown only in this answer", body = doc::Success<CreatedKey>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn create_key(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    Body(b): Body<KeyBody>,
) -> Result<Response, ApiError> {
    let made = state
        .services
        .tenants
        .create_key(
            &org,
            NewCredential {
                name: b.name,
                scope: Some(b.scope),
                accounts: b.accounts,
                expires_at: b.expires_at,
            },
        )
        .await?;
    Ok(created(made))
}

#[utoipa::path(get, path = "/api/keys", tag = "keys",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The organization's keys, without their secrets", body = doc::Success<doc::KeyList>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn list_keys(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
) -> Result<Response, ApiError> {
    Ok(success(
        json!({"keys": state.services.tenants.list_keys(&org).await?}),
    ))
}

#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys",
    params(("id" = String, Path, description = "The key's id (`key_...`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The key is revoked", body = doc::Success<doc::Revoked>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn revoke_key(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(path)?;
    state
        .services
        .tenants
        .revoke(&org, CredentialKind::Key, &id)
        .await?;
    Ok(success(json!({"revoked": id})))
}

#[utoipa::path(post, path = "/api/share-links", tag = "keys", request_body = ShareLinkBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, description = "The link's token and address, shown only in this answer", body = doc::Success<CreatedShareLink>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn create_share_link(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    Body(b): Body<ShareLinkBody>,
) -> Result<Response, ApiError> {
    let made = state
        .services
        .tenants
        .create_share_link(
            &org,
            NewCredential {
                name: b.name,
                scope: None,
                accounts: b.accounts,
                expires_at: b.expires_at,
            },
        )
        .await?;
    Ok(created(made))
}

#[utoipa::path(get, path = "/api/share-links", tag = "keys",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The organization's share links, without their tokens", body = doc::Success<doc::ShareLinkList>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn list_share_links(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
) -> Result<Response, ApiError> {
    Ok(success(
        json!({"share_links": state.services.tenants.list_share_links(&org).await?}),
    ))
}

#[utoipa::path(delete, path = "/api/share-links/{id}", tag = "keys",
    params(("id" = String, Path, description = "The link's id (`share_...`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The link no longer works", body = doc::Success<doc::Deleted>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn delete_share_link(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = id_of(path)?;
    state
        .services
        .tenants
        .revoke(&org, CredentialKind::ShareLink, &id)
        .await?;
    Ok(success(json!({"deleted": id})))
}

/// Whether a share link's token is one that works now.
pub(super) async fn share_token_valid(state: &AppState, token: &str) -> Result<bool, ApiError> {
    Ok(matches!(
        state.services.tenants.authenticate(token).await?,
        Authentication::Valid(c) if c.kind == CredentialKind::ShareLink
    ))
}
