//! The link to the broker, for the server and the client alike: connecting (the
//! connection's name, what `rabbitmqctl list_connections` shows; for `amqps://` the
//! certificates to trust), the one backoff policy every reconnection follows, and the
//! broker's blocked/unblocked events (a memory or disk alarm), logged and kept as state.

use std::sync::Mutex;
use std::time::Duration;

use backon::BackoffBuilder;
use futures_lite::StreamExt;
use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties, Event};
use tracing::{info, warn};

/// Why a connection could not be made.
pub(crate) type ConnectError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The first wait before reconnecting.
const FIRST_RETRY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts (before jitter).
const MAX_RETRY: Duration = Duration::from_secs(4);

/// Connects to `uri`; `ca_file`, when not empty, is a PEM file of the certificates that
/// may sign an `amqps://` broker's certificate (instead of the system's).
pub(crate) async fn connect(
    uri: &str,
    ca_file: &str,
    name: &str,
) -> Result<Connection, ConnectError> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    let tls = OwnedTLSConfig {
        identity: None,
        cert_chain: if ca_file.is_empty() {
            None
        } else {
            let pem = std::fs::read_to_string(ca_file)
                .map_err(|err| format!("cannot read the TLS CA file {ca_file}: {err}"))?;
            Some(pem)
        },
    };
    let runtime = lapin::runtime::default_runtime()?;
    Ok(Connection::connect_with_config(uri, properties, tls, runtime).await?)
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
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn is_blocked(&self) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Forgets the state of a connection that is gone.
    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn set(&self, reason: Option<String>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = reason;
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
