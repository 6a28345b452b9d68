//! The baseline: the same questions answered the way peers do it, by aggregating raw
//! rows on every request. Rows are collapsed from the same generated events (a messages
//! table with a status column, indexed by account and time) and written as CSV, which
//! SQLite, PostgreSQL (psql \copy) and DuckDB (its Python package) then load.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::Value;

pub const TABLES: &[(&str, &str)] = &[
    (
        "messages",
        "account_id TEXT, id TEXT, direction TEXT, message_type TEXT, status TEXT, conversation_id TEXT, created_at BIGINT",
    ),
    (
        "conversations",
        "account_id TEXT, id TEXT, status TEXT, started_at BIGINT, ended_at BIGINT",
    ),
    (
        "flow_runs",
        "account_id TEXT, id TEXT, flow_name TEXT, status TEXT, started_at BIGINT",
    ),
    (
        "keyword_hits",
        "account_id TEXT, keyword TEXT, created_at BIGINT",
    ),
    (
        "ai_requests",
        "account_id TEXT, model TEXT, tokens BIGINT, cost DOUBLE PRECISION, created_at BIGINT",
    ),
    ("contacts", "account_id TEXT, id TEXT, created_at BIGINT"),
    (
        "campaigns",
        "account_id TEXT, id TEXT, status TEXT, updated_at BIGINT",
    ),
];

const INDEXES: &[&str] = &[
    "CREATE INDEX messages_account_time ON messages (account_id, created_at)",
    "CREATE INDEX messages_time ON messages (created_at)",
    "CREATE INDEX conversations_time ON conversations (started_at)",
    "CREATE INDEX flow_runs_time ON flow_runs (started_at)",
    "CREATE INDEX keyword_hits_time ON keyword_hits (created_at)",
    "CREATE INDEX ai_requests_time ON ai_requests (created_at)",
    "CREATE INDEX contacts_time ON contacts (created_at)",
];

/// The queries each endpoint needs, with `$FROM`, `$TO` (Unix seconds) and `$TODAY`
/// (start of today) substituted; day grouping uses a fixed +05:30 offset like peers do.
pub fn endpoint_queries(endpoint: &str) -> Vec<&'static str> {
    match endpoint {
        "messages" => vec![
            "SELECT (created_at + 19800) / 86400 AS day, direction, status, COUNT(*) FROM messages WHERE created_at >= $FROM AND created_at < $TO GROUP BY 1, 2, 3",
            "SELECT message_type, COUNT(*) FROM messages WHERE created_at >= $FROM AND created_at < $TO GROUP BY 1",
        ],
        "chatbot" => vec![
            "SELECT status, COUNT(*), SUM(CASE WHEN status = 'auto_resolved' THEN ended_at - started_at ELSE 0 END) FROM conversations WHERE started_at >= $FROM AND started_at < $TO GROUP BY 1",
            "SELECT COUNT(*) FROM messages m JOIN conversations c ON c.account_id = m.account_id AND c.id = m.conversation_id WHERE c.started_at >= $FROM AND c.started_at < $TO",
            "SELECT flow_name, COUNT(*), SUM(CASE WHEN status = 'completed' THEN 1 ELSE 0 END) FROM flow_runs WHERE started_at >= $FROM AND started_at < $TO GROUP BY 1 ORDER BY 2 DESC",
            "SELECT keyword, COUNT(*) AS n FROM keyword_hits WHERE created_at >= $FROM AND created_at < $TO GROUP BY 1 ORDER BY n DESC LIMIT 10",
            "SELECT COUNT(*), SUM(tokens), SUM(cost) FROM ai_requests WHERE created_at >= $FROM AND created_at < $TO",
        ],
        _ => vec![
            "SELECT COUNT(*), SUM(CASE WHEN created_at >= $FROM THEN 1 ELSE 0 END), SUM(CASE WHEN created_at >= $TODAY THEN 1 ELSE 0 END) FROM contacts",
            "SELECT direction, COUNT(*), SUM(CASE WHEN created_at >= $TODAY THEN 1 ELSE 0 END) FROM messages WHERE created_at >= $FROM AND created_at < $TO GROUP BY 1",
            "SELECT status, COUNT(*) FROM campaigns GROUP BY 1",
            "SELECT status, COUNT(*) FROM conversations WHERE started_at >= $FROM AND started_at < $TO GROUP BY 1",
        ],
    }
}

