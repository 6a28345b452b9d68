//! Who is calling: an organization's key (Bearer or X-API-Key), or the master key.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use crate::engine::Org;

fn presented_key(headers: &HeaderMap) -> Option<&str> {
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

/// An authenticated organization.
pub struct OrgKey(pub Org);

impl FromRequestParts<AppState> for OrgKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(&parts.headers).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidApiKey,
                "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`",
            )
        })?;
        let org = state
            .services
            .tenants
            .authenticate(key)
            .await?
            .ok_or_else(|| ApiError::new(ErrorCode::InvalidApiKey, "invalid API key"))?;
        if let Some(wait) = state.limiter.check(&org.id) {
            return Err(ApiError::rate_limited(wait));
        }
        Ok(OrgKey(org))
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
