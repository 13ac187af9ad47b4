//! `--patterns`' shell pipes and guards.
//!
//! - **shell pipes**: `guirpc call bench.add --stdin --inflight N` and `guirpc cast
//!   bench.tally --stdin --inflight N`, each fed `M` JSON lines from a file, beside the
//!   library's async client doing the same calls (or casts) with `N` in flight. A call
//!   round ends when the command exits with every result written (to a file); a cast round
//!   when the server has run the last cast. Both include the command's start.
//! - **guards**: `calculator serve` (the example service, a release build) from `exec` to
//!   `/readyz` answering 200, and its resident memory a second later.
//!
//! The binaries are release builds next to this bench's (`target/release/`): `cargo build
//! --release -p guirpc-cli -p guirpc-examples` first.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guirpc_core::{Client, rpc};

use crate::patterns::{Results, expiring, in_flight, median_and_worst, wait_for};
use crate::{Options, broker};

/// The casts `bench.tally` has run.
static TALLIED: AtomicU64 = AtomicU64::new(0);

/// Adds two numbers.
#[rpc(name = "bench.add")]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Counts a cast of two numbers.
#[rpc(name = "bench.tally")]
async fn tally(a: i64, b: i64) {
    std::hint::black_box(a + b);
    TALLIED.fetch_add(1, Ordering::Relaxed);
}

