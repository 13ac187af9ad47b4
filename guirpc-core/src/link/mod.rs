//! The link to the broker, for the server and the client alike: connecting (the
//! connection's name, what `rabbitmqctl list_connections` shows; for `amqps://` the
//! certificates to trust; the heartbeat that finds a connection gone silent), the one
//! backoff policy every reconnection follows, and the broker's blocked/unblocked events
//! (a memory or disk alarm), logged and kept as state.

mod identity;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::sync::Locked;
use backon::BackoffBuilder;
use futures_lite::StreamExt;
use lapin::tcp::OwnedTLSConfig;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, Event};
use tracing::{info, warn};

/// Why a connection could not be made.
pub(crate) type ConnectError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The first wait before reconnecting.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts (before jitter).
const MAX_RETRY: Duration = Duration::from_secs(4);
/// How long a connection attempt may take: a node that drops packets instead of refusing
/// must not hold up the move to the next one for the system's TCP timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing a connection may take: a broker that blocks the connection (a memory
/// or disk alarm) reads nothing from it, and its close-ok would never come.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes `connection` (reply code 200, `reason`), waiting for the broker's answer at most
/// [`CLOSE_TIMEOUT`]: past it the socket is dropped with the connection, and the broker
/// returns what it had delivered on it to the queues, as for a lost connection.
pub(crate) async fn close(connection: &Connection, reason: &str) {
    if connection.status().connected() {
        let closing = connection.close(200, reason.into());
        if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
            warn!("the broker did not answer the closing of a connection within {CLOSE_TIMEOUT:?}");
        }
    }
}

/// The heartbeat asked of the broker unless configured otherwise (`broker.heartbeat`).
/// lapin takes a connection that has carried nothing for two heartbeats for dead (and
/// checks every half heartbeat): a connection a firewall or NAT silently dropped is
/// noticed within 20 to 25 seconds, where the broker's own 60 s would take two minutes.
pub(crate) const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);

/// Where the broker is and how to reach it: the `[broker]` settings, as the settings
/// ([`crate::Settings::broker`]), a server's settings and a client builder all hold them.
/// Shown (`Debug`) with the password masked.
///
/// ```
/// let mut broker = guirpc_core::Settings::default().broker();
/// broker.uri = "amqp://app:s3cret@rabbit:5672/%2f".into();
/// assert!(!format!("{broker:?}").contains("s3cret"));
/// let client = guirpc_core::Client::builder().broker(broker);
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerSettings {
    /// The broker URI, or several nodes' comma-separated.
    pub uri: String,
    /// With several URIs: start at a random one.
    pub shuffle: bool,
    /// For `amqps://`: a PEM file of the certificates that may sign the broker's
    /// certificate (instead of the system's); empty for the system's.
    pub tls_ca_file: String,
    /// For `amqps://`: a PEM file of this program's certificate, to authenticate with
    /// (RabbitMQ's `EXTERNAL` mechanism when the URI names no user: the identity is the
    /// certificate's common name); empty for none.
    pub tls_cert_file: String,
    /// The PEM file of the private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// The heartbeat asked of the broker (whole seconds, rounded up); zero takes the
    /// broker's. A heartbeat in the URI (`?heartbeat=5`) wins. A silent connection is
    /// noticed within twice this.
    pub heartbeat: Duration,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("uri", &crate::uri::mask_uri(&self.uri))
            .field("shuffle", &self.shuffle)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// Whether the client certificate the settings name can be used: read, with its key, and
/// named. Checked before connecting, so that a server says so at once instead of retrying.
pub(crate) fn check_identity(options: &BrokerSettings) -> Result<(), String> {
    identity::client_identity(options)
        .map(drop)
        .map_err(|err| err.to_string())
}

/// Connects to `uri`: the connection, and the user it authenticated as (the URI's, or the
/// client certificate's common name with `EXTERNAL`).
pub(crate) async fn connect(
    text: &str,
    options: &BrokerSettings,
    name: &str,
) -> Result<(Connection, String), ConnectError> {
    let ca_file = options.tls_ca_file.as_str();
    let mut uri: AMQPUri = text.parse()?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(heartbeat_seconds(options.heartbeat));
    }
    let identity = identity::client_identity(options)?;
    let user = match &identity {
        // A certificate and no user in the URI: the broker takes the certificate's name.
        Some(certificate) if !crate::uri::names_user(text) => {
            uri.query.auth_mechanism = Some(lapin::uri::SASLMechanism::External);
            certificate.common_name.clone()
        }
        _ => uri.authority.userinfo.username.clone(),
    };
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let tls = OwnedTLSConfig {
        identity: identity.map(|certificate| certificate.identity),
        cert_chain: if ca_file.is_empty() {
            None
        } else {
            let pem = std::fs::read_to_string(ca_file)
                .map_err(|err| format!("cannot read the TLS CA file {ca_file}: {err}"))?;
            Some(pem)
        },
    };
    let runtime = lapin::runtime::default_runtime()?;
    let connecting = Connection::connect_uri_with_config(uri, properties, tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(connected) => Ok((connected?, user)),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}").into()),
    }
}

