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

/// A server on a runtime of its own, for tests whose blocking clients run outside one.
fn serve_outside_a_runtime(test: &str) -> (tokio::runtime::Runtime, guirpc_core::Server) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(async {
        guirpc_core::Server::builder()
            .uri(uri())
            .queue(unique_queue(test))
            .queue_arguments(guirpc_tests::expiring())
            .concurrency(64)
            .start()
            .await
            .unwrap()
    });
    (runtime, server)
}

#[test]
fn blocking_client_calls_from_plain_threads() {
    let (runtime, server) = serve_outside_a_runtime("blocking-client");
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

/// A blocking call routes the client's replies while it waits, the others' too; whatever
/// it ends by (its reply, its timeout), routing goes on for every other call.
#[test]
fn blocking_and_async_calls_on_one_client_each_get_their_reply_however_the_others_end() {
    let (runtime, server) = serve_outside_a_runtime("blocking-mixed");
    let client = BlockingClient::connect(&uri())
        .unwrap()
        .with_queue(server.queue())
        .with_timeout(Duration::from_secs(10));
    // Async calls on the same client and connection, from another runtime, all along.
    let asynchronous = client.as_async().clone();
    let async_calls = runtime.spawn(async move {
        let calls: Vec<_> = (0..400i64)
            .map(|i| {
                let client = asynchronous.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(i as u64 * 5)).await;
                    add::call(&client, i, 1).await
                })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), i as i64 + 1);
        }
    });
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let client = client.clone();
            let quick = client.with_timeout(Duration::from_millis(100));
            std::thread::spawn(move || {
                for i in 0..30u64 {
                    match (t + i) % 5 {
                        // Slow replies: the thread waits (and may route) for a while.
                        0 => assert_eq!(nap::call_blocking(&client, 40).unwrap(), 40),
                        // Calls that time out while routing, and end that way.
                        1 => {
                            let err = nap::call_blocking(&quick, 400).unwrap_err();
                            assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
                        }
                        _ => {
                            let (a, b) = (t as i64, i as i64);
                            assert_eq!(add::call_blocking(&client, a, b).unwrap(), a + b);
                        }
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    runtime.block_on(async_calls).unwrap();
    // Nothing left routing for a call that is gone: async and blocking calls still answer.
    let asynchronous = client.as_async().clone();
    assert_eq!(
        runtime
            .block_on(async move { add::call(&asynchronous, 1, 1).await })
            .unwrap(),
        2
    );
    assert_eq!(add::call_blocking(&client, 2, 2).unwrap(), 4);
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
