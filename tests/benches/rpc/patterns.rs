//! `--patterns`: casts, events, streamed items and the shell pipes, each beside a baseline
//! doing the same broker work in the same run, the arms alternating round by round; then
//! the cold-start and memory guards.
//!
//! - **casts**: `M` persistent, mandatory casts published on a confirming channel with `N`
//!   awaiting their confirm at once, consumed and acknowledged one by one by a server;
//!   against raw lapin publishing the same (persistent, mandatory, confirmed, `N` at once)
//!   to a durable queue and a raw consumer (prefetch 128, the server's) acknowledging each.
//! - **events**: `M` events published to a topic exchange (persistent, confirmed, `N` at
//!   once), taken by `K` subscribing services (1 or 3), each acknowledging every event;
//!   against raw lapin publishing to a topic exchange bound by `K` queues with a consumer
//!   each.
//! - **streamed items** and **shell pipes**: see `streams.rs` and `shell.rs`.
//!
//! Every service, raw or guirpc, consumes on a connection of its own, as services on their
//! own machines would; the publisher has another. A round's rate is `M` divided by the
//! time from the first publish to the last acknowledgement of the last consumer.

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

use crate::shell::{guards, shell};
use crate::streams::streams;
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
pub(crate) fn expiring() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), lapin::types::AMQPValue::LongInt(60_000));
    arguments
}

/// How long a round may take at most before the bench gives up on it.
const LIMIT: Duration = Duration::from_secs(120);

pub(crate) async fn patterns(options: &Options) {
    let messages = options.messages;
    println!(
        "patterns against their baselines: {} round(s) of {messages} messages per arm and in-flight count",
        options.rounds
    );
    println!(
        "{:<34} {:>9} {:>11} {:>11} {:>9} {:>9}",
        "arm", "in flight", "median /s", "worst /s", "vs base", "worst vs"
    );
    let mut results = Results::default();
    let wanted = |part: &str| options.only.is_empty() || options.only.iter().any(|p| p == part);
    if wanted("casts") {
        casts(options, &mut results).await;
    }
    if wanted("events") {
        for services in [1, 3] {
            events(options, services, &mut results).await;
        }
    }
    if wanted("streams") {
        streams(options, &mut results).await;
    }
    if wanted("shell") {
        shell(options, &mut results).await;
    }
    if wanted("guards") {
        guards(options).await;
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&results.rows).unwrap()).unwrap();
    }
    if let Some(path) = &options.svg {
        let path = crate::charts::workspace_path(path);
        crate::charts::draw_patterns(&path, &results.rows).unwrap();
        println!("chart: {}", path.display());
    }
}

/// The median and the worst of a list of rates (sorted, lowest first, by the way).
pub(crate) fn median_and_worst(rates: &mut [f64]) -> (f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0])
}

/// Each pattern's rows: a baseline and the arm measured against it.
#[derive(Default)]
pub(crate) struct Results {
    rows: Vec<serde_json::Value>,
}

impl Results {
    /// Prints and keeps `pattern` against raw lapin at `inflight`.
    pub(crate) fn raw(
        &mut self,
        pattern: &str,
        inflight: usize,
        raw: &mut [f64],
        rates: &mut [f64],
    ) {
        self.pair(pattern, ("raw lapin", "guirpc"), inflight, raw, rates);
    }

