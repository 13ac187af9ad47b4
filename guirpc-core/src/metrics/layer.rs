//! The metrics layers: what a server and a client record of each call.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use prometheus_client::metrics::family::Family;

use super::{Cache, ClientFamilies, HistogramFamily, Labels, ServerFamilies, queue_labels};
use crate::error::Error;
use crate::middleware::{
    BoxFuture, ClientRequest, ClientResponse, ClientService, Layer, OUTCOME_OK, OwnService, Reply,
    ServerRequest, ServerService, client_outcome, service_of_own,
};
use crate::sync::RwLocked;

/// The label of a function no server serves: requests may name anything, and a label per
/// name would let any caller grow the metrics without bound.
pub(crate) const UNKNOWN_FUNCTION: &str = "unknown";

/// The metrics of one function, fetched once and kept.
#[derive(Clone)]
struct FunctionMetrics {
    queue: Arc<str>,
    function: Arc<str>,
    ok: Counter,
    duration: Histogram,
    /// The server's recent calls of it (not kept for clients).
    recent: Option<Arc<super::recent::Series>>,
}

impl FunctionMetrics {
    fn new(
        calls: &Family<Labels, Counter>,
        durations: &HistogramFamily,
        queue: &str,
        function: &str,
    ) -> FunctionMetrics {
        FunctionMetrics {
            queue: queue.into(),
            function: function.into(),
            ok: calls.get_or_create_owned(&call_labels(queue, function, OUTCOME_OK)),
            duration: durations.get_or_create_owned(&function_labels(queue, function)),
            recent: None,
        }
    }

    /// Counts a call that ended in `outcome`.
    fn count(&self, calls: &Family<Labels, Counter>, outcome: &str) {
        if outcome == OUTCOME_OK {
            self.ok.inc();
        } else {
            calls
                .get_or_create(&call_labels(&self.queue, &self.function, outcome))
                .inc();
        }
    }
}

/// Records a server's calls. Built by the server from its [`Metrics`](super::Metrics).
#[derive(Clone)]
pub struct ServerMetricsLayer {
    state: Arc<ServerState>,
}

impl std::fmt::Debug for ServerMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetricsLayer").finish_non_exhaustive()
    }
}

struct ServerState {
    families: ServerFamilies,
    functions: Cache<FunctionMetrics>,
    known: HashSet<String>,
    dead_letter: bool,
    in_flight: Gauge,
    rejected: Counter,
    dead_lettered: Counter,
    redeliveries: Counter,
}

impl ServerMetricsLayer {
    pub(crate) fn new(
        families: &ServerFamilies,
        queue: &str,
        functions: impl IntoIterator<Item = String>,
        dead_letter: bool,
    ) -> ServerMetricsLayer {
        let queue_only = queue_labels(queue);
        let made = families.clone();
        let owned_queue = queue.to_owned();
        ServerMetricsLayer {
            state: Arc::new(ServerState {
                functions: Cache::new(move |function| FunctionMetrics {
                    recent: Some(made.recent.series(&owned_queue, function)),
                    ..FunctionMetrics::new(&made.calls, &made.duration, &owned_queue, function)
                }),
                known: functions.into_iter().collect(),
                dead_letter,
                in_flight: families.in_flight.get_or_create_owned(&queue_only),
                rejected: families.rejected.get_or_create_owned(&queue_only),
                dead_lettered: families.dead_lettered.get_or_create_owned(&queue_only),
                redeliveries: families.redeliveries.get_or_create_owned(&queue_only),
                families: families.clone(),
            }),
        }
    }
}

impl Layer<ServerService> for ServerMetricsLayer {
    type Service = ServerMetrics;

    fn layer(&self, inner: ServerService) -> ServerMetrics {
        ServerMetrics {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`ServerMetricsLayer`] makes.
#[derive(Clone)]
pub struct ServerMetrics {
    inner: ServerService,
    state: Arc<ServerState>,
}

impl std::fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerMetrics").finish_non_exhaustive()
    }
}

service_of_own!(ServerMetrics, ServerRequest, Reply, Infallible);

