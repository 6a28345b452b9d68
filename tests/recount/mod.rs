//! A brute-force recount of every figure of the three analytics endpoints (SPEC sections 2
//! and 3) over raw events, written from the SPEC alone (no engine code), and a checker that
//! compares a running server's answers with it. Used by `tests/property.rs`; reusable by any
//! test that posts events and wants every figure checked (e.g. before and after compaction):
//!
//! ```ignore
//! let expected = recount::recount(&posted_events, now, "Asia/Kolkata", &ranges);
//! let disagreements = recount::check_all(&server, &key, &expected).await;
//! ```
//!
//! The including test must also declare `mod common;` (the HTTP test harness).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

use crate::common::TestServer;

pub const DAY: i64 = 86_400;
/// USD per 1,000 tokens for AI calls without a cost (the engine's default price, 0.002), in
/// micro-dollars per token: 0.002 / 1000 * 1e6.
pub const DEFAULT_PRICE_MICRO_PER_TOKEN: i64 = 2;
pub const CAMPAIGN_STATUSES: [&str; 6] = [
    "created",
    "scheduled",
    "running",
    "completed",
    "cancelled",
    "failed",
];
pub const OUTCOMES: [&str; 3] = ["auto_resolved", "transferred", "abandoned"];
/// The zones a timestamp may be written in (see `fmt_ts`).
pub const ZONES: [&str; 3] = ["Asia/Kolkata", "Asia/Kathmandu", "America/New_York"];

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub enum Tokens {
    Total(i64),
    Split(i64, i64),
}

