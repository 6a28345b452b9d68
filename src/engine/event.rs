//! The event model of SPEC section 2 and its validation. Validation is strict about
//! what whatstat needs and lenient about what it does not (unknown fields are ignored),
//! and every message names the field and what is allowed.

use jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Events more than this far in the future are refused (clock skew allowance).
pub const FUTURE_TOLERANCE_SECS: i64 = 300;
/// The earliest instant accepted: nothing of WhatsApp Business predates it.
pub const EARLIEST_SECS: i64 = 946_684_800; // 2000-01-01T00:00:00Z
/// Identifiers are counted in characters, the limit a JSON schema's `maxLength` states.
pub const MAX_ID_LEN: usize = 256;
pub const MAX_TOKENS: u64 = 1_000_000_000;
pub const MAX_COST_USD: f64 = 1_000_000.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Sent,
    Delivered,
    Read,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CampaignStatus {
    Created,
    Scheduled,
    Running,
    Completed,
    Cancelled,
    Failed,
}

impl CampaignStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CampaignStatus::Created => "created",
            CampaignStatus::Scheduled => "scheduled",
            CampaignStatus::Running => "running",
            CampaignStatus::Completed => "completed",
            CampaignStatus::Cancelled => "cancelled",
            CampaignStatus::Failed => "failed",
        }
    }

    pub const ALL: [CampaignStatus; 6] = [
        CampaignStatus::Created,
        CampaignStatus::Scheduled,
        CampaignStatus::Running,
        CampaignStatus::Completed,
        CampaignStatus::Cancelled,
        CampaignStatus::Failed,
    ];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConversationStatus {
    Started,
    AutoResolved,
    Transferred,
    Abandoned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowStatus {
    Started,
    Completed,
}

/// How Meta priced a message (its `pricing` object; `billable` is deprecated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pricing {
    pub category: String,
    pub kind: PricingType,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum PricingType {
    Regular,
    FreeCustomerService,
    FreeEntryPoint,
}

impl PricingType {
    pub const ALL: [PricingType; 3] = [
        PricingType::Regular,
        PricingType::FreeCustomerService,
        PricingType::FreeEntryPoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PricingType::Regular => "regular",
            PricingType::FreeCustomerService => "free_customer_service",
            PricingType::FreeEntryPoint => "free_entry_point",
        }
    }

    pub fn parse(s: &str) -> Option<PricingType> {
        PricingType::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn billable(self) -> bool {
        self == PricingType::Regular
    }
}

pub const TEMPLATE_CATEGORIES: [&str; 4] = ["marketing", "utility", "authentication", "service"];

/// The template an outbound message was sent from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Template {
    pub name: String,
    /// "" when not given.
    pub language: String,
    /// One of `TEMPLATE_CATEGORIES`, or "" when not given.
    pub category: String,
}

/// The optional facts of an outbound message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    pub campaign_id: Option<String>,
    pub template: Option<Template>,
    /// The country of the recipient's calling code (`unknown` when none matches).
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    Contact {
        id: String,
    },
    Message {
        id: String,
        direction: Direction,
        message_type: String,
        conversation_id: Option<String>,
        /// What an outbound message was sent for and to; empty for inbound ones.
        outbound: Outbound,
        /// The outbound message an inbound one answers.
        reply_to: Option<String>,
    },
    MessageStatus {
        message_id: String,
        status: DeliveryStatus,
        error_code: Option<String>,
        pricing: Option<Pricing>,
        /// The recipient's country, when the status names the recipient.
        country: Option<String>,
    },
    Campaign {
        id: String,
        status: CampaignStatus,
    },
    Conversation {
        id: String,
        status: ConversationStatus,
    },
    Flow {
        id: String,
        flow_name: String,
        status: FlowStatus,
    },
    Keyword {
        keyword: String,
        id: Option<String>,
    },
    AiRequest {
        id: Option<String>,
        tokens: u64,
        model: String,
        /// Cost in millionths of a US dollar, so that sums are exact.
        cost_micros: Option<i64>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub account_id: String,
    /// When it happened, in whole Unix seconds.
    pub at: i64,
    pub body: EventBody,
}

