//! The `guirpc` binary, run for real against services on the real broker: every command,
//! every exit code. The functions served, and how a test runs `guirpc`, are here; the
//! tests, by command, in the modules.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guirpc_core::lapin::types::{AMQPValue, FieldTable};
use guirpc_core::{Server, rpc};

mod calls;
mod config;
mod dead;
mod events;
mod flags;
mod new;
mod pipes;
mod schemas;

/// Adds two integers.
#[rpc]
async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// The bytes 0, 1, ... n - 1 (MessagePack `bin`, which `guirpc call` prints as an array).
#[rpc]
async fn first_bytes(n: u8) -> guirpc_core::Bytes {
    (0..n).collect::<Vec<u8>>().into()
}

/// Integer division; dividing by zero is a typed error.
#[rpc]
fn div(a: i64, b: i64) -> Result<i64, String> {
    if b == 0 {
        Err(format!("{a} / 0"))
    } else {
        Ok(a / b)
    }
}

/// Counts down from `from` to 1, one item at a time; fails at `fail_at`.
#[rpc]
async fn countdown(
    from: u32,
    fail_at: Option<u32>,
) -> impl guirpc_core::stream::Stream<Item = Result<u32, String>> {
    futures_lite::stream::iter((1..=from).rev().map(move |n| {
        if Some(n) == fail_at {
            Err(format!("stopped at {n}"))
        } else {
            Ok(n)
        }
    }))
}

/// Sleeps, then answers: a call slow on purpose, which a short `--timeout` gives up on.
#[rpc]
async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// The calls of [`gate`] that have passed.
static PASSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Passes once `after` other calls of it have passed (10 s at most, then fails): a line
/// of `call --stdin` that only ends if later lines go on without it.
#[rpc]
async fn gate(after: u64) -> Result<u64, String> {
    let started = Instant::now();
    while PASSED.load(Ordering::SeqCst) < after {
        if started.elapsed() > Duration::from_secs(10) {
            return Err(format!(
                "{} of {after} others passed",
                PASSED.load(Ordering::SeqCst)
            ));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    PASSED.fetch_add(1, Ordering::SeqCst);
    Ok(after)
}

/// What [`tally`] has added up.
static TALLY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds `n` to a total this process keeps: lets casts from the shell be observed.
#[rpc]
async fn tally(n: u64) {
    TALLY.fetch_add(n, Ordering::SeqCst);
}

/// What [`tally_later`] has added up: the scheduled casts' own total, apart from
/// [`TALLY`], which other tests add to at the same time.
static LATER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds `n` to a total of its own: lets scheduled casts from the shell be observed.
#[rpc]
async fn tally_later(n: u64) {
    LATER.fetch_add(n, Ordering::SeqCst);
}

fn broker() -> String {
    std::env::var("GUIRPC_TEST_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The `rabbitmqctl` of the broker the tests use: `$GUIRPC_TEST_CTL`, or the machine's.
fn ctl() -> String {
    std::env::var("GUIRPC_TEST_CTL").unwrap_or_else(|_| "rabbitmqctl".into())
}

fn unique_queue(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "guirpc-test.cli.{test}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

async fn serve(test: &str) -> Server {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(60_000));
    Server::builder()
        .uri(broker())
        .queue(unique_queue(test))
        .queue_arguments(arguments)
        .start()
        .await
        .unwrap()
}

/// Runs `guirpc` with a clean environment of guirpc variables, optionally feeding stdin.
async fn guirpc(args: &[&str], stdin: Option<String>) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || run(&args, stdin, None))
        .await
        .unwrap()
}

fn run(args: &[String], stdin: Option<String>, dir: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_guirpc"));
    command.args(args).env("GUIRPC_URI", broker());
    for var in [
        "GUIRPC_QUEUE",
        "GUIRPC_CONFIG",
        "GUIRPC_TIMEOUT",
        "GUIRPC_CODEC",
        "AMQP_URI",
    ] {
        command.env_remove(var);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    }
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Whether `check` holds within `limit`, asked every 20 ms: how these tests wait for what
/// they cannot be told of. `guirpc_tests::until`'s twin, out of this crate's reach.
async fn until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while !check() {
        if started.elapsed() >= limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Spawns `command`, a `guirpc serve`, and waits (at most `limit`) for the line of its log
/// that says it serves: its consumer is up.
fn serving(mut command: Command, limit: Duration) -> Child {
    use std::io::BufRead;
    let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    loop {
        match rx.recv_timeout(limit.saturating_sub(started.elapsed())) {
            Ok(line) if line.contains("serving") => return child,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("guirpc serve did not start serving within {limit:?}");
            }
        }
    }
}
