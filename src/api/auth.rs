//! Who is calling: an organization's key (Bearer or X-API-Key), or the master key.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::engine::Org;
use crate::engine::keys::{Authentication, Credential, Scope};
use crate::store::credentials::CredentialKind;

pub(crate) fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(k) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
    {
        return Some(k.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Checks the presented credential and that its scope covers `needed`; applies the
/// rate limit per credential.
async fn authorize(parts: &Parts, state: &AppState, needed: Scope) -> Result<Credential, ApiError> {
    let key = presented_key(&parts.headers).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidApiKey,
            "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
        )
    })?;
    let credential = match state.services.tenants.authenticate(key).await? {
        Authentication::Valid(c) => c,
        Authentication::Unknown => {
            return Err(ApiError::new(ErrorCode::InvalidApiKey, "invalid API key"));
        }
        Authentication::Expired => {
            return Err(ApiError::new(
                ErrorCode::ExpiredApiKey,
                "this API key has expired",
            ));
        }
    };
    if !credential.scope.covers(needed) {
        let what = match credential.kind {
            CredentialKind::ShareLink => "a share link".to_string(),
            CredentialKind::Key => format!("a key of scope `{}`", credential.scope.as_str()),
        };
        let needs = match needed {
            Scope::Admin => "`admin`".to_string(),
            other => format!("`{}` or `admin`", other.as_str()),
        };
        return Err(ApiError::new(
            ErrorCode::InsufficientScope,
            format!(
                "insufficient scope: this route needs a key of scope {needs}; the request was made with {what}"
            ),
        ));
    }
    if let Some(wait) = state.limiter.check(&credential.id) {
        return Err(ApiError::rate_limited(wait));
    }
    Ok(credential)
}

/// A credential that may read figures and the accounts' public settings (scope `read`
/// or `admin`, or a share link).
pub struct ReadKey(pub Credential);

/// A credential that may post events (scope `ingest` or `admin`).
pub struct IngestKey(pub Org);

/// A credential that may manage its organization (scope `admin`).
pub struct AdminKey(pub Org);

impl FromRequestParts<AppState> for ReadKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(ReadKey(authorize(parts, state, Scope::Read).await?))
    }
}

impl FromRequestParts<AppState> for IngestKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(IngestKey(authorize(parts, state, Scope::Ingest).await?.org))
    }
}

impl FromRequestParts<AppState> for AdminKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Ok(AdminKey(authorize(parts, state, Scope::Admin).await?.org))
    }
}

/// The caller presented the master key.
pub struct MasterKey;

impl FromRequestParts<AppState> for MasterKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(master) = state.master_key.as_deref() else {
            return Err(ApiError::new(
                ErrorCode::AdminDisabled,
                "administration is disabled: start the server with --master-key or WHATSTAT_MASTER_KEY",
            ));
        };
        let key = presented_key(&parts.headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidApiKey,
                "missing master key: send `Authorization: Bearer <master key>`",
            )
        })?;
        // Digests of equal length, compared in constant time: the time taken tells
        // neither where the keys differ nor how long the master key is.
        let (a, b) = (
            Sha256::digest(key.as_bytes()),
            Sha256::digest(master.as_bytes()),
        );
        if bool::from(a.as_slice().ct_eq(b.as_slice())) {
            Ok(MasterKey)
        } else {
            Err(ApiError::new(
                ErrorCode::InvalidApiKey,
                "invalid master key",
            ))
        }
    }
}
