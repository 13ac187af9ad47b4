//! Settings and where they come from. One table, [`KEYS`], lists every setting with its
//! file key, environment variables and meaning; a value is read from, in rising order of
//! precedence, the defaults, `guirpc.toml`, the environment and command-line flags, and
//! [`Settings`] remembers which of them each value came from.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::codec::Codec;

mod load;
pub(crate) mod pipes;
mod service;
#[cfg(test)]
mod tests;

pub use crate::duration::{format_duration, format_utc, parse_duration, parse_utc};
pub use crate::link::BrokerSettings;
pub use crate::uri::{mask_uri, uris, validate_uri};
pub use load::{ConfigError, LoadOptions};
pub use service::ServiceSettings;

/// The broker used when nothing else is configured.
pub const DEFAULT_URI: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// The configuration file looked for in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "guirpc.toml";
/// The environment variable naming a configuration file.
pub const CONFIG_ENV: &str = "GUIRPC_CONFIG";

/// When a server acknowledges a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// After its reply is published: a server that dies mid-call leaves the request to be
    /// redelivered, so a function may run twice for one call.
    #[default]
    AtLeastOnce,
    /// On receipt, before running it: a server that dies mid-call loses the call.
    AtMostOnce,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Lines for a person.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Source {
    /// The built-in default.
    #[default]
    Default,
    /// A configuration file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag => f.write_str("flag"),
        }
    }
}

/// A value a setting can hold: parsed from text (a file, a variable, a flag) and shown.
trait Value: Sized {
    fn parse(text: &str) -> Result<Self, String>;
    fn show(&self) -> String;
}

impl Value for String {
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
    fn show(&self) -> String {
        self.clone()
    }
}

macro_rules! number_value {
    ($($ty:ty),*) => {$(
        impl Value for $ty {
            fn parse(text: &str) -> Result<Self, String> {
                text.trim()
                    .parse()
                    .map_err(|_| format!("expected a whole number from {} to {}, got `{text}`", <$ty>::MIN, <$ty>::MAX))
            }
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
number_value!(u16, u32, usize);

impl Value for f64 {
    fn parse(text: &str) -> Result<Self, String> {
        text.trim()
            .parse()
            .ok()
            .filter(|n: &f64| n.is_finite() && *n >= 0.0)
            .ok_or_else(|| format!("expected a number of zero or more, got `{text}`"))
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// A backoff range, `1s..5m`.
impl Value for (Duration, Duration) {
    fn parse(text: &str) -> Result<Self, String> {
        crate::retry::parse_range(text)
    }
    fn show(&self) -> String {
        format!("{}..{}", format_duration(self.0), format_duration(self.1))
    }
}

impl Value for crate::retry::RetryOn {
    fn parse(text: &str) -> Result<Self, String> {
        crate::retry::RetryOn::parse(text)
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for bool {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "yes" | "1" => Ok(true),
            "false" | "no" | "0" => Ok(false),
            other => Err(format!("expected `true` or `false`, got `{other}`")),
        }
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

/// The type of the service queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueType {
    /// A classic queue: one node holds it (the broker's default).
    #[default]
    Classic,
    /// A quorum queue: replicated on a majority of a cluster's nodes (Raft), so that it
    /// survives the loss of a node; takes `service.delivery_limit`.
    Quorum,
}

impl Value for QueueType {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(format!("expected `classic` or `quorum`, got `{other}`")),
        }
    }
    fn show(&self) -> String {
        match self {
            QueueType::Classic => "classic".into(),
            QueueType::Quorum => "quorum".into(),
        }
    }
}

impl Value for Duration {
    fn parse(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }
    fn show(&self) -> String {
        format_duration(*self)
    }
}

impl Value for crate::protocol::v01::Protocol {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for Codec {
    fn parse(text: &str) -> Result<Self, String> {
        text.parse()
    }
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Value for Delivery {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "at-least-once" => Ok(Delivery::AtLeastOnce),
            "at-most-once" => Ok(Delivery::AtMostOnce),
            other => Err(format!(
                "expected `at-least-once` or `at-most-once`, got `{other}`"
            )),
        }
    }
    fn show(&self) -> String {
        match self {
            Delivery::AtLeastOnce => "at-least-once".into(),
            Delivery::AtMostOnce => "at-most-once".into(),
        }
    }
}

impl Value for LogFormat {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("expected `text` or `json`, got `{other}`")),
        }
    }
    fn show(&self) -> String {
        match self {
            LogFormat::Text => "text".into(),
            LogFormat::Json => "json".into(),
        }
    }
}

/// The longest a function's run may take, unless configured otherwise: half RabbitMQ's
/// default `consumer_timeout`, so that a request waiting for its turn and then running
/// its longest is still acknowledged in time on a broker that cannot be told otherwise.
pub const DEFAULT_MAX_RUN: Duration = Duration::from_secs(15 * 60);

/// The largest message body sent or taken, unless configured otherwise: RabbitMQ 4's
/// `max_message_size` (3.x allowed 128 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// One setting: where it lives in the file, which variables set it, what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The file section, `broker` for `[broker]`.
    pub section: &'static str,
    /// The key within its section.
    pub name: &'static str,
    /// Environment variables that set it, strongest first.
    pub env: &'static [&'static str],
    /// What it means.
    pub doc: &'static str,
}

