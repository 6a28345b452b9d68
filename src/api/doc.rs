//! The OpenAPI 3.1 description, generated from the handlers and their request types.

use serde::Serialize;
use serde_json::{Value, json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorCode;
use crate::engine::accounts::AccountView;
use crate::engine::keys::{KeyView, ShareLinkView};
use crate::engine::webhook::UnroutedView;
use crate::engine::{EventError, event};

/// Every success: `{"status":"success","data":...}`, `data` being the route's answer.
#[derive(Serialize, ToSchema)]
pub struct Success<T> {
    #[schema(value_type = String, pattern = "^success$")]
    status: &'static str,
    data: T,
}

/// `GET /health`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(pattern = "^ok$")]
    status: String,
}

/// An organization as its credentials see it.
#[derive(Serialize, ToSchema)]
pub struct OrgView {
    id: String,
    name: String,
    /// An IANA time zone name.
    timezone: String,
}

/// A new organization, with its first API key (shown only in this answer).
#[derive(Serialize, ToSchema)]
pub struct OrgCreated {
    id: String,
    name: String,
    timezone: String,
    api_key: String,
}

/// What a share link sees of an account: its id and name only.
#[derive(Serialize, ToSchema)]
pub struct SharedAccount {
    account_id: String,
    name: Option<String>,
}

/// An account as a key (all of it) or a share link (id and name) sees it.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum AccountShown {
    Account(AccountView),
    Shared(SharedAccount),
}

#[derive(Serialize, ToSchema)]
pub struct AccountList {
    accounts: Vec<AccountShown>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    keys: Vec<KeyView>,
}

#[derive(Serialize, ToSchema)]
pub struct ShareLinkList {
    share_links: Vec<ShareLinkView>,
}

#[derive(Serialize, ToSchema)]
pub struct Revoked {
    /// The key's id.
    revoked: String,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// The id of what was deleted.
    deleted: String,
}

/// The failed deliveries of an account's webhook tee.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    deliveries: Vec<crate::engine::forwarding::FailedDelivery>,
}

/// How many failed deliveries are pending again.
#[derive(Serialize, ToSchema)]
pub struct Retried {
    retried: u64,
}

#[derive(Serialize, ToSchema)]
pub struct DeletedPayload {
    /// The kept payload's id.
    deleted: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PayloadList {
    payloads: Vec<UnroutedView>,
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

/// The events of one request: an array of event objects, or one event object. Its schema
/// is written out in [`event_schemas`]: the event parser reads fields by hand.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct Events(serde_json::Value);

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
        super::monitoring::metrics,
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
        super::spend::campaigns,
        super::spend::templates,
        super::spend::costs,
    ),
    components(schemas(Failure, EventFailure, ErrorCode)),
    modifiers(&Security)
)]
struct Description;

/// The description as served at `/api/openapi.json`: utoipa's, with the schemas it cannot
/// state (the events' rules, fields that depend on each other) written in.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(Description::openapi()).unwrap_or(Value::Null);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.extend(event_schemas());
        account_rules(schemas);
    }
    shown_is_any_of(&mut doc);
    range_parameters(&mut doc);
    doc
}

/// The analytics routes' range parameters as the server reads them: a start or end is a
/// local date or an RFC 3339 instant, and `tz` is a zone of the server's time zone
/// database (the generated types only know they are strings).
fn range_parameters(doc: &mut Value) {
    let zones: Vec<String> = jiff::tz::db()
        .available()
        .map(|name| name.as_str().to_string())
        .filter(|name| jiff::tz::TimeZone::get(name).is_ok())
        .collect();
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert(
            "RangePoint".into(),
            json!({"description": "A local date (YYYY-MM-DD) or an RFC 3339 instant",
                "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}]}),
        );
        schemas.insert(
            "TimeZoneName".into(),
            json!({"description": "An IANA time zone name", "type": "string", "enum": zones}),
        );
    }
    let Some(paths) = doc.pointer_mut("/paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/api/analytics/") {
            continue;
        }
        let Some(params) = item
            .pointer_mut("/get/parameters")
            .and_then(Value::as_array_mut)
        else {
            continue;
        };
        for p in params.iter_mut() {
            let schema = match p["name"].as_str() {
                Some("start_date" | "end_date") => {
                    json!({"$ref": "#/components/schemas/RangePoint"})
                }
                Some("tz") => json!({"$ref": "#/components/schemas/TimeZoneName"}),
                _ => continue,
            };
            p["schema"] = schema;
        }
    }
}

/// The description as committed in docs/openapi.json.
pub fn document_json() -> String {
    serde_json::to_string_pretty(&document()).unwrap_or_default() + "\n"
}

/// Text without control characters (what `char::is_control` refuses).
const NO_CONTROL: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";

