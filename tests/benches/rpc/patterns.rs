//! `--patterns`: casts and events, each beside raw lapin doing the same broker work in the
//! same run, the arms alternating round by round.
//!
//! - **casts**: `M` persistent, mandatory casts published on a confirming channel with `N`
//!   awaiting their confirm at once, consumed and acknowledged one by one by a server;
//!   against raw lapin publishing the same (persistent, mandatory, confirmed, `N` at once)
//!   to a durable queue and a raw consumer (prefetch 128, the server's) acknowledging each.
//! - **events**: `M` events published to a topic exchange (persistent, confirmed, `N` at
//!   once), taken by `K` subscribing services (1 or 3), each acknowledging every event;
//!   against raw lapin publishing to a topic exchange bound by `K` queues with a consumer
//!   each.
//!
//! A round's rate is `M` divided by the time from the first publish to the last
//! acknowledgement of the last consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use guirpc_core::{Client, Server, rpc, subscribe};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use crate::{Options, broker};

/// The casts the guirpc arm's server has run.
static CASTS: AtomicU64 = AtomicU64::new(0);
/// The events the guirpc arm's subscribers have taken, all services together.
static EVENTS: AtomicU64 = AtomicU64::new(0);

/// Counts a cast.
#[rpc(name = "bench.count")]
async fn count() {
    CASTS.fetch_add(1, Ordering::Relaxed);
}

/// Counts an event.
#[subscribe("bench.patterns.#", name = "bench_counted")]
async fn counted(_event: u64) {
    EVENTS.fetch_add(1, Ordering::Relaxed);
}

/// Queues that go a minute after their last consumer: nothing left on the broker.
fn expiring() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), lapin::types::AMQPValue::LongInt(60_000));
    arguments
}

/// How long a round may take at most before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(120);

pub(crate) async fn patterns(options: &Options) {
    let messages = options.messages;
    println!(
        "patterns against raw lapin: {} round(s) of {messages} messages per arm and in-flight count",
        options.rounds
    );
    println!(
        "{:<26} {:>9} {:>11} {:>11} {:>9} {:>9}",
        "arm", "in flight", "median /s", "worst /s", "vs raw", "worst vs"
    );
    casts(options, messages).await;
    for services in [1, 3] {
        events(options, messages, services).await;
    }
}

/// The median and the worst of a list of rates.
fn median_and_worst(rates: &mut [f64]) -> (f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0])
}

fn row(arm: &str, inflight: usize, rates: &mut [f64], raw: Option<(f64, f64)>) -> (f64, f64) {
    let (median, worst) = median_and_worst(rates);
    let (ratio, worst_ratio) = match raw {
        Some((raw_median, raw_worst)) => (
            format!("{:.1}%", median / raw_median * 100.0),
            format!("{:.1}%", worst / raw_worst * 100.0),
        ),
        None => ("".into(), "".into()),
    };
    println!("{arm:<26} {inflight:>9} {median:>11.0} {worst:>11.0} {ratio:>9} {worst_ratio:>9}");
    (median, worst)
}

