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
//! cargo bench -p guirpc-tests --bench rpc -- --separate --svg docs/comparison.svg  # servers in their own process
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures_lite::StreamExt;
use guirpc_core::config::parse_duration;
use guirpc_core::{BlockingClient, Bytes, Client, Server, rpc};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::oneshot;

/// The system allocator, counting the bytes the program holds while `COUNTING` is set (the
/// memory mode): resident memory also moves with the allocator's arenas, live bytes only
/// with what the program keeps.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            count(layout.size() as isize);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            count(layout.size() as isize);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { System.dealloc(block, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(block, layout, size) };
        if !moved.is_null() {
            count(size as isize - layout.size() as isize);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

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
    /// comparison's calls per second and p99 per arm, or the scale-out curves
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

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum Observe {
    Both,
    Spans,
    Metrics,
    Neither,
}

impl Observe {
    /// What records spans: a log subscriber taking every span at `info`, formatting them
    /// as `guirpc serve` does, to a sink; or nothing.
    fn subscriber(self) -> tracing::Dispatch {
        if matches!(self, Observe::Both | Observe::Spans) {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(std::io::sink)
                .with_max_level(tracing::Level::INFO)
                .finish();
            tracing::Dispatch::new(subscriber)
        } else {
            tracing::Dispatch::none()
        }
    }

    fn metrics(self) -> bool {
        matches!(self, Observe::Both | Observe::Metrics)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, clap::ValueEnum)]
enum Arm {
    Raw,
    /// The baseline with guirpc's request headers (function and deadline) added.
    RawHeaders,
    /// The baseline with a per-message `expiration` added.
    RawExpiration,
    /// The baseline with the function in `type` and the deadline in `timestamp` (no
    /// header table), answered with the status in `type`: protocol version 2's.
    RawType,
    /// The baseline with every property guirpc's version 2 sends with a MessagePack
    /// call: the request's `type`, `timestamp`, `expiration` and `mandatory` flag, the
    /// reply's `type` (neither carries a `content_type`: absent means MessagePack). What
    /// is left between it and the async arm is guirpc's own code.
    RawAll,
    /// The baseline with the request's and the reply's `content_type`.
    RawCodec,
    /// The baseline with requests published `mandatory`.
    RawMandatory,
    Async,
    /// The async client, the payload a `ByteBuf` (copied) rather than `Bytes` (shared).
    AsyncCopied,
    /// The async client with spans at `info` and metrics on, server and client.
    Observed,
    Blocking,
}

impl Arm {
    fn name(self) -> &'static str {
        match self {
            Arm::Raw => "raw lapin",
            Arm::RawHeaders => "raw + headers",
            Arm::RawExpiration => "raw + expiration",
            Arm::RawType => "raw + type",
            Arm::RawAll => "raw + all of v2",
            Arm::RawCodec => "raw + codec",
            Arm::RawMandatory => "raw + mandatory",
            Arm::Async => "guirpc async",
            Arm::AsyncCopied => "async, ByteBuf",
            Arm::Observed => "async observed",
            Arm::Blocking => "guirpc blocking",
        }
    }

    /// What a raw arm adds to the baseline; `None` for guirpc's arms.
    fn raw_adds(self) -> Option<raw::Adds> {
        let only = |add: fn(&mut raw::Adds)| {
            let mut adds = raw::Adds::default();
            add(&mut adds);
            Some(adds)
        };
        match self {
            Arm::Raw => Some(raw::Adds::from_env()),
            Arm::RawAll => Some(raw::Adds::version_2()),
            Arm::RawHeaders => only(|adds| adds.headers = true),
            Arm::RawExpiration => only(|adds| adds.expiration = true),
            Arm::RawType => only(|adds| adds.kind = true),
            Arm::RawCodec => only(|adds| adds.codec = true),
            Arm::RawMandatory => only(|adds| adds.mandatory = true),
            _ => None,
        }
    }
}

