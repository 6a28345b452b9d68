//! Entity states and their contributions to the rollups.
//!
//! Every counted thing (a message, a conversation, a flow run, a contact, a campaign)
//! has a small state. What it adds to the rollups is a pure function of that state,
//! so an event only changes a state, and the rollups change by the new contribution
//! minus the old one. Arrival order, duplicates and late events then cannot matter.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::event::{CampaignStatus, ConversationStatus, PricingType, Template};

pub use crate::store::{EntityKind as Kind, Series};

/// The counter series the engine keeps, by their names in the engine's code.
pub mod series {
    use super::Series;

    pub const SENT: Series = Series::Sent;
    pub const RECEIVED: Series = Series::Received;
    pub const DELIVERED: Series = Series::Delivered;
    pub const READ: Series = Series::Read;
    pub const FAILED: Series = Series::Failed;
    pub const FAILED_BY_ERROR: Series = Series::FailedByError;
    pub const BY_TYPE: Series = Series::ByType;
    pub const CONTACTS: Series = Series::Contacts;
    pub const CAMPAIGNS: Series = Series::Campaigns;
    pub const CAMPAIGNS_RUNNING: Series = Series::CampaignsRunning;
    pub const CAMPAIGNS_COMPLETED: Series = Series::CampaignsCompleted;
    pub const CONVERSATIONS: Series = Series::Conversations;
    pub const AUTO_RESOLVED: Series = Series::AutoResolved;
    pub const TRANSFERRED: Series = Series::Transferred;
    pub const ABANDONED: Series = Series::Abandoned;
    pub const CONVERSATION_MESSAGES: Series = Series::ConversationMessages;
    pub const RESOLUTION_SECONDS: Series = Series::ResolutionSeconds;
    pub const FLOW_STARTED: Series = Series::FlowStarted;
    pub const FLOW_COMPLETED: Series = Series::FlowCompleted;
    pub const KEYWORD: Series = Series::Keyword;
    pub const AI_REQUESTS: Series = Series::AiRequests;
    pub const AI_TOKENS: Series = Series::AiTokens;
    pub const AI_COST_MICROS: Series = Series::AiCostMicros;
    pub const AI_UNPRICED_TOKENS: Series = Series::AiUnpricedTokens;
    pub const REPLIED: Series = Series::Replied;
    pub const PRICED: Series = Series::Priced;
    pub const CAMPAIGN_STATUS: Series = Series::CampaignStatus;
    pub const CAMPAIGN_SENT: Series = Series::CampaignSent;
    pub const CAMPAIGN_DELIVERED: Series = Series::CampaignDelivered;
    pub const CAMPAIGN_READ: Series = Series::CampaignRead;
    pub const CAMPAIGN_FAILED: Series = Series::CampaignFailed;
    pub const CAMPAIGN_REPLIED: Series = Series::CampaignReplied;
    pub const CAMPAIGN_FAILED_BY_ERROR: Series = Series::CampaignFailedByError;
    pub const CAMPAIGN_BILLABLE: Series = Series::CampaignBillable;
    pub const TEMPLATE_SENT: Series = Series::TemplateSent;
    pub const TEMPLATE_DELIVERED: Series = Series::TemplateDelivered;
    pub const TEMPLATE_READ: Series = Series::TemplateRead;
    pub const TEMPLATE_FAILED: Series = Series::TemplateFailed;
    pub const TEMPLATE_REPLIED: Series = Series::TemplateReplied;
    pub const TEMPLATE_BILLABLE: Series = Series::TemplateBillable;
}

/// Joins the parts of a dimension made of several (a campaign and an error code, say).
/// Identifiers never hold control characters, so the separator cannot be forged.
pub const DIM_SEPARATOR: char = '\u{1f}';

pub fn join_dim(parts: &[&str]) -> String {
    parts.join("\u{1f}")
}

pub fn split_dim(dim: &str) -> Vec<&str> {
    dim.split(DIM_SEPARATOR).collect()
}

/// One unit of what a state adds to the rollups: `value` of `series`/`dim` at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution<'a> {
    pub series: Series,
    /// Borrowed from the state where it can be: contributions are summed right away.
    pub dim: Cow<'a, str>,
    pub at: i64,
    pub value: i64,
}