/// A connection and a confirming channel of raw lapin's.
async fn raw_channel() -> (Connection, lapin::Channel) {
    let connection = Connection::connect(&broker(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    (connection, channel)
}

/// Publishes `messages` persistent messages, `inflight` awaiting their confirm at once.
async fn raw_publish(
    channel: &lapin::Channel,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    messages: u64,
    inflight: usize,
) {
    let next = Arc::new(AtomicU64::new(0));
    let publishers: Vec<_> = (0..inflight)
        .map(|_| {
            let (channel, next) = (channel.clone(), next.clone());
            let (exchange, routing_key) = (exchange.to_owned(), routing_key.to_owned());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < messages {
                    let confirm = channel
                        .basic_publish(
                            exchange.as_str().into(),
                            routing_key.as_str().into(),
                            BasicPublishOptions {
                                mandatory,
                                ..Default::default()
                            },
                            // What the guirpc arms send: `()` or a u64, in MessagePack.
                            &[0xc0],
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await
                        .unwrap()
                        .await
                        .unwrap();
                    assert!(confirm.is_ack());
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
}

/// A raw consumer of `queue` acknowledging each message, counting into `counter`.
async fn raw_consume(connection: &Connection, queue: &str, counter: Arc<AtomicU64>) {
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(128, BasicQosOptions::default())
        .await
        .unwrap();
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        let _channel = channel;
        while let Some(Ok(delivery)) = consumer.next().await {
            delivery.ack(BasicAckOptions::default()).await.unwrap();
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
}

async fn wait_for(counter: &AtomicU64, target: u64) {
    let started = Instant::now();
    while counter.load(Ordering::Relaxed) < target {
        assert!(
            started.elapsed() < LIMIT,
            "only {} of {target} in {LIMIT:?}",
            counter.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
}

async fn durable_queue(channel: &lapin::Channel, queue: &str) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
}

async fn casts(options: &Options, messages: u64) {
    let pid = std::process::id();
    let (raw_queue, queue) = (
        format!("bench.casts.raw.{pid}"),
        format!("bench.casts.{pid}"),
    );
    let (raw_connection, raw_channel) = raw_channel().await;
    durable_queue(&raw_channel, &raw_queue).await;
    let raw_counter = Arc::new(AtomicU64::new(0));
    raw_consume(&raw_connection, &raw_queue, raw_counter.clone()).await;
    let server = crate::server()
        .uri(broker())
        .queue(&queue)
        .queue_arguments(expiring())
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker())
        .queue(&queue)
        .connect()
        .await
        .unwrap();
    for &inflight in &options.inflight {
        let (mut raw_rates, mut rates) = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            let target = raw_counter.load(Ordering::Relaxed) + messages;
            let started = Instant::now();
            raw_publish(&raw_channel, "", &raw_queue, true, messages, inflight).await;
            wait_for(&raw_counter, target).await;
            raw_rates.push(messages as f64 / started.elapsed().as_secs_f64());

            let target = CASTS.load(Ordering::Relaxed) + messages;
            let started = Instant::now();
            let next = Arc::new(AtomicU64::new(0));
            let casters: Vec<_> = (0..inflight)
                .map(|_| {
                    let (client, next) = (client.clone(), next.clone());
                    tokio::spawn(async move {
                        while next.fetch_add(1, Ordering::Relaxed) < messages {
                            count::cast(&client).await.unwrap();
                        }
                    })
                })
                .collect();
            for caster in casters {
                caster.await.unwrap();
            }
            wait_for(&CASTS, target).await;
            rates.push(messages as f64 / started.elapsed().as_secs_f64());
        }
        let raw = row("casts: raw lapin", inflight, &mut raw_rates, None);
        row("casts: guirpc", inflight, &mut rates, Some(raw));
    }
    server.shutdown().await.unwrap();
    let _ = raw_channel
        .queue_delete(raw_queue.as_str().into(), Default::default())
        .await;
    let _ = raw_connection.close(200, "".into()).await;
}

async fn events(options: &Options, messages: u64, services: usize) {
    let pid = std::process::id();
    let raw_exchange = format!("bench.events.raw.{pid}");
    let (raw_connection, raw_channel) = raw_channel().await;
    raw_channel
        .exchange_declare(
            raw_exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let raw_counter = Arc::new(AtomicU64::new(0));
    let mut raw_queues = Vec::new();
    for i in 0..services {
        let queue = format!("bench.events.raw.{pid}.{i}");
        durable_queue(&raw_channel, &queue).await;
        raw_channel
            .queue_bind(
                queue.as_str().into(),
                raw_exchange.as_str().into(),
                "bench.patterns.#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        raw_consume(&raw_connection, &queue, raw_counter.clone()).await;
        raw_queues.push(queue);
    }
    let mut servers = Vec::new();
    for i in 0..services {
        // Each service's subscriber queue (`{queue}.bench_counted`) expires with it.
        let server = Server::builder()
            .uri(broker())
            .queue(format!("bench.events.{pid}.{services}.{i}"))
            .queue_arguments(expiring())
            .start()
            .await
            .unwrap();
        servers.push(server);
    }
    let client = Client::builder().uri(broker()).connect().await.unwrap();
    let each = messages * services as u64;
    let label = |what: &str| format!("events x{services}: {what}");
    for &inflight in &options.inflight {
        let (mut raw_rates, mut rates) = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            let target = raw_counter.load(Ordering::Relaxed) + each;
            let started = Instant::now();
            raw_publish(
                &raw_channel,
                &raw_exchange,
                "bench.patterns.made",
                false,
                messages,
                inflight,
            )
            .await;
            wait_for(&raw_counter, target).await;
            raw_rates.push(messages as f64 / started.elapsed().as_secs_f64());

            let target = EVENTS.load(Ordering::Relaxed) + each;
            let started = Instant::now();
            let next = Arc::new(AtomicU64::new(0));
            let publishers: Vec<_> = (0..inflight)
                .map(|_| {
                    let (client, next) = (client.clone(), next.clone());
                    tokio::spawn(async move {
                        while next.fetch_add(1, Ordering::Relaxed) < messages {
                            client.publish("bench.patterns.made", 0u64).await.unwrap();
                        }
                    })
                })
                .collect();
            for publisher in publishers {
                publisher.await.unwrap();
            }
            wait_for(&EVENTS, target).await;
            rates.push(messages as f64 / started.elapsed().as_secs_f64());
        }
        let raw = row(&label("raw lapin"), inflight, &mut raw_rates, None);
        row(&label("guirpc"), inflight, &mut rates, Some(raw));
    }
    for server in servers {
        server.shutdown().await.unwrap();
    }
    for queue in raw_queues {
        let _ = raw_channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    let _ = raw_channel
        .exchange_delete(raw_exchange.as_str().into(), Default::default())
        .await;
    let _ = raw_connection.close(200, "".into()).await;
}