struct Contenders {
    /// The process serving both echoes, when it is not this one (`--separate`).
    servers: Option<std::process::Child>,
    /// The baseline's client, and one for each arm that adds some of guirpc's properties
    /// to it, to measure what they cost.
    raws: HashMap<Arm, Arc<raw::Client>>,
    client: Client,
    blocking: BlockingClient,
    /// Started only when its arm is measured: its runtime and connections are not left
    /// idle beside the other arms.
    observed: Option<Observed>,
}

/// The observed arm: its runtime, whose threads log every span at `info`, and its client.
struct Observed {
    runtime: tokio::runtime::Runtime,
    dispatch: tracing::Dispatch,
    client: Client,
    _server: Server,
}

impl Observed {
    fn start(queue: &str, prefetch: u16, concurrency: usize, observe: Observe) -> Observed {
        let dispatch = observe.subscriber();
        let on_start = dispatch.clone();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .on_thread_start(move || {
                // The runtime's threads log for as long as they live.
                std::mem::forget(tracing::dispatcher::set_default(&on_start));
            })
            .build()
            .unwrap();
        let metrics = guirpc_core::Metrics::new();
        let metered = observe.metrics();
        let (server, client) = runtime.block_on(async {
            let mut server = Server::builder()
                .uri(broker())
                .queue(queue)
                .queue_arguments(guirpc_tests::expiring())
                .prefetch(prefetch)
                .concurrency(concurrency);
            let mut client = Client::builder().uri(broker()).queue(queue);
            if metered {
                server = server.metrics(&metrics);
                client = client.metrics(&metrics);
            }
            (
                server.start().await.unwrap(),
                client.connect().await.unwrap(),
            )
        });
        Observed {
            runtime,
            dispatch,
            client,
            _server: server,
        }
    }
}

