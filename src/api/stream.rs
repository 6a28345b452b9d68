//! `GET /api/stream`: Server-Sent Events telling a dashboard when its organization's
//! figures changed, so that it refreshes instead of polling. Updates are coalesced to at
//! most one event a second per connection, with a keep-alive comment every 15 seconds.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::AppState;
use super::auth::ReadKey;
use super::error::ApiError;
use crate::engine::Org;
use crate::engine::updates::Update;

/// Open streams per API key beyond this are refused with 429.
pub const MAX_STREAMS_PER_KEY: usize = 16;
const COALESCE: Duration = Duration::from_secs(1);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Open streams per key (by the key's hash).
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<String, usize>>,
}

/// One open stream; dropping it (client gone, server shut down) frees its place.
pub struct Slot {
    connections: Arc<Connections>,
    key: String,
}

impl Connections {
    /// Streams open now, of every key.
    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |open| open.values().sum())
    }

    fn acquire(self: &Arc<Self>, key: &str, limit: usize) -> Option<Slot> {
        let mut open = self.open.lock().ok()?;
        let n = open.entry(key.to_string()).or_default();
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Slot {
            connections: self.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut open) = self.connections.open.lock()
            && let Some(n) = open.get_mut(&self.key)
        {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

struct Connection {
    /// The organization, with the credential's account limit.
    org: Org,
    updates: broadcast::Receiver<Arc<Update>>,
    closed: watch::Receiver<bool>,
    last_sent: Option<Instant>,
    _slot: Slot,
}

/// What a connection has gathered for its next event.
#[derive(Default)]
struct Pending {
    accounts: BTreeSet<String>,
    /// Missed updates or one naming no accounts: anything may have changed.
    anything: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.accounts.is_empty() && !self.anything
    }

    fn take(&mut self, org: &Org, r: Result<Arc<Update>, broadcast::error::RecvError>) -> bool {
        match r {
            // A credential limited to some accounts hears only of theirs.
            Ok(u) if u.org == org.id => match &u.accounts {
                Some(a) => self
                    .accounts
                    .extend(a.iter().filter(|a| org.may_use(a)).cloned()),
                None => self.anything = true,
            },
            Ok(_) => {}
            Err(broadcast::error::RecvError::Lagged(_)) => self.anything = true,
            Err(broadcast::error::RecvError::Closed) => return false,
        }
        true
    }

    fn event(self) -> Event {
        let accounts = if self.anything {
            serde_json::Value::Null
        } else {
            serde_json::json!(self.accounts)
        };
        Event::default()
            .event("update")
            .data(serde_json::json!({ "accounts": accounts }).to_string())
    }
}

impl Connection {
    /// The next event: waits for a change of this organization's figures, then gathers
    /// what else arrives until a second has passed since the last event.
    async fn next(&mut self) -> Option<Event> {
        let mut pending = Pending::default();
        loop {
            tokio::select! {
                r = self.updates.recv() => {
                    if !pending.take(&self.org, r) {
                        return None;
                    }
                }
                _ = self.closed.wait_for(|c| *c) => return None,
            }
            if !pending.is_empty() {
                break;
            }
        }
        if let Some(last) = self.last_sent {
            let due = last + COALESCE;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => break,
                    r = self.updates.recv() => {
                        if !pending.take(&self.org, r) {
                            return None;
                        }
                    }
                    _ = self.closed.wait_for(|c| *c) => return None,
                }
            }
        }
        self.last_sent = Some(Instant::now());
        Some(pending.event())
    }
}

#[utoipa::path(get, path = "/api/stream", tag = "analytics",
    security(("api_key" = []), ("bearer" = [])),
    responses((status = 200, description = "Server-Sent Events: an `update` event with `{\"accounts\": [...]}` (or `null`: anything may have changed) within a second of a commit that changed the figures, at most one a second, a keep-alive comment every 15 s", content_type = "text/event-stream", body = String),
        (status = "4XX", description = "Refused (429 beyond 16 open streams per key)", body = super::doc::Failure)))]
pub async fn stream(
    State(state): State<AppState>,
    ReadKey(caller): ReadKey,
) -> Result<Response, ApiError> {
    let slot = state
        .streams
        .acquire(&caller.id, MAX_STREAMS_PER_KEY)
        .ok_or_else(|| ApiError::rate_limited(1))?;
    let updates = &state.services.updates;
    let connection = Connection {
        org: caller.org,
        updates: updates.subscribe(),
        closed: updates.closed(),
        last_sent: None,
        _slot: slot,
    };
    let events = futures_util::stream::unfold(connection, |mut c| async move {
        c.next().await.map(|e| (Ok::<Event, Infallible>(e), c))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}