fn id_schema(description: &str) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": event::MAX_ID_LEN,
        "pattern": NO_CONTROL, "description": description})
}

/// Flat (a type list; the string keywords bind strings only), so that the schema stays
/// shallow for tools that walk it recursively.
fn optional_id(description: &str) -> Value {
    let mut id = id_schema(description);
    id["type"] = json!(["string", "null"]);
    id
}

/// One event type's object: `type`, `account_id`, `timestamp` and its own fields.
fn event_type(kind: &str, description: &str, required: &[&str], fields: Value) -> Value {
    let mut properties = json!({
        "type": {"const": kind},
        "account_id": id_schema("The account (the WhatsApp number) it belongs to"),
        "timestamp": {"$ref": "#/components/schemas/Timestamp"},
    });
    if let (Some(p), Value::Object(f)) = (properties.as_object_mut(), fields) {
        p.extend(f);
    }
    let mut all = vec!["type", "account_id", "timestamp"];
    all.extend_from_slice(required);
    json!({"type": "object", "description": description, "required": all, "properties": properties})
}

/// The event schemas of docs/api.md "Event schema", as `src/engine/event.rs` validates
/// them. Unknown fields are ignored, so objects stay open.
fn event_schemas() -> serde_json::Map<String, Value> {
    use crate::engine::event::{EARLIEST_SECS, MAX_COST_USD, MAX_TOKENS};
    let count = |d: &str| json!({"type": ["integer", "null"], "minimum": 0, "maximum": MAX_TOKENS, "description": d});
    let status =
        |d: &str, names: &[&str]| json!({"type": "string", "enum": names, "description": d});
    let needs = |mut schema: Value, rules: Value| {
        if let Some(o) = schema.as_object_mut() {
            o.insert("dependentRequired".into(), rules);
        }
        schema
    };
    let types = [
        event_type(
            "contact",
            "A contact was seen (first seen counts as new)",
            &["id"],
            json!({"id": id_schema("The contact")}),
        ),
        needs(
            event_type(
                "message",
                "A message sent or received",
                &["id", "direction", "message_type"],
                json!({
                    "id": id_schema("The message"),
                    "direction": status("Who sent it", &["inbound", "outbound"]),
                    "message_type": {"type": "string", "pattern": "^[a-z0-9_]{1,64}$", "description": "A lowercase word, e.g. text, image, template"},
                    "conversation_id": optional_id("The conversation it belongs to"),
                    "contact_id": optional_id("The contact"),
                    "campaign_id": optional_id("The campaign that sent it"),
                    "template_name": optional_id("Outbound: the template it was sent from"),
                    "template_language": {"type": ["string", "null"], "minLength": 1, "maxLength": event::MAX_ID_LEN, "pattern": NO_CONTROL, "description": "Outbound: the template's language, e.g. en_US (needs template_name)"},
                    "template_category": {"type": ["string", "null"], "enum": [event::TEMPLATE_CATEGORIES[0], event::TEMPLATE_CATEGORIES[1], event::TEMPLATE_CATEGORIES[2], event::TEMPLATE_CATEGORIES[3], null], "description": "Outbound: the template's category (needs template_name)"},
                    "recipient": {"type": ["string", "null"], "pattern": "^\\+?[0-9]{1,15}$", "description": "Outbound: the recipient's WhatsApp id, the digits of an E.164 number; its calling code gives the country"},
                    "reply_to": optional_id("Inbound: the outbound message it answers"),
                }),
            ),
            json!({"template_language": ["template_name"], "template_category": ["template_name"]}),
        ),
        needs(
            event_type(
                "message_status",
                "A delivery status of a message",
                &["message_id", "status"],
                json!({
                    "message_id": id_schema("The message"),
                    "status": {"type": "string", "description": "sent, delivered, read and failed are counted; any other status is reported back as ignored"},
                    "error_code": {
                    "type": ["string", "number", "null"], "minLength": 1, "maxLength": event::MAX_ID_LEN,
                    "pattern": NO_CONTROL, "description": "Meta's error code, a number or a string",
                },
                    "pricing_category": optional_id("Meta's pricing category (marketing, utility, authentication, service, ...)"),
                    "pricing_type": {"type": ["string", "null"], "enum": ["regular", "free_customer_service", "free_entry_point", null], "description": "Meta's pricing type; regular is billable (needs pricing_category; regular when only the category is given)"},
                    "recipient": {"type": ["string", "null"], "pattern": "^\\+?[0-9]{1,15}$", "description": "The recipient's WhatsApp id, when the message did not name it"},
                }),
            ),
            json!({"pricing_type": ["pricing_category"]}),
        ),
        event_type(
            "campaign",
            "A campaign's status",
            &["id", "status"],
            json!({
                "id": id_schema("The campaign"),
                "status": status("The campaign's status", &["created", "scheduled", "running", "completed", "cancelled", "failed"]),
            }),
        ),
        event_type(
            "conversation",
            "A chatbot conversation's status",
            &["id", "status"],
            json!({
                "id": id_schema("The conversation"),
                "status": status("The conversation's status", &["started", "auto_resolved", "transferred", "abandoned"]),
            }),
        ),
        event_type(
            "flow",
            "A chatbot flow started or completed",
            &["id", "flow_name", "status"],
            json!({
                "id": id_schema("The flow run"),
                "flow_name": id_schema("The flow"),
                "status": status("The flow run's status", &["started", "completed"]),
                "conversation_id": optional_id("The conversation it ran in"),
            }),
        ),
        event_type(
            "keyword",
            "A keyword the chatbot matched",
            &["keyword"],
            json!({
                "keyword": id_schema("The keyword"),
                "id": optional_id("The hit, so that a retry is not counted twice"),
                "conversation_id": optional_id("The conversation"),
            }),
        ),
        {
            let mut ai = event_type(
                "ai_request",
                "A request to an AI model",
                &[],
                json!({
                    "id": optional_id("The request, so that a retry is not counted twice"),
                    "model": optional_id("The model"),
                    "tokens": count("All tokens; when absent, prompt_tokens + completion_tokens"),
                    "prompt_tokens": count("Prompt tokens"),
                    "completion_tokens": count("Completion tokens"),
                    "cost": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_COST_USD, "description": "US dollars"},
                }),
            );
            // At least one of the token counts, not null.
            ai["anyOf"] = json!(
                ["tokens", "prompt_tokens", "completion_tokens"].map(|f| json!({
                    "required": [f], "properties": {f: {"type": "integer"}}
                }))
            );
            ai
        },
    ];
    let mut out = serde_json::Map::new();
    out.insert("Timestamp".into(), json!({
        "description": "When it happened: RFC 3339 with an offset, or Unix seconds (a fraction is cut off). From 2000-01-01 to 5 minutes after the server's clock; older than the state window only with `?backfill=true` (a `message_status` that old is reported back as ignored).",
        // Flat: `format` binds strings only, `minimum` numbers only.
        "type": ["string", "number"], "format": "date-time", "minimum": EARLIEST_SECS,
    }));
    out.insert(
        "Event".into(),
        json!({
            "description": "One event; `type` says which",
            "oneOf": types,
        }),
    );
    out.insert(
        "Events".into(),
        json!({
            "description": "A JSON array of events, or one event object",
            "oneOf": [
                {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Event"}},
                {"$ref": "#/components/schemas/Event"},
            ],
        }),
    );
    out
}

