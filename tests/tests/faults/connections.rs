//! Connections closed under load, under a slow call, under waiting callers: no call is
//! lost, pending ones fail at once, and both sides reconnect.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guirpc_core::{Error, Server};
use guirpc_tests::broker::PrivateBroker;
use guirpc_tests::{
    add, nap, record, recorded, sample, slow_square, until, until_blocking, until_running,
};

use crate::{client, private_broker, server};

/// How long the calls of the client-drop tests run: well past the connection's closing,
/// which takes a few seconds of `rabbitmqctl` (seconds more on 4.0, whose CLI starts
/// slower), so that they are in flight when it comes.
const NAP: u64 = 15_000;

/// Closes the one client connection on `broker`, as the broker's operator would.
async fn close_the_client_connection(broker: PrivateBroker) -> PrivateBroker {
    tokio::task::spawn_blocking(move || {
        assert_eq!(broker.close_connections_named("guirpc client"), 1);
        broker
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_whose_connection_drops_mid_load_reconnects_and_loses_no_call() {
    let (_one, broker) = private_broker("server-drop").await;
    let _server = server(&broker, "load", 16).await;
    let client = client(&broker, "load", Duration::from_secs(60)).await;

    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let calls: Vec<_> = (0..3000i64)
        .map(|i| {
            let (client, done) = (client.clone(), done.clone());
            tokio::spawn(async move {
                let result = add::call(&client, i, i).await;
                done.fetch_add(1, Ordering::Relaxed);
                (i, result)
            })
        })
        .collect();
    // Drop the server's connection once the load is well under way.
    assert!(
        until(Duration::from_secs(60), || done.load(Ordering::Relaxed)
            >= 500)
        .await,
        "the load never got under way"
    );
    let closed = tokio::task::spawn_blocking(move || {
        let closed = broker.close_connections_named("guirpc server load");
        (broker, closed)
    })
    .await
    .unwrap();
    let (broker, closed) = closed;
    assert_eq!(closed, 1, "the server's connection was not found");
    for call in calls {
        let (i, result) = call.await.unwrap();
        assert_eq!(result.unwrap(), 2 * i, "call {i}");
    }
    // The server is connected again (a new connection of the same name).
    assert!(
        broker
            .connection_names()
            .iter()
            .any(|n| n == "guirpc server load")
    );
}

/// Acknowledgements are coalesced, but never held back by an older call still running: a
/// crash redelivers exactly the calls that had not finished.
#[tokio::test(flavor = "multi_thread")]
async fn calls_that_finish_behind_a_slow_one_are_acknowledged_at_once() {
    let (_one, broker) = private_broker("settle").await;
    let _server = server(&broker, "settle", 16).await;
    let client = client(&broker, "settle", Duration::from_secs(60)).await;

    // Long enough to outlast the fast calls on a loaded machine.
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { nap::call(&client, 10_000).await })
    };
    assert!(
        until_running(&client, 1, Duration::from_secs(10)).await,
        "the slow call never started"
    );
    let tokens: Vec<String> = (0..40).map(|i| format!("settle-{i}")).collect();
    let fast: Vec<_> = tokens
        .iter()
        .map(|token| {
            let (client, token) = (client.clone(), token.clone());
            tokio::spawn(async move { record::call(&client, token).await })
        })
        .collect();
    for call in fast {
        call.await.unwrap().unwrap();
    }
    // A reply is published before its request is acknowledged: give the last
    // acknowledgements a moment to reach the broker.
    let broker = tokio::task::spawn_blocking(move || {
        until_blocking(Duration::from_secs(10), || {
            broker.unacknowledged("settle") == Some(1)
        });
        assert_eq!(
            broker.unacknowledged("settle"),
            Some(1),
            "only the slow call may be unacknowledged"
        );
        // Crash the server: only the slow call comes back, and runs again.
        assert_eq!(broker.close_connections_named("guirpc server settle"), 1);
        broker
    })
    .await
    .unwrap();
    assert_eq!(slow.await.unwrap().unwrap(), 10_000);
    let runs: Vec<_> = {
        let calls = recorded().0.lock().unwrap();
        tokens
            .iter()
            .map(|token| calls.get(token).copied())
            .collect()
    };
    for (token, runs) in tokens.iter().zip(runs) {
        assert_eq!(runs, Some(1), "{token} ran again after the crash");
    }
    assert_eq!(
        tokio::task::spawn_blocking(move || broker.unacknowledged("settle"))
            .await
            .unwrap(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_whose_connection_drops_fails_its_pending_calls_at_once_and_recovers() {
    let (_one, broker) = private_broker("client-drop").await;
    let _server = server(&broker, "drop", 64).await;
    let client = client(&broker, "drop", Duration::from_secs(30)).await;
    let retrying = client.with_retries(3);

    let slow: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { nap::call(&client, NAP).await })
        })
        .collect();
    // An idempotent call in flight across the drop is sent again and succeeds.
    let idempotent = {
        let retrying = retrying.clone();
        tokio::spawn(async move { slow_square::call(&retrying, 7, NAP / 2).await })
    };
    assert!(
        until_running(&client, 21, Duration::from_secs(10)).await,
        "the calls never all started"
    );
    let broker = close_the_client_connection(broker).await;
    let closed = Instant::now();
    for call in slow {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Connection { .. }), "{err:?}");
        assert!(err.is_retriable());
    }
    assert!(
        closed.elapsed() < Duration::from_secs(3),
        "pending calls failed only {:?} after the connection was closed, not at once",
        closed.elapsed()
    );
    assert!(
        client.wait_connected(Duration::from_secs(5)).await,
        "the client did not reconnect"
    );
    assert_eq!(add::call(&client, 2, 3).await.unwrap(), 5);
    assert_eq!(idempotent.await.unwrap().unwrap(), 49);
    drop(broker);
}

