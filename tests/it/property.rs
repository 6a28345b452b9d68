//! The property test: random event streams (every event type of SPEC section 2) over a few
//! accounts and a span of days around local-midnight and daylight-saving edges, posted in
//! random order with re-sent events and re-sent whole batches, split over several requests.
//! Every figure of the three analytics endpoints (SPEC section 3) must equal a brute-force
//! recount over the raw events written here from the SPEC alone (no engine code is used).
//!
//! A second property runs the same over a year and more of history on a server that keeps
//! hourly figures 30 days and daily ones a year (SPEC section 4): every figure is checked
//! at a first "now", a few days later before compaction, after a compaction that runs while
//! more events arrive, after the clock has moved past the state window and compaction
//! has run again, and after events for what that compaction pruned arrive (statuses dated
//! with the history and dated now, repeats, replies, messages in pruned conversations, ...:
//! the recount models "pruned, so ignored", or a duplicate). A query the recount finds
//! reaching past a kept tier must be refused (400, naming what can be served); every other
//! one must equal the recount. Compaction must expire what has aged out, and find nothing
//! to do when run a second time.
//!
//! Reproduce a failing case with `PROPERTY_SEED=<seed> PROPERTY_SCALE=<scale> cargo test
//! --test it property::<test name>`; `PROPERTY_CASES=<n>` changes the number of random cases
//! (the compaction property runs a quarter as many, or `PROPERTY_COMPACTION_CASES`).

use crate::common;
use crate::recount;

use std::collections::{BTreeMap, BTreeSet};

use common::TestServer;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use recount::{
    CAMPAIGN_STATUSES, DAY, Entity, Ev, Fate, Forgotten, Kind, OUTCOMES, RATE_CARD, Retention,
    Tokens, ZONES, check_all, facts, fate, forgotten, kept, local_date, recount, recount_kept,
    recount_spans, start_of_day, to_json,
};
use reqwest::StatusCode;
use serde_json::Value;
use whatstat::engine::EngineConfig;
use whatstat::engine::rates::RateCard;
use whatstat::engine::retention::CompactionReport;

/// Events lie within this many days before "now" (inside the 35-day state window).
const SPAN_DAYS: i64 = 34;

const ACCOUNTS: [&str; 3] = ["acc-a", "acc-b", "acc-c"];
const MESSAGE_TYPES: [&str; 12] = [
    "text",
    "image",
    "video",
    "audio",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "template",
    "reaction",
    "button",
];
const KEYWORDS: [&str; 13] = [
    "order", "shipping", "return", "refund", "hello", "price", "menu", "agent", "stop", "help",
    "cancel", "track", "hours",
];
const FLOW_NAMES: [&str; 5] = ["Order Status", "FAQ", "Booking", "Support", "Returns"];

// ---------------------------------------------------------------------------------------
// Generation
// ---------------------------------------------------------------------------------------

struct Gen {
    rng: StdRng,
    now: i64,
    lo: i64,
    /// Local midnights of every zone over the span, and daylight-saving switches.
    edges: Vec<i64>,
}

impl Gen {
    fn new(seed: u64, now: i64) -> Self {
        Self::with_span(seed, now, SPAN_DAYS)
    }

    /// Events within `span_days` days before `now`.
    fn with_span(seed: u64, now: i64, span_days: i64) -> Self {
        let lo = now - span_days * DAY;
        let mut edges = Vec::new();
        for zone in ZONES {
            let tz = TimeZone::get(zone).expect("zone");
            let first = Timestamp::from_second(lo)
                .expect("ts")
                .to_zoned(tz.clone())
                .date();
            let mut d = first.yesterday().expect("date");
            while start_of_day(&tz, d) <= now + DAY {
                edges.push(start_of_day(&tz, d));
                d = d.tomorrow().expect("date");
            }
        }
        // America/New_York daylight-saving switches (UTC instants).
        for s in [
            "2023-03-12T07:00:00Z",
            "2023-11-05T06:00:00Z",
            "2024-03-10T07:00:00Z",
            "2024-11-03T06:00:00Z",
            "2025-03-09T07:00:00Z",
            "2025-11-02T06:00:00Z",
        ] {
            let t = s.parse::<Timestamp>().expect("ts").as_second();
            if t > lo && t < now {
                for k in -2..=2 {
                    edges.push(t + k * 3600);
                }
            }
        }
        Gen {
            rng: StdRng::seed_from_u64(seed),
            now,
            lo,
            edges,
        }
    }

    fn clamp(&self, t: i64) -> i64 {
        t.clamp(self.lo, self.now)
    }

    /// A timestamp in the span, often right at or around a local-midnight edge.
    fn ts(&mut self) -> i64 {
        let r = self.rng.random_range(0..100);
        let t = if r < 35 {
            self.rng.random_range(self.lo..=self.now)
        } else if r < 92 {
            let e = *self.edges.choose(&mut self.rng).expect("edges");
            let delta = match self.rng.random_range(0..6) {
                0 => 0,
                1 => -1,
                2 => 1,
                3 => self.rng.random_range(-120..=120),
                _ => self.rng.random_range(-5400..=5400),
            };
            e + delta
        } else {
            self.now - self.rng.random_range(0..900)
        };
        self.clamp(t)
    }

    /// A time after `t` (within `max` seconds), now and then a little before it.
    fn after(&mut self, t: i64, max: i64) -> i64 {
        let r = self.rng.random_range(0..100);
        let u = if r < 6 {
            t - self.rng.random_range(1..3600)
        } else if r < 12 {
            t
        } else {
            t + self.rng.random_range(1..=max)
        };
        self.clamp(u)
    }

