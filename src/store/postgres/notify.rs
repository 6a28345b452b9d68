//! LISTEN/NOTIFY between instances sharing one database: each instance announces its
//! commits on a channel and hears the others', over one connection of its own (outside
//! the pool, since a listening connection must stay open). Payloads are opaque here.
//!
//! When that connection breaks (the database restarted, the network failed), it is made
//! again, with a growing pause between attempts, and listening resumes: announcements
//! made while it is down are dropped (a missed one only delays a dashboard's refresh).

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::store::{StoreError, StoreResult};

pub const CHANNEL: &str = "whatstat_updates";
/// Announcements waiting to be sent beyond this are dropped (the database is slow or
/// gone); a missed one only delays a dashboard's refresh.
const OUTGOING_DEPTH: usize = 1024;
/// The first pause before connecting again after the listening connection broke, and
/// the longest one (each failed attempt doubles it).
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(2);

/// Sends a payload to every listening instance.
pub type Announce = Box<dyn Fn(String) + Send + Sync>;

/// Connects, listens, and returns the sender of announcements and the receiver of every
/// announcement on the channel (this instance's own included). Only the first connection
/// must succeed; later breaks are healed in the background.
pub async fn connect(url: &str) -> StoreResult<(Announce, mpsc::UnboundedReceiver<String>)> {
    let (heard, incoming) = mpsc::unbounded_channel();
    let session = Session::open(url, heard.clone()).await?;
    let (outgoing, to_send) = mpsc::channel::<String>(OUTGOING_DEPTH);
    tokio::spawn(relay(url.to_string(), session, heard, to_send));
    let announce: Announce = Box::new(move |payload| {
        if outgoing.try_send(payload).is_err() {
            tracing::debug!("update announcements are backed up; one was dropped");
        }
    });
    Ok((announce, incoming))
}

/// One listening connection: its client, and the task reading its notifications, which
/// ends when the connection does.
struct Session {
    client: Client,
    reading: JoinHandle<()>,
}

impl Session {
    async fn open(url: &str, heard: mpsc::UnboundedSender<String>) -> StoreResult<Session> {
        let (client, mut connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| failed("cannot open the listening connection", e))?;
        let reading = tokio::spawn(async move {
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
                        tracing::warn!(error = %super::backend(e), "the listening connection failed");
                        break;
                    }
                }
            }
        });
        client
            .batch_execute(&format!("LISTEN {CHANNEL}"))
            .await
            .map_err(|e| failed("cannot listen for updates", e))?;
        Ok(Session { client, reading })
    }
}

/// `e`, classified as the pool's errors are, with what was being done.
fn failed(what: &str, e: tokio_postgres::Error) -> StoreError {
    match super::backend(e) {
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{what}: {m}")),
        other => StoreError::Backend(format!("{what}: {other}")),
    }
}

/// Sends announcements over the current session; when its connection ends, opens a new
/// one. Ends when the store (the sender of announcements) or the listener is gone.
async fn relay(
    url: String,
    mut session: Session,
    heard: mpsc::UnboundedSender<String>,
    mut to_send: mpsc::Receiver<String>,
) {
    loop {
        loop {
            tokio::select! {
                _ = &mut session.reading => break,
                payload = to_send.recv() => {
                    let Some(payload) = payload else { return };
                    if let Err(e) = session
                        .client
                        .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                        .await
                    {
                        tracing::warn!(error = %super::backend(e), "cannot announce an update to other instances");
                        if session.client.is_closed() {
                            break;
                        }
                    }
                }
            }
        }
        session.reading.abort();
        tracing::warn!(
            "the listening connection was lost; updates from other instances pause until it is made again"
        );
        let mut pause = RECONNECT_FIRST;
        session = loop {
            if heard.is_closed() || to_send.is_closed() {
                return;
            }
            tokio::time::sleep(pause).await;
            match Session::open(&url, heard.clone()).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::debug!(error = %e, "the listening connection cannot be made yet");
                    pause = (pause * 2).min(RECONNECT_MAX);
                }
            }
        };
        tracing::info!("listening for updates from other instances again");
    }
}