impl Key {
    /// `section.name`, the setting's full name.
    pub fn path(&self) -> String {
        format!("{}.{}", self.section, self.name)
    }
}

macro_rules! settings {
    ($($field:ident: $ty:ty = $default:expr, [$section:literal . $name:literal], env [$($env:literal),*], $doc:literal;)*) => {
        /// Every setting, as loaded by [`Settings::load`].
        #[derive(Debug, Clone, PartialEq)]
        #[non_exhaustive]
        pub struct Settings {
            $(#[doc = $doc] pub $field: $ty,)*
            /// The functions served through worker processes: the `[[pipe]]` tables.
            pub pipes: Vec<pipes::PipeFunction>,
            /// Who may call what: the `[[allow]]` tables ([`crate::access`]).
            pub access: Vec<crate::access::AccessRule>,
            sources: Vec<Source>,
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $($field: $default,)*
                    pipes: Vec::new(),
                    access: Vec::new(),
                    sources: vec![Source::Default; KEYS.len()],
                }
            }
        }

        /// Every setting, in file order.
        pub const KEYS: &[Key] = &[$(Key { section: $section, name: $name, env: &[$($env),*], doc: $doc },)*];

        impl Settings {
            fn set_index(&mut self, index: usize, text: &str) -> Result<(), String> {
                let mut i = 0;
                $(
                    if i == index {
                        self.$field = <$ty as Value>::parse(text)?;
                        return Ok(());
                    }
                    i += 1;
                )*
                let _ = i;
                unreachable!("setting index {index} out of range")
            }

            fn show_index(&self, index: usize) -> String {
                let mut i = 0;
                $(
                    if i == index {
                        return Value::show(&self.$field);
                    }
                    i += 1;
                )*
                let _ = i;
                unreachable!("setting index {index} out of range")
            }
        }
    };
}

