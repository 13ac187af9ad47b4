//! The server: takes requests off the service queue and answers them.
//!
//! Each delivery flows one way: read its properties, dispatch to the registered function
//! (decoding the arguments is the function's own first step), run it, publish the reply to
//! `reply_to`, acknowledge. Handlers run concurrently, at most `concurrency` at a time;
//! the broker sends at most `prefetch` unacknowledged requests ahead.
//!
//! A server owns its connection: when the connection drops it reconnects with backoff,
//! declares its topology again and resumes consuming. Requests it had not acknowledged are
//! redelivered by the broker.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use futures_lite::{FutureExt, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tracing::{debug, error, info, warn};

use crate::codec::Codec;
use crate::config::{Delivery as DeliveryGuarantee, ServiceSettings, mask_uri, validate_uri};
use crate::connection;
use crate::protocol::{
    self, Description, Envelope, ErrorCode, ExchangeName, FunctionDescription, ParamDescription,
    Pong, RequestMeta,
};
use crate::registry::{Invocation, Registry, Reply};

mod settle;

use settle::{Settler, Verdict};

/// The most a server waits between two attempts to connect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

/// A server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// Two functions share a name.
    #[error(transparent)]
    Duplicate(#[from] crate::registry::DuplicateFunction),
    /// The broker refused the server's topology (a queue declared with other arguments, say).
    #[error("broker at {uri} refused to set up queue `{queue}`: {source}")]
    Topology {
        /// The broker URI, password masked.
        uri: String,
        /// The service queue.
        queue: String,
        /// What the broker said.
        source: lapin::Error,
    },
}

/// Configures and starts a [`Server`].
///
/// ```no_run
/// # async fn run() -> Result<(), guirpc_core::ServeError> {
/// use guirpc_core::Server;
///
/// let server = Server::builder()
///     .uri("amqp://guest:guest@127.0.0.1:5672/%2f")
///     .queue("calculator")
///     .concurrency(32)
///     .start()
///     .await?;
/// server.run_until_signal().await
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct ServerBuilder {
    settings: ServiceSettings,
    registry: Option<Registry>,
    queue_arguments: FieldTable,
}

impl ServerBuilder {
    /// The broker URI.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.settings.uri = uri.into();
        self
    }

    /// The exchange requests arrive through: `""`, the default, is the broker's default
    /// exchange; a name makes the server declare that direct exchange and bind its queue.
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.settings.exchange = exchange.into();
        self
    }

    /// The service queue: the name callers address.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.settings.queue = queue.into();
        self
    }

    /// How many unacknowledged requests the broker may send ahead.
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.settings.prefetch = prefetch;
        self
    }

    /// How many handlers may run at once.
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.settings.concurrency = concurrency;
        self
    }

    /// When requests are acknowledged.
    pub fn delivery(mut self, delivery: DeliveryGuarantee) -> Self {
        self.settings.delivery = delivery;
        self
    }

    /// How long a shutdown waits for running handlers.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.shutdown_grace = grace;
        self
    }

    /// All service settings at once, as loaded by [`crate::Settings`].
    pub fn settings(mut self, settings: ServiceSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Extra arguments of the queue declaration (`x-expires`, `x-dead-letter-exchange`,
    /// `x-queue-type`, ...). Every server and every declaration of one queue must use the
    /// same arguments: the broker refuses a declaration that differs.
    pub fn queue_arguments(mut self, arguments: FieldTable) -> Self {
        self.queue_arguments = arguments;
        self
    }

    /// Serves these functions instead of every registered one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Connects (retrying with backoff while the broker is unreachable), declares the
    /// exchange, queue and binding, and starts consuming. Returns once requests are being
    /// served.
    pub async fn start(self) -> Result<Server, ServeError> {
        let settings = self.settings;
        validate_uri(&settings.uri).map_err(ServeError::Config)?;
        if settings.concurrency == 0 {
            return Err(ServeError::Config("concurrency must be at least 1".into()));
        }
        let registry = match self.registry {
            Some(registry) => registry,
            None => Registry::collect()?,
        };
        let shared = Arc::new(Shared {
            instance: instance_name(),
            started: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            queue_arguments: self.queue_arguments,
            masked_uri: mask_uri(&settings.uri),
            semaphore: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            registry,
        });
        let session = Session::open_with_retry(&shared).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(supervise(shared.clone(), session, stop_rx));
        Ok(Server {
            shared,
            stop: stop_tx,
            task,
        })
    }
}

/// A running server. Dropping it stops consuming at once; [`Server::shutdown`] stops
/// gracefully.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// A builder with the default settings: the local broker, queue `guirpc`, every
    /// registered function.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            settings: ServiceSettings::default(),
            registry: None,
            queue_arguments: FieldTable::default(),
        }
    }

    /// The queue this server consumes.
    pub fn queue(&self) -> &str {
        &self.shared.settings.queue
    }

    /// The broker URI, password masked.
    pub fn masked_uri(&self) -> &str {
        &self.shared.masked_uri
    }

    /// The functions this server serves.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// Stops taking requests, lets running handlers finish (within the grace period),
    /// publishes and acknowledges their replies, and returns requests not yet started to
    /// the queue.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Err(err) = (&mut self.task).await {
            error!("server task failed: {err}");
        }
    }

    /// Serves until Ctrl-C (SIGINT) or SIGTERM, then shuts down gracefully.
    pub async fn run_until_signal(self) -> Result<(), ServeError> {
        self.run_until(shutdown_signal()).await;
        Ok(())
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        info!("shutting down: finishing running calls");
        self.shutdown().await;
        info!("stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    term.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        ctrl_c.or(term).await;
    }
    #[cfg(not(unix))]
    ctrl_c.await;
}

