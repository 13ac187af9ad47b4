//! `#[subscribe]` functions served by `guirpc serve`'s servers, on the real broker: each
//! service gets each event once (its servers sharing it), broadcast subscribers every
//! instance, failures are retried then dead-lettered, undecodable events dead-lettered at
//! once. One test, in steps: every server of this binary serves these subscribers, so the
//! steps must not overlap.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use guirpc_core::lapin::Connection;
use guirpc_core::lapin::options::{BasicGetOptions, QueueDeleteOptions};
use guirpc_core::{Client, Server, subscribe};
use guirpc_tests::{expiring, unique_queue, uri};
use serde::{Deserialize, Serialize};

const TOPIC: &str = "guirpc-test-orders.created";

#[derive(Debug, Serialize, Deserialize)]
struct Order {
    token: String,
    /// How many times the handler fails before it succeeds.
    fail_times: u32,
}

fn seen() -> &'static Mutex<HashMap<String, u32>> {
    static SEEN: std::sync::OnceLock<Mutex<HashMap<String, u32>>> = std::sync::OnceLock::new();
    SEEN.get_or_init(Mutex::default)
}

fn count(key: &str) -> u32 {
    seen().lock().unwrap().get(key).copied().unwrap_or(0)
}

/// Records an order; fails as often as the order asks. Three runs in all, 200 then 400 ms
/// apart.
#[subscribe(
    "guirpc-test-orders.created",
    retry(attempts = 3, backoff = "200ms..1s", jitter = 0)
)]
async fn on_order(order: Order) -> Result<(), String> {
    let runs = {
        let mut seen = seen().lock().unwrap();
        let runs = seen.entry(order.token.clone()).or_default();
        *runs += 1;
        *runs
    };
    if runs <= order.fail_times {
        return Err(format!("failing run {runs} of {}", order.token));
    }
    Ok(())
}

/// Every instance records every order.
#[subscribe("guirpc-test-orders.*", broadcast)]
fn on_any_order(order: Order) {
    *seen()
        .lock()
        .unwrap()
        .entry(format!("any:{}", order.token))
        .or_default() += 1;
}

async fn wait_count(key: &str, expected: u32) {
    guirpc_tests::until(Duration::from_secs(10), || count(key) >= expected).await;
    // Then a moment more, for an extra delivery that must not come.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(count(key), expected, "{key}");
}

async fn server(queue: &str, dead_letters: Option<&str>) -> Server {
    let mut settings = guirpc_core::Settings::default().service();
    settings.broker.uri = uri();
    settings.queue = queue.to_owned();
    if let Some(exchange) = dead_letters {
        settings.dead_letter_exchange = exchange.to_owned();
    }
    Server::builder()
        .settings(settings)
        .queue_arguments(expiring())
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn subscribers_get_events_once_per_service_or_per_instance_and_failures_end_dead_lettered() {
    let token = |step: &str| format!("{step}-{}", std::process::id());
    let publisher = Client::builder().uri(uri()).connect().await.unwrap();

    // 1. Two services, one of them with two servers: once per service, and once per
    // instance for the broadcast subscriber.
    let (qa, qb) = (unique_queue("svc-a"), unique_queue("svc-b"));
    let (a1, a2, b1) = (
        server(&qa, None).await,
        server(&qa, None).await,
        server(&qb, None).await,
    );
    let t1 = token("once");
    publisher
        .publish(
            TOPIC,
            Order {
                token: t1.clone(),
                fail_times: 0,
            },
        )
        .await
        .unwrap();
    wait_count(&t1, 2).await;
    wait_count(&format!("any:{t1}"), 3).await;
    // `guirpc list` sees them.
    let description = guirpc_tests::client(&qa).await.describe().await.unwrap();
    let names: Vec<(&str, &str, bool)> = description
        .subscriptions
        .iter()
        .map(|s| (s.name.as_str(), s.pattern.as_str(), s.broadcast))
        .collect();
    assert_eq!(
        names,
        [
            ("on_any_order", "guirpc-test-orders.*", true),
            ("on_order", "guirpc-test-orders.created", false)
        ]
    );
    a2.shutdown().await.unwrap();
    b1.shutdown().await.unwrap();

    // 2. A handler that fails once runs again and succeeds.
    let t2 = token("retried");
    publisher
        .publish(
            TOPIC,
            Order {
                token: t2.clone(),
                fail_times: 1,
            },
        )
        .await
        .unwrap();
    wait_count(&t2, 2).await;
    a1.shutdown().await.unwrap();

    // 3. One that always fails runs its three attempts in each subscribing service, then
    // is a dead letter saying why; an event that does not decode is dead-lettered without
    // running. Service c dead-letters to an exchange of its own, d to `<queue>.dead`.
    let (qc, qd) = (unique_queue("svc-c"), unique_queue("svc-d"));
    let plain = Connection::connect(&uri(), Default::default())
        .await
        .unwrap();
    let channel = plain.create_channel().await.unwrap();
    let (dlx, letters) = guirpc_tests::dead_letters(&channel, &qc).await;
    let c1 = server(&qc, Some(&dlx)).await;
    let d1 = server(&qd, None).await;
    let t3 = token("doomed");
    publisher
        .publish(
            TOPIC,
            Order {
                token: t3.clone(),
                fail_times: 99,
            },
        )
        .await
        .unwrap();
    publisher.publish(TOPIC, "not an order").await.unwrap();
    wait_count(&t3, 6).await;
    // Three letters each: the doomed order (from the pool queue) and the undecodable event
    // (from both subscribers' queues: the broadcast one dead-letters it too).
    let mut dead = 0;
    for _ in 0..100 {
        match channel
            .basic_get(letters.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(_) => dead += 1,
            None if dead >= 3 => break,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert_eq!(dead, 3, "dead-lettered events of service c");
    let mut broker = guirpc_core::Settings::default().broker();
    broker.uri = uri();
    let d_letters = guirpc_core::dead::DeadLetters::open(&broker, &qd, None)
        .await
        .unwrap();
    let mut list = Vec::new();
    for _ in 0..100 {
        list = d_letters.list(10).await.unwrap();
        if list.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(list.len(), 3, "dead-lettered events of service d: {list:?}");
    let doomed = list
        .iter()
        .find(|letter| letter.code == "handler_error")
        .expect("the doomed order's letter");
    assert_eq!(doomed.function, "on_order");
    assert_eq!(doomed.attempts, 3);
    assert_eq!(doomed.topic.as_deref(), Some(TOPIC));
    assert_eq!(doomed.queue, format!("{qd}.on_order"));
    assert!(doomed.message.contains("failing run"), "{}", doomed.message);
    assert_eq!(
        list.iter()
            .filter(|letter| letter.code == "bad_request")
            .count(),
        2,
        "{list:?}"
    );
    d1.shutdown().await.unwrap();

    // 4. A subscription queue deleted under a running server: the server declares it
    // again (it reconnects, as for a lost connection) and serves the events after.
    channel
        .queue_delete(
            format!("{qc}.on_order").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await
        .unwrap();
    let t4 = token("redeclared");
    for _ in 0..100 {
        if count(&t4) > 0 {
            break;
        }
        // Events published before the queue is back are dropped, as for any unbound topic.
        publisher
            .publish(
                TOPIC,
                Order {
                    token: t4.clone(),
                    fail_times: 0,
                },
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        count(&t4) > 0,
        "the deleted subscription was never served again"
    );
    assert!(!c1.is_finished());
    c1.shutdown().await.unwrap();
}