fn push<'a>(
    out: &mut Vec<Contribution<'a>>,
    series: Series,
    dim: impl Into<Cow<'a, str>>,
    at: i64,
    value: i64,
) {
    if value != 0 {
        out.push(Contribution {
            series,
            dim: dim.into(),
            at,
            value,
        });
    }
}

pub const STATUS_SENT: u8 = 1;
pub const STATUS_DELIVERED: u8 = 2;
pub const STATUS_READ: u8 = 4;
pub const STATUS_FAILED: u8 = 8;

/// How a message was priced, from whichever of its statuses carried pricing. Statuses
/// may disagree; the one of the earliest delivery step wins (ties by category and type),
/// so the choice never depends on arrival order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PricedAs {
    /// The `STATUS_*` bit of the status that carried it.
    pub step: u8,
    pub category: String,
    pub kind: PricingType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageState {
    /// `None` until the message event itself arrives: a status came first.
    pub inbound: Option<bool>,
    pub message_type: String,
    /// Send (or receive) time; while only statuses are known, the earliest status time.
    pub at: i64,
    /// Bits of the delivery statuses seen (`STATUS_*`).
    pub statuses: u8,
    pub error_code: Option<String>,
    pub conversation_id: Option<String>,
    /// Whether a failure of this state counts under its error code. States stored before
    /// failure reasons were counted did not add one, so their old contribution must not
    /// take one away; every state written since does (see `Entity::decode`).
    pub failure_reasons: bool,
    pub campaign_id: Option<String>,
    pub template: Option<Template>,
    /// The recipient's country as the message named it.
    pub country: Option<String>,
    /// The least country the statuses named; counts when the message names none.
    pub status_country: Option<String>,
    /// Whether an inbound message answered it (counted once however many do).
    pub replied: bool,
    pub pricing: Option<PricedAs>,
}

/// A message's state as stored before campaigns, templates, replies and pricing counted.
#[derive(Deserialize)]
struct MessageStateBeforeCosts {
    inbound: Option<bool>,
    message_type: String,
    at: i64,
    statuses: u8,
    error_code: Option<String>,
    _pricing_category: Option<String>,
    conversation_id: Option<String>,
    failure_reasons: bool,
}

/// A message's state as stored before failure reasons were counted.
#[derive(Deserialize)]
struct MessageStateBeforeReasons {
    inbound: Option<bool>,
    message_type: String,
    at: i64,
    statuses: u8,
    error_code: Option<String>,
    _pricing_category: Option<String>,
    conversation_id: Option<String>,
}

impl From<MessageStateBeforeCosts> for MessageState {
    // The old pricing category contributed nothing, so it is dropped: keeping it would
    // take away counts the old state never added.
    fn from(s: MessageStateBeforeCosts) -> Self {
        MessageState {
            inbound: s.inbound,
            message_type: s.message_type,
            at: s.at,
            statuses: s.statuses,
            error_code: s.error_code,
            conversation_id: s.conversation_id,
            failure_reasons: s.failure_reasons,
            campaign_id: None,
            template: None,
            country: None,
            status_country: None,
            replied: false,
            pricing: None,
        }
    }
}

impl From<MessageStateBeforeReasons> for MessageState {
    fn from(s: MessageStateBeforeReasons) -> Self {
        MessageStateBeforeCosts {
            inbound: s.inbound,
            message_type: s.message_type,
            at: s.at,
            statuses: s.statuses,
            error_code: s.error_code,
            _pricing_category: None,
            conversation_id: s.conversation_id,
            failure_reasons: false,
        }
        .into()
    }
}

impl MessageState {
    /// A message known only from what was said about it (statuses, replies).
    pub fn placeholder(at: i64) -> MessageState {
        MessageState {
            inbound: None,
            message_type: String::new(),
            at,
            statuses: 0,
            error_code: None,
            conversation_id: None,
            failure_reasons: true,
            campaign_id: None,
            template: None,
            country: None,
            status_country: None,
            replied: false,
            pricing: None,
        }
    }

    pub fn is_placeholder(&self) -> bool {
        self.inbound.is_none()
    }

