//! Functions and helpers for the integration tests: every test starts its own server on a
//! queue of its own, so tests run in parallel against one broker.

pub mod broker;
pub mod imports;
pub mod jobs;
mod observe;
pub use observe::{
    browse, chromium, http_get, python_with_pika, rss_kib, rss_kib_of, sample, unescape_html,
};
pub mod proxy;
pub mod spans;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures_lite::StreamExt;
use guirpc_core::lapin::types::{AMQPValue, FieldTable};
use guirpc_core::stream::Stream;
use guirpc_core::{Client, Server, rpc};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// The broker the tests use: `$GUIRPC_TEST_URI`, or the local one.
pub fn uri() -> String {
    std::env::var("GUIRPC_TEST_URI").unwrap_or_else(|_| guirpc_core::config::DEFAULT_URI.to_owned())
}

/// A queue name no other test (or test run) uses.
pub fn unique_queue(test: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "guirpc-test.{test}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Queue arguments that let the broker delete a test queue a minute after its last use.
pub fn expiring() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(60_000));
    arguments
}

/// A fanout dead-letter exchange `{prefix}.dlx` and a queue `{prefix}.letters` bound to it,
/// exclusive to `channel`'s connection: where a test's rejected messages land. Returns
/// both names.
pub async fn dead_letters(channel: &guirpc_core::lapin::Channel, prefix: &str) -> (String, String) {
    use guirpc_core::lapin::ExchangeKind;
    use guirpc_core::lapin::options::{
        ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    };
    let (exchange, letters) = (format!("{prefix}.dlx"), format!("{prefix}.letters"));
    let auto_delete = ExchangeDeclareOptions {
        auto_delete: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            auto_delete,
            FieldTable::default(),
        )
        .await
        .expect("the dead-letter exchange is declared");
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    channel
        .queue_declare(letters.as_str().into(), exclusive, FieldTable::default())
        .await
        .expect("the letters queue is declared");
    channel
        .queue_bind(
            letters.as_str().into(),
            exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("the letters queue is bound");
    (exchange, letters)
}

/// A client of `queue` on the test broker.
pub async fn client(queue: &str) -> Client {
    Client::builder()
        .uri(uri())
        .queue(queue)
        .connect()
        .await
        .unwrap()
}

/// A server for one test, on its own queue, and a client calling it.
pub async fn serve(test: &str) -> (Server, Client) {
    let queue = unique_queue(test);
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .start()
        .await
        .expect("server starts");
    let client = Client::builder()
        .uri(uri())
        .queue(&queue)
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .expect("client connects");
    (server, client)
}

/// Adds two integers.
#[rpc]
pub async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Joins strings with a separator (a plain `fn`).
#[rpc(name = "text.join")]
pub fn join(parts: Vec<String>, separator: String) -> String {
    parts.join(&separator)
}

/// Why a division failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum DivError {
    /// Division by zero.
    #[error("cannot divide {0} by zero")]
    ByZero(i64),
}

/// Integer division with a typed error.
#[rpc]
pub fn checked_div(a: i64, b: i64) -> Result<i64, DivError> {
    if b == 0 {
        Err(DivError::ByZero(a))
    } else {
        Ok(a / b)
    }
}

/// An async function with a typed error.
#[rpc]
pub async fn parse_port(text: String) -> Result<u16, String> {
    text.parse()
        .map_err(|e| format!("`{text}` is not a port: {e}"))
}

/// No parameters.
#[rpc]
pub async fn answer() -> u32 {
    42
}

/// Returns nothing.
#[rpc]
pub fn nothing(_ignored: bool) {}

/// A struct argument and result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Point {
    /// x
    pub x: f64,
    /// y
    pub y: f64,
}

/// An enum argument.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Move {
    /// Stay.
    Stay,
    /// Move by.
    By {
        /// dx
        dx: f64,
        /// dy
        dy: f64,
    },
}

/// Moves a point; optional scale.
#[rpc]
pub async fn shift(point: Point, by: Move, scale: Option<f64>) -> Point {
    let k = scale.unwrap_or(1.0);
    match by {
        Move::Stay => point,
        Move::By { dx, dy } => Point {
            x: point.x + k * dx,
            y: point.y + k * dy,
        },
    }
}

/// Counts the entries of a map.
#[rpc]
pub fn histogram(words: Vec<String>) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in words {
        *counts.entry(word).or_default() += 1;
    }
    counts
}

/// Panics, on purpose.
#[rpc]
pub async fn explode(message: String) -> u8 {
    panic!("{message}")
}

/// Panics in a plain `fn`, on purpose.
#[rpc]
pub fn explode_blocking(message: String) -> u8 {
    panic!("{message}")
}

