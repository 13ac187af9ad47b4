//! Functions that run longer than the broker's consumer timeout (how long a delivery may
//! stay unacknowledged before the broker closes its channel and takes every request on it
//! back), on private nodes whose timeout is three seconds, checked every second.
//!
//! On RabbitMQ 3.12 and later the server declares its queue with a consumer timeout of its
//! own, to match its functions' `max_run`: the channel is never taken away. On 3.10 the
//! broker's timeout cannot be raised for a queue: it takes the channel away once, the
//! requests on it come back, and none of those still running here is run again.

use std::time::Duration;

use guirpc_core::{Client, Server};
use guirpc_tests::broker::{PrivateBroker, one_at_a_time};
use guirpc_tests::{add, count_up, record_then_nap, recorded_times};

const CONSUMER_TIMEOUT: Duration = Duration::from_secs(3);

async fn private_broker(
    name: &'static str,
) -> (tokio::sync::MutexGuard<'static, ()>, PrivateBroker) {
    one_at_a_time(move || PrivateBroker::start_with_consumer_timeout(name, CONSUMER_TIMEOUT)).await
}

async fn serve(broker: &PrivateBroker, queue: &str) -> (Server, Client) {
    let server = Server::builder()
        .uri(broker.uri())
        .queue(queue)
        .concurrency(16)
        .prefetch(16)
        .metrics_addr("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker.uri())
        .queue(queue)
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    (server, client)
}

/// The server's `guirpc_server_reconnects_total`.
async fn reconnects(server: &Server) -> f64 {
    let addr = server.metrics_addr().unwrap();
    let queue = server.queue().to_owned();
    let text = tokio::task::spawn_blocking(move || guirpc_tests::http_get(addr, "/metrics").1)
        .await
        .unwrap();
    let series = format!("guirpc_server_reconnects_total{{queue=\"{queue}\"}}");
    guirpc_tests::sample(&text, &series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_four_consumer_timeouts_long_runs_once_and_every_call_beside_it_is_answered() {
    let (_one, broker) = private_broker("long-run").await;
    let (server, client) = serve(&broker, "long").await;
    let token = format!("long-{}", std::process::id());
    let long = {
        let client = client.clone();
        let token = token.clone();
        tokio::spawn(async move {
            record_then_nap::call(&client, token, 4 * CONSUMER_TIMEOUT.as_millis() as u64).await
        })
    };
    // Ordinary calls all the while, some in flight whenever the broker looks.
    let mut answered = 0;
    let started = std::time::Instant::now();
    while !long.is_finished() {
        assert!(
            started.elapsed() < Duration::from_secs(50),
            "the long call hangs"
        );
        let calls: Vec<_> = (0..8i64)
            .map(|i| {
                let client = client.clone();
                tokio::spawn(async move { add::call(&client, i, 1).await })
            })
            .collect();
        for (i, call) in calls.into_iter().enumerate() {
            assert_eq!(call.await.unwrap().unwrap(), i as i64 + 1);
            answered += 1;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    long.await.unwrap().unwrap();
    assert!(answered > 100, "only {answered} calls beside the long one");
    assert_eq!(
        recorded_times(&token),
        Some(1),
        "the long function ran again"
    );
    let lost = reconnects(&server).await;
    if broker.honours_queue_consumer_timeouts() {
        assert_eq!(
            lost,
            0.0,
            "RabbitMQ {} took the channel away",
            broker.version()
        );
    } else {
        // RabbitMQ 3.10: once, and never again for the same request.
        assert_eq!(
            lost,
            1.0,
            "the channel taken away once (RabbitMQ {})",
            broker.version()
        );
    }
    assert_eq!(add::call(&client, 2, 2).await.unwrap(), 4);
    drop(server);
    drop(broker);
}

/// A stream that runs longer than the consumer timeout: whole where the queue carries a
/// timeout of its own (RabbitMQ 3.12 and later). On 3.10 the channel its items travel on
/// is taken away, and the caller is told at once with a retriable error (the request,
/// delivered again, starts the stream anew, which the caller tells apart by its item
/// numbers); it never hangs and never sees an item twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_longer_than_the_consumer_timeout_ends_whole_or_with_a_retriable_error() {
    let (_one, broker) = private_broker("long-stream").await;
    let (server, client) = serve(&broker, "long-stream").await;
    let token = format!("long-stream-{}", std::process::id());
    // Ten items, 800 ms apart: eight seconds, nearly three timeouts.
    let mut items = count_up::call(&client, token.clone(), 10, 800);
    let mut received = Vec::new();
    let mut ended = None;
    while let Some(item) = futures_lite::StreamExt::next(&mut items).await {
        match item {
            Ok(item) => received.push(item),
            Err(err) => {
                ended = Some(err);
                break;
            }
        }
    }
    assert_eq!(received, (0..received.len() as u64).collect::<Vec<u64>>());
    if broker.honours_queue_consumer_timeouts() {
        assert!(ended.is_none(), "{ended:?}");
        assert_eq!(received.len(), 10);
        assert_eq!(reconnects(&server).await, 0.0);
    } else {
        let err = ended.expect("RabbitMQ 3.10 cuts a stream longer than its consumer timeout");
        assert!(err.is_retriable(), "{err:?}");
    }
    drop(server);
    drop(broker);
}
