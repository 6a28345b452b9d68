//! Realistic demo traffic: a few accounts over recent weeks with a daily and weekly
//! rhythm, the delivery and read funnel, failures, chatbot conversations with flows,
//! keyword hits, AI calls and campaigns. Deterministic for a given seed.

use crate::engine::keys::{Authentication, NewCredential};
use std::path::Path;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::engine::{EngineError, EventsBody, Org, Services};

#[derive(Debug, Clone, Args)]
pub struct DemoOptions {
    /// Number of WhatsApp accounts (phone numbers) to simulate.
    #[arg(long, default_value_t = 3)]
    pub accounts: u32,
    /// Days of history to generate, ending now.
    #[arg(long, default_value_t = 30)]
    pub days: u32,
    /// Outbound plus inbound messages per account on an average weekday.
    #[arg(long, default_value_t = 1200)]
    pub messages_per_day: u32,
    /// Time zone of the demo organization (its rhythm follows local hours).
    #[arg(long, default_value = "Asia/Kolkata")]
    pub timezone: String,
    /// Seed of the generator: the same seed gives the same events.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            accounts: 3,
            days: 30,
            messages_per_day: 1200,
            timezone: "Asia/Kolkata".into(),
            seed: 42,
        }
    }
}

pub const INBOUND_TYPES: &[(&str, u32)] = &[
    ("text", 70),
    ("image", 12),
    ("audio", 6),
    ("document", 3),
    ("sticker", 3),
    ("location", 2),
    ("interactive", 3),
    ("button", 1),
];
pub const OUTBOUND_TYPES: &[(&str, u32)] = &[
    ("text", 55),
    ("template", 35),
    ("image", 6),
    ("document", 3),
    ("interactive", 1),
];
/// Templates: (name, language, category), weighted.
type TemplateChoice = (&'static str, &'static str, &'static str);
const CAMPAIGN_TEMPLATES: &[(TemplateChoice, u32)] = &[
    (("spring_sale", "en", "marketing"), 60),
    (("new_arrivals", "en", "marketing"), 30),
    (("oferta_semana", "es", "marketing"), 10),
];
const SERVICE_TEMPLATES: &[(TemplateChoice, u32)] = &[
    (("order_update", "en_US", "utility"), 55),
    (("delivery_notice", "en", "utility"), 30),
    (("login_code", "en", "authentication"), 15),
];
/// Recipients' number prefixes (mobile ranges of each country), weighted; 12 digits in all.
const RECIPIENTS: &[(&str, u32)] = &[
    ("91987", 30),
    ("55119", 20),
    ("49151", 12),
    ("1415", 10),
    ("44740", 8),
    ("34612", 8),
    ("52155", 7),
    ("62812", 5),
];
const FLOWS: &[(&str, u32)] = &[
    ("Order Status", 40),
    ("FAQ", 30),
    ("Returns", 15),
    ("Book Appointment", 10),
    ("Feedback", 5),
];
const KEYWORDS: &[(&str, u32)] = &[
    ("order", 30),
    ("shipping", 18),
    ("return", 14),
    ("price", 10),
    ("refund", 9),
    ("hours", 7),
    ("agent", 7),
    ("cancel", 5),
];
const MODELS: &[(&str, u32)] = &[("gpt-4o-mini", 70), ("gpt-4o", 20), ("claude-haiku", 10)];
pub const ERROR_CODES: &[(&str, u32)] = &[
    ("131026", 50),
    ("131047", 25),
    ("131049", 15),
    ("130472", 10),
];
/// Relative traffic per local hour: quiet nights, a late-morning and an evening peak.
pub const HOURLY: [u32; 24] = [
    2, 1, 1, 1, 1, 2, 4, 7, 10, 13, 15, 15, 14, 12, 11, 11, 12, 14, 16, 16, 13, 9, 6, 3,
];

/// A value drawn from `table` with the weights beside each.
pub fn pick<T: Copy>(rng: &mut StdRng, table: &[(T, u32)]) -> T {
    let total: u32 = table.iter().map(|(_, w)| w).sum();
    let mut r = rng.random_range(0..total);
    for (v, w) in table {
        if r < *w {
            return *v;
        }
        r -= w;
    }
    table[0].0
}

/// Generates one account-day of events, every timestamp at or before `now`.
pub fn day_events(
    rng: &mut StdRng,
    account: &str,
    day_start: i64,
    now: i64,
    opts: &DemoOptions,
    weekday: i8,
) -> Vec<Value> {
    let mut out = Vec::new();
    let weekend = weekday >= 6;
    let scale = if weekend { 0.6 } else { 1.0 };
    let volume = (f64::from(opts.messages_per_day) * scale * rng.random_range(0.85..1.15)) as u32;
    let hour_total: u32 = HOURLY.iter().sum();
    let ts = |t: i64| json!(t);
    let day = day_start / 86_400;
    let mut push = |t: i64, mut v: Value| {
        if t <= now {
            if let Some(o) = v.as_object_mut() {
                o.insert("account_id".into(), json!(account));
                o.insert("timestamp".into(), ts(t));
            }
            out.push(v);
        }
    };
    // Roughly a third of the traffic is chatbot conversations, each ~6 messages.
    let conversations = volume / 18;
    let broadcast = volume.saturating_sub(conversations * 6);
    let at = |rng: &mut StdRng| {
        let mut r = rng.random_range(0..hour_total);
        let mut hour = 0;
        while r >= HOURLY[hour] {
            r -= HOURLY[hour];
            hour += 1;
        }
        day_start + hour as i64 * 3600 + rng.random_range(0..3600)
    };
    for c in 0..conversations {
        let start = at(rng);
        let conv = format!("{account}-c{day}-{c}");
        let contact = format!("{account}-p{day}-{c}");
        if rng.random_bool(0.35) {
            push(start - 5, json!({"type":"contact","id":contact}));
        }
        push(
            start,
            json!({"type":"conversation","id":conv,"status":"started"}),
        );
        let mut t = start;
        let messages = rng.random_range(3..10);
        for m in 0..messages {
            t += rng.random_range(5..90);
            let inbound = m % 2 == 0;
            let table = if inbound {
                INBOUND_TYPES
            } else {
                &[("text", 90), ("interactive", 10)][..]
            };
            push(
                t,
                json!({"type":"message","id":format!("{conv}-m{m}"),"direction":if inbound {"inbound"} else {"outbound"},
                "message_type":pick(rng, table),"contact_id":contact,"conversation_id":conv}),
            );
            if !inbound {
                push(
                    t + 2,
                    json!({"type":"message_status","message_id":format!("{conv}-m{m}"),"status":"delivered"}),
                );
                if rng.random_bool(0.9) {
                    push(
                        t + rng.random_range(5..60),
                        json!({"type":"message_status","message_id":format!("{conv}-m{m}"),"status":"read"}),
                    );
                }
            }
        }
        if rng.random_bool(0.6) {
            let run = format!("{conv}-f");
            let flow = pick(rng, FLOWS);
            push(
                start + 3,
                json!({"type":"flow","id":run,"flow_name":flow,"status":"started","conversation_id":conv}),
            );
            if rng.random_bool(0.8) {
                push(
                    t,
                    json!({"type":"flow","id":run,"flow_name":flow,"status":"completed","conversation_id":conv}),
                );
            }
        }
        for k in 0..rng.random_range(0..3) {
            push(
                start + 1 + k,
                json!({"type":"keyword","id":format!("{conv}-k{k}"),"keyword":pick(rng, KEYWORDS),"conversation_id":conv}),
            );
        }
        for a in 0..rng.random_range(1..4) {
            let model = pick(rng, MODELS);
            let prompt = rng.random_range(80..600);
            let completion = rng.random_range(20..300);
            let mut v = json!({"type":"ai_request","id":format!("{conv}-a{a}"),"model":model,"prompt_tokens":prompt,"completion_tokens":completion});
            if rng.random_bool(0.5) {
                v["cost"] = json!(f64::from(prompt + completion) * 0.000_004);
            }
            push(start + 2 + a, v);
        }
        let outcome = match rng.random_range(0..100) {
            0..70 => "auto_resolved",
            70..90 => "transferred",
            _ => "abandoned",
        };
        push(
            t + rng.random_range(30..600),
            json!({"type":"conversation","id":conv,"status":outcome}),
        );
    }
    for b in 0..broadcast {
        let t = at(rng);
        let id = format!("{account}-b{day}-{b}");
        if rng.random_bool(0.4) {
            push(
                t,
                json!({"type":"message","id":id,"direction":"inbound","message_type":pick(rng, INBOUND_TYPES)}),
            );
            continue;
        }
        let mut v = json!({"type":"message","id":id,"direction":"outbound","message_type":pick(rng, OUTBOUND_TYPES)});
        let prefix = pick(rng, RECIPIENTS);
        let digits = 12usize.saturating_sub(prefix.len());
        let suffix: u64 = rng.random_range(0..10u64.pow(digits as u32));
        v["recipient"] = json!(format!("{prefix}{suffix:0digits$}"));
        // Campaign messages belong to this week's campaign (created on Monday).
        let campaign = rng.random_bool(0.3);
        let template = if campaign {
            let monday = day - i64::from((weekday + 6) % 7);
            v["campaign_id"] = json!(format!("{account}-campaign-{monday}"));
            Some(pick(rng, CAMPAIGN_TEMPLATES))
        } else if v["message_type"] == "template" {
            Some(pick(rng, SERVICE_TEMPLATES))
        } else {
            None
        };
        // Meta's pricing: templates are billed by their category; a utility template
        // inside an open customer-service window and a free-form reply are free.
        let pricing = match template {
            Some((name, language, category)) => {
                v["message_type"] = json!("template");
                v["template_name"] = json!(name);
                v["template_language"] = json!(language);
                v["template_category"] = json!(category);
                let free = category == "utility" && rng.random_bool(0.4);
                (
                    category,
                    if free {
                        "free_customer_service"
                    } else {
                        "regular"
                    },
                )
            }
            None => ("service", "free_customer_service"),
        };
        push(t, v);
        push(
            t + 1,
            json!({"type":"message_status","message_id":id,"status":"sent",
                   "pricing_category":pricing.0,"pricing_type":pricing.1}),
        );
        if rng.random_bool(if campaign { 0.12 } else { 0.05 }) {
            push(
                t + rng.random_range(300..5400),
                json!({"type":"message","id":format!("{id}-reply"),"direction":"inbound",
                       "message_type":"text","reply_to":id}),
            );
        }
        if rng.random_bool(0.03) {
            push(
                t + 3,
                json!({"type":"message_status","message_id":id,"status":"failed","error_code":pick(rng, ERROR_CODES)}),
            );
            continue;
        }
        if rng.random_bool(0.96) {
            push(
                t + rng.random_range(2..120),
                json!({"type":"message_status","message_id":id,"status":"delivered"}),
            );
            if rng.random_bool(0.68) {
                push(
                    t + rng.random_range(120..7200),
                    json!({"type":"message_status","message_id":id,"status":"read"}),
                );
            }
        }
    }
    // A weekly campaign: created Monday morning, running from noon, completed by evening.
    if weekday == 1 {
        let id = format!("{account}-campaign-{day}");
        push(
            day_start + 9 * 3600,
            json!({"type":"campaign","id":id,"status":"created"}),
        );
        push(
            day_start + 10 * 3600,
            json!({"type":"campaign","id":id,"status":"scheduled"}),
        );
        push(
            day_start + 12 * 3600,
            json!({"type":"campaign","id":id,"status":"running"}),
        );
        push(
            day_start + 19 * 3600,
            json!({"type":"campaign","id":id,"status":"completed"}),
        );
    }
    out.sort_by_key(|v| v["timestamp"].as_i64());
    out
}

/// Walks the demo days, handing each account-day's events to `sink`.
async fn generate<F, Fut>(opts: &DemoOptions, now: i64, mut sink: F) -> Result<u64, EngineError>
where
    F: FnMut(Vec<Value>) -> Fut,
    Fut: std::future::Future<Output = Result<(), EngineError>>,
{
    let tz = jiff::tz::TimeZone::get(&opts.timezone)
        .map_err(|_| EngineError::BadRequest(format!("unknown time zone `{}`", opts.timezone)))?;
    let today = jiff::Timestamp::from_second(now)
        .map_err(|e| EngineError::Internal(e.to_string()))?
        .to_zoned(tz.clone())
        .date();
    let bar = ProgressBar::new(u64::from(opts.days) * u64::from(opts.accounts));
    bar.set_style(
        ProgressStyle::with_template("{spinner} demo {bar:30} {pos}/{len} account-days, {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut total = 0u64;
    for back in (0..opts.days).rev() {
        let date = today
            .checked_sub(jiff::Span::new().days(i64::from(back)))
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let start = date
            .to_zoned(tz.clone())
            .and_then(|z| z.start_of_day())
            .map_err(|e| EngineError::Internal(e.to_string()))?
            .timestamp()
            .as_second();
        for a in 0..opts.accounts {
            let account = format!("acct-{}", a + 1);
            let events = day_events(
                &mut rng,
                &account,
                start,
                now,
                opts,
                date.weekday().to_monday_one_offset(),
            );
            total += events.len() as u64;
            sink(events).await?;
            bar.inc(1);
            bar.set_message(format!("{total} events"));
        }
    }
    bar.finish_with_message(format!("{total} events"));
    Ok(total)
}

/// Writes demo traffic for `org` straight through the engine.
pub async fn fill(services: &Services, org: &Org, opts: &DemoOptions) -> Result<u64, EngineError> {
    let now = services.clock.now();
    generate(opts, now, |events| async move {
        for chunk in events.chunks(5000) {
            let body =
                serde_json::to_vec(chunk).map_err(|e| EngineError::Internal(e.to_string()))?;
            services
                .ingest
                .ingest(org, EventsBody::Json(&body), true)
                .await?;
        }
        Ok(())
    })
    .await
}

/// Sends demo traffic to a running server over HTTP.
pub async fn send_to_server(
    server: &str,
    key: &str,
    opts: &DemoOptions,
) -> Result<u64, EngineError> {
    let client = reqwest::Client::new();
    let url = format!("{}/api/events?backfill=true", server.trim_end_matches('/'));
    let now = jiff::Timestamp::now().as_second();
    generate(opts, now, |events| {
        let client = client.clone();
        let url = url.clone();
        async move {
            for chunk in events.chunks(5000) {
                let r = client
                    .post(&url)
                    .bearer_auth(key)
                    .json(chunk)
                    .send()
                    .await
                    .map_err(|e| EngineError::Internal(format!("cannot reach {url}: {e}")))?;
                if !r.status().is_success() {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(EngineError::Internal(format!(
                        "{url} answered {status}: {text}"
                    )));
                }
            }
            Ok(())
        }
    })
    .await
}

/// `serve --demo`: fills an empty store once, and prints a key and queries to try.
/// The demo organization's read-only share link (`/share/<token>`): the one kept in
/// `file`, or a new one kept there.
async fn demo_share_link(
    services: &Services,
    key: &str,
    file: &Path,
) -> Result<String, EngineError> {
    if let Ok(token) = std::fs::read_to_string(file) {
        let token = token.trim();
        if let Authentication::Valid(_) = services.tenants.authenticate(token).await? {
            return Ok(format!("/share/{token}"));
        }
    }
    let Authentication::Valid(admin) = services.tenants.authenticate(key).await? else {
        return Err(EngineError::Internal(
            "the saved demo key no longer works".into(),
        ));
    };
    let link = services
        .tenants
        .create_share_link(
            &admin.org,
            NewCredential {
                name: "Demo share link".into(),
                ..Default::default()
            },
        )
        .await?;
    if let Err(e) = std::fs::write(file, &link.token) {
        tracing::warn!(error = %e, file = %file.display(), "cannot save the demo share link");
    }
    Ok(link.url)
}

pub async fn prepare_served_demo(
    services: &Services,
    url: &str,
    base: &str,
) -> Result<(), EngineError> {
    let key_file = url
        .strip_prefix("sqlite://")
        .and_then(|p| Path::new(p).parent().map(|d| d.join("demo-api-key")))
        .unwrap_or_else(|| Path::new("demo-api-key").to_path_buf());
    let key = if services.tenants.count().await? == 0 {
        let opts = DemoOptions::default();
        let (org, key) = services
            .tenants
            .create_org("Demo Store", &opts.timezone)
            .await?;
        tracing::info!("filling the store with demo traffic");
        let n = fill(services, &org, &opts).await?;
        tracing::info!(events = n, "demo data ready");
        if let Err(e) = std::fs::write(&key_file, &key) {
            tracing::warn!(error = %e, file = %key_file.display(), "cannot save the demo key");
        }
        key
    } else {
        match std::fs::read_to_string(&key_file) {
            Ok(k) => k.trim().to_string(),
            Err(_) => {
                println!(
                    "The store already holds data; no demo was added. Create a key with `whatstat org create`."
                );
                return Ok(());
            }
        }
    };
    let share =
        demo_share_link(services, &key, &key_file.with_file_name("demo-share-token")).await?;
    println!(
        "\nwhatstat is ready at {base} with demo data (organization in Asia/Kolkata).\n\
         API key: {key}\n\n\
         Dashboard:  {base}/  (sign in with the API key)\n\
         Share link: {base}{share}  (read-only, no key needed)\n\n\
         Try:\n  curl -s -H 'Authorization: Bearer {key}' '{base}/api/analytics/dashboard?period=month'\n  \
         curl -s -H 'Authorization: Bearer {key}' '{base}/api/analytics/messages?granularity=day'\n  \
         curl -s -H 'Authorization: Bearer {key}' '{base}/api/analytics/chatbot?account_id=acct-1'\n"
    );
    Ok(())
}
