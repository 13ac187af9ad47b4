//! Clients: publish a request, wait for its reply.
//!
//! One connection and one channel (a *link*) carry every call. Replies come back over
//! RabbitMQ's direct reply-to, consumed by one task that hands each reply to the call
//! waiting for its correlation ID, so any number of calls can be in flight at once on one
//! [`Client`]. Requests are published `mandatory`: a request no queue is bound for comes
//! back from the broker, and its call fails within milliseconds with [`Error::NoRoute`]
//! instead of running into its timeout.
//!
//! When the link fails, every call waiting on it fails at once with a retriable
//! [`Error::Connection`] (its reply can no longer arrive: the reply-to address died with
//! the channel), and a supervisor task reconnects with backoff. A call made while there is
//! no link has not been sent: it waits for the next link until its timeout, and fails with
//! [`Error::Connection`] only if none comes in time.

mod blocking;

pub use blocking::BlockingClient;

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, Event};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Notify, oneshot};
use tracing::{debug, info, warn};

use crate::codec::Codec;
use crate::config::{Settings, mask_uri, validate_uri};
use crate::connection;
use crate::error::{Error, RemoteError};
use crate::protocol::{self, ErrorCode};

/// Configures a client.
///
/// ```no_run
/// # async fn run() -> Result<(), guirpc_core::Error> {
/// use std::time::Duration;
/// use guirpc_core::{Client, Codec};
///
/// let client = Client::builder()
///     .uri("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .queue("calculator")
///     .timeout(Duration::from_secs(5))
///     .codec(Codec::Json)
///     .retries(3)
///     .connect()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ClientBuilder {
    uri: String,
    tls_ca_file: String,
    exchange: String,
    queue: String,
    timeout: Duration,
    codec: Codec,
    retries: u32,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder::from_settings(&Settings::default())
    }
}

impl ClientBuilder {
    /// A builder from loaded settings (`broker.*`, `service.queue`, `client.*`).
    pub fn from_settings(settings: &Settings) -> Self {
        ClientBuilder {
            uri: settings.uri.clone(),
            tls_ca_file: settings.tls_ca_file.clone(),
            exchange: settings.exchange.clone(),
            queue: settings.queue.clone(),
            timeout: settings.timeout,
            codec: settings.codec,
            retries: settings.retries,
        }
    }

    /// The broker URI.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.uri = uri.into();
        self
    }

    /// For `amqps://`: a PEM file of the CA certificates to trust instead of the system's.
    pub fn tls_ca_file(mut self, path: impl Into<String>) -> Self {
        self.tls_ca_file = path.into();
        self
    }

    /// The exchange the services listen on: `""`, the default, is the broker's default
    /// exchange; a name makes the client declare that direct exchange.
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The service queue calls go to.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// The default timeout of a call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How arguments are encoded.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How many times a call to an idempotent function (`#[rpc(idempotent)]`, or
    /// [`Client::call_idempotent`]) is sent again after a retriable failure: a lost
    /// connection or a timeout. 0, the default, never re-sends.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Connects to the broker.
    pub async fn connect(self) -> Result<Client, Error> {
        validate_uri(&self.uri).map_err(Error::Config)?;
        let shared = Arc::new(Shared {
            masked_uri: mask_uri(&self.uri),
            exchange: self.exchange.as_str().into(),
            link: RwLock::new(None),
            blocked: Mutex::new(None),
            linked: Notify::new(),
        });
        let target = Target {
            uri: self.uri.clone(),
            tls_ca_file: self.tls_ca_file.clone(),
        };
        let (link, replies) = Link::open(&target, &shared).await?;
        let link = Arc::new(link);
        *shared.link.write().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
        let supervisor = tokio::spawn(supervise(target, shared.clone(), link, replies));
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                next_id: AtomicU64::new(1),
                supervisor,
            }),
            queue: self.queue.as_str().into(),
            timeout: self.timeout,
            codec: self.codec,
            retries: self.retries,
        })
    }

    /// Connects a [`BlockingClient`], for code without an async runtime.
    pub fn connect_blocking(self) -> Result<BlockingClient, Error> {
        BlockingClient::connect_with(self)
    }
}