/// Serves the raw and the guirpc echo until stdin closes: the server process of the
/// `--separate` comparison. Prints `ready` once both serve.
async fn serve_pair(spec: &str) {
    let [raw_queue, queue, prefetch, concurrency] = spec.split(',').collect::<Vec<_>>()[..] else {
        panic!("--serve-pair RAW_QUEUE,QUEUE,PREFETCH,CONCURRENCY");
    };
    let (prefetch, concurrency) = (prefetch.parse().unwrap(), concurrency.parse().unwrap());
    let (_raw, server) = echo_servers(raw_queue, queue, prefetch, concurrency).await;
    serve_while_stdin_is_open(server).await;
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

/// The raw lapin echo and the guirpc echo server.
async fn echo_servers(
    raw_queue: &str,
    queue: &str,
    prefetch: u16,
    concurrency: usize,
) -> (Connection, Server) {
    let raw_server = raw::serve(&broker(), raw_queue, prefetch).await;
    let server = Server::builder()
        .uri(broker())
        .queue(queue)
        .queue_arguments(guirpc_tests::expiring())
        .prefetch(prefetch)
        .concurrency(concurrency)
        .start()
        .await
        .unwrap();
    (raw_server, server)
}

fn compare(runtime: &tokio::runtime::Runtime, options: &Options) {
    let pid = std::process::id();
    let (raw_queue, queue) = (format!("bench.raw.{pid}"), format!("bench.guirpc.{pid}"));
    let max_inflight = options.inflight.iter().copied().max().unwrap_or(1);
    let prefetch = u16::try_from(max_inflight * 2).unwrap_or(u16::MAX);
    let mut servers = None;
    let in_process = if options.separate {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .arg("--serve-pair")
            .arg(format!(
                "{raw_queue},{queue},{prefetch},{}",
                max_inflight * 2
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready");
        servers = Some(child);
        None
    } else {
        Some(runtime.block_on(echo_servers(&raw_queue, &queue, prefetch, max_inflight * 2)))
    };
    let raw_arms: Vec<(Arm, raw::Adds)> = options
        .arms
        .iter()
        .chain([&Arm::Raw])
        .filter_map(|&arm| Some((arm, arm.raw_adds()?)))
        .collect();
    let (raws, client) = runtime.block_on(async {
        let mut raws = HashMap::new();
        for (arm, adds) in raw_arms {
            let raw = raw::Client::connect_with(&broker(), &raw_queue, adds).await;
            raws.insert(arm, Arc::new(raw));
        }
        let client = Client::builder()
            .uri(broker())
            .queue(&queue)
            .connect()
            .await
            .unwrap();
        (raws, client)
    });
    let blocking = Client::builder()
        .uri(broker())
        .queue(&queue)
        .connect_blocking()
        .unwrap();
    let arms: Vec<Arm> = options
        .arms
        .iter()
        .copied()
        .filter(|arm| !(options.separate && *arm == Arm::Observed))
        .collect();
    let observed = arms.contains(&Arm::Observed).then(|| {
        Observed::start(
            &format!("bench.observed.{pid}"),
            prefetch,
            max_inflight * 2,
            options.observe,
        )
    });
    let contenders = Contenders {
        servers,
        raws,
        client,
        blocking,
        observed,
    };

    println!(
        "guirpc vs raw lapin: {} round(s) of {:?} per arm, arms alternating; servers {}; broker {}",
        options.rounds,
        options.duration,
        if options.separate {
            "in a process of their own (cpu: both processes)"
        } else {
            "in this process"
        },
        guirpc_core::config::mask_uri(&broker())
    );
    println!(
        "{:>8} {:>9}  {:<16} {:>10} {:>9} {:>9}  {:>8} {:>9} {:>9} {:>9} {:>8}",
        "payload",
        "in flight",
        "arm",
        "calls/s",
        "p50 µs",
        "p99 µs",
        "vs raw",
        "p50 +µs",
        "cpu µs",
        "broker µs",
        "faults"
    );
    let mut rows = Vec::new();
    for &payload in &options.payloads {
        let data: Arc<Vec<u8>> = Arc::new((0..payload).map(|i| i as u8).collect());
        for &inflight in &options.inflight {
            let arms = &arms;
            for &arm in arms {
                run(
                    runtime,
                    &contenders,
                    arm,
                    inflight,
                    &data,
                    Duration::from_millis(300),
                );
            }
            let mut samples: HashMap<Arm, Samples> = HashMap::new();
            for round in 0..options.rounds {
                for k in 0..arms.len() {
                    let arm = arms[(round + k) % arms.len()];
                    let measured =
                        run(runtime, &contenders, arm, inflight, &data, options.duration);
                    samples.entry(arm).or_default().merge(measured);
                }
            }
            let mut base = samples.get(&Arm::Raw).cloned().unwrap_or_default();
            let (base_rate, base_p50) = (base.rate(), base.percentile(0.5));
            for arm in arms {
                let s = samples.get_mut(arm).unwrap();
                let (rate, p50, p99) = (s.rate(), s.percentile(0.5), s.percentile(0.99));
                let ratio = rate / base_rate;
                let (own, broker) = (s.cpu_per_call(s.own_cpu), s.cpu_per_call(s.broker_cpu));
                println!(
                    "{:>8} {:>9}  {:<16} {:>10.0} {:>9} {:>9}  {:>7.1}% {:>+9} {:>9.1} {:>9.1} {:>8.1}",
                    human_bytes(payload),
                    inflight,
                    arm.name(),
                    rate,
                    p50,
                    p99,
                    ratio * 100.0,
                    i64::from(p50) - i64::from(base_p50),
                    own,
                    broker,
                    s.faults_per_call()
                );
                rows.push(serde_json::json!({
                    "payload_bytes": payload, "in_flight": inflight, "arm": arm.name(),
                    "calls": s.latencies.len(), "calls_per_second": rate, "p50_us": p50, "p99_us": p99,
                    "ratio_to_raw": ratio, "p50_over_raw_us": i64::from(p50) - i64::from(base_p50),
                    "process_cpu_us_per_call": own, "broker_cpu_us_per_call": broker,
                    "process_minor_faults_per_call": s.faults_per_call(),
                }));
            }
        }
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&rows).unwrap()).unwrap();
        println!("wrote {path}");
    }
    if let Some(path) = &options.svg {
        let path = workspace_path(path);
        draw_comparison(&path, &rows, options.separate).unwrap();
        println!("wrote {}", path.display());
    }
    drop(in_process);
    if let Some(mut child) = contenders.servers {
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}

/// `cargo bench` runs in the package's directory: a relative path is the workspace's.
fn workspace_path(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The legend of a chart, in its upper left corner.
fn draw_legend<'a, 'b: 'a>(
    chart: &mut plotters::prelude::ChartContext<
        'a,
        plotters::prelude::SVGBackend<'b>,
        plotters::prelude::Cartesian2d<
            plotters::coord::types::RangedCoordf64,
            plotters::coord::types::RangedCoordf64,
        >,
    >,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

/// Draws calls per second and p99 latency per arm against calls in flight, one pair of
/// panels per payload size, as an SVG.
fn draw_comparison(
    path: &std::path::Path,
    rows: &[serde_json::Value],
    separate: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let mut payloads: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["payload_bytes"].as_u64())
        .collect();
    payloads.dedup();
    let mut arms: Vec<String> = Vec::new();
    for row in rows {
        let arm = row["arm"].as_str().unwrap_or_default().to_owned();
        if !arms.contains(&arm) {
            arms.push(arm);
        }
    }
    let height = 300 * payloads.len().max(1) as u32;
    let root = SVGBackend::new(path, (960, height + 40)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(40);
    title.titled(
        &format!(
            "guirpc vs raw lapin, servers {}",
            if separate {
                "in a process of their own"
            } else {
                "in the client's process"
            }
        ),
        ("sans-serif", 18),
    )?;
    let colours = [BLACK, BLUE, GREEN, RED];
    let panels = body.split_evenly((payloads.len().max(1), 2));
    for (p, payload) in payloads.iter().enumerate() {
        for (column, (metric, label)) in [
            ("calls_per_second", "calls per second"),
            ("p99_us", "p99 µs"),
        ]
        .into_iter()
        .enumerate()
        {
            let of = |arm: &str| -> Vec<(f64, f64)> {
                rows.iter()
                    .filter(|r| r["payload_bytes"].as_u64() == Some(*payload) && r["arm"] == arm)
                    .map(|r| {
                        let inflight = r["in_flight"].as_f64().unwrap_or(1.0);
                        (inflight.log2(), r[metric].as_f64().unwrap_or(0.0))
                    })
                    .collect()
            };
            let top = arms
                .iter()
                .flat_map(|arm| of(arm))
                .map(|(_, y)| y)
                .fold(1.0f64, f64::max);
            let right = rows
                .iter()
                .filter_map(|r| r["in_flight"].as_f64())
                .fold(1.0f64, f64::max)
                .log2();
            let mut chart = ChartBuilder::on(&panels[p * 2 + column])
                .caption(
                    format!("{}: {label}", human_bytes(*payload as usize)),
                    ("sans-serif", 14),
                )
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(60)
                .build_cartesian_2d(-0.3f64..right + 0.3, 0f64..top * 1.1)?;
            chart
                .configure_mesh()
                .x_desc("calls in flight")
                .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
                .draw()?;
            for (arm, colour) in arms.iter().zip(colours.iter().cycle()) {
                let points = of(arm);
                chart
                    .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                    .label(arm.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|pt| Circle::new(pt, 3, colour.filled())),
                )?;
            }
            draw_legend(&mut chart)?;
        }
    }
    root.present()?;
    Ok(())
}

/// What a process has used so far, from /proc.
#[derive(Clone, Copy, Default)]
struct Usage {
    /// CPU time, user and system.
    cpu: Duration,
    minor_faults: u64,
}

impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            cpu: self.cpu + other.cpu,
            minor_faults: self.minor_faults + other.minor_faults,
        }
    }
}

