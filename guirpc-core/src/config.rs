//! Settings and where they come from. One table, [`KEYS`], lists every setting with its
//! file key, environment variables and meaning; a value is read from, in rising order of
//! precedence, the defaults, `guirpc.toml`, the environment and command-line flags, and
//! [`Settings`] remembers which of them each value came from.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::codec::Codec;

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
            pub pipes: Vec<crate::pipe::PipeFunction>,
            sources: Vec<Source>,
        }

        impl Default for Settings {
            fn default() -> Self {
                Settings {
                    $($field: $default,)*
                    pipes: Vec::new(),
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
        "The direct exchange requests are published to; \"\" (the default) is the broker's default exchange, which routes by queue name with no declaration or binding.";
    tls_ca_file: String = String::new(), ["broker"."tls_ca_file"], env ["GUIRPC_TLS_CA_FILE"],
        "For `amqps://`: a PEM file of the CA certificates to trust instead of the system's.";
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
    dead_letter_exchange: String = String::new(), ["service"."dead_letter_exchange"], env ["GUIRPC_DEAD_LETTER_EXCHANGE"],
        "If set, the queue dead-letters to this exchange the requests a server rejects (no function header, unsupported content type, unknown function, too large, panicked) after answering them, and casts that failed.";
    metrics_addr: String = String::new(), ["service"."metrics_addr"], env ["GUIRPC_METRICS_ADDR"],
        "If set, `host:port` where a server serves `/metrics` (Prometheus), `/healthz`, `/readyz` and a status page at `/` over HTTP.";
    otlp_endpoint: String = String::new(), ["service"."otlp_endpoint"], env ["GUIRPC_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"],
        "If set (and built with the `otel` feature), the OTLP/HTTP collector `guirpc serve` sends spans to, `http://host:4318`.";
    events_exchange: String = crate::protocol::DEFAULT_EVENTS_EXCHANGE.to_owned(), ["events"."exchange"], env ["GUIRPC_EVENTS_EXCHANGE"],
        "The topic exchange events are published to and subscribed from.";
    event_retries: u32 = 2, ["events"."retries"], env ["GUIRPC_EVENT_RETRIES"],
        "How many more times a server runs an event whose `#[subscribe]` handler failed or panicked, before dead-lettering it.";
    timeout: Duration = Duration::from_secs(30), ["client"."timeout"], env ["GUIRPC_TIMEOUT"],
        "How long a call waits for its reply.";
    codec: Codec = Codec::MsgPack, ["client"."codec"], env ["GUIRPC_CODEC"],
        "How a client encodes arguments: `msgpack` or `json`.";
    client_max_message_size: usize = DEFAULT_MAX_MESSAGE_SIZE, ["client"."max_message_size"], env ["GUIRPC_CLIENT_MAX_MESSAGE_SIZE"],
        "The largest message body, in bytes, a client sends (calls, casts, events): a larger one fails at once, before it is sent. The default is RabbitMQ 4's `max_message_size`; a broker closes the channel of a larger message, and every call in flight on it fails.";
    retries: u32 = 0, ["client"."retries"], env ["GUIRPC_RETRIES"],
        "How often a client re-sends a call to an idempotent function after a lost connection or a timeout.";
    log_level: String = "info".to_owned(), ["log"."level"], env ["GUIRPC_LOG"],
        "`error`, `warn`, `info`, `debug` or `trace`.";
    log_format: LogFormat = LogFormat::Text, ["log"."format"], env ["GUIRPC_LOG_FORMAT"],
        "`text` or `json`.";
}

/// The `[[pipe]]` tables: one per function served through worker processes. Their
/// commands run in the file's directory, or in `dir` relative to it.
fn read_pipes(
    value: &toml::Value,
    base: Option<&Path>,
) -> Result<Vec<crate::pipe::PipeFunction>, String> {
    let toml::Value::Array(tables) = value else {
        return Err("`pipe` must be tables: write [[pipe]] above each pipe function".into());
    };
    let mut pipes: Vec<crate::pipe::PipeFunction> = Vec::with_capacity(tables.len());
    for (index, table) in tables.iter().enumerate() {
        let pipe: crate::pipe::PipeFunction =
            table.clone().try_into().map_err(|err: toml::de::Error| {
                format!("[[pipe]] number {}: {}", index + 1, err.message().trim())
            })?;
        let mut pipe = pipe;
        if let Some(base) = base.filter(|base| !base.as_os_str().is_empty()) {
            pipe.dir = Some(match pipe.dir.take() {
                Some(dir) => base.join(dir),
                None => base.to_owned(),
            });
        }
        pipe.check()?;
        if pipes.iter().any(|p| p.name == pipe.name) {
            return Err(format!("two [[pipe]] tables are named `{}`", pipe.name));
        }
        pipes.push(pipe);
    }
    Ok(pipes)
}

/// A configuration that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

/// What [`Settings::load`] reads besides the environment.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// A configuration file that must exist. Without one, `$GUIRPC_CONFIG`, then
    /// `./guirpc.toml` if there is one.
    pub file: Option<PathBuf>,
    /// `(setting, value)` pairs from command-line flags, by full name (`service.queue`).
    pub flags: Vec<(&'static str, String)>,
    /// `(setting, value)` pairs replacing the built-in defaults: a program's own defaults,
    /// which the file, the environment and flags still override.
    pub defaults: Vec<(&'static str, String)>,
}

impl Settings {
    /// Loads the settings: defaults, then the file, then the environment, then `flags`.
    ///
    /// ```
    /// use guirpc_core::config::{LoadOptions, Settings, Source};
    ///
    /// let settings = Settings::load(LoadOptions {
    ///     flags: vec![("service.queue", "calculator".into())],
    ///     ..Default::default()
    /// })
    /// .unwrap();
    /// assert_eq!(settings.queue, "calculator");
    /// assert_eq!(settings.source("service.queue"), Some(&Source::Flag));
    /// ```
    pub fn load(options: LoadOptions) -> Result<Settings, ConfigError> {
        Settings::load_with_env(options, |var| std::env::var(var).ok())
    }

    /// The built-in defaults, with some replaced by a program's own.
    pub fn with_defaults(defaults: &[(&'static str, String)]) -> Result<Settings, ConfigError> {
        let mut settings = Settings::default();
        for (path, value) in defaults {
            let index =
                index_of(path).ok_or_else(|| ConfigError(format!("unknown setting `{path}`")))?;
            settings
                .set_index(index, value)
                .map_err(|err| ConfigError(format!("default of `{path}`: {err}")))?;
        }
        Ok(settings)
    }

    /// [`Settings::load`] with the environment given as a function (for tests).
    pub fn load_with_env(
        options: LoadOptions,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let mut settings = Settings::with_defaults(&options.defaults)?;
        let file = match options.file {
            Some(path) => Some(path),
            None => match env(CONFIG_ENV) {
                Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
                _ => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.exists()),
            },
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|err| {
                ConfigError(format!("cannot read config file {}: {err}", path.display()))
            })?;
            settings.apply_file(&path, &text)?;
        }
        for (index, key) in KEYS.iter().enumerate() {
            // The first variable listed wins: GUIRPC_URI over AMQP_URI.
            if let Some((var, value)) = key.env.iter().find_map(|var| env(var).map(|v| (*var, v))) {
                settings
                    .set_index(index, &value)
                    .map_err(|err| ConfigError(format!("environment variable {var}: {err}")))?;
                settings.sources[index] = Source::Env(var);
            }
        }
        for (path, value) in &options.flags {
            let index =
                index_of(path).ok_or_else(|| ConfigError(format!("unknown setting `{path}`")))?;
            settings.set_index(index, value).map_err(|err| {
                ConfigError(format!("--{}: {err}", KEYS[index].name.replace('_', "-")))
            })?;
            settings.sources[index] = Source::Flag;
        }
        validate_uri(&settings.uri).map_err(ConfigError)?;
        Ok(settings)
    }

    /// Reads a TOML configuration file's text over these settings.
    fn apply_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let at = |line: Option<usize>, message: String| match line {
            Some(line) => ConfigError(format!("{}:{line}: {message}", path.display())),
            None => ConfigError(format!("{}: {message}", path.display())),
        };
        let table: toml::Table = toml::from_str(text).map_err(|err| {
            let line = err.span().map(|span| line_of(text, span.start));
            at(line, err.message().trim().to_owned())
        })?;
        for (section, entries) in &table {
            if section == "pipe" {
                self.pipes = read_pipes(entries, path.parent())
                    .map_err(|err| at(find_line(text, None, "[pipe]"), err))?;
                continue;
            }
            let Some(entries) = entries.as_table() else {
                return Err(at(
                    find_line(text, None, section),
                    format!("`{section}` must be a section such as [broker] or [service]"),
                ));
            };
            for (name, value) in entries {
                let line = find_line(text, Some(section), name);
                let Some(index) = KEYS
                    .iter()
                    .position(|k| k.section == section && k.name == name)
                else {
                    let known: Vec<String> = KEYS.iter().map(Key::path).collect();
                    return Err(at(
                        line,
                        format!(
                            "unknown key `{section}.{name}` (known keys: {})",
                            known.join(", ")
                        ),
                    ));
                };
                let text_value = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    // A list of URIs: the nodes of a cluster.
                    toml::Value::Array(items)
                        if section == "broker"
                            && name == "uri"
                            && items.iter().all(toml::Value::is_str) =>
                    {
                        items
                            .iter()
                            .filter_map(toml::Value::as_str)
                            .collect::<Vec<_>>()
                            .join(",")
                    }
                    other => {
                        return Err(at(
                            line,
                            format!("key `{section}.{name}`: unexpected {}", other.type_str()),
                        ));
                    }
                };
                self.set_index(index, &text_value)
                    .map_err(|err| at(line, format!("key `{section}.{name}`: {err}")))?;
                self.sources[index] = Source::File(path.to_owned());
            }
        }
        Ok(())
    }

    /// Where a setting (`service.queue`) came from.
    pub fn source(&self, path: &str) -> Option<&Source> {
        index_of(path).map(|i| &self.sources[i])
    }

    /// Every setting with its value as text (the URI's password masked) and its source.
    pub fn entries(&self) -> impl Iterator<Item = (&'static Key, String, &Source)> + '_ {
        KEYS.iter().enumerate().map(|(i, key)| {
            let value = self.show_index(i);
            let value = if key.name == "uri" {
                mask_uri(&value)
            } else {
                value
            };
            (key, value, &self.sources[i])
        })
    }

    /// These settings as a commented `guirpc.toml`, every key present.
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# guirpc configuration. Environment variables override this file; flags override both.\n",
        );
        let mut section = "";
        for (index, key) in KEYS.iter().enumerate() {
            if key.section != section {
                section = key.section;
                out.push_str(&format!("\n[{section}]\n"));
            }
            let value = self.show_index(index);
            let value = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                value
            } else {
                format!("{value:?}")
            };
            out.push_str(&format!(
                "# {} (env: {})\n{} = {value}\n",
                key.doc,
                key.env.join(", "),
                key.name
            ));
        }
        out
    }

    /// The URI with its password masked, for showing.
    pub fn masked_uri(&self) -> String {
        mask_uri(&self.uri)
    }

    /// The server settings.
    pub fn service(&self) -> ServiceSettings {
        ServiceSettings {
            uri: self.uri.clone(),
            shuffle: self.shuffle,
            tls_ca_file: self.tls_ca_file.clone(),
            heartbeat: self.heartbeat,
            exchange: self.exchange.clone(),
            queue: self.queue.clone(),
            queue_type: self.queue_type,
            delivery_limit: self.delivery_limit,
            prefetch: self.prefetch,
            concurrency: self.concurrency,
            delivery: self.delivery,
            shutdown_grace: self.shutdown_grace,
            max_message_size: self.max_message_size,
            max_run: self.max_run,
            max_reply_size: self.max_reply_size,
            dead_letter_exchange: self.dead_letter_exchange.clone(),
            metrics_addr: self.metrics_addr.clone(),
            events_exchange: self.events_exchange.clone(),
            event_retries: self.event_retries,
        }
    }
}

