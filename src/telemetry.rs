//! What the server tells an operator about itself: the Prometheus series of
//! `GET /metrics` (docs/api.md lists them with their labels and meaning).
//!
//! The series are recorded with the `metrics` crate into the process's one recorder,
//! `metrics-exporter-prometheus`'s, which [`recorder`] installs on first use (it runs no
//! listener of its own: `GET /metrics` renders it). Until it is installed, recording is a
//! no-op, so the commands that open a store without serving (`import`, `compact`) record
//! nothing. The functions here are the only places names and labels are spelled.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const EVENTS: &str = "whatstat_events_total";
pub const HTTP_REQUESTS: &str = "whatstat_http_requests_total";
pub const HTTP_DURATION: &str = "whatstat_http_request_duration_seconds";
pub const WRITE_QUEUE_DEPTH: &str = "whatstat_write_queue_depth";
pub const COMMIT_DURATION: &str = "whatstat_commit_duration_seconds";
pub const COMMIT_BATCH_EVENTS: &str = "whatstat_commit_batch_events";
pub const ROWS_WRITTEN: &str = "whatstat_store_rows_written_total";
pub const SIGNATURE_FAILURES: &str = "whatstat_webhook_signature_failures_total";
pub const UNROUTED_PAYLOADS: &str = "whatstat_unrouted_payloads";
pub const COMPACTION_EXPIRED: &str = "whatstat_compaction_rows_expired_total";
pub const FORWARDING_DELIVERIES: &str = "whatstat_forwarding_deliveries";
pub const STREAM_CONNECTIONS: &str = "whatstat_stream_connections";

/// Bounds of the request and commit histograms, in seconds: from half a millisecond (a
/// cached read, a small group commit) to ten seconds (a large import batch on a slow disk).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bounds of events per commit: one event a request up to a 5,000-line import batch and
/// groups of many such requests.
const EVENTS_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 5_000.0, 10_000.0,
    25_000.0, 100_000.0,
];
/// How often the recorder's histograms are drained when no one scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Write jobs queued or being committed, over every store of the process.
static WRITE_QUEUE: AtomicI64 = AtomicI64::new(0);

/// The process's Prometheus recorder: installed (as the global `metrics` recorder) on the
/// first call, with its histogram buckets and the series described; later calls return
/// the same handle.
pub fn recorder() -> Result<PrometheusHandle, String> {
    RECORDER.get_or_init(install).clone()
}

fn install() -> Result<PrometheusHandle, String> {
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full(COMMIT_BATCH_EVENTS.into()), EVENTS_BUCKETS)
        })
        .map_err(|e| format!("metrics buckets: {e}"))?;
    let handle = builder
        .install_recorder()
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    let upkeep = handle.clone();
    // Histogram samples wait in the recorder until drained: drained here too, so that
    // memory stays bounded when no one scrapes.
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| format!("cannot start the metrics upkeep thread: {e}"))?;
    describe();
    Ok(handle)
}

/// Help texts, and every label value of the counters at zero, so that a series is there
/// from the start (a rate over a counter that appears late misses its first increase).
fn describe() {
    describe_counter!(
        EVENTS,
        "Events by what became of them: accepted, duplicate, ignored, or refused (every event of a request refused as invalid)"
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "Time from a request's arrival to its answer's head, by method and route template"
    );
    describe_gauge!(
        WRITE_QUEUE_DEPTH,
        "Write jobs queued for the store's group commit or being committed"
    );
    describe_histogram!(
        COMMIT_DURATION,
        Unit::Seconds,
        "Time of one group commit of the store, from its first job to the commit"
    );
    describe_histogram!(
        COMMIT_BATCH_EVENTS,
        "Events written by one group commit of the store"
    );
    describe_counter!(
        ROWS_WRITTEN,
        "Rows the store's group commits wrote: counters (one upsert per counter and commit) and states (entity states written)"
    );
    for table in ["counters", "states"] {
        counter!(ROWS_WRITTEN, "table" => table).increment(0);
    }
    describe_counter!(
        SIGNATURE_FAILURES,
        "Meta webhook POSTs refused for their signature: missing_signature or bad_signature"
    );
    describe_gauge!(
        UNROUTED_PAYLOADS,
        "Meta webhook payloads kept for numbers no account claims"
    );
    describe_counter!(
        COMPACTION_EXPIRED,
        "Rows compaction deleted: hourly and daily figures past their retention, entity states past the state window"
    );
    describe_gauge!(
        FORWARDING_DELIVERIES,
        "Webhook deliveries of the tee in the outbox: pending (being retried) or failed"
    );
    describe_gauge!(
        STREAM_CONNECTIONS,
        "Open live-update streams (GET /api/stream) of this server"
    );
    for outcome in [
        Outcome::Accepted,
        Outcome::Duplicate,
        Outcome::Ignored,
        Outcome::Refused,
    ] {
        events(outcome, 0);
    }
    for code in ["missing_signature", "bad_signature"] {
        counter!(SIGNATURE_FAILURES, "code" => code).increment(0);
    }
    compacted(0, 0, 0, 0);
    gauges(&Gauges::default());
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Ignored,
    /// In a request refused as invalid: nothing of it was applied.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Duplicate => "duplicate",
            Outcome::Ignored => "ignored",
            Outcome::Refused => "refused",
        }
    }
}

