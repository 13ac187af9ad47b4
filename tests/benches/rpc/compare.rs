//! The comparison, what the bench runs by default: the arms (raw lapin's and guirpc's), their
//! servers and clients, each arm's run with the CPU it costs, and the table.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use guirpc_core::{BlockingClient, Bytes, Client, Server};
use lapin::Connection;

use crate::charts::{draw_comparison, workspace_path};
use crate::raw;
use crate::usage::{broker_pid, usage};
use crate::{
    Options, Samples, broker, echo, echo_copied, human_bytes, keep_calling,
    serve_while_stdin_is_open,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum Observe {
    Both,
    Spans,
    Metrics,
    Neither,
}

impl Observe {
    /// What records spans: a log subscriber taking every span at `info`, formatting them
    /// as `guirpc serve` does, to a sink; or nothing.
    pub(crate) fn subscriber(self) -> tracing::Dispatch {
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

    pub(crate) fn metrics(self) -> bool {
        matches!(self, Observe::Both | Observe::Metrics)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, clap::ValueEnum)]
pub(crate) enum Arm {
    Raw,
    /// The baseline with guirpc's request headers (function and deadline) added.
    RawHeaders,
    /// The baseline with a per-message `expiration` added.
    RawExpiration,
    /// The baseline with the function in `type` and the deadline in `timestamp` (no
    /// header table), answered with the status in `type`: protocol version 2's.
    RawType,
    /// The baseline with every property guirpc's version 2 sends with a MessagePack
    /// call: the request's `type`, `timestamp`, `expiration`, `user_id` and `mandatory`
    /// flag, the reply's `type` (neither carries a `content_type`: absent means
    /// MessagePack). What is left between it and the async arm is guirpc's own code.
    RawAll,
    /// The baseline with the request's and the reply's `content_type`.
    RawCodec,
    /// The baseline with requests published `mandatory`.
    RawMandatory,
    /// The baseline with the connection's user in each request's `user_id`.
    RawUserId,
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
            Arm::RawUserId => "raw + user_id",
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
            Arm::RawUserId => only(|adds| adds.user_id = true),
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
            let mut server = crate::server()
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
pub(crate) async fn serve_pair(spec: &str) {
    let [raw_queue, queue, prefetch, concurrency] = spec.split(',').collect::<Vec<_>>()[..] else {
        panic!("--serve-pair RAW_QUEUE,QUEUE,PREFETCH,CONCURRENCY");
    };
    let (prefetch, concurrency) = (prefetch.parse().unwrap(), concurrency.parse().unwrap());
    let (_raw, server) = echo_servers(raw_queue, queue, prefetch, concurrency).await;
    serve_while_stdin_is_open(server).await;
}

/// The raw lapin echo and the guirpc echo server.
async fn echo_servers(
    raw_queue: &str,
    queue: &str,
    prefetch: u16,
    concurrency: usize,
) -> (Connection, Server) {
    let raw_server = raw::serve(&broker(), raw_queue, prefetch).await;
    let server = crate::server()
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

pub(crate) fn compare(runtime: &tokio::runtime::Runtime, options: &Options) {
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
        | Arm::RawMandatory
        | Arm::RawUserId => {
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
