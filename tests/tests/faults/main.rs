//! Broker faults: each test breaks a private RabbitMQ node of its own (never the shared
//! one) and proves that no call is lost and no caller hangs.

use std::time::Duration;

use guirpc_core::{Client, Server};
use guirpc_tests::broker::{PrivateBroker, one_at_a_time};

mod connections;
mod failover;
mod outages;
mod streams;

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