/// Sleeps asynchronously, then answers.
#[rpc]
pub async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Blocks its thread, then answers: must not stall the server.
#[rpc]
pub fn block(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Squares after a pause; safe to run twice for one call.
#[rpc(idempotent)]
pub async fn slow_square(x: i64, ms: u64) -> i64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    x * x
}

/// Counts the values in any JSON-like argument: decodes whatever nesting a caller sends.
#[rpc]
pub async fn count_values(value: serde_json::Value) -> usize {
    fn count(value: &serde_json::Value) -> usize {
        1 + match value {
            serde_json::Value::Array(items) => items.iter().map(count).sum(),
            serde_json::Value::Object(map) => map.values().map(count).sum(),
            _ => 0,
        }
    }
    count(&value)
}

/// Takes and returns bytes.
#[rpc]
pub async fn echo(data: Vec<u8>) -> Vec<u8> {
    data
}

/// Takes and returns bytes that share the request's buffer, and says whether they did.
#[rpc]
pub async fn echo_shared(data: guirpc_core::Bytes) -> (guirpc_core::Bytes, bool) {
    // A copy is a buffer of its own; a share has the request's body for company.
    match data.into_inner().try_into_mut() {
        Ok(own) => (own.freeze().into(), false),
        Err(shared) => (shared.into(), true),
    }
}

/// Calls seen by [`record`], by token.
pub fn recorded() -> &'static (Mutex<HashMap<String, u32>>, Notify) {
    static RECORDED: OnceLock<(Mutex<HashMap<String, u32>>, Notify)> = OnceLock::new();
    RECORDED.get_or_init(Default::default)
}

/// Who called, as the broker verified it (`unknown` without a `user_id`).
#[rpc]
pub async fn caller_name() -> String {
    guirpc_core::Caller::current().to_string()
}

/// Records that it was called with `token`: lets one-way calls be observed.
#[rpc]
pub async fn record(token: String) {
    let (calls, notify) = recorded();
    *calls.lock().unwrap().entry(token).or_default() += 1;
    notify.notify_waiters();
}