/// An async client. Cheap to clone; clones share one connection and may be used from any
/// number of tasks at once.
///
/// ```no_run
/// # async fn run() -> Result<(), guirpc_core::Error> {
/// use std::time::Duration;
/// use guirpc_core::Client;
///
/// let client = Client::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// // By name, with arguments by parameter name ...
/// let sum: i64 = client.call("add", serde_json::json!({"a": 1, "b": 2})).await?;
/// // ... or in order, with a timeout of its own.
/// let sum: i64 = client.with_timeout(Duration::from_secs(1)).call("add", (1, 2)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    queue: ShortString,
    timeout: Duration,
    codec: Codec,
    retries: u32,
}

/// What the clones of one client share.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.supervisor.abort();
        // lapin keeps a connection open until it is closed: close it off the caller's path.
        if let Some(link) = self.shared.take_link()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { link.close().await });
        }
    }
}

/// Where a client connects.
#[derive(Debug, Clone)]
struct Target {
    uri: String,
    tls_ca_file: String,
}

/// What the client and its supervisor share.
#[derive(Debug)]
struct Shared {
    masked_uri: String,
    exchange: ShortString,
    /// The live link; `None` while reconnecting.
    link: RwLock<Option<Arc<Link>>>,
    /// Why the broker blocks this connection's publishes, while it does.
    blocked: Mutex<Option<String>>,
    /// Woken when a new link is up.
    linked: Notify,
}

impl Shared {
    fn link(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn take_link(&self) -> Option<Arc<Link>> {
        self.link.write().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn blocked(&self) -> Option<String> {
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One connection, its channel, and the calls waiting for replies on it.
#[derive(Debug)]
struct Link {
    connection: Connection,
    channel: Channel,
    pending: Pending,
}

impl Link {
    async fn open(target: &Target, shared: &Arc<Shared>) -> Result<(Link, lapin::Consumer), Error> {
        let failed = |err: lapin::Error| Error::connection(&shared.masked_uri, err);
        let connection = connection::connect(&target.uri, &target.tls_ca_file, "guirpc client")
            .await
            .map_err(|err| Error::connection(&shared.masked_uri, err))?;
        tokio::spawn(watch_events(connection.events_listener(), shared.clone()));
        let channel = connection.create_channel().await.map_err(failed)?;
        // Declared so that a publish never meets a missing exchange, which would close
        // the channel; the service queues are the servers' to declare.
        protocol::declare_exchange(&channel, shared.exchange.as_str())
            .await
            .map_err(failed)?;
        let replies = channel
            .basic_consume(
                protocol::DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(failed)?;
        let link = Link {
            connection,
            channel,
            pending: Pending::default(),
        };
        Ok((link, replies))
    }

    async fn close(&self) {
        let _ = self.connection.close(200, "client closed".into()).await;
        self.pending.close();
    }
}

/// Logs and records the broker blocking this connection (a resource alarm).
async fn watch_events(events: impl futures_lite::Stream<Item = Event>, shared: Arc<Shared>) {
    futures_lite::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Event::ConnectionBlocked(reason) => {
                warn!(
                    "the broker at {} blocks publishing: {reason}",
                    shared.masked_uri
                );
                *shared.blocked.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason);
            }
            Event::ConnectionUnblocked => {
                info!(
                    "the broker at {} accepts publishing again",
                    shared.masked_uri
                );
                *shared.blocked.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            _ => {}
        }
    }
}

/// Routes replies while the link lives; then fails its calls and reconnects, forever.
async fn supervise(
    target: Target,
    shared: Arc<Shared>,
    mut link: Arc<Link>,
    mut replies: lapin::Consumer,
) {
    loop {
        route_replies(&mut replies, &link).await;
        // Unpublished first: a call failed below and retried must find no link, and wait
        // for the next one rather than try the dead one again.
        drop(shared.take_link());
        link.pending.close();
        *shared.blocked.lock().unwrap_or_else(|e| e.into_inner()) = None;
        warn!("lost the connection to {}; reconnecting", shared.masked_uri);
        let mut delays = connection::reconnect_delays();
        (link, replies) = loop {
            tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(4))).await;
            match Link::open(&target, &shared).await {
                Ok((new, replies)) => break (Arc::new(new), replies),
                Err(err) => warn!("cannot reconnect to {}: {err}", shared.masked_uri),
            }
        };
        *shared.link.write().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
        shared.linked.notify_waiters();
        info!("reconnected to {}", shared.masked_uri);
    }
}

/// Calls waiting for their reply, by correlation ID.
#[derive(Debug, Default)]
struct Pending {
    calls: Mutex<PendingCalls>,
    /// Set while the reply router sleeps without collecting returns (no call for a while).
    router_parked: AtomicBool,
    /// Wakes a parked reply router when a call starts waiting.
    busy: Notify,
}

#[derive(Debug, Default)]
struct PendingCalls {
    waiting: HashMap<u64, oneshot::Sender<Answer>, BuildHasherDefault<IdHasher>>,
    /// Set once replies can no longer arrive; no call may wait after that.
    closed: bool,
}

impl Pending {
    fn insert(&self, id: u64) -> Option<oneshot::Receiver<Answer>> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.closed {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        calls.waiting.insert(id, tx);
        drop(calls);
        if self.router_parked.swap(false, Ordering::SeqCst) {
            self.busy.notify_one();
        }
        Some(rx)
    }

