//! How guirpc connects to the broker, for the server and the client alike: the
//! connection's name (what `rabbitmqctl list_connections` shows), for `amqps://` the
//! certificates to trust, and the one backoff policy every reconnection follows.

use std::time::Duration;

use backon::BackoffBuilder;
use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};

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
pub(crate) fn reconnect_delays() -> impl Iterator<Item = Duration> + Send {
    backon::ExponentialBuilder::default()
        .with_min_delay(FIRST_RETRY)
        .with_max_delay(MAX_RETRY)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_a_bound_and_are_spread() {
        let delays: Vec<Duration> = reconnect_delays().take(12).collect();
        assert!(delays[0] >= FIRST_RETRY && delays[0] < 2 * FIRST_RETRY);
        assert!(delays.iter().all(|d| *d < 2 * MAX_RETRY), "{delays:?}");
        assert!(delays[11] >= MAX_RETRY, "{delays:?}");
        // Two clients disconnected together wait differently.
        let spread: Vec<Duration> = (0..8).map(|_| reconnect_delays().nth(5).unwrap()).collect();
        assert!(spread.iter().any(|d| *d != spread[0]), "{spread:?}");
    }
}
