//! The server: takes requests off the service queue and answers them.
//!
//! Each delivery flows one way: read its properties, dispatch to the registered function
//! (decoding the arguments is the function's own first step), run it, publish the reply to
//! `reply_to`, acknowledge. Handlers run concurrently, at most `concurrency` at a time;
//! the broker sends at most `prefetch` unacknowledged requests ahead.
//!
//! The walk, file by file: [`builder`] configures and starts a server, [`session`] owns
//! the connections (consume, reconnect, drain), [`dispatch`] turns one delivery into a
//! request and its reply into a settlement, [`pipeline`] runs the request through the
//! layers to the function, [`reply`] publishes the reply, and [`settle`] acknowledges;
//! [`redeliveries`] remembers the redelivered requests run, so that none runs twice.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::types::FieldTable;
use tokio::sync::{Semaphore, watch};
use tracing::{error, info, warn};

use crate::config::ServiceSettings;
use crate::link::Blocked;
use crate::metrics::http::Readiness;
use crate::metrics::{Metrics, queue_labels};
use crate::middleware::ServerService;
use crate::registry::Registry;

mod builder;
mod dispatch;
mod events;
mod jobs;
pub(crate) mod pipeline;
mod redeliveries;
mod reply;
mod request;
mod session;
mod settle;
mod signals;
mod streams;

pub use builder::ServerBuilder;
pub(crate) use request::read_request;
use signals::Signals;
pub use signals::shutdown_signal;

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
    #[error(
        "broker at {uri} refused to set up queue `{queue}` (declared with {declared}): {source}"
    )]
    Topology {
        /// The broker URI, password masked.
        uri: String,
        /// The service queue.
        queue: String,
        /// The arguments this server declares the queue with, as the broker's message
        /// names the queue's own.
        declared: String,
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
    /// The metrics listener, when there is one; it stops with the server.
    #[allow(dead_code)]
    listener: Option<AbortOnDrop>,
    metrics_addr: Option<SocketAddr>,
}

