//! `--scale-out`: 1, 2, 4 and 8 server processes on one queue, each call doing real work;
//! and `--serve`, the server process it starts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guirpc_core::{Client, rpc};

use crate::charts::{Step, draw_scale_out, workspace_path};
use crate::{Options, Samples, broker, keep_calling, serve_while_stdin_is_open};

/// Calls this server process has run (`work`), reported when it stops.
static WORKED: AtomicU64 = AtomicU64::new(0);

/// Real work per call for the scale-out run: `ms` milliseconds of sleeping (`sleep`: a
/// call waiting on I/O) or of computing (`cpu`: a busy core).
#[rpc(name = "bench.work")]
fn work(kind: String, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    if kind == "cpu" {
        let mut x = 1u64;
        while Instant::now() < until {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        }
    } else {
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
    }
    WORKED.fetch_add(1, Ordering::Relaxed);
}

/// Serves the bench functions on `queue` until standard input closes, running at most
/// `concurrency` calls at once: one server process of the scale-out run. Prints `ready`,
/// then, when it stops, how many `bench.work` calls it ran.
pub(crate) async fn serve_until_stdin_closes(queue: &str, concurrency: usize) {
    let server = crate::server()
        .uri(broker())
        .queue(queue)
        .queue_arguments(guirpc_tests::expiring())
        .concurrency(concurrency)
        .prefetch(u16::try_from(concurrency * 2).unwrap_or(u16::MAX))
        .start()
        .await
        .unwrap();
    serve_while_stdin_is_open(server).await;
    println!("{}", WORKED.load(Ordering::Relaxed));
}

/// The same load of calls doing real work (2 ms of sleep, then 2 ms of CPU) against 1, 2,
/// 4 and 8 server processes on one queue, each running at most `--server-concurrency`
/// calls at once: calls per second, and each server's share (fairness across competing
/// consumers). `--svg` draws the curves.
pub(crate) async fn scale_out(options: &Options) {
    let queue = format!("bench.scale.{}", std::process::id());
    let inflight = options.inflight.iter().copied().max().unwrap_or(64);
    let client = Client::builder()
        .uri(broker())
        .queue(&queue)
        .connect()
        .await
        .unwrap();
    let per_server = options.server_concurrency;
    println!(
        "scale-out: {} ms of work per call, {inflight} calls in flight, at most {per_server} calls at once per server, {:?} per step",
        options.work_ms,
        options.duration * options.rounds as u32
    );
    let mut curves = Vec::new();
    let mut rows = Vec::new();
    for kind in ["sleep", "cpu"] {
        println!("\n{kind}: {} ms per call", options.work_ms);
        println!(
            "{:>8} {:>10} {:>9} {:>9} {:>9} {:>9} {:>18}",
            "servers", "calls/s", "p50 µs", "p99 µs", "vs 1", "linear", "shares min..max"
        );
        let mut steps: Vec<Step> = Vec::new();
        for servers in [1usize, 2, 4, 8] {
            let mut children: Vec<std::process::Child> = (0..servers)
                .map(|_| {
                    std::process::Command::new(std::env::current_exe().unwrap())
                        .args(["--serve", &queue, "--server-concurrency"])
                        .arg(per_server.to_string())
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .unwrap()
                })
                .collect();
            let mut outputs = Vec::new();
            for child in &mut children {
                let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
                let mut line = String::new();
                std::io::BufRead::read_line(&mut out, &mut line).unwrap();
                assert_eq!(line.trim(), "ready");
                outputs.push(out);
            }
            let mut samples = Samples::default();
            for _ in 0..options.rounds {
                let started = Instant::now();
                let client = client.clone();
                let ms = options.work_ms;
                let latencies = keep_calling(inflight, started + options.duration, move || {
                    let client = client.clone();
                    async move {
                        work::call(&client, kind.to_owned(), ms).await.unwrap();
                    }
                })
                .await;
                samples.merge(Samples {
                    latencies,
                    elapsed: started.elapsed(),
                    ..Samples::default()
                });
            }
            let mut counts = Vec::new();
            for (mut child, mut out) in children.into_iter().zip(outputs) {
                drop(child.stdin.take());
                let mut line = String::new();
                std::io::BufRead::read_line(&mut out, &mut line).unwrap();
                counts.push(line.trim().parse::<f64>().unwrap_or(0.0));
                child.wait().unwrap();
            }
            let total: f64 = counts.iter().sum();
            let shares: Vec<f64> = counts
                .iter()
                .map(|c| c / (total / servers as f64).max(1.0))
                .collect();
            let step = Step {
                servers,
                rate: samples.rate(),
                p50: samples.percentile(0.5),
                p99: samples.percentile(0.99),
                shares,
            };
            let base = steps.first().map_or(step.rate, |first| first.rate);
            let (min, max) = step
                .shares
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
            println!(
                "{:>8} {:>10.0} {:>9} {:>9} {:>8.2}x {:>8.0}% {:>8.2}..{:<8.2}",
                step.servers,
                step.rate,
                step.p50,
                step.p99,
                step.rate / base,
                step.rate / (base * servers as f64) * 100.0,
                min,
                max
            );
            rows.push(serde_json::json!({
                "work": kind, "servers": servers, "calls_per_second": step.rate,
                "p50_us": step.p50, "p99_us": step.p99, "ratio_to_one": step.rate / base,
                "shares": step.shares,
            }));
            steps.push(step);
        }
        curves.push((kind, steps));
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
    }
    if let Some(path) = &options.svg {
        let path = workspace_path(path);
        draw_scale_out(&path, &curves, options.work_ms, per_server).unwrap();
        println!("\nwrote {}", path.display());
    }
}