impl std::ops::Sub for Usage {
    type Output = Usage;

    fn sub(self, before: Usage) -> Usage {
        Usage {
            cpu: self.cpu.saturating_sub(before.cpu),
            minor_faults: self.minor_faults.saturating_sub(before.minor_faults),
        }
    }
}

fn usage(pid: &str) -> Usage {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Usage::default();
    };
    // The fields after the command name, which may hold spaces, closed by ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| -> u64 { fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0) };
    Usage {
        cpu: Duration::from_millis((field(11) + field(12)) * 10),
        minor_faults: field(7),
    }
}

/// The broker's process, when exactly one RabbitMQ node runs here.
fn broker_pid() -> Option<String> {
    let nodes: Vec<String> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|entry| {
            let pid = entry.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            (comm.trim() == "beam.smp").then_some(pid)
        })
        .collect();
    (nodes.len() == 1).then(|| nodes[0].clone())
}

fn human_bytes(n: usize) -> String {
    if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

/// Keeps `inflight` calls of one arm going for `duration`.
fn run(
    runtime: &tokio::runtime::Runtime,
    contenders: &Contenders,
    arm: Arm,
    inflight: usize,
    data: &Arc<Vec<u8>>,
    duration: Duration,
) -> Samples {
    let broker = broker_pid();
    let servers = contenders
        .servers
        .as_ref()
        .map(|child| child.id().to_string());
    // With the servers in a process of their own, "own" is both processes.
    let own = || usage("self") + servers.as_deref().map(usage).unwrap_or_default();
    let broker_cpu = || {
        broker
            .as_deref()
            .map(|pid| usage(pid).cpu)
            .unwrap_or_default()
    };
    let (own_before, broker_before) = (own(), broker_cpu());
    let started = Instant::now();
    let end = started + duration;
    let latencies: Vec<u32> = match arm {
        Arm::Raw
        | Arm::RawHeaders
        | Arm::RawExpiration
        | Arm::RawType
        | Arm::RawAll
        | Arm::RawCodec
        | Arm::RawMandatory => {
            let (raw, data) = (contenders.raws[&arm].clone(), data.clone());
            runtime.block_on(keep_calling(inflight, end, move || {
                let (raw, data) = (raw.clone(), data.clone());
                async move {
                    raw.call(&data).await;
                }
            }))
        }
        Arm::Async => {
            let (client, data) = (contenders.client.clone(), Bytes::from(data.to_vec()));
            runtime.block_on(keep_calling(inflight, end, move || {
                let (client, data) = (client.clone(), data.clone());
                async move {
                    echo::call(&client, data).await.unwrap();
                }
            }))
        }
        Arm::AsyncCopied => {
            let client = contenders.client.clone();
            let data = serde_bytes::ByteBuf::from(data.to_vec());
            runtime.block_on(keep_calling(inflight, end, move || {
                let (client, data) = (client.clone(), data.clone());
                async move {
                    echo_copied::call(&client, data).await.unwrap();
                }
            }))
        }
        Arm::Observed => {
            let observed = contenders.observed.as_ref().expect("started for its arm");
            let (client, data) = (observed.client.clone(), Bytes::from(data.to_vec()));
            tracing::dispatcher::with_default(&observed.dispatch, || {
                observed
                    .runtime
                    .block_on(keep_calling(inflight, end, move || {
                        let (client, data) = (client.clone(), data.clone());
                        async move {
                            echo::call(&client, data).await.unwrap();
                        }
                    }))
            })
        }
        Arm::Blocking => {
            let payload = &Bytes::from(data.to_vec());
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..inflight)
                    .map(|_| {
                        scope.spawn(|| {
                            let mut latencies = Vec::new();
                            while Instant::now() < end {
                                let call = Instant::now();
                                echo::call_blocking(&contenders.blocking, payload.clone()).unwrap();
                                latencies.push(call.elapsed().as_micros() as u32);
                            }
                            latencies
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap())
                    .collect()
            })
        }
    };
    let used = own() - own_before;
    Samples {
        latencies,
        elapsed: started.elapsed(),
        own_cpu: used.cpu,
        broker_cpu: broker_cpu() - broker_before,
        own_faults: used.minor_faults,
    }
}

/// The cost of observing a call, without a broker and its noise: calls through the
/// in-memory transport (the client's and the server's whole pipelines, codec and dispatch
/// included) on one thread, with nothing on, spans at `info` (formatted to a sink), metrics,
/// and both; rounds alternate the settings.
fn pipeline(calls: u64, rounds: usize) {
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
    let mut server = Server::builder().queue("bench.pipeline");
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
async fn serve_until_stdin_closes(queue: &str, concurrency: usize) {
    let server = Server::builder()
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

/// One step of the scale-out run.
struct Step {
    servers: usize,
    rate: f64,
    p50: u32,
    p99: u32,
    /// Each server's share of the calls, as a fraction of an equal share.
    shares: Vec<f64>,
}

/// The same load of calls doing real work (2 ms of sleep, then 2 ms of CPU) against 1, 2,
/// 4 and 8 server processes on one queue, each running at most `--server-concurrency`
/// calls at once: calls per second, and each server's share (fairness across competing
/// consumers). `--svg` draws the curves.
async fn scale_out(options: &Options) {
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

/// Draws calls per second against server processes, one line per kind of work and the
/// linear ideal of each, as an SVG.
fn draw_scale_out(
    path: &std::path::Path,
    curves: &[(&str, Vec<Step>)],
    work_ms: u64,
    per_server: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (720, 440)).into_drawing_area();
    root.fill(&WHITE)?;
    let top = curves
        .iter()
        .flat_map(|(_, steps)| {
            let base = steps.first().map_or(0.0, |s| s.rate);
            steps
                .iter()
                .map(move |s| s.rate.max(base * s.servers as f64))
        })
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("guirpc scale-out: {work_ms} ms of work per call, {per_server} calls at once per server"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(0.5f64..8.5f64, 0f64..top * 1.08)?;
    chart
        .configure_mesh()
        .x_desc("server processes")
        .y_desc("calls per second")
        .x_labels(8)
        .draw()?;
    let colours = [BLUE, RED];
    for ((kind, steps), colour) in curves.iter().zip(colours) {
        let base = steps.first().map_or(0.0, |s| s.rate);
        chart
            .draw_series(LineSeries::new(
                steps.iter().map(|s| (s.servers as f64, s.rate)),
                colour.stroke_width(2),
            ))?
            .label(format!("{kind}: measured"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            steps
                .iter()
                .map(|s| Circle::new((s.servers as f64, s.rate), 4, colour.filled())),
        )?;
        chart
            .draw_series(LineSeries::new(
                steps
                    .iter()
                    .map(|s| (s.servers as f64, base * s.servers as f64)),
                colour.mix(0.35),
            ))?
            .label(format!("{kind}: linear"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.mix(0.35)));
    }
    draw_legend(&mut chart)?;
    root.present()?;
    Ok(())
}

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
async fn pipes(options: &Options) {
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
        let builder = Server::builder().uri(broker()).queue(&queue);
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

/// Resident memory of this process, from /proc.
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// A server and a client in this process complete `calls` calls, 1% of which time out;
/// resident memory after the first ten thousand and at the end.
async fn memory(calls: u64) {
    // Counted from before anything is set up: the figure is everything the program holds.
    COUNTING.store(true, Ordering::Relaxed);
    let queue = format!("bench.memory.{}", std::process::id());
    let _server = Server::builder()
        .uri(broker())
        .queue(&queue)
        .queue_arguments(guirpc_tests::expiring())
        .concurrency(256)
        .prefetch(512)
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker())
        .queue(&queue)
        .timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let checkpoints: Vec<u64> = std::iter::once(10_000)
        .chain((1..=10).map(|k| calls * k / 10))
        .filter(|&c| c <= calls)
        .collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (client, next, timeouts) = (client.clone(), next.clone(), timeouts.clone());
            tokio::spawn(async move {
                let data = Bytes::from(vec![7u8; 16]);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        return;
                    }
                    if i % 100 == 99 {
                        // Answers after the client has given up.
                        let late = echo_later::call(&client, data.clone(), 300).await;
                        assert!(
                            matches!(late, Err(guirpc_core::Error::Timeout { .. })),
                            "{late:?}"
                        );
                        timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        echo::call(&client, data.clone()).await.unwrap();
                    }
                }
            })
        })
        .collect();
    println!(
        "{:>10} {:>10} {:>12} {:>10} {:>10}",
        "calls", "timed out", "resident KiB", "heap KiB", "calls/s"
    );
    let heap_kib = || LIVE_BYTES.load(Ordering::Relaxed) / 1024;
    let (mut at_ten_thousand, mut heap_at_ten_thousand) = (0, 0);
    for checkpoint in checkpoints {
        while next.load(Ordering::Relaxed) < checkpoint {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (rss, heap) = (resident_kib(), heap_kib());
        if checkpoint == 10_000 {
            (at_ten_thousand, heap_at_ten_thousand) = (rss, heap);
        }
        println!(
            "{checkpoint:>10} {:>10} {rss:>12} {heap:>10} {:>10.0}",
            timeouts.load(Ordering::Relaxed),
            checkpoint as f64 / started.elapsed().as_secs_f64()
        );
    }
    for worker in workers {
        worker.await.unwrap();
    }
    // Let the late replies of the last timed-out calls arrive and be dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (end, heap) = (resident_kib(), heap_kib());
    println!(
        "resident memory after 10 000 calls: {at_ten_thousand} KiB; after {calls}: {end} KiB ({:+.1}%)",
        (end as f64 / at_ten_thousand as f64 - 1.0) * 100.0
    );
    println!(
        "heap held after 10 000 calls: {heap_at_ten_thousand} KiB; after {calls}: {heap} KiB ({:+} KiB)",
        heap - heap_at_ten_thousand
    );
}

mod raw {
    //! The baseline: request/reply written directly on lapin, and nothing more.

    use super::*;

    /// Echoes every request to its `reply_to`, each reply published (then acknowledged)
    /// from a task of its own.
    pub async fn serve(uri: &str, queue: &str, prefetch: u16) -> Connection {
        let connection = Connection::connect(uri, ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .unwrap();
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        let mut requests = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        tokio::spawn(async move {
            while let Some(Ok(request)) = requests.next().await {
                let channel = channel.clone();
                tokio::spawn(async move {
                    let (Some(reply_to), Some(id)) = (
                        request.properties.reply_to().clone(),
                        request.properties.correlation_id().clone(),
                    ) else {
                        return;
                    };
                    let mut properties = BasicProperties::default().with_correlation_id(id);
                    // Answered as guirpc answers a request naming a function in `type`:
                    // the status in `type`, the request's `content_type` echoed when it
                    // named one. The bare baseline adds nothing.
                    if let Some(codec) = request.properties.content_type().clone() {
                        properties = properties.with_content_type(codec);
                    }
                    if request.properties.kind().is_some() {
                        properties = properties.with_type("ok".into());
                    }
                    channel
                        .basic_publish(
                            "".into(),
                            reply_to,
                            BasicPublishOptions::default(),
                            &request.data,
                            properties,
                        )
                        .await
                        .unwrap();
                    request.acker.ack(BasicAckOptions::default()).await.unwrap();
                });
            }
        });
        connection
    }

    /// Publishes requests to a queue and matches replies on direct reply-to.
    pub struct Client {
        _connection: Connection,
        channel: Channel,
        queue: String,
        next: AtomicU64,
        pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
        adds: Adds,
    }

    /// Protocol features added to the baseline, to measure what each costs:
    /// `RAW_CONFIRM`, `RAW_HEADERS`, `RAW_EXPIRATION`, `RAW_TYPE`, `RAW_CODEC`,
    /// `RAW_MANDATORY` in the environment of the `raw` arm, or the arm that adds them.
    /// Read once.
    #[derive(Default)]
    pub struct Adds {
        pub confirm: bool,
        pub headers: bool,
        pub expiration: bool,
        pub kind: bool,
        /// The request's `content_type` (`application/msgpack`, which guirpc's calls leave
        /// out since it is the default), echoed in the reply's.
        pub codec: bool,
        pub mandatory: bool,
    }

    impl Adds {
        /// Every property a guirpc version 2 call in MessagePack carries (and its reply:
        /// the status in `type`), but those named in `RAW_ALL_SKIP` (any of `expiration`,
        /// `type`, `mandatory`), to measure what leaving one out would save;
        /// `RAW_ALL_CODEC` adds the request's `content_type`, echoed in the reply's, as
        /// guirpc's calls carried them before they left them out.
        pub fn version_2() -> Adds {
            let skip = std::env::var("RAW_ALL_SKIP").unwrap_or_default();
            Adds {
                expiration: !skip.contains("expiration"),
                kind: !skip.contains("type"),
                codec: std::env::var_os("RAW_ALL_CODEC").is_some(),
                mandatory: !skip.contains("mandatory"),
                ..Adds::default()
            }
        }

        pub fn from_env() -> Adds {
            let set = |name: &str| std::env::var_os(name).is_some();
            Adds {
                confirm: set("RAW_CONFIRM"),
                headers: set("RAW_HEADERS"),
                expiration: set("RAW_EXPIRATION"),
                kind: set("RAW_TYPE"),
                codec: set("RAW_CODEC"),
                mandatory: set("RAW_MANDATORY"),
            }
        }
    }

    impl Client {
        pub async fn connect_with(uri: &str, queue: &str, adds: Adds) -> Client {
            let connection = Connection::connect(uri, ConnectionProperties::default())
                .await
                .unwrap();
            let channel = connection.create_channel().await.unwrap();
            let mut replies = channel
                .basic_consume(
                    "amq.rabbitmq.reply-to".into(),
                    "".into(),
                    BasicConsumeOptions {
                        no_ack: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .unwrap();
            if adds.confirm {
                channel.confirm_select(Default::default()).await.unwrap();
            }
            let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
            let routes = pending.clone();
            tokio::spawn(async move {
                while let Some(Ok(reply)) = replies.next().await {
                    let id = reply
                        .properties
                        .correlation_id()
                        .as_ref()
                        .and_then(|id| id.as_str().parse::<u64>().ok());
                    if let Some(waiting) = id.and_then(|id| routes.lock().unwrap().remove(&id)) {
                        let _ = waiting.send(reply.data);
                    }
                }
            });
            Client {
                _connection: connection,
                channel,
                queue: queue.to_owned(),
                next: AtomicU64::new(0),
                pending,
                adds,
            }
        }

        pub async fn call(&self, payload: &[u8]) -> Vec<u8> {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            let (tx, rx) = oneshot::channel();
            self.pending.lock().unwrap().insert(id, tx);
            let mut properties = BasicProperties::default()
                .with_correlation_id(id.to_string().into())
                .with_reply_to("amq.rabbitmq.reply-to".into());
            if self.adds.headers {
                let mut headers = FieldTable::default();
                headers.insert(
                    "guirpc-function".into(),
                    lapin::types::AMQPValue::LongString("bench.echo".into()),
                );
                headers.insert(
                    "guirpc-deadline".into(),
                    lapin::types::AMQPValue::LongLongInt(1 << 50),
                );
                properties = properties.with_headers(headers);
            }
            if self.adds.expiration {
                properties = properties.with_expiration("30000".into());
            }
            if self.adds.kind {
                properties = properties
                    .with_type("bench.echo".into())
                    .with_timestamp(1 << 50);
            }
            if self.adds.codec {
                properties =
                    properties.with_content_type(guirpc_core::Codec::MsgPack.content_type().into());
            }
            let confirm = self.adds.confirm;
            let options = BasicPublishOptions {
                mandatory: confirm || self.adds.mandatory,
                ..Default::default()
            };
            let confirmation = self
                .channel
                .basic_publish(
                    "".into(),
                    self.queue.as_str().into(),
                    options,
                    payload,
                    properties,
                )
                .await
                .unwrap();
            if confirm {
                confirmation.await.unwrap();
            }
            rx.await.unwrap()
        }
    }
}
