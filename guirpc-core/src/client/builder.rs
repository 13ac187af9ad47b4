//! Configuring and connecting a client.

use std::sync::Arc;
use std::time::Duration;

use super::transport::{Transport, amqp};
use super::{Client, Inner};
use crate::codec::Codec;
use crate::config::{BrokerSettings, Settings};
use crate::error::Error;
use crate::link::Brokers;
use crate::metrics::Metrics;
use crate::middleware::{
    self, ClientRequest, ClientResponse, ClientService, Layer, Layers, Service,
};
use crate::trace::ClientTraceLayer;
use crate::uri::validate_uri;

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
    broker: BrokerSettings,
    exchange: String,
    events_exchange: String,
    queue: String,
    timeout: Duration,
    codec: Codec,
    protocol: crate::protocol::v01::Protocol,
    retries: u32,
    max_message_size: usize,
    layers: Layers<ClientService>,
    metrics: Option<Metrics>,
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
            broker: settings.broker(),
            exchange: settings.exchange.clone(),
            events_exchange: settings.events_exchange.clone(),
            queue: settings.queue.clone(),
            timeout: settings.timeout,
            codec: settings.codec,
            protocol: settings.protocol,
            retries: settings.retries,
            max_message_size: settings.client_max_message_size,
            layers: Layers::default(),
            metrics: None,
        }
    }

    /// The broker URI, or the nodes of a cluster as a comma-separated list: the client
    /// connects to the first that answers, and to the next when its connection is lost.
    pub fn uri(mut self, uri: impl Into<String>) -> Self {
        self.broker.uri = uri.into();
        self
    }

    /// Every broker setting at once: the URI, shuffling, TLS and the heartbeat.
    pub fn broker(mut self, broker: BrokerSettings) -> Self {
        self.broker = broker;
        self
    }

    /// With several URIs: start at a random one, to spread many clients over the nodes.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.broker.shuffle = shuffle;
        self
    }

    /// For `amqps://`: this program's certificate and its private key (PEM files), to
    /// authenticate with when the URI names no user (`EXTERNAL`: its common name is the
    /// user).
    pub fn tls_client_certificate(
        mut self,
        cert_file: impl Into<String>,
        key_file: impl Into<String>,
    ) -> Self {
        self.broker.tls_cert_file = cert_file.into();
        self.broker.tls_key_file = key_file.into();
        self
    }

    /// For `amqps://`: a PEM file of the CA certificates to trust instead of the system's.
    pub fn tls_ca_file(mut self, path: impl Into<String>) -> Self {
        self.broker.tls_ca_file = path.into();
        self
    }

    /// The AMQP heartbeat (`broker.heartbeat`, 10 s by default): a connection that carries
    /// nothing for twice this long is taken for dead, its calls in flight failed as
    /// retriable, and replaced. Zero takes the broker's.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.broker.heartbeat = heartbeat;
        self
    }

    /// The exchange the services listen on: `""`, the default, is the broker's default
    /// exchange; a name makes the client declare that direct exchange.
    pub fn exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The topic exchange events are published to and subscribed from (`guirpc.events`
    /// by default).
    pub fn events_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.events_exchange = exchange.into();
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

    /// The largest encoded arguments (or event) the client sends (`client.max_message_size`,
    /// 16 MiB by default, RabbitMQ 4's limit): a call over it fails at once with
    /// [`Error::TooLarge`], sending nothing, instead of costing the channel every call in
    /// flight shares.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// Wraps every call in `layer`: it sees each call, may answer it on its own, and sees
    /// each outcome (see [`crate::middleware`]). Layers run in the order added, the first
    /// outermost, inside the built-in tracing and metrics layers.
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ClientService> + Send + Sync + 'static,
        L::Service: Service<ClientRequest, Response = ClientResponse, Error = Error>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<ClientRequest>>::Future: Send + 'static,
    {
        self.layers.push(middleware::client_wrap(layer));
        self
    }

    /// Records this client's calls into `metrics`: calls by function and outcome,
    /// round-trip latency, calls pending.
    pub fn metrics(mut self, metrics: &Metrics) -> Self {
        self.metrics = Some(metrics.clone());
        self
    }

    /// What the client's calls are written in: guirpc's protocol (the default), or the
    /// Python package guirpc 0.1's, to call its consumers (`Protocol::Guirpc01`; set
    /// [`exchange`](Self::exchange) to its gateway and [`queue`](Self::queue) to its
    /// routing key). Its calls travel in JSON.
    pub fn protocol(mut self, protocol: crate::protocol::v01::Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// Connects to the broker.
    pub async fn connect(mut self) -> Result<Client, Error> {
        validate_uri(&self.broker.uri).map_err(Error::Config)?;
        if self.protocol != crate::protocol::v01::Protocol::Guirpc {
            // The arguments are rewritten from JSON into guirpc 0.1's form.
            self.codec = Codec::Json;
        }
        let brokers = Brokers::new(&self.broker);
        let amqp = amqp::connect(
            brokers,
            &self.exchange,
            &self.events_exchange,
            self.protocol,
            self.metrics.clone(),
        )
        .await?;
        let innermost = ClientService::own(amqp.calls());
        Ok(self.build(innermost, Transport::Amqp(amqp)))
    }

    /// A client whose calls go through `innermost` (the broker, or the in-memory transport).
    pub(crate) fn build(self, innermost: ClientService, transport: Transport) -> Client {
        let mut service = self.layers.wrap(innermost);
        if let Some(metrics) = &self.metrics {
            service = ClientService::own(metrics.client_layer().layer(service));
        }
        let service = ClientService::own(ClientTraceLayer.layer(service));
        Client {
            inner: Arc::new(Inner { service, transport }),
            queue: self.queue.as_str().into(),
            timeout: self.timeout,
            codec: self.codec,
            retries: self.retries,
            max_message_size: self.max_message_size,
        }
    }
}
