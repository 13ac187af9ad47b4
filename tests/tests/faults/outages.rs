//! The broker restarted, or blocking publishers under a memory alarm: calls end by their
//! deadline, readiness says why, and all is well after.

use std::time::{Duration, Instant};

use guirpc_core::{Error, Server};
use guirpc_tests::{add, nap, poll, record, until_running};

use crate::{client, private_broker, server};

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
    assert!(
        until_running(&client, 1, Duration::from_secs(10)).await,
        "the call never started"
    );

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

/// Retries and scheduled casts wait in the broker, durable: a broker restart while they
/// wait delays nothing and loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn retries_and_scheduled_casts_waiting_across_a_broker_restart_run_after_it() {
    use guirpc_tests::jobs::{failing_job, runs_of, timed_job, wait_runs};
    let (_one, broker) = private_broker("retry-restart").await;
    let start = |broker: &guirpc_tests::broker::PrivateBroker| {
        let policy = guirpc_core::retry::RetryPolicy::default()
            .with_backoff("6s..6s")
            .unwrap();
        let policy = guirpc_core::retry::RetryPolicy {
            attempts: 2,
            ..policy
        };
        Server::builder()
            .uri(broker.uri())
            .queue("jobs")
            .retry(policy)
            .start()
    };
    let server = start(&broker).await.unwrap();
    let caster = client(&broker, "jobs", Duration::from_secs(5)).await;
    let tokens: Vec<String> = (0..5).map(|i| format!("retry-restart-{i}")).collect();
    for token in &tokens {
        failing_job::cast(&caster, token.clone()).await.unwrap();
    }
    timed_job::cast_after(&caster, Duration::from_secs(6), "scheduled-restart".into())
        .await
        .unwrap();
    for token in &tokens {
        assert_eq!(wait_runs(token, 1, Duration::from_secs(10)).await.len(), 1);
    }
    // Every retry now waits on the ladder; the broker goes down and comes back.
    server.shutdown().await.unwrap();
    caster.close().await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.stop_app();
        broker.start_app();
        broker
    })
    .await
    .unwrap();
    let server = start(&broker).await.unwrap();
    for token in &tokens {
        assert_eq!(
            wait_runs(token, 2, Duration::from_secs(30)).await.len(),
            2,
            "the retry of {token} was lost in the restart"
        );
    }
    assert_eq!(
        wait_runs("scheduled-restart", 1, Duration::from_secs(30))
            .await
            .len(),
        1,
        "the scheduled cast was lost in the restart"
    );
    // After their last attempt, each is a dead letter.
    let mut settings = guirpc_core::Settings::default().broker();
    settings.uri = broker.uri();
    let letters = guirpc_core::dead::DeadLetters::open(&settings, "jobs", None)
        .await
        .unwrap();
    let mut count = 0;
    for _ in 0..100 {
        count = letters.count().await.unwrap();
        if count == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count, 5);
    assert_eq!(runs_of(&tokens[0]).len(), 2, "no run beyond the attempts");
    server.shutdown().await.unwrap();
}
