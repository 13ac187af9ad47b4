//! Casts: one-way calls, confirmed by the broker, kept in the queue until a server runs them.

use std::time::{Duration, Instant};

use guirpc_core::{Client, Error, Server};
use guirpc_tests::{expiring, record, unique_queue, uri, wait_recorded};

#[tokio::test(flavor = "multi_thread")]
async fn a_cast_returns_once_the_broker_has_it_and_the_server_runs_it() {
    let (server, client) = guirpc_tests::serve("cast").await;
    let token = format!("{}-typed", server.queue());
    record::cast(&client, token.clone()).await.unwrap();
    assert!(wait_recorded(&token, 1, Duration::from_secs(10)).await);
    let by_name = format!("{}-by-name", server.queue());
    client
        .cast("record", serde_json::json!({ "token": by_name }))
        .await
        .unwrap();
    assert!(wait_recorded(&by_name, 1, Duration::from_secs(10)).await);
    // From synchronous code too.
    let queue = server.queue().to_owned();
    let blocking_token = format!("{queue}-blocking");
    let sent = blocking_token.clone();
    // A thread of its own: the blocking client refuses to run inside a runtime.
    std::thread::spawn(move || {
        let blocking = Client::builder()
            .uri(uri())
            .queue(&queue)
            .connect_blocking()
            .unwrap();
        record::cast_blocking(&blocking, sent).unwrap();
    })
    .join()
    .unwrap();
    assert!(wait_recorded(&blocking_token, 1, Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn casts_wait_in_the_queue_while_no_server_runs_and_run_when_one_starts() {
    let queue = unique_queue("cast-waits");
    let start = || {
        Server::builder()
            .uri(uri())
            .queue(&queue)
            .queue_arguments(expiring())
            .start()
    };
    // The first server declares the queue, then stops.
    start().await.unwrap().shutdown().await.unwrap();
    let client = guirpc_tests::client(&queue).await;
    for i in 0..20 {
        record::cast(&client, format!("{queue}-{i}")).await.unwrap();
    }
    let server = start().await.unwrap();
    for i in 0..20 {
        let token = format!("{queue}-{i}");
        assert!(
            wait_recorded(&token, 1, Duration::from_secs(10)).await,
            "{token} never ran"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unroutable_cast_fails_at_once_with_no_route() {
    let client = guirpc_tests::client(&unique_queue("nobody-serves-this")).await;
    let started = Instant::now();
    let err = record::cast(&client, "lost".into()).await.unwrap_err();
    assert!(matches!(err, Error::NoRoute { .. }), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