impl OwnService<ServerRequest, Reply, Infallible> for ServerMetrics {
    fn call(&self, request: ServerRequest) -> BoxFuture<Result<Reply, Infallible>> {
        let state = self.state.clone();
        let label = if state.known.contains(&request.function) {
            request.function.as_str()
        } else {
            UNKNOWN_FUNCTION
        };
        let metrics = state.functions.get(label);
        if request.redelivered {
            state.redeliveries.inc();
        }
        let codec = request.codec;
        let future = self.inner.call_once(request);
        Box::pin(async move {
            let _running = Running::start(&state.in_flight);
            let started = Instant::now();
            let reply = future.await;
            let ended = Instant::now();
            let elapsed = ended - started;
            metrics.duration.observe(elapsed.as_secs_f64());
            if let Ok(reply) = &reply {
                metrics.count(&state.families.calls, reply.outcome());
                if let Some(recent) = &metrics.recent {
                    recent.record(ended, elapsed, reply.code.is_some());
                }
                if let Some(code) = &reply.code {
                    let (_, message) = crate::envelope::read(codec, &reply.body);
                    state.families.recent.error(super::recent::RecentError {
                        at: std::time::SystemTime::now(),
                        queue: metrics.queue.to_string(),
                        function: metrics.function.to_string(),
                        code: code.as_str().to_owned(),
                        message,
                    });
                }
                if reply.rejected {
                    state.rejected.inc();
                    if state.dead_letter {
                        state.dead_lettered.inc();
                    }
                }
            }
            reply
        })
    }
}

/// Counts a call in a gauge until dropped (a cancelled call included).
struct Running(Gauge);

impl Running {
    fn start(gauge: &Gauge) -> Running {
        gauge.inc();
        Running(gauge.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Records a client's calls: calls by function and outcome, round-trip latency, calls
/// pending. Made by [`Metrics::client_layer`](super::Metrics::client_layer).
#[derive(Clone)]
pub struct ClientMetricsLayer {
    state: Arc<ClientState>,
}

impl std::fmt::Debug for ClientMetricsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetricsLayer").finish_non_exhaustive()
    }
}

struct ClientState {
    families: ClientFamilies,
    /// By queue, then by function.
    known: RwLock<HashMap<String, HashMap<String, FunctionMetrics>>>,
}

impl ClientMetricsLayer {
    pub(super) fn new(families: ClientFamilies) -> ClientMetricsLayer {
        ClientMetricsLayer {
            state: Arc::new(ClientState {
                families,
                known: RwLock::default(),
            }),
        }
    }
}

impl ClientState {
    fn function(&self, queue: &str, function: &str) -> FunctionMetrics {
        if let Some(metrics) = self
            .known
            .read_locked()
            .get(queue)
            .and_then(|functions| functions.get(function))
        {
            return metrics.clone();
        }
        let metrics = FunctionMetrics::new(
            &self.families.calls,
            &self.families.duration,
            queue,
            function,
        );
        self.known
            .write_locked()
            .entry(queue.to_owned())
            .or_default()
            .insert(function.to_owned(), metrics.clone());
        metrics
    }
}

impl Layer<ClientService> for ClientMetricsLayer {
    type Service = ClientMetrics;

    fn layer(&self, inner: ClientService) -> ClientMetrics {
        ClientMetrics {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service [`ClientMetricsLayer`] makes.
#[derive(Clone)]
pub struct ClientMetrics {
    inner: ClientService,
    state: Arc<ClientState>,
}

impl std::fmt::Debug for ClientMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientMetrics").finish_non_exhaustive()
    }
}

service_of_own!(ClientMetrics, ClientRequest, ClientResponse, Error);

impl OwnService<ClientRequest, ClientResponse, Error> for ClientMetrics {
    fn call(&self, request: ClientRequest) -> BoxFuture<Result<ClientResponse, Error>> {
        let state = self.state.clone();
        let metrics = state.function(request.queue.as_str(), &request.function);
        let future = self.inner.call_once(request);
        Box::pin(async move {
            let _pending = Running::start(&state.families.pending);
            let started = Instant::now();
            let result = future.await;
            metrics.duration.observe(started.elapsed().as_secs_f64());
            metrics.count(&state.families.calls, &client_outcome(&result));
            result
        })
    }
}

fn call_labels(queue: &str, function: &str, code: &str) -> Labels {
    vec![
        ("queue", queue.to_owned()),
        ("function", function.to_owned()),
        ("code", code.to_owned()),
    ]
}

fn function_labels(queue: &str, function: &str) -> Labels {
    vec![
        ("queue", queue.to_owned()),
        ("function", function.to_owned()),
    ]
}