    /// Parks the router unless a call waits (then it must go on collecting returns).
    fn park_router(&self) -> bool {
        self.router_parked.store(true, Ordering::SeqCst);
        if self.has_waiting() {
            self.router_parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn remove(&self, id: u64) -> Option<oneshot::Sender<Answer>> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .remove(&id)
    }

    fn has_waiting(&self) -> bool {
        !self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .is_empty()
    }

    /// Fails every waiting call at once: their senders drop.
    fn close(&self) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.closed = true;
        calls.waiting.clear();
    }
}

/// Hashes call IDs, which are distinct counters: one multiplication spreads them over the
/// table, where SipHash would cost more than the rest of a lookup.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Removes a call's entry however the call ends, cancellation included, unless an
/// answer came (whoever sent it removed the entry).
struct Waiting {
    link: Arc<Link>,
    id: u64,
    answered: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.answered {
            self.link.pending.remove(self.id);
        }
    }
}

/// How often returned (unroutable) requests are collected. A call to a queue that does not
/// exist fails within about this long, instead of running into its timeout.
const RETURNS_EVERY: Duration = Duration::from_millis(10);

/// How many collections without a waiting call before the router parks. A client that
/// calls now and then keeps its router awake, so that no call has to wake it; an idle
/// client costs no wake-ups.
const PARK_AFTER_QUIET_TICKS: u32 = 100;

/// Hands each reply to the call waiting for it, and fails calls whose request the broker
/// returned as unroutable, until the reply consumer ends.
async fn route_replies(replies: &mut lapin::Consumer, link: &Link) {
    let mut returns = tokio::time::interval(RETURNS_EVERY);
    returns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut parked, mut quiet_ticks) = (false, 0);
    loop {
        let delivery = tokio::select! {
            delivery = replies.next() => delivery,
            () = link.pending.busy.notified(), if parked => {
                (parked, quiet_ticks) = (false, 0);
                continue;
            }
            _ = returns.tick(), if !parked => {
                if link.pending.has_waiting() {
                    quiet_ticks = 0;
                } else {
                    quiet_ticks += 1;
                    if quiet_ticks >= PARK_AFTER_QUIET_TICKS {
                        parked = link.pending.park_router();
                    }
                }
                // Publisher confirms would report returns per message, at the price of one
                // more frame per call: the channel is not in confirm mode, and lapin keeps
                // the returned messages until they are collected here.
                match link.channel.wait_for_confirms().await {
                    Ok(returned) => {
                        for message in returned {
                            if let Some(waiting) = correlation(&message.delivery).and_then(|id| link.pending.remove(id)) {
                                let _ = waiting.send(Answer::Returned);
                            }
                        }
                    }
                    Err(err) => debug!("collecting returned requests: {err}"),
                }
                continue;
            }
        };
        match delivery {
            Some(Ok(delivery)) => {
                match correlation(&delivery).and_then(|id| link.pending.remove(id)) {
                    Some(waiting) => {
                        let _ = waiting.send(Answer::Reply(delivery));
                    }
                    None => debug!("dropping a reply no call waits for (late, or a duplicate)"),
                }
            }
            Some(Err(err)) => {
                debug!("the reply consumer ended: {err}");
                return;
            }
            None => return,
        }
    }
}

fn correlation(delivery: &Delivery) -> Option<u64> {
    delivery
        .properties
        .correlation_id()
        .as_ref()?
        .as_str()
        .parse()
        .ok()
}

