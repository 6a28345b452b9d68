//! The property test: random event streams (every event type of SPEC section 2) over a few
//! accounts and a span of days around local-midnight and daylight-saving edges, posted in
//! random order with re-sent events and re-sent whole batches, split over several requests.
//! Every figure of the three analytics endpoints (SPEC section 3) must equal a brute-force
//! recount over the raw events written here from the SPEC alone (no engine code is used).
//!
//! Reproduce a failing case with `PROPERTY_SEED=<seed> PROPERTY_SCALE=<scale> cargo test
//! --test property`; `PROPERTY_CASES=<n>` changes the number of random cases.

mod common;
mod recount;

use std::collections::BTreeSet;

use common::TestServer;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use recount::{
    CAMPAIGN_STATUSES, DAY, Ev, Kind, OUTCOMES, Tokens, ZONES, check_all, local_date, recount,
    start_of_day, to_json,
};
use reqwest::StatusCode;
use serde_json::Value;

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
        let lo = now - SPAN_DAYS * DAY;
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
        let server = TestServer::start().await;
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
            // 4 account filters x (2 ranges x (4 granularities + chatbot) + 1 + 4 periods).
            assert_eq!(expected.checks.len(), 60, "the recount covers every query");
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
            Kind::Message { id, .. } => format!("message/{id}"),
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