pub fn events(outcome: Outcome, n: u64) {
    counter!(EVENTS, "outcome" => outcome.as_str()).increment(n);
}

/// One accepted, duplicate and ignored count of an answer.
pub fn event_outcomes(accepted: u64, duplicates: u64, ignored: u64) {
    events(Outcome::Accepted, accepted);
    events(Outcome::Duplicate, duplicates);
    events(Outcome::Ignored, ignored);
}

/// An answered HTTP request; `route` is the matched route's template (`None`: no route).
pub fn http_request(method: &'static str, route: Option<&str>, status: u16, took: Duration) {
    let route = route.unwrap_or("unmatched").to_string();
    counter!(HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_DURATION, "method" => method, "route" => route).record(took.as_secs_f64());
}

/// A Meta webhook POST refused for its signature, by its error code.
pub fn signature_failure(code: &'static str) {
    counter!(SIGNATURE_FAILURES, "code" => code).increment(1);
}

/// What one compaction run deleted.
pub fn compacted(hourly: u64, daily: u64, states: u64, pruned_ids: u64) {
    counter!(COMPACTION_EXPIRED, "kind" => "hourly").increment(hourly);
    counter!(COMPACTION_EXPIRED, "kind" => "daily").increment(daily);
    counter!(COMPACTION_EXPIRED, "kind" => "states").increment(states);
    counter!(COMPACTION_EXPIRED, "kind" => "pruned_ids").increment(pruned_ids);
}

/// A write job entered a store's queue.
pub fn write_queued() {
    WRITE_QUEUE.fetch_add(1, Ordering::Relaxed);
}

/// Write jobs left a store's queue: committed, failed, or refused at the door.
pub fn write_unqueued(jobs: usize) {
    WRITE_QUEUE.fetch_sub(i64::try_from(jobs).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// A store's group commit succeeded: how long it took and how many events it wrote.
pub fn group_committed(took: Duration, events: usize) {
    histogram!(COMMIT_DURATION).record(took.as_secs_f64());
    histogram!(COMMIT_BATCH_EVENTS).record(events as f64);
}

/// Rows a committed group wrote: what its size costs the store, whatever the events were.
pub fn rows_written(counters: usize, states: usize) {
    counter!(ROWS_WRITTEN, "table" => "counters").increment(counters as u64);
    counter!(ROWS_WRITTEN, "table" => "states").increment(states as u64);
}

/// The gauges read when a scrape asks.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub unrouted_payloads: u64,
    pub forwarding_pending: u64,
    pub forwarding_failed: u64,
    pub stream_connections: u64,
}

/// Sets the gauges read at scrape time (the write queue's depth included).
pub fn gauges(g: &Gauges) {
    gauge!(WRITE_QUEUE_DEPTH).set(WRITE_QUEUE.load(Ordering::Relaxed).max(0) as f64);
    gauge!(UNROUTED_PAYLOADS).set(g.unrouted_payloads as f64);
    gauge!(FORWARDING_DELIVERIES, "state" => "pending").set(g.forwarding_pending as f64);
    gauge!(FORWARDING_DELIVERIES, "state" => "failed").set(g.forwarding_failed as f64);
    gauge!(STREAM_CONNECTIONS).set(g.stream_connections as f64);
}
