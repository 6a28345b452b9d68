//! Who is calling: an organization's key (Bearer or X-API-Key), or the master key.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;
use crate::engine::Org;

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

/// An authenticated organization.
pub struct OrgKey(pub Org);

impl FromRequestParts<AppState> for OrgKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`".into(),
            )
        })?;
        let org = state
            .engine
            .authenticate(key)
            .await?
            .ok_or_else(|| ApiError::Unauthorized("invalid API key".into()))?;
        if let Some(wait) = state.limiter.check(&org.id) {
            return Err(ApiError::TooManyRequests(wait));
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
            return Err(ApiError::Unauthorized(
                "administration is disabled: start the server with --master-key or WHATSTAT_MASTER_KEY".into(),
            ));
        };
        let key = presented_key(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "missing master key: send `Authorization: Bearer <master key>`".into(),
            )
        })?;
        // Comparing digests keeps the comparison's time independent of where they differ.
        let (a, b) = (
            Sha256::digest(key.as_bytes()),
            Sha256::digest(master.as_bytes()),
        );
        if a.iter()
            .zip(b.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
        {
            Ok(MasterKey)
        } else {
            Err(ApiError::Unauthorized("invalid master key".into()))
        }
    }
}
