//! Publishing replies.
//!
//! A reply is the one thing a server sends that a caller shapes: its routing key is the
//! request's `reply_to`, its size the function's result. Some of those the broker answers
//! by closing what carried them: a direct reply-to address it cannot decode crashes the
//! broker's channel and it closes the whole connection (541 `INTERNAL_ERROR`; see
//! `protocol::reply_to`); a reply over the broker's message size limit closes the channel.
//! On the consuming connection either would take every unacknowledged request back to the
//! queue, to be delivered again, and one careless caller would slow every other.
//!
//! So a reply goes out on the channel its request came on (the cheapest path, and the one
//! nearly every call takes) only when nothing about it can close that channel: a first
//! delivery's reply to a queue, or to a direct reply-to address of a broker node this
//! server has delivered a reply to before. Every other reply goes out through the
//! *quarantine*, a connection of its own in publisher-confirm mode, and its request is
//! acknowledged on the consuming connection (which no quarantined reply can touch) once
//! the broker has confirmed the reply:
//! - a reply to a node not seen yet (the first call from a caller on another node of a
//!   cluster; the node is then known);
//! - a *redelivered* request's reply (the request may be the one that closed the last
//!   connection);
//! - a reply to an address the server cannot read: not sent at all when the broker writes
//!   its own addresses as the server reads them (a probe at each connection says so: then
//!   no caller can have such an address, and the broker would close the channel), else
//!   published *alone*, on a connection opened for it, and given up if that connection
//!   dies.
//!
//! A quarantined reply whose connection dies is published again alone (one at a time, each
//! on a fresh connection, confirmed before the next), so that a reply that closes every
//! connection it travels on is told apart from those that travelled with it; after
//! [`ATTEMPTS`] tries it is given up and its request settled without it. So no address a
//! caller writes costs the consuming connection, and an innocent reply that shared a
//! quarantine connection with a hostile one is delivered on its own next attempt.

use std::sync::{Arc, RwLock};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::Shared;
use crate::link::{self, Backoff, Blocked, ConnectError};
use crate::protocol::{self, DirectReplyTo};
use crate::sync::RwLocked;

mod probe;

/// How many times a quarantined reply is published before it is given up: once with the
/// others, then alone.
const ATTEMPTS: u32 = 3;
/// How many broker nodes a server remembers having delivered a reply to: a cluster's,
/// with room to spare (RabbitMQ 4.0 accepts an address naming any node, so a caller could
/// make up many; past this, replies to further nodes stay in the quarantine).
const NODES: usize = 64;