    pub fn contribute<'a>(&'a self, out: &mut Vec<Contribution<'a>>) {
        let at = self.at;
        // Known only from replies: nothing says it was sent through this account yet.
        if self.is_placeholder() && self.statuses == 0 {
            return;
        }
        let message_type = if self.is_placeholder() {
            "unknown"
        } else {
            &self.message_type
        };
        push(out, series::BY_TYPE, message_type, at, 1);
        if self.inbound == Some(true) {
            push(out, series::RECEIVED, "", at, 1);
            return;
        }
        // The ladder: read implies delivered implies sent; failed only counts while
        // neither delivered nor read is known.
        let read = self.statuses & STATUS_READ != 0;
        let delivered = read || self.statuses & STATUS_DELIVERED != 0;
        let failed = !delivered && self.statuses & STATUS_FAILED != 0;
        let replied = self.replied;
        push(out, series::SENT, "", at, 1);
        push(out, series::DELIVERED, "", at, i64::from(delivered));
        push(out, series::READ, "", at, i64::from(read));
        push(out, series::FAILED, "", at, i64::from(failed));
        push(out, series::REPLIED, "", at, i64::from(replied));
        let code = self.error_code.as_deref().unwrap_or("");
        if self.failure_reasons {
            push(out, series::FAILED_BY_ERROR, code, at, i64::from(failed));
        }
        let country = (self.country.as_deref())
            .or(self.status_country.as_deref())
            .unwrap_or(super::country::UNKNOWN);
        let billable = self.pricing.as_ref().filter(|p| p.kind.billable());
        if let Some(p) = &self.pricing {
            let dim = join_dim(&[&p.category, p.kind.as_str(), country]);
            push(out, series::PRICED, dim, at, 1);
        }
        if let Some(c) = self.campaign_id.as_deref() {
            push(out, series::CAMPAIGN_SENT, c, at, 1);
            push(out, series::CAMPAIGN_DELIVERED, c, at, i64::from(delivered));
            push(out, series::CAMPAIGN_READ, c, at, i64::from(read));
            push(out, series::CAMPAIGN_FAILED, c, at, i64::from(failed));
            push(out, series::CAMPAIGN_REPLIED, c, at, i64::from(replied));
            if failed {
                let dim = join_dim(&[code, c]);
                push(out, series::CAMPAIGN_FAILED_BY_ERROR, dim, at, 1);
            }
            if let Some(p) = billable {
                let dim = join_dim(&[&p.category, country, c]);
                push(out, series::CAMPAIGN_BILLABLE, dim, at, 1);
            }
        }
        if let Some(t) = &self.template {
            let name = join_dim(&[&t.name, &t.language, &t.category]);
            if let Some(p) = billable {
                let dim = join_dim(&[&p.category, country, &name]);
                push(out, series::TEMPLATE_BILLABLE, dim, at, 1);
            }
            push(
                out,
                series::TEMPLATE_DELIVERED,
                name.clone(),
                at,
                i64::from(delivered),
            );
            push(
                out,
                series::TEMPLATE_READ,
                name.clone(),
                at,
                i64::from(read),
            );
            push(
                out,
                series::TEMPLATE_FAILED,
                name.clone(),
                at,
                i64::from(failed),
            );
            push(
                out,
                series::TEMPLATE_REPLIED,
                name.clone(),
                at,
                i64::from(replied),
            );
            push(out, series::TEMPLATE_SENT, name, at, 1);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationState {
    pub started: Option<i64>,
    /// The first outcome by time; ties go to the lower status, so order never matters.
    pub outcome: Option<(i64, ConversationOutcome)>,
    pub messages: i64,
    /// Bits of the statuses seen, for dedup.
    pub seen: u8,
    /// Earliest time of anything known about it; anchors the state window.
    pub first_seen: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConversationOutcome {
    AutoResolved,
    Transferred,
    Abandoned,
}

impl ConversationOutcome {
    pub fn from_status(s: ConversationStatus) -> Option<Self> {
        match s {
            ConversationStatus::Started => None,
            ConversationStatus::AutoResolved => Some(Self::AutoResolved),
            ConversationStatus::Transferred => Some(Self::Transferred),
            ConversationStatus::Abandoned => Some(Self::Abandoned),
        }
    }
}

impl ConversationState {
    pub fn new(first_seen: i64) -> Self {
        ConversationState {
            started: None,
            outcome: None,
            messages: 0,
            seen: 0,
            first_seen,
        }
    }

    pub fn contribute<'a>(&'a self, out: &mut Vec<Contribution<'a>>) {
        // Nothing counts until the start is known; then everything counts at the start.
        let Some(start) = self.started else { return };
        push(out, series::CONVERSATIONS, "", start, 1);
        push(out, series::CONVERSATION_MESSAGES, "", start, self.messages);
        match self.outcome {
            Some((at, ConversationOutcome::AutoResolved)) => {
                push(out, series::AUTO_RESOLVED, "", start, 1);
                push(
                    out,
                    series::RESOLUTION_SECONDS,
                    "",
                    start,
                    (at - start).max(0),
                );
            }
            Some((_, ConversationOutcome::Transferred)) => {
                push(out, series::TRANSFERRED, "", start, 1)
            }
            Some((_, ConversationOutcome::Abandoned)) => push(out, series::ABANDONED, "", start, 1),
            None => {}
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRunState {
    pub flow_name: String,
    pub started: Option<i64>,
    pub completed: bool,
    pub seen: u8,
    pub first_seen: i64,
}

impl FlowRunState {
    pub fn contribute<'a>(&'a self, out: &mut Vec<Contribution<'a>>) {
        let Some(start) = self.started else { return };
        push(out, series::FLOW_STARTED, &self.flow_name, start, 1);
        push(
            out,
            series::FLOW_COMPLETED,
            &self.flow_name,
            start,
            i64::from(self.completed),
        );
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactState {
    /// Earliest time the contact was seen.
    pub at: i64,
}

impl ContactState {
    pub fn contribute<'a>(&'a self, out: &mut Vec<Contribution<'a>>) {
        push(out, series::CONTACTS, "", self.at, 1);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignState {
    /// The earliest time each status was reported (indexed by `CampaignStatus`): a
    /// repeat of a status is the same status, so only an earlier time can move it.
    pub reported: [Option<i64>; CampaignStatus::ALL.len()],
    /// Whether this state counts its current status (`campaign_status`). States stored
    /// before that series did not add it, so their old contribution must not take it away;
    /// every state written since does (see `Entity::decode`).
    pub status_counted: bool,
}

/// A campaign's state as stored before its current status was counted.
#[derive(Deserialize)]
struct CampaignStateBeforeStatus {
    reported: [Option<i64>; CampaignStatus::ALL.len()],
}

impl CampaignState {
    pub fn first_seen(&self) -> Option<i64> {
        self.reported.iter().flatten().copied().min()
    }

    /// The current state: the latest status by time; ties go to the later status in
    /// the lifecycle.
    pub fn current(&self) -> Option<(i64, CampaignStatus)> {
        CampaignStatus::ALL
            .iter()
            .filter_map(|s| self.reported[*s as usize].map(|at| (at, *s)))
            .max()
    }

    pub fn contribute<'a>(&'a self, out: &mut Vec<Contribution<'a>>, id: &'a str) {
        if let Some(first) = self.first_seen() {
            push(out, series::CAMPAIGNS, "", first, 1);
            // The current status, at the first sighting: summed over all time, each
            // campaign has exactly one.
            if let Some((_, status)) = self.current().filter(|_| self.status_counted) {
                let dim = join_dim(&[status.as_str(), id]);
                push(out, series::CAMPAIGN_STATUS, dim, first, 1);
            }
        }
        match self.current() {
            Some((at, CampaignStatus::Running)) => push(out, series::CAMPAIGNS_RUNNING, "", at, 1),
            Some((at, CampaignStatus::Completed)) => {
                push(out, series::CAMPAIGNS_COMPLETED, "", at, 1)
            }
            _ => {}
        }
    }
}

/// Dedup marker for events that have an id but no state of their own (keyword, AI call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenState {
    pub at: i64,
}

/// The state of any entity, as stored (postcard-encoded, behind a kind number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    Message(MessageState),
    Conversation(ConversationState),
    FlowRun(FlowRunState),
    Contact(ContactState),
    Campaign(CampaignState),
    Keyword(SeenState),
    AiRequest(SeenState),
}

impl Entity {
    /// What the state adds to the rollups; `id` is the entity's own id.
    pub fn contribute<'a>(&'a self, out: &mut Vec<Contribution<'a>>, id: &'a str) {
        match self {
            Entity::Message(s) => s.contribute(out),
            Entity::Conversation(s) => s.contribute(out),
            Entity::FlowRun(s) => s.contribute(out),
            Entity::Contact(s) => s.contribute(out),
            Entity::Campaign(s) => s.contribute(out, id),
            // Their counts are recorded once, when first seen; the marker only dedups.
            Entity::Keyword(_) | Entity::AiRequest(_) => {}
        }
    }

    /// The time the state window is measured from; `None` for states kept forever.
    pub fn window_anchor(&self) -> Option<i64> {
        match self {
            Entity::Message(s) => Some(s.at),
            Entity::Conversation(s) => Some(s.started.unwrap_or(s.first_seen).min(s.first_seen)),
            Entity::FlowRun(s) => Some(s.started.unwrap_or(s.first_seen).min(s.first_seen)),
            Entity::Keyword(s) | Entity::AiRequest(s) => Some(s.at),
            // Bounded by the number of contacts and campaigns, not of events.
            Entity::Contact(_) | Entity::Campaign(_) => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let r = match self {
            Entity::Message(s) => postcard::to_allocvec(s),
            Entity::Conversation(s) => postcard::to_allocvec(s),
            Entity::FlowRun(s) => postcard::to_allocvec(s),
            Entity::Contact(s) => postcard::to_allocvec(s),
            Entity::Campaign(s) => postcard::to_allocvec(s),
            Entity::Keyword(s) | Entity::AiRequest(s) => postcard::to_allocvec(s),
        };
        // Serializing these plain structs into a Vec cannot fail.
        r.unwrap_or_default()
    }

    pub fn decode(kind: Kind, bytes: &[u8]) -> Result<Entity, String> {
        let r = match kind {
            // States stored before failure reasons, or before costs, were shorter.
            Kind::Message => postcard::from_bytes(bytes)
                .map(Entity::Message)
                .or_else(|e| {
                    postcard::from_bytes::<MessageStateBeforeCosts>(bytes)
                        .map(|old| Entity::Message(old.into()))
                        .or_else(|_| {
                            postcard::from_bytes::<MessageStateBeforeReasons>(bytes)
                                .map(|old| Entity::Message(old.into()))
                        })
                        .map_err(|_| e)
                }),
            Kind::Conversation => postcard::from_bytes(bytes).map(Entity::Conversation),
            Kind::FlowRun => postcard::from_bytes(bytes).map(Entity::FlowRun),
            Kind::Contact => postcard::from_bytes(bytes).map(Entity::Contact),
            Kind::Campaign => postcard::from_bytes(bytes)
                .map(Entity::Campaign)
                .or_else(|e| {
                    postcard::from_bytes::<CampaignStateBeforeStatus>(bytes)
                        .map(|old| {
                            Entity::Campaign(CampaignState {
                                reported: old.reported,
                                status_counted: false,
                            })
                        })
                        .map_err(|_| e)
                }),
            Kind::Keyword => postcard::from_bytes(bytes).map(Entity::Keyword),
            Kind::AiRequest => postcard::from_bytes(bytes).map(Entity::AiRequest),
        };
        r.map_err(|e| format!("corrupt stored state of kind {}: {e}", kind.code()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contributions(e: &Entity) -> Vec<(Series, String, i64)> {
        let mut out = Vec::new();
        e.contribute(&mut out, "c1");
        out.into_iter()
            .map(|c| (c.series, c.dim.to_string(), c.value))
            .collect()
    }

    fn message(inbound: Option<bool>, statuses: u8) -> Entity {
        Entity::Message(MessageState {
            inbound,
            message_type: "text".into(),
            at: 100,
            statuses,
            error_code: None,
            ..MessageState::placeholder(100)
        })
    }

    fn has(c: &[(Series, String, i64)], series: Series) -> bool {
        c.iter().any(|(s, _, v)| *s == series && *v == 1)
    }

    #[test]
    fn status_ladder() {
        let read_only = contributions(&message(Some(false), STATUS_READ));
        assert!(
            has(&read_only, series::SENT)
                && has(&read_only, series::DELIVERED)
                && has(&read_only, series::READ)
        );
        let failed = contributions(&message(Some(false), STATUS_FAILED | STATUS_SENT));
        assert!(has(&failed, series::FAILED) && !has(&failed, series::DELIVERED));
        let failed_then_delivered =
            contributions(&message(Some(false), STATUS_FAILED | STATUS_DELIVERED));
        assert!(
            !has(&failed_then_delivered, series::FAILED)
                && has(&failed_then_delivered, series::DELIVERED)
        );
    }

    #[test]
    fn a_failure_counts_under_its_error_code_only_while_failed_counts() {
        let mut m = MessageState {
            inbound: Some(false),
            message_type: "text".into(),
            at: 100,
            statuses: STATUS_FAILED,
            error_code: Some("131026".into()),
            ..MessageState::placeholder(100)
        };
        let c = contributions(&Entity::Message(m.clone()));
        assert!(c.contains(&(series::FAILED_BY_ERROR, "131026".to_string(), 1)));
        m.error_code = None;
        let c = contributions(&Entity::Message(m.clone()));
        assert!(c.contains(&(series::FAILED_BY_ERROR, String::new(), 1)));
        m.statuses |= STATUS_DELIVERED;
        let c = contributions(&Entity::Message(m));
        assert!(!c.iter().any(|(s, _, _)| *s == series::FAILED_BY_ERROR));
    }

    #[test]
    fn a_message_known_only_from_a_reply_counts_nothing_until_it_or_a_status_arrives() {
        let mut m = MessageState::placeholder(100);
        m.replied = true;
        assert!(contributions(&Entity::Message(m.clone())).is_empty());
        m.statuses = STATUS_DELIVERED;
        let c = contributions(&Entity::Message(m));
        assert!(has(&c, series::SENT) && has(&c, series::REPLIED));
    }

    #[test]
    fn campaign_template_and_billing_follow_the_ladder_and_the_country() {
        let m = MessageState {
            inbound: Some(false),
            message_type: "template".into(),
            statuses: STATUS_FAILED,
            error_code: Some("131026".into()),
            campaign_id: Some("c1".into()),
            template: Some(Template {
                name: "sale".into(),
                language: "en".into(),
                category: "marketing".into(),
            }),
            status_country: Some("DE".into()),
            pricing: Some(PricedAs {
                step: STATUS_SENT,
                category: "marketing".into(),
                kind: PricingType::Regular,
            }),
            ..MessageState::placeholder(100)
        };
        let c = contributions(&Entity::Message(m.clone()));
        let dim = |parts: &[&str]| join_dim(parts);
        assert!(c.contains(&(series::CAMPAIGN_FAILED, "c1".into(), 1)));
        assert!(c.contains(&(series::CAMPAIGN_FAILED_BY_ERROR, dim(&["131026", "c1"]), 1)));
        assert!(c.contains(&(
            series::CAMPAIGN_BILLABLE,
            dim(&["marketing", "DE", "c1"]),
            1
        )));
        assert!(c.contains(&(
            series::TEMPLATE_FAILED,
            dim(&["sale", "en", "marketing"]),
            1
        )));
        assert!(c.contains(&(series::PRICED, dim(&["marketing", "regular", "DE"]), 1)));
        // The message's own recipient wins over what statuses said; free is not billable.
        let free = MessageState {
            country: Some("IN".into()),
            pricing: Some(PricedAs {
                step: STATUS_SENT,
                category: "utility".into(),
                kind: PricingType::FreeCustomerService,
            }),
            ..m
        };
        let c = contributions(&Entity::Message(free));
        assert!(c.contains(&(
            series::PRICED,
            dim(&["utility", "free_customer_service", "IN"]),
            1
        )));
        assert!(!c.iter().any(|(s, _, _)| *s == series::CAMPAIGN_BILLABLE));
    }

    #[test]
    fn placeholder_counts_as_unknown_outbound() {
        let c = contributions(&message(None, STATUS_DELIVERED));
        assert!(c.contains(&(series::BY_TYPE, "unknown".to_string(), 1)));
        assert!(has(&c, series::SENT) && has(&c, series::DELIVERED));
    }

    #[test]
    fn inbound_counts_as_received_only() {
        let c = contributions(&message(Some(true), STATUS_READ));
        assert_eq!(
            c,
            vec![
                (series::BY_TYPE, "text".to_string(), 1),
                (series::RECEIVED, String::new(), 1)
            ]
        );
    }

    #[test]
    fn conversation_waits_for_its_start() {
        let mut s = ConversationState::new(50);
        s.outcome = Some((200, ConversationOutcome::AutoResolved));
        s.messages = 3;
        assert!(contributions(&Entity::Conversation(s.clone())).is_empty());
        s.started = Some(80);
        let c = contributions(&Entity::Conversation(s));
        assert!(c.contains(&(series::RESOLUTION_SECONDS, String::new(), 120)));
        assert!(c.contains(&(series::CONVERSATION_MESSAGES, String::new(), 3)));
    }

    #[test]
    fn a_repeated_campaign_status_moves_nothing_unless_earlier() {
        let mut c = CampaignState {
            reported: [None; 6],
            status_counted: true,
        };
        c.reported[CampaignStatus::Running as usize] = Some(100);
        c.reported[CampaignStatus::Completed as usize] = Some(200);
        assert_eq!(c.current(), Some((200, CampaignStatus::Completed)));
        // A later repeat of `running` keeps its earliest time: still completed.
        let running = &mut c.reported[CampaignStatus::Running as usize];
        *running = running.map(|t| t.min(300));
        assert_eq!(c.current(), Some((200, CampaignStatus::Completed)));
        assert_eq!(c.first_seen(), Some(100));
    }

    /// A campaign stored before its status was counted added none: its old contribution
    /// takes none away, and once written again it counts its status.
    #[test]
    fn a_campaign_stored_before_its_status_counted_contributes_none_until_rewritten() {
        let mut reported = [None; 6];
        reported[CampaignStatus::Running as usize] = Some(100);
        #[derive(Serialize)]
        struct Before {
            reported: [Option<i64>; 6],
        }
        let bytes = postcard::to_allocvec(&Before { reported }).expect("encode");
        let Ok(Entity::Campaign(old)) = Entity::decode(Kind::Campaign, &bytes) else {
            panic!("a campaign state of before the status series must decode");
        };
        assert!(!old.status_counted);
        let c = contributions(&Entity::Campaign(old.clone()));
        assert!(has(&c, series::CAMPAIGNS));
        assert!(!c.iter().any(|(s, _, _)| *s == series::CAMPAIGN_STATUS));
        let now = CampaignState {
            status_counted: true,
            ..old
        };
        let c = contributions(&Entity::Campaign(now.clone()));
        assert!(c.contains(&(series::CAMPAIGN_STATUS, join_dim(&["running", "c1"]), 1)));
        assert_eq!(
            Entity::decode(Kind::Campaign, &Entity::Campaign(now.clone()).encode()),
            Ok(Entity::Campaign(now))
        );
    }

    #[test]
    fn states_round_trip_through_encoding() {
        let e = message(None, STATUS_READ | STATUS_FAILED);
        assert_eq!(Entity::decode(Kind::Message, &e.encode()), Ok(e));
        assert!(Entity::decode(Kind::Campaign, &[0xff]).is_err());
    }

    /// A failed message stored before failure reasons were counted added none, so its old
    /// contribution takes none away; once written again it counts under its code.
    #[test]
    fn a_state_stored_before_failure_reasons_contributes_none_until_rewritten() {
        #[derive(Serialize)]
        struct Before {
            inbound: Option<bool>,
            message_type: String,
            at: i64,
            statuses: u8,
            error_code: Option<String>,
            pricing_category: Option<String>,
            conversation_id: Option<String>,
        }
        let bytes = postcard::to_allocvec(&Before {
            inbound: Some(false),
            message_type: "text".into(),
            at: 100,
            statuses: STATUS_FAILED,
            error_code: Some("131047".into()),
            pricing_category: None,
            conversation_id: None,
        })
        .expect("encode");
        let Ok(Entity::Message(old)) = Entity::decode(Kind::Message, &bytes) else {
            panic!("a state of before failure reasons must decode");
        };
        assert!(!old.failure_reasons);
        let c = contributions(&Entity::Message(old.clone()));
        assert!(has(&c, series::FAILED));
        assert!(!c.iter().any(|(s, _, _)| *s == series::FAILED_BY_ERROR));
        let now = MessageState {
            failure_reasons: true,
            ..old
        };
        let c = contributions(&Entity::Message(now));
        assert!(c.contains(&(series::FAILED_BY_ERROR, "131047".to_string(), 1)));
    }
}
