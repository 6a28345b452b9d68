//! The OpenAPI 3.1 description, generated from the handlers and their request types.

use serde::Serialize;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorCode;
use crate::engine::EventError;

/// Every success: `{"status":"success","data":...}`.
#[derive(Serialize, ToSchema)]
pub struct Success {
    #[schema(value_type = String, pattern = "^success$")]
    status: &'static str,
    /// The answer; its shape is the route's (docs/api.md).
    #[schema(value_type = Object)]
    data: serde_json::Value,
}

/// Every error: `{"status":"error","code":...,"message":...}`, with `errors` for invalid
/// events. One schema, so an error body matches exactly one.
#[derive(Serialize, ToSchema)]
pub struct Failure {
    #[schema(value_type = String, pattern = "^error$")]
    status: &'static str,
    code: ErrorCode,
    message: String,
    /// Only with `invalid_events`: each invalid event's index in the request and why.
    #[schema(value_type = Option<Vec<EventFailure>>)]
    errors: Option<Vec<EventError>>,
}

/// One invalid event.
#[derive(Serialize, ToSchema)]
pub struct EventFailure {
    #[schema(minimum = 0)]
    index: u64,
    message: String,
}

/// The events of one request: an array of event objects, or one event object (SPEC
/// section 3 and docs/api.md describe each event type).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum Events {
    Batch(Vec<EventObject>),
    One(EventObject),
}

/// One event: an object with `type`, `account_id` and `timestamp` and the type's fields.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct EventObject(serde_json::Map<String, serde_json::Value>);

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "master_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "whatstat", description = "Analytics for WhatsApp Business messaging. Rules and semantics: docs/api.md."),
    paths(
        super::health,
        super::openapi,
        super::create_org,
        super::compact,
        super::post_events,
        super::accounts::list,
        super::accounts::create,
        super::accounts::get_one,
        super::accounts::patch,
        super::accounts::delete,
        super::forwarding::status,
        super::forwarding::failed,
        super::forwarding::retry_all,
        super::forwarding::retry_one,
        super::forwarding::delete_failed,
        super::accounts::unrouted,
        super::accounts::delete_unrouted,
        super::dashboard::org,
        super::stream::stream,
        super::keys::create_key,
        super::keys::list_keys,
        super::keys::revoke_key,
        super::keys::create_share_link,
        super::keys::list_share_links,
        super::keys::delete_share_link,
        super::webhook::handshake,
        super::webhook::receive,
        super::messages,
        super::chatbot,
        super::dashboard,
    ),
    components(schemas(Success, Failure, EventFailure, Events, ErrorCode)),
    modifiers(&Security)
)]
struct Description;

/// The description as served at `/api/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    Description::openapi()
}

/// The description as committed in docs/openapi.json.
pub fn document_json() -> String {
    document().to_pretty_json().unwrap_or_default() + "\n"
}
