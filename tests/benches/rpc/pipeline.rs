//! `--pipeline`: what spans and metrics cost per call, through the in-memory transport,
//! without a broker and its noise.

use std::time::Instant;

use guirpc_core::{Bytes, Client};

use crate::compare::Observe;
use crate::echo;

/// The cost of observing a call, without a broker and its noise: calls through the
/// in-memory transport (the client's and the server's whole pipelines, codec and dispatch
/// included) on one thread, with nothing on, spans at `info` (formatted to a sink), metrics,
/// and both; rounds alternate the settings.
pub(crate) fn pipeline(calls: u64, rounds: usize) {
    let settings = [
        Observe::Neither,
        Observe::Spans,
        Observe::Metrics,
        Observe::Both,
    ];
    let mut best = [f64::MAX; 4];
    let mut worst = [0f64; 4];
    for _ in 0..rounds.max(1) {
        for (i, &observe) in settings.iter().enumerate() {
            let ns = pipeline_round(calls, observe);
            best[i] = best[i].min(ns);
            worst[i] = worst[i].max(ns);
        }
    }
    println!(
        "in-memory call, 16 B, {calls} calls x {} round(s) per setting, one thread",
        rounds.max(1)
    );
    println!(
        "{:<10} {:>12} {:>12} {:>16}",
        "observe", "best ns", "worst ns", "over none (best)"
    );
    for (i, observe) in settings.iter().enumerate() {
        println!(
            "{:<10} {:>12.0} {:>12.0} {:>+16.0}",
            format!("{observe:?}").to_lowercase(),
            best[i],
            worst[i],
            best[i] - best[0]
        );
    }
}

/// Nanoseconds per call of one round.
fn pipeline_round(calls: u64, observe: Observe) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dispatch = observe.subscriber();
    let metrics = guirpc_core::Metrics::new();
    let mut server = crate::server().queue("bench.pipeline");
    let mut client = Client::builder();
    if observe.metrics() {
        server = server.metrics(&metrics);
        client = client.metrics(&metrics);
    }
    let client = server.in_memory().unwrap().client_with(client);
    let data = Bytes::from(vec![7u8; 16]);
    tracing::dispatcher::with_default(&dispatch, || {
        runtime.block_on(async {
            for _ in 0..calls / 10 {
                echo::call(&client, data.clone()).await.unwrap();
            }
            let started = Instant::now();
            for _ in 0..calls {
                echo::call(&client, data.clone()).await.unwrap();
            }
            started.elapsed().as_nanos() as f64 / calls as f64
        })
    })
}
