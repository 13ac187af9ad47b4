//! Signals, in a test binary of their own: its process receives real SIGTERMs, which no
//! other test may be listening for.

use std::process::Command;
use std::time::{Duration, Instant};

use guirpc_core::ServeError;
use guirpc_tests::{nap, serve};

fn signal_self() {
    let status = Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The first signal lets running calls finish; a second one during that grace period stops
/// at once, naming what it abandoned.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_during_the_grace_period_stops_at_once() {
    let (server, client) = serve("second-signal").await;
    let running = tokio::spawn(async move { nap::call(&client, 10_000).await });
    // The call is running once the server counts it.
    let ping = guirpc_tests::client(server.queue()).await;
    while ping.ping().await.unwrap().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = tokio::spawn(server.run_until_signal());
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal_self();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !stopping.is_finished(),
        "the first signal did not wait for the running call"
    );
    let second = Instant::now();
    signal_self();
    let result = tokio::time::timeout(Duration::from_secs(3), stopping)
        .await
        .expect("the second signal did not stop the server at once")
        .unwrap();
    assert!(second.elapsed() < Duration::from_secs(2));
    match result {
        Err(ServeError::Interrupted { running }) => assert_eq!(running, 1),
        other => panic!("{other:?}"),
    }
    running.abort();

    // One signal alone: a graceful stop once the running call is done.
    let (server, client) = serve("one-signal").await;
    let call = tokio::spawn(async move { nap::call(&client, 600).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = tokio::spawn(server.run_until_signal());
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal_self();
    stopping.await.unwrap().unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 600);
}