/// A release binary next to this bench's, or how to build it.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/deps/rpc-HASH -> target/release/NAME
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --release -p guirpc-cli -p guirpc-examples` first",
        path.display()
    );
    path
}

pub(crate) async fn shell(options: &Options, results: &mut Results) {
    let guirpc = binary("guirpc");
    let pid = std::process::id();
    let queue = format!("bench.shell.{pid}");
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
    let messages = options.messages;
    let dir = std::env::temp_dir().join(format!("guirpc-bench-shell-{pid}"));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("lines.jsonl");
    let lines: String = (0..messages)
        .map(|i| format!("{{\"a\": {i}, \"b\": 1}}\n"))
        .collect();
    std::fs::write(&input, lines).unwrap();
    let output = dir.join("results.jsonl");
    let command = |verb: &str, function: &str, inflight: usize| {
        let mut command = Command::new(&guirpc);
        command
            .args([
                verb,
                function,
                "--stdin",
                "--inflight",
                &inflight.to_string(),
            ])
            .env("GUIRPC_URI", broker())
            .env("GUIRPC_QUEUE", &queue)
            .current_dir(&dir)
            .stdin(std::fs::File::open(&input).unwrap())
            .stdout(std::fs::File::create(&output).unwrap())
            .stderr(Stdio::inherit());
        command
    };
    for &inflight in &options.shell_inflight {
        let (mut library, mut piped) = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            let started = Instant::now();
            let caller = client.clone();
            in_flight(messages, inflight, move |i| {
                let client = caller.clone();
                async move {
                    assert_eq!(add::call(&client, i as i64, 1).await.unwrap(), i as i64 + 1);
                }
            })
            .await;
            library.push(messages as f64 / started.elapsed().as_secs_f64());

            let started = Instant::now();
            let mut call = command("call", "bench.add", inflight);
            let status = tokio::task::spawn_blocking(move || call.status().unwrap())
                .await
                .unwrap();
            let elapsed = started.elapsed();
            assert!(status.success(), "guirpc call --stdin: {status}");
            let written = std::fs::read_to_string(&output).unwrap();
            assert_eq!(written.lines().count() as u64, messages);
            assert_eq!(written.lines().last(), Some(messages.to_string().as_str()));
            piped.push(messages as f64 / elapsed.as_secs_f64());
        }
        results.pair(
            "shell calls",
            ("library", "call --stdin"),
            inflight,
            &mut library,
            &mut piped,
        );
    }
    for &inflight in &options.shell_inflight {
        let (mut library, mut piped) = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            let target = TALLIED.load(Ordering::Relaxed) + messages;
            let started = Instant::now();
            let caller = client.clone();
            in_flight(messages, inflight, move |i| {
                let client = caller.clone();
                async move { tally::cast(&client, i as i64, 1).await.unwrap() }
            })
            .await;
            wait_for(&TALLIED, target).await;
            library.push(messages as f64 / started.elapsed().as_secs_f64());

            let target = TALLIED.load(Ordering::Relaxed) + messages;
            let started = Instant::now();
            let mut cast = command("cast", "bench.tally", inflight);
            let status = tokio::task::spawn_blocking(move || cast.status().unwrap())
                .await
                .unwrap();
            assert!(status.success(), "guirpc cast --stdin: {status}");
            wait_for(&TALLIED, target).await;
            piped.push(messages as f64 / started.elapsed().as_secs_f64());
        }
        results.pair(
            "shell casts",
            ("library", "cast --stdin"),
            inflight,
            &mut library,
            &mut piped,
        );
    }
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Cold start and idle memory of `calculator serve`, against their guards.
pub(crate) async fn guards(options: &Options) {
    const START_GUARD: Duration = Duration::from_millis(50);
    const RSS_GUARD_KIB: u64 = 20 * 1024;
    let calculator = binary("calculator");
    let connection = lapin::Connection::connect(&broker(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let (mut starts, mut rss) = (Vec::new(), Vec::new());
    for round in 0..options.rounds.max(5) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
        let dir = std::env::temp_dir();
        let queue = format!("bench.guards.{}.{round}", std::process::id());
        let started = Instant::now();
        let mut child = Command::new(&calculator)
            .arg("serve")
            .env("GUIRPC_URI", broker())
            .env("GUIRPC_QUEUE", &queue)
            .env("GUIRPC_METRICS_ADDR", addr.to_string())
            .env("RUST_LOG", "warn")
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = tokio::task::spawn_blocking(move || {
            loop {
                if ready(addr) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "not ready in 10 s"
                );
                std::thread::sleep(Duration::from_micros(500));
            }
        })
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss.push(guirpc_tests::rss_kib_of(child.id()) as f64);
        starts.push(ready.as_secs_f64() * 1000.0);
        let _ = child.kill();
        let _ = child.wait();
        // The service's queues are durable: nothing of the bench's is left on the broker.
        for queue in [format!("{queue}.dead"), queue] {
            let _ = channel
                .queue_delete(queue.as_str().into(), Default::default())
                .await;
        }
    }
    let _ = connection.close(200, "".into()).await;
    // Lower is better here: the "worst" is the largest.
    let (start, _) = median_and_worst(&mut starts);
    let (memory, _) = median_and_worst(&mut rss);
    let (worst_start, worst_rss) = (starts[starts.len() - 1], rss[rss.len() - 1]);
    let verdict = |met: bool| if met { "met" } else { "NOT MET" };
    println!(
        "guard: calculator serve to /readyz 200: median {start:.1} ms, worst {worst_start:.1} ms (at most {} ms: {})",
        START_GUARD.as_millis(),
        verdict(worst_start <= START_GUARD.as_secs_f64() * 1000.0)
    );
    println!(
        "guard: idle RSS: median {:.1} MiB, worst {:.1} MiB (at most {} MiB: {})",
        memory / 1024.0,
        worst_rss / 1024.0,
        RSS_GUARD_KIB / 1024,
        verdict(worst_rss <= RSS_GUARD_KIB as f64)
    );
}

/// Whether `GET /readyz` answers 200, over a plain socket (no client library's start-up in
/// the measurement).
fn ready(addr: std::net::SocketAddr) -> bool {
    use std::io::{Read, Write};
    let Ok(mut socket) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    if socket
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = Vec::new();
    let _ = socket.read_to_end(&mut answer);
    answer.starts_with(b"HTTP/1.1 200")
}
