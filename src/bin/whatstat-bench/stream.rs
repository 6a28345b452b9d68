//! A message stream unlike the demo generator's: what a WhatsApp platform sends when it
//! only reports messages and their delivery statuses. 10 accounts over the last 29 days;
//! 60 % outbound messages, each with 1–3 statuses (`sent`, then `delivered`, then `read`,
//! or `sent` then `failed`), and 40 % inbound ones; every message id unique; realistic
//! fields (WhatsApp-style ids, recipients, templates, campaigns, pricing on `sent`).
//!
//! The same events are posted in two orders: by timestamp across accounts (live traffic)
//! and shuffled (history and imports, where a status often comes before its message).

use std::collections::HashMap;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use whatstat::demo::{ERROR_CODES, HOURLY, INBOUND_TYPES, OUTBOUND_TYPES, pick};

/// Accounts of the stream.
pub const ACCOUNTS: u32 = 10;
/// Days of the stream, ending now: inside the state window (35 days by default), so no
/// request needs `?backfill=true`.
pub const DAYS: i64 = 29;
/// Events per NDJSON body.
pub const BODY_EVENTS: usize = 5000;
/// The stream's organization's offset from UTC (Asia/Kolkata), for its daily rhythm.
const LOCAL_OFFSET: i64 = 19_800;

/// The order in which the stream's events are posted.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Order {
    /// By timestamp across all accounts, as live traffic arrives.
    Time,
    /// The same events shuffled, as a history import arrives.
    Random,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Time => "time",
            Order::Random => "random",
        }
    }
}

/// Which fields the stream's events carry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Fields {
    /// Recipients, templates, campaigns and pricing, as a platform reports them.
    Full,
    /// Only what the messages figures read: the same events without the fields above.
    Plain,
}

/// What the messages answer must say once the whole stream is stored.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub sent: u64,
    pub received: u64,
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
}

pub struct Stream {
    /// One JSON object per event, in time order (message before its statuses).
    lines: Vec<String>,
    pub totals: Totals,
    pub fields: Fields,
    /// Every message's id and the status a raw-row store ends with when it applies every
    /// status in order: `received` for inbound, else the last status of its ladder.
    pub final_status: HashMap<String, &'static str>,
}

/// (name, language, category), weighted.
const TEMPLATES: &[((&str, &str, &str), u32)] = &[
    (("order_update", "en_US", "utility"), 35),
    (("delivery_notice", "en", "utility"), 20),
    (("login_code", "en", "authentication"), 10),
    (("spring_sale", "en", "marketing"), 25),
    (("oferta_semana", "es", "marketing"), 10),
];
/// Mobile prefixes of a few countries, weighted; numbers are 12 digits.
const PREFIXES: &[(&str, u32)] = &[
    ("91987", 30),
    ("55119", 20),
    ("49151", 12),
    ("1415", 10),
    ("44740", 8),
    ("34612", 8),
    ("52155", 7),
    ("62812", 5),
];
#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    account_id: &'a str,
    timestamp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    direction: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template_name: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template_language: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    template_category: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    campaign_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing_category: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
}

impl<'a> Line<'a> {
    fn new(kind: &'static str, account_id: &'a str, timestamp: i64) -> Self {
        Line {
            kind,
            account_id,
            timestamp,
            id: None,
            message_id: None,
            direction: None,
            message_type: None,
            status: None,
            contact_id: None,
            recipient: None,
            template_name: None,
            template_language: None,
            template_category: None,
            campaign_id: None,
            pricing_category: None,
            pricing_type: None,
            error_code: None,
        }
    }

    fn status(account_id: &'a str, timestamp: i64, id: &'a str, status: &'static str) -> Self {
        Line {
            message_id: Some(id),
            status: Some(status),
            ..Line::new("message_status", account_id, timestamp)
        }
    }
}

/// A send time in the last `DAYS` days, following the daily rhythm of local hours.
fn send_time(rng: &mut StdRng, now: i64) -> i64 {
    let top = *HOURLY.iter().max().unwrap_or(&1);
    loop {
        let t = now - rng.random_range(5..DAYS * 86_400);
        let hour = ((t + LOCAL_OFFSET).rem_euclid(86_400) / 3600) as usize;
        if rng.random_range(0..top) < HOURLY[hour] {
            return t;
        }
    }
}

