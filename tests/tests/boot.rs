//! A broker that accepts connections before it has booted: RabbitMQ opens its listeners a
//! moment before its last boot steps, and RabbitMQ 4.0 drops the direct replies published
//! in that moment. A server that connects then takes no request until a reply to its own
//! address comes back, so every caller hears.

use std::time::Duration;

use guirpc_core::{Client, Server};
use guirpc_tests::add;
use guirpc_tests::broker::{PrivateBroker, one_at_a_time};

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_connects_while_the_broker_boots_answers_every_call() {
    let (_one, broker) = one_at_a_time(|| PrivateBroker::start_booting("booting")).await;
    let server = Server::builder()
        .uri(broker.uri())
        .queue("booting")
        .concurrency(64)
        .prefetch(64)
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker.uri())
        .queue("booting")
        .timeout(Duration::from_secs(15))
        .connect()
        .await
        .unwrap();
    let calls: Vec<_> = (0..64i64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { add::call(&client, i, 1).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let sum = call.await.unwrap();
        assert_eq!(
            sum.unwrap_or_else(|err| panic!("call {i}: {err}")),
            i as i64 + 1
        );
    }
    server.shutdown().await.unwrap();
}