/// A full account view also has what the shared one has, so either may match, not
/// exactly one: the untagged `AccountShown` is `anyOf`, wherever utoipa put it.
fn shown_is_any_of(v: &mut Value) {
    match v {
        Value::Object(o) => {
            let shown = o.get("oneOf").is_some_and(|variants| {
                variants
                    .to_string()
                    .contains("#/components/schemas/SharedAccount")
            });
            if shown && let Some(variants) = o.remove("oneOf") {
                o.insert("anyOf".into(), variants);
            }
            o.values_mut().for_each(shown_is_any_of);
        }
        Value::Array(a) => a.iter_mut().for_each(shown_is_any_of),
        _ => {}
    }
}

/// `phone_number_id` needs `app_secret` in the same body (webhook payloads are verified
/// with it); in a change, clearing the secret clears the number too.
fn account_rules(schemas: &mut serde_json::Map<String, Value>) {
    let number_needs_secret = json!({
        "if": {"required": ["phone_number_id"], "properties": {"phone_number_id": {"type": "string"}}},
        "then": {"required": ["app_secret"], "properties": {"app_secret": {"type": "string"}}},
    });
    if let Some(body) = schemas.get_mut("AccountBody") {
        body["dependentRequired"] = json!({"phone_number_id": ["app_secret"]});
        body["allOf"] = json!([number_needs_secret]);
    }
    // An admin key manages the whole organization: it takes no `accounts`.
    if let Some(key) = schemas.get_mut("KeyBody") {
        key["allOf"] = json!([{
            "if": {"required": ["scope"], "properties": {"scope": {"const": "admin"}}},
            "then": {"properties": {"accounts": {"type": "null"}}},
        }]);
    }
    if let Some(change) = schemas.get_mut("AccountChange") {
        change["dependentRequired"] = json!({"phone_number_id": ["app_secret"]});
        change["allOf"] = json!([
            number_needs_secret,
            {
                "if": {"required": ["app_secret"], "properties": {"app_secret": {"type": "null"}}},
                "then": {"required": ["phone_number_id"], "properties": {"phone_number_id": {"type": "null"}}},
            },
        ]);
    }
}
