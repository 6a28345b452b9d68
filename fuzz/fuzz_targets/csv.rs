//! The CSV writer of the analytics routes (`format=csv`), fed arbitrary columns and cells:
//! its output must read back with an RFC 4180 reader to the very cells written, one
//! record per row, each as long as the header, with text that a spreadsheet would run as
//! a formula kept as text.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};
use whatstat::api::csv::{CsvTable, to_csv};

#[derive(Arbitrary, Debug)]
enum Cell {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Text(String),
    List(Vec<String>),
    Object(Vec<(String, i64)>),
}

impl Cell {
    fn value(&self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(*b),
            Cell::Int(n) => Value::from(*n),
            Cell::UInt(n) => Value::from(*n),
            Cell::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Cell::Text(s) => Value::from(s.as_str()),
            Cell::List(l) => Value::from(l.clone()),
            Cell::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

/// Arbitrary bytes read as columns and rows of cells.
#[derive(Arbitrary, Debug)]
struct Input {
    /// One of the route's tables, else `columns`.
    table: Option<u8>,
    columns: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

/// The readable form, for seeds: `{"table": "by_flow", "columns": [...], "rows": [{...}]}`
/// (a table's name, else the columns).
#[derive(serde::Deserialize)]
struct JsonInput {
    table: Option<String>,
    #[serde(default)]
    columns: Vec<String>,
    #[serde(default)]
    rows: Vec<Map<String, Value>>,
}

const TABLES: [CsvTable; 13] = [
    CsvTable::Timeline,
    CsvTable::ChatbotTimeline,
    CsvTable::ByType,
    CsvTable::ByError,
    CsvTable::ByFlow,
    CsvTable::TopKeywords,
    CsvTable::Figures,
    CsvTable::Campaigns,
    CsvTable::Templates,
    CsvTable::TemplateTimeline,
    CsvTable::ByCategory,
    CsvTable::ByCountry,
    CsvTable::CostTimeline,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(input) = serde_json::from_slice::<JsonInput>(data) {
        let table = input
            .table
            .and_then(|name| TABLES.into_iter().find(|t| t.name() == name));
        let columns: Vec<String> = match table {
            Some(t) => t.columns().iter().map(|c| c.to_string()).collect(),
            None => input.columns,
        };
        let rows = input.rows.into_iter().map(Value::Object).collect();
        check(table, &columns, rows);
    } else if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        let table = input.table.map(|t| TABLES[usize::from(t) % TABLES.len()]);
        let columns: Vec<String> = match table {
            Some(t) => t.columns().iter().map(|c| c.to_string()).collect(),
            None => input.columns,
        };
        // Each row an object of the columns, cell by cell; a row shorter than the header
        // leaves the rest of its columns absent (written empty).
        let rows = input
            .rows
            .iter()
            .map(|cells| {
                let mut m = Map::new();
                for (c, cell) in columns.iter().zip(cells) {
                    m.insert(c.clone(), cell.value());
                }
                Value::Object(m)
            })
            .collect();
        check(table, &columns, rows);
    }
});

fn check(table: Option<CsvTable>, columns: &[String], rows: Vec<Value>) {
    if columns.is_empty() {
        return;
    }
    let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
    let out = to_csv(&columns, &rows);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(out.as_bytes());
    let records: Vec<csv::StringRecord> = reader
        .records()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("the CSV does not read back ({e}): {out:?}"));
    assert_eq!(records.len(), rows.len() + 1, "records of {out:?}");
    let header: Vec<String> = columns.iter().map(|c| expected(&Value::from(*c))).collect();
    assert_eq!(
        records[0].iter().collect::<Vec<_>>(),
        header,
        "header of {out:?}"
    );
    for (record, row) in records[1..].iter().zip(&rows) {
        let want: Vec<String> = columns
            .iter()
            .map(|c| expected(row.get(*c).unwrap_or(&Value::Null)))
            .collect();
        assert_eq!(record.iter().collect::<Vec<_>>(), want, "a row of {out:?}");
    }
    // The table's own rows as the routes make them (`by_type` from an object of counts,
    // `figures` from dotted paths), as a download would write them.
    if let Some(table) = table {
        let mut data = Map::new();
        let entries = match table {
            CsvTable::ByType => Value::Object(
                rows.iter()
                    .enumerate()
                    .map(|(i, r)| {
                        (
                            format!("type_{i}"),
                            r.get("count").cloned().unwrap_or_default(),
                        )
                    })
                    .collect(),
            ),
            _ => Value::Array(rows.clone()),
        };
        data.insert(table.name().to_string(), entries);
        if let Some(first) = rows.first().and_then(Value::as_object) {
            for (k, v) in first {
                data.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let data = Value::Object(data);
        let table_rows = table.rows(&data);
        let out = to_csv(table.columns(), &table_rows);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(out.as_bytes());
        let mut n = 0;
        for record in reader.records() {
            let record = record.unwrap_or_else(|e| panic!("{e}: {out:?}"));
            assert_eq!(record.len(), table.columns().len());
            n += 1;
        }
        assert_eq!(n, table_rows.len(), "rows of {out:?}");
    }
}

/// What a cell reads back as: JSON's own text for numbers and booleans, nothing for
/// null, and text (JSON's for lists and objects) with a leading `'` where a spreadsheet
/// would read a formula.
fn expected(v: &Value) -> String {
    let text = match v {
        Value::Null => return String::new(),
        Value::Number(n) => return n.to_string(),
        Value::Bool(b) => return b.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text
    }
}