impl Stream {
    /// Messages and their statuses until at least `events` events, every timestamp at or
    /// before `now`. Deterministic for a given seed and `now`.
    /// Without `fields`, the same events leave out what only campaigns, templates and
    /// costs read (recipient, template, campaign, pricing), to measure what those cost.
    pub fn generate(
        events: u64,
        now: i64,
        seed: u64,
        fields: Fields,
    ) -> Result<Stream, serde_json::Error> {
        let full = fields == Fields::Full;
        let mut rng = StdRng::seed_from_u64(seed);
        let accounts: Vec<String> = (1..=ACCOUNTS).map(|a| format!("acct-{a:02}")).collect();
        let mut timed: Vec<(i64, String)> = Vec::with_capacity(events as usize + 3);
        let mut totals = Totals::default();
        let mut final_status = HashMap::new();
        let mut seq = 0u64;
        while (timed.len() as u64) < events {
            seq += 1;
            let account = &accounts[rng.random_range(0..accounts.len())];
            let t = send_time(&mut rng, now);
            let prefix = pick(&mut rng, PREFIXES);
            let digits = 12usize.saturating_sub(prefix.len());
            let suffix: u64 = rng.random_range(0..10u64.pow(digits as u32));
            let number = format!("{prefix}{suffix:0digits$}");
            let mut push = |at: i64, line: &Line| -> Result<(), serde_json::Error> {
                timed.push((at, serde_json::to_string(line)?));
                Ok(())
            };
            if rng.random_bool(0.4) {
                let id = format!("wamid.HBgM{number}FQIAEhgU{seq:020X}");
                totals.received += 1;
                final_status.insert(id.clone(), "received");
                push(
                    t,
                    &Line {
                        id: Some(&id),
                        direction: Some("inbound"),
                        message_type: Some(pick(&mut rng, INBOUND_TYPES)),
                        contact_id: Some(&number),
                        ..Line::new("message", account, t)
                    },
                )?;
                continue;
            }
            let id = format!("wamid.HBgM{number}FQIAERgS{seq:020X}");
            let mut kind = pick(&mut rng, OUTBOUND_TYPES);
            let template = (kind == "template").then(|| pick(&mut rng, TEMPLATES));
            let campaign = match template {
                Some((_, _, "marketing")) if rng.random_bool(0.8) => {
                    let week = (t + LOCAL_OFFSET).div_euclid(7 * 86_400);
                    Some(format!("{account}-campaign-{week}"))
                }
                _ => None,
            };
            if template.is_some() {
                kind = "template";
            }
            let pricing = match template {
                Some((_, _, category)) => (
                    category,
                    if category == "utility" && rng.random_bool(0.4) {
                        "free_customer_service"
                    } else {
                        "regular"
                    },
                ),
                None => ("service", "free_customer_service"),
            };
            totals.sent += 1;
            push(
                t,
                &Line {
                    id: Some(&id),
                    direction: Some("outbound"),
                    message_type: Some(kind),
                    contact_id: Some(&number),
                    recipient: Some(number.as_str()).filter(|_| full),
                    template_name: template.map(|t| t.0).filter(|_| full),
                    template_language: template.map(|t| t.1).filter(|_| full),
                    template_category: template.map(|t| t.2).filter(|_| full),
                    campaign_id: campaign.as_deref().filter(|_| full),
                    ..Line::new("message", account, t)
                },
            )?;
            let sent_at = (t + rng.random_range(0..3)).min(now);
            push(
                sent_at,
                &Line {
                    pricing_category: Some(pricing.0).filter(|_| full),
                    pricing_type: Some(pricing.1).filter(|_| full),
                    ..Line::status(account, sent_at, &id, "sent")
                },
            )?;
            let mut last = "sent";
            if rng.random_bool(0.03) {
                let at = (sent_at + rng.random_range(1..30)).min(now);
                push(
                    at,
                    &Line {
                        error_code: Some(pick(&mut rng, ERROR_CODES)),
                        ..Line::status(account, at, &id, "failed")
                    },
                )?;
                totals.failed += 1;
                last = "failed";
            } else if rng.random_bool(0.85) {
                let delivered_at = (sent_at + rng.random_range(1..120)).min(now);
                push(
                    delivered_at,
                    &Line::status(account, delivered_at, &id, "delivered"),
                )?;
                totals.delivered += 1;
                last = "delivered";
                if rng.random_bool(0.7) {
                    let read_at = (delivered_at + rng.random_range(5..7200)).min(now);
                    push(read_at, &Line::status(account, read_at, &id, "read"))?;
                    totals.read += 1;
                    last = "read";
                }
            }
            final_status.insert(id, last);
        }
        // A stable sort: at equal timestamps a message stays before its statuses.
        timed.sort_by_key(|(at, _)| *at);
        Ok(Stream {
            lines: timed.into_iter().map(|(_, l)| l).collect(),
            totals,
            fields,
            final_status,
        })
    }

