//! `GET` and `POST /webhooks/whatsapp`: Meta's verification handshake and its updates.
//! No API key: the handshake is guarded by the verify token, updates by their signature.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{AppState, body_bytes, success};

pub(super) async fn handshake(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) =
        query.map_err(|e| ApiError::BadRequest(format!("the query string is malformed: {e}")))?;
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let challenge = state
        .services
        .webhook
        .handshake(
            get("hub.mode"),
            get("hub.verify_token"),
            get("hub.challenge"),
        )
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge,
    )
        .into_response())
}

pub(super) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    Ok(success(
        state.services.webhook.receive(&body, signature).await?,
    ))
}
