//! The three analytics answers, computed from rollups only.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashMap;

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use serde::Serialize;
use serde_json::Value;

use super::compare::{self, Compare};
use super::plan::{TierBounds, cover};
use super::state::{Series, series};
use super::time::{Bucket, Calendar, Tier, local_rfc3339};
use super::{Analytics, EngineError, Org};
use crate::store::{ALL_ACCOUNTS, CounterQuery, CounterRow};

/// Sums of counters by series and dimension ("" when a series has none).
#[derive(Debug, Default, Clone)]
pub struct Totals(FxHashMap<Series, FxHashMap<String, i64>>);

impl Totals {
    pub fn get(&self, series: Series) -> i64 {
        self.0
            .get(&series)
            .and_then(|d| d.get(""))
            .copied()
            .unwrap_or(0)
    }

    pub fn by_dim(&self, series: Series) -> impl Iterator<Item = (&str, i64)> {
        self.0
            .get(&series)
            .into_iter()
            .flatten()
            .map(|(d, v)| (d.as_str(), *v))
            .filter(|(_, v)| *v != 0)
    }

    pub(crate) fn add(&mut self, series: Series, dim: &str, value: i64) {
        let dims = self.0.entry(series).or_default();
        // Most rows add to a dimension already there: look up before allocating a key.
        match dims.get_mut(dim) {
            Some(v) => *v += value,
            None => {
                dims.insert(dim.to_string(), value);
            }
        }
    }

    fn subtract(&mut self, other: &Totals) {
        for (s, dims) in &other.0 {
            for (d, v) in dims {
                self.add(*s, d, -*v);
            }
        }
    }

