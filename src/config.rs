//! Settings, from flags, environment variables or a TOML file (in that order of precedence).

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use serde::Deserialize;

use std::time::Duration;

use crate::engine::EngineConfig;
use crate::engine::forwarding::{
    DEFAULT_MAX_AGE_SECS, DEFAULT_MAX_BACKOFF_SECS, DEFAULT_MAX_PENDING_BYTES, ForwardConfig,
};
use crate::engine::rates::RateCard;
use crate::engine::webhook::{
    DEFAULT_UNROUTED_MAX_BYTES, DEFAULT_UNROUTED_MAX_PAYLOADS, SecretSource, WebhookConfig,
};
use crate::secrets::{SecretKey, key_file_for};
use crate::store::StoreOptions;

/// The example card shipped in docs/, with illustrative prices.
pub const EXAMPLE_RATE_CARD: &str = include_str!("../docs/rate-card.example.csv");

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./whatstat-data/whatstat.db";

/// Where the data lives, and how it is kept. Shared by every command that opens a store.
#[derive(Debug, Clone, Default, Args)]
pub struct StoreArgs {
    /// Database URL: sqlite://PATH (the file and its folder are created on first start),
    /// or postgres://USER@HOST:PORT/DB (schema migrated at start; several instances may share it).
    /// [default: sqlite://./whatstat-data/whatstat.db]
    #[arg(long, env = "WHATSTAT_DATABASE_URL")]
    pub database_url: Option<String>,

    /// TOML file with any of these settings (keys as the long flag names, with `_`).
    /// Flags and environment variables take precedence over it.
    #[arg(long, env = "WHATSTAT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Days of per-message, per-conversation and per-flow-run state kept for dedup and
    /// late statuses; older events need ?backfill=true. [default: 35]
    #[arg(long, env = "WHATSTAT_STATE_WINDOW_DAYS")]
    pub state_window_days: Option<i64>,

    /// Days hourly figures are kept. [default: 30]
    #[arg(long, env = "WHATSTAT_HOURLY_RETENTION_DAYS")]
    pub hourly_retention_days: Option<i64>,

    /// Days daily figures are kept (monthly ones are kept forever). [default: 365]
    #[arg(long, env = "WHATSTAT_DAILY_RETENTION_DAYS")]
    pub daily_retention_days: Option<i64>,

    /// Price of AI calls that come without a cost, USD per 1,000 tokens, per model:
    /// `gpt-4o=0.005,gpt-4o-mini=0.0006`. Models not listed use --default-ai-price.
    #[arg(long, env = "WHATSTAT_AI_PRICES")]
    pub ai_prices: Option<String>,

    /// USD per 1,000 tokens for models without a price of their own. [default: 0.002]
    #[arg(long, env = "WHATSTAT_DEFAULT_AI_PRICE")]
    pub default_ai_price: Option<f64>,

    /// CSV file of what Meta charges per billable message: header `category,country,price`
    /// and an optional `effective_from` (the 1st of a month); country is ISO 3166 alpha-2
    /// or `*`. Without it, estimated spend is 0 and billable messages count as unpriced.
    #[arg(long, env = "WHATSTAT_RATE_CARD")]
    pub rate_card: Option<PathBuf>,

    /// Currency of the rate card's prices (ISO 4217). [default: USD]
    #[arg(long, env = "WHATSTAT_CURRENCY")]
    pub currency: Option<String>,

    /// Price with the shipped example card when no rate card is given (the demo does).
    #[arg(skip)]
    pub example_rate_card: bool,

    /// Server secret that encrypts stored Meta app secrets (any length). Without it, a key
    /// file of random bytes is created beside the SQLite database (`secret.key`, mode 0600).
    #[arg(long, env = "WHATSTAT_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Meta webhook payloads for unregistered numbers kept at most. [default: 1000]
    #[arg(long, env = "WHATSTAT_UNROUTED_MAX_PAYLOADS")]
    pub unrouted_max_payloads: Option<usize>,

    /// Bytes of such payloads kept at most; the oldest are dropped first. [default: 67108864]
    #[arg(long, env = "WHATSTAT_UNROUTED_MAX_BYTES")]
    pub unrouted_max_bytes: Option<usize>,

    /// Allow http:// forward URLs (loopback tests, private networks); otherwise only https://.
    #[arg(long, env = "WHATSTAT_FORWARD_ALLOW_HTTP", num_args = 0..=1, default_missing_value = "true")]
    pub forward_allow_http: Option<bool>,

    /// Refuse forward URLs whose host is or resolves to a loopback, private, link-local or
    /// unique-local address, when saved and again at every delivery.
    #[arg(long, env = "WHATSTAT_FORWARD_DENY_PRIVATE", num_args = 0..=1, default_missing_value = "true")]
    pub forward_deny_private: Option<bool>,

