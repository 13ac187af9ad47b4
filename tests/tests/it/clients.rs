//! The async client under concurrency, and the blocking client.

use std::time::Duration;

use guirpc_core::{BlockingClient, Client, Error};
use guirpc_tests::{DivError, add, block, checked_div, nap, serve, unique_queue, uri};

#[tokio::test(flavor = "multi_thread")]
async fn many_concurrent_calls_on_one_client_each_get_their_own_reply() {
    let (_server, client) = serve("concurrent").await;
    let calls: Vec<_> = (0..2000i64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { (i, add::call(&client, i, 1_000_000).await) })
        })
        .collect();
    for call in calls {
        let (i, result) = call.await.unwrap();
        assert_eq!(result.unwrap(), i + 1_000_000);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_run_concurrently_on_the_server() {
    let (_server, client) = serve("parallel").await;
    // 20 calls of 300 ms each finish together, well under the 6 s they would take in turn.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.with_timeout(Duration::from_secs(3));
            tokio::spawn(async move { nap::call(&client, 300).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 300);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blocking_function_does_not_stall_the_server() {
    let (_server, client) = serve("blocking-fn").await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { block::call(&client, 1500).await })
    };
    // While one plain fn blocks its thread for 1.5 s, async calls keep being answered.
    let quick = client.with_timeout(Duration::from_millis(1000));
    for i in 0..20 {
        assert_eq!(add::call(&quick, i, i).await.unwrap(), 2 * i);
    }
    assert!(
        !slow.is_finished(),
        "the blocking call should still be running"
    );
    assert_eq!(slow.await.unwrap().unwrap(), 1500);
}

#[test]
fn blocking_client_calls_from_plain_threads() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(async {
        guirpc_core::Server::builder()
            .uri(uri())
            .queue(unique_queue("blocking-client"))
            .queue_arguments(guirpc_tests::expiring())
            .start()
            .await
            .unwrap()
    });
    let client = BlockingClient::connect(&uri())
        .unwrap()
        .with_queue(server.queue());
    assert_eq!(add::call_blocking(&client, 20, 22).unwrap(), 42);
    let sum: i64 = client.call("add", (1, 2)).unwrap();
    assert_eq!(sum, 3);
    match checked_div::call_blocking(&client, 1, 0) {
        Err(Error::Handler {
            error: DivError::ByZero(1),
            ..
        }) => {}
        other => panic!("expected a typed handler error, got {other:?}"),
    }
    let threads: Vec<_> = (0..8i64)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                (0..50)
                    .map(|i| add::call_blocking(&client, t, i).unwrap())
                    .sum::<i64>()
            })
        })
        .collect();
    for (t, thread) in threads.into_iter().enumerate() {
        assert_eq!(thread.join().unwrap(), 50 * t as i64 + (0..50).sum::<i64>());
    }
    let err = client
        .with_timeout(Duration::from_millis(200))
        .call::<u64>("nap", (2000,))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    drop(client);
    runtime.block_on(server.shutdown()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blocking_client_refuses_inside_an_async_runtime() {
    let err = BlockingClient::connect(&uri()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("guirpc_core::Client"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_calls_several_services_over_one_connection() {
    let (server_a, client) = serve("service-a").await;
    let (server_b, _) = serve("service-b").await;
    let b = client.with_queue(server_b.queue());
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
    assert_eq!(add::call(&b, 2, 2).await.unwrap(), 4);
    assert_eq!(client.queue(), server_a.queue());
}

#[tokio::test(flavor = "multi_thread")]
async fn client_connect_to_a_dead_port_fails_with_a_connection_error() {
    let err = Client::connect("amqp://guest:secret@127.0.0.1:1/%2f")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("127.0.0.1:1") && !message.contains("secret"),
        "{message}"
    );
    assert!(err.is_retriable());
    let err = Client::connect("not a uri").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
}
