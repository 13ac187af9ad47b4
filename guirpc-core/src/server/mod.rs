//! The server: takes requests off the service queue and answers them.
//!
//! Each delivery flows one way: read its properties, dispatch to the registered function
//! (decoding the arguments is the function's own first step), run it, publish the reply to
//! `reply_to`, acknowledge. Handlers run concurrently, at most `concurrency` at a time;
//! the broker sends at most `prefetch` unacknowledged requests ahead.
//!
//! The walk, file by file: [`session`] owns the connections (consume, reconnect,
//! drain), [`dispatch`] turns one delivery into a reply, [`reply`] publishes it on a
//! connection of its own, and [`settle`] acknowledges.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use lapin::types::FieldTable;
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::config::{Delivery as DeliveryGuarantee, ServiceSettings, mask_uri, validate_uri};
use crate::registry::Registry;

mod dispatch;
mod reply;
mod session;
mod settle;

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
    /// A second Ctrl-C or SIGTERM came while the server was stopping: it stopped at once,
    /// without waiting for running calls (the broker redelivers them).
    #[error(
        "interrupted while stopping: {running} running call(s) abandoned; the broker redelivers them"
    )]
    Interrupted {
        /// Calls that were still running.
        running: usize,
    },
    /// The server's task failed (a bug: it panicked).
    #[error("the server task failed: {0}")]
    Task(String),
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
        let session = session::Session::open_with_retry(&shared).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(session::supervise(shared.clone(), session, stop_rx));
        Ok(Server {
            shared,
            stop: stop_tx,
            task,
        })
    }
}

/// A running server. Dropping it stops consuming at once; [`Server::shutdown`] stops
/// gracefully.
///
/// A server rides out a lost connection by itself: it reconnects with backoff, logging
/// each failed attempt, for as long as it takes. It ends on its own only when the broker
/// refuses its topology on a reconnection (the queue was declared again with other
/// arguments, say, or permissions were taken away): then [`Server::run_until`] and
/// [`Server::run_until_signal`] return that error at once, instead of waiting for a signal
/// with nothing served.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
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

    /// Whether the server has stopped serving (it failed, or was shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops taking requests, lets running handlers finish (within the grace period),
    /// publishes and acknowledges their replies, and returns requests not yet started to
    /// the queue. The error, if the server had already stopped with one.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        join(&mut self.task).await
    }

    /// Serves until Ctrl-C (SIGINT) or SIGTERM, then shuts down gracefully. A second
    /// signal during the shutdown stops at once with [`ServeError::Interrupted`]; a server
    /// that stops serving on its own returns its error without waiting for a signal.
    pub async fn run_until_signal(mut self) -> Result<(), ServeError> {
        let mut signals = Signals::new();
        tokio::select! {
            () = signals.next() => {}
            ended = &mut self.task => return stopped_on_its_own(ended),
        }
        info!("shutting down: finishing running calls (a second Ctrl-C stops at once)");
        let _ = self.stop.send(true);
        tokio::select! {
            result = join(&mut self.task) => {
                info!("stopped");
                result
            }
            () = signals.next() => {
                let running = self.shared.in_flight.load(std::sync::atomic::Ordering::Relaxed);
                warn!("second signal: stopping at once");
                Err(ServeError::Interrupted { running })
            }
        }
    }

    /// Serves until `signal` completes, then shuts down gracefully; returns at once with
    /// the server's error if it stops serving on its own before that.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        tokio::select! {
            () = signal => {}
            ended = &mut self.task => return stopped_on_its_own(ended),
        }
        info!("shutting down: finishing running calls");
        let result = self.shutdown().await;
        info!("stopped");
        result
    }
}

/// The server task's result, in the shape its callers return: `ServeError` is as large as
/// the lapin error it carries, which these private steps only pass on.
type Ended = Result<Result<(), ServeError>, tokio::task::JoinError>;

#[allow(clippy::result_large_err)]
fn stopped_on_its_own(ended: Ended) -> Result<(), ServeError> {
    let result = flatten(ended);
    if let Err(err) = &result {
        error!("the server stopped serving: {err}");
    }
    result
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

#[allow(clippy::result_large_err)]
async fn join(
    task: &mut tokio::task::JoinHandle<Result<(), ServeError>>,
) -> Result<(), ServeError> {
    flatten(task.await)
}

#[allow(clippy::result_large_err)]
fn flatten(ended: Ended) -> Result<(), ServeError> {
    ended.unwrap_or_else(|err| Err(ServeError::Task(err.to_string())))
}

/// Completes on Ctrl-C, or on SIGTERM on Unix.
pub async fn shutdown_signal() {
    Signals::new().next().await;
}

/// Ctrl-C and SIGTERM, listened to from the first wait on, so that a second signal is not
/// missed between two waits.
struct Signals {
    #[cfg(unix)]
    streams: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let streams = signal(SignalKind::interrupt())
                .and_then(|int| Ok((int, signal(SignalKind::terminate())?)))
                .inspect_err(|err| warn!("cannot listen for signals: {err}"))
                .ok();
            Signals { streams }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Waits for the next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        match &mut self.streams {
            Some((int, term)) => {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            }
            None => std::future::pending().await,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The state every part of a server shares.
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