    fn acc(&mut self) -> String {
        // Skewed, so one account is small.
        let r = self.rng.random_range(0..10);
        ACCOUNTS[if r < 5 {
            0
        } else if r < 9 {
            1
        } else {
            2
        }]
        .to_string()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }
}

fn ev(acc: &str, ts: i64, kind: Kind) -> Ev {
    Ev {
        acc: acc.to_string(),
        ts,
        kind,
    }
}

/// The distinct events of one random case (before re-sending), in generation order.
fn generate(g: &mut Gen, scale: usize) -> Vec<Ev> {
    let mut out = Vec::new();
    let n = scale;

    // Contacts: ids shared between accounts, some re-sent with another (earlier or later) time.
    for acc in ACCOUNTS {
        let t = g.ts();
        out.push(ev(
            acc,
            t,
            Kind::Contact {
                id: "c-first".into(),
            },
        ));
    }
    for _ in 0..2 * n {
        let acc = g.acc();
        let id = format!("c{}", g.rng.random_range(0..2 * n));
        let t = g.ts();
        out.push(ev(&acc, t, Kind::Contact { id: id.clone() }));
        if g.chance(0.2) {
            let t2 = g.ts();
            out.push(ev(&acc, t2, Kind::Contact { id }));
        }
    }

    // Conversations.
    let mut convs: Vec<(String, String, i64)> = Vec::new();
    for i in 0..n {
        let acc = g.acc();
        let id = format!("v{i}");
        let start = g.ts();
        if g.chance(0.9) {
            out.push(ev(
                &acc,
                start,
                Kind::Conversation {
                    id: id.clone(),
                    status: "started",
                },
            ));
            if g.chance(0.15) {
                // A second `started` with another time: the earliest counts.
                let t2 = g.after(start, 4 * 3600);
                out.push(ev(
                    &acc,
                    t2,
                    Kind::Conversation {
                        id: id.clone(),
                        status: "started",
                    },
                ));
            }
        }
        let mut prev: Option<i64> = None;
        for outcome in OUTCOMES {
            if g.chance(0.45) {
                let t = match prev {
                    Some(p) if g.chance(0.3) => p, // a tie between competing outcomes
                    _ => g.after(start, 3 * 3600),
                };
                prev = Some(t);
                out.push(ev(
                    &acc,
                    t,
                    Kind::Conversation {
                        id: id.clone(),
                        status: outcome,
                    },
                ));
            }
        }
        convs.push((acc, id, start));
    }

    // Messages, some in conversations, with their statuses.
    let mut used = BTreeSet::new();
    for i in 0..4 * n {
        let (acc, conv, base) = if !convs.is_empty() && g.chance(0.35) {
            let (a, c, s) = convs.choose(&mut g.rng).expect("conv").clone();
            let t = g.after(s, 2 * 3600);
            (a, Some(c), t)
        } else {
            let acc = g.acc();
            let conv = if g.chance(0.05) {
                Some(format!("v-missing{i}"))
            } else {
                None
            };
            let t = g.ts();
            (acc, conv, t)
        };
        // Ids collide across accounts now and then.
        let id = format!("wamid.{}", g.rng.random_range(0..3 * n));
        if !used.insert((acc.clone(), id.clone())) {
            continue;
        }
        let inbound = g.chance(0.4);
        let mtype = MESSAGE_TYPES.choose(&mut g.rng).expect("type").to_string();
        let arrives = inbound || g.chance(0.8);
        if arrives {
            out.push(ev(
                &acc,
                base,
                Kind::Message {
                    id: id.clone(),
                    inbound,
                    mtype,
                    conv,
                },
            ));
        }
        if inbound {
            continue;
        }
        // Replies: some answered twice, some told before the message (or its only trace).
        for j in 0..g.rng.random_range(0..3) {
            if g.chance(0.4) {
                let t = if g.chance(0.3) {
                    g.ts()
                } else {
                    g.after(base, DAY)
                };
                let reply = format!("wamid.r{i}-{j}");
                let to = id.clone();
                out.push(ev(&acc, t, Kind::Reply { id: reply, to }));
            }
        }
        for status in ["sent", "delivered", "read", "failed"] {
            let p = match status {
                "sent" => 0.7,
                "delivered" => 0.55,
                "read" => 0.35,
                _ => 0.2,
            };
            if g.chance(p) {
                let t = g.after(base, 2 * DAY);
                out.push(ev(
                    &acc,
                    t,
                    Kind::Status {
                        msg: id.clone(),
                        status,
                    },
                ));
                if g.chance(0.1) {
                    // The same status again with another time.
                    let t2 = g.after(base, 2 * DAY);
                    out.push(ev(
                        &acc,
                        t2,
                        Kind::Status {
                            msg: id.clone(),
                            status,
                        },
                    ));
                }
            }
        }
        if g.chance(0.05) {
            let status = if g.chance(0.5) { "played" } else { "deleted" };
            let t = g.after(base, DAY);
            out.push(ev(
                &acc,
                t,
                Kind::Status {
                    msg: id.clone(),
                    status,
                },
            ));
        }
    }
    // Statuses for a message id nobody ever sends (only ignored ones: no figure moves).
    if g.chance(0.5) {
        let acc = g.acc();
        let t = g.ts();
        out.push(ev(
            &acc,
            t,
            Kind::Status {
                msg: "wamid.ghost".into(),
                status: "deleted",
            },
        ));
    }

    // Campaigns: random status histories, with ties.
    for i in 0..(n / 2).max(1) {
        let acc = g.acc();
        let id = format!("camp{i}");
        let base = g.ts();
        let mut any = false;
        for status in CAMPAIGN_STATUSES {
            let p = match status {
                "created" | "running" => 0.6,
                "completed" => 0.4,
                _ => 0.2,
            };
            if g.chance(p) || (!any && status == "failed") {
                any = true;
                let t = if g.chance(0.25) { base } else { g.ts() };
                out.push(ev(
                    &acc,
                    t,
                    Kind::Campaign {
                        id: id.clone(),
                        status,
                    },
                ));
            }
        }
    }

    // Flow runs.
    for i in 0..n {
        let acc = g.acc();
        let id = format!("run{i}");
        let name = FLOW_NAMES.choose(&mut g.rng).expect("flow").to_string();
        let conv = if g.chance(0.5) {
            convs.choose(&mut g.rng).map(|c| c.1.clone())
        } else {
            None
        };
        let start = g.ts();
        if g.chance(0.9) {
            let k = Kind::Flow {
                id: id.clone(),
                name: name.clone(),
                completed: false,
                conv: conv.clone(),
            };
            out.push(ev(&acc, start, k));
        }
        if g.chance(0.6) {
            let t = g.after(start, 3600);
            out.push(ev(
                &acc,
                t,
                Kind::Flow {
                    id,
                    name,
                    completed: true,
                    conv,
                },
            ));
        }
    }

    // Keyword hits, with and without id.
    for i in 0..2 * n {
        let acc = g.acc();
        let keyword = KEYWORDS[g
            .rng
            .random_range(0..KEYWORDS.len())
            .min(g.rng.random_range(0..KEYWORDS.len()))];
        let id = if g.chance(0.5) {
            Some(format!("kw{i}"))
        } else {
            None
        };
        let conv = if g.chance(0.3) {
            convs.choose(&mut g.rng).map(|c| c.1.clone())
        } else {
            None
        };
        let t = g.ts();
        out.push(ev(
            &acc,
            t,
            Kind::Keyword {
                id,
                keyword: keyword.to_string(),
                conv,
            },
        ));
    }

    // AI requests.
    for i in 0..n {
        let acc = g.acc();
        let tokens = if g.chance(0.5) {
            Tokens::Total(g.rng.random_range(0..4000))
        } else {
            Tokens::Split(g.rng.random_range(0..3000), g.rng.random_range(0..1500))
        };
        let model = match g.rng.random_range(0..3) {
            0 => None,
            1 => Some("gpt-4o-mini".to_string()),
            _ => Some("claude-3-haiku".to_string()),
        };
        let cost_micro = if g.chance(0.5) {
            Some(g.rng.random_range(0..40_000))
        } else {
            None
        };
        let id = if g.chance(0.5) {
            Some(format!("ai{i}"))
        } else {
            None
        };
        let t = g.ts();
        out.push(ev(
            &acc,
            t,
            Kind::Ai {
                id,
                tokens,
                model,
                cost_micro,
            },
        ));
    }
    out
}

