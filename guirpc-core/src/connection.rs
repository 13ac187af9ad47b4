//! How guirpc connects to the broker: one place for the connection's name (what
//! `rabbitmqctl list_connections` shows) and, for `amqps://`, the certificates to trust.

use lapin::tcp::OwnedTLSConfig;
use lapin::{Connection, ConnectionProperties};

/// Why a connection could not be made.
pub(crate) type ConnectError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
