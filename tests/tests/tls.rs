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

/// With a client certificate and a URI that names no user, clients and servers
/// authenticate by the certificate (`EXTERNAL`): its common name is the user, and the
/// caller servers see.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_certificate_is_the_identity_of_clients_and_servers() {
    let broker =
        tokio::task::spawn_blocking(|| PrivateBroker::start_with_client_certificates("external"))
            .await
            .unwrap();
    let (broker, server_cert, alice_cert) = tokio::task::spawn_blocking(move || {
        for user in ["billing-svc", "alice"] {
            broker.add_user(user, "unused-password");
        }
        let server_cert = broker.client_certificate("billing-svc");
        let alice_cert = broker.client_certificate("alice");
        (broker, server_cert, alice_cert)
    })
    .await
    .unwrap();
    let server = Server::builder()
        .settings({
            let mut settings = guirpc_core::Settings::default().service();
            settings.broker.uri = broker.tls_uri_without_user();
            settings.broker.tls_ca_file = broker.ca_file();
            settings.broker.tls_cert_file = server_cert.0.clone();
            settings.broker.tls_key_file = server_cert.1.clone();
            settings.queue = "external".into();
            settings
        })
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker.tls_uri_without_user())
        .tls_ca_file(broker.ca_file())
        .tls_client_certificate(&alice_cert.0, &alice_cert.1)
        .queue("external")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    assert_eq!(
        guirpc_tests::caller_name::call(&client).await.unwrap(),
        "alice"
    );
    // The broker knows them by their certificates' names.
    let users = broker.ctl(&["list_connections", "user", "--no-table-headers", "--quiet"]);
    let users = String::from_utf8_lossy(&users.stdout);
    assert!(
        users.contains("billing-svc") && users.contains("alice"),
        "{users}"
    );
    // A certificate without its key is a configuration error, said at once.
    let err = Client::builder()
        .uri(broker.tls_uri_without_user())
        .tls_client_certificate(&alice_cert.0, "")
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("tls_key_file"), "{err}");
    let refused = Server::builder()
        .settings({
            let mut settings = guirpc_core::Settings::default().service();
            settings.broker.uri = broker.tls_uri_without_user();
            settings.broker.tls_cert_file = "/no/such/cert.pem".into();
            settings.broker.tls_key_file = server_cert.1.clone();
            settings
        })
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, guirpc_core::ServeError::Config(why) if why.contains("/no/such/cert.pem")),
        "{refused}"
    );
    server.shutdown().await.unwrap();
}