/// The requests of one case: the events, some re-sent, shuffled, split into batches, some
/// whole batches re-sent later.
fn batches(rng: &mut StdRng, events: &[Ev]) -> Vec<Vec<(Ev, usize)>> {
    let mut all: Vec<(Ev, usize)> = Vec::new();
    for e in events {
        all.push((e.clone(), rng.random_range(0..5)));
        if rng.random_bool(0.12) {
            all.push((e.clone(), rng.random_range(0..5)));
        }
    }
    all.shuffle(rng);
    let mut out: Vec<Vec<(Ev, usize)>> = Vec::new();
    let mut rest = &all[..];
    while !rest.is_empty() {
        let max = (all.len() / 3).max(1);
        let k = rng.random_range(1..=max).min(rest.len());
        out.push(rest[..k].to_vec());
        rest = &rest[k..];
    }
    for _ in 0..rng.random_range(0..=2) {
        let b = out.choose(rng).expect("batch").clone();
        let at = rng.random_range(0..=out.len());
        out.insert(at, b);
    }
    out
}

// ---------------------------------------------------------------------------------------
// The property
// ---------------------------------------------------------------------------------------

fn secs(s: &str) -> i64 {
    s.parse::<Timestamp>().expect("timestamp").as_second()
}

/// Runs one case; returns a description of every disagreement.
fn run_case(seed: u64, scale: usize) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    // "Now" near month, year and daylight-saving edges.
    let anchors = [
        "2024-03-11T04:10:00Z",
        "2024-11-04T05:00:30Z",
        "2025-01-01T18:40:00Z",
        "2024-12-31T18:20:00Z",
        "2025-03-09T12:00:00Z",
        "2024-04-01T00:00:00Z",
        "2024-12-02T04:59:59Z",
    ];
    let anchor = secs(anchors.choose(&mut rng).expect("anchor"));
    let now = anchor
        + match rng.random_range(0..3) {
            0 => 0,
            1 => rng.random_range(-3600..3600),
            _ => rng.random_range(0..3 * DAY),
        };
    let mut g = Gen::new(rng.random(), now);
    let events = generate(&mut g, scale);
    let zones = [
        *["Asia/Kolkata", "Asia/Kathmandu"]
            .choose(&mut rng)
            .expect("zone"),
        "America/New_York",
    ];

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let server = TestServer::start_with(EngineConfig {
            rate_card: RateCard::parse(RATE_CARD, "USD").expect("the recount's card"),
            ..EngineConfig::default()
        })
        .await;
        server.set_now(now);
        let mut errs = Vec::new();
        for zone in zones {
            let key = server.create_org(&format!("org {zone}"), zone).await;
            let plan = batches(&mut rng, &events);
            let mut posted: Vec<Ev> = Vec::new();
            let (mut accepted, mut duplicates) = (0, 0);
            for batch in &plan {
                let events: Vec<Value> = batch.iter().map(|(e, s)| to_json(e, *s)).collect();
                let (status, answer) = if rng.random_bool(0.3) {
                    let ndjson: String = events.iter().map(|e| format!("{e}\n")).collect();
                    let req = server
                        .client
                        .post(format!("{}/api/events", server.base))
                        .bearer_auth(&key)
                        .header("Content-Type", "application/x-ndjson")
                        .body(ndjson);
                    server.send(req).await
                } else {
                    server.post_events(&key, &Value::Array(events)).await
                };
                if status != StatusCode::OK {
                    return Err(format!("seed {seed} scale {scale}: POST answered {status}: {answer}"));
                }
                accepted += answer["data"]["accepted"].as_i64().unwrap_or(-1_000_000);
                duplicates += answer["data"]["duplicates"].as_i64().unwrap_or(-1_000_000);
                posted.extend(batch.iter().map(|(e, _)| e.clone()));
            }
            let ignored = posted
                .iter()
                .filter(|e| matches!(e.kind, Kind::Status { status, .. } if status == "played" || status == "deleted"))
                .count() as i64;
            let new = expected_accepted(&posted);
            if accepted != new || accepted + duplicates + ignored != posted.len() as i64 {
                errs.push(format!(
                    "{zone}: accepted {accepted} (expected {new}) + duplicates {duplicates} + ignored \
                     {ignored} != posted {}",
                    posted.len()
                ));
            }
            let tz = TimeZone::get(zone).expect("zone");
            let today = local_date(&tz, now);
            let a = rng.random_range(0..=SPAN_DAYS + 1);
            let b = rng.random_range(0..=a);
            let ranges = [
                (local_date(&tz, now - (SPAN_DAYS + 1) * DAY), today),
                (today - a.days(), today - b.days()),
            ];
            let expected = recount(&posted, now, zone, &ranges);
            // 4 account filters x (2 ranges x (4 granularities x (messages + chatbot timeline)
            // + chatbot) + 1 + 4 periods).
            // + campaigns, templates and costs per range.
            assert_eq!(expected.checks.len(), 116, "the recount covers every query");
            for e in check_all(&server, &key, &expected).await {
                errs.push(format!("{zone}: {e}"));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            let n = errs.len();
            errs.truncate(25);
            Err(format!(
                "seed {seed} scale {scale} now {now} ({}): {n} disagreements, first ones:\n{}",
                Timestamp::from_second(now).expect("ts"),
                errs.join("\n")
            ))
        }
    })
}

