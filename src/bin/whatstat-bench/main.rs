//! whatstat's benchmark harness: durable ingest, single-event requests, query latency at
//! growing volumes (idle and under ingest), peak RSS and storage per tier, side by side
//! with raw-row aggregation in SQLite, PostgreSQL and DuckDB on the same data; and the
//! ingest of a message stream in time and in random order, side by side with the peers'
//! write path (a row INSERTed per message, an UPDATE per status) on the same stream.
//!
//! `cargo run --release --bin whatstat-bench -- --quick` runs in under a minute.

#![forbid(unsafe_code)]

mod baseline;
mod stream;
mod writes;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use whatstat::demo::{DemoOptions, day_events};

use stream::{Order, Stream};

const MASTER_KEY: &str = "bench-master-key";
/// Pause between a fill and the idle measurement, for the store's background work.
const SETTLE: Duration = Duration::from_secs(3);
/// After that pause, wait (at most a minute) until no more than this is left for the
/// operating system to write back to the disk.
const SETTLED_DIRTY_KB: u64 = 64 * 1024;

async fn settle() {
    tokio::time::sleep(SETTLE).await;
    let dirty_kb = || -> Option<u64> {
        let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
        let field = |name: &str| -> Option<u64> {
            meminfo
                .lines()
                .find(|l| l.starts_with(name))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        };
        Some(field("Dirty:")? + field("Writeback:")?)
    };
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60)
        && dirty_kb().is_some_and(|kb| kb > SETTLED_DIRTY_KB)
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
const ZONE: &str = "Asia/Kolkata";
/// The PostgreSQL server the backend, the baselines and the peers' write path use.
const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";
/// Seeds of the message stream and of its shuffle.
const STREAM_SEED: u64 = 17;
const SHUFFLE_SEED: u64 = 18;

/// What a run measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Part {
    /// The message stream (--stream-events) posted in time order, into a fresh store.
    Time,
    /// The same stream shuffled, into a fresh store.
    Random,
    /// The demo generator's stages (--sizes): ingest, single-event requests, webhooks,
    /// queries idle and under ingest against raw-row aggregation.
    Demo,
}
const ENDPOINTS: [(&str, &str); 3] = [
    ("messages", "/api/analytics/messages?granularity=day"),
    ("chatbot", "/api/analytics/chatbot"),
    ("dashboard", "/api/analytics/dashboard?period=month"),
];

#[derive(Parser, Clone)]
#[command(
    name = "whatstat-bench",
    about = "Benchmarks whatstat against raw-row aggregation"
)]
struct Args {
    /// Small volumes and few samples: a smoke run in under a minute.
    #[arg(long)]
    quick: bool,
    /// Stored-event volumes at which queries are measured, comma-separated.
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u64>>,
    /// Volumes for the PostgreSQL backend [default: the first two of --sizes].
    #[arg(long, value_delimiter = ',')]
    pg_sizes: Option<Vec<u64>>,
    /// Query samples per endpoint and condition.
    #[arg(long)]
    samples: Option<usize>,
    /// Seconds of single-event requests at concurrency 64 [default: 15; --quick: 3].
    #[arg(long)]
    single_secs: Option<u64>,
    /// What to measure, comma-separated: time (the message stream in time order), random
    /// (the same stream shuffled), demo (the demo generator's stages at --sizes).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "time,random,demo"
    )]
    stream: Vec<Part>,
    /// Events of the message stream (10 accounts, 29 days, 5,000-event NDJSON bodies)
    /// [default: 1000000; --quick: 20000].
    #[arg(long)]
    stream_events: Option<u64>,
    /// The peers' write path measured on the message stream, for the backends named:
    /// sqlite, postgres, or none.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    write_baselines: Vec<String>,
    /// The message stream's fields: full (recipients, templates, campaigns, pricing), or
    /// plain (the same events without them, to measure what they cost).
    #[arg(long, value_enum, default_value = "full")]
    stream_fields: stream::Fields,
    /// whatstat backends to measure: sqlite, postgres.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres")]
    backends: Vec<String>,
    /// Raw-aggregation baselines: sqlite, postgres, duckdb.
    #[arg(long, value_delimiter = ',', default_value = "sqlite,postgres,duckdb")]
    baselines: Vec<String>,
    /// Where databases and CSVs go (deleted afterwards unless --keep).
    #[arg(long, default_value = "target/bench")]
    workdir: PathBuf,
    #[arg(long)]
    keep: bool,
    /// Page cache of the measured server's SQLite writer, in MiB, as `whatstat serve
    /// --sqlite-cache-mib` [default: the server's, 32].
    #[arg(long, env = "WHATSTAT_SQLITE_CACHE_MIB")]
    sqlite_cache_mib: Option<u64>,
    /// Internal: run the server on this database URL and print its address.
    #[arg(long, hide = true)]
    child_serve: Option<String>,
}

/// `--sqlite-cache-mib`, for the servers the run starts.
static SQLITE_CACHE_MIB: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

type AnyError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), AnyError> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let options = match args.sqlite_cache_mib {
        Some(mib) => whatstat::store::StoreOptions::with_sqlite_cache_mib(mib)?,
        None => whatstat::store::StoreOptions::default(),
    };
    if let Some(url) = &args.child_serve {
        return rt.block_on(child_serve(url, options));
    }
    if let Some(mib) = args.sqlite_cache_mib {
        SQLITE_CACHE_MIB.get_or_init(|| mib);
    }
    rt.block_on(run(args))
}

