//! Keys and share links of an organization (admin scope), and the page a share link opens.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::auth::AdminKey;
use super::error::ApiError;
use super::{AppState, body_bytes, success};
use crate::engine::keys::{Authentication, NewCredential};
use crate::store::credentials::CredentialKind;

/// The body of `POST /api/keys` and `POST /api/share-links`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialBody {
    name: String,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    accounts: Option<Vec<String>>,
    #[serde(default)]
    expires_at: Option<String>,
}

fn credential_body(body: &[u8], shape: &str) -> Result<CredentialBody, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body must be a JSON object {shape}: {e}")))
}

fn created(data: impl serde::Serialize) -> Response {
    let mut response = success(data);
    *response.status_mut() = StatusCode::CREATED;
    response
}

fn id_of(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::BadRequest(format!("the id in the path is malformed: {e}")))
}

pub(super) async fn create_key(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let b = credential_body(
        &body,
        "{\"name\", \"scope\", \"accounts\"?, \"expires_at\"?}",
    )?;
    let made = state
        .services
        .tenants
        .create_key(
            &org,
            NewCredential {
                name: b.name,
                scope: b.scope,
                accounts: b.accounts,
                expires_at: b.expires_at,
            },
        )
        .await?;
    Ok(created(made))
}

pub(super) async fn list_keys(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
) -> Result<Response, ApiError> {
    Ok(success(
        json!({"keys": state.services.tenants.list_keys(&org).await?}),
    ))
}

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

pub(super) async fn create_share_link(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let b = credential_body(&body, "{\"name\", \"accounts\"?, \"expires_at\"?}")?;
    if b.scope.is_some() {
        return Err(ApiError::BadRequest(
            "field `scope` is not allowed: a share link is always read-only".into(),
        ));
    }
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

pub(super) async fn list_share_links(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
) -> Result<Response, ApiError> {
    Ok(success(
        json!({"share_links": state.services.tenants.list_share_links(&org).await?}),
    ))
}

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

/// `GET /share/{token}`: the read-only page of a share link; an unknown, deleted or
/// expired link is a 404 page.
pub(super) async fn share_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> Result<Response, ApiError> {
    let valid = matches!(
        state.services.tenants.authenticate(&token).await?,
        Authentication::Valid(c) if c.kind == CredentialKind::ShareLink
    );
    if !valid {
        return Ok((
            StatusCode::NOT_FOUND,
            Html("<!doctype html><title>whatstat</title><p>This share link does not exist or has expired.</p>"),
        )
            .into_response());
    }
    Ok(Html(
        "<!doctype html><title>whatstat</title><p>This is a read-only share link of a whatstat organization. Its figures are served by the analytics API with this link's token as the key.</p>",
    )
    .into_response())
}