pub fn substitute(sql: &str, from: i64, to: i64, today: i64) -> String {
    // $TODAY first: $TO is a prefix of it.
    sql.replace("$TODAY", &today.to_string())
        .replace("$FROM", &from.to_string())
        .replace("$TO", &to.to_string())
}

/// p50 and p99 per endpoint, in endpoint order.
pub type Latencies = Vec<(String, f64, f64)>;

#[derive(Default)]
struct Msg {
    direction: &'static str,
    message_type: String,
    status: &'static str,
    conversation_id: String,
    created_at: i64,
}

/// Appends collapsed rows of each generated batch to one CSV file per table.
pub struct RowWriter {
    dir: PathBuf,
    files: HashMap<&'static str, BufWriter<File>>,
    pub messages: u64,
}

fn rank(status: &str) -> u8 {
    match status {
        "sent" => 1,
        "failed" => 2,
        "delivered" => 3,
        "read" => 4,
        _ => 0,
    }
}

impl RowWriter {
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut files = HashMap::new();
        for (t, _) in TABLES {
            files.insert(
                *t,
                BufWriter::new(File::create(dir.join(format!("{t}.csv")))?),
            );
        }
        Ok(RowWriter {
            dir: dir.to_path_buf(),
            files,
            messages: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn row(&mut self, table: &'static str, fields: &[String]) -> std::io::Result<()> {
        if let Some(f) = self.files.get_mut(table) {
            writeln!(f, "{}", fields.join(","))?;
        }
        Ok(())
    }

    /// Collapses one account-day of events into rows: a status column per message, as
    /// peers keep it. All of a message's events lie within its batch.
    pub fn add(&mut self, events: &[Value]) -> std::io::Result<()> {
        let s = |v: &Value, k: &str| v[k].as_str().unwrap_or("").to_string();
        let t = |v: &Value| v["timestamp"].as_i64().unwrap_or(0);
        let mut msgs: HashMap<String, Msg> = HashMap::new();
        let mut convs: HashMap<String, (i64, String, i64)> = HashMap::new();
        let mut flows: HashMap<String, (String, String, i64)> = HashMap::new();
        let mut campaigns: HashMap<String, (String, i64)> = HashMap::new();
        let mut account = String::new();
        for e in events {
            account = s(e, "account_id");
            match e["type"].as_str().unwrap_or("") {
                "message" => {
                    let inbound = e["direction"] == "inbound";
                    let m = msgs.entry(s(e, "id")).or_default();
                    m.direction = if inbound { "inbound" } else { "outbound" };
                    m.message_type = s(e, "message_type");
                    m.conversation_id = s(e, "conversation_id");
                    m.created_at = t(e);
                    if m.status.is_empty() {
                        m.status = if inbound { "received" } else { "sent" };
                    }
                }
                "message_status" => {
                    let m = msgs.entry(s(e, "message_id")).or_default();
                    let st = match e["status"].as_str().unwrap_or("") {
                        "delivered" => "delivered",
                        "read" => "read",
                        "failed" => "failed",
                        _ => "sent",
                    };
                    if rank(st) > rank(m.status) {
                        m.status = st;
                    }
                }
                "conversation" => {
                    let c = convs.entry(s(e, "id")).or_insert((0, "started".into(), 0));
                    if e["status"] == "started" {
                        c.0 = t(e);
                    } else {
                        c.1 = s(e, "status");
                        c.2 = t(e);
                    }
                }
                "flow" => {
                    let f =
                        flows
                            .entry(s(e, "id"))
                            .or_insert((s(e, "flow_name"), "started".into(), 0));
                    if e["status"] == "started" {
                        f.2 = t(e);
                    } else {
                        f.1 = "completed".into();
                    }
                }
                "keyword" => self.row(
                    "keyword_hits",
                    &[account.clone(), s(e, "keyword"), t(e).to_string()],
                )?,
                "ai_request" => {
                    let tokens = e["prompt_tokens"].as_i64().unwrap_or(0)
                        + e["completion_tokens"].as_i64().unwrap_or(0);
                    let cost = e["cost"].as_f64().unwrap_or(0.0);
                    self.row(
                        "ai_requests",
                        &[
                            account.clone(),
                            s(e, "model"),
                            tokens.to_string(),
                            cost.to_string(),
                            t(e).to_string(),
                        ],
                    )?
                }
                "contact" => {
                    self.row("contacts", &[account.clone(), s(e, "id"), t(e).to_string()])?
                }
                "campaign" => {
                    campaigns.insert(s(e, "id"), (s(e, "status"), t(e)));
                }
                _ => {}
            }
        }
        for (id, m) in msgs {
            self.messages += 1;
            let row = [
                account.clone(),
                id,
                m.direction.into(),
                m.message_type,
                m.status.into(),
                m.conversation_id,
                m.created_at.to_string(),
            ];
            self.row("messages", &row)?;
        }
        for (id, (start, status, end)) in convs {
            self.row(
                "conversations",
                &[
                    account.clone(),
                    id,
                    status,
                    start.to_string(),
                    end.to_string(),
                ],
            )?;
        }
        for (id, (name, status, start)) in flows {
            self.row(
                "flow_runs",
                &[account.clone(), id, name, status, start.to_string()],
            )?;
        }
        for (id, (status, at)) in campaigns {
            self.row("campaigns", &[account.clone(), id, status, at.to_string()])?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> std::io::Result<()> {
        for f in self.files.values_mut() {
            f.flush()?;
        }
        Ok(())
    }
}

/// p50 and p99 of a set of samples in milliseconds.
pub fn percentiles(mut ms: Vec<f64>) -> (f64, f64) {
    if ms.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// Loads the CSVs into a fresh SQLite file and times each endpoint's queries.
pub fn sqlite(dir: &Path, range: (i64, i64, i64), samples: usize) -> Result<Latencies, String> {
    let path = dir.join("baseline.db");
    let _ = std::fs::remove_file(&path);
    let mut conn = rusqlite::Connection::open(&path).map_err(|e| e.to_string())?;
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;")
        .map_err(|e| e.to_string())?;
    let tx = conn.transaction().map_err(|e| e.to_string())?;
    for (table, cols) in TABLES {
        tx.execute_batch(&format!(
            "CREATE TABLE {table} ({})",
            cols.replace("DOUBLE PRECISION", "REAL")
        ))
        .map_err(|e| e.to_string())?;
        let n = cols.split(',').count();
        let placeholders = vec!["?"; n].join(",");
        let mut stmt = tx
            .prepare(&format!("INSERT INTO {table} VALUES ({placeholders})"))
            .map_err(|e| e.to_string())?;
        let text =
            std::fs::read_to_string(dir.join(format!("{table}.csv"))).map_err(|e| e.to_string())?;
        for line in text.lines() {
            let fields: Vec<rusqlite::types::Value> = line
                .split(',')
                .map(|f| match f.parse::<i64>() {
                    Ok(i) => rusqlite::types::Value::Integer(i),
                    Err(_) => match f.parse::<f64>() {
                        Ok(x) if f.contains('.') => rusqlite::types::Value::Real(x),
                        _ => rusqlite::types::Value::Text(f.to_string()),
                    },
                })
                .collect();
            stmt.execute(rusqlite::params_from_iter(fields))
                .map_err(|e| e.to_string())?;
        }
    }
    for i in INDEXES {
        tx.execute_batch(i).map_err(|e| e.to_string())?;
    }
    tx.commit().map_err(|e| e.to_string())?;
    conn.execute_batch("ANALYZE").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for endpoint in ["messages", "chatbot", "dashboard"] {
        let mut ms = Vec::with_capacity(samples);
        for _ in 0..samples {
            let started = Instant::now();
            for q in endpoint_queries(endpoint) {
                let sql = substitute(q, range.0, range.1, range.2);
                let mut stmt = conn.prepare_cached(&sql).map_err(|e| e.to_string())?;
                let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
                while rows.next().map_err(|e| e.to_string())?.is_some() {}
            }
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let (p50, p99) = percentiles(ms);
        out.push((endpoint.to_string(), p50, p99));
    }
    Ok(out)
}

/// Loads the CSVs into a fresh PostgreSQL database with psql and times the queries there
/// (psql's own \timing, so process start-up is not counted).
pub fn postgres(dir: &Path, range: (i64, i64, i64), samples: usize) -> Result<Latencies, String> {
    let db = "whatstat_bench_baseline";
    let admin = "postgresql://postgres@127.0.0.1:5432/postgres";
    let url = format!("postgresql://postgres@127.0.0.1:5432/{db}");
    psql(
        admin,
        &format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};"),
    )?;
    let mut load = String::new();
    for (table, cols) in TABLES {
        load.push_str(&format!("CREATE TABLE {table} ({cols});\n"));
        load.push_str(&format!(
            "\\copy {table} FROM '{}' WITH (FORMAT csv)\n",
            dir.join(format!("{table}.csv")).display()
        ));
    }
    for i in INDEXES {
        load.push_str(&format!("{i};\n"));
    }
    load.push_str("ANALYZE;\n");
    psql(&url, &load)?;
    let mut out = Vec::new();
    for endpoint in ["messages", "chatbot", "dashboard"] {
        let queries = endpoint_queries(endpoint);
        let mut script = String::from("\\timing on\n\\o /dev/null\n");
        for _ in 0..samples {
            for q in &queries {
                script.push_str(&substitute(q, range.0, range.1, range.2));
                script.push_str(";\n");
            }
        }
        let text = psql(&url, &script)?;
        let times: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Time: "))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        let per_request: Vec<f64> = times
            .chunks(queries.len())
            .map(|c| c.iter().sum())
            .collect();
        let (p50, p99) = percentiles(per_request);
        out.push((endpoint.to_string(), p50, p99));
    }
    let _ = psql(admin, &format!("DROP DATABASE IF EXISTS {db};"));
    Ok(out)
}

fn psql(url: &str, script: &str) -> Result<String, String> {
    let mut child = Command::new("psql")
        .args([url, "-q", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("psql: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// DuckDB through its Python package (installed with pip when missing).
pub fn duckdb(dir: &Path, range: (i64, i64, i64), samples: usize) -> Result<Latencies, String> {
    let has = Command::new("python3")
        .args(["-c", "import duckdb"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !has {
        let ok = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "duckdb"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err("the duckdb Python package is not installable here".into());
        }
    }
    let mut script = String::from(
        "import duckdb, time, json\ncon = duckdb.connect()\ncon.execute(\"SET enable_progress_bar = false\")\n",
    );
    for (table, cols) in TABLES {
        script.push_str(&format!(
            "con.execute(\"CREATE TABLE {table} ({cols})\")\ncon.execute(\"COPY {table} FROM '{}' (FORMAT csv)\")\n",
            dir.join(format!("{table}.csv")).display()
        ));
    }
    script.push_str("out = {}\n");
    for endpoint in ["messages", "chatbot", "dashboard"] {
        let qs: Vec<String> = endpoint_queries(endpoint)
            .iter()
            .map(|q| substitute(q, range.0, range.1, range.2))
            .collect();
        script.push_str(&format!(
            "qs = {}\nms = []\nfor _ in range({samples}):\n    t = time.perf_counter()\n    for q in qs: con.execute(q).fetchall()\n    ms.append((time.perf_counter() - t) * 1000)\nout['{endpoint}'] = ms\n",
            serde_json::to_string(&qs).map_err(|e| e.to_string())?
        ));
    }
    script.push_str("print(json.dumps(out))\n");
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "duckdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The answer is the last line; anything DuckDB printed before it is not ours.
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    let parsed: HashMap<String, Vec<f64>> =
        serde_json::from_str(last).map_err(|e| e.to_string())?;
    Ok(["messages", "chatbot", "dashboard"]
        .iter()
        .map(|e| {
            let (p50, p99) = percentiles(parsed.get(*e).cloned().unwrap_or_default());
            (e.to_string(), p50, p99)
        })
        .collect())
}