fn index_of(path: &str) -> Option<usize> {
    let (section, name) = path.split_once('.')?;
    KEYS.iter()
        .position(|k| k.section == section && k.name == name)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The line where `name` is set in `[section]` (or at the top level).
fn find_line(text: &str, section: Option<&str>, name: &str) -> Option<usize> {
    let mut current: Option<&str> = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            if section.is_none() && header.trim() == name {
                return Some(i + 1);
            }
            current = Some(header.trim());
            continue;
        }
        let key = line
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .trim_matches('"');
        if current == section && key == name && line.contains('=') {
            return Some(i + 1);
        }
    }
    None
}

/// What a server needs to know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServiceSettings {
    /// The broker URI, or several nodes' comma-separated.
    pub uri: String,
    /// With several URIs: start at a random one.
    pub shuffle: bool,
    /// For `amqps://`: the CA certificates to trust (PEM file); empty for the system's.
    pub tls_ca_file: String,
    /// The AMQP heartbeat: a silent connection is noticed within twice this.
    pub heartbeat: Duration,
    /// The exchange requests arrive through.
    pub exchange: String,
    /// The request queue.
    pub queue: String,
    /// Unacknowledged requests the broker sends ahead.
    pub prefetch: u16,
    /// Calls run at once.
    pub concurrency: usize,
    /// When requests are acknowledged.
    pub delivery: Delivery,
    /// How long a shutdown waits for running calls.
    pub shutdown_grace: Duration,
    /// The largest request body decoded.
    pub max_message_size: usize,
    /// The largest reply body sent.
    pub max_reply_size: usize,
    /// The longest run of a function that states none.
    pub max_run: Duration,
    /// The type of the service queue.
    pub queue_type: QueueType,
    /// Quorum queues: deliveries after which an unsettled request is dead-lettered (0: the
    /// broker's default).
    pub delivery_limit: u32,
    /// Where rejected requests are dead-lettered; empty for nowhere (they are acknowledged).
    pub dead_letter_exchange: String,
    /// Where `/metrics`, `/healthz`, `/readyz` and the status page are served; empty for
    /// nowhere.
    pub metrics_addr: String,
    /// The topic exchange `#[subscribe]` functions are bound to.
    pub events_exchange: String,
    /// How many more times a failed event is run before it is dead-lettered.
    pub event_retries: u32,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Settings::default().service()
    }
}

