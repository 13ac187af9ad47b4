//! `--pipes`: a function served through worker processes, in Rust and in Python, against the
//! same function in Rust.

use std::collections::HashMap;
use std::time::Instant;

use guirpc_core::{Client, rpc};

use crate::{Options, Samples, broker, keep_calling};

/// The function the pipe arms serve, in Rust: what the pipe worker does.
#[rpc(name = "bench.sum")]
async fn sum(a: i64, b: i64) -> serde_json::Value {
    serde_json::json!({"sum": a + b})
}

/// The same in Python, one JSON line in and out per call.
const PYTHON_SUM: &str = r#"
import json, sys
for line in sys.stdin:
    args = json.loads(line)["args"]
    print(json.dumps({"ok": {"sum": args["a"] + args["b"]}}), flush=True)
"#;

/// Calls per second through a pipe function (a Rust worker and a Python one, 1 and 4
/// workers each) next to the same function in Rust, at each number of calls in flight.
pub(crate) async fn pipes(options: &Options) {
    use guirpc_core::pipe::PipeFunction;
    let queue = format!("bench.pipes.{}", std::process::id());
    let script = std::env::temp_dir().join(format!("guirpc-bench-sum-{}.py", std::process::id()));
    std::fs::write(&script, PYTHON_SUM).unwrap();
    let rust_worker = vec![env!("CARGO_BIN_EXE_pipe-worker").to_owned()];
    let python_worker = vec!["python3".to_owned(), script.display().to_string()];
    let pipe = |command: &Vec<String>, workers: usize| {
        let mut pipe = PipeFunction::new("pipe.sum", command.clone()).workers(workers);
        pipe.params = vec!["a".into(), "b".into()];
        Some(pipe)
    };
    let arms: Vec<(&str, Option<PipeFunction>)> = vec![
        ("rust #[rpc]", None),
        ("pipe, rust worker x1", pipe(&rust_worker, 1)),
        ("pipe, rust worker x4", pipe(&rust_worker, 4)),
        ("pipe, python x1", pipe(&python_worker, 1)),
        ("pipe, python x4", pipe(&python_worker, 4)),
    ];
    println!(
        "pipe functions vs Rust: {} round(s) of {:?} per arm and in-flight count",
        options.rounds, options.duration
    );
    println!(
        "{:<22} {:>9} {:>10} {:>9} {:>9} {:>9}",
        "arm", "in flight", "calls/s", "p50 µs", "p99 µs", "vs rust"
    );
    let mut rows = Vec::new();
    let mut rust_rates: HashMap<usize, f64> = HashMap::new();
    for (label, pipe) in arms {
        let builder = crate::server().uri(broker()).queue(&queue);
        let (builder, function) = match pipe {
            Some(pipe) => (builder.pipe(pipe), "pipe.sum"),
            None => (builder, "bench.sum"),
        };
        let server = builder.start().await.unwrap();
        let client = Client::builder()
            .uri(broker())
            .queue(&queue)
            .connect()
            .await
            .unwrap();
        for &inflight in &options.inflight {
            let mut samples = Samples::default();
            for _ in 0..options.rounds {
                let started = Instant::now();
                let client = client.clone();
                let latencies = keep_calling(inflight, started + options.duration, move || {
                    let client = client.clone();
                    async move {
                        let answer: serde_json::Value =
                            client.call(function, (20, 22)).await.unwrap();
                        assert_eq!(answer["sum"], 42);
                    }
                })
                .await;
                samples.merge(Samples {
                    latencies,
                    elapsed: started.elapsed(),
                    ..Samples::default()
                });
            }
            let rate = samples.rate();
            let base = *rust_rates.entry(inflight).or_insert(rate);
            println!(
                "{label:<22} {inflight:>9} {rate:>10.0} {:>9} {:>9} {:>8.1}%",
                samples.percentile(0.5),
                samples.percentile(0.99),
                rate / base * 100.0
            );
            rows.push(serde_json::json!({
                "arm": label, "in_flight": inflight, "calls_per_second": rate,
                "p50_us": samples.percentile(0.5), "p99_us": samples.percentile(0.99),
                "ratio_to_rust": rate / base,
            }));
        }
        server.shutdown().await.unwrap();
    }
    let _ = std::fs::remove_file(&script);
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    }
}
