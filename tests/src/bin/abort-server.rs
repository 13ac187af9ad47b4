//! A server whose function `crash` aborts the whole process, for the delivery-limit test:
//! guirpc cannot catch an abort, so only the broker can stop such a request from taking
//! down every server in turn.
//!
//! `abort-server URI QUEUE DELIVERY_LIMIT DEAD_LETTER_EXCHANGE`: serves on a quorum queue
//! until the request kills it.

use guirpc_core::config::QueueType;
use guirpc_core::{Server, rpc};

/// Aborts the process: no panic to catch, no reply, no acknowledgement.
#[rpc]
fn crash() {
    std::process::abort();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [uri, queue, limit, dead_letters] = args.as_slice() else {
        panic!("usage: abort-server URI QUEUE DELIVERY_LIMIT DEAD_LETTER_EXCHANGE");
    };
    let mut settings = guirpc_core::config::ServiceSettings::default();
    settings.dead_letter_exchange = dead_letters.clone();
    let server = Server::builder()
        .settings(settings)
        .uri(uri)
        .queue(queue)
        .queue_type(QueueType::Quorum)
        .delivery_limit(limit.parse().expect("a number"))
        .start()
        .await
        .expect("serves");
    println!("serving");
    server.run_until_signal().await.expect("stops cleanly");
}