/// How many of the posted events are new: one per dedup key (SPEC section 2), every
/// keyword hit or AI request without an id, no unknown (ignored) status.
fn expected_accepted(posted: &[Ev]) -> i64 {
    let mut keys = BTreeSet::new();
    let mut n = 0;
    for e in posted {
        let key = match &e.kind {
            Kind::Contact { id } => format!("contact/{id}"),
            Kind::Message { id, .. } | Kind::Reply { id, .. } => format!("message/{id}"),
            Kind::Status { status, .. } if *status == "played" || *status == "deleted" => continue,
            Kind::Status { msg, status } => format!("status/{msg}/{status}"),
            Kind::Campaign { id, status } => format!("campaign/{id}/{status}"),
            Kind::Conversation { id, status } => format!("conversation/{id}/{status}"),
            Kind::Flow { id, completed, .. } => format!("flow/{id}/{completed}"),
            Kind::Keyword { id: Some(id), .. } => format!("keyword/{id}"),
            Kind::Ai { id: Some(id), .. } => format!("ai/{id}"),
            Kind::Keyword { .. } | Kind::Ai { .. } => {
                n += 1;
                continue;
            }
        };
        n += keys.insert((e.acc.clone(), key)) as i64;
    }
    n
}

// ---------------------------------------------------------------------------------------
// Across compaction (SPEC section 4)
// ---------------------------------------------------------------------------------------

const HOURLY_DAYS: i64 = 30;
const DAILY_DAYS: i64 = 365;
/// The state window (the engine's default, 35 days).
const WINDOW: i64 = 35 * DAY;
/// The oldest history, in days before the first "now": past the daily tier's year once the
/// clock has advanced.
const HISTORY_DAYS: i64 = 400;

fn retention() -> Retention {
    Retention {
        hourly_days: Some(HOURLY_DAYS),
        daily_days: Some(DAILY_DAYS),
    }
}

/// Renames every id but contacts' so that separately generated sets share none (events for
/// what the state window pruned are posted on purpose, see `late_events`). Contacts (kept forever, counted at their earliest
/// time) keep theirs, so the sets share some. Campaigns are renamed as well: a campaign's
/// state is its latest status by time, but what a repeated status with another time does
/// is disputed (see `more_events`).
fn prefix_ids(events: &mut [Ev], p: &str) {
    let pre = |s: &mut String| *s = format!("{p}{s}");
    for e in events {
        match &mut e.kind {
            Kind::Contact { .. } => {}
            Kind::Campaign { id, .. } => pre(id),
            Kind::Message { id, conv, .. } => {
                pre(id);
                conv.iter_mut().for_each(pre);
            }
            Kind::Status { msg, .. } => pre(msg),
            Kind::Reply { id, to } => {
                pre(id);
                pre(to);
            }
            Kind::Conversation { id, .. } => pre(id),
            Kind::Flow { id, conv, .. }
            | Kind::Keyword {
                id: Some(id), conv, ..
            } => {
                pre(id);
                conv.iter_mut().for_each(pre);
            }
            Kind::Keyword { id: None, conv, .. } => conv.iter_mut().for_each(pre),
            Kind::Ai { id, .. } => id.iter_mut().for_each(pre),
        }
    }
}