/// What a waiting call receives.
// Moved once, through a oneshot: boxing the reply would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Answer {
    /// The reply.
    Reply(Delivery),
    /// The broker returned the request: no queue is bound for it.
    Returned,
}

/// Whether a call may be sent again after a retriable failure.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Running it twice is harmless: retry per the client's policy.
    Idempotent,
    /// Never sent twice by the client.
    Once,
}

impl Client {
    /// A builder with the defaults: the local broker, queue `guirpc`, a 30 s timeout,
    /// MessagePack, no retries.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects to the broker at `uri` with the default settings.
    pub async fn connect(uri: &str) -> Result<Client, Error> {
        Client::builder().uri(uri).connect().await
    }

    /// This client, calling another service queue.
    #[must_use]
    pub fn with_queue(&self, queue: &str) -> Client {
        Client {
            queue: queue.into(),
            ..self.clone()
        }
    }

    /// This client, with another timeout.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// This client, encoding with another codec.
    #[must_use]
    pub fn with_codec(&self, codec: Codec) -> Client {
        Client {
            codec,
            ..self.clone()
        }
    }

    /// This client, re-sending idempotent calls up to `retries` times.
    #[must_use]
    pub fn with_retries(&self, retries: u32) -> Client {
        Client {
            retries,
            ..self.clone()
        }
    }

    /// The service queue calls go to.
    pub fn queue(&self) -> &str {
        self.queue.as_str()
    }

    /// The timeout of a call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The codec arguments are sent in.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether the client is connected now (it reconnects by itself when not).
    pub fn is_connected(&self) -> bool {
        self.inner.shared.link().is_some()
    }

    /// Why the broker blocks this client's publishes (a memory or disk alarm), while it does.
    pub fn blocked(&self) -> Option<String> {
        self.inner.shared.blocked()
    }