#[derive(Debug)]
struct Shared {
    settings: ServiceSettings,
    instance: String,
    started: std::time::Instant,
    in_flight: AtomicUsize,
    queue_arguments: FieldTable,
    masked_uri: String,
    registry: Registry,
    semaphore: Arc<Semaphore>,
}

/// One connection's worth of serving.
struct Session {
    connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    settler: Arc<Settler>,
}

impl Session {
    async fn open_with_retry(shared: &Shared) -> Result<Session, ServeError> {
        let mut delay = Duration::from_millis(500);
        loop {
            match Session::open(shared).await {
                Ok(session) => return Ok(session),
                Err(SessionError::Connect(err)) => {
                    warn!(
                        "broker unreachable at {}: {err}; retrying in {:.1}s",
                        shared.masked_uri,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                }
                Err(SessionError::Topology(source)) => {
                    return Err(ServeError::Topology {
                        uri: shared.masked_uri.clone(),
                        queue: shared.settings.queue.clone(),
                        source,
                    });
                }
            }
        }
    }

    async fn open(shared: &Shared) -> Result<Session, SessionError> {
        let settings = &shared.settings;
        let name = format!("guirpc server {}", settings.queue);
        let connection = connection::connect(&settings.uri, &settings.tls_ca_file, &name)
            .await
            .map_err(SessionError::Connect)?;
        tokio::spawn(log_blocking(
            connection.events_listener(),
            shared.masked_uri.clone(),
        ));
        let channel = connection
            .create_channel()
            .await
            .map_err(|err| SessionError::Connect(err.into()))?;
        let topology = async {
            protocol::declare_exchange(&channel, &settings.exchange).await?;
            channel
                .queue_declare(
                    settings.queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    queue_arguments(shared),
                )
                .await?;
            // The default exchange routes to every queue by its name, and takes no bindings.
            if !settings.exchange.is_empty() {
                channel
                    .queue_bind(
                        settings.queue.as_str().into(),
                        settings.exchange.as_str().into(),
                        settings.queue.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
            channel
                .basic_qos(settings.prefetch, BasicQosOptions::default())
                .await?;
            channel
                .basic_consume(
                    settings.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        };
        let consumer = topology.await.map_err(SessionError::Topology)?;
        info!(
            "serving {} function(s) on queue `{}` ({}) at {}",
            shared.registry.len(),
            settings.queue,
            ExchangeName(&settings.exchange),
            shared.masked_uri
        );
        let dead_letter = !settings.dead_letter_exchange.is_empty();
        Ok(Session {
            settler: Arc::new(Settler::new(channel.clone(), dead_letter)),
            connection,
            channel,
            consumer,
        })
    }
}

/// The queue's declaration arguments: the configured ones, and dead-lettering if set.
fn queue_arguments(shared: &Shared) -> FieldTable {
    let mut arguments = shared.queue_arguments.clone();
    let exchange = &shared.settings.dead_letter_exchange;
    if !exchange.is_empty() {
        arguments.insert(
            "x-dead-letter-exchange".into(),
            lapin::types::AMQPValue::LongString(exchange.as_str().into()),
        );
    }
    arguments
}

enum SessionError {
    Connect(connection::ConnectError),
    Topology(lapin::Error),
}

/// Logs the broker blocking this connection's publishes (replies wait meanwhile).
async fn log_blocking(events: impl futures_lite::Stream<Item = lapin::Event>, uri: String) {
    futures_lite::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            lapin::Event::ConnectionBlocked(reason) => {
                warn!("the broker at {uri} blocks publishing, replies wait: {reason}");
            }
            lapin::Event::ConnectionUnblocked => {
                info!("the broker at {uri} accepts publishing again")
            }
            _ => {}
        }
    }
}

/// Serves session after session until told to stop.
async fn supervise(shared: Arc<Shared>, mut session: Session, mut stop: watch::Receiver<bool>) {
    loop {
        match consume(&shared, &mut session, &mut stop).await {
            Ok(()) => {
                drain(&shared, &session).await;
                return;
            }
            Err(err) => {
                warn!(
                    "lost the connection to {}: {err}; reconnecting",
                    shared.masked_uri
                );
                session = tokio::select! {
                    session = Session::open_with_retry(&shared) => match session {
                        Ok(session) => session,
                        Err(err) => {
                            error!("cannot serve any longer: {err}");
                            return;
                        }
                    },
                    _ = stop.wait_for(|stop| *stop) => return,
                };
            }
        }
    }
}

/// Takes deliveries until told to stop (`Ok`) or the connection fails (`Err`).
async fn consume(
    shared: &Arc<Shared>,
    session: &mut Session,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            permit = shared.semaphore.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let delivery = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            delivery = session.consumer.next() => delivery,
        };
        match delivery {
            Some(Ok(delivery)) => {
                session.settler.received(delivery.delivery_tag);
                tokio::spawn(handle(
                    shared.clone(),
                    session.settler.clone(),
                    delivery,
                    permit,
                ));
            }
            Some(Err(err)) => return Err(err.to_string()),
            None => return Err("the broker cancelled the consumer".into()),
        }
    }
}

