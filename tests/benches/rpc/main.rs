//! guirpc against the least an RPC call can cost on RabbitMQ, in one run on one broker.
//!
//! The baseline is a minimal request/reply written directly on lapin, in its strongest
//! form: one consumer that echoes each request to its `reply_to` (every reply published
//! from its own task, acknowledged after it), and a client on direct reply-to matching
//! replies by correlation ID, every request published from the task of its own call, so
//! lapin batches the frames of concurrent calls. Against it: a `#[rpc]` echo function served
//! by the guirpc server, called through the async client and through the blocking client,
//! and the async client *observed*: a server and client of their own with metrics on and a
//! log subscriber taking every span at `info` (formatted as `guirpc serve` would, to a
//! sink), on a runtime of their own so that the other arms pay nothing for it.
//!
//! Arms alternate round by round so that machine noise hits all alike.
//!
//! ```text
//! cargo bench -p guirpc-tests --bench rpc                         # the comparison table
//! cargo bench -p guirpc-tests --bench rpc -- --json results.json  # ... also as JSON
//! cargo bench -p guirpc-tests --bench rpc -- --duration 2s --rounds 5
//! cargo bench -p guirpc-tests --bench rpc -- --memory 1000000     # steady memory
//! cargo bench -p guirpc-tests --bench rpc -- --scale-out --svg docs/scale-out.svg  # 1..8 servers, real work
//! cargo bench -p guirpc-tests --bench rpc -- --pipeline 200000     # observability's own cost
//! cargo bench -p guirpc-tests --bench rpc -- --pipes              # pipe functions vs Rust
//! cargo build --release -p guirpc-cli -p guirpc-examples   # the binaries --patterns runs
//! cargo bench -p guirpc-tests --bench rpc -- --patterns --svg docs/patterns.svg  # vs raw lapin
//! cargo bench -p guirpc-tests --bench rpc -- --separate --svg docs/comparison.svg  # servers in their own process
//! ```

mod charts;
mod compare;
mod memory;
mod patterns;
mod pipeline;
mod pipes;
mod raw;
mod scale_out;
mod shell;
mod streams;
mod usage;

use std::time::{Duration, Instant};

use clap::Parser;
use guirpc_core::config::parse_duration;
use guirpc_core::{Bytes, Server, rpc};

use compare::{Arm, Observe, compare, serve_pair};
use memory::memory;
use patterns::patterns;
use pipeline::pipeline;
use pipes::pipes;
use scale_out::{scale_out, serve_until_stdin_closes};

/// Echoes its payload (which shares the request's buffer: no copy on the way in).
#[rpc(name = "bench.echo")]
async fn echo(data: Bytes) -> Bytes {
    data
}

/// Echoes its payload as an owned buffer (`ByteBuf`: copied out of the request, and out of
/// the reply by the caller): what [`Bytes`] saves.
#[rpc(name = "bench.echo_copied")]
async fn echo_copied(data: serde_bytes::ByteBuf) -> serde_bytes::ByteBuf {
    data
}

/// Echoes its payload after `stall_ms`: the calls the memory run lets time out.
#[rpc(name = "bench.echo_later")]
async fn echo_later(data: Bytes, stall_ms: u64) -> Bytes {
    tokio::time::sleep(Duration::from_millis(stall_ms)).await;
    data
}

/// A server of the bench's functions, without the `--patterns` arm's subscriber (whose
/// durable queue would outlive every other arm's server).
fn server() -> guirpc_core::ServerBuilder {
    Server::builder().subscribers(Vec::new())
}

fn broker() -> String {
    std::env::var("GUIRPC_TEST_URI").unwrap_or_else(|_| guirpc_core::config::DEFAULT_URI.to_owned())
}