    /// Page cache of the SQLite writer, in MiB (8 to 65536). Each MiB is a MiB of the
    /// server's memory; more helps ingest only where the operating system's file cache is
    /// small (docs/operating.md "Memory").
    /// [default: 32]
    #[arg(long, env = "WHATSTAT_SQLITE_CACHE_MIB")]
    pub sqlite_cache_mib: Option<u64>,

    /// Longest wait between two attempts of a webhook delivery, in seconds. [default: 300]
    #[arg(long, env = "WHATSTAT_FORWARD_MAX_BACKOFF_SECS")]
    pub forward_max_backoff_secs: Option<u64>,

    /// How long a webhook delivery is retried before it moves to the failed list, in
    /// seconds. [default: 604800]
    #[arg(long, env = "WHATSTAT_FORWARD_MAX_AGE_SECS")]
    pub forward_max_age_secs: Option<u64>,

    /// Bytes of pending webhook deliveries kept per organization; beyond it the oldest move
    /// to the failed list. [default: 268435456]
    #[arg(long, env = "WHATSTAT_FORWARD_MAX_PENDING_BYTES")]
    pub forward_max_pending_bytes: Option<u64>,
}

/// The same settings as read from a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub database_url: Option<String>,
    pub master_key: Option<String>,
    pub state_window_days: Option<i64>,
    pub hourly_retention_days: Option<i64>,
    pub daily_retention_days: Option<i64>,
    pub ai_prices: Option<String>,
    pub default_ai_price: Option<f64>,
    pub rate_card: Option<PathBuf>,
    pub currency: Option<String>,
    pub sqlite_cache_mib: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub rate_limit: Option<u32>,
    pub compact_interval_secs: Option<u64>,
    pub secret_key: Option<String>,
    pub unrouted_max_payloads: Option<usize>,
    pub unrouted_max_bytes: Option<usize>,
    pub forward_allow_http: Option<bool>,
    pub forward_deny_private: Option<bool>,
    pub forward_max_backoff_secs: Option<u64>,
    pub forward_max_age_secs: Option<u64>,
    pub forward_max_pending_bytes: Option<u64>,
    pub metrics_open: Option<bool>,
    pub log_format: Option<LogFormat>,
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One readable line per event.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, the event's fields, and
    /// the spans it happened in.
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl StoreArgs {
    pub fn file(&self) -> Result<FileConfig, ConfigError> {
        let Some(path) = &self.config else {
            return Ok(FileConfig::default());
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: shown,
            message: e.to_string(),
        })
    }

    pub fn database_url(&self, file: &FileConfig) -> String {
        self.database_url
            .clone()
            .or_else(|| file.database_url.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.into())
    }

    /// How the store is opened: the SQLite writer's page cache.
    pub fn store_options(&self, file: &FileConfig) -> Result<StoreOptions, ConfigError> {
        let mib = self
            .sqlite_cache_mib
            .or(file.sqlite_cache_mib)
            .unwrap_or(StoreOptions::DEFAULT_SQLITE_CACHE_MIB);
        StoreOptions::with_sqlite_cache_mib(mib).map_err(ConfigError::Invalid)
    }

    pub fn engine_config(&self, file: &FileConfig) -> Result<EngineConfig, ConfigError> {
        let days = |flag: Option<i64>, from_file: Option<i64>, default: i64, name: &str| {
            let d = flag.or(from_file).unwrap_or(default);
            if d < 1 {
                Err(ConfigError::Invalid(format!(
                    "--{name} is {d}; allowed: 1 or more days"
                )))
            } else {
                Ok(d)
            }
        };
        let state_window = days(
            self.state_window_days,
            file.state_window_days,
            35,
            "state-window-days",
        )?;
        let hourly = days(
            self.hourly_retention_days,
            file.hourly_retention_days,
            30,
            "hourly-retention-days",
        )?;
        let daily = days(
            self.daily_retention_days,
            file.daily_retention_days,
            365,
            "daily-retention-days",
        )?;
        let prices = self
            .ai_prices
            .clone()
            .or_else(|| file.ai_prices.clone())
            .unwrap_or_default();
        let default_price = self
            .default_ai_price
            .or(file.default_ai_price)
            .unwrap_or(0.002);
        if !(default_price.is_finite() && default_price >= 0.0) {
            return Err(ConfigError::Invalid(format!(
                "--default-ai-price is {default_price}; allowed: 0 or more"
            )));
        }
        Ok(EngineConfig {
            state_window_secs: state_window * 86_400,
            hourly_retention_days: Some(hourly),
            daily_retention_days: Some(daily),
            ai_prices: parse_prices(&prices)?,
            default_ai_price_per_1k: default_price,
            webhook: self.webhook_config(file)?,
            forward: self.forward_config(file)?,
            rate_card: self.rate_card(file)?,
        })
    }

    /// The rate card named by --rate-card, in --currency.
    pub fn rate_card(&self, file: &FileConfig) -> Result<RateCard, ConfigError> {
        let currency = (self.currency.clone())
            .or_else(|| file.currency.clone())
            .unwrap_or_else(|| "USD".into());
        let text = match self.rate_card.clone().or_else(|| file.rate_card.clone()) {
            Some(path) => std::fs::read_to_string(&path).map_err(|e| {
                ConfigError::Invalid(format!("--rate-card {}: {e}", path.display()))
            })?,
            None if self.example_rate_card => EXAMPLE_RATE_CARD.into(),
            None => "category,country,price\n".into(),
        };
        RateCard::parse(&text, &currency)
            .map_err(|e| ConfigError::Invalid(format!("--rate-card / --currency: {e}")))
    }

    /// The webhook tee's settings.
    pub fn forward_config(&self, file: &FileConfig) -> Result<ForwardConfig, ConfigError> {
        let at_least_one = |v: u64, name: &str| {
            if v < 1 {
                Err(ConfigError::Invalid(format!(
                    "--{name} is {v}; allowed: 1 or more"
                )))
            } else {
                Ok(v)
            }
        };
        let backoff = at_least_one(
            self.forward_max_backoff_secs
                .or(file.forward_max_backoff_secs)
                .unwrap_or(DEFAULT_MAX_BACKOFF_SECS),
            "forward-max-backoff-secs",
        )?;
        let age = at_least_one(
            self.forward_max_age_secs
                .or(file.forward_max_age_secs)
                .unwrap_or(DEFAULT_MAX_AGE_SECS),
            "forward-max-age-secs",
        )?;
        let pending = at_least_one(
            self.forward_max_pending_bytes
                .or(file.forward_max_pending_bytes)
                .unwrap_or(DEFAULT_MAX_PENDING_BYTES),
            "forward-max-pending-bytes",
        )?;
        Ok(ForwardConfig {
            allow_http: self
                .forward_allow_http
                .or(file.forward_allow_http)
                .unwrap_or(false),
            deny_private: self
                .forward_deny_private
                .or(file.forward_deny_private)
                .unwrap_or(false),
            max_backoff: Duration::from_secs(backoff),
            max_age: Duration::from_secs(age),
            max_pending_bytes: pending,
            ..ForwardConfig::default()
        })
    }

    /// The Meta webhook's settings; a key file is only read or created on first use.
    pub fn webhook_config(&self, file: &FileConfig) -> Result<WebhookConfig, ConfigError> {
        let secret = match self.secret_key.clone().or_else(|| file.secret_key.clone()) {
            Some(k) => SecretSource::Key(
                SecretKey::from_passphrase(&k)
                    .map_err(|_| ConfigError::Invalid("--secret-key is empty".into()))?,
            ),
            None => SecretSource::KeyFile(key_file_for(&self.database_url(file))),
        };
        Ok(WebhookConfig::new(
            secret,
            self.unrouted_max_payloads
                .or(file.unrouted_max_payloads)
                .unwrap_or(DEFAULT_UNROUTED_MAX_PAYLOADS),
            self.unrouted_max_bytes
                .or(file.unrouted_max_bytes)
                .unwrap_or(DEFAULT_UNROUTED_MAX_BYTES),
        ))
    }
}