/// One organization of a compaction case, with everything posted to it.
struct OrgRun {
    zone: &'static str,
    key: String,
    /// What counts of what was posted (see `recount::fate`).
    posted: Vec<Ev>,
    accepted: i64,
    duplicates: i64,
    /// How many events the answers reported in `ignored`.
    ignored: i64,
    /// What the last compaction pruned, and the events posted since that it makes a
    /// duplicate or ignored.
    forgotten: Forgotten,
    late_duplicates: i64,
    late_ignored: i64,
    /// The random range of the first check, checked again at every later "now".
    sticky: Option<(jiff::civil::Date, jiff::civil::Date)>,
}

/// Posts `events` as random requests (re-sent events and batches, JSON or NDJSON), with
/// `?backfill=true` whenever a request holds history older than the state window at `now`
/// (and now and then when it does not).
async fn post_events(
    server: &TestServer,
    rng: &mut StdRng,
    org: &mut OrgRun,
    events: &[Ev],
    now: i64,
) -> Result<(), String> {
    for batch in batches(rng, events) {
        let history = batch.iter().any(|(e, _)| e.ts < now - WINDOW);
        let backfill = history || rng.random_bool(0.2);
        let json: Vec<Value> = batch.iter().map(|(e, s)| to_json(e, *s)).collect();
        let (status, answer) = if rng.random_bool(0.3) {
            let ndjson: String = json.iter().map(|e| format!("{e}\n")).collect();
            let query = if backfill { "?backfill=true" } else { "" };
            let req = server
                .client
                .post(format!("{}/api/events{query}", server.base))
                .bearer_auth(&org.key)
                .header("Content-Type", "application/x-ndjson")
                .body(ndjson);
            server.send(req).await
        } else if backfill {
            server.post_backfill(&org.key, &Value::Array(json)).await
        } else {
            server.post_events(&org.key, &Value::Array(json)).await
        };
        if status != StatusCode::OK {
            return Err(format!(
                "{}: POST (backfill {backfill}) answered {status}: {answer}",
                org.zone
            ));
        }
        org.accepted += answer["data"]["accepted"].as_i64().unwrap_or(-1_000_000);
        org.duplicates += answer["data"]["duplicates"].as_i64().unwrap_or(-1_000_000);
        org.ignored += answer["data"]["ignored"]
            .as_array()
            .map_or(-1_000_000, |i| i.len() as i64);
        for (e, _) in batch {
            match fate(&e, &org.forgotten) {
                Fate::Counts(e) => org.posted.push(e),
                Fate::Duplicate => org.late_duplicates += 1,
                Fate::Ignored => org.late_ignored += 1,
            }
        }
    }
    Ok(())
}

/// Events for what a compaction pruned, posted after it at `now`: counted statuses dated
/// with their message (history, so with backfill) or now, unknown statuses, replies to
/// pruned messages, conversation outcomes and new messages in pruned conversations, flow
/// events, keyword hits and AI calls with a pruned id, and repeats of pruned messages.
fn late_events(rng: &mut StdRng, posted: &[Ev], pruned: &Forgotten, now: i64) -> Vec<Ev> {
    let mut late = Vec::new();
    for (n, ((acc, entity), &at)) in pruned.pruned.iter().enumerate() {
        if !rng.random_bool(0.3) {
            continue;
        }
        let t = if rng.random_bool(0.5) {
            (at + rng.random_range(0..2 * DAY)).min(now)
        } else {
            now - rng.random_range(0..DAY)
        };
        let kind = match entity {
            Entity::Message(id) => match rng.random_range(0..5) {
                0..=2 => Kind::Status {
                    msg: id.clone(),
                    status: ["sent", "delivered", "read", "failed"]
                        .choose(rng)
                        .expect("status"),
                },
                3 => Kind::Reply {
                    id: format!("late-r{n}"),
                    to: id.clone(),
                },
                _ => Kind::Status {
                    msg: id.clone(),
                    status: "played",
                },
            },
            Entity::Conversation(id) => {
                // A message in it, an event of its own, or both (in any order).
                let both = rng.random_bool(0.4);
                if both || rng.random_bool(0.5) {
                    let t = now - rng.random_range(0..DAY);
                    let kind = Kind::Message {
                        id: format!("late-m{n}"),
                        inbound: rng.random_bool(0.5),
                        mtype: MESSAGE_TYPES.choose(rng).expect("type").to_string(),
                        conv: Some(id.clone()),
                    };
                    late.push(ev(acc, t, kind));
                    if !both {
                        continue;
                    }
                }
                Kind::Conversation {
                    id: id.clone(),
                    status: ["started", "auto_resolved", "transferred", "abandoned"]
                        .choose(rng)
                        .expect("status"),
                }
            }
            Entity::Flow(id) => Kind::Flow {
                id: id.clone(),
                name: FLOW_NAMES.choose(rng).expect("flow").to_string(),
                completed: rng.random_bool(0.5),
                conv: None,
            },
            Entity::Keyword(id) => Kind::Keyword {
                id: Some(id.clone()),
                keyword: "late".into(),
                conv: None,
            },
            Entity::Ai(id) => Kind::Ai {
                id: Some(id.clone()),
                tokens: Tokens::Total(7),
                model: None,
                cost_micro: Some(70),
            },
        };
        late.push(ev(acc, t, kind));
    }
    for e in posted {
        if let Kind::Message { id, .. } = &e.kind
            && pruned
                .pruned
                .contains_key(&(e.acc.clone(), Entity::Message(id.clone())))
            && rng.random_bool(0.1)
        {
            late.push(e.clone());
        }
    }
    late
}

