//! Which organizations' figures changed: published after each durable ingest commit, for
//! the live stream. Across instances a relay (PostgreSQL LISTEN/NOTIFY) carries the same
//! updates, so a client hears of commits made through any instance.

use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, watch};

/// The figures of these accounts of `org` changed; `accounts: None` means any may have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Update {
    pub org: String,
    pub accounts: Option<Vec<String>>,
}

/// Relayed between instances: who sent it, so an instance skips its own.
#[derive(Serialize, Deserialize)]
struct Relayed {
    instance: String,
    #[serde(flatten)]
    update: Update,
}

/// PostgreSQL limits a notification's payload to 8000 bytes.
const MAX_RELAYED_BYTES: usize = 7900;

type Send = Box<dyn Fn(String) + std::marker::Send + Sync>;

pub struct Updates {
    tx: broadcast::Sender<Arc<Update>>,
    relay: OnceLock<(String, Send)>,
    closed: watch::Sender<bool>,
}

impl Default for Updates {
    fn default() -> Self {
        Self::new()
    }
}

impl Updates {
    pub fn new() -> Self {
        // Receivers that fall this far behind are told they lagged (and refresh everything).
        let (tx, _) = broadcast::channel(1024);
        Updates {
            tx,
            relay: OnceLock::new(),
            closed: watch::Sender::new(false),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Update>> {
        self.tx.subscribe()
    }

    /// Becomes `true` when the server shuts down: streams end then.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Announces a commit's change here and, through the relay, to the other instances.
    pub fn publish(&self, update: Update) {
        if let Some((instance, send)) = self.relay.get() {
            let mut relayed = Relayed {
                instance: instance.clone(),
                update: update.clone(),
            };
            let mut payload = serde_json::to_string(&relayed).unwrap_or_default();
            if payload.len() > MAX_RELAYED_BYTES {
                relayed.update.accounts = None;
                payload = serde_json::to_string(&relayed).unwrap_or_default();
            }
            send(payload);
        }
        self.deliver(update);
    }

    fn deliver(&self, update: Update) {
        // No receiver is no error: nobody is listening right now.
        let _ = self.tx.send(Arc::new(update));
    }

    /// Connects this hub to the other instances: `send` hands a payload to them, and
    /// `incoming` brings theirs (and, as LISTEN does, this instance's own, which are skipped).
    pub fn attach_relay(
        self: &Arc<Self>,
        instance: String,
        send: Send,
        mut incoming: mpsc::UnboundedReceiver<String>,
    ) {
        if self.relay.set((instance.clone(), send)).is_err() {
            tracing::warn!("an update relay is already attached");
            return;
        }
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(payload) = incoming.recv().await {
                let Some(hub) = hub.upgrade() else { break };
                match serde_json::from_str::<Relayed>(&payload) {
                    Ok(r) if r.instance != instance => hub.deliver(r.update),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "unreadable relayed update"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn relayed_updates_of_other_instances_arrive_and_own_ones_are_skipped() {
        let hub = Arc::new(Updates::new());
        let (to_others, mut sent) = mpsc::unbounded_channel::<String>();
        let (incoming_tx, incoming) = mpsc::unbounded_channel();
        hub.attach_relay(
            "a".into(),
            Box::new(move |p| {
                let _ = to_others.send(p);
            }),
            incoming,
        );
        let mut rx = hub.subscribe();
        let own = Update {
            org: "o".into(),
            accounts: Some(vec!["x".into()]),
        };
        hub.publish(own.clone());
        assert_eq!(*rx.recv().await.expect("own update"), own);
        let payload = sent.recv().await.expect("relayed");
        // Our own notification comes back through LISTEN: skipped.
        incoming_tx.send(payload).expect("send");
        let theirs = r#"{"instance":"b","org":"o","accounts":["y"]}"#;
        incoming_tx.send(theirs.into()).expect("send");
        let got = rx.recv().await.expect("relayed update");
        assert_eq!(got.accounts, Some(vec!["y".to_string()]));
    }
}
