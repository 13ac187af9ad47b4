//! Metrics, in Prometheus' exposition format.
//!
//! One [`Metrics`] registry holds the metrics of every server and client it is given to
//! ([`ServerBuilder::metrics`](crate::ServerBuilder::metrics),
//! [`ClientBuilder::metrics`](crate::ClientBuilder::metrics)); a server started with a
//! metrics address serves them over HTTP at `/metrics`, beside `/healthz`, `/readyz` and
//! a status page at `/` ([`http`]). Names and labels are stable and documented in
//! `docs/OBSERVABILITY.md`.
//!
//! Built on `prometheus-client`, the Prometheus project's own Rust client: a registry
//! and an encoder with no dependencies beyond a lock and number formatting, where the
//! `metrics` facade would add its exporter's HTTP stack, which the one small listener
//! here does not need.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

mod html;
pub mod http;
mod layer;
mod pages;
mod recent;
mod status;
pub(crate) use status::DeadLetters;

use crate::sync::{Locked, RwLocked};
pub use layer::{ClientMetricsLayer, ServerMetricsLayer};

/// The label values of one metric: `(name, value)` pairs.
pub(crate) type Labels = Vec<(&'static str, String)>;

/// The upper bounds of the latency histograms' buckets, in seconds: 100 µs to 30 s.
const LATENCY_BUCKETS: [f64; 17] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// A registry of guirpc's metrics, shared by the servers and clients of a process.
/// Cheap to clone: clones share the metrics.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    server: ServerFamilies,
    client: ClientFamilies,
    /// Moves to another broker node of a URI list, by role and node.
    moves: Family<Labels, Counter>,
    /// Gauges read from state at each scrape (connected, blocked, in flight).
    probes: Mutex<Vec<Box<dyn Fn() -> bool + Send + Sync>>>,
}

#[derive(Clone)]
pub(crate) struct ServerFamilies {
    pub calls: Family<Labels, Counter>,
    pub duration: HistogramFamily,
    pub in_flight: Family<Labels, Gauge>,
    pub rejected: Family<Labels, Counter>,
    pub dead_lettered: Family<Labels, Counter>,
    pub redeliveries: Family<Labels, Counter>,
    pub retries: Family<Labels, Counter>,
    pub attempts: Family<Labels, Counter>,
    pub reconnects: Family<Labels, Counter>,
    pub blocked: Family<Labels, Gauge>,
    pub ready: Family<Labels, Gauge>,
    /// The last quarter hour, for the status page.
    pub recent: Arc<recent::Recent>,
}

#[derive(Clone)]
pub(crate) struct ClientFamilies {
    pub calls: Family<Labels, Counter>,
    pub duration: HistogramFamily,
    pub pending: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An empty registry of guirpc's metrics.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let histograms = || HistogramFamily::new_with_constructor(latency_histogram as fn() -> _);
        let server = ServerFamilies {
            calls: Family::default(),
            duration: histograms(),
            in_flight: Family::default(),
            rejected: Family::default(),
            dead_lettered: Family::default(),
            redeliveries: Family::default(),
            retries: Family::default(),
            attempts: Family::default(),
            reconnects: Family::default(),
            blocked: Family::default(),
            ready: Family::default(),
            recent: Arc::default(),
        };
        let client = ClientFamilies {
            calls: Family::default(),
            duration: histograms(),
            pending: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "guirpc_server_calls",
            "Calls served, by queue, function and outcome code (ok, or the error code)",
            server.calls.clone(),
        );
        r.register_with_unit(
            "guirpc_server_handler_duration",
            "Time from taking a request to having its reply, by queue and function",
            Unit::Seconds,
            server.duration.clone(),
        );
        r.register(
            "guirpc_server_calls_in_flight",
            "Calls running now, by queue",
            server.in_flight.clone(),
        );
        r.register(
            "guirpc_server_rejected",
            "Requests refused as unservable (malformed, unknown function, too large, panicked) and failed casts, by queue",
            server.rejected.clone(),
        );
        r.register(
            "guirpc_server_dead_lettered",
            "Requests given up as dead letters: failed casts and events after their last attempt, and rejected requests handed to the queue's dead-letter exchange, by queue",
            server.dead_lettered.clone(),
        );
        r.register(
            "guirpc_server_redeliveries",
            "Requests the broker delivered again (they may have run before), by queue",
            server.redeliveries.clone(),
        );
        r.register(
            "guirpc_server_retries",
            "Retries of failed casts and events scheduled on the delay ladder, by queue and function",
            server.retries.clone(),
        );
        r.register(
            "guirpc_server_attempts",
            "Runs of casts and events, by queue, function and attempt (1 for the first run, up to 10+)",
            server.attempts.clone(),
        );
        r.register(
            "guirpc_server_reconnects",
            "Times the server lost its connection and connected again, by queue",
            server.reconnects.clone(),
        );
        r.register(
            "guirpc_server_broker_blocked",
            "1 while the broker blocks the server's publishing (a resource alarm), by queue",
            server.blocked.clone(),
        );
        r.register(
            "guirpc_server_ready",
            "1 while the server is connected and consuming, by queue",
            server.ready.clone(),
        );
        r.register(
            "guirpc_client_calls",
            "Client calls, by queue, function and outcome (ok, the error code, or timeout, no_route, connection, ...)",
            client.calls.clone(),
        );
        r.register_with_unit(
            "guirpc_client_duration",
            "Client round-trip time, by queue and function",
            Unit::Seconds,
            client.duration.clone(),
        );
        r.register(
            "guirpc_client_calls_pending",
            "Client calls waiting for their reply",
            client.pending.clone(),
        );
        let moves = Family::default();
        r.register(
            "guirpc_broker_moves",
            "Connections moved to another broker node of the URI list after the last one was lost, by role (server, client) and node (password masked)",
            moves.clone(),
        );
        Metrics {
            inner: Arc::new(Inner {
                registry,
                server,
                client,
                moves,
                probes: Mutex::default(),
            }),
        }
    }

    /// The metrics in the OpenMetrics text format, which Prometheus scrapes.
    pub fn encode(&self) -> String {
        // A probe whose server is gone says so, and is dropped.
        self.inner.probes.locked().retain(|probe| probe());
        let mut text = String::new();
        encode(&mut text, &self.inner.registry).expect("writing to a String cannot fail");
        text
    }

    /// A layer recording the calls of a client into this registry: add it with
    /// [`ClientBuilder::metrics`](crate::ClientBuilder::metrics).
    pub fn client_layer(&self) -> ClientMetricsLayer {
        ClientMetricsLayer::new(self.inner.client.clone())
    }

    /// Counts a move of a server's or client's connection to the broker node `to`.
    pub(crate) fn count_move(&self, role: &'static str, to: &str) {
        let labels = vec![("role", role.to_owned()), ("node", to.to_owned())];
        self.inner.moves.get_or_create(&labels).inc();
    }

    pub(crate) fn server(&self) -> &ServerFamilies {
        &self.inner.server
    }

    /// Reads state into gauges at every scrape, for as long as `probe` returns `true`.
    pub(crate) fn probe(&self, probe: impl Fn() -> bool + Send + Sync + 'static) {
        self.inner.probes.locked().push(Box::new(probe));
    }
}

