//! `amqps://`: a server and a client over TLS, against a private broker whose certificate
//! the test makes; a client that does not trust its CA is refused.
#![cfg(feature = "tls")]

use std::time::Duration;

use guirpc_core::{Client, Error, Server};
use guirpc_tests::add;
use guirpc_tests::broker::PrivateBroker;

#[tokio::test(flavor = "multi_thread")]
async fn calls_travel_over_tls_with_a_trusted_ca_and_fail_without_it() {
    let broker = tokio::task::spawn_blocking(|| PrivateBroker::start_with_tls("tls"))
        .await
        .unwrap();
    let _server = Server::builder()
        .uri(broker.tls_uri())
        .settings({
            let mut settings = guirpc_core::Settings::default().service();
            settings.broker.uri = broker.tls_uri();
            settings.broker.tls_ca_file = broker.ca_file();
            settings.queue = "tls".into();
            settings
        })
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker.tls_uri())
        .tls_ca_file(broker.ca_file())
        .queue("tls")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    assert_eq!(add::call(&client, 20, 22).await.unwrap(), 42);
    assert!(
        broker
            .connection_names()
            .iter()
            .any(|n| n == "guirpc server tls"),
        "the server is not connected over TLS"
    );

    let err = Client::builder()
        .uri(broker.tls_uri())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(!err.to_string().contains("guest:guest"), "{err}");
}