/// The local-date ranges checked at `now`: about a year of whole months up to today, a
/// random range over the whole history (often on month edges), ranges around where the
/// hourly and the daily tiers end, and the first check's random range. None exceeds
/// 10,000 hours, so every refusal is about the tiers.
fn compaction_ranges(
    rng: &mut StdRng,
    tz: &TimeZone,
    now: i64,
    sticky: &mut Option<(jiff::civil::Date, jiff::civil::Date)>,
) -> Vec<(jiff::civil::Date, jiff::civil::Date)> {
    let today = local_date(tz, now);
    let a = rng.random_range(0..=HISTORY_DAYS + 10);
    let b = rng.random_range(0..=a);
    let mut first = today - a.days();
    let mut last = today - b.days();
    if rng.random_bool(0.4) {
        first = first.first_of_month();
    }
    if rng.random_bool(0.3) {
        last = last.last_of_month().min(today);
    }
    let k = kept(tz, now, &retention());
    let near_hours = local_date(tz, k.hour) + rng.random_range(-1..=1).days();
    let mut near_days = local_date(tz, k.day) + rng.random_range(-1..=1).days();
    if rng.random_bool(0.3) {
        near_days = near_days.first_of_month();
    }
    let mut ranges = vec![
        (
            today
                .checked_sub(12.months())
                .expect("date")
                .first_of_month(),
            today,
        ),
        (first, last),
        (
            near_hours,
            (near_hours + rng.random_range(0..=2).days()).min(today),
        ),
        (
            near_days,
            (near_days + rng.random_range(0..=40).days()).min(today),
        ),
    ];
    match sticky {
        Some(r) => ranges.push(*r),
        None => *sticky = Some((first, last)),
    }
    ranges
}

/// Checks every figure of every organization against the recount at `now`.
async fn check_orgs(
    server: &TestServer,
    rng: &mut StdRng,
    orgs: &mut [OrgRun],
    now: i64,
    step: &str,
    errs: &mut Vec<String>,
) {
    for org in orgs.iter_mut() {
        let tz = TimeZone::get(org.zone).expect("zone");
        let ranges = compaction_ranges(rng, &tz, now, &mut org.sticky);
        let mut expected = recount_kept(&org.posted, now, org.zone, &ranges, &retention());
        // Instants around where the hourly tier ends (some not on a local hour) and around
        // where the daily one does.
        let k = kept(&tz, now, &retention());
        let a = k.hour + rng.random_range(-2..=1) * 3600;
        let b = k.hour + rng.random_range(-3..=3) * 900;
        let d = local_date(&tz, k.day) + rng.random_range(-1..=1).days();
        let c = start_of_day(&tz, d);
        let spans = [
            (a, a + rng.random_range(1..=4) * 3600),
            (b, b + rng.random_range(1..=3) * 3600),
            (
                c,
                if rng.random_bool(0.6) {
                    start_of_day(&tz, d + rng.random_range(1..=2).days())
                } else {
                    c + rng.random_range(1..=3) * 3600
                },
            ),
        ];
        expected
            .checks
            .extend(recount_spans(&org.posted, now, org.zone, &spans, &retention()).checks);
        for e in check_all(server, &org.key, &expected).await {
            errs.push(format!("{step}, {}: {e}", org.zone));
        }
    }
}

/// What a compaction at `now` must at least expire, given that the previous one ran at
/// `prev` (or none did): an hour or a day that holds a message and has aged out of its
/// tier since, and the state of a message whose window has ended since.
fn must_expire(orgs: &[OrgRun], prev: Option<i64>, ingested: i64, now: i64) -> [bool; 3] {
    let mut out = [false; 3];
    for org in orgs {
        let tz = TimeZone::get(org.zone).expect("zone");
        // Rows were written from the tiers' bounds when the events came (or, for rows that
        // older compactions expired, from their bounds).
        let from = kept(&tz, prev.unwrap_or(ingested), &retention());
        let to = kept(&tz, now, &retention());
        for m in facts(&org.posted).messages {
            out[0] |= from.hour <= m.ts && m.ts < to.hour;
            out[1] |= from.day <= m.ts && m.ts < to.day;
            out[2] |= m.ts + WINDOW < now && prev.is_none_or(|p| m.ts + WINDOW >= p);
        }
    }
    out
}

fn check_report(r: &CompactionReport, must: [bool; 3], step: &str, errs: &mut Vec<String>) {
    let got = [r.hourly_rows_expired, r.daily_rows_expired, r.states_pruned];
    for (i, what) in ["hourly rows", "daily rows", "states"].iter().enumerate() {
        if must[i] && got[i] == 0 {
            errs.push(format!("{step}: compaction expired no {what}: {r:?}"));
        }
    }
    if r.organizations != 2 {
        errs.push(format!(
            "{step}: compaction saw {} organizations",
            r.organizations
        ));
    }
}

