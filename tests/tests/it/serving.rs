//! Server behaviour: concurrency limits, acknowledgement modes, shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use guirpc_core::config::Delivery;
use guirpc_core::{Client, Metrics, Server};
use guirpc_tests::{add, busy, busy_gauge, expiring, nap, sample, unique_queue, until, uri};

async fn start(
    queue: &str,
    configure: impl FnOnce(guirpc_core::ServerBuilder) -> guirpc_core::ServerBuilder,
) -> Server {
    configure(
        Server::builder()
            .uri(uri())
            .queue(queue)
            .queue_arguments(expiring()),
    )
    .start()
    .await
    .unwrap()
}

async fn client(queue: &str) -> Client {
    Client::builder()
        .uri(uri())
        .queue(queue)
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrency_bounds_the_calls_running_at_once() {
    let queue = unique_queue("concurrency");
    let _server = start(&queue, |b| b.concurrency(3).prefetch(10)).await;
    let client = client(&queue).await;
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { busy::call(&client, 100).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let peak = busy_gauge().1.load(Ordering::SeqCst);
    assert!(
        peak <= 3,
        "{peak} calls ran at once with a concurrency of 3"
    );
    assert!(peak >= 2, "calls did not overlap at all (peak {peak})");
}

#[tokio::test(flavor = "multi_thread")]
async fn at_most_once_still_answers() {
    let queue = unique_queue("at-most-once");
    let _server = start(&queue, |b| b.delivery(Delivery::AtMostOnce)).await;
    let client = client(&queue).await;
    for i in 0..50 {
        assert_eq!(add::call(&client, i, 1).await.unwrap(), i + 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_finishes_running_calls_and_a_second_server_takes_the_rest() {
    let queue = unique_queue("shutdown");
    let metrics = Metrics::new();
    let first = start(&queue, |b| b.concurrency(2).prefetch(8).metrics(&metrics)).await;
    let client = client(&queue).await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { nap::call(&client, 400).await })
        })
        .collect();
    // Once the first server runs two calls, stop it: the second takes what it had not
    // started.
    let running = format!("guirpc_server_calls_in_flight{{queue=\"{queue}\"}}");
    assert!(
        until(Duration::from_secs(10), || sample(
            &metrics.encode(),
            &running
        ) == Some(2.0))
        .await,
        "the first server never ran two calls"
    );
    first.shutdown().await.unwrap();
    let _second = start(&queue, |b| b.concurrency(8)).await;
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 400);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_lists_what_it_serves() {
    let queue = unique_queue("registry");
    let server = start(&queue, |b| b).await;
    let add_fn = server.registry().get("add").expect("add is registered");
    assert_eq!(add_fn.signature(), "add(a: i64, b: i64) -> i64");
    assert_eq!(add_fn.summary(), "Adds two integers.");
    assert!(!add_fn.is_blocking());
    assert!(server.registry().get("text.join").unwrap().is_blocking());
    assert_eq!(
        server.registry().get("checked_div").unwrap().returns(),
        "Result<i64, DivError>"
    );
    assert!(
        add_fn.location().contains("guirpc_tests"),
        "{}",
        add_fn.location()
    );
    assert!(server.masked_uri().contains("****"));
}
