//! Campaigns, templates and what messages cost: answers read from the same rollups as the
//! others, with Meta's spend priced at query time from the rate card.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::event::{CampaignStatus, PricingType};
use super::metrics::{
    AnsweredRange, FailureReason, Granularity, RangeParams, Totals, Window, answered_range, rate,
    reasons, round_to,
};
use super::rates::money;
use super::state::{DIM_SEPARATOR, Series, join_dim, series, split_dim};
use super::{Analytics, EngineError, Org};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignsAnswer {
    /// Campaigns with messages sent in the range, most sent first.
    pub campaigns: Vec<CampaignFigures>,
    /// The currency of every `estimated_cost` (the rate card's).
    pub currency: String,
    pub range: AnsweredRange,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CampaignFigures {
    pub campaign_id: String,
    /// The campaign's latest status from its campaign events, or `unknown` without any.
    pub status: String,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    pub replied: i64,
    pub delivery_rate: f64,
    pub read_rate: f64,
    /// Replied over delivered, as a percentage.
    pub reply_rate: f64,
    pub estimated_cost: f64,
    pub by_error: Vec<FailureReason>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplatesAnswer {
    /// Templates with messages sent in the range, most sent first.
    pub templates: Vec<TemplateFigures>,
    /// Only with `template`: that template's figures per bucket (all its languages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TemplateTimelineEntry>>,
    pub currency: String,
    pub range: AnsweredRange,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateFigures {
    pub template_name: String,
    /// "" when the messages did not say.
    pub template_language: String,
    /// marketing, utility, authentication, service, or "" when the messages did not say.
    pub category: String,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    pub replied: i64,
    pub delivery_rate: f64,
    pub read_rate: f64,
    pub reply_rate: f64,
    pub estimated_cost: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TemplateTimelineEntry {
    pub date: String,
    pub sent: i64,
    pub delivered: i64,
    pub read: i64,
    pub failed: i64,
    pub replied: i64,
    pub estimated_cost: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CostsAnswer {
    pub summary: CostSummary,
    /// Priced messages per pricing category and type, most first.
    pub by_category: Vec<CategoryCost>,
    /// Priced messages per recipient country, costliest first.
    pub by_country: Vec<CountryCost>,
    pub timeline: Vec<CostTimelineEntry>,
    pub range: AnsweredRange,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CostSummary {
    /// Messages priced `regular`.
    pub billable_messages: i64,
    /// Messages priced `free_customer_service` or `free_entry_point`.
    pub free_messages: i64,
    /// Billable messages the rate card has no price for (counted at 0).
    pub unpriced_messages: i64,
    /// Meta's charges by the rate card, in `currency`.
    pub estimated_cost: f64,
    pub currency: String,
    /// The chatbot's AI cost (as in the chatbot answer, US dollars).
    pub ai_cost: f64,
    pub total_cost: f64,
    /// Estimated cost over delivered outbound messages.
    pub cost_per_delivered: f64,
    pub cost_per_read: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryCost {
    pub category: String,
    /// regular, free_customer_service or free_entry_point.
    pub pricing_type: String,
    pub messages: i64,
    pub estimated_cost: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CountryCost {
    /// ISO 3166 alpha-2, or `unknown`.
    pub country: String,
    pub billable_messages: i64,
    pub free_messages: i64,
    pub estimated_cost: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CostTimelineEntry {
    pub date: String,
    pub billable_messages: i64,
    pub free_messages: i64,
    pub estimated_cost: f64,
    pub ai_cost: f64,
    pub total_cost: f64,
}

/// The series each answer reads.
const CAMPAIGN_SERIES: &[Series] = &[
    series::CAMPAIGN_SENT,
    series::CAMPAIGN_DELIVERED,
    series::CAMPAIGN_READ,
    series::CAMPAIGN_FAILED,
    series::CAMPAIGN_REPLIED,
    series::CAMPAIGN_FAILED_BY_ERROR,
    series::CAMPAIGN_BILLABLE,
];
const TEMPLATE_SERIES: &[Series] = &[
    series::TEMPLATE_SENT,
    series::TEMPLATE_DELIVERED,
    series::TEMPLATE_READ,
    series::TEMPLATE_FAILED,
    series::TEMPLATE_REPLIED,
    series::TEMPLATE_BILLABLE,
];
const COST_SERIES: &[Series] = &[
    series::PRICED,
    series::DELIVERED,
    series::READ,
    series::AI_COST_MICROS,
    series::AI_UNPRICED_TOKENS,
];

/// A part of a range with its counts and Meta's spend per key (a campaign, a template,
/// a category-type-country), in millionths.
#[derive(Default)]
struct Priced {
    totals: Totals,
    cost: FxHashMap<String, i64>,
    unpriced: i64,
}

impl Priced {
    fn cost_of(&self, key: &str) -> f64 {
        money(self.cost.get(key).copied().unwrap_or(0))
    }

    fn merge(&mut self, other: &Priced) {
        self.totals.merge(&other.totals);
        for (k, v) in &other.cost {
            *self.cost.entry(k.clone()).or_default() += v;
        }
        self.unpriced += other.unpriced;
    }
}

/// Reads a billable dimension: its category, country and the key its cost counts under;
/// `None` for a dimension that costs nothing.
type BillableKey = fn(&[&str]) -> Option<(String, String, String)>;

fn campaign_key(parts: &[&str]) -> Option<(String, String, String)> {
    match parts {
        [cat, country, campaign] => {
            Some((cat.to_string(), country.to_string(), campaign.to_string()))
        }
        _ => None,
    }
}

fn template_key(parts: &[&str]) -> Option<(String, String, String)> {
    match parts {
        [cat, country, template @ ..] if template.len() == 3 => {
            Some((cat.to_string(), country.to_string(), join_dim(template)))
        }
        _ => None,
    }
}

/// A priced dimension (category, type, country) costs only when billable; its cost counts
/// under the whole dimension.
fn priced_key(parts: &[&str]) -> Option<(String, String, String)> {
    match parts {
        [cat, kind, country] if PricingType::parse(kind).is_some_and(PricingType::billable) => {
            Some((cat.to_string(), country.to_string(), join_dim(parts)))
        }
        _ => None,
    }
}

fn funnel_rates(sent: i64, delivered: i64, read: i64, replied: i64) -> (f64, f64, f64) {
    (
        rate(delivered, sent),
        rate(read, delivered),
        rate(replied, delivered),
    )
}

impl Analytics {
    /// Sums `wanted` over each part and prices `billable` per the rate card in effect. A
    /// part is split where prices change (always at the start of a month of the
    /// organization's calendar, so every piece is priced by one card).
    async fn priced(
        &self,
        org: &Org,
        account: Option<&str>,
        parts: &[(i64, i64)],
        wanted: &[Series],
        billable: Series,
        key: BillableKey,
    ) -> Result<Vec<Priced>, EngineError> {
        let card = &self.config.rate_card;
        let changes: Vec<i64> = card
            .changes()
            .into_iter()
            .filter_map(|d| org.calendar.start_of(d).map(|z| z.timestamp().as_second()))
            .collect();
        let mut pieces = Vec::new();
        let mut owner = Vec::new();
        for (i, (start, end)) in parts.iter().enumerate() {
            let mut from = *start;
            for cut in changes.iter().filter(|c| **c > *start && **c < *end) {
                pieces.push((from, *cut));
                owner.push(i);
                from = *cut;
            }
            pieces.push((from, *end));
            owner.push(i);
        }
        let sums = self.totals(org, account, &pieces, wanted).await?;
        let mut out: Vec<Priced> = (0..parts.len()).map(|_| Priced::default()).collect();
        for ((piece, totals), i) in pieces.iter().zip(sums).zip(owner) {
            let ts = jiff::Timestamp::from_second(piece.0)
                .map_err(|_| EngineError::Internal("calendar arithmetic failed".into()))?;
            let day = org.calendar.zoned(ts).date();
            let part = &mut out[i];
            for (dim, count) in totals.by_dim(billable) {
                let Some((cat, country, k)) = key(&split_dim(dim)) else {
                    continue;
                };
                match card.price_micros(&cat, &country, day) {
                    Some(p) => {
                        let cost = part.cost.entry(k).or_default();
                        *cost = cost.saturating_add(p.saturating_mul(count));
                    }
                    None => part.unpriced += count,
                }
            }
            part.totals.merge(&totals);
        }
        Ok(out)
    }

    pub async fn campaigns(
        &self,
        org: &Org,
        p: &RangeParams,
    ) -> Result<CampaignsAnswer, EngineError> {
        let w = self.window(org, p)?;
        self.check_account(org, p.account_id.as_deref()).await?;
        let account = p.account_id.as_deref();
        let priced = self
            .priced(
                org,
                account,
                &[(w.start, w.end)],
                CAMPAIGN_SERIES,
                series::CAMPAIGN_BILLABLE,
                campaign_key,
            )
            .await?;
        let part = priced.into_iter().next().unwrap_or_default();
        let t = &part.totals;
        let dims = |s: Series| -> FxHashMap<&str, i64> { t.by_dim(s).collect() };
        let (delivered, read, failed, replied) = (
            dims(series::CAMPAIGN_DELIVERED),
            dims(series::CAMPAIGN_READ),
            dims(series::CAMPAIGN_FAILED),
            dims(series::CAMPAIGN_REPLIED),
        );
        let mut errors: FxHashMap<&str, Vec<(&str, i64)>> = FxHashMap::default();
        for (dim, count) in t.by_dim(series::CAMPAIGN_FAILED_BY_ERROR) {
            if let Some((code, campaign)) = dim.split_once(DIM_SEPARATOR) {
                errors.entry(campaign).or_default().push((code, count));
            }
        }
        // The current status of each campaign: one per campaign summed over all time;
        // a campaign id in several accounts shows the furthest along.
        let mut status: FxHashMap<String, CampaignStatus> = FxHashMap::default();
        let states = self
            .all_time(org, account, &[series::CAMPAIGN_STATUS])
            .await?;
        for (dim, count) in states.by_dim(series::CAMPAIGN_STATUS) {
            let Some((word, campaign)) = dim.split_once(DIM_SEPARATOR) else {
                continue;
            };
            let Some(s) = CampaignStatus::ALL.into_iter().find(|s| s.as_str() == word) else {
                continue;
            };
            if count > 0 {
                let e = status.entry(campaign.to_string()).or_insert(s);
                *e = (*e).max(s);
            }
        }
        let get = |m: &FxHashMap<&str, i64>, k: &str| m.get(k).copied().unwrap_or(0);
        let mut campaigns: Vec<CampaignFigures> = t
            .by_dim(series::CAMPAIGN_SENT)
            .map(|(id, sent)| {
                let (d, r, f, y) = (
                    get(&delivered, id),
                    get(&read, id),
                    get(&failed, id),
                    get(&replied, id),
                );
                let (delivery_rate, read_rate, reply_rate) = funnel_rates(sent, d, r, y);
                CampaignFigures {
                    campaign_id: id.to_string(),
                    status: status.get(id).map_or("unknown", |s| s.as_str()).to_string(),
                    sent,
                    delivered: d,
                    read: r,
                    failed: f,
                    replied: y,
                    delivery_rate,
                    read_rate,
                    reply_rate,
                    estimated_cost: part.cost_of(id),
                    by_error: reasons(errors.remove(id).unwrap_or_default().into_iter()),
                }
            })
            .collect();
        campaigns.sort_by(|a, b| {
            b.sent
                .cmp(&a.sent)
                .then_with(|| a.campaign_id.cmp(&b.campaign_id))
        });
        Ok(CampaignsAnswer {
            campaigns,
            currency: self.config.rate_card.currency.clone(),
            range: answered_range(&w),
        })
    }

    pub async fn templates(
        &self,
        org: &Org,
        p: &RangeParams,
        template: Option<&str>,
        granularity: Granularity,
    ) -> Result<TemplatesAnswer, EngineError> {
        let w = self.window(org, p)?;
        self.check_account(org, p.account_id.as_deref()).await?;
        let account = p.account_id.as_deref();
        let (part, timeline) = match template {
            None => {
                let priced = self
                    .priced(
                        org,
                        account,
                        &[(w.start, w.end)],
                        TEMPLATE_SERIES,
                        series::TEMPLATE_BILLABLE,
                        template_key,
                    )
                    .await?;
                (priced.into_iter().next().unwrap_or_default(), None)
            }
            Some(name) => {
                let (all, timeline) = self
                    .template_timeline(org, account, &w, name, granularity)
                    .await?;
                (all, Some(timeline))
            }
        };
        let t = &part.totals;
        let dims = |s: Series| -> FxHashMap<&str, i64> { t.by_dim(s).collect() };
        let (delivered, read, failed, replied) = (
            dims(series::TEMPLATE_DELIVERED),
            dims(series::TEMPLATE_READ),
            dims(series::TEMPLATE_FAILED),
            dims(series::TEMPLATE_REPLIED),
        );
        let get = |m: &FxHashMap<&str, i64>, k: &str| m.get(k).copied().unwrap_or(0);
        let mut templates: Vec<TemplateFigures> = t
            .by_dim(series::TEMPLATE_SENT)
            .filter_map(|(dim, sent)| {
                let [name, language, category] = split_dim(dim)[..] else {
                    return None;
                };
                let (d, r, f, y) = (
                    get(&delivered, dim),
                    get(&read, dim),
                    get(&failed, dim),
                    get(&replied, dim),
                );
                let (delivery_rate, read_rate, reply_rate) = funnel_rates(sent, d, r, y);
                Some(TemplateFigures {
                    template_name: name.to_string(),
                    template_language: language.to_string(),
                    category: category.to_string(),
                    sent,
                    delivered: d,
                    read: r,
                    failed: f,
                    replied: y,
                    delivery_rate,
                    read_rate,
                    reply_rate,
                    estimated_cost: part.cost_of(dim),
                })
            })
            .collect();
        templates.sort_by(|a, b| {
            b.sent.cmp(&a.sent).then_with(|| {
                (&a.template_name, &a.template_language, &a.category).cmp(&(
                    &b.template_name,
                    &b.template_language,
                    &b.category,
                ))
            })
        });
        Ok(TemplatesAnswer {
            templates,
            timeline,
            currency: self.config.rate_card.currency.clone(),
            range: answered_range(&w),
        })
    }

    /// One template's figures per bucket; the list beside it holds that template only.
    async fn template_timeline(
        &self,
        org: &Org,
        account: Option<&str>,
        w: &Window,
        name: &str,
        granularity: Granularity,
    ) -> Result<(Priced, Vec<TemplateTimelineEntry>), EngineError> {
        let buckets = self.timeline(org, w, granularity)?;
        let parts: Vec<(i64, i64)> = buckets.iter().map(|b| (b.start, b.end)).collect();
        let priced = self
            .priced(
                org,
                account,
                &parts,
                TEMPLATE_SERIES,
                series::TEMPLATE_BILLABLE,
                template_key,
            )
            .await?;
        let mut all = Priced::default();
        let mut timeline = Vec::with_capacity(buckets.len());
        for (b, part) in buckets.into_iter().zip(priced) {
            // Only this template's dimensions, whatever their language or category.
            let mut mine = Priced::default();
            for s in TEMPLATE_SERIES {
                for (dim, v) in part.totals.by_dim(*s) {
                    let template_part = if *s == series::TEMPLATE_BILLABLE {
                        split_dim(dim).get(2).copied()
                    } else {
                        split_dim(dim).first().copied()
                    };
                    if template_part == Some(name) {
                        mine.totals.add(*s, dim, v);
                    }
                }
            }
            for (k, v) in &part.cost {
                if split_dim(k).first() == Some(&name) {
                    mine.cost.insert(k.clone(), *v);
                }
            }
            let sum = |s: Series| mine.totals.by_dim(s).map(|(_, v)| v).sum::<i64>();
            timeline.push(TemplateTimelineEntry {
                date: b.label,
                sent: sum(series::TEMPLATE_SENT),
                delivered: sum(series::TEMPLATE_DELIVERED),
                read: sum(series::TEMPLATE_READ),
                failed: sum(series::TEMPLATE_FAILED),
                replied: sum(series::TEMPLATE_REPLIED),
                estimated_cost: money(mine.cost.values().sum()),
            });
            all.merge(&mine);
        }
        Ok((all, timeline))
    }

    pub async fn costs(
        &self,
        org: &Org,
        p: &RangeParams,
        granularity: Granularity,
    ) -> Result<CostsAnswer, EngineError> {
        let w = self.window(org, p)?;
        self.check_account(org, p.account_id.as_deref()).await?;
        let account = p.account_id.as_deref();
        let buckets = self.timeline(org, &w, granularity)?;
        let parts: Vec<(i64, i64)> = buckets.iter().map(|b| (b.start, b.end)).collect();
        let priced = self
            .priced(
                org,
                account,
                &parts,
                COST_SERIES,
                series::PRICED,
                priced_key,
            )
            .await?;
        let split = |t: &Totals| {
            let (mut billable, mut free) = (0, 0);
            for (dim, v) in t.by_dim(series::PRICED) {
                match split_dim(dim).get(1).and_then(|k| PricingType::parse(k)) {
                    Some(k) if k.billable() => billable += v,
                    Some(_) => free += v,
                    None => {}
                }
            }
            (billable, free)
        };
        let mut all = Priced::default();
        let mut timeline = Vec::with_capacity(buckets.len());
        for (b, part) in buckets.into_iter().zip(&priced) {
            let (billable, free) = split(&part.totals);
            let spend = money(part.cost.values().sum());
            let ai = round_to(self.ai_cost(&part.totals), 4);
            timeline.push(CostTimelineEntry {
                date: b.label,
                billable_messages: billable,
                free_messages: free,
                estimated_cost: spend,
                ai_cost: ai,
                total_cost: round_to(spend + ai, 4),
            });
            all.merge(part);
        }
        let t = &all.totals;
        let (billable, free) = split(t);
        let spend_micros: i64 = all.cost.values().sum();
        let spend = money(spend_micros);
        let ai = round_to(self.ai_cost(t), 4);
        let per = |n: i64| {
            if n == 0 {
                0.0
            } else {
                round_to(spend_micros as f64 / 1e6 / n as f64, 4)
            }
        };
        let mut by_category: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        let mut by_country: BTreeMap<String, (i64, i64, i64)> = BTreeMap::new();
        for (dim, v) in t.by_dim(series::PRICED) {
            let [cat, kind, country] = split_dim(dim)[..] else {
                continue;
            };
            let cost = all.cost.get(dim).copied().unwrap_or(0);
            let c = by_category
                .entry((cat.to_string(), kind.to_string()))
                .or_default();
            c.0 += v;
            c.1 += cost;
            let k = by_country.entry(country.to_string()).or_default();
            if PricingType::parse(kind).is_some_and(PricingType::billable) {
                k.0 += v;
            } else {
                k.1 += v;
            }
            k.2 += cost;
        }
        let mut by_category: Vec<CategoryCost> = by_category
            .into_iter()
            .map(
                |((category, pricing_type), (messages, cost))| CategoryCost {
                    category,
                    pricing_type,
                    messages,
                    estimated_cost: money(cost),
                },
            )
            .collect();
        by_category.sort_by_key(|c| std::cmp::Reverse(c.messages));
        // Costliest first by the exact millionths (rounded amounts may tie), then by messages.
        let mut by_country: Vec<(String, (i64, i64, i64))> = by_country.into_iter().collect();
        by_country
            .sort_by_key(|(_, (b, f, cost))| (std::cmp::Reverse(*cost), std::cmp::Reverse(b + f)));
        let by_country: Vec<CountryCost> = by_country
            .into_iter()
            .map(|(country, (billable, free, cost))| CountryCost {
                country,
                billable_messages: billable,
                free_messages: free,
                estimated_cost: money(cost),
            })
            .collect();

        Ok(CostsAnswer {
            summary: CostSummary {
                billable_messages: billable,
                free_messages: free,
                unpriced_messages: all.unpriced,
                estimated_cost: spend,
                currency: self.config.rate_card.currency.clone(),
                ai_cost: ai,
                total_cost: round_to(spend + ai, 4),
                cost_per_delivered: per(t.get(series::DELIVERED)),
                cost_per_read: per(t.get(series::READ)),
            },
            by_category,
            by_country,
            timeline,
            range: answered_range(&w),
        })
    }
}
