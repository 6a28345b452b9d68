//! The campaigns, templates and costs routes.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::auth::ReadKey;
use super::csv::CsvTable;
use super::error::ApiError;
use super::extract::{Params, QueryShape};
use super::{AppState, FORMAT, Format, POINT, ZONE, analytics_answer, csv_table, doc};
use crate::engine::costs::{CampaignsAnswer, CostsAnswer, TemplatesAnswer};
use crate::engine::metrics::{Granularity, RangeParams};

/// The table of `GET /api/analytics/campaigns` that `format=csv` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CampaignsTable {
    Campaigns,
}

/// The tables of `GET /api/analytics/templates` that `format=csv` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TemplatesTable {
    Templates,
    Timeline,
}

/// The tables of `GET /api/analytics/costs` that `format=csv` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CostsTable {
    Timeline,
    ByCategory,
    ByCountry,
}

impl From<CampaignsTable> for CsvTable {
    fn from(_: CampaignsTable) -> Self {
        CsvTable::Campaigns
    }
}

impl From<TemplatesTable> for CsvTable {
    fn from(t: TemplatesTable) -> Self {
        match t {
            TemplatesTable::Templates => CsvTable::Templates,
            TemplatesTable::Timeline => CsvTable::TemplateTimeline,
        }
    }
}

impl From<CostsTable> for CsvTable {
    fn from(t: CostsTable) -> Self {
        match t {
            CostsTable::Timeline => CsvTable::CostTimeline,
            CostsTable::ByCategory => CsvTable::ByCategory,
            CostsTable::ByCountry => CsvTable::ByCountry,
        }
    }
}

/// `GET /api/analytics/campaigns`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CampaignsQuery {
    /// One account; all of the organization's when absent.
    account_id: Option<String>,
    /// A date (the start of that local day) or an RFC 3339 instant.
    #[param(example = "2026-03-01")]
    start_date: Option<String>,
    /// A date (inclusive: to the end of that local day) or an RFC 3339 instant (exclusive).
    #[param(example = "2026-03-12")]
    end_date: Option<String>,
    #[param(example = "UTC")]
    tz: Option<String>,
    #[param(inline)]
    format: Option<Format>,
    /// With `format=csv`: `campaigns` (each campaign's `by_error` is in the JSON answer).
    #[param(inline)]
    table: Option<CampaignsTable>,
}

impl QueryShape for CampaignsQuery {
    const NAMES: &'static [&'static str] = &[
        "account_id",
        "start_date",
        "end_date",
        "tz",
        "format",
        "table",
    ];
    fn allowed(name: &str) -> &'static str {
        match name {
            "tz" => ZONE,
            "format" => FORMAT,
            "table" => "campaigns",
            _ => POINT,
        }
    }
}

/// `GET /api/analytics/templates`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TemplatesQuery {
    account_id: Option<String>,
    #[param(example = "2026-03-01")]
    start_date: Option<String>,
    #[param(example = "2026-03-12")]
    end_date: Option<String>,
    #[param(example = "UTC")]
    tz: Option<String>,
    /// A template name: adds its `timeline` and narrows the list to it.
    #[param(example = "order_update")]
    template: Option<String>,
    /// The timeline's buckets; `day` when absent.
    #[param(inline)]
    granularity: Option<Granularity>,
    #[param(inline)]
    format: Option<Format>,
    /// With `format=csv`: `templates` (default) or `timeline` (needs `template`).
    #[param(inline)]
    table: Option<TemplatesTable>,
}

impl QueryShape for TemplatesQuery {
    const NAMES: &'static [&'static str] = &[
        "account_id",
        "start_date",
        "end_date",
        "tz",
        "template",
        "granularity",
        "format",
        "table",
    ];
    fn allowed(name: &str) -> &'static str {
        match name {
            "tz" => ZONE,
            "template" => "a template name",
            "granularity" => Granularity::NAMES,
            "format" => FORMAT,
            "table" => "templates, timeline",
            _ => POINT,
        }
    }
}

/// `GET /api/analytics/costs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CostsQuery {
    account_id: Option<String>,
    #[param(example = "2026-03-01")]
    start_date: Option<String>,
    #[param(example = "2026-03-12")]
    end_date: Option<String>,
    #[param(example = "UTC")]
    tz: Option<String>,
    /// The timeline's buckets; `day` when absent.
    #[param(inline)]
    granularity: Option<Granularity>,
    #[param(inline)]
    format: Option<Format>,
    /// With `format=csv`: `timeline` (default), `by_category` or `by_country`.
    #[param(inline)]
    table: Option<CostsTable>,
}

impl QueryShape for CostsQuery {
    const NAMES: &'static [&'static str] = &[
        "account_id",
        "start_date",
        "end_date",
        "tz",
        "granularity",
        "format",
        "table",
    ];
    fn allowed(name: &str) -> &'static str {
        match name {
            "tz" => ZONE,
            "granularity" => Granularity::NAMES,
            "format" => FORMAT,
            "table" => "timeline, by_category, by_country",
            _ => POINT,
        }
    }
}

#[utoipa::path(get, path = "/api/analytics/campaigns", tag = "analytics", params(CampaignsQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Each campaign's funnel and cost", content((doc::Success<CampaignsAnswer> = "application/json"), (String = "text/csv"))),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn campaigns(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    Params(q): Params<CampaignsQuery>,
) -> Result<Response, ApiError> {
    let range = RangeParams {
        account_id: q.account_id,
        start_date: q.start_date,
        end_date: q.end_date,
        tz: q.tz,
    };
    let csv = csv_table(q.format, q.table, CsvTable::Campaigns);
    let answer = state
        .services
        .analytics
        .campaigns(&caller.org, &range)
        .await?;
    analytics_answer(answer, csv, "campaigns")
}

#[utoipa::path(get, path = "/api/analytics/templates", tag = "analytics", params(TemplatesQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Each template's funnel and cost", content((doc::Success<TemplatesAnswer> = "application/json"), (String = "text/csv"))),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn templates(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    Params(q): Params<TemplatesQuery>,
) -> Result<Response, ApiError> {
    let range = RangeParams {
        account_id: q.account_id,
        start_date: q.start_date,
        end_date: q.end_date,
        tz: q.tz,
    };
    let csv = csv_table(q.format, q.table, CsvTable::Templates);
    let granularity = q.granularity.unwrap_or(Granularity::Day);
    let answer = state
        .services
        .analytics
        .templates(&caller.org, &range, q.template.as_deref(), granularity)
        .await?;
    analytics_answer(answer, csv, "templates")
}

#[utoipa::path(get, path = "/api/analytics/costs", tag = "analytics", params(CostsQuery),
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Meta's estimated spend and AI cost", content((doc::Success<CostsAnswer> = "application/json"), (String = "text/csv"))),
        (status = "4XX", description = "Refused", body = doc::Failure)))]
pub(super) async fn costs(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
    Params(q): Params<CostsQuery>,
) -> Result<Response, ApiError> {
    let range = RangeParams {
        account_id: q.account_id,
        start_date: q.start_date,
        end_date: q.end_date,
        tz: q.tz,
    };
    let csv = csv_table(q.format, q.table, CsvTable::CostTimeline);
    let granularity = q.granularity.unwrap_or(Granularity::Day);
    let answer = state
        .services
        .analytics
        .costs(&caller.org, &range, granularity)
        .await?;
    analytics_answer(answer, csv, "costs")
}