/// What validation makes of one valid event.
#[derive(Debug, Clone, PartialEq)]
// Nearly every event is counted: boxing them to shrink the rare `Ignored` would allocate per event.
#[allow(clippy::large_enum_variant)]
pub enum Parsed {
    Event(Event),
    /// Well-formed but outside what whatstat counts (e.g. a `played` status).
    Ignored(String),
}

/// The clock and window that decide whether an event is history or from the future.
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub now: i64,
    pub state_window_secs: i64,
    pub backfill: bool,
}

pub const EVENT_TYPES: &str =
    "contact, message, message_status, campaign, conversation, flow, keyword, ai_request";

/// The fields whatstat reads, borrowed from the request body unparsed: only what an event
/// type needs is parsed, and unknown fields are skipped without allocating.
#[derive(Default, Deserialize)]
#[serde(default)]
struct RawEvent<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    account_id: Option<&'a RawValue>,
    #[serde(borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    direction: Option<&'a RawValue>,
    #[serde(borrow)]
    message_type: Option<&'a RawValue>,
    #[serde(borrow)]
    contact_id: Option<&'a RawValue>,
    #[serde(borrow)]
    conversation_id: Option<&'a RawValue>,
    #[serde(borrow)]
    campaign_id: Option<&'a RawValue>,
    #[serde(borrow)]
    message_id: Option<&'a RawValue>,
    #[serde(borrow)]
    status: Option<&'a RawValue>,
    #[serde(borrow)]
    error_code: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "named")]
    pricing_category: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "named")]
    pricing_type: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "named")]
    template_name: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "named")]
    template_language: Option<&'a RawValue>,
    #[serde(borrow, deserialize_with = "named")]
    template_category: Option<&'a RawValue>,
    #[serde(borrow)]
    recipient: Option<&'a RawValue>,
    #[serde(borrow)]
    reply_to: Option<&'a RawValue>,
    #[serde(borrow)]
    flow_name: Option<&'a RawValue>,
    #[serde(borrow)]
    keyword: Option<&'a RawValue>,
    #[serde(borrow)]
    tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    prompt_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    completion_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    cost: Option<&'a RawValue>,
}

/// Keeps a field given as `null` as named (serde reads a `null` as an absent `Option`):
/// a field that needs another needs it named.
fn named<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl RawEvent<'_> {
    fn field(&self, name: &str) -> Option<&RawValue> {
        match name {
            "type" => self.kind,
            "account_id" => self.account_id,
            "timestamp" => self.timestamp,
            "id" => self.id,
            "direction" => self.direction,
            "message_type" => self.message_type,
            "contact_id" => self.contact_id,
            "conversation_id" => self.conversation_id,
            "campaign_id" => self.campaign_id,
            "message_id" => self.message_id,
            "status" => self.status,
            "error_code" => self.error_code,
            "pricing_category" => self.pricing_category,
            "pricing_type" => self.pricing_type,
            "template_name" => self.template_name,
            "template_language" => self.template_language,
            "template_category" => self.template_category,
            "recipient" => self.recipient,
            "reply_to" => self.reply_to,
            "flow_name" => self.flow_name,
            "keyword" => self.keyword,
            "tokens" => self.tokens,
            "prompt_tokens" => self.prompt_tokens,
            "completion_tokens" => self.completion_tokens,
            "model" => self.model,
            "cost" => self.cost,
            _ => None,
        }
    }
}

