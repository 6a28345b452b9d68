//! The accounts API (organization key) and the admin listing of kept webhook payloads.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::auth::{AdminKey, MasterKey, ReadKey};
use super::error::ApiError;
use super::{AppState, body_bytes, params, success};
use crate::engine::accounts::AccountView;
use crate::engine::accounts::{AccountPatch, NewAccount};
use crate::store::credentials::CredentialKind;

fn object(body: &[u8], shape: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::BadRequest(format!(
            "the body must be a JSON object {shape}"
        ))),
        Err(e) => Err(ApiError::BadRequest(format!(
            "the body must be a JSON object {shape}: {e}"
        ))),
    }
}

fn only(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), ApiError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::BadRequest(format!(
            "unknown field `{k}`; allowed: {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// `None`: absent; `Some(None)`: null; `Some(Some(s))`: a string.
fn field(m: &Map<String, Value>, name: &str) -> Result<Option<Option<String>>, ApiError> {
    match m.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::BadRequest(format!(
            "field `{name}` must be a string"
        ))),
    }
}

fn required(m: &Map<String, Value>, name: &str) -> Result<String, ApiError> {
    field(m, name)?
        .flatten()
        .ok_or_else(|| ApiError::BadRequest(format!("field `{name}` is required")))
}

fn account_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id)
        .map_err(|e| ApiError::BadRequest(format!("the account id in the path is invalid: {e}")))
}

const FIELDS: &[&str] = &[
    "account_id",
    "name",
    "phone_number_id",
    "verify_token",
    "app_secret",
];

pub(super) async fn create(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body_bytes(body)?;
    let m = object(
        &body,
        "{\"account_id\", \"name\", \"phone_number_id\", \"verify_token\", \"app_secret\"}",
    )?;
    only(&m, FIELDS)?;
    let new = NewAccount {
        account_id: required(&m, "account_id")?,
        name: required(&m, "name")?,
        phone_number_id: field(&m, "phone_number_id")?.flatten(),
        verify_token: field(&m, "verify_token")?.flatten(),
        app_secret: field(&m, "app_secret")?.flatten(),
    };
    let saved = state.services.accounts.register(&org, new).await?;
    let mut response = success(saved);
    *response.status_mut() = StatusCode::CREATED;
    Ok(response)
}

/// What a caller sees of an account: a share link, made for people outside the
/// organization, sees only its id and name, never its webhook settings.
fn shown(kind: CredentialKind, a: AccountView) -> Value {
    match kind {
        CredentialKind::ShareLink => json!({"account_id": a.account_id, "name": a.name}),
        CredentialKind::Key => json!(a),
    }
}

pub(super) async fn list(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
) -> Result<Response, ApiError> {
    let accounts: Vec<Value> = state
        .services
        .accounts
        .list(&caller.org)
        .await?
        .into_iter()
        .map(|a| shown(caller.kind, a))
        .collect();
    Ok(success(json!({ "accounts": accounts })))
}

pub(super) async fn get_one(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    let account = state.services.accounts.get(&caller.org, &id).await?;
    Ok(success(shown(caller.kind, account)))
}

pub(super) async fn patch(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    let body = body_bytes(body)?;
    let m = object(
        &body,
        "with any of \"name\", \"phone_number_id\", \"verify_token\", \"app_secret\"",
    )?;
    only(&m, &FIELDS[1..])?;
    let name = match field(&m, "name")? {
        Some(None) => {
            return Err(ApiError::BadRequest(
                "field `name` cannot be cleared; give a string".into(),
            ));
        }
        other => other.flatten(),
    };
    let change = AccountPatch {
        name,
        phone_number_id: field(&m, "phone_number_id")?,
        verify_token: field(&m, "verify_token")?,
        app_secret: field(&m, "app_secret")?,
    };
    Ok(success(
        state.services.accounts.patch(&org, &id, change).await?,
    ))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    state.services.accounts.delete(&org, &id).await?;
    Ok(success(json!({"deleted": id})))
}

pub(super) async fn unrouted(
    State(state): State<AppState>,
    _: MasterKey,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let p = params(query, &["phone_number_id"])?;
    let payloads = state
        .services
        .webhook
        .unrouted_payloads(p.get("phone_number_id").map(String::as_str))
        .await?;
    Ok(success(json!({"payloads": payloads})))
}

pub(super) async fn delete_unrouted(
    State(state): State<AppState>,
    _: MasterKey,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|_| {
        ApiError::BadRequest("the payload id in the path must be a whole number".into())
    })?;
    state.services.webhook.delete_unrouted(id).await?;
    Ok(success(json!({"deleted": id})))
}
