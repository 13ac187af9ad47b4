//! What hostile reply addresses cost the callers of a service: the same load of good calls
//! with and without one hostile request among every fifty, rounds alternating, on one
//! broker (`$GUIRPC_TEST_URI`, or the local one).
//!
//! The hostile requests come from a plain AMQP client, each with a direct reply-to address
//! the broker cannot decode (a reply to it makes RabbitMQ close the connection the reply
//! travels on), of the kinds `tests/tests/it/hostile.rs` sends.
//!
//! ```text
//! cargo bench -p guirpc-tests --bench hostile
//! cargo bench -p guirpc-tests --bench hostile -- --calls 20000 --rounds 5 --in-flight 64
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use guirpc_core::{Client, Server, rpc};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};

#[derive(Parser)]
struct Args {
    /// Good calls per round.
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// One hostile request among this many good calls.
    #[arg(long, default_value_t = 50)]
    every: usize,
    /// Rounds of each arm.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Ignored: `cargo bench` passes it.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Adds one.
#[rpc]
async fn plus_one(n: u64) -> u64 {
    n + 1
}

const HOSTILE: [&str; 3] = [
    "amq.rabbitmq.reply-to.AAAA.BBBB",
    "amq.rabbitmq.reply-to.!!!!.????",
    "amq.rabbitmq.reply-to.g1h2AAdyZXBseUAxAAAAAAAAAAAAAAAA.a2tra2tra2tra2tra2tra2s=",
];

fn uri() -> String {
    std::env::var("GUIRPC_TEST_URI").unwrap_or_else(|_| guirpc_core::config::DEFAULT_URI.to_owned())
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let queue = format!("guirpc-bench.hostile.{}", std::process::id());
    let server = Server::builder()
        .uri(uri())
        .queue(queue.as_str())
        .metrics_addr("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(uri())
        .queue(queue.as_str())
        .connect()
        .await
        .unwrap();
    let plain = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = plain.create_channel().await.unwrap();
    // Warm up: the client's node becomes known to the server.
    for n in 0..200 {
        plus_one::call(&client, n).await.unwrap();
    }
    let mut clean = Vec::new();
    let mut hostile = Vec::new();
    for round in 0..args.rounds {
        for with_hostile in [false, true] {
            let started = Instant::now();
            let calls = load(&client, &channel, &queue, &args, with_hostile).await;
            let rate = calls as f64 / started.elapsed().as_secs_f64();
            println!(
                "round {round}: {:<22} {rate:>9.0} calls/s",
                if with_hostile {
                    "1 hostile in every 50"
                } else {
                    "good calls only"
                }
            );
            if with_hostile {
                hostile.push(rate);
            } else {
                clean.push(rate);
            }
        }
    }
    let reconnects = reconnects(&server, &queue);
    let (clean_median, clean_worst) = median_and_worst(&mut clean);
    let (hostile_median, hostile_worst) = median_and_worst(&mut hostile);
    println!();
    println!("| arm | median calls/s | worst |");
    println!("|---|---|---|");
    println!("| good calls only | {clean_median:.0} | {clean_worst:.0} |");
    println!(
        "| 1 hostile in every {} | {hostile_median:.0} | {hostile_worst:.0} |",
        args.every
    );
    println!(
        "with hostile requests: {:.1}% of the clean rate (median), {:.1}% (worst against median); server reconnections: {reconnects}",
        100.0 * hostile_median / clean_median,
        100.0 * hostile_worst / clean_median,
    );
    let _ = channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await;
    let _ = plain.close(200, "done".into()).await;
    client.close().await;
    server.shutdown().await.unwrap();
}

/// Runs `args.calls` good calls, `args.in_flight` at once, with a hostile request published
/// before every `args.every`-th when `with_hostile`; how many were answered.
async fn load(
    client: &Client,
    channel: &lapin::Channel,
    queue: &str,
    args: &Args,
    with_hostile: bool,
) -> usize {
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..args.in_flight)
        .map(|_| {
            let client = client.clone();
            let next = next.clone();
            let calls = args.calls;
            tokio::spawn(async move {
                let mut answered = 0;
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if n >= calls {
                        return answered;
                    }
                    assert_eq!(
                        plus_one::call(&client, n as u64).await.unwrap(),
                        n as u64 + 1
                    );
                    answered += 1;
                }
            })
        })
        .collect();
    // One hostile request each time another `every` good calls have started.
    let mut published = 0;
    while with_hostile && published < args.calls / args.every {
        let started = next.load(std::sync::atomic::Ordering::Relaxed);
        while published < (started / args.every).min(args.calls / args.every) {
            let mut headers = FieldTable::default();
            headers.insert(
                "guirpc-function".into(),
                AMQPValue::LongString("plus_one".into()),
            );
            let properties = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_correlation_id(format!("hostile-{published}").into())
                .with_reply_to(HOSTILE[published % HOSTILE.len()].into())
                .with_headers(headers);
            channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    b"[1]",
                    properties,
                )
                .await
                .unwrap();
            published += 1;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let mut answered = 0;
    for worker in workers {
        answered += worker.await.unwrap();
    }
    answered
}

fn median_and_worst(rates: &mut [f64]) -> (f64, f64) {
    rates.sort_by(f64::total_cmp);
    (rates[rates.len() / 2], rates[0])
}

fn reconnects(server: &Server, queue: &str) -> String {
    let addr = server.metrics_addr().unwrap();
    let text = guirpc_tests::http_get(addr, "/metrics").1;
    let series = format!("guirpc_server_reconnects_total{{queue=\"{queue}\"}}");
    guirpc_tests::sample(&text, &series).map_or_else(|| "?".to_owned(), |n| n.to_string())
}