pub fn parse_event(raw: &RawValue, admission: &Admission) -> Result<Parsed, String> {
    let text = raw.get().trim_start();
    if !text.starts_with('{') {
        let shown = serde_json::from_str::<Value>(text).unwrap_or(Value::Null);
        return Err(format!(
            "an event must be a JSON object, got {}",
            kind_of(&shown)
        ));
    }
    let fields: RawEvent =
        serde_json::from_str(text).map_err(|e| format!("the event is not valid: {e}"))?;
    let f = Fields(&fields);
    let mut errors = Vec::new();
    let kind = f.required_str("type", &mut errors);
    let account_id = f.id("account_id", &mut errors);
    let at = f.timestamp(admission, &mut errors);
    let body = match kind.as_deref() {
        None => None,
        Some(kind) => parse_body(kind, &f, &mut errors),
    };
    if let Some(at) = at {
        let window_start = admission.now - admission.state_window_secs;
        if at < window_start && !admission.backfill {
            // Statuses carry no send time; one this old belongs to a message whose state
            // has already been pruned, so it can only be reported back, not counted.
            if let Some(Body::Known(EventBody::MessageStatus { .. })) = body {
                if errors.is_empty() {
                    return Ok(Parsed::Ignored(format!(
                        "status for a message older than the state window of {} days",
                        admission.state_window_secs / 86_400
                    )));
                }
            } else {
                errors.push(format!(
                    "field `timestamp` {} is history, older than the state window of {} days (since {}); send it with ?backfill=true or `whatstat import`",
                    show(at),
                    admission.state_window_secs / 86_400,
                    show(window_start)
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    match (body, account_id, at) {
        (Some(Body::Known(body)), Some(account_id), Some(at)) => Ok(Parsed::Event(Event {
            account_id,
            at,
            body,
        })),
        (Some(Body::Ignored(reason)), Some(_), Some(_)) => Ok(Parsed::Ignored(reason)),
        _ => Err("invalid event".to_string()),
    }
}

enum Body {
    Known(EventBody),
    Ignored(String),
}

fn parse_body(kind: &str, f: &Fields, errors: &mut Vec<String>) -> Option<Body> {
    let body = match kind {
        "contact" => EventBody::Contact {
            id: f.id("id", errors)?,
        },
        "message" => {
            let id = f.id("id", errors);
            let direction = f.one_of(
                "direction",
                &[
                    ("inbound", Direction::Inbound),
                    ("outbound", Direction::Outbound),
                ],
                errors,
            );
            let message_type = f.message_type(errors);
            let conversation_id = f.optional_id("conversation_id", errors);
            f.optional_id("contact_id", errors);
            let campaign_id = f.optional_id("campaign_id", errors);
            let template = f.template(errors);
            let country = f.recipient_country(errors);
            let reply_to = f.optional_id("reply_to", errors);
            EventBody::Message {
                id: id?,
                direction: direction?,
                message_type: message_type?,
                conversation_id: conversation_id?,
                outbound: Outbound {
                    campaign_id: campaign_id?,
                    template: template?,
                    country: country?,
                },
                reply_to: reply_to?,
            }
        }
        "message_status" => {
            let message_id = f.id("message_id", errors);
            let error_code = f.optional_code("error_code", errors);
            let pricing = f.pricing(errors);
            let country = f.recipient_country(errors);
            let status = f.required_str("status", errors);
            let status = match status.as_deref() {
                Some("sent") => DeliveryStatus::Sent,
                Some("delivered") => DeliveryStatus::Delivered,
                Some("read") => DeliveryStatus::Read,
                Some("failed") => DeliveryStatus::Failed,
                Some(other) => {
                    message_id?;
                    return Some(Body::Ignored(format!(
                        "message_status `{other}` is not counted (counted: sent, delivered, read, failed)"
                    )));
                }
                None => return None,
            };
            EventBody::MessageStatus {
                message_id: message_id?,
                status,
                error_code: error_code?,
                pricing: pricing?,
                country: country?,
            }
        }
        "campaign" => {
            use CampaignStatus::*;
            let id = f.id("id", errors);
            let status = f.one_of(
                "status",
                &[
                    ("created", Created),
                    ("scheduled", Scheduled),
                    ("running", Running),
                    ("completed", Completed),
                    ("cancelled", Cancelled),
                    ("failed", Failed),
                ],
                errors,
            );
            EventBody::Campaign {
                id: id?,
                status: status?,
            }
        }
        "conversation" => {
            use ConversationStatus::*;
            let id = f.id("id", errors);
            let status = f.one_of(
                "status",
                &[
                    ("started", Started),
                    ("auto_resolved", AutoResolved),
                    ("transferred", Transferred),
                    ("abandoned", Abandoned),
                ],
                errors,
            );
            EventBody::Conversation {
                id: id?,
                status: status?,
            }
        }
        "flow" => {
            let id = f.id("id", errors);
            let flow_name = f.id("flow_name", errors);
            let status = f.one_of(
                "status",
                &[
                    ("started", FlowStatus::Started),
                    ("completed", FlowStatus::Completed),
                ],
                errors,
            );
            f.optional_id("conversation_id", errors);
            EventBody::Flow {
                id: id?,
                flow_name: flow_name?,
                status: status?,
            }
        }
        "keyword" => {
            let keyword = f.id("keyword", errors);
            let id = f.optional_id("id", errors);
            f.optional_id("conversation_id", errors);
            EventBody::Keyword {
                keyword: keyword?,
                id: id?,
            }
        }
        "ai_request" => {
            let id = f.optional_id("id", errors);
            let model = f.optional_id("model", errors);
            let tokens = f.tokens(errors);
            let cost = f.cost(errors);
            EventBody::AiRequest {
                id: id?,
                tokens: tokens?,
                model: model?.unwrap_or_default(),
                cost_micros: cost?,
            }
        }
        other => {
            errors.push(format!(
                "unknown event type `{other}` (allowed: {EVENT_TYPES})"
            ));
            return None;
        }
    };
    Some(Body::Known(body))
}

struct Fields<'a>(&'a RawEvent<'a>);

impl Fields<'_> {
    /// A field's value, parsed on demand.
    fn get(&self, name: &str) -> Option<Value> {
        self.0
            .field(name)
            .and_then(|r| serde_json::from_str(r.get()).ok())
    }

    fn required_str(&self, name: &str, errors: &mut Vec<String>) -> Option<String> {
        match self.get(name).as_ref() {
            None | Some(Value::Null) => {
                errors.push(format!("missing field `{name}`"));
                None
            }
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                errors.push(format!(
                    "field `{name}` must be a string, got {}",
                    kind_of(other)
                ));
                None
            }
        }
    }

    /// A required identifier-like string: non-empty, at most 256 characters.
    fn id(&self, name: &str, errors: &mut Vec<String>) -> Option<String> {
        let s = self.required_str(name, errors)?;
        check_id(name, s, errors)
    }

    /// `Some(None)` when absent, `None` when present but invalid.
    fn optional_id(&self, name: &str, errors: &mut Vec<String>) -> Option<Option<String>> {
        match self.get(name).as_ref() {
            None | Some(Value::Null) => Some(None),
            Some(_) => self.id(name, errors).map(Some),
        }
    }

    /// Error codes arrive as numbers from Meta and as strings from others.
    fn optional_code(&self, name: &str, errors: &mut Vec<String>) -> Option<Option<String>> {
        match self.get(name).as_ref() {
            Some(Value::Number(n)) => Some(Some(n.to_string())),
            _ => self.optional_id(name, errors),
        }
    }

    fn one_of<T: Copy>(
        &self,
        name: &str,
        allowed: &[(&str, T)],
        errors: &mut Vec<String>,
    ) -> Option<T> {
        let s = self.required_str(name, errors)?;
        match allowed.iter().find(|(word, _)| *word == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = allowed.iter().map(|(w, _)| *w).collect();
                errors.push(format!(
                    "field `{name}` is `{s}`; allowed: {}",
                    names.join(", ")
                ));
                None
            }
        }
    }

    /// Whether the event names a field at all, `null` included: a field that needs another
    /// needs it named, as the description's `dependentRequired` says.
    fn named(&self, name: &str) -> bool {
        self.0.field(name).is_some()
    }

    /// `template_name` with its optional language and category.
    fn template(&self, errors: &mut Vec<String>) -> Option<Option<Template>> {
        let name = self.optional_id("template_name", errors);
        let language = self.optional_id("template_language", errors);
        let category = match self.optional_id("template_category", errors) {
            Some(Some(c)) if !TEMPLATE_CATEGORIES.contains(&c.as_str()) => {
                errors.push(format!(
                    "field `template_category` is `{c}`; allowed: {}",
                    TEMPLATE_CATEGORIES.join(", ")
                ));
                None
            }
            other => other,
        };
        if !self.named("template_name")
            && (self.named("template_language") || self.named("template_category"))
        {
            errors.push(
                "field `template_language` or `template_category` needs `template_name`".into(),
            );
            return None;
        }
        let (name, language, category) = (name?, language?, category?);
        Some(name.map(|name| Template {
            name,
            language: language.unwrap_or_default(),
            category: category.unwrap_or_default(),
        }))
    }

    /// `recipient`, a WhatsApp id (the digits of an E.164 number), as its country.
    fn recipient_country(&self, errors: &mut Vec<String>) -> Option<Option<String>> {
        let Some(wa_id) = self.optional_id("recipient", errors)? else {
            return Some(None);
        };
        match super::country::of_recipient(&wa_id) {
            Some(country) => Some(Some(country.to_string())),
            None => {
                errors.push(format!(
                    "field `recipient` is `{wa_id}`; allowed: the digits of an E.164 number (at most 15, an optional leading +)"
                ));
                None
            }
        }
    }

    /// `pricing_category` with `pricing_type`; a category alone is `regular`, as Meta's
    /// statuses before `type` existed were billed unless they said otherwise. A `null`
    /// category prices nothing.
    fn pricing(&self, errors: &mut Vec<String>) -> Option<Option<Pricing>> {
        let category = self.optional_id("pricing_category", errors);
        let kind = match self.optional_id("pricing_type", errors) {
            Some(Some(t)) => match PricingType::parse(&t) {
                Some(k) => Some(Some(k)),
                None => {
                    let allowed: Vec<&str> = PricingType::ALL.map(PricingType::as_str).to_vec();
                    errors.push(format!(
                        "field `pricing_type` is `{t}`; allowed: {}",
                        allowed.join(", ")
                    ));
                    None
                }
            },
            other => other.map(|_| None),
        };
        if self.named("pricing_type") && !self.named("pricing_category") {
            errors.push("field `pricing_type` needs `pricing_category`".into());
            return None;
        }
        let (category, kind) = (category?, kind?);
        Some(category.map(|category| Pricing {
            category,
            kind: kind.unwrap_or(PricingType::Regular),
        }))
    }

    fn message_type(&self, errors: &mut Vec<String>) -> Option<String> {
        let s = self.required_str("message_type", errors)?;
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Some(s)
        } else {
            errors.push(format!(
                "field `message_type` is `{s}`; allowed: a lowercase word of a-z, 0-9 and _ (at most 64), e.g. text, image, template"
            ));
            None
        }
    }

    fn timestamp(&self, admission: &Admission, errors: &mut Vec<String>) -> Option<i64> {
        let secs = match self.get("timestamp").as_ref() {
            None | Some(Value::Null) => {
                errors.push(
                    "missing field `timestamp` (RFC 3339 with offset, or Unix seconds)".into(),
                );
                return None;
            }
            Some(Value::String(s)) => match s.parse::<Timestamp>() {
                Ok(ts) => ts.as_second(),
                Err(_) => {
                    errors.push(format!(
                        "field `timestamp` is `{s}`; allowed: RFC 3339 with an offset (2024-01-01T12:00:00+05:30) or Unix seconds"
                    ));
                    return None;
                }
            },
            Some(Value::Number(n)) => match n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            }) {
                Some(s) => s,
                None => {
                    errors.push(format!("field `timestamp` is {n}; allowed: Unix seconds"));
                    return None;
                }
            },
            Some(other) => {
                errors.push(format!(
                    "field `timestamp` must be a string or a number, got {}",
                    kind_of(other)
                ));
                return None;
            }
        };
        if secs < EARLIEST_SECS {
            errors.push(format!(
                "field `timestamp` is before 2000-01-01 ({})",
                show(secs)
            ));
            return None;
        }
        if secs > admission.now + FUTURE_TOLERANCE_SECS {
            errors.push(format!(
                "field `timestamp` {} is in the future (at most 5 minutes ahead of {} is allowed)",
                show(secs),
                show(admission.now)
            ));
            return None;
        }
        Some(secs)
    }

    fn count(&self, name: &str, errors: &mut Vec<String>) -> Option<Option<u64>> {
        match self.get(name).as_ref() {
            None | Some(Value::Null) => Some(None),
            // A whole number written with a fraction (`12.0`) is a JSON schema `integer` too.
            Some(Value::Number(n)) => match n
                .as_u64()
                .or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= MAX_TOKENS as f64)
                        .map(|f| f as u64)
                })
                .filter(|t| *t <= MAX_TOKENS)
            {
                Some(t) => Some(Some(t)),
                None => {
                    errors.push(format!(
                        "field `{name}` is {n}; allowed: a whole number from 0 to {MAX_TOKENS}"
                    ));
                    None
                }
            },
            Some(other) => {
                errors.push(format!(
                    "field `{name}` must be a whole number, got {}",
                    kind_of(other)
                ));
                None
            }
        }
    }

    fn tokens(&self, errors: &mut Vec<String>) -> Option<u64> {
        let total = self.count("tokens", errors);
        let prompt = self.count("prompt_tokens", errors);
        let completion = self.count("completion_tokens", errors);
        match (total?, prompt?, completion?) {
            (Some(t), _, _) => Some(t),
            (None, None, None) => {
                errors.push(
                    "missing field `tokens` (or `prompt_tokens` and `completion_tokens`)".into(),
                );
                None
            }
            (None, p, c) => Some(p.unwrap_or(0) + c.unwrap_or(0)),
        }
    }

    fn cost(&self, errors: &mut Vec<String>) -> Option<Option<i64>> {
        match self.get("cost").as_ref() {
            None | Some(Value::Null) => Some(None),
            Some(Value::Number(n)) => match n
                .as_f64()
                .filter(|c| c.is_finite() && *c >= 0.0 && *c <= MAX_COST_USD)
            {
                Some(c) => Some(Some((c * 1_000_000.0).round() as i64)),
                None => {
                    errors.push(format!(
                        "field `cost` is {n}; allowed: US dollars from 0 to {MAX_COST_USD}"
                    ));
                    None
                }
            },
            Some(other) => {
                errors.push(format!(
                    "field `cost` must be a number (US dollars), got {}",
                    kind_of(other)
                ));
                None
            }
        }
    }
}