/// A blocking call routes the client's replies while it waits: when the connection drops
/// under it, it fails at once like any other, and the client reconnects.
#[tokio::test(flavor = "multi_thread")]
async fn a_blocking_client_whose_connection_drops_fails_its_calls_at_once_and_recovers() {
    let (_one, broker) = private_broker("blocking-drop").await;
    // Its gauge tells when the blocking calls run: a client of the test's own to ask the
    // server would be a second connection named `guirpc client`.
    let metrics = guirpc_core::Metrics::new();
    let _server = Server::builder()
        .uri(broker.uri())
        .queue("blocking-drop")
        .concurrency(64)
        .prefetch(32)
        .metrics(&metrics)
        .start()
        .await
        .unwrap();
    let uri = broker.uri();
    // Outside the runtime: a blocking client refuses to run inside one.
    let (connected, ready) = std::sync::mpsc::channel();
    let caller = std::thread::spawn(move || {
        let client = guirpc_core::BlockingClient::connect(&uri)
            .unwrap()
            .with_queue("blocking-drop")
            .with_timeout(Duration::from_secs(30));
        assert_eq!(add::call_blocking(&client, 1, 2).unwrap(), 3);
        connected.send(()).unwrap();
        let slow = std::thread::spawn({
            let client = client.clone();
            move || nap::call_blocking(&client, NAP)
        });
        let err = nap::call_blocking(&client, NAP).unwrap_err();
        let failed_at = Instant::now();
        assert!(matches!(err, Error::Connection { .. }), "{err:?}");
        assert!(err.is_retriable());
        let other = slow.join().unwrap().unwrap_err();
        assert!(matches!(other, Error::Connection { .. }), "{other:?}");
        assert!(
            until_blocking(Duration::from_secs(5), || client.as_async().is_connected()),
            "the client did not reconnect"
        );
        assert_eq!(add::call_blocking(&client, 2, 3).unwrap(), 5);
        failed_at
    });
    tokio::task::spawn_blocking(move || ready.recv().unwrap())
        .await
        .unwrap();
    let running = "guirpc_server_calls_in_flight{queue=\"blocking-drop\"}";
    assert!(
        until(Duration::from_secs(10), || {
            sample(&metrics.encode(), running) == Some(2.0)
        })
        .await,
        "the two blocking calls never started"
    );
    let closing = Instant::now();
    let broker = close_the_client_connection(broker).await;
    let closed = Instant::now();
    let failed_at = tokio::task::spawn_blocking(move || caller.join().unwrap())
        .await
        .unwrap();
    let failed_after = failed_at.saturating_duration_since(closed);
    assert!(
        failed_at > closing && failed_after < Duration::from_secs(3),
        "the waiting call failed {failed_after:?} after the connection was closed, not at once"
    );
    drop(broker);
}

/// A client whose connection drops under a steady load fails only the calls that were in
/// flight; calls started while it reconnects wait for the new connection and succeed.
#[tokio::test(flavor = "multi_thread")]
async fn calls_made_while_reconnecting_wait_for_the_connection_instead_of_failing() {
    const CALLS: i64 = 6000;
    const IN_FLIGHT: usize = 64;
    let (_one, broker) = private_broker("reconnect-wait").await;
    let _server = server(&broker, "wait", 64).await;
    let client = client(&broker, "wait", Duration::from_secs(20)).await;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let driver = {
        let (client, slots, done) = (client.clone(), slots.clone(), done.clone());
        tokio::spawn(async move {
            let mut calls = Vec::new();
            for i in 0..CALLS {
                let slot = slots.clone().acquire_owned().await.unwrap();
                let (client, done) = (client.clone(), done.clone());
                calls.push(tokio::spawn(async move {
                    let result = add::call(&client, i, 1).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    drop(slot);
                    (i, result)
                }));
            }
            calls
        })
    };
    assert!(
        until(Duration::from_secs(60), || done.load(Ordering::Relaxed)
            >= 1500)
        .await,
        "the load never got under way"
    );
    let broker = close_the_client_connection(broker).await;
    let mut failed = Vec::new();
    for call in driver.await.unwrap() {
        let (i, result) = call.await.unwrap();
        match result {
            Ok(sum) => assert_eq!(sum, i + 1),
            Err(err) => {
                assert!(matches!(err, Error::Connection { .. }), "{err:?}");
                failed.push(i);
            }
        }
    }
    eprintln!(
        "{} of {CALLS} calls failed with the connection",
        failed.len()
    );
    assert!(
        failed.len() <= IN_FLIGHT,
        "{} calls failed, more than the {IN_FLIGHT} that can have been in flight",
        failed.len()
    );
    drop(broker);
}