    pub fn events(&self) -> u64 {
        self.lines.len() as u64
    }

    pub fn messages(&self) -> u64 {
        self.final_status.len() as u64
    }

    /// The stream as NDJSON bodies of `BODY_EVENTS` events, in `order`.
    pub fn bodies(&self, order: Order, seed: u64) -> Vec<Bytes> {
        let mut index: Vec<usize> = (0..self.lines.len()).collect();
        if order == Order::Random {
            index.shuffle(&mut StdRng::seed_from_u64(seed));
        }
        index
            .chunks(BODY_EVENTS)
            .map(|chunk| {
                let len = chunk.iter().map(|&i| self.lines[i].len() + 1).sum();
                let mut body = Vec::with_capacity(len);
                for &i in chunk {
                    body.extend_from_slice(self.lines[i].as_bytes());
                    body.push(b'\n');
                }
                Bytes::from(body)
            })
            .collect()
    }

    /// The mean size of an event's JSON, in bytes.
    pub fn mean_event_bytes(&self) -> f64 {
        let total: usize = self.lines.iter().map(String::len).sum();
        total as f64 / self.lines.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_has_the_described_shape() {
        let now = 1_750_000_000;
        let s = Stream::generate(50_000, now, 1, Fields::Full).unwrap();
        assert!(s.events() >= 50_000 && s.events() < 50_004);
        let t = s.totals;
        let messages = t.sent + t.received;
        assert_eq!(messages, s.messages());
        let outbound_share = t.sent as f64 / messages as f64;
        assert!((0.57..0.63).contains(&outbound_share), "{outbound_share}");
        // Statuses per outbound message: between 1 and 3, about 2.4 on average.
        let statuses = s.events() - messages;
        let per = statuses as f64 / t.sent as f64;
        assert!((2.2..2.7).contains(&per), "{per}");
        assert!(t.read <= t.delivered && t.failed > 0);
        // In time order, never a timestamp before the previous one, none after now, none
        // older than the stream's days.
        let mut last = i64::MIN;
        for l in &s.lines {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let at = v["timestamp"].as_i64().unwrap();
            assert!(at >= last && at <= now && at > now - DAYS * 86_400);
            last = at;
        }
        // Without the fields, the same events: only those fields are gone.
        let plain = Stream::generate(50_000, now, 1, Fields::Plain).unwrap();
        assert_eq!(plain.lines.len(), s.lines.len());
        assert_eq!(plain.totals, s.totals);
        let strip = |l: &str| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            let o = v.as_object_mut().unwrap();
            let had = o.len();
            for f in [
                "recipient",
                "template_name",
                "template_language",
                "template_category",
                "campaign_id",
                "pricing_category",
                "pricing_type",
            ] {
                o.remove(f);
            }
            (v, had)
        };
        let mut dropped = 0;
        for (f, p) in s.lines.iter().zip(&plain.lines) {
            let ((full, had), (bare, kept)) = (strip(f), strip(p));
            assert_eq!(full, bare);
            dropped += had - kept;
        }
        assert!(dropped > 0 && plain.lines.iter().all(|l| !l.contains("recipient")));
        // Both orders hold the same events, in bodies of at most 5,000.
        let time = s.bodies(Order::Time, 2);
        let random = s.bodies(Order::Random, 2);
        assert_eq!(time.len(), s.lines.len().div_ceil(BODY_EVENTS));
        let sorted = |bodies: &[Bytes]| {
            let mut all: Vec<&[u8]> = bodies
                .iter()
                .flat_map(|b| b.split(|c| *c == b'\n').filter(|l| !l.is_empty()))
                .collect();
            all.sort();
            all.into_iter().map(<[u8]>::to_vec).collect::<Vec<_>>()
        };
        assert_eq!(sorted(&time), sorted(&random));
        assert_ne!(time[0], random[0]);
    }
}
