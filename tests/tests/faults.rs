//! Broker faults: each test breaks a private RabbitMQ node of its own (never the shared
//! one) and proves that no call is lost and no caller hangs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guirpc_core::{Client, Error, Server};
use guirpc_tests::broker::{PrivateBroker, one_at_a_time};
use guirpc_tests::{add, nap, poll, record, recorded, slow_square, until_blocking};

/// Waits for its turn, then starts a private node.
async fn private_broker(
    name: &'static str,
) -> (tokio::sync::MutexGuard<'static, ()>, PrivateBroker) {
    one_at_a_time(move || PrivateBroker::start(name)).await
}

async fn server(broker: &PrivateBroker, queue: &str, concurrency: usize) -> Server {
    Server::builder()
        .uri(broker.uri())
        .queue(queue)
        .concurrency(concurrency)
        .prefetch(32)
        .start()
        .await
        .unwrap()
}

async fn client(broker: &PrivateBroker, queue: &str, timeout: Duration) -> Client {
    Client::builder()
        .uri(broker.uri())
        .queue(queue)
        .timeout(timeout)
        .connect()
        .await
        .unwrap()
}

/// Closes the one client connection on `broker`, as the broker's operator would.
/// How long the calls of the client-drop tests run: well past the connection's closing,
/// which takes a few seconds of `rabbitmqctl` (seconds more on 4.0, whose CLI starts
/// slower), so that they are in flight when it comes.
const NAP: u64 = 15_000;

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
    while done.load(Ordering::Relaxed) < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

    let slow = {
        let client = client.clone();
        tokio::spawn(async move { nap::call(&client, 4000).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
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
        let started = Instant::now();
        while broker.unacknowledged("settle") != Some(1)
            && started.elapsed() < Duration::from_secs(2)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
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
    assert_eq!(slow.await.unwrap().unwrap(), 4000);
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
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let _server = server(&broker, "blocking-drop", 64).await;
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
    tokio::time::sleep(Duration::from_millis(700)).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn servers_and_clients_come_back_after_a_broker_restart() {
    let (_one, broker) = private_broker("restart").await;
    let server = Server::builder()
        .uri(broker.uri())
        .queue("restart")
        .metrics_addr("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let metrics = server.metrics_addr().unwrap();
    let client = client(&broker, "restart", Duration::from_secs(2)).await;
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
    assert_eq!(
        readiness(metrics).await,
        (200, "ready: connected and consuming\n".into())
    );

    let broker = tokio::task::spawn_blocking(move || {
        broker.stop_app();
        broker
    })
    .await
    .unwrap();
    // While the broker is down, calls fail fast or by their deadline; none hangs.
    for _ in 0..5 {
        let started = Instant::now();
        let err = add::call(&client, 1, 1).await.unwrap_err();
        assert!(err.is_retriable(), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "a call took {:?}",
            started.elapsed()
        );
    }
    // Not ready while it cannot consume; alive all along.
    let (status, reason) = readiness(metrics).await;
    assert_eq!(status, 503, "{reason}");
    assert_eq!(reason, "not ready: connecting to the broker\n");
    let healthz = tokio::task::spawn_blocking(move || guirpc_tests::http_get(metrics, "/healthz"));
    assert_eq!(healthz.await.unwrap().0, 200);
    let broker = tokio::task::spawn_blocking(move || {
        broker.start_app();
        broker
    })
    .await
    .unwrap();
    let back = Instant::now();
    let result = poll(Duration::from_secs(30), || add::call(&client, 20, 22)).await;
    assert_eq!(result.unwrap(), 42, "no answer within 30 s of the restart");
    eprintln!(
        "answered again {:?} after the broker came back",
        back.elapsed()
    );
    let ready = poll(Duration::from_secs(10), || async {
        match readiness(metrics).await {
            (200, _) => Ok(()),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(ready, Ok(()));
    let text = tokio::task::spawn_blocking(move || guirpc_tests::http_get(metrics, "/metrics"))
        .await
        .unwrap()
        .1;
    let reconnects =
        guirpc_tests::sample(&text, "guirpc_server_reconnects_total{queue=\"restart\"}");
    assert_eq!(reconnects, Some(1.0), "{text}");
    drop(broker);
}

/// `/readyz`: its status and its text.
async fn readiness(metrics: std::net::SocketAddr) -> (u16, String) {
    tokio::task::spawn_blocking(move || guirpc_tests::http_get(metrics, "/readyz"))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_alarm_is_surfaced_calls_end_by_their_deadline_and_all_is_well_after() {
    let (_one, broker) = private_broker("alarm").await;
    let server = Server::builder()
        .uri(broker.uri())
        .queue("alarm")
        .metrics_addr("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let metrics = server.metrics_addr().unwrap();
    let client = client(&broker, "alarm", Duration::from_secs(2)).await;
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
    // A call running when the alarm goes off: its reply is the server's first publish
    // under the alarm, which is when the broker tells the server it is blocked.
    let patient = client.with_timeout(Duration::from_secs(60));
    let running = tokio::spawn(async move { nap::call(&patient, 2_000).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let broker = tokio::task::spawn_blocking(move || {
        broker.memory_alarm(true);
        broker
    })
    .await
    .unwrap();
    let started = Instant::now();
    let err = add::call(&client, 1, 2).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(4),
        "the call ended only after {elapsed:?}"
    );
    assert!(
        matches!(err, Error::Blocked { .. } | Error::Timeout { .. }),
        "{err:?}"
    );
    // The broker tells a connection it blocks when the connection publishes under the
    // alarm: the notice may come after the call ended by its short timeout.
    let surfaced = poll(Duration::from_secs(10), || async {
        client.blocked().ok_or("not blocked")
    })
    .await;
    assert!(surfaced.is_ok(), "the blocked state is not surfaced");
    if let Error::Blocked { reason, .. } = &err {
        assert!(!reason.is_empty());
    }
    // The server is blocked too: not ready, and its gauge says so.
    let blocked = poll(Duration::from_secs(10), || async {
        match readiness(metrics).await {
            (503, reason) if reason.contains("blocks publishing") => Ok(reason),
            other => Err(other),
        }
    })
    .await;
    assert!(blocked.is_ok(), "{blocked:?}");
    let text = tokio::task::spawn_blocking(move || guirpc_tests::http_get(metrics, "/metrics"))
        .await
        .unwrap()
        .1;
    assert_eq!(
        guirpc_tests::sample(&text, "guirpc_server_broker_blocked{queue=\"alarm\"}"),
        Some(1.0),
        "{text}"
    );

    let broker = tokio::task::spawn_blocking(move || {
        broker.memory_alarm(false);
        broker
    })
    .await
    .unwrap();
    let result = poll(Duration::from_secs(20), || add::call(&client, 3, 4)).await;
    assert_eq!(result.unwrap(), 7);
    assert!(client.blocked().is_none());
    assert_eq!(
        running.await.unwrap().unwrap(),
        2_000,
        "the blocked reply went out after"
    );
    assert_eq!(readiness(metrics).await.0, 200);
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
    while done.load(Ordering::Relaxed) < 1500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

/// A cast the broker confirmed survives a broker restart: it is persistent, on a durable
/// queue, and runs once a server comes.
#[tokio::test(flavor = "multi_thread")]
async fn a_confirmed_cast_survives_a_broker_restart() {
    let (_one, broker) = private_broker("cast-restart").await;
    server(&broker, "casts", 4).await.shutdown().await.unwrap();
    let caster = client(&broker, "casts", Duration::from_secs(5)).await;
    for i in 0..10 {
        record::cast(&caster, format!("restart-cast-{i}"))
            .await
            .unwrap();
    }
    caster.close().await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.stop_app();
        broker.start_app();
        broker
    })
    .await
    .unwrap();
    let _server = server(&broker, "casts", 4).await;
    for i in 0..10 {
        let token = format!("restart-cast-{i}");
        assert!(
            guirpc_tests::wait_recorded(&token, 1, Duration::from_secs(20)).await,
            "{token} was lost in the restart"
        );
    }
    drop(broker);
}

/// Takes items until the stream fails, each within `limit`: the error.
async fn stream_error(items: &mut guirpc_core::ItemStream<u64>, limit: Duration) -> Error {
    use futures_lite::StreamExt;
    loop {
        match tokio::time::timeout(limit, items.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => return err,
            Ok(None) => panic!("the stream ended as if complete"),
            Err(_) => panic!("the stream hangs after a connection dropped"),
        }
    }
}

/// Starts a long stream of `count_up` under `token`, takes 5 items, then closes the
/// connection named `connection`: the stream, the broker, and when it was closed.
async fn stream_then_drop(
    client: &Client,
    token: &str,
    broker: PrivateBroker,
    connection: &'static str,
) -> (guirpc_core::ItemStream<u64>, PrivateBroker, Instant) {
    use futures_lite::StreamExt;
    let mut items = guirpc_tests::count_up::call(client, token.into(), 1_000_000, 5);
    for i in 0..5 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
    }
    let dropped_at = Instant::now();
    let broker = tokio::task::spawn_blocking(move || {
        assert_eq!(broker.close_connections_named(connection), 1);
        broker
    })
    .await
    .unwrap();
    (items, broker, dropped_at)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_callers_connection_drops_ends_with_a_retriable_error() {
    use futures_lite::StreamExt;
    use guirpc_tests::{count_up, progress_of};
    let (_one, broker) = private_broker("stream-client-drop").await;
    let _server = server(&broker, "streams", 8).await;
    let client = client(&broker, "streams", Duration::from_secs(60)).await;
    let (mut items, broker, dropped_at) =
        stream_then_drop(&client, "client-drop", broker, "guirpc client").await;
    let err = stream_error(&mut items, Duration::from_secs(10)).await;
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert!(dropped_at.elapsed() < Duration::from_secs(3));
    assert!(items.next().await.is_none());
    // With no one to take its items, the server's stream stops at its credit and ends by
    // its deadline at the latest; the client reconnects and streams again.
    assert!(client.wait_connected(Duration::from_secs(5)).await);
    let again: Vec<u64> = count_up::call(&client, "client-drop-again".into(), 10, 0)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(again.len(), 10);
    assert!(progress_of("client-drop").produced < 1_000_000);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_servers_connection_drops_ends_with_a_retriable_error() {
    use guirpc_tests::progress_of;
    let (_one, broker) = private_broker("stream-server-drop").await;
    let _server = server(&broker, "streams", 8).await;
    let client = client(&broker, "streams", Duration::from_secs(60)).await;
    let (mut items, broker, dropped_at) =
        stream_then_drop(&client, "server-drop", broker, "guirpc server streams").await;
    // The server reconnects and is delivered the request again: it starts the stream
    // anew, which the caller tells apart from the rest of the old one.
    let err = stream_error(&mut items, Duration::from_secs(20)).await;
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retriable());
    println!(
        "the caller heard of the server's lost connection {:?} after it",
        dropped_at.elapsed()
    );
    drop(items);
    // The stream started again is cancelled with the caller's stream.
    let started = Instant::now();
    while !progress_of("server-drop").dropped && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        progress_of("server-drop").dropped,
        "the restarted stream runs on: {:?}",
        progress_of("server-drop")
    );
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_and_clients_move_to_the_next_node_of_the_uri_list() {
    // Two independent nodes: what a URI list gives a server and a client, whatever the
    // nodes are (the cluster test has them share queues).
    let (turn, (first, second)) = one_at_a_time(|| {
        (
            PrivateBroker::start("failover-a"),
            PrivateBroker::start("failover-b"),
        )
    })
    .await;
    let list = format!("{}, {}", first.uri(), second.uri());
    let metrics = guirpc_core::Metrics::new();
    let _server = Server::builder()
        .uri(&list)
        .queue("failover")
        .metrics(&metrics)
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(&list)
        .queue("failover")
        .timeout(Duration::from_secs(5))
        .metrics(&metrics)
        .connect()
        .await
        .unwrap();
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);
    // The server's replies to the client, on the server's own node (which its probe of
    // direct reply-to found), go on its consuming connection: no quarantine connection.
    let mut names = first.connection_names();
    names.sort();
    assert_eq!(
        names,
        ["guirpc client", "guirpc server failover"],
        "both on the first node"
    );
    // The first node goes away: both move to the second, and calls go on there.
    let stopped = Instant::now();
    let first = tokio::task::spawn_blocking(move || {
        first.stop_app();
        first
    })
    .await
    .unwrap();
    let answered = poll(Duration::from_secs(30), || add::call(&client, 2, 3)).await;
    assert_eq!(answered.unwrap(), 5);
    println!(
        "calls answered again {:?} after the first node stopped",
        stopped.elapsed()
    );
    let names = second.connection_names();
    assert!(
        names.iter().any(|n| n.contains("guirpc server"))
            && names.iter().any(|n| n.contains("guirpc client")),
        "{names:?}"
    );
    let text = metrics.encode();
    for role in ["server", "client"] {
        let series = format!(
            "guirpc_broker_moves_total{{role=\"{role}\",node=\"{}\"}}",
            guirpc_core::config::mask_uri(&second.uri())
        );
        assert_eq!(guirpc_tests::sample(&text, &series), Some(1.0), "{text}");
    }
    drop((first, second, turn));
}

/// Calls `slow_square(i)` for each `i` of `calls`, `inflight` at a time, recording each
/// outcome and when it ended.
async fn square_load(
    client: Client,
    calls: impl Iterator<Item = i64>,
    inflight: usize,
    answered: std::sync::Arc<AtomicUsize>,
) -> Vec<(i64, Result<i64, Error>, Instant)> {
    let mut running = tokio::task::JoinSet::new();
    let mut done = Vec::new();
    for i in calls {
        if running.len() >= inflight {
            done.push(running.join_next().await.unwrap().unwrap());
        }
        let (client, answered) = (client.clone(), answered.clone());
        running.spawn(async move {
            let outcome = slow_square::call(&client, i, 0).await;
            answered.fetch_add(1, Ordering::Relaxed);
            (i, outcome, Instant::now())
        });
    }
    while let Some(outcome) = running.join_next().await {
        done.push(outcome.unwrap());
    }
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_loses_the_node_leading_the_queue_under_load_and_no_call_is_lost() {
    use guirpc_core::config::QueueType;
    use guirpc_tests::broker::PrivateCluster;
    let started = Instant::now();
    let (turn, cluster) = one_at_a_time(|| PrivateCluster::start("cluster", 3)).await;
    println!("a cluster of three formed in {:?}", started.elapsed());
    let uris = cluster.uris();
    let mut servers = Vec::new();
    for _ in 0..2 {
        servers.push(
            Server::builder()
                .uri(&uris)
                .queue("cluster")
                .queue_type(QueueType::Quorum)
                .concurrency(32)
                .prefetch(64)
                .start()
                .await
                .unwrap(),
        );
    }
    let clients: Vec<Client> = {
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(
                Client::builder()
                    .uri(&uris)
                    .queue("cluster")
                    .timeout(Duration::from_secs(10))
                    .retries(5)
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        clients
    };
    let cluster = std::sync::Arc::new(cluster);
    let leader = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.leader_of("cluster"))
            .await
            .unwrap()
            .expect("the quorum queue has a leader")
    };
    // Two clients call until told to stop: the leader's node stops after the first 2,000
    // answers, and the load goes on until 2,000 more have come after it stopped, however
    // fast the calls are.
    let progress = std::sync::Arc::new(AtomicUsize::new(0));
    let enough = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(k, client)| {
            let base = k as i64 * 1_000_000;
            let enough = enough.clone();
            tokio::spawn(square_load(
                client.clone(),
                (base..base + 1_000_000).take_while(move |_| !enough.load(Ordering::Relaxed)),
                32,
                progress.clone(),
            ))
        })
        .collect();
    while progress.load(Ordering::Relaxed) < 2_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping_at = Instant::now();
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.nodes[leader].stop_app())
            .await
            .unwrap();
    }
    // `stop_app` returns once the node has stopped: its connections are closed.
    let stopped_at = Instant::now();
    let answered_by_then = progress.load(Ordering::Relaxed);
    let recovering = tokio::time::timeout(Duration::from_secs(60), async {
        while progress.load(Ordering::Relaxed) < answered_by_then + 2_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    enough.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for load in loads {
        outcomes.extend(load.await.unwrap());
    }
    assert!(
        recovering.is_ok(),
        "fewer than 2,000 calls ended in the minute after the node stopped: {} did",
        progress.load(Ordering::Relaxed) - answered_by_then
    );
    assert_eq!(outcomes.len(), progress.load(Ordering::Relaxed));
    let (mut answered, mut retriable) = (0, 0);
    for (i, outcome, _) in &outcomes {
        match outcome {
            Ok(square) => {
                assert_eq!(*square, i * i);
                answered += 1;
            }
            Err(err) => {
                assert!(err.is_retriable(), "call {i}: {err:?}");
                retriable += 1;
            }
        }
    }
    let first_after = outcomes
        .iter()
        .filter(|(_, outcome, at)| outcome.is_ok() && *at > stopped_at)
        .map(|(_, _, at)| *at)
        .min()
        .expect("calls answered after the stop");
    // The longest wait between two answers: the outage the callers saw.
    let mut times: Vec<Instant> = outcomes.iter().map(|(_, _, at)| *at).collect();
    times.sort_unstable();
    let outage = times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    println!(
        "{answered} answered, {retriable} failed retriably; the leader's node (node {leader}) took {:?} to stop, with {answered_by_then} calls answered; first answer {:?} after it had stopped; longest gap between answers {outage:?}",
        stopped_at - stopping_at,
        first_after - stopped_at
    );
    assert!(
        retriable <= 64,
        "{retriable} calls failed: more than were in flight"
    );
    // The node comes back, rejoins, and the load goes on.
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster.nodes[leader].start_app();
            cluster.wait_running(3, Duration::from_secs(60));
        })
        .await
        .unwrap();
    }
    let more = square_load(clients[0].clone(), 0..500, 16, progress.clone()).await;
    assert!(
        more.iter()
            .all(|(i, outcome, _)| matches!(outcome, Ok(s) if *s == i * i))
    );
    for server in servers {
        server.shutdown().await.unwrap();
    }
    drop(clients);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
    drop(turn);
}