    /// Waits until the client is connected, at most `limit`; whether it is.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        let shared = &self.inner.shared;
        tokio::time::timeout(limit, async {
            loop {
                let linked = shared.linked.notified();
                if shared.link().is_some() {
                    return;
                }
                linked.await;
            }
        })
        .await
        .is_ok()
    }

    /// Calls `function` by name. `args` is a map or struct of arguments by parameter
    /// name, or a tuple or sequence of them in order.
    pub async fn call<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error> {
        self.invoke(function, &args, Idempotency::Once).await
    }

    /// Calls `function` by name, re-sending it after a lost connection or a timeout as
    /// often as the client's [`retries`](ClientBuilder::retries) allow: for functions that
    /// may run twice without harm.
    pub async fn call_idempotent<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error> {
        self.invoke(function, &args, Idempotency::Idempotent).await
    }

    /// Calls a function whose own error type is `E`; its `Err(e)` arrives as
    /// [`Error::Handler`]. Typed stubs generated by `#[rpc]` call this.
    pub async fn call_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error<E>> {
        self.invoke_fallible(function, &args, Idempotency::Once)
            .await
    }

    /// What the typed stubs call.
    #[doc(hidden)]
    pub async fn invoke<R: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<R, Error> {
        let reply = self.round_trips(function, args, idempotency).await?;
        self.decode(function, reply)
    }

    /// What the typed stubs of fallible functions call.
    #[doc(hidden)]
    pub async fn invoke_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<R, Error<E>> {
        let reply = self
            .round_trips(function, args, idempotency)
            .await
            .map_err(Error::widen)?;
        self.decode(function, reply)
            .map_err(|err| typed(function, err))
    }

    /// Asks the service what it serves (the built-in `guirpc.describe`).
    pub async fn describe(&self) -> Result<protocol::Description, Error> {
        self.call_idempotent(protocol::FUNCTION_DESCRIBE, ()).await
    }

    /// Asks one server of the service how it is (the built-in `guirpc.ping`).
    pub async fn ping(&self) -> Result<protocol::Pong, Error> {
        self.call(protocol::FUNCTION_PING, ()).await
    }

    /// Closes the connection; calls still waiting fail with [`Error::Connection`].
    pub async fn close(&self) {
        self.inner.supervisor.abort();
        if let Some(link) = self.inner.shared.take_link() {
            link.close().await;
        }
    }

    /// One round trip, and as many more as the retry policy allows.
    async fn round_trips(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<Delivery, Error> {
        let body = self.codec.encode(args).map_err(|source| Error::Encode {
            function: function.to_owned(),
            source,
        })?;
        let retries = if idempotency == Idempotency::Idempotent {
            self.retries
        } else {
            0
        };
        let mut attempt = 0;
        loop {
            match self.round_trip(function, &body).await {
                Err(err) if err.is_retriable() && attempt < retries => {
                    attempt += 1;
                    debug!(function, attempt, "retrying an idempotent call: {err}");
                    // A lost link takes a moment to come back; do not spend the retries on it.
                    self.wait_connected(self.timeout).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn round_trip(&self, function: &str, body: &[u8]) -> Result<Delivery, Error> {
        let shared = &*self.inner.shared;
        // One timer for the whole call, the wait for a connection included.
        let expired = tokio::time::sleep(self.timeout);
        tokio::pin!(expired);
        // A call that has not been sent waits for a connection until its deadline; only a
        // call in flight when its connection drops fails at once.
        let (mut waiting, reply) = loop {
            let linked = shared.linked.notified();
            if let Some(link) = shared.link() {
                let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = link.pending.insert(id) {
                    let waiting = Waiting {
                        link,
                        id,
                        answered: false,
                    };
                    let properties = protocol::request_properties(
                        function,
                        self.codec,
                        itoa::Buffer::new().format(id).into(),
                        self.timeout,
                    );
                    let publish = waiting.link.channel.basic_publish(
                        shared.exchange.clone(),
                        self.queue.clone(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        body,
                        properties,
                    );
                    tokio::select! {
                        published = publish => match published {
                            Ok(_) => break (waiting, reply),
                            // Not sent: the link is dying; wait for the next.
                            Err(err) => debug!(function, "the request was not sent: {err}"),
                        },
                        () = &mut expired => return Err(self.timed_out(function)),
                    }
                }
            }
            tokio::select! {
                () = linked => {}
                () = &mut expired => return Err(self.not_connected()),
            }
        };
        let answer = tokio::select! {
            answer = reply => answer,
            () = &mut expired => return Err(self.timed_out(function)),
        };
        // Whatever came, the router (or the link's end) took the entry out.
        waiting.answered = true;
        match answer {
            Ok(Answer::Reply(delivery)) => Ok(delivery),
            Ok(Answer::Returned) => Err(Error::NoRoute {
                function: function.to_owned(),
                queue: self.queue.to_string(),
                exchange: shared.exchange.to_string(),
            }),
            Err(_) => Err(Error::connection(
                &shared.masked_uri,
                "the connection to the broker was lost before the reply arrived (the call may have run)",
            )),
        }
    }

    fn decode<R: DeserializeOwned>(&self, function: &str, reply: Delivery) -> Result<R, Error> {
        let content_type = reply
            .properties
            .content_type()
            .as_ref()
            .map(ShortString::as_str);
        let codec = Codec::from_content_type(content_type).unwrap_or(self.codec);
        if protocol::reply_is_ok(&reply.properties) {
            codec.decode(&reply.data).map_err(|source| Error::Decode {
                function: function.to_owned(),
                source,
            })
        } else {
            Err(Error::Remote(RemoteError::from_reply(
                function, codec, reply.data,
            )))
        }
    }

    fn timed_out<E>(&self, function: &str) -> Error<E> {
        match self.inner.shared.blocked() {
            Some(reason) => Error::Blocked {
                function: function.to_owned(),
                reason,
            },
            None => Error::Timeout {
                function: function.to_owned(),
                queue: self.queue.to_string(),
                timeout: self.timeout,
            },
        }
    }

    fn not_connected(&self) -> Error {
        Error::connection(
            &self.inner.shared.masked_uri,
            format!(
                "not connected to the broker for the whole timeout of {:?} (reconnecting); the call was not sent",
                self.timeout
            ),
        )
    }
}

/// Turns a handler error carried in a remote error into the function's own type.
fn typed<E: DeserializeOwned>(function: &str, err: Error<Infallible>) -> Error<E> {
    match err {
        Error::Remote(remote) if remote.code() == &ErrorCode::HandlerError => {
            match remote.detail::<E>() {
                Some(Ok(error)) => Error::Handler {
                    function: function.to_owned(),
                    error,
                },
                Some(Err(source)) => Error::Decode {
                    function: function.to_owned(),
                    source,
                },
                None => Error::Remote(remote),
            }
        }
        other => Error::widen(other),
    }
}
