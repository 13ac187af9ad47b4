//! Casts as jobs: retries with growing delays, dead letters that say why and go back,
//! scheduled casts. The waits are the broker's (the delay ladder), not the server's.

use std::time::{Duration, Instant, SystemTime};

use guirpc_core::dead::DeadLetters;
use guirpc_core::lapin::types::{AMQPValue, FieldTable};
use guirpc_core::{Client, Error, Metrics, Server};
use guirpc_tests::jobs::{
    doomed_job, fixable_job, flaky_job, runs_of, set_broken, timed_job, wait_runs,
};
use guirpc_tests::{expiring, unique_queue, uri};

async fn serve(test: &str) -> (Server, Client, Metrics) {
    let queue = unique_queue(test);
    let metrics = Metrics::new();
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .metrics(&metrics)
        .start()
        .await
        .expect("server starts");
    (server, guirpc_tests::client(&queue).await, metrics)
}

async fn dead_letters(queue: &str) -> DeadLetters {
    open_dead_letters(queue).await.unwrap()
}

async fn open_dead_letters(queue: &str) -> Result<DeadLetters, Error> {
    let mut broker = guirpc_core::Settings::default().broker();
    broker.uri = uri();
    DeadLetters::open(&broker, queue, None).await
}

/// How late a wait on the ladder may come, here: a few milliseconds per rung, and a loaded
/// machine's scheduling.
const LATENESS: Duration = Duration::from_millis(700);