    /// Prints and keeps `pattern`'s arm (`names.1`) against its baseline (`names.0`).
    pub(crate) fn pair(
        &mut self,
        pattern: &str,
        (base_name, arm_name): (&str, &str),
        inflight: usize,
        base: &mut [f64],
        rates: &mut [f64],
    ) {
        let (base_median, base_worst) = median_and_worst(base);
        let (median, worst) = median_and_worst(rates);
        let (ratio, worst_ratio) = (median / base_median, worst / base_worst);
        let arm = |name: &str| format!("{pattern}: {name}");
        println!(
            "{:<34} {inflight:>9} {base_median:>11.0} {base_worst:>11.0}",
            arm(base_name)
        );
        println!(
            "{:<34} {inflight:>9} {median:>11.0} {worst:>11.0} {:>8.1}% {:>8.1}%",
            arm(arm_name),
            ratio * 100.0,
            worst_ratio * 100.0
        );
        self.rows.push(serde_json::json!({
            "pattern": pattern,
            "baseline": base_name,
            "arm": arm_name,
            "in_flight": inflight,
            "baseline_median": base_median,
            "baseline_worst": base_worst,
            "median": median,
            "worst": worst,
            "ratio": ratio,
            "worst_ratio": worst_ratio,
        }));
    }
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

/// Runs `run(0..messages)` with `inflight` running at once, each task taking the next.
pub(crate) async fn in_flight<F, Fut>(messages: u64, inflight: usize, run: F)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..inflight)
        .map(|_| {
            let (next, run) = (next.clone(), run.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= messages {
                        break;
                    }
                    run(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Publishes `messages` persistent messages, `inflight` awaiting their confirm at once.
async fn raw_publish(
    channel: lapin::Channel,
    exchange: &str,
    routing_key: &str,
    mandatory: bool,
    messages: u64,
    inflight: usize,
) {
    let (exchange, routing_key): (Arc<str>, Arc<str>) = (exchange.into(), routing_key.into());
    in_flight(messages, inflight, move |_| {
        let (channel, exchange, routing_key) =
            (channel.clone(), exchange.clone(), routing_key.clone());
        async move {
            let confirm = channel
                .basic_publish(
                    exchange.as_ref().into(),
                    routing_key.as_ref().into(),
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
    .await;
}

/// A raw consumer of `queue`, on a connection of its own, acknowledging each message
/// (prefetch 128, the server's) and counting into `counter`; closing the connection ends
/// it. With `PATTERNS_RAW_SHARED` in the environment, on the publisher's connection
/// instead (one process doing all: what this baseline did before, and what no pair of
/// guirpc services can do).
async fn raw_consume(
    publisher: &Connection,
    queue: &str,
    counter: Arc<AtomicU64>,
) -> Option<Connection> {
    let own = match std::env::var_os("PATTERNS_RAW_SHARED") {
        Some(_) => None,
        None => Some(
            Connection::connect(&broker(), ConnectionProperties::default())
                .await
                .unwrap(),
        ),
    };
    let channel = own
        .as_ref()
        .unwrap_or(publisher)
        .create_channel()
        .await
        .unwrap();
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
            // Queued on the channel without waiting for the write, in order, as a busy
            // consumer would (guirpc's server acknowledges several at once instead).
            futures_lite::future::poll_once(delivery.ack(BasicAckOptions::default())).await;
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    own
}

pub(crate) async fn wait_for(counter: &AtomicU64, target: u64) {
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

async fn casts(options: &Options, results: &mut Results) {
    let messages = options.messages;
    let pid = std::process::id();
    let (raw_queue, queue) = (
        format!("bench.casts.raw.{pid}"),
        format!("bench.casts.{pid}"),
    );
    let (raw_connection, raw_channel) = raw_channel().await;
    durable_queue(&raw_channel, &raw_queue).await;
    let raw_counter = Arc::new(AtomicU64::new(0));
    let consumer = raw_consume(&raw_connection, &raw_queue, raw_counter.clone()).await;
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
            raw_publish(
                raw_channel.clone(),
                "",
                &raw_queue,
                true,
                messages,
                inflight,
            )
            .await;
            wait_for(&raw_counter, target).await;
            raw_rates.push(messages as f64 / started.elapsed().as_secs_f64());

            let target = CASTS.load(Ordering::Relaxed) + messages;
            let started = Instant::now();
            let caller = client.clone();
            in_flight(messages, inflight, move |_| {
                let client = caller.clone();
                async move { count::cast(&client).await.unwrap() }
            })
            .await;
            wait_for(&CASTS, target).await;
            rates.push(messages as f64 / started.elapsed().as_secs_f64());
        }
        results.raw("casts", inflight, &mut raw_rates, &mut rates);
    }
    server.shutdown().await.unwrap();
    let _ = raw_channel
        .queue_delete(raw_queue.as_str().into(), Default::default())
        .await;
    let _ = raw_connection.close(200, "".into()).await;
    if let Some(consumer) = consumer {
        let _ = consumer.close(200, "".into()).await;
    }
}

async fn events(options: &Options, services: usize, results: &mut Results) {
    let messages = options.messages;
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
    let (mut raw_queues, mut consumers) = (Vec::new(), Vec::new());
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
        consumers.push(raw_consume(&raw_connection, &queue, raw_counter.clone()).await);
        raw_queues.push(queue);
    }
    let (mut servers, mut queues) = (Vec::new(), Vec::new());
    for i in 0..services {
        let queue = format!("bench.events.{pid}.{services}.{i}");
        queues.push(format!("{queue}.bench_counted"));
        let server = Server::builder()
            .uri(broker())
            .queue(queue)
            .queue_arguments(expiring())
            .start()
            .await
            .unwrap();
        servers.push(server);
    }
    let client = Client::builder().uri(broker()).connect().await.unwrap();
    let each = messages * services as u64;
    for &inflight in &options.inflight {
        let (mut raw_rates, mut rates) = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            let target = raw_counter.load(Ordering::Relaxed) + each;
            let started = Instant::now();
            raw_publish(
                raw_channel.clone(),
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
            let caller = client.clone();
            in_flight(messages, inflight, move |_| {
                let client = caller.clone();
                async move { client.publish("bench.patterns.made", 0u64).await.unwrap() }
            })
            .await;
            wait_for(&EVENTS, target).await;
            rates.push(messages as f64 / started.elapsed().as_secs_f64());
        }
        let pattern = format!(
            "events, {services} service{}",
            if services > 1 { "s" } else { "" }
        );
        results.raw(&pattern, inflight, &mut raw_rates, &mut rates);
    }
    for server in servers {
        server.shutdown().await.unwrap();
    }
    // The guirpc services' subscriber queues are durable and bound to the events exchange
    // until they expire: left, the next arm's events would go to them too, unconsumed, and
    // their confirms wait for the disk.
    for queue in queues.iter().chain(&raw_queues) {
        let _ = raw_channel
            .queue_delete(queue.as_str().into(), Default::default())
            .await;
    }
    let _ = raw_channel
        .exchange_delete(raw_exchange.as_str().into(), Default::default())
        .await;
    let _ = raw_connection.close(200, "".into()).await;
    for consumer in consumers.into_iter().flatten() {
        let _ = consumer.close(200, "".into()).await;
    }
}
