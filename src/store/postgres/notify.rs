//! LISTEN/NOTIFY between instances sharing one database: each instance announces its
//! commits on a channel and hears the others', over one connection of its own (outside
//! the pool, since a listening connection must stay open). Payloads are opaque here.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::store::{StoreError, StoreResult};

pub const CHANNEL: &str = "whatstat_updates";
/// Announcements waiting to be sent beyond this are dropped (the database is slow or
/// gone); a missed one only delays a dashboard's refresh.
const OUTGOING_DEPTH: usize = 1024;

/// Sends a payload to every listening instance.
pub type Announce = Box<dyn Fn(String) + Send + Sync>;

/// Connects, listens, and returns the sender of announcements and the receiver of every
/// announcement on the channel (this instance's own included).
pub async fn connect(url: &str) -> StoreResult<(Announce, mpsc::UnboundedReceiver<String>)> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| StoreError::Backend(format!("cannot open the listening connection: {e}")))?;
    let (heard, incoming) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) if n.channel() == CHANNEL => {
                    if heard.send(n.payload().to_string()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the listening connection failed; updates from other instances stop");
                    break;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| StoreError::Backend(format!("cannot listen for updates: {e}")))?;
    let (outgoing, mut to_send) = mpsc::channel::<String>(OUTGOING_DEPTH);
    tokio::spawn(async move {
        while let Some(payload) = to_send.recv().await {
            if let Err(e) = client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
            {
                tracing::warn!(error = %e, "cannot announce an update to other instances");
            }
        }
    });
    let announce: Announce = Box::new(move |payload| {
        if outgoing.try_send(payload).is_err() {
            tracing::debug!("update announcements are backed up; one was dropped");
        }
    });
    Ok((announce, incoming))
}