/// Graceful end of a session: no new deliveries, running handlers finish, the rest go back.
async fn drain(shared: &Shared, session: &Session) {
    let tag = session.consumer.tag();
    if let Err(err) = session
        .channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
    {
        debug!("cancelling the consumer: {err}");
    }
    let all = u32::try_from(shared.settings.concurrency).unwrap_or(u32::MAX);
    let grace = shared.settings.shutdown_grace;
    if tokio::time::timeout(grace, shared.semaphore.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            "calls still running after the {grace:?} grace period are abandoned; the broker will redeliver them"
        );
    }
    // Closing returns every request delivered but not acknowledged to the queue.
    let _ = session.channel.close(200, "shutdown".into()).await;
    let _ = session.connection.close(200, "shutdown".into()).await;
}

async fn handle(
    shared: Arc<Shared>,
    settler: Arc<Settler>,
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
) {
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let _running = InFlight(&shared.in_flight);
    let Delivery {
        delivery_tag,
        data,
        properties,
        redelivered,
        ..
    } = delivery;
    let meta = RequestMeta::read(&properties);
    let at_most_once = shared.settings.delivery == DeliveryGuarantee::AtMostOnce;
    if at_most_once {
        settler.finished(delivery_tag, Verdict::Served).await;
    }
    if redelivered {
        debug!(
            function = meta.function.as_deref(),
            "a redelivered request: it may have run before"
        );
    }
    let (codec, reply, verdict) = dispatch(&shared, &meta, data).await;
    let RequestMeta {
        function,
        correlation_id,
        reply_to,
        ..
    } = meta;
    let function = function.as_deref();
    if let Some(reply_to) = reply_to {
        let properties = protocol::reply_properties(codec, correlation_id, reply.ok);
        let published = settler
            .channel()
            .basic_publish(
                "".into(),
                reply_to,
                BasicPublishOptions::default(),
                &reply.body,
                properties,
            )
            .await;
        if let Err(err) = published {
            // Not acknowledged: the broker redelivers the request once we reconnect.
            warn!(function, "cannot publish the reply: {err}");
            return;
        }
    } else if !reply.ok {
        let message = RemoteMessage(codec, &reply.body);
        warn!(function, "one-way call failed: {message}");
    }
    if !at_most_once {
        settler.finished(delivery_tag, verdict).await;
    }
}

