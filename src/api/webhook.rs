//! `GET` and `POST /webhooks/whatsapp`: Meta's verification handshake and its updates.
//! No API key: the handshake is guarded by the verify token, updates by their signature.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::error::ApiError;
use super::extract::body_bytes;
use super::{AppState, doc, success};
use crate::engine::EngineError;
use crate::engine::webhook::WebhookReceipt;
use crate::telemetry;

/// Meta's verification request; other parameters are ignored, as Meta may add some.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // Describes the query; the handler reads the pairs, first one winning.
pub struct Handshake {
    #[serde(rename = "hub.mode")]
    #[param(rename = "hub.mode", example = "subscribe")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    #[param(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    #[param(rename = "hub.challenge")]
    challenge: Option<String>,
}

#[utoipa::path(get, path = "/webhooks/whatsapp", tag = "webhook", params(Handshake),
    responses((status = 200, description = "The challenge, when the verify token is an account's", content_type = "text/plain"),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn handshake(
    State(state): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query
        .map_err(|e| ApiError::invalid_parameter(format!("the query string is malformed: {e}")))?;
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

#[utoipa::path(post, path = "/webhooks/whatsapp", tag = "webhook",
    request_body(content = Object, description = "Meta's update, signed with the account's app secret"),
    params(("X-Hub-Signature-256" = String, Header, description = "sha256=<HMAC-SHA256 of the body>")),
    responses((status = 200, description = "What was applied and kept", body = doc::Success<WebhookReceipt>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    match state
        .services
        .webhook
        .receive(&body, signature, content_type)
        .await
    {
        Ok(receipt) => {
            telemetry::event_outcomes(receipt.accepted, receipt.duplicates, receipt.ignored);
            Ok(success(receipt))
        }
        Err(e) => {
            match &e {
                EngineError::MissingSignature(_) => {
                    telemetry::signature_failure("missing_signature")
                }
                EngineError::BadSignature(_) => telemetry::signature_failure("bad_signature"),
                _ => {}
            }
            Err(e.into())
        }
    }
}
