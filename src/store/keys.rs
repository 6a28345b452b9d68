//! The typed parts of a stored key: a counter's tier and series, an entity's kind. They
//! become integers or text only where SQL binds or reads them (`code`, `as_str`).

/// The resolution a rollup is kept at. Each tier has its own retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tier {
    Hour = 0,
    Day = 1,
    Month = 2,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Hour, Tier::Day, Tier::Month];

    /// The stored number.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The tier a stored number names.
    pub fn from_code(code: i64) -> Option<Tier> {
        Tier::ALL.into_iter().find(|t| i64::from(t.code()) == code)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Hour => "hour",
            Tier::Day => "day",
            Tier::Month => "month",
        }
    }
}

/// What an entity's state is the state of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityKind {
    Message = 1,
    Conversation = 2,
    FlowRun = 3,
    Contact = 4,
    Campaign = 5,
    Keyword = 6,
    AiRequest = 7,
}

impl EntityKind {
    pub const ALL: [EntityKind; 7] = [
        EntityKind::Message,
        EntityKind::Conversation,
        EntityKind::FlowRun,
        EntityKind::Contact,
        EntityKind::Campaign,
        EntityKind::Keyword,
        EntityKind::AiRequest,
    ];

    /// The stored number.
    pub fn code(self) -> i16 {
        self as i16
    }

    /// The kind a stored number names.
    pub fn from_code(code: i64) -> Option<EntityKind> {
        EntityKind::ALL
            .into_iter()
            .find(|k| i64::from(k.code()) == code)
    }
}

macro_rules! series {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        /// A counter series, stored under its name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Series {
            $($(#[$doc])* $variant,)*
        }

        impl Series {
            pub const ALL: &'static [Series] = &[$(Series::$variant,)*];

            /// The stored name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Series::$variant => $name,)*
                }
            }

            /// The series a stored name names.
            pub fn from_name(name: &str) -> Option<Series> {
                match name {
                    $($name => Some(Series::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

series! {
    Sent = "sent",
    Received = "received",
    Delivered = "delivered",
    Read = "read",
    Failed = "failed",
    /// Failed messages per error code ("" when the failure came without one), at the send
    /// time, counted exactly when `Failed` counts.
    FailedByError = "failed_by_error",
    /// Messages of both directions, per message type.
    ByType = "by_type",
    Contacts = "contacts",
    /// Campaigns, at their first known event.
    Campaigns = "campaigns",
    /// Campaigns whose current state is `running`, at the time they entered it.
    CampaignsRunning = "campaigns_running",
    /// Campaigns whose current state is `completed`, at the time they completed.
    CampaignsCompleted = "campaigns_completed",
    Conversations = "conversations",
    AutoResolved = "auto_resolved",
    Transferred = "transferred",
    Abandoned = "abandoned",
    /// Messages carrying the id of a conversation, at the conversation's start.
    ConversationMessages = "conversation_messages",
    /// Seconds from start to auto-resolution, summed over auto-resolved conversations.
    ResolutionSeconds = "resolution_seconds",
    /// Flow runs started, per flow name.
    FlowStarted = "flow_started",
    /// Flow runs started and completed, per flow name, at the start.
    FlowCompleted = "flow_completed",
    Keyword = "keyword",
    AiRequests = "ai_requests",
    AiTokens = "ai_tokens",
    /// Known cost, in millionths of a US dollar.
    AiCostMicros = "ai_cost_micros",
    /// Tokens of requests that came without a cost, per model, priced at query time.
    AiUnpricedTokens = "ai_unpriced_tokens",
    /// Outbound messages an inbound message answered, at the send time.
    Replied = "replied",
    /// Messages some status priced, per category, pricing type and country (joined).
    Priced = "priced",
    /// Campaigns per current status and id (joined), at their first event.
    CampaignStatus = "campaign_status",
    /// Per campaign id, at the send time, as their overall series count.
    CampaignSent = "campaign_sent",
    CampaignDelivered = "campaign_delivered",
    CampaignRead = "campaign_read",
    CampaignFailed = "campaign_failed",
    CampaignReplied = "campaign_replied",
    /// Per error code and campaign id (joined).
    CampaignFailedByError = "campaign_failed_by_error",
    /// Billable messages per category, country and campaign id (joined), for its cost.
    CampaignBillable = "campaign_billable",
    /// Per template (name, language and category, joined), at the send time.
    TemplateSent = "template_sent",
    TemplateDelivered = "template_delivered",
    TemplateRead = "template_read",
    TemplateFailed = "template_failed",
    TemplateReplied = "template_replied",
    /// Billable messages per category, country and template (joined), for its cost.
    TemplateBillable = "template_billable",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_forms_round_trip_and_keep_their_values() {
        for s in Series::ALL {
            assert_eq!(Series::from_name(s.as_str()), Some(*s));
        }
        assert_eq!(Series::ByType.as_str(), "by_type");
        assert_eq!(Series::from_name("nope"), None);
        assert_eq!(
            Tier::ALL.map(Tier::code),
            [0, 1, 2],
            "stored tier numbers are fixed"
        );
        assert_eq!(Tier::from_code(3), None);
        assert_eq!(EntityKind::ALL.map(EntityKind::code), [1, 2, 3, 4, 5, 6, 7]);
        for k in EntityKind::ALL {
            assert_eq!(EntityKind::from_code(i64::from(k.code())), Some(k));
        }
        assert_eq!(EntityKind::from_code(0), None);
    }
}