impl Tokens {
    fn total(&self) -> i64 {
        match self {
            Tokens::Total(t) => *t,
            Tokens::Split(p, c) => p + c,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Kind {
    Contact {
        id: String,
    },
    Message {
        id: String,
        inbound: bool,
        mtype: String,
        conv: Option<String>,
    },
    Status {
        msg: String,
        status: &'static str,
    },
    /// An inbound text message answering the outbound message `to`.
    Reply {
        id: String,
        to: String,
    },
    Campaign {
        id: String,
        status: &'static str,
    },
    Conversation {
        id: String,
        status: &'static str,
    },
    Flow {
        id: String,
        name: String,
        completed: bool,
        conv: Option<String>,
    },
    Keyword {
        id: Option<String>,
        keyword: String,
        conv: Option<String>,
    },
    Ai {
        id: Option<String>,
        tokens: Tokens,
        model: Option<String>,
        cost_micro: Option<i64>,
    },
}

/// One event as posted (a re-sent event appears once per time it was posted).
#[derive(Clone, Debug)]
pub struct Ev {
    pub acc: String,
    pub ts: i64,
    pub kind: Kind,
}

/// How an event's timestamp is written: Unix seconds, or RFC 3339 in UTC or in a zone.
pub fn fmt_ts(ts: i64, style: usize) -> Value {
    let t = Timestamp::from_second(ts).expect("timestamp");
    match style % 5 {
        0 => json!(ts),
        1 => json!(t.to_string()),
        s => {
            let z = t.to_zoned(TimeZone::get(ZONES[s - 2]).expect("zone"));
            json!(z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string())
        }
    }
}

/// The error code every `failed` status of a message carries (a function of the message
/// id, so that retries agree and order cannot matter); `None`: the status has no code.
pub fn error_code_of(msg: &str) -> Option<i64> {
    let h = msg
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    [Some(131_026), Some(131_047), None][(h % 3) as usize]
}

fn hash(s: &str) -> u32 {
    s.bytes()
        .fold(7u32, |h, b| h.wrapping_mul(131).wrapping_add(u32::from(b)))
}

/// The campaign an outbound message was sent for (a function of its id, like its error code).
pub fn campaign_of(msg: &str) -> Option<String> {
    match hash(msg) % 5 {
        0 | 1 => None,
        n => Some(format!("camp{}", n - 2)),
    }
}

/// The template (name, language, category) it was sent from; "" where not given.
pub fn template_of(msg: &str) -> Option<(&'static str, &'static str, &'static str)> {
    [
        None,
        Some(("t_sale", "en", "marketing")),
        Some(("t_sale", "es", "marketing")),
        Some(("t_order", "en_US", "utility")),
        Some(("t_otp", "", "")),
    ][(hash(msg) / 5 % 5) as usize]
}

/// Recipients and their countries (hand-checked numbers of each country).
const RECIPIENTS: [(&str, &str); 4] = [
    ("4915112345678", "DE"),
    ("14155550123", "US"),
    ("919876543210", "IN"),
    ("999123", "unknown"),
];

/// The recipient a message names itself, if any.
pub fn recipient_of(msg: &str) -> Option<(&'static str, &'static str)> {
    match hash(msg) / 25 % 6 {
        n @ 0..4 => Some(RECIPIENTS[n as usize]),
        _ => None,
    }
}

/// The recipient its statuses name (the same on every status of it), if any.
pub fn status_recipient_of(msg: &str) -> Option<(&'static str, &'static str)> {
    match hash(msg) / 150 % 5 {
        n @ 0..4 => Some(RECIPIENTS[n as usize]),
        _ => None,
    }
}

/// How Meta priced it (category, type), if its statuses say; which of its statuses carry
/// the pricing depends on the status too (`pricing_on`).
pub fn pricing_of(msg: &str) -> Option<(&'static str, &'static str)> {
    [
        None,
        Some(("marketing", "regular")),
        Some(("utility", "regular")),
        Some(("utility", "free_customer_service")),
        Some(("service", "free_entry_point")),
        Some(("authentication", "regular")),
    ][(hash(msg) / 750 % 6) as usize]
}

pub fn pricing_on(msg: &str, status: &str) -> bool {
    hash(&format!("{msg}/{status}")).is_multiple_of(2)
}

/// The rate card the property test's server prices with: Germany's marketing price
/// changes on the 1st of the months the test's clocks sit in; authentication is unpriced.
pub const RATE_CARD: &str = "category,country,price,effective_from\n\
    marketing,*,0.05,\n\
    marketing,DE,0.10,\n\
    marketing,DE,0.20,2024-03-01\n\
    marketing,DE,0.30,2024-04-01\n\
    marketing,DE,0.40,2024-11-01\n\
    marketing,DE,0.50,2024-12-01\n\
    marketing,DE,0.60,2025-01-01\n\
    marketing,DE,0.70,2025-03-01\n\
    utility,*,0.01,\n";

/// The price in micro-units of one billable message sent on local `day`, as the card says.
pub fn price_micros(category: &str, country: &str, day: Date) -> Option<i64> {
    match (category, country) {
        ("marketing", "DE") => {
            let changes = [
                (Date::constant(2025, 3, 1), 700_000),
                (Date::constant(2025, 1, 1), 600_000),
                (Date::constant(2024, 12, 1), 500_000),
                (Date::constant(2024, 11, 1), 400_000),
                (Date::constant(2024, 4, 1), 300_000),
                (Date::constant(2024, 3, 1), 200_000),
            ];
            Some(
                changes
                    .iter()
                    .find(|(d, _)| day >= *d)
                    .map_or(100_000, |c| c.1),
            )
        }
        ("marketing", _) => Some(50_000),
        ("utility", _) => Some(10_000),
        _ => None,
    }
}

/// Meta's titles of the codes `error_code_of` gives (from Meta's error-code reference).
pub fn error_title(code: Option<i64>) -> &'static str {
    match code {
        Some(131_026) => "Message undeliverable",
        Some(131_047) => "Re-engagement message",
        Some(_) => unreachable!("only the codes of error_code_of"),
        None => "No error code given",
    }
}

pub fn to_json(ev: &Ev, style: usize) -> Value {
    let mut m = Map::new();
    m.insert("account_id".into(), json!(ev.acc));
    m.insert("timestamp".into(), fmt_ts(ev.ts, style));
    let ty = match &ev.kind {
        Kind::Contact { id } => {
            m.insert("id".into(), json!(id));
            "contact"
        }
        Kind::Message {
            id,
            inbound,
            mtype,
            conv,
        } => {
            m.insert("id".into(), json!(id));
            m.insert(
                "direction".into(),
                json!(if *inbound { "inbound" } else { "outbound" }),
            );
            m.insert("message_type".into(), json!(mtype));
            if let Some(c) = conv {
                m.insert("conversation_id".into(), json!(c));
            }
            if !*inbound {
                if let Some(c) = campaign_of(id) {
                    m.insert("campaign_id".into(), json!(c));
                }
                if let Some((name, language, category)) = template_of(id) {
                    m.insert("template_name".into(), json!(name));
                    if !language.is_empty() {
                        m.insert("template_language".into(), json!(language));
                    }
                    if !category.is_empty() {
                        m.insert("template_category".into(), json!(category));
                    }
                }
                if let Some((number, _)) = recipient_of(id) {
                    m.insert("recipient".into(), json!(number));
                }
            }
            "message"
        }
        Kind::Reply { id, to } => {
            m.insert("id".into(), json!(id));
            m.insert("direction".into(), json!("inbound"));
            m.insert("message_type".into(), json!("text"));
            m.insert("reply_to".into(), json!(to));
            "message"
        }
        Kind::Status { msg, status } => {
            m.insert("message_id".into(), json!(msg));
            m.insert("status".into(), json!(status));
            if *status == "failed"
                && let Some(code) = error_code_of(msg)
            {
                m.insert("error_code".into(), json!(code));
            }
            if let Some((category, kind)) = pricing_of(msg).filter(|_| pricing_on(msg, status)) {
                m.insert("pricing_category".into(), json!(category));
                // A category alone is `regular`.
                if kind != "regular" || pricing_on(msg, "type") {
                    m.insert("pricing_type".into(), json!(kind));
                }
            }
            if let Some((number, _)) = status_recipient_of(msg) {
                m.insert("recipient".into(), json!(number));
            }
            "message_status"
        }
        Kind::Campaign { id, status } => {
            m.insert("id".into(), json!(id));
            m.insert("status".into(), json!(status));
            "campaign"
        }
        Kind::Conversation { id, status } => {
            m.insert("id".into(), json!(id));
            m.insert("status".into(), json!(status));
            "conversation"
        }
        Kind::Flow {
            id,
            name,
            completed,
            conv,
        } => {
            m.insert("id".into(), json!(id));
            m.insert("flow_name".into(), json!(name));
            m.insert(
                "status".into(),
                json!(if *completed { "completed" } else { "started" }),
            );
            if let Some(c) = conv {
                m.insert("conversation_id".into(), json!(c));
            }
            "flow"
        }
        Kind::Keyword { id, keyword, conv } => {
            m.insert("keyword".into(), json!(keyword));
            if let Some(i) = id {
                m.insert("id".into(), json!(i));
            }
            if let Some(c) = conv {
                m.insert("conversation_id".into(), json!(c));
            }
            "keyword"
        }
        Kind::Ai {
            id,
            tokens,
            model,
            cost_micro,
        } => {
            match tokens {
                Tokens::Total(t) => {
                    m.insert("tokens".into(), json!(t));
                }
                Tokens::Split(p, c) => {
                    m.insert("prompt_tokens".into(), json!(p));
                    m.insert("completion_tokens".into(), json!(c));
                }
            }
            if let Some(x) = model {
                m.insert("model".into(), json!(x));
            }
            if let Some(c) = cost_micro {
                m.insert("cost".into(), json!(*c as f64 / 1e6));
            }
            if let Some(i) = id {
                m.insert("id".into(), json!(i));
            }
            "ai_request"
        }
    };
    m.insert("type".into(), json!(ty));
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------
// The brute-force recount (from the SPEC alone)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Msg {
    pub acc: String,
    pub ts: i64,
    pub outbound: bool,
    pub mtype: String,
    pub delivered: bool,
    pub read: bool,
    pub failed: bool,
    /// The code of its failure (meaningful when `failed`).
    pub error_code: Option<i64>,
    pub campaign: Option<String>,
    pub template: Option<(&'static str, &'static str, &'static str)>,
    /// The recipient's country: the message's own, else its statuses', else `unknown`.
    pub country: &'static str,
    /// Whether an inbound message answered it.
    pub replied: bool,
    /// (category, type), when one of its counted statuses carried pricing.
    pub pricing: Option<(&'static str, &'static str)>,
}

#[derive(Debug, Clone)]
pub struct Conv {
    pub acc: String,
    pub start: i64,
    pub outcome: Option<&'static str>,
    /// Start to `auto_resolved`, when that is the outcome.
    pub resolution_secs: Option<i64>,
    pub messages: i64,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub acc: String,
    pub start: i64,
    pub name: String,
    pub completed: bool,
}

#[derive(Debug, Clone)]
pub struct AiCall {
    pub acc: String,
    pub ts: i64,
    pub tokens: i64,
    pub cost_micro: i64,
}

#[derive(Debug, Clone)]
pub struct Camp {
    pub acc: String,
    pub id: String,
    pub current: &'static str,
    pub current_ts: i64,
}

/// The deduplicated facts of a set of posted events (time-zone independent).
#[derive(Debug, Default)]
pub struct Facts {
    pub contacts: Vec<(String, i64)>,
    pub messages: Vec<Msg>,
    pub convs: Vec<Conv>,
    pub runs: Vec<Run>,
    pub keywords: Vec<(String, String, i64)>,
    pub ai: Vec<AiCall>,
    pub campaigns: Vec<Camp>,
}

pub fn rank(list: &[&str], s: &str) -> usize {
    list.iter().position(|x| *x == s).expect("known status")
}

pub fn facts(events: &[Ev]) -> Facts {
    type Key = (String, String);
    let mut contacts: BTreeMap<Key, i64> = BTreeMap::new();
    let mut msgs: BTreeMap<Key, (i64, bool, String, Option<String>)> = BTreeMap::new();
    let mut statuses: BTreeMap<Key, BTreeMap<&'static str, i64>> = BTreeMap::new();
    let mut conv_ev: BTreeMap<Key, BTreeMap<&'static str, i64>> = BTreeMap::new();
    let mut camp_ev: BTreeMap<Key, BTreeMap<&'static str, i64>> = BTreeMap::new();
    let mut run_start: BTreeMap<Key, (i64, String)> = BTreeMap::new();
    let mut run_done: BTreeSet<Key> = BTreeSet::new();
    let mut kw_ids: BTreeSet<Key> = BTreeSet::new();
    let mut ai_ids: BTreeSet<Key> = BTreeSet::new();
    let mut replied: BTreeSet<Key> = BTreeSet::new();
    let mut f = Facts::default();

    let min_into = |m: &mut BTreeMap<&'static str, i64>, s: &'static str, t: i64| {
        let e = m.entry(s).or_insert(t);
        *e = (*e).min(t);
    };
    for e in events {
        let acc = e.acc.clone();
        match &e.kind {
            Kind::Contact { id } => {
                let c = contacts.entry((acc, id.clone())).or_insert(e.ts);
                *c = (*c).min(e.ts);
            }
            Kind::Message {
                id,
                inbound,
                mtype,
                conv,
            } => {
                msgs.entry((acc, id.clone())).or_insert((
                    e.ts,
                    *inbound,
                    mtype.clone(),
                    conv.clone(),
                ));
            }
            Kind::Reply { id, to } => {
                let key = (acc.clone(), id.clone());
                if !msgs.contains_key(&key) && to != id {
                    replied.insert((acc, to.clone()));
                }
                msgs.entry(key).or_insert((e.ts, true, "text".into(), None));
            }
            Kind::Status { msg, status } => {
                if ["sent", "delivered", "read", "failed"].contains(status) {
                    min_into(
                        statuses.entry((acc, msg.clone())).or_default(),
                        status,
                        e.ts,
                    );
                }
            }
            Kind::Campaign { id, status } => {
                min_into(camp_ev.entry((acc, id.clone())).or_default(), status, e.ts)
            }
            Kind::Conversation { id, status } => {
                min_into(conv_ev.entry((acc, id.clone())).or_default(), status, e.ts)
            }
            Kind::Flow {
                id,
                name,
                completed,
                ..
            } => {
                if *completed {
                    run_done.insert((acc, id.clone()));
                } else {
                    let r = run_start
                        .entry((acc, id.clone()))
                        .or_insert((e.ts, name.clone()));
                    r.0 = r.0.min(e.ts);
                }
            }
            Kind::Keyword { id, keyword, .. } => {
                if id
                    .as_ref()
                    .is_none_or(|i| kw_ids.insert((acc.clone(), i.clone())))
                {
                    f.keywords.push((acc, keyword.clone(), e.ts));
                }
            }
            Kind::Ai {
                id,
                tokens,
                cost_micro,
                ..
            } => {
                if id
                    .as_ref()
                    .is_none_or(|i| ai_ids.insert((acc.clone(), i.clone())))
                {
                    let tokens = tokens.total();
                    let cost_micro = cost_micro.unwrap_or(tokens * DEFAULT_PRICE_MICRO_PER_TOKEN);
                    f.ai.push(AiCall {
                        acc,
                        ts: e.ts,
                        tokens,
                        cost_micro,
                    });
                }
            }
        }
    }

    f.contacts = contacts.into_iter().map(|((a, _), t)| (a, t)).collect();

    // Messages: the real ones, plus an `unknown` outbound one for a status-only id.
    let mut conv_msgs: BTreeMap<Key, i64> = BTreeMap::new();
    let mut keys: BTreeSet<Key> = msgs.keys().cloned().collect();
    keys.extend(statuses.keys().cloned());
    for k in keys {
        let st = statuses.get(&k).cloned().unwrap_or_default();
        let (ts, inbound, mtype, conv) = match msgs.get(&k) {
            Some(m) => m.clone(),
            None => (
                *st.values().min().expect("a status"),
                false,
                "unknown".to_string(),
                None,
            ),
        };
        if let Some(c) = conv {
            *conv_msgs.entry((k.0.clone(), c)).or_default() += 1;
        }
        let read = st.contains_key("read");
        let delivered = read || st.contains_key("delivered");
        let failed = !delivered && st.contains_key("failed");
        let sent_as_message = msgs.contains_key(&k) && !inbound;
        let country = recipient_of(&k.1)
            .filter(|_| sent_as_message)
            .or(status_recipient_of(&k.1).filter(|_| !st.is_empty()))
            .map_or("unknown", |r| r.1);
        let pricing = pricing_of(&k.1).filter(|_| st.keys().any(|s| pricing_on(&k.1, s)));
        f.messages.push(Msg {
            acc: k.0.clone(),
            ts,
            outbound: !inbound,
            mtype,
            delivered,
            read,
            failed,
            error_code: error_code_of(&k.1),
            campaign: campaign_of(&k.1).filter(|_| sent_as_message),
            template: template_of(&k.1).filter(|_| sent_as_message),
            country,
            replied: replied.contains(&k),
            pricing,
        });
    }

    // Conversations: counted from the earliest `started`; first outcome wins.
    for (k, evs) in conv_ev {
        let Some(&start) = evs.get("started") else {
            continue;
        };
        let outcome = OUTCOMES
            .iter()
            .filter_map(|o| evs.get(o).map(|t| (*t, rank(&OUTCOMES, o), *o)))
            .min()
            .map(|(t, _, o)| (o, t));
        f.convs.push(Conv {
            acc: k.0.clone(),
            start,
            outcome: outcome.map(|o| o.0),
            // An outcome stamped before its start resolves in 0 seconds (docs/metrics.md;
            // the SPEC is silent).
            resolution_secs: outcome
                .filter(|o| o.0 == "auto_resolved")
                .map(|o| (o.1 - start).max(0)),
            messages: conv_msgs.get(&k).copied().unwrap_or(0),
        });
    }

    for (k, (start, name)) in run_start {
        let completed = run_done.contains(&k);
        f.runs.push(Run {
            acc: k.0,
            start,
            name,
            completed,
        });
    }

    // Campaign state: the latest status by time; ties go to the later status in the list.
    for (k, evs) in camp_ev {
        let (ts, _, status) = evs
            .iter()
            .map(|(s, t)| (*t, rank(&CAMPAIGN_STATUSES, s), *s))
            .max()
            .expect("a status");
        f.campaigns.push(Camp {
            acc: k.0,
            id: k.1,
            current: status,
            current_ts: ts,
        });
    }
    f
}

/// An expected JSON answer; numbers that the SPEC rounds carry every acceptable value
/// (a tie exactly half-way may go either way).
#[derive(Debug, Clone)]
pub enum Exp {
    Int(i64),
    Null,
    IntOneOf(Vec<i64>),
    Num(Vec<f64>),
    Str(String),
    /// An object holding at least these fields.
    Obj(Vec<(&'static str, Exp)>),
    Arr(Vec<Exp>),
    /// An object of counts with exactly these keys.
    Counts(BTreeMap<String, i64>),
    /// `top_keywords`: the `limit` most counted of these, count descending.
    TopK(BTreeMap<String, i64>, usize),
    /// The whole query is refused: a 400 whose message contains each of these (it names
    /// what can be served: which tiers, and from when).
    Refused(Vec<String>),
}

/// `n / d` rounded to whole numbers; both neighbours when exactly half-way.
pub fn div_round(n: i64, d: i64) -> Vec<i64> {
    assert!(d > 0);
    let (q, r) = (n.div_euclid(d), n.rem_euclid(d));
    match (2 * r).cmp(&d) {
        std::cmp::Ordering::Less => vec![q],
        std::cmp::Ordering::Equal => vec![q, q + 1],
        std::cmp::Ordering::Greater => vec![q + 1],
    }
}

/// A percentage with one decimal; 0.0 when the denominator is 0.
pub fn rate(n: i64, d: i64) -> Exp {
    if d == 0 {
        return Exp::Num(vec![0.0]);
    }
    Exp::Num(
        div_round(1000 * n, d)
            .into_iter()
            .map(|x| x as f64 / 10.0)
            .collect(),
    )
}

pub fn one_decimal(n: i64, d: i64) -> Exp {
    if d == 0 {
        return Exp::Num(vec![0.0]);
    }
    Exp::Num(
        div_round(10 * n, d)
            .into_iter()
            .map(|x| x as f64 / 10.0)
            .collect(),
    )
}

pub fn whole(n: i64, d: i64) -> Exp {
    if d == 0 {
        Exp::Int(0)
    } else {
        Exp::IntOneOf(div_round(n, d))
    }
}

pub fn start_of_day(tz: &TimeZone, d: Date) -> i64 {
    d.to_zoned(tz.clone())
        .expect("zoned")
        .timestamp()
        .as_second()
}

pub fn local_date(tz: &TimeZone, ts: i64) -> Date {
    Timestamp::from_second(ts)
        .expect("ts")
        .to_zoned(tz.clone())
        .date()
}

#[derive(Clone, Copy, Debug)]
pub enum Gran {
    Hour,
    Day,
    Week,
    Month,
}

impl Gran {
    const ALL: [Gran; 4] = [Gran::Hour, Gran::Day, Gran::Week, Gran::Month];
    fn name(self) -> &'static str {
        match self {
            Gran::Hour => "hour",
            Gran::Day => "day",
            Gran::Week => "week",
            Gran::Month => "month",
        }
    }
}

/// The timeline buckets of the local dates `first..=last`: (label, start), each ending at
/// the next one's start or at the range's end; clipped to the range.
pub fn buckets(tz: &TimeZone, first: Date, last: Date, gran: Gran) -> (Vec<(String, i64)>, i64) {
    let lo = start_of_day(tz, first);
    let hi = start_of_day(tz, last.tomorrow().expect("date"));
    let mut out = Vec::new();
    match gran {
        Gran::Hour => {
            // Every zone used here changes its offset by whole hours only.
            let mut t = lo;
            while t < hi {
                let z = Timestamp::from_second(t).expect("ts").to_zoned(tz.clone());
                out.push((z.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(), t));
                t += 3600;
            }
        }
        Gran::Day => {
            let mut d = first;
            while d <= last {
                out.push((d.to_string(), start_of_day(tz, d)));
                d = d.tomorrow().expect("date");
            }
        }
        Gran::Week => {
            let mut d = first - (first.weekday().to_monday_zero_offset() as i64).days();
            while d <= last {
                out.push((d.to_string(), start_of_day(tz, d).max(lo)));
                d = d.checked_add(7.days()).expect("date");
            }
        }
        Gran::Month => {
            let mut d = first.first_of_month();
            while d <= last {
                out.push((d.strftime("%Y-%m").to_string(), start_of_day(tz, d).max(lo)));
                d = d.checked_add(1.month()).expect("date");
            }
        }
    }
    (out, hi)
}

pub fn acc_ok(filter: Option<&str>, acc: &str) -> bool {
    filter.is_none_or(|f| f == acc)
}

pub fn messages_expect(
    f: &Facts,
    tz: &TimeZone,
    first: Date,
    last: Date,
    gran: Gran,
    acc: Option<&str>,
) -> Exp {
    let (bk, hi) = buckets(tz, first, last, gran);
    let lo = start_of_day(tz, first);
    let mut tl = vec![[0i64; 5]; bk.len()];
    let mut sum = [0i64; 5];
    let mut by_type: BTreeMap<String, i64> = BTreeMap::new();
    let mut by_error: BTreeMap<Option<i64>, i64> = BTreeMap::new();
    for m in f
        .messages
        .iter()
        .filter(|m| acc_ok(acc, &m.acc) && m.ts >= lo && m.ts < hi)
    {
        let i = bk.partition_point(|b| b.1 <= m.ts) - 1;
        let row = [
            m.outbound as i64,
            !m.outbound as i64,
            (m.outbound && m.delivered) as i64,
            (m.outbound && m.read) as i64,
            (m.outbound && m.failed) as i64,
        ];
        for k in 0..5 {
            tl[i][k] += row[k];
            sum[k] += row[k];
        }
        *by_type.entry(m.mtype.clone()).or_default() += 1;
        if m.outbound && m.failed {
            *by_error.entry(m.error_code).or_default() += 1;
        }
    }
    // Most first; ties by code, the failures without a code last.
    let mut by_error: Vec<(Option<i64>, i64)> = by_error.into_iter().collect();
    by_error.sort_by_key(|(code, n)| (-n, code.is_none(), *code));
    let by_error = by_error
        .into_iter()
        .map(|(code, n)| {
            Exp::Obj(vec![
                ("error_code", code.map_or(Exp::Null, Exp::Int)),
                ("title", Exp::Str(error_title(code).to_string())),
                ("count", Exp::Int(n)),
            ])
        })
        .collect();
    let timeline = bk
        .iter()
        .zip(&tl)
        .map(|((label, _), r)| {
            Exp::Obj(vec![
                ("date", Exp::Str(label.clone())),
                ("sent", Exp::Int(r[0])),
                ("received", Exp::Int(r[1])),
                ("delivered", Exp::Int(r[2])),
                ("read", Exp::Int(r[3])),
                ("failed", Exp::Int(r[4])),
            ])
        })
        .collect();
    Exp::Obj(vec![
        (
            "summary",
            Exp::Obj(vec![
                ("total_sent", Exp::Int(sum[0])),
                ("total_received", Exp::Int(sum[1])),
                ("total_delivered", Exp::Int(sum[2])),
                ("total_read", Exp::Int(sum[3])),
                ("total_failed", Exp::Int(sum[4])),
                ("delivery_rate", rate(sum[2], sum[0])),
                ("read_rate", rate(sum[3], sum[2])),
            ]),
        ),
        ("by_type", Exp::Counts(by_type)),
        ("timeline", Exp::Arr(timeline)),
        ("by_error", Exp::Arr(by_error)),
    ])
}

/// Millionths as money rounded to 4 decimals: both neighbours when exactly half-way.
pub fn money_exp(micros: i64) -> Vec<f64> {
    div_round(micros, 100)
        .into_iter()
        .map(|v| v as f64 / 10_000.0)
        .collect()
}

/// The funnel of a group of outbound messages: sent, delivered, read, failed, replied.
fn funnel(ms: &[&Msg]) -> [i64; 5] {
    let mut r = [0; 5];
    for m in ms {
        r[0] += 1;
        r[1] += m.delivered as i64;
        r[2] += m.read as i64;
        r[3] += m.failed as i64;
        r[4] += m.replied as i64;
    }
    r
}

fn funnel_exp(r: [i64; 5]) -> Vec<(&'static str, Exp)> {
    vec![
        ("sent", Exp::Int(r[0])),
        ("delivered", Exp::Int(r[1])),
        ("read", Exp::Int(r[2])),
        ("failed", Exp::Int(r[3])),
        ("replied", Exp::Int(r[4])),
        ("delivery_rate", rate(r[1], r[0])),
        ("read_rate", rate(r[2], r[1])),
        ("reply_rate", rate(r[4], r[1])),
    ]
}

/// What Meta charges for one message by the rate card, in millionths; `None` when it is
/// free or not priced at all, `Some(None)` when billable but the card has no price.
fn charge(tz: &TimeZone, m: &Msg) -> Option<Option<i64>> {
    let (category, kind) = m.pricing?;
    if kind != "regular" {
        return None;
    }
    Some(price_micros(category, m.country, local_date(tz, m.ts)))
}

fn outbound_in<'a>(f: &'a Facts, lo: i64, hi: i64, acc: Option<&str>) -> Vec<&'a Msg> {
    f.messages
        .iter()
        .filter(|m| m.outbound && acc_ok(acc, &m.acc) && m.ts >= lo && m.ts < hi)
        .collect()
}

pub fn campaigns_expect(f: &Facts, tz: &TimeZone, lo: i64, hi: i64, acc: Option<&str>) -> Exp {
    let mut groups: BTreeMap<&str, Vec<&Msg>> = BTreeMap::new();
    for m in outbound_in(f, lo, hi, acc) {
        if let Some(c) = &m.campaign {
            groups.entry(c.as_str()).or_default().push(m);
        }
    }
    let mut rows: Vec<(i64, &str, Exp)> = groups
        .into_iter()
        .map(|(id, ms)| {
            let r = funnel(&ms);
            // The furthest along of the current statuses of the campaign's accounts.
            let status = f
                .campaigns
                .iter()
                .filter(|c| c.id == id && acc_ok(acc, &c.acc))
                .map(|c| rank(&CAMPAIGN_STATUSES, c.current))
                .max()
                .map_or("unknown", |i| CAMPAIGN_STATUSES[i]);
            let cost: i64 = ms.iter().filter_map(|m| charge(tz, m).flatten()).sum();
            let mut by_error: BTreeMap<Option<i64>, i64> = BTreeMap::new();
            for m in ms.iter().filter(|m| m.failed) {
                *by_error.entry(m.error_code).or_default() += 1;
            }
            let mut by_error: Vec<(Option<i64>, i64)> = by_error.into_iter().collect();
            by_error.sort_by_key(|(code, n)| (-n, code.is_none(), *code));
            let mut fields = vec![
                ("campaign_id", Exp::Str(id.to_string())),
                ("status", Exp::Str(status.to_string())),
            ];
            fields.extend(funnel_exp(r));
            fields.push(("estimated_cost", Exp::Num(money_exp(cost))));
            fields.push((
                "by_error",
                Exp::Arr(
                    by_error
                        .into_iter()
                        .map(|(code, n)| {
                            Exp::Obj(vec![
                                ("error_code", code.map_or(Exp::Null, Exp::Int)),
                                ("count", Exp::Int(n)),
                            ])
                        })
                        .collect(),
                ),
            ));
            (r[0], id, Exp::Obj(fields))
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    Exp::Obj(vec![(
        "campaigns",
        Exp::Arr(rows.into_iter().map(|r| r.2).collect()),
    )])
}

pub fn templates_expect(f: &Facts, tz: &TimeZone, lo: i64, hi: i64, acc: Option<&str>) -> Exp {
    type T = (&'static str, &'static str, &'static str);
    let mut groups: BTreeMap<T, Vec<&Msg>> = BTreeMap::new();
    for m in outbound_in(f, lo, hi, acc) {
        if let Some(t) = m.template {
            groups.entry(t).or_default().push(m);
        }
    }
    let mut rows: Vec<(i64, T, Exp)> = groups
        .into_iter()
        .map(|(t, ms)| {
            let r = funnel(&ms);
            let cost: i64 = ms.iter().filter_map(|m| charge(tz, m).flatten()).sum();
            let mut fields = vec![
                ("template_name", Exp::Str(t.0.to_string())),
                ("template_language", Exp::Str(t.1.to_string())),
                ("category", Exp::Str(t.2.to_string())),
            ];
            fields.extend(funnel_exp(r));
            fields.push(("estimated_cost", Exp::Num(money_exp(cost))));
            (r[0], t, Exp::Obj(fields))
        })
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    Exp::Obj(vec![(
        "templates",
        Exp::Arr(rows.into_iter().map(|r| r.2).collect()),
    )])
}

/// The costs answer with its timeline by day.
pub fn costs_expect(f: &Facts, tz: &TimeZone, first: Date, last: Date, acc: Option<&str>) -> Exp {
    let (bk, hi) = buckets(tz, first, last, Gran::Day);
    let lo = start_of_day(tz, first);
    let ms = outbound_in(f, lo, hi, acc);
    let (mut billable, mut free, mut unpriced, mut cost) = (0, 0, 0, 0i64);
    let mut by_category: BTreeMap<(&str, &str), (i64, i64)> = BTreeMap::new();
    let mut by_country: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    let mut tl = vec![(0i64, 0i64, 0i64); bk.len()];
    for m in &ms {
        let Some((category, kind)) = m.pricing else {
            continue;
        };
        let i = bk.partition_point(|b| b.1 <= m.ts) - 1;
        let charged = charge(tz, m);
        let micros = charged.flatten().unwrap_or(0);
        let c = by_category.entry((category, kind)).or_default();
        c.0 += 1;
        c.1 += micros;
        let k = by_country.entry(m.country).or_default();
        if kind == "regular" {
            billable += 1;
            k.0 += 1;
            tl[i].0 += 1;
            unpriced += i64::from(charged == Some(None));
        } else {
            free += 1;
            k.1 += 1;
            tl[i].1 += 1;
        }
        k.2 += micros;
        tl[i].2 += micros;
        cost += micros;
    }
    let delivered = ms.iter().filter(|m| m.delivered).count() as i64;
    let read = ms.iter().filter(|m| m.read).count() as i64;
    let per = |n: i64| {
        if n == 0 {
            Exp::Num(vec![0.0])
        } else {
            Exp::Num(
                div_round(cost, 100 * n)
                    .into_iter()
                    .map(|v| v as f64 / 10_000.0)
                    .collect(),
            )
        }
    };
    type CategoryRow<'a> = ((&'a str, &'a str), (i64, i64));
    let mut by_category: Vec<CategoryRow> = by_category.into_iter().collect();
    by_category.sort_by_key(|(k, v)| (-v.0, *k));
    let mut by_country: Vec<(&str, (i64, i64, i64))> = by_country.into_iter().collect();
    by_country.sort_by_key(|(k, v)| (-v.2, -(v.0 + v.1), *k));
    let ai: i64 =
        f.ai.iter()
            .filter(|a| acc_ok(acc, &a.acc) && a.ts >= lo && a.ts < hi)
            .map(|a| a.cost_micro)
            .sum();
    let spend = money_exp(cost);
    let ai_cost = money_exp(ai);
    let totals: Vec<f64> = spend
        .iter()
        .flat_map(|s| {
            ai_cost
                .iter()
                .map(move |a| ((s + a) * 10_000.0).round() / 10_000.0)
        })
        .collect();
    Exp::Obj(vec![
        (
            "summary",
            Exp::Obj(vec![
                ("billable_messages", Exp::Int(billable)),
                ("free_messages", Exp::Int(free)),
                ("unpriced_messages", Exp::Int(unpriced)),
                ("estimated_cost", Exp::Num(spend)),
                ("currency", Exp::Str("USD".into())),
                ("ai_cost", Exp::Num(ai_cost)),
                ("total_cost", Exp::Num(totals)),
                ("cost_per_delivered", per(delivered)),
                ("cost_per_read", per(read)),
            ]),
        ),
        (
            "by_category",
            Exp::Arr(
                by_category
                    .into_iter()
                    .map(|((c, k), (n, micros))| {
                        Exp::Obj(vec![
                            ("category", Exp::Str(c.to_string())),
                            ("pricing_type", Exp::Str(k.to_string())),
                            ("messages", Exp::Int(n)),
                            ("estimated_cost", Exp::Num(money_exp(micros))),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "by_country",
            Exp::Arr(
                by_country
                    .into_iter()
                    .map(|(c, (b, fr, micros))| {
                        Exp::Obj(vec![
                            ("country", Exp::Str(c.to_string())),
                            ("billable_messages", Exp::Int(b)),
                            ("free_messages", Exp::Int(fr)),
                            ("estimated_cost", Exp::Num(money_exp(micros))),
                        ])
                    })
                    .collect(),
            ),
        ),
        (
            "timeline",
            Exp::Arr(
                bk.iter()
                    .zip(&tl)
                    .map(|((label, _), (b, fr, micros))| {
                        Exp::Obj(vec![
                            ("date", Exp::Str(label.clone())),
                            ("billable_messages", Exp::Int(*b)),
                            ("free_messages", Exp::Int(*fr)),
                            ("estimated_cost", Exp::Num(money_exp(*micros))),
                        ])
                    })
                    .collect(),
            ),
        ),
    ])
}

pub fn chatbot_expect(f: &Facts, lo: i64, hi: i64, acc: Option<&str>, limit: usize) -> Exp {
    let inr = |a: &str, t: i64| acc_ok(acc, a) && t >= lo && t < hi;
    let convs: Vec<&Conv> = f.convs.iter().filter(|c| inr(&c.acc, c.start)).collect();
    let total = convs.len() as i64;
    let count = |o: &str| convs.iter().filter(|c| c.outcome == Some(o)).count() as i64;
    let auto = count("auto_resolved");
    let msgs: i64 = convs.iter().map(|c| c.messages).sum();
    let res: i64 = convs.iter().filter_map(|c| c.resolution_secs).sum();

    let mut flows: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for r in f.runs.iter().filter(|r| inr(&r.acc, r.start)) {
        let e = flows.entry(&r.name).or_default();
        e.0 += 1;
        e.1 += r.completed as i64;
    }
    let mut flows: Vec<(&str, i64, i64)> = flows.into_iter().map(|(n, (s, c))| (n, s, c)).collect();
    flows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));

    let mut kws: BTreeMap<String, i64> = BTreeMap::new();
    for (a, k, t) in &f.keywords {
        if inr(a, *t) {
            *kws.entry(k.clone()).or_default() += 1;
        }
    }
    let ai: Vec<&AiCall> = f.ai.iter().filter(|x| inr(&x.acc, x.ts)).collect();
    let reqs = ai.len() as i64;
    let tokens: i64 = ai.iter().map(|x| x.tokens).sum();
    let micro: i64 = ai.iter().map(|x| x.cost_micro).sum();
    let cost = Exp::Num(
        div_round(micro, 10_000)
            .into_iter()
            .map(|c| c as f64 / 100.0)
            .collect(),
    );

    Exp::Obj(vec![
        (
            "summary",
            Exp::Obj(vec![
                ("total_conversations", Exp::Int(total)),
                ("auto_resolved", Exp::Int(auto)),
                ("transferred_to_agent", Exp::Int(count("transferred"))),
                ("abandoned", Exp::Int(count("abandoned"))),
                ("resolution_rate", rate(auto, total)),
                ("avg_messages_per_conversation", one_decimal(msgs, total)),
                ("avg_resolution_time_seconds", whole(res, auto)),
            ]),
        ),
        (
            "by_flow",
            Exp::Arr(
                flows
                    .iter()
                    .map(|(n, s, c)| {
                        Exp::Obj(vec![
                            ("flow_name", Exp::Str(n.to_string())),
                            ("conversations", Exp::Int(*s)),
                            ("completion_rate", rate(*c, *s)),
                        ])
                    })
                    .collect(),
            ),
        ),
        ("top_keywords", Exp::TopK(kws, limit)),
        (
            "ai_usage",
            Exp::Obj(vec![
                ("total_requests", Exp::Int(reqs)),
                ("total_tokens", Exp::Int(tokens)),
                ("avg_tokens_per_request", whole(tokens, reqs)),
                ("estimated_cost", cost),
            ]),
        ),
    ])
}

/// The chatbot answer with `granularity`: the summary as without it, and one timeline entry
/// per bucket, each thing counted at the conversation's or run's start, or its own time.
pub fn chatbot_timeline_expect(
    f: &Facts,
    tz: &TimeZone,
    first: Date,
    last: Date,
    gran: Gran,
    acc: Option<&str>,
) -> Exp {
    let (bk, hi) = buckets(tz, first, last, gran);
    let lo = start_of_day(tz, first);
    let index = |t: i64| bk.partition_point(|b| b.1 <= t) - 1;
    let inr = |a: &str, t: i64| acc_ok(acc, a) && t >= lo && t < hi;
    // conversations, auto_resolved, transferred, abandoned, flows started, completed,
    // keyword hits, AI requests, tokens, cost in micro-dollars
    let mut rows = vec![[0i64; 10]; bk.len()];
    for c in f.convs.iter().filter(|c| inr(&c.acc, c.start)) {
        let r = &mut rows[index(c.start)];
        r[0] += 1;
        match c.outcome {
            Some("auto_resolved") => r[1] += 1,
            Some("transferred") => r[2] += 1,
            Some("abandoned") => r[3] += 1,
            _ => {}
        }
    }
    for run in f.runs.iter().filter(|r| inr(&r.acc, r.start)) {
        let r = &mut rows[index(run.start)];
        r[4] += 1;
        r[5] += run.completed as i64;
    }
    for (a, _, t) in &f.keywords {
        if inr(a, *t) {
            rows[index(*t)][6] += 1;
        }
    }
    for x in f.ai.iter().filter(|x| inr(&x.acc, x.ts)) {
        let r = &mut rows[index(x.ts)];
        r[7] += 1;
        r[8] += x.tokens;
        r[9] += x.cost_micro;
    }
    let timeline = bk
        .iter()
        .zip(&rows)
        .map(|((label, _), r)| {
            Exp::Obj(vec![
                ("date", Exp::Str(label.clone())),
                ("conversations", Exp::Int(r[0])),
                ("auto_resolved", Exp::Int(r[1])),
                ("transferred", Exp::Int(r[2])),
                ("abandoned", Exp::Int(r[3])),
                ("flows_started", Exp::Int(r[4])),
                ("flows_completed", Exp::Int(r[5])),
                ("keyword_hits", Exp::Int(r[6])),
                ("ai_requests", Exp::Int(r[7])),
                ("ai_tokens", Exp::Int(r[8])),
                (
                    "ai_cost",
                    Exp::Num(
                        div_round(r[9], 10_000)
                            .into_iter()
                            .map(|c| c as f64 / 100.0)
                            .collect(),
                    ),
                ),
            ])
        })
        .collect();
    let Exp::Obj(mut fields) = chatbot_expect(f, lo, hi, acc, 10) else {
        unreachable!("chatbot_expect gives an object")
    };
    fields.push(("timeline", Exp::Arr(timeline)));
    Exp::Obj(fields)
}

pub fn dashboard_expect(
    f: &Facts,
    tz: &TimeZone,
    now: i64,
    period: &str,
    acc: Option<&str>,
) -> Exp {
    let today = local_date(tz, now);
    let week = today - (today.weekday().to_monday_zero_offset() as i64).days();
    let start_date = match period {
        "today" => today,
        "week" => week,
        "month" => today.first_of_month(),
        _ => today.first_of_year(),
    };
    let (ps, today_s, week_s, month_s) = (
        start_of_day(tz, start_date),
        start_of_day(tz, today),
        start_of_day(tz, week),
        start_of_day(tz, today.first_of_month()),
    );
    let since = |a: &str, t: i64, from: i64| acc_ok(acc, a) && t >= from && t <= now;

    let contacts: Vec<i64> = f
        .contacts
        .iter()
        .filter(|c| acc_ok(acc, &c.0))
        .map(|c| c.1)
        .collect();
    let added = contacts.iter().filter(|t| **t >= ps && **t <= now).count() as i64;
    let before = contacts.iter().filter(|t| **t < ps).count() as i64;
    let new_from = |from: i64| {
        contacts
            .iter()
            .filter(|t| **t >= from && **t <= now)
            .count() as i64
    };

    let count_msgs = |from: i64, outbound: Option<bool>| {
        f.messages
            .iter()
            .filter(|m| since(&m.acc, m.ts, from) && outbound.is_none_or(|o| o == m.outbound))
            .count() as i64
    };
    let sent = count_msgs(ps, Some(true));
    let received = count_msgs(ps, Some(false));

    let camps: Vec<&Camp> = f.campaigns.iter().filter(|c| acc_ok(acc, &c.acc)).collect();
    let active = camps.iter().filter(|c| c.current == "running").count() as i64;
    let completed_month = camps
        .iter()
        .filter(|c| c.current == "completed" && c.current_ts >= month_s && c.current_ts <= now)
        .count() as i64;

    let convs: Vec<&Conv> = f
        .convs
        .iter()
        .filter(|c| since(&c.acc, c.start, ps))
        .collect();
    let auto = convs
        .iter()
        .filter(|c| c.outcome == Some("auto_resolved"))
        .count() as i64;
    let transferred = convs
        .iter()
        .filter(|c| c.outcome == Some("transferred"))
        .count() as i64;
    let conv_today = f
        .convs
        .iter()
        .filter(|c| since(&c.acc, c.start, today_s))
        .count() as i64;

    Exp::Obj(vec![
        (
            "contacts",
            Exp::Obj(vec![
                ("total", Exp::Int(contacts.len() as i64)),
                ("new_today", Exp::Int(new_from(today_s))),
                ("new_this_week", Exp::Int(new_from(week_s))),
                ("growth_percent", rate(added, before)),
            ]),
        ),
        (
            "messages",
            Exp::Obj(vec![
                ("total", Exp::Int(sent + received)),
                ("sent", Exp::Int(sent)),
                ("received", Exp::Int(received)),
                ("today", Exp::Int(count_msgs(today_s, None))),
            ]),
        ),
        (
            "campaigns",
            Exp::Obj(vec![
                ("total", Exp::Int(camps.len() as i64)),
                ("active", Exp::Int(active)),
                ("completed_this_month", Exp::Int(completed_month)),
            ]),
        ),
        (
            "chatbot",
            Exp::Obj(vec![
                ("conversations_today", Exp::Int(conv_today)),
                ("auto_resolved", Exp::Int(auto)),
                ("transferred_to_agent", Exp::Int(transferred)),
                ("resolution_rate", rate(auto, convs.len() as i64)),
            ]),
        ),
    ])
}

// ---------------------------------------------------------------------------------------
// Retention tiers (SPEC section 4), from the SPEC alone
// ---------------------------------------------------------------------------------------

/// How long the hourly and daily tiers are kept, in days; `None` keeps a tier forever.
/// Monthly figures are always kept.
#[derive(Clone, Copy, Debug, Default)]
pub struct Retention {
    pub hourly_days: Option<i64>,
    pub daily_days: Option<i64>,
}

/// The first instants the hourly and daily tiers still hold at some "now".
#[derive(Clone, Copy, Debug)]
pub struct Kept {
    pub hour: i64,
    pub day: i64,
}

/// The seconds east of UTC of `tz` at `t`.
fn offset_at(tz: &TimeZone, t: i64) -> i64 {
    i64::from(
        tz.to_offset(Timestamp::from_second(t).expect("ts"))
            .seconds(),
    )
}

/// Hourly figures are kept from `now` minus the hourly retention, floored to the start of
/// its local hour; daily figures from the start of the local day `now` minus the daily
/// retention falls on.
pub fn kept(tz: &TimeZone, now: i64, r: &Retention) -> Kept {
    let hour = r.hourly_days.map_or(i64::MIN, |d| {
        let t = now - d * DAY;
        let off = offset_at(tz, t);
        let local = t + off;
        let floored = local - local.rem_euclid(3600);
        // Every zone used here changes its offset on whole local hours, so the floor keeps
        // the offset of `t`.
        assert_eq!(
            offset_at(tz, floored - off),
            off,
            "offset change inside an hour"
        );
        floored - off
    });
    let day = r.daily_days.map_or(i64::MIN, |d| {
        start_of_day(tz, local_date(tz, now - d * DAY))
    });
    Kept { hour, day }
}

/// Whether a stored tier can serve the local hour starting at `t` exactly: only the hourly
/// tier can, while it keeps that hour.
pub fn hour_servable(t: i64, k: &Kept) -> bool {
    t >= k.hour
}

/// Whether the stored tiers can serve `[a, b)` exactly, both ends local midnights: every
/// day the daily tier no longer keeps must lie in a whole local month inside the range (a
/// day the daily tier keeps is served by it).
pub fn days_servable(tz: &TimeZone, a: i64, b: i64, k: &Kept) -> bool {
    let mut d = local_date(tz, a);
    assert_eq!(start_of_day(tz, d), a, "a range of whole days");
    loop {
        let s = start_of_day(tz, d);
        if s >= b || s >= k.day {
            return true;
        }
        let m0 = start_of_day(tz, d.first_of_month());
        let m1 = start_of_day(tz, d.last_of_month().tomorrow().expect("date"));
        if m0 < a || m1 > b {
            return false;
        }
        d = d.tomorrow().expect("date");
    }
}

/// Whether `t` starts a local hour.
pub fn is_hour_start(tz: &TimeZone, t: i64) -> bool {
    (t + offset_at(tz, t)).rem_euclid(3600) == 0
}

/// Whether the stored tiers can serve the instants `[a, b)` exactly: both ends start local
/// hours, and every local hour inside lies in a bucket the range holds whole and a tier
/// still keeps (the hour itself, its day, or its month).
pub fn instants_servable(tz: &TimeZone, a: i64, b: i64, k: &Kept) -> bool {
    if !is_hour_start(tz, a) || !is_hour_start(tz, b) {
        return false;
    }
    let mut h = a;
    while h < b {
        let d = local_date(tz, h);
        let (d0, d1) = (
            start_of_day(tz, d),
            start_of_day(tz, d.tomorrow().expect("date")),
        );
        let m0 = start_of_day(tz, d.first_of_month());
        let m1 = start_of_day(tz, d.last_of_month().tomorrow().expect("date"));
        let inside = |x: i64, y: i64| a <= x && y <= b;
        if !(h >= k.hour || (d0 >= k.day && inside(d0, d1)) || inside(m0, m1)) {
            return false;
        }
        // Every zone used here changes its offset on whole local hours.
        h += 3600;
    }
    true
}

/// Timeline buckets the server builds at most (`MAX_TIMELINE_BUCKETS` in
/// src/engine/metrics.rs); a longer timeline is refused.
const MAX_TIMELINE_BUCKETS: usize = 10_000;

/// What a refusal must name: the tiers, and the local day each of the hourly and daily
/// tiers is kept from.
pub fn refusal_needles(tz: &TimeZone, k: &Kept) -> Vec<String> {
    let mut out: Vec<String> = ["hourly", "daily", "monthly"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for t in [k.hour, k.day] {
        if t > i64::MIN {
            out.push(local_date(tz, t).to_string());
        }
    }
    out
}

/// The dashboard reads the period, today, this week and this month, each up to the end of
/// today (figures past the period's start; totals come from the monthly tier).
pub fn dashboard_servable(tz: &TimeZone, now: i64, period: &str, k: &Kept) -> bool {
    let today = local_date(tz, now);
    let week = today - (today.weekday().to_monday_zero_offset() as i64).days();
    let period_start = match period {
        "today" => today,
        "week" => week,
        "month" => today.first_of_month(),
        _ => today.first_of_year(),
    };
    let end = start_of_day(tz, today.tomorrow().expect("date"));
    [period_start, today, week, today.first_of_month()]
        .iter()
        .all(|d| days_servable(tz, start_of_day(tz, *d), end, k))
}

/// Every query to check, with its expected answer.
pub struct Expected {
    pub checks: Vec<(String, Exp)>,
}

/// The expected answers of all three endpoints, over all accounts and for each account that
/// occurs in `events`: messages (every granularity) and chatbot for each local-date range
/// `(first, last)` of `ranges` (chatbot also with `limit=1000` for the first range), and the
/// dashboard for every period at `now`.
pub fn recount(events: &[Ev], now: i64, tz_name: &str, ranges: &[(Date, Date)]) -> Expected {
    recount_kept(events, now, tz_name, ranges, &Retention::default())
}

/// As `recount`, on a server that keeps hourly and daily figures only for `retention`: a
/// query that some part of cannot be served exactly from the tiers kept at `now` is
/// expected refused (`Exp::Refused`); every other one must equal the recount.
pub fn recount_kept(
    events: &[Ev],
    now: i64,
    tz_name: &str,
    ranges: &[(Date, Date)],
    retention: &Retention,
) -> Expected {
    let tz = TimeZone::get(tz_name).expect("zone");
    let k = kept(&tz, now, retention);
    let refused = || Exp::Refused(refusal_needles(&tz, &k));
    let serve = |ok: bool, exp: &dyn Fn() -> Exp| if ok { exp() } else { refused() };
    let f = facts(events);
    let accounts: BTreeSet<&str> = events.iter().map(|e| e.acc.as_str()).collect();
    let mut filters: Vec<Option<&str>> = vec![None];
    filters.extend(accounts.iter().map(|a| Some(*a)));
    let mut checks = Vec::new();
    for acc in &filters {
        let q = acc.map(|a| format!("&account_id={a}")).unwrap_or_default();
        for (i, (first, last)) in ranges.iter().enumerate() {
            for gran in Gran::ALL {
                // Every timeline entry is one part of the query; the summary sums them.
                let ok = match gran {
                    // The earliest hour is the first one.
                    Gran::Hour => hour_servable(start_of_day(&tz, *first), &k),
                    _ => {
                        let (bk, hi) = buckets(&tz, *first, *last, gran);
                        bk.iter().enumerate().all(|(j, (_, s))| {
                            let e = bk.get(j + 1).map_or(hi, |b| b.1);
                            days_servable(&tz, *s, e, &k)
                        })
                    }
                };
                // A timeline of more buckets than the server lists (a year of hours, say)
                // is refused: for what the tiers keep when its first hour is gone, else
                // for its length.
                let too_long = buckets(&tz, *first, *last, gran).0.len() > MAX_TIMELINE_BUCKETS;
                let first_hour = hour_servable(start_of_day(&tz, *first), &k);
                let timeline = |exp: &dyn Fn() -> Exp| {
                    if too_long && !first_hour {
                        refused()
                    } else if too_long {
                        Exp::Refused(vec![format!("more than {MAX_TIMELINE_BUCKETS}")])
                    } else {
                        serve(ok, exp)
                    }
                };
                checks.push((
                    format!(
                        "/api/analytics/messages?start_date={first}&end_date={last}&granularity={}{q}",
                        gran.name()
                    ),
                    timeline(&|| messages_expect(&f, &tz, *first, *last, gran, *acc)),
                ));
                // The chatbot timeline: the same buckets and rules.
                checks.push((
                    format!(
                        "/api/analytics/chatbot?start_date={first}&end_date={last}&granularity={}{q}",
                        gran.name()
                    ),
                    timeline(&|| {
                        chatbot_timeline_expect(&f, &tz, *first, *last, gran, *acc)
                    }),
                ));
            }
            let (lo, hi) = (
                start_of_day(&tz, *first),
                start_of_day(&tz, last.tomorrow().expect("date")),
            );
            let ok = days_servable(&tz, lo, hi, &k);
            checks.push((
                format!("/api/analytics/chatbot?start_date={first}&end_date={last}{q}"),
                serve(ok, &|| chatbot_expect(&f, lo, hi, *acc, 10)),
            ));
            checks.push((
                format!("/api/analytics/campaigns?start_date={first}&end_date={last}{q}"),
                serve(ok, &|| campaigns_expect(&f, &tz, lo, hi, *acc)),
            ));
            checks.push((
                format!("/api/analytics/templates?start_date={first}&end_date={last}{q}"),
                serve(ok, &|| templates_expect(&f, &tz, lo, hi, *acc)),
            ));
            // Its timeline is by day: each day must be servable.
            let (bk, _) = buckets(&tz, *first, *last, Gran::Day);
            let days_ok = bk.iter().enumerate().all(|(j, (_, s))| {
                let e = bk.get(j + 1).map_or(hi, |b| b.1);
                days_servable(&tz, *s, e, &k)
            });
            checks.push((
                format!("/api/analytics/costs?start_date={first}&end_date={last}{q}"),
                serve(days_ok, &|| costs_expect(&f, &tz, *first, *last, *acc)),
            ));
            if i == 0 {
                checks.push((
                    format!(
                        "/api/analytics/chatbot?start_date={first}&end_date={last}&limit=1000{q}"
                    ),
                    serve(ok, &|| chatbot_expect(&f, lo, hi, *acc, 1000)),
                ));
            }
        }
        for period in ["today", "week", "month", "year"] {
            checks.push((
                format!("/api/analytics/dashboard?period={period}{q}"),
                serve(dashboard_servable(&tz, now, period, &k), &|| {
                    dashboard_expect(&f, &tz, now, period, *acc)
                }),
            ));
        }
    }
    Expected { checks }
}

/// The chatbot figures over ranges of RFC 3339 instants `[start, end)`, over all accounts
/// and each account that occurs in `events`, on a server that keeps `retention`.
pub fn recount_spans(
    events: &[Ev],
    now: i64,
    tz_name: &str,
    spans: &[(i64, i64)],
    retention: &Retention,
) -> Expected {
    let tz = TimeZone::get(tz_name).expect("zone");
    let k = kept(&tz, now, retention);
    let f = facts(events);
    let accounts: BTreeSet<&str> = events.iter().map(|e| e.acc.as_str()).collect();
    let mut filters: Vec<Option<&str>> = vec![None];
    filters.extend(accounts.iter().map(|a| Some(*a)));
    let instant = |t: i64| Timestamp::from_second(t).expect("ts").to_string();
    let mut checks = Vec::new();
    for acc in &filters {
        let q = acc.map(|a| format!("&account_id={a}")).unwrap_or_default();
        for (lo, hi) in spans {
            let exp = if instants_servable(&tz, *lo, *hi, &k) {
                chatbot_expect(&f, *lo, *hi, *acc, 10)
            } else {
                Exp::Refused(refusal_needles(&tz, &k))
            };
            checks.push((
                format!(
                    "/api/analytics/chatbot?start_date={}&end_date={}{q}",
                    instant(*lo),
                    instant(*hi)
                ),
                exp,
            ));
        }
    }
    Expected { checks }
}

// ---------------------------------------------------------------------------------------
// The state window (SPEC section 4): what compaction forgets, and what comes after it
// ---------------------------------------------------------------------------------------

/// Something whose state the window keeps (SPEC section 2, "Late and early events"): a
/// message, a conversation, a flow run, or the id of a keyword hit or an AI call.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Entity {
    Message(String),
    Conversation(String),
    Flow(String),
    Keyword(String),
    Ai(String),
}

/// What a compaction forgot: the entities (per account) whose window had ended, each with
/// the time its window started; and those it may or may not have forgotten, as their
/// window's start depends on the order their events were applied in.
#[derive(Debug, Default, Clone)]
pub struct Forgotten {
    pub pruned: BTreeMap<(String, Entity), i64>,
    pub unsure: BTreeSet<(String, Entity)>,
}

/// The unknown statuses that are reported back, never counted.
fn counted_status(status: &str) -> bool {
    ["sent", "delivered", "read", "failed"].contains(&status)
}

/// The entities `posted` (events already posted) made known, and what a compaction at `at`
/// forgot of them: the window runs from the send, or the start, for `window` seconds. A
/// message's window starts at its send time, or (known only from statuses) at its
/// earliest status, or (known only from replies to it) at the time of the reply that
/// first told of it; a conversation's or flow run's at the earliest thing known about it;
/// a keyword hit's or AI call's at its own time.
pub fn forgotten(posted: &[Ev], at: i64, window: i64) -> Forgotten {
    #[derive(Default)]
    struct Known {
        sent: Option<i64>,
        first_status: Option<i64>,
        /// Earliest and latest reply telling of it.
        replies: Option<(i64, i64)>,
        earliest: Option<i64>,
    }
    let mut known: BTreeMap<(String, Entity), Known> = BTreeMap::new();
    let mut note = |acc: &str, e: Entity, f: &dyn Fn(&mut Known)| {
        f(known.entry((acc.to_string(), e)).or_default());
    };
    let min = |a: Option<i64>, t: i64| Some(a.map_or(t, |a| a.min(t)));
    let mut replies_seen: BTreeSet<(String, String)> = BTreeSet::new();
    for e in posted {
        let t = e.ts;
        let earliest = |k: &mut Known| k.earliest = min(k.earliest, t);
        match &e.kind {
            Kind::Contact { .. } | Kind::Campaign { .. } => {}
            Kind::Message { id, conv, .. } => {
                note(&e.acc, Entity::Message(id.clone()), &|k| {
                    k.sent = k.sent.or(Some(t))
                });
                if let Some(c) = conv {
                    note(&e.acc, Entity::Conversation(c.clone()), &earliest);
                }
            }
            Kind::Reply { id, to } => {
                note(&e.acc, Entity::Message(id.clone()), &|k| {
                    k.sent = k.sent.or(Some(t))
                });
                // Only the first sighting of a reply tells of the message it answers.
                if to != id && replies_seen.insert((e.acc.clone(), id.clone())) {
                    note(&e.acc, Entity::Message(to.clone()), &|k| {
                        k.replies = Some(k.replies.map_or((t, t), |(a, b)| (a.min(t), b.max(t))))
                    });
                }
            }
            Kind::Status { msg, status } => {
                if counted_status(status) {
                    note(&e.acc, Entity::Message(msg.clone()), &|k| {
                        k.first_status = min(k.first_status, t)
                    });
                }
            }
            Kind::Conversation { id, .. } => {
                note(&e.acc, Entity::Conversation(id.clone()), &earliest)
            }
            Kind::Flow { id, .. } => note(&e.acc, Entity::Flow(id.clone()), &earliest),
            Kind::Keyword { id: Some(id), .. } => {
                note(&e.acc, Entity::Keyword(id.clone()), &earliest)
            }
            Kind::Ai { id: Some(id), .. } => note(&e.acc, Entity::Ai(id.clone()), &earliest),
            Kind::Keyword { id: None, .. } | Kind::Ai { id: None, .. } => {}
        }
    }
    let mut out = Forgotten::default();
    for (key, k) in known {
        // Where the window starts: exactly, or somewhere between two times.
        let (lo, hi) = match (k.sent, k.first_status, k.replies, k.earliest) {
            (Some(t), ..) | (None, Some(t), ..) => (t, t),
            (None, None, Some(span), _) => span,
            (None, None, None, Some(t)) => (t, t),
            (None, None, None, None) => continue,
        };
        if hi + window < at {
            out.pruned.insert(key, lo);
        } else if lo + window < at {
            out.unsure.insert(key);
        }
    }
    out
}

/// What becomes of an event posted after a compaction forgot `f` (SPEC section 4): a
/// status, conversation event or flow event for a forgotten entity is ignored; a message,
/// or a keyword hit or AI call with an id, seen again is a duplicate; a new message in a
/// forgotten conversation counts in none, and a reply to a forgotten message marks none.
#[derive(Debug, Clone)]
pub enum Fate {
    /// Counts as this event.
    Counts(Ev),
    Duplicate,
    Ignored,
}

pub fn fate(e: &Ev, f: &Forgotten) -> Fate {
    let gone = |entity: Entity| {
        let key = (e.acc.clone(), entity);
        assert!(
            !f.unsure.contains(&key),
            "the test posts an event for {key:?}, which compaction may or may not have forgotten"
        );
        f.pruned.contains_key(&key)
    };
    let counts = |kind: Kind| {
        Fate::Counts(Ev {
            acc: e.acc.clone(),
            ts: e.ts,
            kind,
        })
    };
    match &e.kind {
        Kind::Status { msg, status }
            if counted_status(status) && gone(Entity::Message(msg.clone())) =>
        {
            Fate::Ignored
        }
        Kind::Conversation { id, .. } if gone(Entity::Conversation(id.clone())) => Fate::Ignored,
        Kind::Flow { id, .. } if gone(Entity::Flow(id.clone())) => Fate::Ignored,
        Kind::Message { id, .. } | Kind::Reply { id, .. } if gone(Entity::Message(id.clone())) => {
            Fate::Duplicate
        }
        Kind::Keyword { id: Some(id), .. } if gone(Entity::Keyword(id.clone())) => Fate::Duplicate,
        Kind::Ai { id: Some(id), .. } if gone(Entity::Ai(id.clone())) => Fate::Duplicate,
        Kind::Message {
            id,
            inbound,
            mtype,
            conv: Some(c),
        } if gone(Entity::Conversation(c.clone())) => counts(Kind::Message {
            id: id.clone(),
            inbound: *inbound,
            mtype: mtype.clone(),
            conv: None,
        }),
        Kind::Reply { id, to } if to != id && gone(Entity::Message(to.clone())) => {
            counts(Kind::Message {
                id: id.clone(),
                inbound: true,
                mtype: "text".into(),
                conv: None,
            })
        }
        _ => Fate::Counts(e.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// Comparison
// ---------------------------------------------------------------------------------------

pub fn compare(at: &str, got: &Value, exp: &Exp, errs: &mut Vec<String>) {
    let mut bad = |what: String| errs.push(format!("{at}: {what}"));
    match exp {
        Exp::Int(v) => {
            if got.as_i64() != Some(*v) {
                bad(format!("got {got}, expected {v}"));
            }
        }
        Exp::Null => {
            if !got.is_null() {
                bad(format!("got {got}, expected null"));
            }
        }
        Exp::IntOneOf(vs) => {
            if !got.as_i64().is_some_and(|g| vs.contains(&g)) {
                bad(format!("got {got}, expected one of {vs:?}"));
            }
        }
        Exp::Num(vs) => {
            if !got
                .as_f64()
                .is_some_and(|g| vs.iter().any(|v| (g - v).abs() < 1e-9))
            {
                bad(format!("got {got}, expected one of {vs:?}"));
            }
        }
        Exp::Str(s) => {
            if got.as_str() != Some(s) {
                bad(format!("got {got}, expected {s:?}"));
            }
        }
        Exp::Obj(fields) => {
            for (k, e) in fields {
                match got.get(k) {
                    Some(g) => compare(&format!("{at}.{k}"), g, e, errs),
                    None => errs.push(format!("{at}: missing field `{k}` in {got}")),
                }
            }
        }
        Exp::Arr(items) => match got.as_array() {
            Some(g) if g.len() == items.len() => {
                for (i, (g, e)) in g.iter().zip(items).enumerate() {
                    compare(&format!("{at}[{i}]"), g, e, errs);
                }
            }
            _ => bad(format!(
                "expected an array of {} entries, got {}",
                items.len(),
                got.as_array()
                    .map_or("no array".to_string(), |a| format!("{} entries", a.len()))
            )),
        },
        Exp::Counts(m) => {
            let g: Option<BTreeMap<String, i64>> = got.as_object().and_then(|o| {
                o.iter()
                    .map(|(k, v)| v.as_i64().map(|v| (k.clone(), v)))
                    .collect()
            });
            if g.as_ref() != Some(m) {
                bad(format!("got {got}, expected {m:?}"));
            }
        }
        Exp::Refused(_) => bad(format!("got {got}, expected a refusal")),
        Exp::TopK(m, limit) => {
            let g: Option<Vec<(String, i64)>> = got.as_array().and_then(|a| {
                a.iter()
                    .map(|x| {
                        Some((
                            x.get("keyword")?.as_str()?.to_string(),
                            x.get("count")?.as_i64()?,
                        ))
                    })
                    .collect()
            });
            let Some(g) = g else {
                return bad(format!("got {got}, expected a keyword list"));
            };
            let ok_len = g.len() == m.len().min(*limit);
            let ok_counts = g.iter().all(|(k, c)| m.get(k) == Some(c));
            let ok_sorted = g.windows(2).all(|w| w[0].1 >= w[1].1);
            let distinct = g.iter().map(|x| &x.0).collect::<BTreeSet<_>>().len() == g.len();
            let min_in = g.iter().map(|x| x.1).min().unwrap_or(i64::MAX);
            let ok_top = m
                .iter()
                .filter(|(k, _)| !g.iter().any(|x| &x.0 == *k))
                .all(|(_, c)| *c <= min_in);
            if !(ok_len && ok_counts && ok_sorted && distinct && ok_top) {
                bad(format!("got {got}, expected the top {limit} of {m:?}"));
            }
        }
    }
}

/// GETs every query of `expected` and returns every disagreement.
pub async fn check_all(server: &TestServer, key: &str, expected: &Expected) -> Vec<String> {
    let mut errs = Vec::new();
    for (path, exp) in &expected.checks {
        let (status, body) = server.get(key, path).await;
        if let Exp::Refused(needles) = exp {
            let msg = body["message"].as_str().unwrap_or_default();
            if status != StatusCode::BAD_REQUEST || body["status"] != "error" {
                errs.push(format!(
                    "{path}: status {status}, expected a 400 refusal (past a kept tier): {body}"
                ));
            } else if let Some(n) = needles.iter().find(|n| !msg.contains(n.as_str())) {
                errs.push(format!(
                    "{path}: the refusal does not name `{n}` (what can be served): {msg}"
                ));
            }
            continue;
        }
        if status != StatusCode::OK {
            errs.push(format!("{path}: status {status}: {body}"));
            continue;
        }
        compare(path, &body["data"], exp, &mut errs);
    }
    errs
}