/// The broker nodes (`reply@<hash>`, as direct reply-to addresses name them) a server has
/// delivered a reply to: a reply to one of them is safe on the consuming channel. And
/// whether the broker writes direct reply-to addresses as `protocol::reply_to` reads them,
/// as a probe of the server's own connection found: then an address it cannot read is no
/// address the broker could deliver to, and is refused without being sent.
#[derive(Debug, Default)]
pub(super) struct ReplyNodes {
    known: RwLock<Known>,
    readable: std::sync::atomic::AtomicBool,
    /// Set once a probe's reply to the server's own address never came.
    undelivered: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Known {
    nodes: Vec<Box<[u8]>>,
    /// The most recent addresses found on a known node, as they were written: a caller
    /// sends every call with the same one, which is then matched without decoding it.
    addresses: Vec<Box<str>>,
    /// The next of `addresses` to replace once there are [`ADDRESSES`].
    next: usize,
}

/// How many addresses on known nodes a server matches without decoding them.
const ADDRESSES: usize = 32;

impl ReplyNodes {
    fn readable(&self) -> bool {
        self.readable.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a reply to `reply_to` is safe on the consuming channel: an address on a
    /// node a reply has been delivered to (each seen address remembered, as written).
    fn safe(&self, reply_to: &str) -> bool {
        {
            let known = self.known.read_locked();
            if known.addresses.iter().any(|address| **address == *reply_to) {
                return true;
            }
        }
        let mut scratch = [0; 96];
        let DirectReplyTo::Node(node) = protocol::direct_reply_to(reply_to, &mut scratch) else {
            return false;
        };
        let mut known = self.known.write_locked();
        if !known.nodes.iter().any(|known| **known == *node) {
            return false;
        }
        if known.addresses.len() < ADDRESSES {
            known.addresses.push(reply_to.into());
        } else {
            let next = known.next;
            known.addresses[next] = reply_to.into();
            known.next = (next + 1) % ADDRESSES;
        }
        true
    }

    fn learn(&self, node: Box<[u8]>) {
        let mut known = self.known.write_locked();
        if known.nodes.len() < NODES && !known.nodes.contains(&node) {
            known.nodes.push(node);
        }
    }
}

/// How a reply is published.
enum Path {
    /// On the consuming channel.
    Consuming,
    /// Through the quarantine; once confirmed, `learn` is a node known to be safe.
    Quarantine { learn: Option<Box<[u8]>> },
    /// Alone, on a connection of its own, once.
    Alone,
    /// Not at all: the address is none the broker writes, and it would close the channel
    /// that carried the reply.
    Refused,
}

/// Publishes the replies of one session.
pub(super) struct Replier {
    /// The consuming channel: replies to first deliveries.
    channel: Channel,
    target: Target,
    /// The quarantine link, opened when a redelivered request first needs it.
    quarantine: Mutex<Option<Arc<QuarantineLink>>>,
    /// Held while a reply is published alone.
    suspects: Mutex<()>,
    nodes: Arc<ReplyNodes>,
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

/// How a reply went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// Confirmed by the broker (through the quarantine, or alone).
    Confirmed,
    /// Written on the consuming channel, which the broker does not confirm: it has the
    /// reply if it has the request's acknowledgement, written after it on that channel.
    /// A channel the broker was closing as it was written discards both.
    Unconfirmed,
}

/// Why a reply was not delivered.
#[derive(Debug)]
pub(super) enum Undelivered {
    /// The consuming connection is gone: the request will be redelivered, so it must not
    /// be settled.
    SessionLost,
    /// The broker refused this reply, as this says, on every attempt it was worth: settle
    /// the request without it.
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
            nodes: shared.reply_nodes.clone(),
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
    ) -> Result<Sent, Undelivered> {
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
            .map(drop)
    }

    async fn publish(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
        redelivered: bool,
        until_written: bool,
    ) -> Result<Sent, Undelivered> {
        match self.path(reply_to.as_str(), redelivered) {
            Path::Consuming => {}
            // Boxed: the rare paths' futures (connecting included) are many times the size
            // of the common one's, and every request's task would carry them.
            Path::Quarantine { learn } => {
                let sent = Box::pin(self.send_quarantined(reply_to, properties, body)).await;
                if let (Ok(()), Some(node)) = (&sent, learn) {
                    self.nodes.learn(node);
                }
                return sent.map(|()| Sent::Confirmed);
            }
            Path::Alone => {
                return Box::pin(self.send_alone(reply_to, properties, body))
                    .await
                    .map(|()| Sent::Confirmed);
            }
            Path::Refused => {
                return Err(Undelivered::GaveUp(format!(
                    "`{reply_to}` is not a direct reply-to address the broker could deliver to, and would make it close the connection: not sent"
                )));
            }
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
            _ => Ok(Sent::Unconfirmed),
        }
    }

    /// How a reply to `reply_to` is published (see the module's doc).
    fn path(&self, reply_to: &str, redelivered: bool) -> Path {
        if !redelivered && self.nodes.safe(reply_to) {
            return Path::Consuming;
        }
        let mut scratch = [0; 96];
        match protocol::direct_reply_to(reply_to, &mut scratch) {
            DirectReplyTo::Queue if !redelivered => Path::Consuming,
            DirectReplyTo::Queue => Path::Quarantine { learn: None },
            DirectReplyTo::Node(node) => Path::Quarantine {
                learn: Some(node.into()),
            },
            DirectReplyTo::Unreadable if self.nodes.readable() => Path::Refused,
            DirectReplyTo::Unreadable => Path::Alone,
        }
    }