settings! {
    uri: String = DEFAULT_URI.to_owned(), ["broker"."uri"], env ["GUIRPC_URI", "AMQP_URI"],
        "The broker to connect to, `amqp://user:password@host:port/vhost` (`amqps://` with the `tls` feature); several nodes of a cluster as a comma-separated list (a list in the file): the first that answers, the next when its connection is lost.";
    shuffle: bool = false, ["broker"."shuffle"], env ["GUIRPC_SHUFFLE"],
        "With several URIs: start at a random one instead of the first, to spread the connections of many processes over the nodes.";
    exchange: String = crate::protocol::DEFAULT_EXCHANGE.to_owned(), ["broker"."exchange"], env ["GUIRPC_EXCHANGE"],
        "The direct exchange requests are published to; \"\" (the default) is the broker's default exchange, which routes by queue name with no declaration or binding. Declared durable unless it exists (a guirpc 0.1 `rpc_gateway` is used as it is).";
    exchange_durable: bool = true, ["broker"."exchange_durable"], env ["GUIRPC_EXCHANGE_DURABLE"],
        "Whether a server declares `exchange` durable when it does not exist yet; `false` for a guirpc 0.1 gateway (`rpc_gateway`), which its consumers declare not durable and cannot share with a durable one.";
    routing_key: String = String::new(), ["broker"."routing_key"], env ["GUIRPC_ROUTING_KEY"],
        "With `exchange` set: a routing key the service queue is bound with besides its own name, such as the `routing_key` guirpc 0.1 producers publish with.";
    tls_ca_file: String = String::new(), ["broker"."tls_ca_file"], env ["GUIRPC_TLS_CA_FILE"],
        "For `amqps://`: a PEM file of the CA certificates to trust instead of the system's.";
    tls_cert_file: String = String::new(), ["broker"."tls_cert_file"], env ["GUIRPC_TLS_CERT_FILE"],
        "For `amqps://`: a PEM file of this program's certificate. With a URI that names no user (`amqps://host:5671/%2f`) it authenticates by it (the broker's `EXTERNAL` mechanism, plugin `rabbitmq_auth_mechanism_ssl`, with `ssl_cert_login_from = common_name`): its common name is the user.";
    tls_key_file: String = String::new(), ["broker"."tls_key_file"], env ["GUIRPC_TLS_KEY_FILE"],
        "The PEM file of `tls_cert_file`'s private key (PKCS#8, `BEGIN PRIVATE KEY`).";
    heartbeat: Duration = crate::link::DEFAULT_HEARTBEAT, ["broker"."heartbeat"], env ["GUIRPC_HEARTBEAT"],
        "The AMQP heartbeat, in whole seconds: a connection that carries nothing for twice this long (a firewall or NAT dropped it without a word) is taken for dead and replaced, its calls failed as retriable; `0s` takes the broker's (60 s on RabbitMQ: two minutes to notice).";
    queue: String = crate::protocol::DEFAULT_QUEUE.to_owned(), ["service"."queue"], env ["GUIRPC_QUEUE"],
        "The service's request queue: the name callers address.";
    prefetch: u16 = 128, ["service"."prefetch"], env ["GUIRPC_PREFETCH"],
        "How many unacknowledged requests the broker sends a server ahead.";
    concurrency: usize = 64, ["service"."concurrency"], env ["GUIRPC_CONCURRENCY"],
        "How many calls a server runs at once.";
    delivery: Delivery = Delivery::AtLeastOnce, ["service"."delivery"], env ["GUIRPC_DELIVERY"],
        "`at-least-once` (acknowledge after the reply) or `at-most-once` (acknowledge on receipt).";
    shutdown_grace: Duration = Duration::from_secs(30), ["service"."shutdown_grace"], env ["GUIRPC_SHUTDOWN_GRACE"],
        "How long a stopping server waits for running calls.";
    max_run: Duration = DEFAULT_MAX_RUN, ["service"."max_run"], env ["GUIRPC_MAX_RUN"],
        "The longest a function's run may take, unless the function states its own (`#[rpc(max_run = \"...\")]`): past it the run is cancelled and its caller answered `max_run_exceeded`. Keep it below the broker's `consumer_timeout` (30 min by default) on RabbitMQ 3.10 and 3.11; from 3.12 the server declares its queue with a consumer timeout to match (docs/RELIABILITY.md).";
    max_message_size: usize = DEFAULT_MAX_MESSAGE_SIZE, ["service"."max_message_size"], env ["GUIRPC_MAX_MESSAGE_SIZE"],
        "The largest request body, in bytes, a server decodes; a larger one is answered `too_large`.";
    max_reply_size: usize = DEFAULT_MAX_MESSAGE_SIZE, ["service"."max_reply_size"], env ["GUIRPC_MAX_REPLY_SIZE"],
        "The largest reply body, in bytes, a server sends; a result that would make a larger one is answered `too_large` instead. The default is RabbitMQ 4's `max_message_size`: the broker closes the channel of a larger message, and every request in flight on the consuming channel with it.";
    queue_type: QueueType = QueueType::Classic, ["service"."queue_type"], env ["GUIRPC_QUEUE_TYPE"],
        "`classic`, or `quorum` (replicated on a cluster's nodes: survives the loss of one; needs a cluster to be worth it).";
    delivery_limit: u32 = 0, ["service"."delivery_limit"], env ["GUIRPC_DELIVERY_LIMIT"],
        "Quorum queues: a request delivered this many times without being settled (its server crashed each time) is dead-lettered; 0 for the broker's default.";
    dead_letters: bool = true, ["service"."dead_letters"], env ["GUIRPC_DEAD_LETTERS"],
        "Whether casts and events that failed their last attempt (or cannot run: unknown function, bad arguments) are kept as dead letters in the queue `<queue>.dead`, which the server declares, with why in their headers (`guirpc dead` lists, shows, retries and purges them); `false` drops them, logged and counted.";
    dead_letter_exchange: String = String::new(), ["service"."dead_letter_exchange"], env ["GUIRPC_DEAD_LETTER_EXCHANGE"],
        "If set, the service queue is declared with this dead-letter exchange: the requests a server rejects (no function header, unsupported content type, unknown function, too large, panicked) after answering them go there, and so do the dead letters of casts and events (routing key: the queue's name) in place of `<queue>.dead`.";
    metrics_addr: String = String::new(), ["service"."metrics_addr"], env ["GUIRPC_METRICS_ADDR"],
        "If set, `host:port` where a server serves `/metrics` (Prometheus), `/healthz`, `/readyz` and a status page at `/` over HTTP; a bare port (`9464`) listens on loopback only (`0.0.0.0:9464` for every interface).";
    metrics_token: String = String::new(), ["service"."metrics_token"], env ["GUIRPC_METRICS_TOKEN"],
        "If set, `/metrics` and the status page answer only requests with `Authorization: Bearer <token>` (or `?token=<token>`, for a browser); `/healthz` and `/readyz` stay open to probes.";
    otlp_endpoint: String = String::new(), ["service"."otlp_endpoint"], env ["GUIRPC_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
        "If set (and built with the `otel` feature), the OTLP/HTTP collector `guirpc serve` sends spans to, `http://host:4318`.";
    events_exchange: String = crate::protocol::DEFAULT_EVENTS_EXCHANGE.to_owned(), ["events"."exchange"], env ["GUIRPC_EVENTS_EXCHANGE"],
        "The topic exchange events are published to and subscribed from.";
    retry_attempts: u32 = 3, ["retry"."attempts"], env ["GUIRPC_RETRY_ATTEMPTS"],
        "How many times in all a cast or an event is run when its runs fail (the first included; 1 for no retries), unless its function states its own (`#[rpc(retry(...))]`, `#[subscribe(..., retry(...))]`). Calls with a reply are never retried by the server: their caller has a deadline and its own `client.retries`.";
    retry_backoff: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(60)), ["retry"."backoff"], env ["GUIRPC_RETRY_BACKOFF"],
        "The delay before the first retry and the longest delay, `first..largest`: each retry waits `factor` times the one before, in the broker (the delay ladder), not in the server.";
    retry_factor: f64 = 2.0, ["retry"."factor"], env ["GUIRPC_RETRY_FACTOR"],
        "How much each retry's delay grows over the one before.";
    retry_jitter: f64 = 0.2, ["retry"."jitter"], env ["GUIRPC_RETRY_JITTER"],
        "The fraction, 0 to 1, by which each delay is shortened at random, so that casts failing together do not all come back at once.";
    retry_on: crate::retry::RetryOn = crate::retry::RetryOn::DEFAULT, ["retry"."on"], env ["GUIRPC_RETRY_ON"],
        "The outcomes retried, from `handler_error`, `internal` (a panic, or a pipe worker that died) and `max_run_exceeded`; never `bad_request`, `not_found` or `too_large`.";
    timeout: Duration = Duration::from_secs(30), ["client"."timeout"], env ["GUIRPC_TIMEOUT"],
        "How long a call waits for its reply.";
    codec: Codec = Codec::MsgPack, ["client"."codec"], env ["GUIRPC_CODEC"],
        "How a client encodes arguments: `msgpack` or `json`.";
    protocol: crate::protocol::v01::Protocol = crate::protocol::v01::Protocol::Guirpc, ["client"."protocol"], env ["GUIRPC_PROTOCOL"],
        "What a client's calls are written in: `guirpc`, or, to call the consumers of the Python package guirpc 0.1, `guirpc-0.1` (its JsonSerializer) or `guirpc-0.1-text` (its TextSerializer), with `broker.exchange` its gateway and `service.queue` its routing key.";
    client_max_message_size: usize = DEFAULT_MAX_MESSAGE_SIZE, ["client"."max_message_size"], env ["GUIRPC_CLIENT_MAX_MESSAGE_SIZE"],
        "The largest message body, in bytes, a client sends (calls, casts, events): a larger one fails at once, before it is sent. The default is RabbitMQ 4's `max_message_size`; a broker closes the channel of a larger message, and every call in flight on it fails.";
    retries: u32 = 0, ["client"."retries"], env ["GUIRPC_RETRIES"],
        "How often a client re-sends a call to an idempotent function after a lost connection or a timeout.";
    log_level: String = "info".to_owned(), ["log"."level"], env ["GUIRPC_LOG"],
        "`error`, `warn`, `info`, `debug` or `trace`.";
    log_format: LogFormat = LogFormat::Text, ["log"."format"], env ["GUIRPC_LOG_FORMAT"],
        "`text` or `json`.";
}