/// A heartbeat in AMQP's whole seconds: rounded up, so that a sub-second one still beats.
fn heartbeat_seconds(heartbeat: Duration) -> u16 {
    let seconds = heartbeat.as_secs() + u64::from(heartbeat.subsec_nanos() > 0);
    u16::try_from(seconds).unwrap_or(u16::MAX)
}

/// The broker nodes a server or client may connect to (`broker.uri`, a comma-separated
/// list), and the one it uses: it connects to the first that answers, starting where its
/// last connection was, or at the node after it once that connection is lost, so that a
/// lost node is left for the next. TLS settings apply to each.
#[derive(Debug)]
pub(crate) struct Brokers {
    uris: Vec<String>,
    masked: Vec<String>,
    options: BrokerSettings,
    /// The node of the live (or last) connection.
    current: AtomicUsize,
    /// Where the next attempt starts.
    next: AtomicUsize,
    connected: AtomicBool,
}

/// Where a connection was made.
#[derive(Debug)]
pub(crate) struct Connected {
    pub connection: Connection,
    /// The node's URI, password masked.
    pub masked_uri: String,
    /// The node connected to before, when this is another one.
    pub moved_from: Option<String>,
    /// The user the connection authenticated as: what the broker checks `user_id` against.
    pub user: String,
}

impl Brokers {
    /// The nodes of `broker.uri`, tried in order, or from a random one when `shuffle`
    /// (which spreads the connections of many processes over the nodes).
    pub(crate) fn new(broker: &BrokerSettings) -> Brokers {
        let uris: Vec<String> = crate::uri::uris(&broker.uri).map(str::to_owned).collect();
        let start = if broker.shuffle && uris.len() > 1 {
            fastrand::usize(..uris.len())
        } else {
            0
        };
        Brokers {
            masked: uris.iter().map(|uri| crate::uri::mask_uri(uri)).collect(),
            uris,
            options: broker.clone(),
            current: AtomicUsize::new(start),
            next: AtomicUsize::new(start),
            connected: AtomicBool::new(false),
        }
    }

    /// Every node, passwords masked: `amqp://guest:****@a/%2f,amqp://guest:****@b/%2f`.
    pub(crate) fn masked(&self) -> String {
        self.masked.join(",")
    }

    /// The node of the live (or last) connection, unmasked.
    pub(crate) fn current_uri(&self) -> &str {
        &self.uris[self.current.load(Ordering::Acquire)]
    }

    /// Another connection to the node of the live (or last) one: a server's reply
    /// quarantine goes where its requests come from.
    pub(crate) async fn connect_current(&self, name: &str) -> Result<Connection, ConnectError> {
        Ok(connect(self.current_uri(), &self.options, name).await?.0)
    }

    /// The connection was lost: the next attempt starts at the next node.
    pub(crate) fn lost(&self) {
        let current = self.current.load(Ordering::Acquire);
        self.next
            .store((current + 1) % self.uris.len().max(1), Ordering::Release);
    }

    /// Connects to the first node that answers, trying each once.
    pub(crate) async fn connect(&self, name: &str) -> Result<Connected, ConnectError> {
        let count = self.uris.len();
        if count == 0 {
            return Err("no broker URI is configured".into());
        }
        let start = self.next.load(Ordering::Acquire);
        let mut failures = Vec::new();
        for step in 0..count {
            let index = (start + step) % count;
            match connect(&self.uris[index], &self.options, name).await {
                Ok((connection, user)) => {
                    let before = self.current.swap(index, Ordering::AcqRel);
                    self.next.store(index, Ordering::Release);
                    let first = !self.connected.swap(true, Ordering::AcqRel);
                    let moved_from =
                        (!first && before != index).then(|| self.masked[before].clone());
                    return Ok(Connected {
                        connection,
                        masked_uri: self.masked[index].clone(),
                        moved_from,
                        user,
                    });
                }
                Err(err) if count == 1 => return Err(err),
                Err(err) => failures.push(format!("{}: {err}", self.masked[index])),
            }
        }
        Err(format!("no broker node answered ({})", failures.join("; ")).into())
    }
}