fn check_id(name: &str, s: String, errors: &mut Vec<String>) -> Option<String> {
    if s.is_empty() || s.chars().count() > MAX_ID_LEN || s.chars().any(char::is_control) {
        errors.push(format!(
            "field `{name}` must be a non-empty string of at most {MAX_ID_LEN} characters without control characters"
        ));
        None
    } else {
        Some(s)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn show(secs: i64) -> String {
    Timestamp::from_second(secs).map_or_else(|_| secs.to_string(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_event(v: &Value, admission: &Admission) -> Result<Parsed, String> {
        let raw = RawValue::from_string(v.to_string()).expect("valid JSON");
        super::parse_event(&raw, admission)
    }

    const NOW: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn adm() -> Admission {
        Admission {
            now: NOW,
            state_window_secs: 35 * 86_400,
            backfill: false,
        }
    }

    #[test]
    fn parses_a_message_with_rfc3339_and_unix_time() {
        let v = json!({"type":"message","account_id":"a","timestamp":"2025-12-31T23:00:00+05:30","id":"m1","direction":"outbound","message_type":"template"});
        let Ok(Parsed::Event(e)) = parse_event(&v, &adm()) else {
            panic!("should parse")
        };
        assert_eq!(e.at, NOW - 86_400 + 3600 * 23 - 19_800);
        let v = json!({"type":"contact","account_id":"a","timestamp":NOW - 10,"id":"c"});
        let Ok(Parsed::Event(e)) = parse_event(&v, &adm()) else {
            panic!("should parse")
        };
        assert_eq!(e.at, NOW - 10);
    }

    #[test]
    fn names_every_bad_field() {
        let v = json!({"type":"message","account_id":"","timestamp":"yesterday","direction":"sideways","message_type":"Text"});
        let err = parse_event(&v, &adm()).unwrap_err();
        assert!(err.contains("`account_id`"), "{err}");
        assert!(err.contains("`timestamp` is `yesterday`"), "{err}");
        assert!(err.contains("missing field `id`"), "{err}");
        assert!(err.contains("allowed: inbound, outbound"), "{err}");
        assert!(err.contains("`message_type` is `Text`"), "{err}");
    }

    #[test]
    fn unknown_delivery_status_is_ignored_not_an_error() {
        let v = json!({"type":"message_status","account_id":"a","timestamp":NOW,"message_id":"m","status":"played"});
        assert!(matches!(parse_event(&v, &adm()), Ok(Parsed::Ignored(_))));
    }

    #[test]
    fn future_and_history_are_refused() {
        let v = json!({"type":"contact","account_id":"a","timestamp":NOW + 301,"id":"c"});
        assert!(parse_event(&v, &adm()).unwrap_err().contains("future"));
        let v = json!({"type":"contact","account_id":"a","timestamp":NOW - 36 * 86_400,"id":"c"});
        assert!(
            parse_event(&v, &adm())
                .unwrap_err()
                .contains("backfill=true")
        );
        let back = Admission {
            backfill: true,
            ..adm()
        };
        assert!(matches!(parse_event(&v, &back), Ok(Parsed::Event(_))));
    }

    #[test]
    fn ai_tokens_and_cost() {
        let v = json!({"type":"ai_request","account_id":"a","timestamp":NOW,"prompt_tokens":100,"completion_tokens":23,"cost":0.0125});
        let Ok(Parsed::Event(e)) = parse_event(&v, &adm()) else {
            panic!("should parse")
        };
        assert_eq!(
            e.body,
            EventBody::AiRequest {
                id: None,
                tokens: 123,
                model: String::new(),
                cost_micros: Some(12_500)
            }
        );
        let v = json!({"type":"ai_request","account_id":"a","timestamp":NOW,"tokens":-5});
        assert!(
            parse_event(&v, &adm())
                .unwrap_err()
                .contains("`tokens` is -5")
        );
        let v = json!({"type":"ai_request","account_id":"a","timestamp":NOW});
        assert!(
            parse_event(&v, &adm())
                .unwrap_err()
                .contains("missing field `tokens`")
        );
    }

    #[test]
    fn unknown_type_lists_the_allowed_ones() {
        let v = json!({"type":"purchase","account_id":"a","timestamp":NOW});
        assert!(
            parse_event(&v, &adm())
                .unwrap_err()
                .contains("allowed: contact, message")
        );
        assert!(
            parse_event(&json!([1]), &adm())
                .unwrap_err()
                .contains("JSON object")
        );
    }
}
