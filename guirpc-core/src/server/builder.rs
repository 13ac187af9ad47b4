//! Configuring and starting a server.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use lapin::types::FieldTable;
use tokio::sync::{Semaphore, watch};

use super::pipeline::{self, Dispatcher};
use super::{AbortOnDrop, Health, ServeError, Server, Shared, instance_name, session};
use crate::config::{Delivery as DeliveryGuarantee, ServiceSettings};
use crate::link::Brokers;
use crate::metrics::Endpoint;
use crate::metrics::Metrics;
use crate::metrics::http;
use crate::middleware::{self, Layer, Layers, Reply, ServerRequest, ServerService, Service};
use crate::pipe::{PipeFunction, Pool};
use crate::registry::{Registry, Subscriber};
use crate::uri::{mask_uri, validate_uri};

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
    pub(super) settings: ServiceSettings,
    pub(super) registry: Option<Registry>,
    pub(super) queue_arguments: FieldTable,
    pub(super) layers: Layers<ServerService>,
    pub(super) metrics: Option<Metrics>,
    pub(super) subscribers: Option<Vec<&'static Subscriber>>,
    pub(super) pipes: Vec<PipeFunction>,
}

impl ServerBuilder {
    /// The broker URI, or the nodes of a cluster as a comma-separated list: the server
    /// connects to the first that answers, and to the next when its connection is lost.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.settings.broker.uri = uri.into();
        self
    }

    /// Every broker setting at once: the URI, shuffling, TLS and the heartbeat.
    pub fn broker(mut self, broker: crate::config::BrokerSettings) -> Self {
        self.settings.broker = broker;
        self
    }

    /// The exchange requests arrive through: `""`, the default, is the broker's default
    /// exchange; a name makes the server declare that direct exchange and bind its queue.
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.settings.exchange = exchange.into();
        self
    }

    /// A routing key the service queue is bound to its [`exchange`](Self::exchange) with,
    /// besides its own name: the `routing_key` guirpc 0.1 producers publish with.
    pub fn routing_key(mut self, key: impl Into<String>) -> Self {
        self.settings.routing_key = key.into();
        self
    }

    /// Whether the exchange is declared durable when it does not exist yet (`true`);
    /// `false` for a guirpc 0.1 gateway, which its consumers declare not durable.
    pub fn exchange_durable(mut self, durable: bool) -> Self {
        self.settings.exchange_durable = durable;
        self
    }

    /// The service queue: the name callers address.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.settings.queue = queue.into();
        self
    }

    /// With several URIs: start at a random one, to spread many servers over the nodes.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.settings.broker.shuffle = shuffle;
        self
    }

    /// The AMQP heartbeat (`broker.heartbeat`, 10 s by default): a connection that carries
    /// nothing for twice this long is taken for dead and replaced, and `/readyz` answers
    /// 503 meanwhile. Zero takes the broker's.
    pub fn heartbeat(mut self, heartbeat: std::time::Duration) -> Self {
        self.settings.broker.heartbeat = heartbeat;
        self
    }

    /// The type of the service queue: classic, or quorum (replicated on a cluster).
    pub fn queue_type(mut self, queue_type: crate::config::QueueType) -> Self {
        self.settings.queue_type = queue_type;
        self
    }

    /// Quorum queues: a request delivered this many times without being settled is
    /// dead-lettered (its function crashed the server each time).
    pub fn delivery_limit(mut self, limit: u32) -> Self {
        self.settings.delivery_limit = limit;
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

    /// How failed casts and events are run again, unless their function states its own
    /// (`#[rpc(retry(...))]`): the `[retry]` settings.
    pub fn retry(mut self, policy: crate::retry::RetryPolicy) -> Self {
        self.settings.retry = policy;
        self
    }

    /// Who may call a function, subscriber or built-in (`"*"`: all without a rule of their
    /// own), over what the code says: as an `[[allow]]` table of guirpc.toml.
    pub fn allow(mut self, function: impl Into<String>, access: crate::access::Access) -> Self {
        let function = function.into();
        self.settings
            .access
            .retain(|rule| rule.function != function);
        self.settings
            .access
            .push(crate::access::AccessRule { function, access });
        self
    }

    /// Whether failed casts and events are kept as dead letters in `<queue>.dead` (the
    /// default), or dropped (logged and counted).
    pub fn dead_letters(mut self, keep: bool) -> Self {
        self.settings.dead_letters = keep;
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

    /// Serves these `#[subscribe]` functions instead of every one in the program (none:
    /// `Vec::new()`).
    pub fn subscribers(mut self, subscribers: Vec<&'static Subscriber>) -> Self {
        self.subscribers = Some(subscribers);
        self
    }

    /// Serves these functions instead of every registered one.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Wraps every call in `layer`: it sees each request, may answer it on its own, and
    /// sees each reply (see [`crate::middleware`]). Layers run in the order added, the
    /// first outermost, inside the built-in tracing and metrics layers.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ServerService> + Send + Sync + 'static,
        L::Service: Service<ServerRequest, Response = Reply, Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<ServerRequest>>::Future: Send + 'static,
    {
        self.layers.push(middleware::server_wrap(layer));
        self
    }

    /// Records this server's calls into `metrics` (shared with the process's clients, say).
    /// A server with a [`metrics_addr`](Self::metrics_addr) and no registry makes its own.
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// Serves `/metrics`, `/healthz`, `/readyz` and a status page at `/` over HTTP on this
    /// address (`127.0.0.1:9464`, say; port 0 picks a free one, see
    /// [`Server::metrics_addr`]).
    pub fn metrics_addr(mut self, addr: impl Into<String>) -> Self {
        self.settings.metrics_addr = addr.into();
        self
    }

    /// The bearer token `/metrics` and the status page want (`service.metrics_token`);
    /// `/healthz` and `/readyz` stay open to probes.
    pub fn metrics_token(mut self, token: impl Into<String>) -> Self {
        self.settings.metrics_token = token.into();
        self
    }

    /// Connects (retrying with backoff while the broker is unreachable), declares the
    /// exchange, queue and binding, and starts consuming. Returns once requests are being
    /// served.
    pub async fn start(mut self) -> Result<Server, ServeError> {
        validate_uri(&self.settings.broker.uri).map_err(ServeError::Config)?;
        // Worker processes first: a command that cannot start is a configuration error.
        let mut pools = Vec::with_capacity(self.pipes.len());
        for pipe in std::mem::take(&mut self.pipes) {
            let pool = Pool::start(
                pipe,
                self.settings.max_message_size,
                self.settings.shutdown_grace,
            )
            .await
            .map_err(ServeError::Config)?;
            pools.push(pool);
        }
        let mut registry = match self.registry.take() {
            Some(registry) => registry,
            None => Registry::collect()?,
        };
        for pool in &pools {
            registry = registry.with(pool.function())?;
        }
        self.registry = Some(registry);
        crate::link::check_identity(&self.settings.broker).map_err(ServeError::Config)?;
        // Bound first: a taken port is a configuration error, found before connecting.
        let listener = match self.settings.metrics_addr.as_str() {
            "" => None,
            addr => Some(http::bind(addr).await.map_err(ServeError::Config)?),
        };
        let metrics_on = listener.is_some();
        let ServerBuilder {
            settings,
            queue_arguments,
            ..
        } = self.clone();
        let prepared = self.prepare(metrics_on)?;
        let shared = Arc::new(Shared {
            health: Health::default(),
            queue_arguments,
            masked_uri: mask_uri(&settings.broker.uri),
            brokers: Arc::new(Brokers::new(&settings.broker)),
            semaphore: Arc::new(Semaphore::new(settings.concurrency)),
            settings,
            dispatcher: prepared.dispatcher,
            service: prepared.service,
            metrics: prepared.metrics,
            redeliveries: Default::default(),
            reply_nodes: Default::default(),
            consumer_timeouts: Default::default(),
            dead_letters: Default::default(),
        });
        if let Some(metrics) = &shared.metrics {
            shared.probe_into(metrics);
        }
        let metrics_addr = listener.as_ref().and_then(|l| l.local_addr().ok());
        let listener = listener.map(|listener| {
            let endpoint = Endpoint {
                metrics: shared.metrics.clone().unwrap_or_default(),
                queue: shared.settings.queue.clone(),
                instance: shared.dispatcher.instance.clone(),
                started: shared.dispatcher.started,
                functions: shared
                    .dispatcher
                    .registry
                    .iter()
                    .map(|f| (f.name().to_owned(), f.summary().to_owned()))
                    .collect(),
                readiness: {
                    let shared = Arc::downgrade(&shared);
                    Box::new(move || match shared.upgrade() {
                        Some(shared) => shared.health.readiness(),
                        None => http::Readiness::Draining,
                    })
                },
                dead_letters: shared
                    .settings
                    .dead_letter_target()
                    .map(|_| shared.dead_letters.clone()),
                dead_letter_queue: shared.settings.dead_letter_queue(),
                token: Some(shared.settings.metrics_token.clone()).filter(|t| !t.is_empty()),
                description: {
                    let shared = Arc::downgrade(&shared);
                    Box::new(move || {
                        shared
                            .upgrade()
                            .map(|shared| pipeline::description(&shared.dispatcher).clone())
                    })
                },
            };
            AbortOnDrop(http::spawn(listener, Arc::new(endpoint)))
        });
        let session = session::Session::open_with_retry(&shared).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let served = session::supervise(shared.clone(), session, stop_rx);
        let task = tokio::spawn(async move {
            let result = served.await;
            // No call runs any more: the workers' input closes, and they end.
            for pool in pools {
                pool.shutdown().await;
            }
            result
        });
        Ok(Server {
            shared,
            stop: stop_tx,
            task,
            listener,
            metrics_addr,
        })
    }

    /// Serves a function through worker processes that read JSON lines on their standard
    /// input and answer on their standard output (see [`crate::pipe`]); the workers start
    /// with the server and stop with it.
    pub fn pipe(mut self, pipe: PipeFunction) -> Self {
        self.pipes.push(pipe);
        self
    }

    /// What this server would answer to `guirpc.describe` (its functions with their
    /// schemas, its subscribers, its exchanges), made without a broker and without
    /// starting pipe workers: `guirpc asyncapi` in a service's own binary.
    #[allow(clippy::result_large_err)]
    pub fn description(&self) -> Result<crate::protocol::Description, ServeError> {
        let mut registry = match &self.registry {
            Some(registry) => registry.clone(),
            None => Registry::collect()?,
        };
        for pipe in &self.pipes {
            let name = pipe.name.clone();
            let refuse = Arc::new(move |invocation: crate::registry::Invocation| {
                let reply = Reply::error(
                    invocation.codec,
                    crate::ErrorCode::Internal,
                    &format!("`{name}` is described here, not served"),
                );
                Box::pin(std::future::ready(reply)) as crate::registry::HandlerFuture
            });
            registry = registry.with(crate::pipe::function_of(pipe, refuse))?;
        }
        let mut builder = self.clone();
        builder.registry = Some(registry);
        let prepared = builder.prepare(false)?;
        Ok(pipeline::describe(&prepared.dispatcher))
    }

    /// The queue and the pipeline of a server serving in memory
    /// ([`ServerBuilder::in_memory`], in [`crate::testing`]).
    #[allow(clippy::result_large_err)]
    pub(crate) fn in_memory_parts(self) -> Result<(Arc<str>, ServerService), ServeError> {
        let prepared = self.prepare(false)?;
        Ok((prepared.dispatcher.queue.clone(), prepared.service))
    }

    /// The dispatcher and the pipeline around it; metrics made when `metrics_on` and no
    /// registry was given.
    #[allow(clippy::result_large_err)]
    fn prepare(self, metrics_on: bool) -> Result<Prepared, ServeError> {
        let settings = self.settings;
        if settings.concurrency == 0 {
            return Err(ServeError::Config("concurrency must be at least 1".into()));
        }
        if settings.delivery_limit > 0 && settings.queue_type != crate::config::QueueType::Quorum {
            return Err(ServeError::Config(
                "service.delivery_limit needs service.queue_type = \"quorum\": classic queues count no deliveries".into(),
            ));
        }
        let registry = match self.registry {
            Some(registry) => registry,
            None => Registry::collect()?,
        };
        let subscribers = self.subscribers.unwrap_or_else(Subscriber::all);
        for pair in subscribers.windows(2) {
            if pair[0].name() == pair[1].name() {
                return Err(ServeError::Config(format!(
                    "two #[subscribe] functions are named `{}`: {} and {}; rename one with #[subscribe(\"...\", name = \"...\")]",
                    pair[0].name(),
                    pair[0].location(),
                    pair[1].location()
                )));
            }
        }
        let metrics = match self.metrics {
            None if metrics_on => Some(Metrics::new()),
            metrics => metrics,
        };
        let builtins = [
            crate::protocol::FUNCTION_DESCRIBE,
            crate::protocol::FUNCTION_PING,
        ];
        let permissions = crate::access::Permissions::resolve(
            &settings.access,
            registry
                .iter()
                .map(|f| (f.name(), f.access()))
                .chain(subscribers.iter().map(|s| (s.name(), s.access())))
                .chain(builtins.map(|name| (name, None))),
        );
        let dispatcher = Arc::new(Dispatcher {
            queue: settings.queue.as_str().into(),
            registry,
            max_message_size: settings.max_message_size,
            max_run: settings.max_run,
            concurrency: settings.concurrency,
            instance: instance_name(),
            started: std::time::Instant::now(),
            in_flight: AtomicUsize::new(0),
            permissions,
            subscribers,
            retry: settings.retry,
            exchange: settings.exchange.clone(),
            events_exchange: settings.events_exchange.clone(),
            description: Default::default(),
        });
        let dead_letter = settings.rejects_to_exchange();
        let service = pipeline::build(
            dispatcher.clone(),
            &self.layers,
            metrics.as_ref(),
            dead_letter,
        );
        Ok(Prepared {
            dispatcher,
            service,
            metrics,
        })
    }
}

struct Prepared {
    dispatcher: Arc<Dispatcher>,
    service: ServerService,
    metrics: Option<Metrics>,
}
