//! Analytics tables as CSV (RFC 4180): a header of the JSON field names, then one row per
//! entry with the very numbers of the JSON answer. Cells are made safe for spreadsheets:
//! flow names and keywords come from end users, so a text cell that a spreadsheet would
//! run as a formula is neutralized (OWASP's CSV-injection rule).

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// Which table of an answer a CSV export holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvTable {
    /// The messages timeline.
    Timeline,
    /// The chatbot timeline (same name, its own columns).
    ChatbotTimeline,
    ByType,
    ByError,
    ByFlow,
    TopKeywords,
    /// The dashboard's figures: one row, each column a dotted path such as `contacts.total`.
    Figures,
    Campaigns,
    Templates,
    /// One template's timeline.
    TemplateTimeline,
    ByCategory,
    ByCountry,
    /// The costs timeline.
    CostTimeline,
}

impl CsvTable {
    pub fn name(self) -> &'static str {
        match self {
            CsvTable::Timeline
            | CsvTable::ChatbotTimeline
            | CsvTable::TemplateTimeline
            | CsvTable::CostTimeline => "timeline",
            CsvTable::Campaigns => "campaigns",
            CsvTable::Templates => "templates",
            CsvTable::ByCategory => "by_category",
            CsvTable::ByCountry => "by_country",
            CsvTable::ByType => "by_type",
            CsvTable::ByError => "by_error",
            CsvTable::ByFlow => "by_flow",
            CsvTable::TopKeywords => "top_keywords",
            CsvTable::Figures => "figures",
        }
    }

    /// The rows of this table in an answer's `data`: arrays of objects as they are, and
    /// `by_type` (an object of counts) as `{message_type, count}` rows.
    pub fn rows(self, data: &Value) -> Vec<Value> {
        if self == CsvTable::Figures {
            let row: serde_json::Map<String, Value> = self
                .columns()
                .iter()
                .map(|c| {
                    let v = c
                        .split('.')
                        .fold(data, |v, k| v.get(k).unwrap_or(&Value::Null));
                    (c.to_string(), v.clone())
                })
                .collect();
            return vec![Value::Object(row)];
        }
        match (self, data.get(self.name())) {
            (CsvTable::ByType, Some(Value::Object(m))) => m
                .iter()
                .map(|(k, v)| serde_json::json!({"message_type": k, "count": v}))
                .collect(),
            (_, Some(Value::Array(a))) => a.clone(),
            _ => Vec::new(),
        }
    }

    /// The header: the JSON field names of the table's entries, in the answer's order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            CsvTable::Timeline => &["date", "sent", "received", "delivered", "read", "failed"],
            CsvTable::ChatbotTimeline => &[
                "date",
                "conversations",
                "auto_resolved",
                "transferred",
                "abandoned",
                "flows_started",
                "flows_completed",
                "keyword_hits",
                "ai_requests",
                "ai_tokens",
                "ai_cost",
            ],
            CsvTable::ByType => &["message_type", "count"],
            CsvTable::ByError => &["error_code", "title", "count"],
            CsvTable::ByFlow => &["flow_name", "conversations", "completed", "completion_rate"],
            CsvTable::TopKeywords => &["keyword", "count"],
            CsvTable::Campaigns => &[
                "campaign_id",
                "status",
                "sent",
                "delivered",
                "read",
                "failed",
                "replied",
                "delivery_rate",
                "read_rate",
                "reply_rate",
                "estimated_cost",
            ],
            CsvTable::Templates => &[
                "template_name",
                "template_language",
                "category",
                "sent",
                "delivered",
                "read",
                "failed",
                "replied",
                "delivery_rate",
                "read_rate",
                "reply_rate",
                "estimated_cost",
            ],
            CsvTable::TemplateTimeline => &[
                "date",
                "sent",
                "delivered",
                "read",
                "failed",
                "replied",
                "estimated_cost",
            ],
            CsvTable::ByCategory => &["category", "pricing_type", "messages", "estimated_cost"],
            CsvTable::ByCountry => &[
                "country",
                "billable_messages",
                "free_messages",
                "estimated_cost",
            ],
            CsvTable::CostTimeline => &[
                "date",
                "billable_messages",
                "free_messages",
                "estimated_cost",
                "ai_cost",
                "total_cost",
            ],
            CsvTable::Figures => &[
                "contacts.total",
                "contacts.new_today",
                "contacts.new_this_week",
                "contacts.growth_percent",
                "messages.total",
                "messages.sent",
                "messages.received",
                "messages.today",
                "campaigns.total",
                "campaigns.active",
                "campaigns.completed_this_month",
                "chatbot.conversations_today",
                "chatbot.auto_resolved",
                "chatbot.transferred_to_agent",
                "chatbot.resolution_rate",
            ],
        }
    }
}