/// Counts a call as running until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Finds and runs the function; every failure becomes an error reply.
async fn dispatch(shared: &Shared, meta: &RequestMeta, body: Vec<u8>) -> (Codec, Reply, Verdict) {
    let rejected = |codec: Codec, code: ErrorCode, message: &str| {
        warn!(
            function = meta.function.as_deref(),
            "rejected a request ({code}): {message}"
        );
        (codec, Reply::error(codec, code, message), Verdict::Rejected)
    };
    let codec = match &meta.codec {
        Ok(codec) => *codec,
        Err(message) => return rejected(Codec::Json, ErrorCode::BadRequest, message),
    };
    // Checked before anything is decoded.
    let limit = shared.settings.max_message_size;
    if body.len() > limit {
        let message = format!(
            "the request body of {} bytes exceeds the maximum of {limit} bytes",
            body.len()
        );
        return rejected(codec, ErrorCode::TooLarge, &message);
    }
    let Some(name) = meta.function.as_deref() else {
        let message = format!(
            "the request has no `{}` header naming the function",
            protocol::HEADER_FUNCTION
        );
        return rejected(codec, ErrorCode::BadRequest, &message);
    };
    if name.starts_with(protocol::RESERVED_PREFIX) {
        return (codec, builtin(shared, name, codec), Verdict::Served);
    }
    let Some(function) = shared.registry.get(name) else {
        let message = format!(
            "no function `{name}` is served on queue `{}`",
            shared.settings.queue
        );
        return rejected(codec, ErrorCode::NotFound, &message);
    };
    if meta
        .deadline
        .is_some_and(|deadline| SystemTime::now() > deadline)
    {
        let message = format!("the deadline of this call to `{name}` passed before it could start");
        debug!("{message}");
        return (
            codec,
            Reply::error(codec, ErrorCode::DeadlineExceeded, &message),
            Verdict::Served,
        );
    }
    let future = (function.handler())(Invocation { codec, body });
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(reply) => (codec, reply, Verdict::Served),
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            error!(function = name, "handler panicked: {what}");
            let reply = Reply::error(
                codec,
                ErrorCode::Internal,
                &format!("`{name}` panicked: {what}"),
            );
            (codec, reply, Verdict::Rejected)
        }
    }
}

/// The functions every server answers from its own state.
fn builtin(shared: &Shared, name: &str, codec: Codec) -> Reply {
    let encoded = match name {
        protocol::FUNCTION_DESCRIBE => codec.encode(&Description {
            queue: shared.settings.queue.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            functions: shared
                .registry
                .iter()
                .map(|f| FunctionDescription {
                    name: f.name().to_owned(),
                    doc: f.doc().to_owned(),
                    params: f
                        .params()
                        .iter()
                        .map(|p| ParamDescription {
                            name: p.name.to_owned(),
                            ty: p.ty.to_owned(),
                        })
                        .collect(),
                    returns: f.returns().to_owned(),
                    blocking: f.is_blocking(),
                })
                .collect(),
        }),
        protocol::FUNCTION_PING => {
            codec.encode(&Pong {
                instance: shared.instance.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                queue: shared.settings.queue.clone(),
                uptime_ms: u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                // This ping holds one of the permits.
                in_flight: shared.in_flight.load(Ordering::Relaxed).saturating_sub(1),
                concurrency: shared.settings.concurrency,
                functions: shared.registry.len(),
            })
        }
        _ => {
            let message = format!(
                "no built-in function `{name}` (names starting with `guirpc.` are reserved)"
            );
            return Reply::error(codec, ErrorCode::NotFound, &message);
        }
    };
    match encoded {
        Ok(body) => Reply { ok: true, body },
        Err(err) => Reply::error(codec, ErrorCode::Internal, &err.to_string()),
    }
}

/// `host:pid`, naming this server process in pings.
fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}

/// Shows an encoded error envelope's message in a log line.
struct RemoteMessage<'a>(Codec, &'a [u8]);

impl std::fmt::Display for RemoteMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.decode::<Envelope<'_, serde::de::IgnoredAny>>(self.1) {
            Ok(envelope) => write!(f, "{} ({})", envelope.message, envelope.code),
            Err(_) => f.write_str("<undecodable error envelope>"),
        }
    }
}
