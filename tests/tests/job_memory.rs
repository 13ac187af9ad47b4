//! Ten thousand failing casts with their retries pending, in a process of its own, so that
//! its resident memory says what the server holds of them (the caster lives here too, and
//! keeps nothing): a waiting retry is in the broker, not in the server.

use std::time::{Duration, Instant};

use guirpc_core::Server;
use guirpc_core::retry::RetryPolicy;
use guirpc_tests::jobs::{failing_job, runs_of};
use guirpc_tests::{expiring, unique_queue, uri};

const CASTS: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_failing_casts_wait_for_their_retries_in_the_broker_not_the_server() {
    let queue = unique_queue("job-memory");
    // Two runs each, the retry 40 s after the first: all ten thousand wait at once.
    let policy = RetryPolicy {
        attempts: 2,
        ..RetryPolicy::default().with_backoff("40s..40s").unwrap()
    };
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .concurrency(64)
        .retry(policy)
        .start()
        .await
        .unwrap();
    let client = guirpc_tests::client(&queue).await;
    let tokens: Vec<String> = (0..CASTS).map(|i| format!("{queue}-{i}")).collect();
    let first_runs = || tokens.iter().filter(|t| !runs_of(t).is_empty()).count();
    let started = Instant::now();
    let (mut baseline, mut sent) = (0, 0);
    for chunk in tokens.chunks(500) {
        let casts: Vec<_> = chunk
            .iter()
            .map(|token| {
                let (client, token) = (client.clone(), token.clone());
                tokio::spawn(async move { failing_job::cast(&client, token).await })
            })
            .collect();
        for cast in casts {
            cast.await.unwrap().unwrap();
        }
        sent += chunk.len();
        if sent == 1000 {
            guirpc_tests::until(Duration::from_secs(30), || first_runs() >= 1000).await;
            baseline = guirpc_tests::rss_kib();
        }
    }
    assert!(
        guirpc_tests::until(Duration::from_secs(60), || first_runs() == CASTS).await,
        "only {} of {CASTS} casts ran",
        first_runs()
    );
    let elapsed = started.elapsed();
    let peak = guirpc_tests::rss_kib();
    println!(
        "{CASTS} failing casts cast and run once in {elapsed:?}; RSS {baseline} KiB after 1,000, {peak} KiB with all {CASTS} retries pending"
    );
    assert!(
        elapsed < Duration::from_secs(38),
        "the retries began before all were pending: {elapsed:?}"
    );
    assert!(
        peak < baseline + 8 * 1024,
        "memory grew from {baseline} KiB to {peak} KiB with the retries pending"
    );
    // Then each runs its second time and is a dead letter: none lost, none looping.
    assert!(
        guirpc_tests::until(Duration::from_secs(90), || tokens.iter().all(|t| runs_of(
            t
        )
        .len()
            == 2))
        .await,
        "some retries never ran"
    );
    let mut broker = guirpc_core::Settings::default().broker();
    broker.uri = uri();
    let letters = guirpc_core::dead::DeadLetters::open(&broker, &queue, None)
        .await
        .unwrap();
    let mut count = 0;
    for _ in 0..200 {
        count = letters.count().await.unwrap();
        if count as usize == CASTS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count as usize, CASTS);
    let dropped = letters.purge(|_| true).await.unwrap();
    assert_eq!(dropped.len(), CASTS);
    server.shutdown().await.unwrap();
}