fn check_idle(r: &CompactionReport, step: &str, errs: &mut Vec<String>) {
    if r.hourly_rows_expired + r.daily_rows_expired + r.states_pruned + r.pruned_ids_expired != 0 {
        errs.push(format!(
            "{step}: a second compaction still found work: {r:?}"
        ));
    }
}

/// The events that come while compaction runs at `now1`, after `events`: new ones from the
/// last 30 days; contacts, some already known, with timestamps over the whole history;
/// campaign statuses at old timestamps, new ones and repeats of ones a campaign already has
/// (a repeat changes no figure unless it is earlier); and late statuses for messages whose
/// state is still kept, some of them past their hour's tier.
fn more_events(rng: &mut StdRng, events: &[Ev], now1: i64, scale: usize) -> Vec<Ev> {
    let mut more = generate(&mut Gen::new(rng.random(), now1), scale / 2 + 1);
    more.iter_mut()
        .for_each(|e| e.ts = e.ts.max(now1 - HOURLY_DAYS * DAY));
    prefix_ids(&mut more, "n-");
    let mut old = Gen::with_span(rng.random(), now1, HISTORY_DAYS);
    for _ in 0..scale / 4 + 1 {
        let (acc, t) = (old.acc(), old.ts());
        let id = format!("c{}", old.rng.random_range(0..2 * scale));
        more.push(ev(&acc, t, Kind::Contact { id }));
    }
    let mut campaigns: BTreeMap<(String, String), BTreeSet<&str>> = BTreeMap::new();
    for e in events {
        if let Kind::Campaign { id, status } = &e.kind {
            campaigns
                .entry((e.acc.clone(), id.clone()))
                .or_default()
                .insert(status);
        }
    }
    for ((acc, id), _) in campaigns {
        if let Some(status) = CAMPAIGN_STATUSES.choose(rng)
            && rng.random_bool(0.5)
        {
            let t = old.ts();
            let id = id.clone();
            more.push(ev(&acc, t, Kind::Campaign { id, status }));
        }
    }
    let from = now1 - WINDOW + DAY;
    for e in events {
        if let Kind::Message {
            id, inbound: false, ..
        } = &e.kind
            && e.ts >= from
            && rng.random_bool(0.3)
        {
            let status = *["sent", "delivered", "read", "failed"]
                .choose(rng)
                .expect("status");
            let t = rng.random_range(e.ts.max(from)..=now1);
            let msg = id.clone();
            more.push(ev(&e.acc, t, Kind::Status { msg, status }));
        }
    }
    more
}

