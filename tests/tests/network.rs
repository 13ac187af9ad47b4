//! The network between a process and its broker: connections that go silent (a firewall
//! or NAT dropped them: no FIN, no RST), connections reset, and a slow network. Each test
//! puts the test suite's own TCP proxy between the process and a private node.

use std::time::{Duration, Instant};

use guirpc_core::{Client, Error, Server};
use guirpc_tests::broker::{PrivateBroker, one_at_a_time};
use guirpc_tests::proxy::Proxy;
use guirpc_tests::{add, nap};

/// The heartbeat of the processes under test: a silent connection is noticed within two
/// heartbeats, checked every half heartbeat.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// Two and a half heartbeats, and a second for a loaded machine.
const NOTICED_WITHIN: Duration = Duration::from_millis(6_000);

async fn private_broker(
    name: &'static str,
) -> (tokio::sync::MutexGuard<'static, ()>, PrivateBroker) {
    one_at_a_time(move || PrivateBroker::start(name)).await
}

async fn proxy_to(broker: &PrivateBroker) -> Proxy {
    let upstream = broker.uri();
    let authority = upstream
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    Proxy::start(authority).await
}

async fn server(uri: String, queue: &str) -> Server {
    Server::builder()
        .uri(uri)
        .queue(queue)
        .heartbeat(HEARTBEAT)
        .metrics_addr("127.0.0.1:0")
        .start()
        .await
        .unwrap()
}

async fn client(uri: String, queue: &str, timeout: Duration) -> Client {
    Client::builder()
        .uri(uri)
        .queue(queue)
        .heartbeat(HEARTBEAT)
        .timeout(timeout)
        .connect()
        .await
        .unwrap()
}

/// `/readyz`'s status.
async fn readiness(server: &Server) -> u16 {
    let addr = server.metrics_addr().unwrap();
    tokio::task::spawn_blocking(move || guirpc_tests::http_get(addr, "/readyz").0)
        .await
        .unwrap()
}

/// Polls `/readyz` until it answers `status`, at most `limit`; how long that took.
async fn readiness_becomes(server: &Server, status: u16, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if readiness(server).await == status {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_whose_connection_goes_silent_is_unready_at_once_reconnects_and_loses_no_call() {
    let (_one, broker) = private_broker("silent-server").await;
    let proxy = proxy_to(&broker).await;
    let server = server(proxy.uri(&broker.uri()), "silent").await;
    let client = client(broker.uri(), "silent", Duration::from_secs(60)).await;
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);
    assert_eq!(readiness(&server).await, 200);

    // Calls in flight on the server as its connection goes silent, and calls made after.
    let before: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { nap::call(&client, 1000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Silent, and no way through for a while: the server stays unready until there is.
    proxy.refuse(true);
    assert!(
        proxy.freeze() >= 1,
        "the server's connection went through the proxy"
    );
    let frozen_at = Instant::now();
    let after: Vec<_> = (0..10)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { add::call(&client, i, 1).await })
        })
        .collect();
    let noticed = readiness_becomes(&server, 503, Duration::from_secs(30)).await;
    let noticed = noticed.expect("/readyz still answers 200 on a silent connection");
    assert!(
        noticed <= NOTICED_WITHIN,
        "the silent connection was noticed after {noticed:?} (heartbeat {HEARTBEAT:?})"
    );
    tokio::time::sleep(HEARTBEAT).await;
    assert_eq!(
        readiness(&server).await,
        503,
        "unready while it cannot reconnect"
    );
    // It reconnects once the network lets it, and answers every call.
    proxy.refuse(false);
    assert!(
        readiness_becomes(&server, 200, Duration::from_secs(30))
            .await
            .is_some(),
        "the server did not reconnect"
    );
    for call in before {
        assert_eq!(call.await.unwrap().unwrap(), 1000);
    }
    for (i, call) in after.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as i64 + 1);
    }
    assert!(
        frozen_at.elapsed() < Duration::from_secs(40),
        "the calls took {:?}",
        frozen_at.elapsed()
    );
    drop(server);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_whose_connection_goes_silent_fails_its_calls_retriable_and_reconnects() {
    let (_one, broker) = private_broker("silent-client").await;
    let proxy = proxy_to(&broker).await;
    let _server = server(broker.uri(), "silent").await;
    // Calls whose deadline is far: they must fail when the silence is noticed, not then.
    let client = client(proxy.uri(&broker.uri()), "silent", Duration::from_secs(120)).await;
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);

    let pending: Vec<_> = (0..10)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { nap::call(&client, 60_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.freeze(), 1, "the client has one connection");
    let frozen_at = Instant::now();
    for call in pending {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Connection { .. }), "{err:?}");
        assert!(err.is_retriable(), "{err:?}");
    }
    let failed_after = frozen_at.elapsed();
    assert!(
        failed_after <= NOTICED_WITHIN,
        "the calls failed {failed_after:?} after their connection went silent (heartbeat {HEARTBEAT:?})"
    );
    assert!(
        client.wait_connected(Duration::from_secs(20)).await,
        "the client did not reconnect"
    );
    assert_eq!(add::call(&client, 2, 3).await.unwrap(), 5);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_connection_fails_the_clients_calls_at_once_and_both_sides_come_back() {
    let (_one, broker) = private_broker("reset").await;
    let proxy = proxy_to(&broker).await;
    let server = server(proxy.uri(&broker.uri()), "reset").await;
    let client = client(proxy.uri(&broker.uri()), "reset", Duration::from_secs(120)).await;
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);
    let pending: Vec<_> = (0..5)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { nap::call(&client, 60_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        proxy.reset() >= 2,
        "the server's and the client's connections"
    );
    let reset_at = Instant::now();
    for call in pending {
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    }
    assert!(
        reset_at.elapsed() < Duration::from_secs(3),
        "the calls failed only {:?} after the reset",
        reset_at.elapsed()
    );
    assert!(client.wait_connected(Duration::from_secs(20)).await);
    assert!(
        readiness_becomes(&server, 200, Duration::from_secs(30))
            .await
            .is_some()
    );
    assert_eq!(add::call(&client, 2, 3).await.unwrap(), 5);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_calls_over_a_network_with_20ms_each_way_are_all_answered() {
    let (_one, broker) = private_broker("latency").await;
    let proxy = proxy_to(&broker).await;
    proxy.delay(Duration::from_millis(20));
    let _server = server(proxy.uri(&broker.uri()), "latency").await;
    let client = client(proxy.uri(&broker.uri()), "latency", Duration::from_secs(60)).await;
    const CALLS: i64 = 20_000;
    const IN_FLIGHT: i64 = 200;
    let workers: Vec<_> = (0..IN_FLIGHT)
        .map(|worker| {
            let client = client.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                for i in (worker..CALLS).step_by(IN_FLIGHT as usize) {
                    assert_eq!(add::call(&client, i, 1).await.unwrap(), i + 1);
                    answered += 1;
                }
                answered
            })
        })
        .collect();
    let mut answered = 0;
    for worker in workers {
        answered += worker.await.unwrap();
    }
    assert_eq!(answered, CALLS);
    drop(broker);
}
