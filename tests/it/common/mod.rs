//! Test harness: the real server (router, engine and store) on a free loopback port,
//! over a fresh database, spoken to over HTTP.

pub mod backend;
pub mod process;

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::Value;
use whatstat::api::{self, ApiLimits};
use whatstat::engine::{EngineConfig, Services};
use whatstat::store::RollupStore;

pub const MASTER_KEY: &str = "test-master-key";

pub struct TestServer {
    pub base: String,
    pub services: Services,
    /// The store's rollups, for checks of what is stored.
    pub rollups: Arc<dyn RollupStore>,
    pub client: reqwest::Client,
    /// Stops the webhook delivery worker when dropped.
    _forwarding: tokio::sync::watch::Sender<bool>,
    _dir: backend::TestDatabase,
}

impl TestServer {
    /// A server with the default engine settings (no tier retention, 35-day state window).
    pub async fn start() -> Self {
        Self::start_with(EngineConfig::default()).await
    }

    pub async fn start_with(config: EngineConfig) -> Self {
        Self::start_full(
            config,
            ApiLimits {
                max_body_bytes: 16 * 1024 * 1024,
                rate_per_second: 0,
            },
        )
        .await
    }

    pub async fn start_full(config: EngineConfig, limits: ApiLimits) -> Self {
        // SQLite, or a fresh PostgreSQL schema: WHATSTAT_TEST_BACKEND (see backend.rs).
        let dir = backend::TestDatabase::fresh().await;
        let database_url = dir.url.clone();
        let store = whatstat::store::open(&database_url)
            .await
            .expect("open store");
        let rollups: Arc<dyn RollupStore> = store.clone();
        let services = Services::new(store, config);
        let (forwarding, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(services.forwarding.clone().run_worker(stopped));
        let app = api::router(services.clone(), Some(MASTER_KEY.to_string()), &limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("serve");
        });
        TestServer {
            base: format!("http://{addr}"),
            services,
            rollups,
            client: reqwest::Client::new(),
            _forwarding: forwarding,
            _dir: dir,
        }
    }

    /// Fixes the engine's clock ("now") at a Unix second.
    pub fn set_now(&self, unix_seconds: i64) {
        self.services.clock.set(unix_seconds);
    }

    /// Creates an organization through the admin API; returns its API key.
    pub async fn create_org(&self, name: &str, timezone: &str) -> String {
        let (status, body) = self
            .send(
                self.client
                    .post(format!("{}/api/admin/orgs", self.base))
                    .bearer_auth(MASTER_KEY)
                    .json(&serde_json::json!({"name": name, "timezone": timezone})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create org: {body}");
        body["data"]["api_key"]
            .as_str()
            .expect("api_key")
            .to_string()
    }

    /// POSTs a JSON array of events.
    pub async fn post_events(&self, key: &str, events: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(format!("{}/api/events", self.base))
                .bearer_auth(key)
                .json(events),
        )
        .await
    }

    /// POSTs events with `?backfill=true`.
    pub async fn post_backfill(&self, key: &str, events: &Value) -> (StatusCode, Value) {
        self.send(
            self.client
                .post(format!("{}/api/events?backfill=true", self.base))
                .bearer_auth(key)
                .json(events),
        )
        .await
    }

    /// GETs a path such as `/api/analytics/messages?granularity=day`.
    pub async fn get(&self, key: &str, path_and_query: &str) -> (StatusCode, Value) {
        self.send(
            self.client
                .get(format!("{}{path_and_query}", self.base))
                .bearer_auth(key),
        )
        .await
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }
}