/// The CSV answer of one table of an answer's `data`, as a download named after it.
pub fn download(data: &Value, table: CsvTable, endpoint: &str) -> Response {
    let body = to_csv(table.columns(), &table.rows(data));
    let filename = format!(
        "attachment; filename=\"whatstat-{endpoint}-{}.csv\"",
        table.name()
    );
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, filename),
        ],
        body,
    )
        .into_response()
}

/// Formats rows of JSON objects as CSV under `columns` (CRLF line ends, as RFC 4180 asks).
pub fn to_csv(columns: &[&str], rows: &[Value]) -> String {
    let mut out = String::new();
    let header: Vec<String> = columns.iter().map(|c| cell(&Value::from(*c))).collect();
    push_record(&mut out, &header);
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| cell(row.get(*c).unwrap_or(&Value::Null)))
            .collect();
        push_record(&mut out, &cells);
    }
    out
}

/// One record and its line end. A record of one empty cell is written `""`: as an empty
/// line, CSV readers skip it and the row would be lost.
fn push_record(out: &mut String, cells: &[String]) {
    if let [only] = cells
        && only.is_empty()
    {
        out.push_str("\"\"");
    } else {
        out.push_str(&cells.join(","));
    }
    out.push_str("\r\n");
}

/// One cell: numbers as the JSON writes them, `null` empty, text neutralized and quoted
/// where it needs to be.
fn cell(v: &Value) -> String {
    let text = match v {
        Value::Null => return String::new(),
        Value::Number(n) => return n.to_string(),
        Value::Bool(b) => return b.to_string(),
        Value::String(s) => neutralize(s),
        other => neutralize(&other.to_string()),
    };
    if text.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// A leading `=`, `+`, `-`, `@`, tab or carriage return makes a spreadsheet read a formula:
/// a leading `'` keeps the text as text.
fn neutralize(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_follow_the_columns_with_json_numbers() {
        let rows = vec![
            json!({"flow_name": "Welcome", "conversations": 3, "completed": 2, "completion_rate": 66.7}),
            json!({"flow_name": "Orders, returns", "conversations": 1, "completed": 1, "completion_rate": 100.0}),
        ];
        assert_eq!(
            to_csv(CsvTable::ByFlow.columns(), &rows),
            "flow_name,conversations,completed,completion_rate\r\n\
             Welcome,3,2,66.7\r\n\
             \"Orders, returns\",1,1,100.0\r\n"
        );
    }

    #[test]
    fn formulas_are_neutralized_and_quotes_doubled() {
        let rows = vec![
            json!({"keyword": "=HYPERLINK(\"x\")", "count": 1}),
            json!({"keyword": "+1", "count": 2}),
            json!({"keyword": "-x", "count": 3}),
            json!({"keyword": "@sum", "count": 4}),
            json!({"keyword": "plain", "count": -5}),
        ];
        assert_eq!(
            to_csv(CsvTable::TopKeywords.columns(), &rows),
            "keyword,count\r\n\"'=HYPERLINK(\"\"x\"\")\",1\r\n'+1,2\r\n'-x,3\r\n'@sum,4\r\nplain,-5\r\n"
        );
    }

    #[test]
    fn a_lone_empty_cell_is_quoted_not_an_empty_line() {
        // Found by the `csv` fuzz target: an empty line is skipped by CSV readers.
        let rows = vec![
            json!({"only": null}),
            json!({"only": ""}),
            json!({"only": "x"}),
        ];
        assert_eq!(to_csv(&["only"], &rows), "only\r\n\"\"\r\n\"\"\r\nx\r\n");
        assert_eq!(to_csv(&[""], &[]), "\"\"\r\n");
        assert_eq!(to_csv(&["a", "b"], &[json!({})]), "a,b\r\n,\r\n");
    }

    #[test]
    fn null_is_an_empty_cell_and_by_type_becomes_rows() {
        let data = json!({"by_type": {"text": 2, "image": 1}, "by_error": [
            {"error_code": null, "title": "No error code given", "count": 1}
        ]});
        let rows = CsvTable::ByError.rows(&data);
        assert_eq!(
            to_csv(CsvTable::ByError.columns(), &rows),
            "error_code,title,count\r\n,No error code given,1\r\n"
        );
        assert_eq!(CsvTable::ByType.rows(&data).len(), 2);
    }
}