#[tokio::test(flavor = "multi_thread")]
async fn a_cast_that_fails_twice_runs_a_third_time_after_growing_delays() {
    let (server, client, metrics) = serve("job-flaky").await;
    let token = format!("{}-flaky", server.queue());
    flaky_job::cast(&client, token.clone(), 2).await.unwrap();
    let runs = wait_runs(&token, 3, Duration::from_secs(20)).await;
    assert_eq!(runs.len(), 3, "three runs: two failures, then success");
    let (first, second) = (runs[1] - runs[0], runs[2] - runs[1]);
    println!("delays {first:?} then {second:?}");
    // 300 ms then 600 ms, each shortened by up to a tenth for jitter.
    assert!(
        first >= Duration::from_millis(270) && first < Duration::from_millis(300) + LATENESS,
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(540) && second < Duration::from_millis(600) + LATENESS,
        "{second:?}"
    );
    let text = metrics.encode();
    let retries = format!(
        "guirpc_server_retries_total{{queue=\"{}\",function=\"flaky_job\"}} 2",
        server.queue()
    );
    assert!(text.contains(&retries), "{text}");
    assert!(text.contains("attempt=\"3\""), "{text}");
    assert_eq!(dead_letters(server.queue()).await.count().await.unwrap(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cast_that_always_fails_runs_its_attempts_then_is_a_dead_letter_saying_why() {
    let (server, client, _) = serve("job-doomed").await;
    let token = format!("{}-doomed", server.queue());
    let cast_at = SystemTime::now();
    doomed_job::cast(&client, token.clone()).await.unwrap();
    // A cast that can never run: a dead letter at once, never retried.
    client.cast("no_such_job", ()).await.unwrap();
    let runs = wait_runs(&token, 3, Duration::from_secs(20)).await;
    assert_eq!(runs.len(), 3);
    let letters = dead_letters(server.queue()).await;
    let mut list = Vec::new();
    for _ in 0..100 {
        list = letters.list(10).await.unwrap();
        if list.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(list.len(), 2, "{list:?}");
    let doomed = list
        .iter()
        .find(|l| l.function == "doomed_job")
        .expect("doomed_job's letter");
    assert_eq!(doomed.code, "handler_error");
    assert!(
        doomed.message.contains("printer is on fire"),
        "{}",
        doomed.message
    );
    assert_eq!(doomed.attempts, 3);
    assert_eq!(doomed.queue, server.queue());
    assert!(!doomed.instance.is_empty());
    let since = |t: Option<u64>| {
        t.unwrap() + 1
            >= cast_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs()
    };
    assert!(since(doomed.first_failure) && doomed.first_failure <= doomed.last_failure);
    assert_eq!(
        doomed.arguments().unwrap(),
        serde_json::json!({ "token": token })
    );
    let unknown = list
        .iter()
        .find(|l| l.function == "no_such_job")
        .expect("the unknown one's letter");
    assert_eq!((unknown.code.as_str(), unknown.attempts), ("not_found", 1));
    // Reading them kept them.
    assert_eq!(letters.count().await.unwrap(), 2);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_sent_back_after_a_fix_run_once_each_and_leave_the_queue_empty() {
    let (server, client, _) = serve("job-fixed").await;
    let tokens: Vec<String> = (0..3)
        .map(|i| format!("{}-fix-{i}", server.queue()))
        .collect();
    for token in &tokens {
        set_broken(token, true);
        fixable_job::cast(&client, token.clone()).await.unwrap();
    }
    let letters = dead_letters(server.queue()).await;
    assert!(
        guirpc_tests::until(Duration::from_secs(10), || tokens.iter().all(|t| runs_of(
            t
        )
        .len()
            == 1))
        .await
    );
    let mut count = 0;
    for _ in 0..100 {
        count = letters.count().await.unwrap();
        if count == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(count, 3);
    // Dropping some by id, then sending the rest back.
    for token in &tokens {
        set_broken(token, false);
    }
    let sent = letters.retry(|_| true).await.unwrap();
    assert_eq!(sent.len(), 3);
    for token in &tokens {
        assert_eq!(
            wait_runs(token, 2, Duration::from_secs(10)).await.len(),
            2,
            "{token} ran once more"
        );
    }
    assert_eq!(letters.count().await.unwrap(), 0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_cast_runs_no_sooner_than_asked_and_within_the_lateness() {
    let (server, client, _) = serve("job-scheduled").await;
    let queue = server.queue().to_owned();
    let (after, at) = (format!("{queue}-after"), format!("{queue}-at"));
    let asked = Instant::now();
    timed_job::cast_after(&client, Duration::from_millis(1500), after.clone())
        .await
        .unwrap();
    let when = SystemTime::now() + Duration::from_millis(1200);
    let asked_at = Instant::now();
    client
        .cast_at(when, "timed_job", serde_json::json!({ "token": at }))
        .await
        .unwrap();
    let ran_after = wait_runs(&after, 1, Duration::from_secs(10)).await;
    let ran_at = wait_runs(&at, 1, Duration::from_secs(10)).await;
    let (waited, waited_at) = (ran_after[0] - asked, ran_at[0] - asked_at);
    println!("asked 1.5 s: ran after {waited:?}; asked 1.2 s: ran after {waited_at:?}");
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_millis(1500) + LATENESS,
        "{waited:?}"
    );
    assert!(
        waited_at >= Duration::from_millis(1190)
            && waited_at < Duration::from_millis(1200) + LATENESS,
        "{waited_at:?}"
    );
    // The longest wait is enforced; a queue no server declared is refused at once.
    let too_long = guirpc_core::delay::MAX_DELAY + Duration::from_secs(1);
    let err = timed_job::cast_after(&client, too_long, "never".into())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(why) if why.contains("49.7 days")),
        "{err}"
    );
    let nobody = guirpc_tests::client(&unique_queue("job-nobody")).await;
    let err = timed_job::cast_after(&nobody, Duration::from_secs(1), "lost".into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoRoute { .. }), "{err:?}");
    // The client still casts after the refused binding.
    timed_job::cast(&client, format!("{queue}-still"))
        .await
        .unwrap();
    assert_eq!(
        wait_runs(&format!("{queue}-still"), 1, Duration::from_secs(10))
            .await
            .len(),
        1
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expiring_services_dead_letters_outlive_the_expiry_while_it_serves_and_go_with_it() {
    // The service queue expires 1.5 s after its last server left; nothing consumes the
    // dead-letter queue, yet it keeps its letters for as long as the server serves.
    let queue = unique_queue("job-dead-expiry");
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(1_500));
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(arguments)
        .start()
        .await
        .expect("server starts");
    let client = guirpc_tests::client(&queue).await;
    client.cast("no_such_job", ()).await.unwrap();
    // Three expiries with no one looking.
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let letters = dead_letters(&queue).await;
    assert_eq!(letters.count().await.unwrap(), 1);
    drop(letters);
    server.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(4_000)).await;
    let gone = open_dead_letters(&queue).await.unwrap_err();
    assert!(gone.to_string().contains("no dead-letter queue"), "{gone}");
}