/// The waits between attempts to reconnect: doubling from 100 ms up to 4 s, each
/// stretched by a random part of itself (up to twice as long), so that the servers and
/// clients a broker restart disconnected do not all come back in the same instant.
pub(crate) struct Backoff(backon::ExponentialBackoff);

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff(
            backon::ExponentialBuilder::default()
                .with_min_delay(FIRST_RETRY)
                .with_max_delay(MAX_RETRY)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
        )
    }

    /// The next wait (the sequence never ends: `without_max_times`).
    pub(crate) fn next_delay(&mut self) -> Duration {
        self.0.next().unwrap_or(MAX_RETRY)
    }

    /// Sleeps the next wait.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }
}

/// What the broker says of a connection's publishing: blocked by an alarm, and why.
#[derive(Debug, Default)]
pub(crate) struct Blocked(Mutex<Option<String>>);

impl Blocked {
    /// Why the broker blocks publishing, while it does.
    pub(crate) fn reason(&self) -> Option<String> {
        self.0.locked().clone()
    }

    pub(crate) fn is_blocked(&self) -> bool {
        self.0.locked().is_some()
    }

    /// Forgets the state of a connection that is gone.
    pub(crate) fn clear(&self) {
        *self.0.locked() = None;
    }

    fn set(&self, reason: Option<String>) {
        *self.0.locked() = reason;
    }
}

/// Follows a connection's events until it ends: logs the broker blocking and unblocking
/// it, and keeps the state in `blocked`. `what` names what waits meanwhile.
pub(crate) fn watch_blocked(
    connection: &Connection,
    masked_uri: String,
    what: &'static str,
    blocked: std::sync::Arc<Blocked>,
) {
    let events = connection.events_listener();
    tokio::spawn(async move {
        futures_lite::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Event::ConnectionBlocked(reason) => {
                    warn!("the broker at {masked_uri} blocks publishing, {what} wait: {reason}");
                    blocked.set(Some(reason));
                }
                Event::ConnectionUnblocked => {
                    info!("the broker at {masked_uri} accepts publishing again");
                    blocked.set(None);
                }
                _ => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(list: &str, shuffle: bool) -> Brokers {
        Brokers::new(&BrokerSettings {
            uri: list.to_owned(),
            shuffle,
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            heartbeat: DEFAULT_HEARTBEAT,
        })
    }

    #[test]
    fn heartbeats_are_whole_seconds_rounded_up() {
        assert_eq!(heartbeat_seconds(Duration::ZERO), 0);
        assert_eq!(heartbeat_seconds(Duration::from_millis(200)), 1);
        assert_eq!(heartbeat_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(heartbeat_seconds(DEFAULT_HEARTBEAT), 10);
        assert_eq!(heartbeat_seconds(Duration::from_secs(1 << 20)), u16::MAX);
    }

    #[test]
    fn node_lists_start_at_the_first_or_anywhere_when_shuffled() {
        let list = "amqp://u:p@a/%2f, amqp://u:p@b/%2f,amqp://u:p@c/%2f";
        let brokers = nodes(list, false);
        assert_eq!(brokers.current_uri(), "amqp://u:p@a/%2f");
        assert_eq!(
            brokers.masked(),
            "amqp://u:****@a/%2f,amqp://u:****@b/%2f,amqp://u:****@c/%2f"
        );
        // Lost: the next attempt starts at the next node, round the list.
        brokers.lost();
        assert_eq!(brokers.next.load(Ordering::Relaxed), 1);
        let starts: std::collections::HashSet<String> = (0..64)
            .map(|_| nodes(list, true).current_uri().to_owned())
            .collect();
        assert!(starts.len() > 1, "shuffled lists all start at {starts:?}");
    }

    #[test]
    fn delays_grow_to_a_bound_and_are_spread() {
        let mut backoff = Backoff::new();
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] >= FIRST_RETRY && delays[0] < 2 * FIRST_RETRY);
        assert!(delays.iter().all(|d| *d < 2 * MAX_RETRY), "{delays:?}");
        assert!(delays[11] >= MAX_RETRY, "{delays:?}");
        // Two clients disconnected together wait differently.
        let spread: Vec<Duration> = (0..8)
            .map(|_| {
                let mut backoff = Backoff::new();
                for _ in 0..5 {
                    backoff.next_delay();
                }
                backoff.next_delay()
            })
            .collect();
        assert!(spread.iter().any(|d| *d != spread[0]), "{spread:?}");
    }
}