fn parse_prices(s: &str) -> Result<HashMap<String, f64>, ConfigError> {
    let mut out = HashMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parsed = part
            .split_once('=')
            .and_then(|(m, p)| Some((m.trim().to_string(), p.trim().parse::<f64>().ok()?)))
            .filter(|(m, p)| !m.is_empty() && p.is_finite() && *p >= 0.0);
        let (model, price) = parsed.ok_or_else(|| {
            ConfigError::Invalid(format!(
                "--ai-prices entry `{part}`; allowed: MODEL=USD_PER_1K_TOKENS, comma-separated"
            ))
        })?;
        out.insert(model, price);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_and_bad_ones_are_named() {
        let p = parse_prices("gpt-4o=0.005, mini=0.0006").expect("valid");
        assert_eq!(p.get("gpt-4o"), Some(&0.005));
        assert_eq!(p.len(), 2);
        assert!(
            parse_prices("gpt-4o")
                .unwrap_err()
                .to_string()
                .contains("`gpt-4o`")
        );
    }

    #[test]
    fn flags_win_over_the_file() {
        let args = StoreArgs {
            hourly_retention_days: Some(7),
            ..Default::default()
        };
        let file = FileConfig {
            hourly_retention_days: Some(9),
            daily_retention_days: Some(100),
            ..Default::default()
        };
        let c = args.engine_config(&file).expect("valid");
        assert_eq!(c.hourly_retention_days, Some(7));
        assert_eq!(c.daily_retention_days, Some(100));
        assert_eq!(c.state_window_secs, 35 * 86_400);
    }
}
