//! The forwarding status of an account and its failed webhook deliveries (admin scope).

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::json;

use super::auth::AdminKey;
use super::doc;
use super::error::ApiError;
use super::{AppState, success};

fn account_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|e| {
        ApiError::invalid_parameter(format!("the account id in the path is invalid: {e}"))
    })
}

fn account_and_delivery(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(ids)| ids).map_err(|e| {
        ApiError::invalid_parameter(format!(
            "the account id or delivery id in the path is invalid: {e}"
        ))
    })
}

#[utoipa::path(get, path = "/api/accounts/{id}/forwarding", tag = "accounts",
    params(("id" = String, Path, description = "The account id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Deliveries pending, delivered and failed, the oldest pending one, the last error and the last success", body = doc::Success<crate::engine::forwarding::ForwardingStatus>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn status(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    Ok(success(state.services.forwarding.status(&org, &id).await?))
}

#[utoipa::path(get, path = "/api/accounts/{id}/forwarding/failed", tag = "accounts",
    params(("id" = String, Path, description = "The account id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The account's failed deliveries, oldest first", body = doc::Success<doc::DeliveryList>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn failed(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    let deliveries = state.services.forwarding.failed(&org, &id).await?;
    Ok(success(json!({ "deliveries": deliveries })))
}

#[utoipa::path(post, path = "/api/accounts/{id}/forwarding/failed/retry", tag = "accounts",
    params(("id" = String, Path, description = "The account id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Every failed delivery of the account is pending again, due now", body = doc::Success<doc::Retried>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn retry_all(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    let n = state.services.forwarding.retry(&org, &id, None).await?;
    Ok(success(json!({ "retried": n })))
}

#[utoipa::path(post, path = "/api/accounts/{id}/forwarding/failed/{delivery_id}/retry", tag = "accounts",
    params(("id" = String, Path, description = "The account id"),
        ("delivery_id" = String, Path, description = "The delivery id (`X-Whatstat-Delivery`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The delivery is pending again, due now", body = doc::Success<doc::Retried>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn retry_one(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (id, delivery) = account_and_delivery(path)?;
    let n = state
        .services
        .forwarding
        .retry(&org, &id, Some(&delivery))
        .await?;
    Ok(success(json!({ "retried": n })))
}

#[utoipa::path(delete, path = "/api/accounts/{id}/forwarding/failed/{delivery_id}", tag = "accounts",
    params(("id" = String, Path, description = "The account id"),
        ("delivery_id" = String, Path, description = "The delivery id (`X-Whatstat-Delivery`)")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The failed delivery was deleted", body = doc::Success<doc::Deleted>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn delete_failed(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (id, delivery) = account_and_delivery(path)?;
    state
        .services
        .forwarding
        .delete_failed(&org, &id, &delivery)
        .await?;
    Ok(success(json!({ "deleted": delivery })))
}