/// The `queue` label alone.
pub(crate) fn queue_labels(queue: &str) -> Labels {
    vec![("queue", queue.to_owned())]
}

/// Caches the metric of each label value met, so that recording takes no allocation.
struct Cache<M> {
    make: Box<dyn Fn(&str) -> M + Send + Sync>,
    known: RwLock<HashMap<String, M>>,
}

impl<M: Clone> Cache<M> {
    fn new(make: impl Fn(&str) -> M + Send + Sync + 'static) -> Cache<M> {
        Cache {
            make: Box::new(make),
            known: RwLock::default(),
        }
    }

    fn get(&self, key: &str) -> M {
        if let Some(metric) = self.known.read_locked().get(key) {
            return metric.clone();
        }
        let metric = (self.make)(key);
        self.known
            .write_locked()
            .insert(key.to_owned(), metric.clone());
        metric
    }
}

/// What the listener shows: the metrics, and the service they belong to.
pub(crate) struct Endpoint {
    pub metrics: Metrics,
    pub queue: String,
    pub instance: String,
    pub started: std::time::Instant,
    /// The functions served: name and summary.
    pub functions: Vec<(String, String)>,
    pub readiness: Box<dyn Fn() -> http::Readiness + Send + Sync>,
    /// The dead letters the server gave up, when it keeps them.
    pub dead_letters: Option<std::sync::Arc<DeadLetters>>,
    /// Where they are kept, when in the service's own dead-letter queue.
    pub dead_letter_queue: Option<String>,
    /// The bearer token `/metrics` and the pages want, when one is set.
    pub token: Option<String>,
    /// What the service answers to `guirpc.describe`: the functions' pages.
    pub description: Box<dyn Fn() -> Option<crate::protocol::Description> + Send + Sync>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_suffixes_are_those_documented() {
        let metrics = Metrics::new();
        let server = metrics.server();
        server
            .calls
            .get_or_create(&vec![
                ("queue", "q".into()),
                ("function", "add".into()),
                ("code", "ok".into()),
            ])
            .inc();
        server
            .duration
            .get_or_create(&vec![("queue", "q".into()), ("function", "add".into())])
            .observe(0.003);
        let text = metrics.encode();
        assert!(
            text.contains(
                "guirpc_server_calls_total{queue=\"q\",function=\"add\",code=\"ok\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("guirpc_server_handler_duration_seconds_bucket{le=\"0.005\",queue=\"q\",function=\"add\"} 1\n"), "{text}");
        assert!(
            text.contains("# TYPE guirpc_client_calls_pending gauge"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
