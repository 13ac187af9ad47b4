//! Publishing replies.
//!
//! A reply is the one thing a server sends that a caller shapes: its routing key is the
//! request's `reply_to`, its size the function's result. Some of those the broker answers
//! by closing what carried them: a malformed direct reply-to address crashes the broker's
//! channel and it closes the whole connection (541 `INTERNAL_ERROR`); a reply over the
//! broker's message size limit closes the channel. Either takes the unacknowledged request
//! back to the queue, to be delivered again and do the same, for ever.
//!
//! A first delivery's reply goes out on the channel the request came on: the cheapest
//! path, and the one nearly every call takes. A *redelivered* request may be the one that
//! closed the last connection, so its reply goes out on a quarantine connection of its
//! own, in publisher-confirm mode, and the request is acknowledged on the consuming
//! connection (which no quarantined reply can touch) once the broker has confirmed the
//! reply. A quarantined reply whose connection dies is published again on a fresh one,
//! alone (one at a time, each confirmed before the next), so that a reply that closes
//! every connection it travels on is told apart from those that travelled with it; after
//! [`ATTEMPTS`] tries it is given up and its request settled without it. So a request
//! costs the consuming connection at most once, never in a loop, and costs the common path
//! nothing.

use std::sync::Arc;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::Shared;
use crate::link::{self, Backoff, Blocked, ConnectError};

/// How many times a quarantined reply is published before it is given up: once with the
/// others, then alone.
const ATTEMPTS: u32 = 3;

/// Publishes the replies of one session.
pub(super) struct Replier {
    /// The consuming channel: replies to first deliveries.
    channel: Channel,
    target: Target,
    /// The quarantine link, opened when a redelivered request first needs it.
    quarantine: Mutex<Option<Arc<QuarantineLink>>>,
    /// Held while a reply whose connection failed under it is published again.
    suspects: Mutex<()>,
}

/// Where quarantine connections go (the node the session is connected to), and under
/// which name.
struct Target {
    brokers: Arc<crate::link::Brokers>,
    masked_uri: String,
    name: String,
    blocked: Arc<Blocked>,
}

struct QuarantineLink {
    connection: Connection,
    channel: Channel,
}

/// Why a reply was not delivered.
#[derive(Debug)]
pub(super) enum Undelivered {
    /// The consuming connection is gone: the request will be redelivered, so it must not
    /// be settled.
    SessionLost,
    /// The broker refused this reply on every attempt: settle the request without it.
    GaveUp(String),
}

impl Replier {
    pub(super) fn new(shared: &Shared, channel: Channel) -> Replier {
        let settings = &shared.settings;
        Replier {
            channel,
            target: Target {
                brokers: shared.brokers.clone(),
                masked_uri: shared.masked_uri.clone(),
                name: format!("guirpc server {} quarantine", settings.queue),
                blocked: shared.health.blocked.clone(),
            },
            quarantine: Mutex::new(None),
            suspects: Mutex::new(()),
        }
    }

    /// Publishes a reply: a first delivery's on the consuming channel, a redelivered
    /// request's through the quarantine.
    pub(super) async fn send(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
        redelivered: bool,
    ) -> Result<(), Undelivered> {
        self.publish(reply_to, properties, body, redelivered, true)
            .await
    }

    /// Publishes one item of a stream without waiting for it to be written: its frames
    /// are queued in order on the channel at once, and the stream's credit bounds how many
    /// can wait there. A redelivered request's items go through the quarantine, as its
    /// replies do.
    pub(super) async fn send_item(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
        redelivered: bool,
    ) -> Result<(), Undelivered> {
        self.publish(reply_to, properties, body, redelivered, false)
            .await
    }

    async fn publish(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
        redelivered: bool,
        until_written: bool,
    ) -> Result<(), Undelivered> {
        if redelivered {
            // Boxed: the rare path's future (connecting included) is many times the size
            // of the common one's, and every request's task would carry it.
            return Box::pin(self.send_quarantined(reply_to, properties, body)).await;
        }
        let publish = self.channel.basic_publish(
            "".into(),
            reply_to,
            BasicPublishOptions::default(),
            body,
            properties,
        );
        match super::sent(publish, until_written).await {
            Some(Err(err)) => {
                debug!("cannot publish a reply: {err}");
                Err(Undelivered::SessionLost)
            }
            _ => Ok(()),
        }
    }

    async fn send_quarantined(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), Undelivered> {
        let mut last = String::new();
        let mut alone = None;
        for attempt in 1..=ATTEMPTS {
            if attempt == 2 {
                alone = Some(self.suspects.lock().await);
            }
            let link = self.quarantine_link().await?;
            let confirmed = match link
                .channel
                .basic_publish(
                    "".into(),
                    reply_to.clone(),
                    BasicPublishOptions::default(),
                    body,
                    properties.clone(),
                )
                .await
            {
                Ok(confirm) => confirm.await,
                Err(err) => Err(err),
            };
            match confirmed {
                Ok(Confirmation::Ack(_) | Confirmation::NotRequested) => return Ok(()),
                Ok(Confirmation::Nack(_)) => last = "the broker refused it (nack)".into(),
                Err(err) => {
                    last = err.to_string();
                    self.discard(&link).await;
                }
            }
            debug!(attempt, "a quarantined reply was not confirmed: {last}");
        }
        drop(alone);
        Err(Undelivered::GaveUp(last))
    }

    /// The quarantine link, opened (with backoff) if there is none; gives up when the
    /// consuming connection is gone meanwhile.
    async fn quarantine_link(&self) -> Result<Arc<QuarantineLink>, Undelivered> {
        let mut quarantine = self.quarantine.lock().await;
        if let Some(link) = quarantine.as_ref() {
            return Ok(link.clone());
        }
        let mut backoff = Backoff::new();
        loop {
            if !self.channel.status().connected() {
                return Err(Undelivered::SessionLost);
            }
            match self.target.connect().await {
                Ok(link) => {
                    let link = Arc::new(link);
                    *quarantine = Some(link.clone());
                    return Ok(link);
                }
                Err(err) => {
                    warn!(
                        "cannot open a quarantine connection to {}: {err}",
                        self.target.masked_uri
                    );
                    backoff.wait().await;
                }
            }
        }
    }

    /// Forgets a failed quarantine link, unless another reply replaced it already.
    async fn discard(&self, failed: &Arc<QuarantineLink>) {
        let mut quarantine = self.quarantine.lock().await;
        if quarantine
            .as_ref()
            .is_some_and(|link| Arc::ptr_eq(link, failed))
        {
            *quarantine = None;
        }
        failed.close().await;
    }

    pub(super) async fn close(&self) {
        if let Some(link) = self.quarantine.lock().await.take() {
            link.close().await;
        }
    }
}

impl Target {
    async fn connect(&self) -> Result<QuarantineLink, ConnectError> {
        let connection = self.brokers.connect_current(&self.name).await?;
        link::watch_blocked(
            &connection,
            self.masked_uri.clone(),
            "replies",
            self.blocked.clone(),
        );
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(QuarantineLink {
            connection,
            channel,
        })
    }
}

impl QuarantineLink {
    async fn close(&self) {
        if self.connection.status().connected() {
            let _ = self.connection.close(200, "done".into()).await;
        }
    }
}