/// The measured server: the real router, engine and store, in a process of its own.
async fn child_serve(url: &str, options: whatstat::store::StoreOptions) -> Result<(), AnyError> {
    let store = whatstat::store::open_with(url, options).await?;
    let mut config = whatstat::engine::EngineConfig {
        hourly_retention_days: Some(30),
        daily_retention_days: Some(365),
        ..Default::default()
    };
    // The webhook tee forwards to an upstream on loopback.
    config.forward.allow_http = true;
    let services = whatstat::engine::Services::new(store, config);
    let (_stop_forwarding, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(services.forwarding.clone().run_worker(stopped));
    let limits = whatstat::api::ApiLimits {
        max_body_bytes: 64 * 1024 * 1024,
        rate_per_second: 0,
    };
    let app = whatstat::api::router(services, Some(MASTER_KEY.into()), &limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

struct Server {
    child: Child,
    base: String,
    key: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(url: &str) -> Result<Server, AnyError> {
        let mut command = Command::new(std::env::current_exe()?);
        command.args(["--child-serve", url]);
        if let Some(mib) = SQLITE_CACHE_MIB.get() {
            command.args(["--sqlite-cache-mib", &mib.to_string()]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("LISTENING ")
            .ok_or_else(|| format!("server did not start: {line}"))?;
        let base = format!("http://{addr}");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(128)
            .build()?;
        let r: Value = client
            .post(format!("{base}/api/admin/orgs"))
            .bearer_auth(MASTER_KEY)
            .json(&json!({"name": "Bench", "timezone": ZONE}))
            .send()
            .await?
            .json()
            .await?;
        let key = r["data"]["api_key"]
            .as_str()
            .ok_or("no api key")?
            .to_string();
        Ok(Server {
            child,
            base,
            key,
            client,
        })
    }

    fn peak_rss_mb(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    async fn post_ndjson(&self, body: Vec<u8>) -> Result<(), AnyError> {
        let r = self
            .client
            .post(format!("{}/api/events?backfill=true", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(format!(
                "ingest answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )
            .into());
        }
        Ok(())
    }

    /// One NDJSON body of `lines` events, all of them new: anything but a 200 answer
    /// saying so is an error.
    async fn post_new_events(&self, body: bytes::Bytes, lines: u64) -> Result<(), AnyError> {
        let r = self
            .client
            .post(format!("{}/api/events", self.base))
            .bearer_auth(&self.key)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if status != reqwest::StatusCode::OK {
            return Err(format!("ingest answered {status}: {text}").into());
        }
        let answer: Value = serde_json::from_str(&text)?;
        let (accepted, duplicates) = (
            answer["data"]["accepted"].as_u64(),
            answer["data"]["duplicates"].as_u64(),
        );
        if accepted != Some(lines) || duplicates != Some(0) {
            return Err(format!(
                "a body of {lines} new events was answered {text}, not {lines} accepted and 0 duplicates"
            )
            .into());
        }
        Ok(())
    }

    /// The messages answer's summary for `range` (`start_date=...&end_date=...`).
    async fn messages_summary(&self, range: &str) -> Result<stream::Totals, AnyError> {
        let r: Value = self
            .client
            .get(format!("{}/api/analytics/messages?{range}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let s = &r["data"]["summary"];
        let get = |k: &str| {
            s[k].as_u64()
                .ok_or_else(|| format!("no `{k}` in the messages summary: {s}"))
        };
        Ok(stream::Totals {
            sent: get("total_sent")?,
            received: get("total_received")?,
            delivered: get("total_delivered")?,
            read: get("total_read")?,
            failed: get("total_failed")?,
        })
    }

    /// Rows the store's commits wrote so far, from `/metrics`: (counters, states).
    async fn rows_written(&self) -> Result<(u64, u64), AnyError> {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .bearer_auth(MASTER_KEY)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let read = |table: &str| {
            let name = format!("whatstat_store_rows_written_total{{table=\"{table}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(name.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .map(|v| v as u64)
                .ok_or_else(|| format!("/metrics has no `{name}`"))
        };
        Ok((read("counters")?, read("states")?))
    }

    /// One query: the time the client saw, and the time the server says it spent
    /// (its `Server-Timing` header), both in ms.
    async fn query_ms(&self, path: &str) -> Result<(f64, f64), AnyError> {
        let started = Instant::now();
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .send()
            .await?;
        let ok = r.status().is_success();
        let server_ms = r
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("app;dur="))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        let _ = r.bytes().await?;
        if !ok {
            return Err(format!("{path} failed").into());
        }
        Ok((started.elapsed().as_secs_f64() * 1000.0, server_ms))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Demo-model traffic, account after account over the last 30 days, as NDJSON bodies.
struct Generator {
    rng: StdRng,
    opts: DemoOptions,
    now: i64,
    next_account: u32,
    days: Vec<(i64, i8)>,
}

impl Generator {
    fn new(now: i64) -> Result<Self, AnyError> {
        let tz = jiff::tz::TimeZone::get(ZONE)?;
        let today = jiff::Timestamp::from_second(now)?
            .to_zoned(tz.clone())
            .date();
        let mut days = Vec::new();
        for back in (0..30).rev() {
            let d = today.checked_sub(jiff::Span::new().days(back))?;
            let start = d
                .to_zoned(tz.clone())?
                .start_of_day()?
                .timestamp()
                .as_second();
            days.push((start, d.weekday().to_monday_one_offset()));
        }
        Ok(Generator {
            rng: StdRng::seed_from_u64(7),
            opts: DemoOptions::default(),
            now,
            next_account: 0,
            days,
        })
    }

    /// One account's 30 days: (NDJSON bodies of at most 5,000 events, event count).
    fn next_account(
        &mut self,
        rows: Option<&mut baseline::RowWriter>,
    ) -> Result<(Vec<Vec<u8>>, u64), AnyError> {
        self.next_account += 1;
        let account = format!("acct-{}", self.next_account);
        let mut events = Vec::new();
        let mut rows = rows;
        for (start, weekday) in self.days.clone() {
            let day = day_events(
                &mut self.rng,
                &account,
                start,
                self.now,
                &self.opts,
                weekday,
            );
            if let Some(w) = rows.as_deref_mut() {
                w.add(&day)?;
            }
            events.extend(day);
        }
        let n = events.len() as u64;
        let mut bodies = Vec::new();
        for chunk in events.chunks(5000) {
            let mut body = Vec::with_capacity(chunk.len() * 220);
            for e in chunk {
                serde_json::to_writer(&mut body, e)?;
                body.push(b'\n');
            }
            bodies.push(body);
        }
        Ok((bodies, n))
    }
}

/// Posts bodies with a few concurrent requests, as a client batching its sends would.
async fn post_all(server: &Arc<Server>, bodies: Vec<Vec<u8>>) -> Result<(), AnyError> {
    let queue = Arc::new(std::sync::Mutex::new(bodies));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (q, s) = (queue.clone(), server.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let next = q.lock().ok().and_then(|mut v| v.pop());
                match next {
                    Some(b) => s.post_ndjson(b).await?,
                    None => return Ok::<(), AnyError>(()),
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// p50 and p99 per endpoint, as the client saw them and as the server spent them.
struct Latencies {
    client: Vec<(f64, f64)>,
    server: Vec<(f64, f64)>,
}

async fn latencies(server: &Server, samples: usize) -> Result<Latencies, AnyError> {
    let mut out = Latencies {
        client: Vec::new(),
        server: Vec::new(),
    };
    for (_, path) in ENDPOINTS {
        // One warm-up request, as any dashboard has made before.
        server.query_ms(path).await?;
        let (mut client, mut spent) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
        for _ in 0..samples {
            let (c, s) = server.query_ms(path).await?;
            client.push(c);
            spent.push(s);
        }
        out.client.push(baseline::percentiles(client));
        out.server.push(baseline::percentiles(spent));
    }
    Ok(out)
}

/// Single-event requests from 64 concurrent clients, each a message with an id of its own
/// (`s{round}-{client}-{n}`: give every call on one store its own `round`), each answer
/// checked to have accepted it as new; returns requests per second.
async fn single_events(
    server: &Arc<Server>,
    secs: u64,
    now: i64,
    round: &str,
) -> Result<f64, AnyError> {
    use http_body_util::{BodyExt, Full};
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    // The clients share the server's cores: each is one bare HTTP/1 connection with its
    // headers made once, so that as little of the machine as possible goes to them.
    let addr = server
        .base
        .strip_prefix("http://")
        .ok_or("unexpected server address")?
        .to_string();
    let auth = format!("Bearer {}", server.key);
    let started = Instant::now();
    for worker in 0..64u64 {
        let (done, stop) = (done.clone(), stop.clone());
        let (addr, auth, round) = (addr.clone(), auth.clone(), round.to_string());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await?;
            tokio::spawn(connection);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let body = format!(
                    r#"[{{"type":"message","account_id":"single","timestamp":{},"id":"s{round}-{worker}-{i}","direction":"inbound","message_type":"text"}}]"#,
                    now - 60
                );
                let request = hyper::Request::post("/api/events")
                    .header("host", &addr)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(Full::new(bytes::Bytes::from(body)))?;
                let response = sender.send_request(request).await?;
                let status = response.status();
                let answer = response.into_body().collect().await?.to_bytes();
                if status != hyper::StatusCode::OK {
                    return Err::<(), AnyError>(format!("single event answered {status}").into());
                }
                let answer: Value = serde_json::from_slice(&answer)?;
                if answer["data"]["accepted"] != 1 {
                    return Err(format!("a new single event was answered {answer}").into());
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// Live-stream clients connected while single-event ingestion is measured again.
const STREAM_CLIENTS: usize = 100;

/// Live-stream clients of the benchmark's organization, each reading its events until
/// aborted: what the stream costs ingestion is measured with them connected.
async fn open_streams(
    server: &Server,
    n: usize,
) -> Result<Vec<tokio::task::JoinHandle<()>>, AnyError> {
    let mut out = Vec::with_capacity(n);
    let mut key = String::new();
    for i in 0..n {
        // Streams are bounded per key: a read key of its own for every full set of them.
        if i % whatstat::api::stream::MAX_STREAMS_PER_KEY == 0 {
            let made: serde_json::Value = server
                .client
                .post(format!("{}/api/keys", server.base))
                .bearer_auth(&server.key)
                .json(&json!({"name": format!("stream reader {i}"), "scope": "read"}))
                .send()
                .await?
                .json()
                .await?;
            key = made["data"]["key"]
                .as_str()
                .ok_or("no key in the answer to POST /api/keys")?
                .to_string();
        }
        let mut r = server
            .client
            .get(format!("{}/api/stream", server.base))
            .bearer_auth(&key)
            .send()
            .await?;
        if !r.status().is_success() {
            return Err(format!("stream refused: {}", r.status()).into());
        }
        out.push(tokio::spawn(async move {
            while let Ok(Some(_)) = r.chunk().await {}
        }));
    }
    Ok(out)
}

/// An upstream for the webhook tee on loopback: answers 200 and counts what it got.
async fn upstream() -> Result<(String, Arc<AtomicU64>), AnyError> {
    let got = Arc::new(AtomicU64::new(0));
    let counter = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |_: axum::body::Bytes| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, got))
}

/// Signed Meta webhook POSTs of 1,000 updates each (500 messages, 500 statuses), to a
/// new account on `phone`, forwarded to `forward_url` when given; returns p50 and p99 in ms.
async fn webhook_posts(
    server: &Server,
    posts: usize,
    now: i64,
    phone: &str,
    forward_url: Option<&str>,
) -> Result<(f64, f64), AnyError> {
    use hmac::{Hmac, Mac};
    const SECRET: &str = "bench-app-secret";
    let r = server
        .client
        .post(format!("{}/api/accounts", server.base))
        .bearer_auth(&server.key)
        .json(
            &json!({"account_id":format!("wa-bench-{phone}"),"name":"Webhook bench","phone_number_id":phone,
            "verify_token":format!("bench-verify-{phone}"),"app_secret":SECRET,"forward_url":forward_url}),
        )
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("account registration answered {}", r.status()).into());
    }
    let mut ms = Vec::with_capacity(posts);
    for p in 0..posts {
        let ts = (now - 120).to_string();
        let messages: Vec<Value> = (0..500)
            .map(|i| json!({"from":format!("91990{:05}", i),"id":format!("wamid.in.{phone}.{p}.{i}"),"timestamp":ts,"type":"text","text":{"body":"where is my order?"}}))
            .collect();
        let statuses: Vec<Value> = (0..500)
            .map(|i| json!({"id":format!("wamid.out.{phone}.{p}.{i}"),"status":if i % 3 == 0 {"read"} else {"delivered"},"timestamp":ts,
                "recipient_id":format!("91990{:05}", i),"pricing":{"billable":true,"pricing_model":"CBP","category":"utility"}}))
            .collect();
        let body = serde_json::to_vec(
            &json!({"object":"whatsapp_business_account","entry":[{"id":"WABA1","changes":[{"field":"messages",
            "value":{"messaging_product":"whatsapp","metadata":{"display_phone_number":"15550001111","phone_number_id":phone},
            "messages":messages,"statuses":statuses}}]}]}),
        )?;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes())?;
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let started = Instant::now();
        let r = server
            .client
            .post(format!("{}/webhooks/whatsapp", server.base))
            .header("x-hub-signature-256", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let ok = r.status().is_success();
        let _ = r.bytes().await?;
        if !ok {
            return Err("webhook POST failed".into());
        }
        ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(baseline::percentiles(ms))
}

struct Stage {
    events: u64,
    idle: Vec<(f64, f64)>,
    idle_server: Vec<(f64, f64)>,
    loaded: Vec<(f64, f64)>,
    baselines: Vec<(String, baseline::Latencies)>,
}

/// Everything measured on one backend.
struct BackendReport {
    name: String,
    streams: Vec<StreamResult>,
    /// Single-event requests on the first stream's store, when the demo stages did not run.
    stream_single_rps: Option<f64>,
    demo: Option<BackendResult>,
}

struct BackendResult {
    ingest_eps: f64,
    single_rps: f64,
    webhook: (f64, f64),
    webhook_forwarded: (f64, f64),
    stages: Vec<Stage>,
    peak_rss_mb: f64,
    tiers: String,
}

async fn run(args: Args) -> Result<(), AnyError> {
    let quick = args.quick;
    let sizes = args.sizes.clone().unwrap_or_else(|| {
        if quick {
            vec![100_000]
        } else {
            vec![1_000_000, 10_000_000, 50_000_000]
        }
    });
    let samples = args.samples.unwrap_or(if quick { 30 } else { 200 });
    let single_secs = args.single_secs.unwrap_or(if quick { 3 } else { 15 });
    std::fs::create_dir_all(&args.workdir)?;
    let now = jiff::Timestamp::now().as_second();
    let tz = jiff::tz::TimeZone::get(ZONE)?;
    let today = jiff::Timestamp::from_second(now)?
        .to_zoned(tz.clone())
        .date();
    let start_of = |d: jiff::civil::Date| -> Result<i64, AnyError> {
        Ok(d.to_zoned(tz.clone())?
            .start_of_day()?
            .timestamp()
            .as_second())
    };
    let range = (
        start_of(today.checked_sub(jiff::Span::new().days(29))?)?,
        start_of(today.tomorrow()?)?,
        start_of(today)?,
    );
    for b in &args.write_baselines {
        if !["sqlite", "postgres", "none"].contains(&b.as_str()) {
            return Err(format!(
                "--write-baselines: unknown `{b}`; allowed: sqlite, postgres, none"
            )
            .into());
        }
    }
    let orders: Vec<Order> = [(Part::Time, Order::Time), (Part::Random, Order::Random)]
        .into_iter()
        .filter(|(p, _)| args.stream.contains(p))
        .map(|(_, o)| o)
        .collect();
    let demo = args.stream.contains(&Part::Demo);
    let stream = if orders.is_empty() {
        None
    } else {
        let events = args
            .stream_events
            .unwrap_or(if quick { 20_000 } else { 1_000_000 });
        if events == 0 {
            return Err("--stream-events: 0; allowed: 1 or more".into());
        }
        let s = Stream::generate(events, now, STREAM_SEED, args.stream_fields)?;
        eprintln!(
            "== message stream: {} events, {} messages ({} sent, {} received), {:.0} bytes per event on average",
            s.events(),
            s.messages(),
            s.totals.sent,
            s.totals.received,
            s.mean_event_bytes()
        );
        Some(s)
    };
    // The stream's days, whole local days (a run may cross midnight).
    let stream_range = format!(
        "start_date={}&end_date={today}",
        jiff::Timestamp::from_second(now - stream::DAYS * 86_400)?
            .to_zoned(tz.clone())
            .date()
    );
    let mut results = Vec::new();
    for (i, backend) in args.backends.iter().enumerate() {
        let mut report = BackendReport {
            name: backend.clone(),
            streams: Vec::new(),
            stream_single_rps: None,
            demo: None,
        };
        if let Some(stream) = &stream {
            for (k, &order) in orders.iter().enumerate() {
                // Without the demo stages, single-event requests run on the first stream's store.
                let single = (!demo && k == 0).then_some((single_secs, now));
                match stream_stage(
                    &args,
                    backend,
                    stream,
                    order,
                    &stream_range,
                    samples,
                    single,
                )
                .await
                {
                    Ok((r, rps)) => {
                        report.streams.push(r);
                        report.stream_single_rps = report.stream_single_rps.or(rps);
                    }
                    Err(e) => eprintln!(
                        "backend {backend}, {} order: not measured: {e}",
                        order.name()
                    ),
                }
            }
        }
        if !demo {
            results.push(report);
            continue;
        }
        // The baseline rows are collected once, on the first backend's pass.
        let collect = i == 0;
        let pg_sizes = args
            .pg_sizes
            .clone()
            .unwrap_or_else(|| sizes.iter().take(2).copied().collect());
        let backend_sizes = if backend == "postgres" {
            &pg_sizes
        } else {
            &sizes
        };
        match bench_backend(
            &args,
            backend,
            backend_sizes,
            samples,
            single_secs,
            now,
            range,
            collect,
        )
        .await
        {
            Ok(r) => report.demo = Some(r),
            Err(e) => eprintln!("backend {backend}, demo stages: not measured: {e}"),
        }
        results.push(report);
    }
    print_report(&results, &sizes, samples, quick, stream.as_ref());
    if !args.keep {
        let _ = std::fs::remove_dir_all(&args.workdir);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn bench_backend(
    args: &Args,
    backend: &str,
    sizes: &[u64],
    samples: usize,
    single_secs: u64,
    now: i64,
    range: (i64, i64, i64),
    collect_baseline: bool,
) -> Result<BackendResult, AnyError> {
    let (url, db_path) = fresh_store(args, backend)?;
    eprintln!("== {backend}: demo stages, starting server");
    let server = Arc::new(Server::start(&url).await?);
    let mut generator = Generator::new(now)?;
    let mut rows = if collect_baseline {
        Some(baseline::RowWriter::new(&args.workdir.join("baseline"))?)
    } else {
        None
    };
    let mut stored = 0u64;
    let mut ingest_eps = f64::NAN;
    let mut single_rps = f64::NAN;
    let mut webhook = (f64::NAN, f64::NAN);
    let mut webhook_forwarded = (f64::NAN, f64::NAN);
    let mut stages = Vec::new();
    for (si, &size) in sizes.iter().enumerate() {
        // Pre-generate the first stage so that its ingest rate is the server's, not the generator's.
        let mut bodies = Vec::new();
        let mut pending = 0u64;
        let started_fill = Instant::now();
        while stored + pending < size {
            let (b, n) = generator.next_account(rows.as_mut())?;
            bodies.extend(b);
            pending += n;
            if si > 0 && bodies.len() >= 64 {
                post_all(&server, std::mem::take(&mut bodies)).await?;
            }
        }
        let started = Instant::now();
        post_all(&server, bodies).await?;
        stored += pending;
        if si == 0 {
            ingest_eps = pending as f64 / started.elapsed().as_secs_f64();
            eprintln!("   ingest: {pending} events at {ingest_eps:.0} events/s");
        } else {
            eprintln!(
                "   filled to {stored} events in {:.0} s",
                started_fill.elapsed().as_secs_f64()
            );
        }
        // Idle means after ingestion's tail too: the checkpoint of what the fill wrote,
        // and the operating system writing it back to the disk.
        settle().await;
        let Latencies {
            client: idle,
            server: idle_server,
        } = latencies(&server, samples).await?;
        // Under load: one client keeps posting 5,000-event batches while queries are timed.
        let stop = Arc::new(AtomicBool::new(false));
        let (mut load_gen, s2, stop2) = (Generator::new(now)?, server.clone(), stop.clone());
        load_gen.next_account = 1_000_000 + si as u32 * 10_000;
        let load = tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop2.load(Ordering::Relaxed) {
                let (bodies, n) = load_gen.next_account(None)?;
                for b in bodies {
                    s2.post_ndjson(b).await?;
                    if stop2.load(Ordering::Relaxed) {
                        break;
                    }
                }
                sent += n;
            }
            Ok::<u64, AnyError>(sent)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let loaded = latencies(&server, samples).await?.client;
        stop.store(true, Ordering::Relaxed);
        stored += load.await??;
        if si == 0 {
            single_rps = single_events(&server, single_secs, now, "a").await?;
            eprintln!(
                "   single-event requests (a unique message id each, every one accepted as new): {single_rps:.0}/s"
            );
            let streams = open_streams(&server, STREAM_CLIENTS).await?;
            let with_streams = single_events(&server, single_secs, now, "b").await?;
            eprintln!(
                "   single-event requests with {} live streams of the organization: {with_streams:.0}/s ({:+.1} %)",
                streams.len(),
                (with_streams - single_rps) * 100.0 / single_rps
            );
            for s in streams {
                s.abort();
            }
            let posts = if args.quick { 10 } else { 100 };
            webhook = webhook_posts(&server, posts, now, "100200300", None).await?;
            eprintln!(
                "   webhook 1,000-update POSTs: p50 {:.1} ms, p99 {:.1} ms",
                webhook.0, webhook.1
            );
            let (url, got) = upstream().await?;
            webhook_forwarded = webhook_posts(&server, posts, now, "100200301", Some(&url)).await?;
            let deadline = Instant::now() + Duration::from_secs(30);
            while got.load(Ordering::Relaxed) < posts as u64 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!(
                "   webhook 1,000-update POSTs forwarded to a local upstream: p50 {:.1} ms, p99 {:.1} ms ({} of {posts} delivered)",
                webhook_forwarded.0,
                webhook_forwarded.1,
                got.load(Ordering::Relaxed)
            );
        }
        let mut baselines = Vec::new();
        // Raw aggregation takes seconds per request at large volumes: fewer samples there.
        let base_samples = match stored {
            0..=2_000_000 => samples.min(50),
            2_000_001..=20_000_000 => 10,
            _ => 5,
        };
        if let Some(w) = rows.as_mut() {
            w.flush()?;
            for b in &args.baselines {
                let dir = w.dir().to_path_buf();
                let r = match b.as_str() {
                    "sqlite" => baseline::sqlite(&dir, range, base_samples),
                    "postgres" => baseline::postgres(&dir, range, base_samples),
                    "duckdb" => baseline::duckdb(&dir, range, base_samples),
                    other => Err(format!("unknown baseline {other}")),
                };
                match r {
                    Ok(r) => baselines.push((b.clone(), r)),
                    Err(e) => eprintln!("   baseline {b}: not measured: {e}"),
                }
            }
        }
        eprintln!("   stage {stored} events measured");
        for (i, (name, _)) in ENDPOINTS.iter().enumerate() {
            let base: Vec<String> = baselines
                .iter()
                .map(|(b, rows): &(String, baseline::Latencies)| {
                    format!("{b} {:.2}/{:.2}", rows[i].1, rows[i].2)
                })
                .collect();
            eprintln!(
                "   {name}: idle {:.2}/{:.2} ms (server {:.2}/{:.2}), under ingest {:.2}/{:.2} ms; {}",
                idle[i].0,
                idle[i].1,
                idle_server[i].0,
                idle_server[i].1,
                loaded[i].0,
                loaded[i].1,
                base.join(", ")
            );
        }
        eprintln!("   peak RSS so far {:.0} MB", server.peak_rss_mb());
        stages.push(Stage {
            events: stored,
            idle,
            idle_server,
            loaded,
            baselines,
        });
    }
    let peak_rss_mb = server.peak_rss_mb();
    let tiers = match backend {
        "sqlite" => sqlite_tiers(&db_path).unwrap_or_else(|e| format!("unknown ({e})")),
        _ => pg_tiers().unwrap_or_else(|e| format!("unknown ({e})")),
    };
    Ok(BackendResult {
        ingest_eps,
        single_rps,
        webhook,
        webhook_forwarded,
        stages,
        peak_rss_mb,
        tiers,
    })
}

/// A fresh, empty store for `backend`: its URL, and its file on SQLite.
fn fresh_store(args: &Args, backend: &str) -> Result<(String, PathBuf), AnyError> {
    let db_path = args.workdir.join("whatstat.db");
    let url = match backend {
        "sqlite" => {
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
            }
            format!("sqlite://{}", db_path.display())
        }
        "postgres" => {
            recreate_pg("whatstat_bench")?;
            format!("{PG_BASE}/whatstat_bench")
        }
        other => {
            return Err(format!("unknown backend `{other}`; allowed: sqlite, postgres").into());
        }
    };
    Ok((url, db_path))
}

/// Posts the bodies in their order over 4 concurrent connections, each body checked to
/// be answered 200 with all of its events new.
async fn post_stream(server: &Arc<Server>, bodies: &[bytes::Bytes]) -> Result<(), AnyError> {
    let bodies = Arc::new(bodies.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (bodies, next, s) = (bodies.clone(), next.clone(), server.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(body) = bodies.get(next.fetch_add(1, Ordering::Relaxed)) {
                let lines = body.iter().filter(|&&c| c == b'\n').count() as u64;
                s.post_new_events(body.clone(), lines).await?;
            }
            Ok::<(), AnyError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// One order of the message stream on one backend.
struct StreamResult {
    order: Order,
    events: u64,
    events_per_second: f64,
    /// Rows the store's commits wrote for the stream: counter upserts, entity states.
    counter_rows: u64,
    state_rows: u64,
    /// The messages query after the stream: p50 / p99 the client saw, and the server's.
    messages: (f64, f64),
    messages_server: (f64, f64),
    peak_rss_mb: f64,
    peer: Option<Result<writes::Outcome, String>>,
}

/// The message stream in `order` into a fresh store: durable ingest, the stored figures
/// checked against the stream, the messages query, single-event requests when `single`
/// (seconds, now) is given, then the peers' write path on the same bodies.
async fn stream_stage(
    args: &Args,
    backend: &str,
    stream: &Stream,
    order: Order,
    summary_range: &str,
    samples: usize,
    single: Option<(u64, i64)>,
) -> Result<(StreamResult, Option<f64>), AnyError> {
    let (url, _) = fresh_store(args, backend)?;
    let bodies = stream.bodies(order, SHUFFLE_SEED);
    eprintln!(
        "== {backend}: {} events of the message stream in {} order ({} bodies), starting server",
        stream.events(),
        order.name(),
        bodies.len()
    );
    let stage_started = Instant::now();
    let server = Arc::new(Server::start(&url).await?);
    let started = Instant::now();
    post_stream(&server, &bodies).await?;
    let events_per_second = stream.events() as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "   durable ingest: {events_per_second:.0} events/s (every body answered 200, all its events new)"
    );
    let (counter_rows, state_rows) = server.rows_written().await?;
    let per_event = |n: u64| n as f64 / stream.events() as f64;
    eprintln!(
        "   rows written: {counter_rows} counter upserts ({:.2} per event), {state_rows} entity states ({:.2} per event)",
        per_event(counter_rows),
        per_event(state_rows)
    );
    let stored = server.messages_summary(summary_range).await?;
    if stored != stream.totals {
        return Err(format!(
            "after the stream the messages answer says {stored:?}; the stream holds {:?}",
            stream.totals
        )
        .into());
    }
    if !args.quick {
        settle().await;
    }
    let lat = latencies(&server, samples).await?;
    let (messages, messages_server) = (lat.client[0], lat.server[0]);
    eprintln!(
        "   messages query: p50 {:.2} ms, p99 {:.2} ms (server {:.2} / {:.2})",
        messages.0, messages.1, messages_server.0, messages_server.1
    );
    let single_rps = match single {
        Some((secs, now)) => {
            let rps = single_events(&server, secs, now, "a").await?;
            eprintln!(
                "   single-event requests (a unique message id each, every one accepted as new): {rps:.0}/s"
            );
            Some(rps)
        }
        None => None,
    };
    let peak_rss_mb = server.peak_rss_mb();
    eprintln!("   peak RSS {peak_rss_mb:.0} MB");
    // The server stops before the peers' write path runs, which then has the machine.
    drop(server);
    let peer = if args.write_baselines.iter().any(|b| b == backend) {
        let r = match backend {
            "sqlite" => tokio::task::block_in_place(|| {
                writes::sqlite(&args.workdir, &bodies, &stream.final_status)
            }),
            _ => {
                writes::postgres(
                    PG_BASE,
                    "whatstat_bench_peer",
                    &bodies,
                    &stream.final_status,
                )
                .await
            }
        };
        match &r {
            Ok(o) => eprintln!(
                "   peers' write path: {:.0} events/s ({} events); {} statuses found no row, {} messages end with another status than the last of their ladder, {} transactions retried after a deadlock",
                o.events_per_second,
                o.events,
                o.lost_statuses,
                o.wrong_status,
                o.retried_transactions
            ),
            Err(e) => eprintln!("   peers' write path: not measured: {e}"),
        }
        Some(r)
    } else {
        None
    };
    eprintln!(
        "   stage done in {:.1} s",
        stage_started.elapsed().as_secs_f64()
    );
    Ok((
        StreamResult {
            order,
            events: stream.events(),
            events_per_second,
            counter_rows,
            state_rows,
            messages,
            messages_server,
            peak_rss_mb,
            peer,
        },
        single_rps,
    ))
}

fn recreate_pg(db: &str) -> Result<(), AnyError> {
    let ok = Command::new("psql")
        .args([
            "postgresql://postgres@127.0.0.1:5432/postgres",
            "-q",
            "-c",
            &format!("DROP DATABASE IF EXISTS {db}"),
            "-c",
            &format!("CREATE DATABASE {db}"),
        ])
        .status()?
        .success();
    if ok {
        Ok(())
    } else {
        Err("cannot create the PostgreSQL database".into())
    }
}

fn sqlite_tiers(path: &std::path::Path) -> Result<String, AnyError> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt =
        conn.prepare("SELECT tier, COUNT(*) FROM counters GROUP BY tier ORDER BY tier")?;
    let rows: Vec<(i64, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    // States still in the entity log (not merged into their table yet) count too, once.
    let states: i64 = conn.query_row(
        "SELECT COUNT(*) FROM (SELECT org, kind, account, id FROM entity_rows
                               UNION SELECT org, kind, account, id FROM entity_log)",
        [],
        |r| r.get(0),
    )?;
    let size = std::fs::metadata(path)?.len()
        + std::fs::metadata(format!("{}-wal", path.display())).map_or(0, |m| m.len());
    Ok(tier_text(&rows, states, size as f64 / 1e6))
}

fn pg_tiers() -> Result<String, AnyError> {
    let out = Command::new("psql")
        .args([
            "postgresql://postgres@127.0.0.1:5432/whatstat_bench",
            "-At",
            "-c",
            "SELECT tier, COUNT(*) FROM counters GROUP BY tier ORDER BY tier",
            "-c",
            "SELECT COUNT(*) FROM entities",
            "-c",
            "SELECT pg_database_size(current_database())",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = Vec::new();
    let mut singles = Vec::new();
    for l in text.lines() {
        match l.split_once('|') {
            Some((t, n)) => rows.push((t.parse()?, n.parse()?)),
            None => singles.push(l.parse::<i64>()?),
        }
    }
    let (states, bytes) = (
        singles.first().copied().unwrap_or(0),
        singles.get(1).copied().unwrap_or(0),
    );
    Ok(tier_text(&rows, states, bytes as f64 / 1e6))
}

fn tier_text(rows: &[(i64, i64)], states: i64, mb: f64) -> String {
    let get = |t| rows.iter().find(|(x, _)| *x == t).map_or(0, |(_, n)| *n);
    format!(
        "hour {} rows, day {} rows, month {} rows, {} entity states; {mb:.1} MB on disk",
        get(0),
        get(1),
        get(2),
        states
    )
}

/// The summary of one backend: both orders of the stream against the peers' write path,
/// single-event requests, the messages query at every volume measured, peak RSS.
fn print_summary(r: &BackendReport) {
    println!("| measure | value |\n|---|---|");
    for st in &r.streams {
        let peer = match &st.peer {
            Some(Ok(p)) => format!(
                "; {:.2}x the peers' write path ({:.0} events/s)",
                st.events_per_second / p.events_per_second,
                p.events_per_second
            ),
            Some(Err(_)) => "; the peers' write path not measured".into(),
            None => String::new(),
        };
        println!(
            "| durable ingest, message stream in {} order, {} events | {:.0} events/s{peer}; {:.2} counter upserts and {:.2} entity states written per event |",
            st.order.name(),
            st.events,
            st.events_per_second,
            st.counter_rows as f64 / st.events as f64,
            st.state_rows as f64 / st.events as f64
        );
    }
    let single = r
        .demo
        .as_ref()
        .map(|d| d.single_rps)
        .or(r.stream_single_rps);
    if let Some(rps) = single {
        println!(
            "| single-event requests, a unique message id each, concurrency 64 | {rps:.0} requests/s |"
        );
    }
    let mut medians: Vec<String> = r
        .streams
        .iter()
        .map(|st| {
            format!(
                "{:.2} ms at {} events ({} order)",
                st.messages.0,
                st.events,
                st.order.name()
            )
        })
        .collect();
    if let Some(d) = &r.demo {
        medians.extend(
            d.stages
                .iter()
                .map(|s| format!("{:.2} ms at {} events (demo)", s.idle[0].0, s.events)),
        );
    }
    println!("| messages query, median | {} |", medians.join("; "));
    let peak = r
        .streams
        .iter()
        .map(|s| s.peak_rss_mb)
        .chain(r.demo.as_ref().map(|d| d.peak_rss_mb))
        .fold(f64::NAN, f64::max);
    println!("| peak RSS of the server, largest of the stages | {peak:.0} MB |\n");
    if r.streams.is_empty() {
        return;
    }
    println!(
        "| stream order | events | whatstat durable ingest | peers' write path | ratio | statuses the peers found no row for | messages the peers left with another status | peers' transactions retried after a deadlock | messages query p50 / p99 (server's own p50 / p99) | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for st in &r.streams {
        let peer = match &st.peer {
            Some(Ok(p)) => format!(
                "{:.0} events/s | {:.2}x | {} | {} | {}",
                p.events_per_second,
                st.events_per_second / p.events_per_second,
                p.lost_statuses,
                p.wrong_status,
                p.retried_transactions
            ),
            Some(Err(e)) => format!("not measured: {e} | | | | "),
            None => "not measured | | | | ".into(),
        };
        println!(
            "| {} | {} | {:.0} events/s | {peer} | {:.2} / {:.2} ms ({:.2} / {:.2}) | {:.0} MB |",
            st.order.name(),
            st.events,
            st.events_per_second,
            st.messages.0,
            st.messages.1,
            st.messages_server.0,
            st.messages_server.1,
            st.peak_rss_mb
        );
    }
    println!();
}

fn print_report(
    results: &[BackendReport],
    sizes: &[u64],
    samples: usize,
    quick: bool,
    stream: Option<&Stream>,
) {
    println!(
        "\n## whatstat benchmark{}\n",
        if quick {
            " (quick mode: smoke figures only)"
        } else {
            ""
        }
    );
    if let Some(s) = stream {
        println!(
            "Message stream: {} events ({} messages, {:.0} bytes per event on average, {} fields), {} accounts over {} days, NDJSON bodies of {} events posted by 4 concurrent connections (all inside the state window: no backfill), into a fresh store per order; every body answered 200 with all its events new, and the stored figures checked against the stream. Peers' write path: the same bodies parsed and applied in one transaction each, one INSERT per message and one UPDATE ... WHERE id per status (SQLite: one connection, WAL, synchronous=FULL; PostgreSQL: 4 connections, synchronous_commit=on). Ratio: whatstat's events/s over the peers'.\n",
            s.events(),
            s.messages(),
            s.mean_event_bytes(),
            match s.fields {
                stream::Fields::Full => "full",
                stream::Fields::Plain => "plain",
            },
            stream::ACCOUNTS,
            stream::DAYS,
            stream::BODY_EVENTS
        );
    }
    println!(
        "Query latency: p50 / p99 in ms over {samples} sequential requests per endpoint (HTTP, default 30-day range, all accounts). Demo sizes asked: {sizes:?}.\n"
    );
    for report in results {
        println!("### whatstat on {}\n", report.name);
        print_summary(report);
        let Some(r) = &report.demo else {
            continue;
        };
        println!("Demo generator stages:\n");
        println!("| measure | value |\n|---|---|");
        println!(
            "| durable ingest, NDJSON batches of 5,000 (4 concurrent) | {:.0} events/s |",
            r.ingest_eps
        );
        println!(
            "| single-event requests, a unique message id each, concurrency 64 | {:.0} requests/s |",
            r.single_rps
        );
        println!(
            "| webhook POST of 1,000 updates, p50 / p99 | {:.1} / {:.1} ms |",
            r.webhook.0, r.webhook.1
        );
        println!(
            "| the same, forwarded by the tee to a local upstream, p50 / p99 | {:.1} / {:.1} ms |",
            r.webhook_forwarded.0, r.webhook_forwarded.1
        );
        println!("| peak RSS of the server | {:.0} MB |", r.peak_rss_mb);
        println!("| store | {} |\n", r.tiers);
        println!(
            "| stored events | endpoint | idle p50 / p99 | idle, server's own time p50 / p99 | under ingest p50 / p99 | baselines p50 / p99 (ratio of p50s) |"
        );
        println!("|---|---|---|---|---|---|");
        for s in &r.stages {
            for (i, (name, _)) in ENDPOINTS.iter().enumerate() {
                let (p50, p99) = s.idle[i];
                let (s50, s99) = s.idle_server[i];
                let (l50, l99) = s.loaded[i];
                let base: Vec<String> = s
                    .baselines
                    .iter()
                    .map(|(b, rows)| {
                        let (_, b50, b99) = &rows[i];
                        format!("{b} {b50:.2} / {b99:.2} ({:.0}x)", b50 / p50)
                    })
                    .collect();
                println!(
                    "| {} | {name} | {p50:.2} / {p99:.2} | {s50:.2} / {s99:.2} | {l50:.2} / {l99:.2} | {} |",
                    s.events,
                    base.join("; ")
                );
            }
        }
        println!();
    }
}