/// Parses `250ms`, `30s`, `2m`, `1h` or `1.5s`.
///
/// ```
/// # use std::time::Duration;
/// assert_eq!(guirpc_core::config::parse_duration("250ms"), Ok(Duration::from_millis(250)));
/// assert_eq!(guirpc_core::config::parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
/// assert!(guirpc_core::config::parse_duration("30").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "expected a duration such as `30s` or `250ms`, got `{text}`"
            ));
        }
    };
    let number = f64::from_str(number)
        .map_err(|_| format!("expected a duration such as `30s` or `250ms`, got `{text}`"))?;
    Duration::try_from_secs_f64(number * scale).map_err(|err| format!("duration `{text}`: {err}"))
}

/// Shows a duration the way [`parse_duration`] reads it.
pub fn format_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if !ms.is_multiple_of(1000) || ms == 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1000)
    }
}

/// Masks the password of a URI: `amqp://guest:****@host/vhost`. Everything from the
/// first `:` after the scheme to the last `@` is the password, whatever it holds (a raw
/// `/`, `?`, `#` or `@` included), so that no part of it is ever shown.
///
/// ```
/// use guirpc_core::config::mask_uri;
///
/// assert_eq!(mask_uri("amqp://app:s3cret@rabbit:5672/%2f"), "amqp://app:****@rabbit:5672/%2f");
/// assert_eq!(mask_uri("amqp://app:pa/ss?#@rabbit/%2f"), "amqp://app:****@rabbit/%2f");
/// assert_eq!(mask_uri("amqp://rabbit"), "amqp://rabbit");
/// ```
pub fn mask_uri(uri: &str) -> String {
    if uris(uri).nth(1).is_some() {
        return uris(uri).map(mask_uri).collect::<Vec<_>>().join(",");
    }
    let Some(scheme_end) = uri.find("://").map(|i| i + 3) else {
        return uri.to_owned();
    };
    let rest = &uri[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return uri.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:****{}",
            &uri[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => uri.to_owned(),
    }
}

/// The URIs of a `broker.uri` list: separated by commas that a scheme follows
/// (`, amqp://`, `,amqps://`, any `scheme://`), so that a comma inside a password stays in
/// its URI; blanks around them ignored.
pub fn uris(list: &str) -> impl Iterator<Item = &str> {
    let mut starts = vec![0];
    for (comma, _) in list.match_indices(',') {
        if starts_with_scheme(list[comma + 1..].trim_start()) {
            starts.push(comma + 1);
        }
    }
    let ends: Vec<usize> = starts[1..]
        .iter()
        .map(|start| start - 1)
        .chain([list.len()])
        .collect();
    starts
        .into_iter()
        .zip(ends)
        .map(move |(start, end)| list[start..end].trim())
        .filter(|uri| !uri.is_empty())
}

/// Whether `text` starts with `scheme://`.
fn starts_with_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// Checks that every URI of a `broker.uri` list is one the AMQP client can use; the error
/// masks the password.
pub fn validate_uri(list: &str) -> Result<(), String> {
    if uris(list).next().is_none() {
        return Err("no broker URI: set broker.uri (amqp://user:password@host:port/vhost)".into());
    }
    uris(list).try_for_each(validate_one_uri)
}

fn validate_one_uri(uri: &str) -> Result<(), String> {
    uri.parse::<lapin::uri::AMQPUri>().map_err(|err| {
        format!(
            "invalid broker URI `{}`: {err} (expected amqp://user:password@host:port/vhost)",
            mask_uri(uri)
        )
    })?;
    if cfg!(not(feature = "tls")) && uri.starts_with("amqps://") {
        return Err(format!(
            "`{}` asks for TLS, but this program was built without guirpc-core's `tls` feature",
            mask_uri(uri)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(
        text: &str,
        env: &[(&str, &str)],
        flags: &[(&'static str, &str)],
    ) -> Result<Settings, ConfigError> {
        let dir = std::env::temp_dir().join(format!(
            "guirpc-config-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("guirpc.toml");
        std::fs::write(&path, text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with_env(
            LoadOptions {
                file: Some(path),
                flags: flags.iter().map(|(k, v)| (*k, v.to_string())).collect(),
                defaults: vec![
                    ("service.queue", "program-default".into()),
                    ("client.timeout", "5s".into()),
                ],
            },
            |var| env.iter().find(|(k, _)| k == var).map(|(_, v)| v.clone()),
        )
    }

    #[test]
    fn flags_beat_environment_beat_file_beat_defaults() {
        let text = "[service]\nqueue = \"from-file\"\nprefetch = 7\nconcurrency = 3\n";
        let settings = load(
            text,
            &[("GUIRPC_QUEUE", "from-env"), ("GUIRPC_PREFETCH", "9")],
            &[("service.queue", "from-flag")],
        )
        .unwrap();
        assert_eq!(settings.queue, "from-flag");
        assert_eq!(settings.prefetch, 9);
        assert_eq!(settings.concurrency, 3);
        assert_eq!(settings.exchange, "");
        assert_eq!(settings.timeout, Duration::from_secs(5));
        assert_eq!(settings.source("client.timeout"), Some(&Source::Default));
        assert_eq!(settings.source("service.queue"), Some(&Source::Flag));
        assert_eq!(
            settings.source("service.prefetch"),
            Some(&Source::Env("GUIRPC_PREFETCH"))
        );
        assert!(matches!(
            settings.source("service.concurrency"),
            Some(Source::File(_))
        ));
        assert_eq!(settings.source("broker.exchange"), Some(&Source::Default));
    }

    #[test]
    fn guirpc_uri_beats_amqp_uri() {
        let both = [
            ("AMQP_URI", "amqp://a:a@one/%2f"),
            ("GUIRPC_URI", "amqp://b:b@two/%2f"),
        ];
        assert_eq!(load("", &both, &[]).unwrap().uri, "amqp://b:b@two/%2f");
        let settings = load("", &both[..1], &[]).unwrap();
        assert_eq!(settings.uri, "amqp://a:a@one/%2f");
        assert_eq!(
            settings.source("broker.uri"),
            Some(&Source::Env("AMQP_URI"))
        );
    }

    #[test]
    fn a_bad_file_names_the_file_line_and_key() {
        let err = load("[service]\nqueue = \"q\"\nprefetch = \"many\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("guirpc.toml:3:"), "{err}");
        assert!(err.contains("service.prefetch"), "{err}");
        assert!(err.contains("whole number"), "{err}");

        let err = load("[service]\n\nqueue_name = \"q\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("guirpc.toml:3:") && err.contains("unknown key `service.queue_name`"),
            "{err}"
        );

        let err = load("[service\nqueue = 1\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("guirpc.toml:1:"), "{err}");

        let err = load("[client]\ntimeout = \"soon\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2:") && err.contains("client.timeout") && err.contains("30s"),
            "{err}"
        );
    }

    #[test]
    fn several_nodes_queue_types_and_pipes_are_read() {
        let text = "[broker]\nuri = [\"amqp://a:pw1@h1/%2f\", \"amqp://b:pw2@h2/%2f\"]\nshuffle = true\n\n[service]\nqueue_type = \"quorum\"\ndelivery_limit = 4\n\n[[pipe]]\nname = \"wc\"\ncommand = \"wc -w\"\nworkers = 3\ntimeout = \"2s\"\n";
        let settings = load(text, &[], &[]).unwrap();
        assert_eq!(settings.uri, "amqp://a:pw1@h1/%2f,amqp://b:pw2@h2/%2f");
        assert!(settings.shuffle);
        assert_eq!(settings.queue_type, QueueType::Quorum);
        assert_eq!(settings.delivery_limit, 4);
        assert_eq!(settings.pipes.len(), 1);
        assert_eq!(settings.pipes[0].command, ["wc", "-w"]);
        assert_eq!(settings.pipes[0].workers, 3);
        assert_eq!(settings.pipes[0].timeout, Duration::from_secs(2));
        let masked = settings.masked_uri();
        assert_eq!(masked, "amqp://a:****@h1/%2f,amqp://b:****@h2/%2f");
        // From the environment, comma-separated; each URI checked.
        let settings = load(
            "",
            &[("GUIRPC_URI", "amqp://u:p@h1/%2f, amqp://u:p@h2/%2f")],
            &[],
        )
        .unwrap();
        assert_eq!(uris(&settings.uri).count(), 2);
        let err = load(
            "",
            &[("GUIRPC_URI", "amqp://u:p@h1/%2f,http://u:secret@h2")],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("invalid broker URI") && !err.contains("secret"),
            "{err}"
        );
        // A comma inside a password stays in its URI, and is masked.
        let settings = load(
            "",
            &[(
                "GUIRPC_URI",
                "amqp://app:se,cret@h1/%2f,amqp://app:x,y@h2/%2f",
            )],
            &[],
        )
        .unwrap();
        assert_eq!(
            uris(&settings.uri).collect::<Vec<_>>(),
            ["amqp://app:se,cret@h1/%2f", "amqp://app:x,y@h2/%2f"]
        );
        assert_eq!(
            settings.masked_uri(),
            "amqp://app:****@h1/%2f,amqp://app:****@h2/%2f"
        );
        assert_eq!(
            mask_uri("amqp://app:se,cret@h1/%2f"),
            "amqp://app:****@h1/%2f"
        );
        let err = load("[service]\nqueue_type = \"fast\"\n", &[], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("classic") && err.contains("quorum"), "{err}");
    }

    #[test]
    fn bad_environment_and_uris_are_clear() {
        let err = load("", &[("GUIRPC_CONCURRENCY", "lots")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GUIRPC_CONCURRENCY") && err.contains("whole number"),
            "{err}"
        );
        let err = load("", &[("GUIRPC_URI", "http://u:hunter2@host")], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("invalid broker URI") && !err.contains("hunter2"),
            "{err}"
        );
    }

    #[test]
    fn passwords_with_delimiters_are_masked_everywhere() {
        for (uri, secret) in [
            ("amqp://app:pa/ss@rabbit", "pa/ss"),
            ("amqp://app:p?a#s@s@rabbit:5672/%2f", "p?a#s@s"),
            ("amqps://app:a:b@host/vh", "a:b"),
        ] {
            let masked = mask_uri(uri);
            assert!(!masked.contains(secret), "{masked}");
            assert!(
                masked.starts_with("amqp") && masked.contains("app:****@"),
                "{masked}"
            );
        }
        let err = validate_uri("amqp://app:pa/ss@rab bit:x").unwrap_err();
        assert!(!err.contains("pa/ss") && !err.contains("ss@"), "{err}");
    }

    #[test]
    fn entries_mask_the_password() {
        let settings = load(
            "[broker]\nuri = \"amqp://u:hunter2@h:5672/%2f\"\n",
            &[],
            &[],
        )
        .unwrap();
        let shown: Vec<String> = settings.entries().map(|(_, v, _)| v).collect();
        assert!(shown.iter().all(|v| !v.contains("hunter2")));
        assert!(shown.contains(&"amqp://u:****@h:5672/%2f".to_string()));
    }

    #[test]
    fn the_commented_file_reads_back_as_the_same_settings() {
        let text = Settings::default().to_toml();
        assert!(
            text.contains("[broker]") && text.contains("# How many calls a server runs at once."),
            "{text}"
        );
        let read = load(&text, &[], &[]).unwrap();
        assert_eq!(read.service(), Settings::default().service());
        assert_eq!(read.timeout, Settings::default().timeout);
        assert!(matches!(read.source("log.format"), Some(Source::File(_))));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("s").is_err());
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