    pub(crate) fn merge(&mut self, other: &Totals) {
        for (s, dims) in &other.0 {
            for (d, v) in dims {
                self.add(*s, d, *v);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Hour,
    Day,
    Week,
    Month,
}

impl Granularity {
    pub const NAMES: &'static str = "hour, day, week, month";

    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hour => "hour",
            Granularity::Day => "day",
            Granularity::Week => "week",
            Granularity::Month => "month",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Today,
    Week,
    Month,
    Year,
}

impl Period {
    pub const NAMES: &'static str = "today, week, month, year";
}

/// Which end of a range a value was given for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    Start,
    End,
}

/// Why a range query is refused, in the domain's terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("unknown time zone `{0}`")]
    UnknownTimeZone(String),
    #[error("`{value}` is neither a date nor an RFC 3339 instant")]
    InvalidBound { bound: Bound, value: String },
    #[error("the start of the range is not before its end")]
    Empty,
    /// The range, the 30 days before its end when it has no start, or a bucket of its
    /// timeline reaches past the years dates can hold (-9999 to 9999).
    #[error("the range reaches beyond the years -9999 to 9999")]
    BeyondCalendar,
    /// The stored tiers cannot serve the range exactly; the message says what they can.
    #[error("{0}")]
    NotServable(String),
    #[error("the range holds more than {limit} {} buckets", granularity.as_str())]
    TooManyBuckets {
        limit: usize,
        granularity: Granularity,
    },
    /// An hourly timeline starting off the hour, at this local instant.
    #[error("an hourly timeline must start on the hour, not at {0}")]
    NotOnTheHour(String),
}

/// A range request as the API receives it, before it is resolved against a calendar.
#[derive(Debug, Clone, Default)]
pub struct RangeParams {
    pub account_id: Option<String>,
    pub start_date: Option<String>,
    pub end_date: Option<String>,
    pub tz: Option<String>,
}

/// Timeline buckets beyond this are refused: nobody reads more, and it bounds the work.
const MAX_TIMELINE_BUCKETS: usize = 10_000;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagesAnswer {
    pub summary: MessageSummary,
    pub by_type: BTreeMap<String, i64>,
    pub timeline: Vec<TimelineEntry>,
    /// The range's failed messages per error code, most first.
    pub by_error: Vec<FailureReason>,
    pub range: AnsweredRange,
    /// Only with `compare=previous`: the same answer for the previous period, or `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<MessagesAnswer>, no_recursion)]
    pub previous: Option<Option<Box<MessagesAnswer>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub change: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_unavailable: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageSummary {
    pub total_sent: i64,
    pub total_received: i64,
    pub total_delivered: i64,
    pub total_read: i64,
    pub total_failed: i64,
    pub delivery_rate: f64,
    pub read_rate: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub date: String,
    pub sent: i64,
    pub received: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatbotAnswer {
    pub summary: ChatbotSummary,
    pub by_flow: Vec<FlowFigures>,
    pub top_keywords: Vec<KeywordCount>,
    pub ai_usage: AiUsage,
    /// Only with `granularity`: one entry per bucket, as in the messages timeline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<ChatbotTimelineEntry>>,
    pub range: AnsweredRange,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<ChatbotAnswer>, no_recursion)]
    pub previous: Option<Option<Box<ChatbotAnswer>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub change: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_unavailable: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatbotTimelineEntry {
    pub date: String,
    pub conversations: i64,
    pub auto_resolved: i64,
    pub transferred: i64,
    pub abandoned: i64,
    pub flows_started: i64,
    pub flows_completed: i64,
    pub keyword_hits: i64,
    pub ai_requests: i64,
    pub ai_tokens: i64,
    pub ai_cost: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatbotSummary {
    pub total_conversations: i64,
    pub auto_resolved: i64,
    pub transferred_to_agent: i64,
    pub abandoned: i64,
    pub resolution_rate: f64,
    pub avg_messages_per_conversation: f64,
    pub avg_resolution_time_seconds: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FlowFigures {
    pub flow_name: String,
    pub conversations: i64,
    pub completed: i64,
    pub completion_rate: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeywordCount {
    pub keyword: String,
    pub count: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AiUsage {
    pub total_requests: i64,
    pub total_tokens: i64,
    pub avg_tokens_per_request: i64,
    pub estimated_cost: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardAnswer {
    pub contacts: DashboardContacts,
    pub messages: DashboardMessages,
    pub campaigns: DashboardCampaigns,
    pub chatbot: DashboardChatbot,
    pub range: AnsweredRange,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<DashboardAnswer>, no_recursion)]
    pub previous: Option<Option<Box<DashboardAnswer>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub change: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_unavailable: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardContacts {
    pub total: i64,
    pub new_today: i64,
    pub new_this_week: i64,
    pub growth_percent: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardMessages {
    pub total: i64,
    pub sent: i64,
    pub received: i64,
    pub today: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardCampaigns {
    pub total: i64,
    pub active: i64,
    pub completed_this_month: i64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DashboardChatbot {
    pub conversations_today: i64,
    pub auto_resolved: i64,
    pub transferred_to_agent: i64,
    pub resolution_rate: f64,
}

/// A percentage rounded to one decimal; 0.0 when the denominator is 0.
pub fn rate(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round_to(part as f64 * 100.0 / whole as f64, 1)
    }
}

pub(crate) fn round_to(x: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (x * f).round() / f
}

fn ratio_whole(part: i64, whole: i64) -> i64 {
    if whole == 0 {
        0
    } else {
        (part as f64 / whole as f64).round() as i64
    }
}

const MESSAGE_SERIES: &[Series] = &[
    series::SENT,
    series::RECEIVED,
    series::DELIVERED,
    series::READ,
    series::FAILED,
    series::BY_TYPE,
    series::FAILED_BY_ERROR,
];
const CHATBOT_SERIES: &[Series] = &[
    series::CONVERSATIONS,
    series::AUTO_RESOLVED,
    series::TRANSFERRED,
    series::ABANDONED,
    series::CONVERSATION_MESSAGES,
    series::RESOLUTION_SECONDS,
    series::FLOW_STARTED,
    series::FLOW_COMPLETED,
    series::KEYWORD,
    series::AI_REQUESTS,
    series::AI_TOKENS,
    series::AI_COST_MICROS,
    series::AI_UNPRICED_TOKENS,
];

/// A resolved query window: `[start, end)` in Unix seconds, with the calendar it is read in.
#[derive(Clone)]
pub(crate) struct Window {
    pub(crate) start: i64,
    pub(crate) end: i64,
    pub(crate) view: Calendar,
}

impl Analytics {
    fn view_calendar(&self, org: &Org, tz: Option<&str>) -> Result<Calendar, EngineError> {
        match tz {
            None => Ok(org.calendar.clone()),
            Some(name) => jiff::tz::TimeZone::get(name)
                .map(Calendar::new)
                .map_err(|_| RangeError::UnknownTimeZone(name.to_string()).into()),
        }
    }

    pub(crate) fn window(&self, org: &Org, p: &RangeParams) -> Result<Window, EngineError> {
        let view = self.view_calendar(org, p.tz.as_deref())?;
        resolve_window(view, self.now_ts(), p)
    }

    pub(crate) async fn check_account(
        &self,
        org: &Org,
        account: Option<&str>,
    ) -> Result<(), EngineError> {
        // An account outside the credential's limit is as unknown as one never seen.
        if let Some(a) = account
            && (!org.may_use(a) || !self.store.account_exists(&org.id, a).await?)
        {
            return Err(EngineError::UnknownAccount(format!(
                "account `{a}` is not known to this organization"
            )));
        }
        Ok(())
    }

    /// Sums the given series over each of `parts`, each a range `[start, end)`.
    pub(crate) async fn totals(
        &self,
        org: &Org,
        account: Option<&str>,
        parts: &[(i64, i64)],
        wanted: &[Series],
    ) -> Result<Vec<Totals>, EngineError> {
        let bounds = self.tier_bounds(org);
        let mut covers: Vec<Vec<Bucket>> = Vec::with_capacity(parts.len());
        for (start, end) in parts {
            covers.push(
                cover(&org.calendar, *start, *end, &bounds)
                    .map_err(|u| self.refusal(org, &bounds, u.at))?,
            );
        }
        // Which parts each bucket counts towards: rows are summed straight into them.
        let mut owners: FxHashMap<Bucket, Vec<usize>> = FxHashMap::default();
        for (part, buckets) in covers.iter().enumerate() {
            for b in buckets {
                owners.entry(*b).or_default().push(part);
            }
        }
        let mut sums = vec![Totals::default(); parts.len()];
        for tier in Tier::ALL {
            let keys = covers
                .iter()
                .flatten()
                .filter(|b| b.tier == tier)
                .map(|b| b.key);
            let (Some(from), Some(to)) = (keys.clone().min(), keys.max()) else {
                continue;
            };
            for r in self.rows(org, account, tier, from, to, wanted).await? {
                let bucket = Bucket {
                    tier,
                    key: r.bucket,
                };
                // The fetched range may hold buckets no part covers (other tiers serve them).
                for part in owners.get(&bucket).into_iter().flatten() {
                    sums[*part].add(r.series, &r.dim, r.value);
                }
            }
        }
        Ok(sums)
    }

    /// The timeline's buckets. A range too long to list may also be one the tiers cannot
    /// serve: saying what can be served helps more than saying it is long, so every
    /// timeline refuses it alike.
    pub(crate) fn timeline(
        &self,
        org: &Org,
        w: &Window,
        granularity: Granularity,
    ) -> Result<Vec<TimelineBucket>, EngineError> {
        match timeline_buckets(w, granularity) {
            Err(too_long @ EngineError::Range(RangeError::TooManyBuckets { .. })) => {
                let bounds = self.tier_bounds(org);
                let first = (w.start, w.end.min(w.start.saturating_add(3600)));
                Err(match cover(&org.calendar, first.0, first.1, &bounds) {
                    Err(u) => self.refusal(org, &bounds, u.at),
                    Ok(_) => too_long,
                })
            }
            other => other,
        }
    }

    fn refusal(&self, org: &Org, bounds: &TierBounds, at: i64) -> EngineError {
        let show = |s: i64| {
            Timestamp::from_second(s)
                .map_or_else(|_| s.to_string(), |t| local_rfc3339(&org.calendar.zoned(t)))
        };
        let mut msg = format!(
            "this range cannot be served exactly from {}: figures are kept in {} local time",
            show(at),
            org.timezone
        );
        if bounds.hour > i64::MIN {
            msg.push_str(&format!("; hourly from {}", show(bounds.hour)));
        } else {
            msg.push_str("; hourly");
        }
        if bounds.day > i64::MIN {
            msg.push_str(&format!(", daily from {}", show(bounds.day)));
        } else {
            msg.push_str(", daily");
        }
        msg.push_str(
            " and monthly for whole months; use boundaries on those buckets (dates, or instants on the hour) and a granularity they can serve",
        );
        RangeError::NotServable(msg).into()
    }

    pub async fn messages(
        &self,
        org: &Org,
        p: &RangeParams,
        granularity: Granularity,
    ) -> Result<MessagesAnswer, EngineError> {
        self.messages_compared(org, p, granularity, Compare::None)
            .await
    }

    /// The messages answer, with the previous period beside it when `compare` asks.
    pub async fn messages_compared(
        &self,
        org: &Org,
        p: &RangeParams,
        granularity: Granularity,
        compare: Compare,
    ) -> Result<MessagesAnswer, EngineError> {
        let w = self.window(org, p)?;
        self.check_account(org, p.account_id.as_deref()).await?;
        let account = p.account_id.as_deref();
        let mut answer = self.messages_in(org, account, &w, granularity).await?;
        if compare == Compare::Previous {
            let previous = match compare::previous_window(&w) {
                Some(pw) => self.messages_in(org, account, &pw, granularity).await,
                None => Err(compare::no_previous()),
            };
            let (previous, change, why) =
                compare::outcome(previous, &answer.summary, |a| &a.summary)?;
            answer.previous = Some(previous);
            answer.change = Some(change);
            answer.previous_unavailable = why;
        }
        Ok(answer)
    }

    async fn messages_in(
        &self,
        org: &Org,
        account: Option<&str>,
        w: &Window,
        granularity: Granularity,
    ) -> Result<MessagesAnswer, EngineError> {
        let buckets = self.timeline(org, w, granularity)?;
        let parts: Vec<(i64, i64)> = buckets.iter().map(|b| (b.start, b.end)).collect();
        let totals = self.totals(org, account, &parts, MESSAGE_SERIES).await?;
        let mut all = Totals::default();
        let mut timeline = Vec::with_capacity(buckets.len());
        for (b, t) in buckets.into_iter().zip(&totals) {
            all.merge(t);
            timeline.push(TimelineEntry {
                date: b.label,
                sent: t.get(series::SENT),
                received: t.get(series::RECEIVED),
                delivered: t.get(series::DELIVERED),
                read: t.get(series::READ),
                failed: t.get(series::FAILED),
            });
        }
        let (sent, delivered, read) = (
            all.get(series::SENT),
            all.get(series::DELIVERED),
            all.get(series::READ),
        );
        Ok(MessagesAnswer {
            summary: MessageSummary {
                total_sent: sent,
                total_received: all.get(series::RECEIVED),
                total_delivered: delivered,
                total_read: read,
                total_failed: all.get(series::FAILED),
                delivery_rate: rate(delivered, sent),
                read_rate: rate(read, delivered),
            },
            by_type: all
                .by_dim(series::BY_TYPE)
                .map(|(d, v)| (d.to_string(), v))
                .collect(),
            timeline,
            by_error: failure_reasons(&all),
            range: answered_range(w),
            previous: None,
            change: None,
            previous_unavailable: None,
        })
    }

    pub async fn chatbot(
        &self,
        org: &Org,
        p: &RangeParams,
        keyword_limit: usize,
    ) -> Result<ChatbotAnswer, EngineError> {
        self.chatbot_compared(org, p, keyword_limit, None, Compare::None)
            .await
    }

    /// The chatbot answer, with a timeline when a granularity is given and the previous
    /// period beside it when `compare` asks.
    pub async fn chatbot_compared(
        &self,
        org: &Org,
        p: &RangeParams,
        keyword_limit: usize,
        granularity: Option<Granularity>,
        compare: Compare,
    ) -> Result<ChatbotAnswer, EngineError> {
        let w = self.window(org, p)?;
        self.check_account(org, p.account_id.as_deref()).await?;
        let account = p.account_id.as_deref();
        let mut answer = self
            .chatbot_in(org, account, &w, keyword_limit, granularity)
            .await?;
        if compare == Compare::Previous {
            let previous = match compare::previous_window(&w) {
                Some(pw) => {
                    self.chatbot_in(org, account, &pw, keyword_limit, granularity)
                        .await
                }
                None => Err(compare::no_previous()),
            };
            let (previous, change, why) =
                compare::outcome(previous, &answer.summary, |a| &a.summary)?;
            answer.previous = Some(previous);
            answer.change = Some(change);
            answer.previous_unavailable = why;
        }
        Ok(answer)
    }

    /// Known AI cost plus the tokens that came without one, priced per model.
    pub(crate) fn ai_cost(&self, t: &Totals) -> f64 {
        let estimated: f64 = t
            .by_dim(series::AI_UNPRICED_TOKENS)
            .map(|(model, tokens)| tokens as f64 * self.config.ai_price_per_1k(model) / 1000.0)
            .sum();
        t.get(series::AI_COST_MICROS) as f64 / 1_000_000.0 + estimated
    }

    async fn chatbot_in(
        &self,
        org: &Org,
        account: Option<&str>,
        w: &Window,
        keyword_limit: usize,
        granularity: Option<Granularity>,
    ) -> Result<ChatbotAnswer, EngineError> {
        let (t, timeline) = match granularity {
            None => {
                let t = self
                    .totals(org, account, &[(w.start, w.end)], CHATBOT_SERIES)
                    .await?;
                (t.into_iter().next().unwrap_or_default(), None)
            }
            Some(g) => {
                let buckets = self.timeline(org, w, g)?;
                let parts: Vec<(i64, i64)> = buckets.iter().map(|b| (b.start, b.end)).collect();
                let totals = self.totals(org, account, &parts, CHATBOT_SERIES).await?;
                let mut all = Totals::default();
                let mut timeline = Vec::with_capacity(buckets.len());
                for (b, t) in buckets.into_iter().zip(&totals) {
                    all.merge(t);
                    let sum = |s: Series| t.by_dim(s).map(|(_, v)| v).sum::<i64>();
                    timeline.push(ChatbotTimelineEntry {
                        date: b.label,
                        conversations: t.get(series::CONVERSATIONS),
                        auto_resolved: t.get(series::AUTO_RESOLVED),
                        transferred: t.get(series::TRANSFERRED),
                        abandoned: t.get(series::ABANDONED),
                        flows_started: sum(series::FLOW_STARTED),
                        flows_completed: sum(series::FLOW_COMPLETED),
                        keyword_hits: sum(series::KEYWORD),
                        ai_requests: t.get(series::AI_REQUESTS),
                        ai_tokens: t.get(series::AI_TOKENS),
                        ai_cost: round_to(self.ai_cost(t), 2),
                    });
                }
                (all, Some(timeline))
            }
        };
        let conversations = t.get(series::CONVERSATIONS);
        let auto_resolved = t.get(series::AUTO_RESOLVED);
        let completed: HashMap<&str, i64> = t.by_dim(series::FLOW_COMPLETED).collect();
        let mut by_flow: Vec<FlowFigures> = t
            .by_dim(series::FLOW_STARTED)
            .map(|(name, started)| {
                let done = completed.get(name).copied().unwrap_or(0);
                FlowFigures {
                    flow_name: name.to_string(),
                    conversations: started,
                    completed: done,
                    completion_rate: rate(done, started),
                }
            })
            .collect();
        by_flow.sort_by(|a, b| {
            b.conversations
                .cmp(&a.conversations)
                .then_with(|| a.flow_name.cmp(&b.flow_name))
        });
        let mut keywords: Vec<KeywordCount> = t
            .by_dim(series::KEYWORD)
            .map(|(k, c)| KeywordCount {
                keyword: k.to_string(),
                count: c,
            })
            .collect();
        keywords.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.keyword.cmp(&b.keyword))
        });
        keywords.truncate(keyword_limit);
        let requests = t.get(series::AI_REQUESTS);
        let tokens = t.get(series::AI_TOKENS);
        let cost = self.ai_cost(&t);
        Ok(ChatbotAnswer {
            summary: ChatbotSummary {
                total_conversations: conversations,
                auto_resolved,
                transferred_to_agent: t.get(series::TRANSFERRED),
                abandoned: t.get(series::ABANDONED),
                resolution_rate: rate(auto_resolved, conversations),
                avg_messages_per_conversation: if conversations == 0 {
                    0.0
                } else {
                    round_to(
                        t.get(series::CONVERSATION_MESSAGES) as f64 / conversations as f64,
                        1,
                    )
                },
                avg_resolution_time_seconds: ratio_whole(
                    t.get(series::RESOLUTION_SECONDS),
                    auto_resolved,
                ),
            },
            by_flow,
            top_keywords: keywords,
            ai_usage: AiUsage {
                total_requests: requests,
                total_tokens: tokens,
                avg_tokens_per_request: ratio_whole(tokens, requests),
                estimated_cost: round_to(cost, 2),
            },
            timeline,
            range: answered_range(w),
            previous: None,
            change: None,
            previous_unavailable: None,
        })
    }

    pub async fn dashboard(
        &self,
        org: &Org,
        account: Option<&str>,
        period: Period,
    ) -> Result<DashboardAnswer, EngineError> {
        self.dashboard_compared(org, account, period, Compare::None)
            .await
    }

    /// The dashboard, with the previous period up to the same point beside it when
    /// `compare` asks (yesterday up to the end of this hour, last week up to the same
    /// weekday and hour, and so on).
    pub async fn dashboard_compared(
        &self,
        org: &Org,
        account: Option<&str>,
        period: Period,
        compare: Compare,
    ) -> Result<DashboardAnswer, EngineError> {
        self.check_account(org, account).await?;
        let now = self.now_ts();
        let internal = || EngineError::Internal("calendar arithmetic failed".into());
        let end = org
            .calendar
            .start_of_next_day(org.calendar.zoned(now).date())
            .map(|z| z.timestamp().as_second())
            .ok_or_else(internal)?;
        let mut answer = self
            .dashboard_at(org, account, period, now, end, end)
            .await?;
        if compare == Compare::Previous {
            let previous = match compare::previous_point(&org.calendar, now, period) {
                Some((then, then_end)) => {
                    self.dashboard_at(org, account, period, then, then_end, end)
                        .await
                }
                None => Err(compare::no_previous()),
            };
            let figures = |a: &DashboardAnswer| {
                serde_json::json!({
                    "contacts": a.contacts,
                    "messages": a.messages,
                    "campaigns": a.campaigns,
                    "chatbot": a.chatbot,
                })
            };
            let current = figures(&answer);
            let (previous, change, why) = compare::outcome_of(previous, &current, figures)?;
            answer.previous = Some(previous);
            answer.change = Some(change);
            answer.previous_unavailable = why;
        }
        Ok(answer)
    }

    /// The dashboard as it read at `now`, over figures up to `end`; `latest` is the end
    /// of what is stored, so all-time figures subtract what was added in `[end, latest)`.
    async fn dashboard_at(
        &self,
        org: &Org,
        account: Option<&str>,
        period: Period,
        now: Timestamp,
        end: i64,
        latest: i64,
    ) -> Result<DashboardAnswer, EngineError> {
        let cal = &org.calendar;
        let internal = || EngineError::Internal("calendar arithmetic failed".into());
        let today = cal.zoned(now).date();
        let start = |d: Date| {
            cal.start_of(d)
                .map(|z| z.timestamp().as_second())
                .ok_or_else(internal)
        };
        let monday = today
            .checked_sub(jiff::Span::new().days(i64::from(today.weekday().to_monday_zero_offset())))
            .map_err(|_| internal())?;
        let today_start = start(today)?;
        let week_start = start(monday)?;
        let month_start = start(today.first_of_month())?;
        let year_start = start(today.first_of_year())?;
        debug_assert_eq!(Weekday::Monday.to_monday_zero_offset(), 0);
        let period_start = match period {
            Period::Today => today_start,
            Period::Week => week_start,
            Period::Month => month_start,
            Period::Year => year_start,
        };
        let wanted = &[
            series::SENT,
            series::RECEIVED,
            series::CONTACTS,
            series::CONVERSATIONS,
            series::AUTO_RESOLVED,
            series::TRANSFERRED,
            series::CAMPAIGNS_COMPLETED,
            series::CAMPAIGNS,
            series::CAMPAIGNS_RUNNING,
        ];
        let mut parts = vec![
            (period_start, end),
            (today_start, end),
            (week_start, end),
            (month_start, end),
        ];
        if end < latest {
            parts.push((end, latest));
        }
        // The period sums and the all-time sums are independent reads: run them together.
        let (t, mut all_time) = tokio::try_join!(
            self.totals(org, account, &parts, wanted),
            self.all_time(
                org,
                account,
                &[
                    series::CONTACTS,
                    series::CAMPAIGNS,
                    series::CAMPAIGNS_RUNNING
                ],
            )
        )?;
        if let Some(later) = t.get(4) {
            all_time.subtract(later);
        }
        let (in_period, in_today, in_week, in_month) = (&t[0], &t[1], &t[2], &t[3]);
        let contacts_total = all_time.get(series::CONTACTS);
        let added = in_period.get(series::CONTACTS);
        let existed = contacts_total - added;
        let (sent, received) = (in_period.get(series::SENT), in_period.get(series::RECEIVED));
        let conversations = in_period.get(series::CONVERSATIONS);
        let auto_resolved = in_period.get(series::AUTO_RESOLVED);
        Ok(DashboardAnswer {
            contacts: DashboardContacts {
                total: contacts_total,
                new_today: in_today.get(series::CONTACTS),
                new_this_week: in_week.get(series::CONTACTS),
                growth_percent: rate(added, existed),
            },
            messages: DashboardMessages {
                total: sent + received,
                sent,
                received,
                today: in_today.get(series::SENT) + in_today.get(series::RECEIVED),
            },
            campaigns: DashboardCampaigns {
                total: all_time.get(series::CAMPAIGNS),
                active: all_time.get(series::CAMPAIGNS_RUNNING),
                completed_this_month: in_month.get(series::CAMPAIGNS_COMPLETED),
            },
            chatbot: DashboardChatbot {
                conversations_today: in_today.get(series::CONVERSATIONS),
                auto_resolved,
                transferred_to_agent: in_period.get(series::TRANSFERRED),
                resolution_rate: rate(auto_resolved, conversations),
            },
            range: answered_range(&Window {
                start: period_start,
                end,
                view: cal.clone(),
            }),
            previous: None,
            change: None,
            previous_unavailable: None,
        })
    }

    /// The counter rows of one tier's bucket range: of one account, of the whole
    /// organization, or of each account a limited credential may see (whose rows then
    /// add up to their exact sum, as counters are additive).
    async fn rows(
        &self,
        org: &Org,
        account: Option<&str>,
        tier: Tier,
        from: i64,
        to: i64,
        wanted: &[Series],
    ) -> Result<Vec<CounterRow>, EngineError> {
        let query = |account: &str| CounterQuery {
            org: org.id.clone(),
            account: account.to_string(),
            tier,
            from,
            to,
            series: wanted.to_vec(),
        };
        match (account, &org.account_limit) {
            (Some(a), _) => Ok(self.store.counters(query(a)).await?),
            (None, None) => Ok(self.store.counters(query(ALL_ACCOUNTS)).await?),
            (None, Some(limit)) => {
                let mut rows = Vec::new();
                for a in limit.iter() {
                    rows.extend(self.store.counters(query(a)).await?);
                }
                Ok(rows)
            }
        }
    }

    /// Sums over all time: the monthly tier is kept forever and holds everything.
    pub(crate) async fn all_time(
        &self,
        org: &Org,
        account: Option<&str>,
        wanted: &[Series],
    ) -> Result<Totals, EngineError> {
        let rows = self
            .rows(org, account, Tier::Month, i64::MIN, i64::MAX, wanted)
            .await?;
        let mut t = Totals::default();
        for r in rows {
            t.add(r.series, &r.dim, r.value);
        }
        Ok(t)
    }
}

/// The window `p` asks for, read in `view` at `now`: from `start_date` (the 30 days up
/// to the end when absent) to `end_date` (the end of today when absent).
pub(crate) fn resolve_window(
    view: Calendar,
    now: Timestamp,
    p: &RangeParams,
) -> Result<Window, EngineError> {
    let today = view.zoned(now).date();
    let bad = |bound: Bound, v: &str| RangeError::InvalidBound {
        bound,
        value: v.to_string(),
    };
    let start_of = |d: Date| view.start_of(d).map(|z| z.timestamp().as_second());
    let after = |d: Date| view.start_of_next_day(d).map(|z| z.timestamp().as_second());
    let start = match p.start_date.as_deref() {
        Some(s) => parse_point(s, &start_of).ok_or_else(|| bad(Bound::Start, s))?,
        None => None,
    };
    let end = match p.end_date.as_deref() {
        // A date as end is inclusive: the range runs to the end of that local day.
        Some(s) => parse_point(s, &after).ok_or_else(|| bad(Bound::End, s))?,
        None => None,
    };
    let end = match end {
        Some(e) => e,
        None => after(today)
            .ok_or_else(|| EngineError::Internal("calendar arithmetic failed".into()))?,
    };
    let start = match start {
        Some(s) => s,
        None => {
            // An end near the first instant dates can hold leaves no 30 days before it.
            let beyond = || EngineError::from(RangeError::BeyondCalendar);
            let end_day = view
                .zoned(Timestamp::from_second(end - 1).map_err(|_| beyond())?)
                .date();
            let first = end_day
                .checked_sub(jiff::Span::new().days(29))
                .map_err(|_| beyond())?;
            start_of(first).ok_or_else(beyond)?
        }
    };
    if start >= end {
        return Err(RangeError::Empty.into());
    }
    Ok(Window { start, end, view })
}

/// Parses a range end point: a local date through `day`, or an RFC 3339 instant.
/// `None` means unparseable; `Some(None)` cannot happen but keeps the caller simple.
fn parse_point(s: &str, day: &dyn Fn(Date) -> Option<i64>) -> Option<Option<i64>> {
    if let Ok(d) = s.parse::<Date>()
        && s.len() == 10
    {
        return day(d).map(Some);
    }
    s.parse::<Timestamp>().ok().map(|t| Some(t.as_second()))
}

/// What an answer covers, in the calendar it was read in.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AnsweredRange {
    /// Local RFC 3339 instants; `end` is exclusive.
    pub start: String,
    pub end: String,
    pub timezone: String,
}

pub(crate) fn answered_range(w: &Window) -> AnsweredRange {
    let show = |s: i64| {
        Timestamp::from_second(s)
            .map_or_else(|_| s.to_string(), |t| local_rfc3339(&w.view.zoned(t)))
    };
    AnsweredRange {
        start: show(w.start),
        end: show(w.end),
        timezone: w.view.tz().iana_name().unwrap_or("UTC").to_string(),
    }
}

/// A code as Meta sends it: a number, or (rarely) a word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[schema(as = FailureCode)]
pub enum ErrorCode {
    Number(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FailureReason {
    /// `null` for failures that came without a code.
    pub error_code: Option<ErrorCode>,
    pub title: &'static str,
    pub count: i64,
}

/// Failed messages per error code, most first (ties by code, no code last).
fn failure_reasons(t: &Totals) -> Vec<FailureReason> {
    reasons(t.by_dim(series::FAILED_BY_ERROR))
}

/// Failure reasons from (error code, count) pairs, most first.
pub(crate) fn reasons<'a>(counts: impl Iterator<Item = (&'a str, i64)>) -> Vec<FailureReason> {
    let mut out: Vec<FailureReason> = counts
        .map(|(code, count)| FailureReason {
            error_code: match code {
                "" => None,
                c => Some(
                    c.parse::<i64>()
                        .map_or_else(|_| ErrorCode::Text(c.to_string()), ErrorCode::Number),
                ),
            },
            title: super::meta_errors::title(code),
            count,
        })
        .collect();
    let order = |c: &Option<ErrorCode>| match c {
        Some(ErrorCode::Number(n)) => (0, *n, String::new()),
        Some(ErrorCode::Text(s)) => (1, 0, s.clone()),
        None => (2, 0, String::new()),
    };
    out.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| order(&a.error_code).cmp(&order(&b.error_code)))
    });
    out
}

pub(crate) struct TimelineBucket {
    pub(crate) label: String,
    pub(crate) start: i64,
    pub(crate) end: i64,
}

pub(crate) fn timeline_buckets(
    w: &Window,
    g: Granularity,
) -> Result<Vec<TimelineBucket>, EngineError> {
    let cal = &w.view;
    // A bucket that would end past the years dates can hold (a week or a month of 9999).
    let beyond = || EngineError::from(RangeError::BeyondCalendar);
    let mut out = Vec::new();
    let mut t = w.start;
    while t < w.end {
        if out.len() >= MAX_TIMELINE_BUCKETS {
            return Err(RangeError::TooManyBuckets {
                limit: MAX_TIMELINE_BUCKETS,
                granularity: g,
            }
            .into());
        }
        let z = cal.zoned(Timestamp::from_second(t).map_err(|_| beyond())?);
        let date = z.date();
        let (label, next) = match g {
            Granularity::Hour => {
                if !cal.is_hour_start(z.timestamp()) {
                    return Err(RangeError::NotOnTheHour(local_rfc3339(&z)).into());
                }
                (local_rfc3339(&z), t + 3600)
            }
            Granularity::Day => (
                date.to_string(),
                cal.start_of_next_day(date)
                    .ok_or_else(beyond)?
                    .timestamp()
                    .as_second(),
            ),
            Granularity::Week => {
                let monday = date
                    .checked_sub(
                        jiff::Span::new().days(i64::from(date.weekday().to_monday_zero_offset())),
                    )
                    .map_err(|_| beyond())?;
                let next_monday = monday
                    .checked_add(jiff::Span::new().days(7))
                    .map_err(|_| beyond())?;
                (
                    monday.to_string(),
                    cal.start_of(next_monday)
                        .ok_or_else(beyond)?
                        .timestamp()
                        .as_second(),
                )
            }
            Granularity::Month => (
                date.strftime("%Y-%m").to_string(),
                cal.start_of_next_month(date)
                    .ok_or_else(beyond)?
                    .timestamp()
                    .as_second(),
            ),
        };
        let end = next.min(w.end);
        out.push(TimelineBucket {
            label,
            start: t,
            end,
        });
        t = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_round_to_one_decimal_and_zero_on_empty() {
        assert_eq!(rate(0, 0), 0.0);
        assert_eq!(rate(1, 3), 33.3);
        assert_eq!(rate(2, 3), 66.7);
        assert_eq!(rate(98, 100), 98.0);
        assert_eq!(ratio_whole(5, 2), 3);
    }

    fn range(start: Option<&str>, end: Option<&str>) -> RangeParams {
        RangeParams {
            start_date: start.map(str::to_string),
            end_date: end.map(str::to_string),
            ..RangeParams::default()
        }
    }

    #[test]
    fn a_range_beyond_the_calendar_is_refused_not_an_internal_error() {
        // Found by the `query` fuzz target: these answered 500.
        let view = Calendar::new(jiff::tz::TimeZone::UTC);
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().expect("now");
        // No start: the 30 days before an end near the first instant do not exist.
        for end in ["-009999-01-20T00:00:00Z", "-009999-01-05T12:00:00+01:00"] {
            let err = resolve_window(view.clone(), now, &range(None, Some(end)))
                .err()
                .expect("refused");
            assert!(
                matches!(err, EngineError::Range(RangeError::BeyondCalendar)),
                "{end}: {err:?}"
            );
        }
        // A week or a month of the timeline that would end after 9999.
        for (start, end, g) in [
            ("9999-12-01", "9999-12-02", Granularity::Month),
            (
                "9999-12-29T00:00:00Z",
                "9999-12-30T22:00:00Z",
                Granularity::Week,
            ),
            ("9999-12-30", "9999-12-30T22:00:00Z", Granularity::Day),
        ] {
            let w = resolve_window(view.clone(), now, &range(Some(start), Some(end)))
                .unwrap_or_else(|e| panic!("{start}..{end}: {e:?}"));
            let err = timeline_buckets(&w, g).err().expect("refused");
            assert!(
                matches!(err, EngineError::Range(RangeError::BeyondCalendar)),
                "{start}..{end} by {g:?}: {err:?}"
            );
        }
        // Ranges within the calendar still resolve, the default start 30 days back.
        let w = resolve_window(view.clone(), now, &range(None, Some("2025-12-31"))).expect("ok");
        assert_eq!(w.end - w.start, 30 * 86_400);
        let w =
            resolve_window(view, now, &range(Some("9999-12-01"), Some("9999-12-29"))).expect("ok");
        assert_eq!(
            timeline_buckets(&w, Granularity::Day).expect("days").len(),
            29
        );
    }

    #[test]
    fn weeks_start_on_monday_and_are_clipped_to_the_range() {
        let view = Calendar::new(jiff::tz::TimeZone::UTC);
        let start = "2024-01-03T00:00:00Z"
            .parse::<Timestamp>()
            .expect("ts")
            .as_second();
        let end = "2024-01-16T00:00:00Z"
            .parse::<Timestamp>()
            .expect("ts")
            .as_second();
        let b = timeline_buckets(&Window { start, end, view }, Granularity::Week).expect("buckets");
        let labels: Vec<_> = b.iter().map(|b| b.label.as_str()).collect();
        assert_eq!(labels, ["2024-01-01", "2024-01-08", "2024-01-15"]);
        assert_eq!(b[0].start, start);
        assert_eq!(b[2].end, end);
    }
}
