//! Publishing replies, on a connection of their own.
//!
//! A reply is the one thing a server sends that a caller shapes: its routing key is the
//! request's `reply_to`, its size the function's result. Some of those the broker answers
//! by closing what carried them: a malformed direct reply-to address crashes the broker's
//! channel and it closes the whole connection (541 `INTERNAL_ERROR`); a reply over the
//! broker's message size limit closes the channel. If replies shared the consuming
//! connection, that close would take every unacknowledged request with it, redeliver the
//! one that caused it, and do it again, for ever.
//!
//! So replies go out on a second connection, in publisher-confirm mode, and a request is
//! acknowledged (on the consuming connection, which no reply can touch) only once the
//! broker has confirmed its reply. A reply whose connection dies before the confirm is
//! published again on a fresh one, alone (one such suspect at a time, each confirmed
//! before the next), so that the reply that closes every connection it travels on is told
//! apart from those that travelled with it: after [`ATTEMPTS`] tries it is given up and its
//! request settled without it, so no request can close connections in a loop, while the
//! replies of other calls lost with the connection are published again, not lost.

use std::sync::{Arc, RwLock};

use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Connection};
use tracing::{debug, warn};

use super::Shared;
use super::session::log_blocking;
use crate::connection::{self, ConnectError};

/// How many times one reply is published before it is given up: once with the others,
/// then alone.
const ATTEMPTS: u32 = 3;

/// The reply connection of a session, replaced when the broker closes it.
pub(super) struct Replier {
    target: Target,
    link: RwLock<Arc<ReplyLink>>,
    /// Held while a new link is opened, so that one failure opens one link.
    reopening: tokio::sync::Mutex<()>,
    /// Held while a reply whose connection failed under it is published again.
    suspects: tokio::sync::Mutex<()>,
}

/// Where reply connections go, and under which name.
struct Target {
    uri: String,
    tls_ca_file: String,
    masked_uri: String,
    name: String,
}

struct ReplyLink {
    connection: Connection,
    channel: Channel,
}

/// Why a reply was not delivered.
#[derive(Debug)]
pub(super) enum Undelivered {
    /// The consuming connection is gone too: the request will be redelivered, so it must
    /// not be settled.
    SessionLost,
    /// The broker refused this reply on every attempt: settle the request without it.
    GaveUp(String),
}

impl Replier {
    pub(super) async fn open(shared: &Shared) -> Result<Replier, ConnectError> {
        let settings = &shared.settings;
        let target = Target {
            uri: settings.uri.clone(),
            tls_ca_file: settings.tls_ca_file.clone(),
            masked_uri: shared.masked_uri.clone(),
            name: format!("guirpc server {} replies", settings.queue),
        };
        let link = target.connect().await?;
        Ok(Replier {
            target,
            link: RwLock::new(Arc::new(link)),
            reopening: tokio::sync::Mutex::new(()),
            suspects: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Arc<ReplyLink> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Publishes a reply and waits for the broker to confirm it, on a new connection if
    /// the broker closes the one it went out on. `session_alive` tells whether the request
    /// can still be acknowledged.
    pub(super) async fn send(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
        session_alive: impl Fn() -> bool,
    ) -> Result<(), Undelivered> {
        let publish = |link: Arc<ReplyLink>| {
            let (reply_to, properties) = (reply_to.clone(), properties.clone());
            async move {
                let confirmed = match link
                    .channel
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions::default(),
                        body,
                        properties,
                    )
                    .await
                {
                    Ok(confirm) => confirm.await,
                    Err(err) => Err(err),
                };
                match confirmed {
                    Ok(Confirmation::Ack(_) | Confirmation::NotRequested) => Ok(()),
                    Ok(Confirmation::Nack(_)) => {
                        Err((link, "the broker refused it (nack)".to_owned()))
                    }
                    Err(err) => Err((link, err.to_string())),
                }
            }
        };
        let Err((failed, why)) = publish(self.current()).await else {
            return Ok(());
        };
        debug!("a reply was not confirmed: {why}");
        self.reopen(&failed, &session_alive).await?;
        // This reply was in flight when its connection failed, perhaps because of it.
        // Suspects go out one at a time, each confirmed before the next, so that a reply
        // that closes every connection it goes out on is told apart from the replies
        // that happened to travel with it.
        let _alone = self.suspects.lock().await;
        let mut last = why;
        for _ in 1..ATTEMPTS {
            match publish(self.current()).await {
                Ok(()) => return Ok(()),
                Err((failed, why)) => {
                    self.reopen(&failed, &session_alive).await?;
                    last = why;
                }
            }
        }
        Err(Undelivered::GaveUp(last))
    }

    /// Replaces `failed` with a new link, unless another reply did already.
    async fn reopen(
        &self,
        failed: &Arc<ReplyLink>,
        session_alive: &impl Fn() -> bool,
    ) -> Result<(), Undelivered> {
        if !session_alive() {
            return Err(Undelivered::SessionLost);
        }
        let _one_at_a_time = self.reopening.lock().await;
        // Replaced by another reply already, or still sound (a refusal closed nothing).
        if !Arc::ptr_eq(&self.current(), failed) || failed.is_open() {
            return Ok(());
        }
        let mut delays = connection::reconnect_delays();
        loop {
            if !session_alive() {
                return Err(Undelivered::SessionLost);
            }
            match self.target.connect().await {
                Ok(link) => {
                    let old = std::mem::replace(
                        &mut *self.link.write().unwrap_or_else(|e| e.into_inner()),
                        Arc::new(link),
                    );
                    tokio::spawn(async move { old.close().await });
                    return Ok(());
                }
                Err(err) => {
                    warn!(
                        "cannot open a reply connection to {}: {err}",
                        self.target.masked_uri
                    );
                    let delay = delays.next().unwrap_or(std::time::Duration::from_secs(4));
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    pub(super) async fn close(&self) {
        self.current().close().await;
    }
}

impl Target {
    async fn connect(&self) -> Result<ReplyLink, ConnectError> {
        let connection = connection::connect(&self.uri, &self.tls_ca_file, &self.name).await?;
        tokio::spawn(log_blocking(
            connection.events_listener(),
            self.masked_uri.clone(),
        ));
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(ReplyLink {
            connection,
            channel,
        })
    }
}

impl ReplyLink {
    fn is_open(&self) -> bool {
        self.connection.status().connected() && self.channel.status().connected()
    }

    async fn close(&self) {
        if self.connection.status().connected() {
            let _ = self.connection.close(200, "shutdown".into()).await;
        }
    }
}
