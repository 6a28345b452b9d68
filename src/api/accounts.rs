//! The accounts API (organization key) and the admin listing of kept webhook payloads.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};

use super::auth::{AdminKey, MasterKey, ReadKey};
use super::doc;
use super::error::ApiError;
use super::extract::{Body, BodyShape, Params, QueryShape, clearable};
use super::{AppState, success};
use crate::engine::accounts::AccountSaved;
use crate::engine::accounts::{AccountPatch, AccountView, NewAccount};
use crate::engine::webhook::ReplayReport;
use crate::store::credentials::CredentialKind;

const TEXT: &str = "a non-empty string without control characters";
const PHONE: &str = "a string: the Phone number ID of Meta's app dashboard";
const FORWARD_URL: &str = "a string: an https:// URL with a lowercase DNS name or IPv4 host";

/// `POST /api/accounts`. Text fields are not blank and hold no control characters.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"account_id": "acc_main", "name": "Main line"}))]
pub struct AccountBody {
    #[schema(
        min_length = 1,
        max_length = 256,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    account_id: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    name: String,
    /// Meta's Phone number ID; needs `app_secret`.
    #[schema(pattern = "^[A-Za-z0-9]{1,64}$")]
    phone_number_id: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    verify_token: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 1024,
        pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$"
    )]
    app_secret: Option<String>,
    /// Where verified webhook POSTs naming this account are forwarded, byte for byte:
    /// `https://` (or `http://` with --forward-allow-http).
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = "^https://((([a-z0-9]+(-[a-z0-9]+)*\\.)*[a-z][a-z0-9]*(-[a-z0-9]+)*)|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$"
    )]
    forward_url: Option<String>,
}

impl BodyShape for AccountBody {
    const NAMES: &'static [&'static str] = &[
        "account_id",
        "name",
        "phone_number_id",
        "verify_token",
        "app_secret",
        "forward_url",
    ];
    const REQUIRED: &'static [&'static str] = &["account_id", "name"];
    fn allowed(name: &str) -> &'static str {
        match name {
            "phone_number_id" => PHONE,
            "forward_url" => FORWARD_URL,
            _ => TEXT,
        }
    }
}

/// `PATCH /api/accounts/{id}`: absent fields stay, `null` clears (all but `name`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "Support line"}))]
pub struct AccountChange {
    /// A new name; it cannot be cleared (`null` is refused).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = String, min_length = 1, max_length = 200, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$")]
    name: Option<String>,
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, pattern = "^[A-Za-z0-9]{1,64}$")]
    phone_number_id: Option<Option<String>>,
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$")]
    verify_token: Option<Option<String>>,
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 1024, pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$")]
    app_secret: Option<Option<String>>,
    /// A new forward URL, or `null` to stop forwarding.
    #[serde(default, deserialize_with = "clearable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 2048, pattern = "^https://((([a-z0-9]+(-[a-z0-9]+)*\\.)*[a-z][a-z0-9]*(-[a-z0-9]+)*)|((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?(/[A-Za-z0-9._~!$&'()*+,;=:@%-]*)*(\\?[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*)?$")]
    forward_url: Option<Option<String>>,
}

impl BodyShape for AccountChange {
    const NAMES: &'static [&'static str] = &[
        "name",
        "phone_number_id",
        "verify_token",
        "app_secret",
        "forward_url",
    ];
    const REQUIRED: &'static [&'static str] = &[];
    fn allowed(name: &str) -> &'static str {
        match name {
            "phone_number_id" => PHONE,
            "forward_url" => FORWARD_URL,
            _ => TEXT,
        }
    }
}

/// A field that may be absent but not `null`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

fn account_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|e| {
        ApiError::invalid_parameter(format!("the account id in the path is invalid: {e}"))
    })
}

#[utoipa::path(post, path = "/api/accounts", tag = "accounts", request_body = AccountBody,
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 201, description = "The account, and what was replayed to it", body = doc::Success<AccountSaved>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn create(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    Body(body): Body<AccountBody>,
) -> Result<Response, ApiError> {
    let new = NewAccount {
        account_id: body.account_id,
        name: body.name,
        phone_number_id: body.phone_number_id,
        verify_token: body.verify_token,
        app_secret: body.app_secret,
        forward_url: body.forward_url,
    };
    let saved = state.services.accounts.register(&org, new).await?;
    count_replayed(&saved.replayed);
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

#[utoipa::path(get, path = "/api/accounts", tag = "accounts",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The organization's accounts", body = doc::Success<doc::AccountList>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
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

#[utoipa::path(get, path = "/api/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The account id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The account", body = doc::Success<doc::AccountShown>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn get_one(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    let account = state.services.accounts.get(&caller.org, &id).await?;
    Ok(success(shown(caller.kind, account)))
}

#[utoipa::path(patch, path = "/api/accounts/{id}", tag = "accounts", request_body = AccountChange,
    params(("id" = String, Path, description = "The account id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The changed account", body = doc::Success<AccountSaved>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn patch(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
    Body(body): Body<AccountChange>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    let change = AccountPatch {
        name: body.name,
        phone_number_id: body.phone_number_id,
        verify_token: body.verify_token,
        app_secret: body.app_secret,
        forward_url: body.forward_url,
    };
    let saved = state.services.accounts.patch(&org, &id, change).await?;
    count_replayed(&saved.replayed);
    Ok(success(saved))
}

/// Kept webhook payloads applied at last count as the webhook's events.
fn count_replayed(r: &ReplayReport) {
    crate::telemetry::event_outcomes(r.accepted, r.duplicates, r.ignored);
}

#[utoipa::path(delete, path = "/api/accounts/{id}", tag = "accounts",
    params(("id" = String, Path, description = "The account id")),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "The account was deleted", body = doc::Success<doc::Deleted>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn delete(
    State(state): State<AppState>,
    AdminKey(org): AdminKey,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = account_id(path)?;
    state.services.accounts.delete(&org, &id).await?;
    Ok(success(json!({"deleted": id})))
}

/// `GET /api/admin/unrouted`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UnroutedQuery {
    /// Only the payloads for this number.
    phone_number_id: Option<String>,
}

impl QueryShape for UnroutedQuery {
    const NAMES: &'static [&'static str] = &["phone_number_id"];
    fn allowed(_: &str) -> &'static str {
        "a string"
    }
}

#[utoipa::path(get, path = "/api/admin/unrouted", tag = "admin", params(UnroutedQuery),
    security(("master_key" = [])),
    responses((status = 200, description = "Webhook payloads no account claimed", body = doc::Success<doc::PayloadList>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn unrouted(
    State(state): State<AppState>,
    _: MasterKey,
    Params(q): Params<UnroutedQuery>,
) -> Result<Response, ApiError> {
    let payloads = state
        .services
        .webhook
        .unrouted_payloads(q.phone_number_id.as_deref())
        .await?;
    Ok(success(json!({"payloads": payloads})))
}

#[utoipa::path(delete, path = "/api/admin/unrouted/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The kept payload's id")),
    security(("master_key" = [])),
    responses((status = 200, description = "The payload was deleted", body = doc::Success<doc::DeletedPayload>),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn delete_unrouted(
    State(state): State<AppState>,
    _: MasterKey,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = path.map_err(|_| {
        ApiError::invalid_parameter("the payload id in the path must be a whole number")
    })?;
    state.services.webhook.delete_unrouted(id).await?;
    Ok(success(json!({"deleted": id})))
}