/// Records that it was called with `token`, as [`record`] does, then sleeps for `ms`:
/// a call still running when something happens to its connection.
#[rpc]
pub async fn record_then_nap(token: String, ms: u64) {
    record(token).await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Records its call under `token`, then sleeps for `ms`, but may run for half a second at
/// most: a function cut off by its `max_run`.
#[rpc(max_run = "500ms")]
pub async fn overrun(token: String, ms: u64) -> u64 {
    record(token).await;
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// How often [`poll`] asks.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Tries `attempt` until it succeeds, every 20 ms, for at most `limit`: its first success,
/// or its last failure. The one way the tests wait for something they cannot be told of.
pub async fn poll<T, E, F>(limit: Duration, mut attempt: impl FnMut() -> F) -> Result<T, E>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    let started = std::time::Instant::now();
    loop {
        let result = attempt().await;
        if result.is_ok() || started.elapsed() >= limit {
            return result;
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Whether `check` holds within `limit` ([`poll`] for a condition).
pub async fn until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    poll(limit, || {
        std::future::ready(if check() { Ok(()) } else { Err(()) })
    })
    .await
    .is_ok()
}

/// [`until`] for a thread outside the runtime.
pub fn until_blocking(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    while !check() {
        if started.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(POLL_EVERY);
    }
    true
}

/// Whether the server of `client`'s queue runs `calls` calls or more (besides the ping that
/// asks) within `limit`: how a test knows its calls have started. Its pings wait for a free
/// slot like any call, so it sees nothing of a server running as many calls as it may.
pub async fn until_running(client: &Client, calls: usize, limit: Duration) -> bool {
    poll(limit, || async {
        match client.ping().await {
            Ok(pong) if pong.in_flight >= calls => Ok(()),
            _ => Err(()),
        }
    })
    .await
    .is_ok()
}

/// Whether `check` holds within `limit` for the test broker's `queue` as a passive
/// declaration reports it: its ready messages and its consumers. Never for a queue that
/// does not exist, or is exclusive to another connection.
pub async fn until_queue(
    queue: &str,
    limit: Duration,
    check: impl Fn(&guirpc_core::lapin::Queue) -> bool,
) -> bool {
    use guirpc_core::lapin::options::QueueDeclareOptions;
    use guirpc_core::lapin::{Connection, ConnectionProperties};
    let connection = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .expect("the test broker takes a connection");
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let (connection, check) = (&connection, &check);
    let held = poll(limit, || async move {
        // A refused declaration closes its channel: one channel per look.
        let channel = connection.create_channel().await.map_err(drop)?;
        let state = channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
            .map_err(drop)?;
        let _ = channel.close(200, "looked".into()).await;
        if check(&state) { Ok(()) } else { Err(()) }
    })
    .await
    .is_ok();
    let _ = connection.close(200, "done".into()).await;
    held
}

/// How many times [`record`] has seen `token` (`None`: never).
pub fn recorded_times(token: &str) -> Option<u32> {
    recorded().0.lock().unwrap().get(token).copied()
}

/// Waits until [`record`] has seen `token` `times` times, at most `limit`.
pub async fn wait_recorded(token: &str, times: u32, limit: Duration) -> bool {
    let (calls, notify) = recorded();
    tokio::time::timeout(limit, async {
        loop {
            let notified = notify.notified();
            if calls.lock().unwrap().get(token).copied().unwrap_or(0) >= times {
                return;
            }
            notified.await;
        }
    })
    .await
    .is_ok()
}

/// Tracks how many [`busy`] calls run at once.
pub fn busy_gauge() -> &'static (AtomicUsize, AtomicUsize) {
    static GAUGE: (AtomicUsize, AtomicUsize) = (AtomicUsize::new(0), AtomicUsize::new(0));
    &GAUGE
}

/// Holds a slot for `ms`, recording the most calls running at once.
#[rpc]
pub async fn busy(ms: u64) {
    let (now, peak) = busy_gauge();
    let running = now.fetch_add(1, Ordering::SeqCst) + 1;
    peak.fetch_max(running, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    now.fetch_sub(1, Ordering::SeqCst);
}

/// How far each [`count_up`] stream got, by token: items produced, and whether the
/// stream (the function's state) was dropped, as it is at the end or on cancellation.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub produced: u64,
    pub dropped: bool,
}

/// The progress of every [`count_up`] stream, by token.
pub fn progress() -> &'static Mutex<HashMap<String, Progress>> {
    static PROGRESS: OnceLock<Mutex<HashMap<String, Progress>>> = OnceLock::new();
    PROGRESS.get_or_init(Default::default)
}

/// The progress of the [`count_up`] stream of `token`.
pub fn progress_of(token: &str) -> Progress {
    progress()
        .lock()
        .unwrap()
        .get(token)
        .copied()
        .unwrap_or_default()
}

/// Marks its stream dropped.
struct Producer {
    token: String,
    next: u64,
}

impl Drop for Producer {
    fn drop(&mut self) {
        progress()
            .lock()
            .unwrap()
            .entry(self.token.clone())
            .or_default()
            .dropped = true;
    }
}

/// Streams `0..n`, pausing `pause_ms` before each item, recording its progress under
/// `token`.
#[rpc]
pub async fn count_up(token: String, n: u64, pause_ms: u64) -> impl Stream<Item = u64> {
    progress()
        .lock()
        .unwrap()
        .insert(token.clone(), Progress::default());
    let producer = Producer { token, next: 0 };
    futures_lite::stream::unfold(producer, move |mut producer| async move {
        if producer.next == n {
            return None;
        }
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
        let item = producer.next;
        producer.next += 1;
        progress()
            .lock()
            .unwrap()
            .entry(producer.token.clone())
            .or_default()
            .produced += 1;
        Some((item, producer))
    })
}

/// Streams the lines `line 0`, `line 1`, ... up to `n`, failing with `Err` at `fail_at`.
#[rpc]
pub fn lines(n: u32, fail_at: Option<u32>) -> impl Stream<Item = Result<String, DivError>> {
    futures_lite::stream::iter((0..n).map(move |i| {
        if Some(i) == fail_at {
            Err(DivError::ByZero(i64::from(i)))
        } else {
            Ok(format!("line {i}"))
        }
    }))
}

/// Streams `n` items, panicking at `panic_at`.
#[rpc]
pub async fn shaky(n: u32, panic_at: u32) -> impl Stream<Item = u32> {
    futures_lite::stream::iter(0..n).map(move |i| {
        assert!(i != panic_at, "shaky gave up at {i}");
        i
    })
}

/// Calls `add` on `queue` in turn, through a client of its own: a call a handler makes,
/// whose trace continues the handler's.
#[rpc]
pub async fn relay(queue: String, a: i64, b: i64) -> Result<i64, String> {
    static CLIENT: tokio::sync::OnceCell<Client> = tokio::sync::OnceCell::const_new();
    let client = CLIENT
        .get_or_try_init(|| Client::builder().uri(uri()).connect())
        .await
        .map_err(|err| err.to_string())?;
    api::add::call(&client.with_queue(&queue), a, b)
        .await
        .map_err(|err| err.to_string())
}

/// Declarations only: what a caller's shared API crate holds. The names are those of
/// functions served above, so these stubs call them.
pub mod api {
    use guirpc_core::rpc;

    /// Declared, not defined here: calls the served `add`.
    #[rpc]
    pub async fn add(a: i64, b: i64) -> i64;

    /// Declared with its error type: calls the served `checked_div`.
    #[rpc]
    pub fn checked_div(a: i64, b: i64) -> Result<i64, super::DivError>;

    /// A function no server serves.
    #[rpc(name = "missing.function")]
    pub async fn missing() -> bool;
}