/// One compaction case: a year and more of history and a busy last month, posted at a
/// first "now"; every figure is checked there, then after the clock advances a few days
/// (before compaction), after compacting while more events come (new ones, late statuses
/// for messages still in the window, contacts and campaigns with old timestamps), and
/// after the clock moves past the state window and compaction runs again.
fn run_compaction_case(seed: u64, scale: usize) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let anchors = [
        "2024-03-11T04:10:00Z",
        "2024-11-04T05:00:30Z",
        "2025-01-01T18:40:00Z",
        "2024-12-31T18:20:00Z",
        "2025-03-09T12:00:00Z",
        "2024-04-01T00:00:00Z",
        "2024-12-02T04:59:59Z",
    ];
    let now0 = secs(anchors.choose(&mut rng).expect("anchor")) + rng.random_range(-DAY..3 * DAY);
    let now1 = now0 + rng.random_range(1..=6) * DAY + rng.random_range(0..DAY);
    let now2 = now1 + rng.random_range(36..=50) * DAY + rng.random_range(0..DAY);

    // The first events: a busy last month, and a sparser history of more than a year.
    let mut events = generate(&mut Gen::new(rng.random(), now0), scale);
    let mut history = generate(
        &mut Gen::with_span(rng.random(), now0, HISTORY_DAYS),
        scale / 2 + 1,
    );
    prefix_ids(&mut history, "h-");
    events.extend(history);
    let zones = [
        *["Asia/Kolkata", "Asia/Kathmandu"]
            .choose(&mut rng)
            .expect("zone"),
        "America/New_York",
    ];
    // Messages right where the hourly tier ends at `now1` and the daily one at `now1` and
    // `now2`, in each zone: what compaction deletes and what it keeps meet there. (Where
    // the hourly tier ends at `now2` is after `now0`.)
    for zone in zones {
        let tz = TimeZone::get(zone).expect("zone");
        let (k1, k2) = (kept(&tz, now1, &retention()), kept(&tz, now2, &retention()));
        for edge in [k1.hour, k1.day, k2.day] {
            {
                for dt in [-1, 0, 1799] {
                    let id = format!("e-{}", events.len());
                    let (acc, t) = (ACCOUNTS[events.len() % 3], edge + dt);
                    let mtype = "template".to_string();
                    let kind = Kind::Message {
                        id: id.clone(),
                        inbound: false,
                        mtype,
                        conv: None,
                    };
                    events.push(ev(acc, t, kind));
                    let status = *["delivered", "read", "failed"]
                        .choose(&mut rng)
                        .expect("status");
                    let t = t + rng.random_range(0..2 * DAY);
                    events.push(ev(acc, t, Kind::Status { msg: id, status }));
                }
            }
        }
    }

    let more = more_events(&mut rng, &events, now1, scale);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    runtime.block_on(async {
        let server = TestServer::start_with(EngineConfig {
            hourly_retention_days: Some(HOURLY_DAYS),
            daily_retention_days: Some(DAILY_DAYS),
            state_window_secs: WINDOW,
            rate_card: RateCard::parse(RATE_CARD, "USD").expect("the recount's card"),
            ..EngineConfig::default()
        })
        .await;
        server.set_now(now0);
        let mut orgs = Vec::new();
        for zone in zones {
            let key = server.create_org(&format!("org {zone}"), zone).await;
            orgs.push(OrgRun {
                zone,
                key,
                posted: Vec::new(),
                accepted: 0,
                duplicates: 0,
                ignored: 0,
                forgotten: Forgotten::default(),
                late_duplicates: 0,
                late_ignored: 0,
                sticky: None,
            });
        }
        let mut errs = Vec::new();

        for org in &mut orgs {
            post_events(&server, &mut rng, org, &events, now0).await?;
        }
        check_orgs(&server, &mut rng, &mut orgs, now0, "at the first now", &mut errs).await;

        // A few days on: hours have aged out of their tier but are not compacted yet.
        server.set_now(now1);
        check_orgs(&server, &mut rng, &mut orgs, now1, "days later, before compaction", &mut errs).await;
        let must = must_expire(&orgs, None, now0, now1);
        for org in &mut orgs {
            org.forgotten = forgotten(&org.posted, now1, WINDOW);
        }
        let (report, posted) = tokio::join!(server.services.compaction.compact(), async {
            for org in &mut orgs {
                post_events(&server, &mut rng, org, &more, now1).await?;
            }
            Ok::<(), String>(())
        });
        posted?;
        let report = report.map_err(|e| format!("compaction failed: {e}"))?;
        check_report(&report, must, "first compaction", &mut errs);
        let again = server.services.compaction.compact().await.map_err(|e| format!("compaction failed: {e}"))?;
        check_idle(&again, "first compaction", &mut errs);
        check_orgs(&server, &mut rng, &mut orgs, now1, "after the first compaction", &mut errs).await;

        // Past the state window of the first events: states go, and days past a year.
        server.set_now(now2);
        let must = must_expire(&orgs, Some(now1), now0, now2);
        for org in &mut orgs {
            org.forgotten = forgotten(&org.posted, now2, WINDOW);
        }
        let report = server.services.compaction.compact().await.map_err(|e| format!("compaction failed: {e}"))?;
        check_report(&report, must, "second compaction", &mut errs);
        let again = server.services.compaction.compact().await.map_err(|e| format!("compaction failed: {e}"))?;
        check_idle(&again, "second compaction", &mut errs);
        check_orgs(&server, &mut rng, &mut orgs, now2, "after the second compaction", &mut errs).await;

        // Events for what was pruned: they change no figure, and the answers say so.
        let late = late_events(&mut rng, &orgs[0].posted, &orgs[0].forgotten, now2);
        for org in &mut orgs {
            post_events(&server, &mut rng, org, &late, now2).await?;
        }
        check_orgs(&server, &mut rng, &mut orgs, now2, "after events for pruned entities", &mut errs).await;

        for org in &orgs {
            let unknown = org
                .posted
                .iter()
                .filter(|e| matches!(e.kind, Kind::Status { status, .. } if status == "played" || status == "deleted"))
                .count() as i64;
            let new = expected_accepted(&org.posted);
            let ignored = unknown + org.late_ignored;
            let duplicates = org.posted.len() as i64 + org.late_duplicates + org.late_ignored - new - ignored;
            if (org.accepted, org.duplicates, org.ignored) != (new, duplicates, ignored) {
                errs.push(format!(
                    "{}: accepted {}, duplicates {}, ignored {} (expected {new}, {duplicates}, {ignored}: \
                     {} late ignored, {} late duplicates)",
                    org.zone, org.accepted, org.duplicates, org.ignored, org.late_ignored, org.late_duplicates
                ));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            let n = errs.len();
            errs.truncate(25);
            Err(format!(
                "seed {seed} scale {scale}, now {} then {} then {}: {n} disagreements, first ones:\n{}",
                Timestamp::from_second(now0).expect("ts"),
                Timestamp::from_second(now1).expect("ts"),
                Timestamp::from_second(now2).expect("ts"),
                errs.join("\n")
            ))
        }
    })
}

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if env::<u64>("PROPERTY_SEED").is_some() { 1 } else { env("PROPERTY_CASES").unwrap_or(32) },
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_figure_matches_a_recount(seed in any::<u64>(), scale in 1usize..=40) {
        let (seed, scale) = match env::<u64>("PROPERTY_SEED") {
            Some(s) => (s, env("PROPERTY_SCALE").unwrap_or(scale)),
            None => (seed, scale),
        };
        if let Err(e) = run_case(seed, scale) {
            eprintln!("{e}");
            prop_assert!(false, "{}", e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: if env::<u64>("PROPERTY_SEED").is_some() {
            1
        } else {
            env("PROPERTY_COMPACTION_CASES")
                .or(env::<u32>("PROPERTY_CASES").map(|n| n.div_ceil(4)))
                .unwrap_or(8)
        },
        failure_persistence: None,
        max_shrink_iters: 16,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_figure_matches_a_recount_across_compaction(seed in any::<u64>(), scale in 1usize..=30) {
        let (seed, scale) = match env::<u64>("PROPERTY_SEED") {
            Some(s) => (s, env("PROPERTY_SCALE").unwrap_or(scale)),
            None => (seed, scale),
        };
        if let Err(e) = run_compaction_case(seed, scale) {
            eprintln!("{e}");
            prop_assert!(false, "{}", e);
        }
    }
}