/// guirpc's clients against a minimal request/reply written directly on lapin, on the
/// same broker in the same run: calls per second, latency, the ratio to the baseline, and
/// the CPU each call costs in this process and in the broker.
#[derive(Parser)]
#[command(name = "rpc")]
struct Options {
    /// How long each arm runs per round
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    duration: Duration,
    /// Rounds per measurement; the arms alternate within each
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Also write the results to this JSON file
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
    /// Measure steady memory over this many calls instead
    #[arg(long, value_name = "CALLS")]
    memory: Option<u64>,
    /// Measure 1, 2, 4 and 8 server processes on one queue, each call doing real work
    /// (sleeping, then computing), instead
    #[arg(long)]
    scale_out: bool,
    /// Scale-out: milliseconds of work per call
    #[arg(long, default_value_t = 2)]
    work_ms: u64,
    /// Scale-out: calls each server process runs at once (and half its prefetch)
    #[arg(long, default_value_t = 4)]
    server_concurrency: usize,
    /// Also draw the results into this SVG file (a relative path is the workspace's): the
    /// comparison's calls per second and p99 per arm, the scale-out curves, or each
    /// pattern's share of its baseline
    #[arg(long, value_name = "FILE")]
    svg: Option<String>,
    /// The comparison with the servers (raw lapin's and guirpc's) in a process of their
    /// own, as users run them; the observed arm is left out
    #[arg(long)]
    separate: bool,
    /// Serve the raw and the guirpc echo on these queues until stdin closes (what
    /// --separate starts): RAW_QUEUE,QUEUE,PREFETCH,CONCURRENCY
    #[arg(long, value_name = "SPEC", hide = true)]
    serve_pair: Option<String>,
    /// Measure what spans and metrics cost per call, without a broker: this many calls
    /// through the in-memory transport (client and server pipelines) per setting
    #[arg(long, value_name = "CALLS")]
    pipeline: Option<u64>,
    /// Measure a function served through worker processes (in Rust and in Python, 1 and 4
    /// workers) against the same function in Rust, instead
    #[arg(long)]
    pipes: bool,
    /// Measure casts, events (1 and 3 subscribing services) and streamed items against raw
    /// lapin doing the same broker work, the shell pipes against the library's client, and
    /// the cold-start and memory guards, instead
    #[arg(long)]
    patterns: bool,
    /// --patterns: messages (casts, events, items, lines) per round and arm
    #[arg(long, default_value_t = 20_000)]
    messages: u64,
    /// --patterns: only these parts (of casts, events, streams, shell, guards)
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// --patterns: streams running at once, sharing the round's items
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    streams: Vec<usize>,
    /// --patterns: `--inflight` of the shell pipes (and of the library client beside them)
    #[arg(long, value_delimiter = ',', default_value = "16,64,256")]
    shell_inflight: Vec<usize>,
    /// Serve the echo function on this queue until stdin closes (what --scale-out starts)
    #[arg(long, value_name = "QUEUE")]
    serve: Option<String>,
    /// Calls in flight to measure at
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    inflight: Vec<usize>,
    /// Payload sizes in bytes
    #[arg(long, value_delimiter = ',', default_value = "16,65536")]
    payloads: Vec<usize>,
    /// Which clients to measure
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "raw,async,observed,blocking"
    )]
    arms: Vec<Arm>,
    /// What the observed arm turns on: spans at `info` and metrics (the default), one of
    /// them, or neither (a control: the arm's own runtime and connections alone)
    #[arg(long, default_value = "both")]
    observe: Observe,
    /// Passed by `cargo bench`; ignored
    #[arg(long, hide = true)]
    bench: bool,
}

fn options() -> Options {
    Options::parse()
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if let Some(spec) = &options.serve_pair {
        runtime.block_on(serve_pair(spec));
    } else if let Some(queue) = &options.serve {
        runtime.block_on(serve_until_stdin_closes(queue, options.server_concurrency));
    } else if let Some(calls) = options.memory {
        runtime.block_on(memory(calls));
    } else if options.scale_out {
        runtime.block_on(scale_out(&options));
    } else if options.pipes {
        runtime.block_on(pipes(&options));
    } else if options.patterns {
        runtime.block_on(patterns(&options));
    } else if let Some(calls) = options.pipeline {
        pipeline(calls, options.rounds);
    } else {
        compare(&runtime, &options);
    }
}

/// Per-call latencies of one measurement, in microseconds.
#[derive(Default, Clone)]
struct Samples {
    latencies: Vec<u32>,
    elapsed: Duration,
    /// CPU time of this process (client and server) and of the broker.
    own_cpu: Duration,
    broker_cpu: Duration,
    /// Minor page faults of this process (and the servers' process): memory the allocator
    /// gave back to the kernel and took again.
    own_faults: u64,
}

impl Samples {
    fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.elapsed += other.elapsed;
        self.own_cpu += other.own_cpu;
        self.broker_cpu += other.broker_cpu;
        self.own_faults += other.own_faults;
    }

    fn faults_per_call(&self) -> f64 {
        self.own_faults as f64 / self.latencies.len().max(1) as f64
    }

    fn cpu_per_call(&self, cpu: Duration) -> f64 {
        cpu.as_secs_f64() * 1e6 / self.latencies.len().max(1) as f64
    }

    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> u32 {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or(0)
    }
}

/// Says `ready`, and shuts `server` down once standard input closes: how a benchmark's
/// child process serves until its parent is done.
async fn serve_while_stdin_is_open(server: Server) {
    println!("ready");
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await
        .unwrap()
        .unwrap();
    server.shutdown().await.unwrap();
}

/// Keeps `inflight` calls going, each from a task of its own, until `end`: every call's
/// latency in microseconds.
async fn keep_calling<F, C>(inflight: usize, end: Instant, call: C) -> Vec<u32>
where
    C: Fn() -> F + Clone + Send + 'static,
    F: std::future::Future<Output = ()> + Send,
{
    let workers: Vec<_> = (0..inflight)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < end {
                    let started = Instant::now();
                    call().await;
                    latencies.push(started.elapsed().as_micros() as u32);
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    latencies
}

fn human_bytes(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}