/// A task that ends when this is dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Server {
    /// A builder with the default settings: the local broker, queue `guirpc`, every
    /// registered function.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            settings: ServiceSettings::default(),
            registry: None,
            queue_arguments: FieldTable::default(),
            layers: Default::default(),
            metrics: None,
            subscribers: None,
            pipes: Vec::new(),
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
        &self.shared.dispatcher.registry
    }

    /// Where the metrics listener listens, when it does (the port chosen for port 0).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The metrics this server records into, when it records any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.shared.metrics.as_ref()
    }

    /// Whether the server can serve now, as `/readyz` reports it.
    pub fn readiness(&self) -> Readiness {
        self.shared.health.readiness()
    }

    /// Whether the server has stopped serving (it failed, or was shut down).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops taking requests, lets running handlers finish (within the grace period),
    /// publishes and acknowledges their replies, and returns requests not yet started to
    /// the queue. The error, if the server had already stopped with one.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        self.shared.health.draining.store(true, Ordering::Relaxed);
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
        self.shared.health.draining.store(true, Ordering::Relaxed);
        let _ = self.stop.send(true);
        tokio::select! {
            result = join(&mut self.task) => {
                info!("stopped");
                result
            }
            () = signals.next() => {
                let running = self.shared.dispatcher.in_flight.load(Ordering::Relaxed);
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

/// The state every part of a server shares.
#[derive(Debug)]
struct Shared {
    settings: ServiceSettings,
    queue_arguments: FieldTable,
    /// Every broker node of the URI list, passwords masked.
    masked_uri: String,
    /// The nodes, and the one connected to.
    brokers: Arc<crate::link::Brokers>,
    semaphore: Arc<Semaphore>,
    dispatcher: Arc<pipeline::Dispatcher>,
    /// The pipeline every request runs through.
    service: ServerService,
    metrics: Option<Metrics>,
    health: Health,
    /// The redelivered requests this server has run.
    redeliveries: redeliveries::Redeliveries,
    /// The broker nodes replies have been delivered to (safe on the consuming channel).
    reply_nodes: Arc<reply::ReplyNodes>,
    /// How many sessions the broker's consumer timeout has ended.
    consumer_timeouts: std::sync::atomic::AtomicU64,
    /// The dead letters this server gave up, for the status page.
    dead_letters: Arc<crate::metrics::DeadLetters>,
}

impl Shared {
    /// Keeps the state gauges of `metrics` current at every scrape.
    fn probe_into(self: &Arc<Self>, metrics: &Metrics) {
        let labels = queue_labels(&self.settings.queue);
        let families = metrics.server();
        let ready = families.ready.get_or_create_owned(&labels);
        let blocked = families.blocked.get_or_create_owned(&labels);
        // Exposed from the start at 0, so that the first reconnection shows in `rate()`.
        drop(families.reconnects.get_or_create(&labels));
        let shared = Arc::downgrade(self);
        metrics.probe(move || match shared.upgrade() {
            Some(shared) => {
                ready.set(i64::from(shared.health.readiness().is_ready()));
                blocked.set(i64::from(shared.health.blocked.is_blocked()));
                true
            }
            // The server is gone: it serves nothing.
            None => {
                ready.set(0);
                blocked.set(0);
                false
            }
        });
    }

    /// Whether the broker's consumer timeout has taken a channel of this server away: it
    /// cannot be raised for this queue (RabbitMQ 3.10 and 3.11, or a queue declared
    /// before), and deliveries of requests still running are acknowledged as they come.
    fn consumer_timed_out(&self) -> bool {
        self.consumer_timeouts.load(Ordering::Relaxed) > 0
    }

    /// Counts a request rejected after the pipeline: a failed one-way call, or a reply
    /// given up.
    fn count_rejected_late(&self) {
        if let Some(metrics) = &self.metrics {
            let labels = queue_labels(&self.settings.queue);
            metrics.server().rejected.get_or_create(&labels).inc();
            if self.settings.rejects_to_exchange() {
                metrics.server().dead_lettered.get_or_create(&labels).inc();
            }
        }
    }

    /// Counts a cast or an event given up as a dead letter, and keeps why for the status
    /// page.
    fn count_dead_letter(&self, function: &str, code: &crate::ErrorCode, message: &str) {
        if let Some(metrics) = &self.metrics {
            let labels = queue_labels(&self.settings.queue);
            metrics.server().dead_lettered.get_or_create(&labels).inc();
        }
        self.dead_letters.record(function, code.as_str(), message);
    }

    /// The retry policy of a function or subscriber stating `options`.
    fn retry_policy(
        &self,
        options: Option<&crate::retry::RetryOverride>,
    ) -> crate::retry::RetryPolicy {
        self.dispatcher.retry_policy(options)
    }

    /// Counts a reconnection, when metrics are on.
    fn count_move(&self, to: &str) {
        if let Some(metrics) = &self.metrics {
            metrics.count_move("server", to);
        }
    }

    fn count_reconnect(&self) {
        if let Some(metrics) = &self.metrics {
            metrics
                .server()
                .reconnects
                .get_or_create(&queue_labels(&self.settings.queue))
                .inc();
        }
    }
}

/// What `/readyz` reports: consuming, blocked, draining.
#[derive(Debug, Default)]
struct Health {
    consuming: AtomicBool,
    draining: AtomicBool,
    blocked: Arc<Blocked>,
}

impl Health {
    fn readiness(&self) -> Readiness {
        if self.draining.load(Ordering::Relaxed) {
            Readiness::Draining
        } else if !self.consuming.load(Ordering::Relaxed) {
            Readiness::Connecting
        } else if let Some(reason) = self.blocked.reason() {
            Readiness::Blocked(reason)
        } else {
            Readiness::Ready
        }
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

/// Sends a frame-producing lapin call (a publish, an acknowledgement): awaited until its
/// frames are written when `until_written`, or polled once, which queues them (or finds
/// the channel closed), sparing the task the wake-up that reports the write. `None` when
/// queued and not yet written.
async fn sent<F: Future>(frames: F, until_written: bool) -> Option<F::Output> {
    if until_written {
        Some(frames.await)
    } else {
        futures_lite::future::poll_once(frames).await
    }
}
