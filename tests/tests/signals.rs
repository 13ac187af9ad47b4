//! Signals, in a test binary of their own: its process receives real SIGTERMs, which no
//! other test may be listening for.

use std::process::Command;
use std::time::{Duration, Instant};

use guirpc_core::{ServeError, Server};
use guirpc_tests::{nap, serve, until_queue, until_running};
use tokio::task::JoinHandle;

fn signal_self() {
    let status = Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Runs `server` until a signal, in a task of its own, once it listens: the first poll of
/// `run_until_signal` installs its handlers, so a signal sent after this returns is heard
/// (and does not kill the test process).
async fn listening(server: Server) -> JoinHandle<Result<(), ServeError>> {
    let mut run = Box::pin(server.run_until_signal());
    assert!(
        futures_lite::future::poll_once(&mut run).await.is_none(),
        "the server stopped before any signal"
    );
    tokio::spawn(run)
}

/// Waits until the server of `queue` runs a call.
async fn wait_running(queue: &str) {
    let ping = guirpc_tests::client(queue).await;
    assert!(
        until_running(&ping, 1, Duration::from_secs(10)).await,
        "the call never started"
    );
}

/// The first signal lets running calls finish; a second one during that grace period stops
/// at once, naming what it abandoned.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_signal_during_the_grace_period_stops_at_once() {
    let (server, client) = serve("second-signal").await;
    let queue = server.queue().to_owned();
    let running = tokio::spawn(async move { nap::call(&client, 10_000).await });
    wait_running(&queue).await;
    let stopping = listening(server).await;
    signal_self();
    // The first signal is heard once the server stops consuming, to finish what it runs.
    assert!(
        until_queue(&queue, Duration::from_secs(5), |q| q.consumer_count() == 0).await,
        "the server went on consuming after the first signal"
    );
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
    let queue = server.queue().to_owned();
    let call = tokio::spawn(async move { nap::call(&client, 600).await });
    wait_running(&queue).await;
    let stopping = listening(server).await;
    signal_self();
    stopping.await.unwrap().unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 600);
}