    async fn send_quarantined(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), Undelivered> {
        let link = self.quarantine_link().await?;
        let last = match link.publish(&reply_to, &properties, body).await {
            Ok(()) => return Ok(()),
            Err(Failed::Nack) => "the broker refused it (nack)".to_owned(),
            Err(Failed::Lost(err)) => {
                self.discard(&link).await;
                err
            }
        };
        debug!("a quarantined reply was not confirmed: {last}");
        // Alone from now on: what closed the connection may have been another reply.
        let _alone = self.suspects.lock().await;
        let mut last = last;
        for attempt in 2..=ATTEMPTS {
            match self.publish_alone(&reply_to, &properties, body).await? {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            }
            debug!(attempt, "a reply published alone was not confirmed: {last}");
        }
        Err(Undelivered::GaveUp(format!(
            "{last}, on each of {ATTEMPTS} attempts, the last {} alone",
            ATTEMPTS - 1
        )))
    }

    /// Publishes a reply to an address the server cannot read: alone, once.
    async fn send_alone(
        &self,
        reply_to: ShortString,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), Undelivered> {
        let _alone = self.suspects.lock().await;
        match self.publish_alone(&reply_to, &properties, body).await? {
            Ok(()) => Ok(()),
            Err(why) => Err(Undelivered::GaveUp(format!(
                "{why}, sent alone to `{reply_to}`, an address it could not read"
            ))),
        }
    }

    /// Publishes a reply on a connection opened for it, closed after: whether the broker
    /// confirmed it, and why not.
    async fn publish_alone(
        &self,
        reply_to: &ShortString,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Result<Result<(), String>, Undelivered> {
        let link = self.open_link().await?;
        let published = link.publish(reply_to, properties, body).await;
        link.close().await;
        Ok(published.map_err(|failed| match failed {
            Failed::Nack => "the broker refused it (nack)".to_owned(),
            Failed::Lost(err) => err,
        }))
    }

    /// The quarantine link, opened if there is none.
    async fn quarantine_link(&self) -> Result<Arc<QuarantineLink>, Undelivered> {
        let mut quarantine = self.quarantine.lock().await;
        if let Some(link) = quarantine.as_ref() {
            return Ok(link.clone());
        }
        let link = Arc::new(self.open_link().await?);
        *quarantine = Some(link.clone());
        Ok(link)
    }

    /// A new confirmed link to the session's node, retried with backoff; gives up when the
    /// consuming connection is gone meanwhile.
    async fn open_link(&self) -> Result<QuarantineLink, Undelivered> {
        let mut backoff = Backoff::new();
        loop {
            if !self.channel.status().connected() {
                return Err(Undelivered::SessionLost);
            }
            match self.target.connect().await {
                Ok(link) => return Ok(link),
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

/// Why a quarantined reply was not confirmed.
enum Failed {
    Nack,
    /// Its connection or channel failed, as this says.
    Lost(String),
}

impl QuarantineLink {
    /// Publishes a reply and waits for the broker's confirmation.
    async fn publish(
        &self,
        reply_to: &ShortString,
        properties: &BasicProperties,
        body: &[u8],
    ) -> Result<(), Failed> {
        let confirmed = match self
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
            Ok(Confirmation::Ack(_) | Confirmation::NotRequested) => Ok(()),
            Ok(Confirmation::Nack(_)) => Err(Failed::Nack),
            Err(err) => Err(Failed::Lost(err.to_string())),
        }
    }

    async fn close(&self) {
        link::close(&self.connection, "done").await;
    }
}
