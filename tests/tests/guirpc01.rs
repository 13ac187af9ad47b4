//! guirpc 0.1 spoken: the Python package's own producer calls a guirpc service, and
//! guirpc's clients call the package's own consumer, neither side changed. The package
//! (`guirpc==0.1` from PyPI) is installed in a virtual environment of the tests' own;
//! outside CI a machine that cannot install it skips these tests, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use guirpc_core::protocol::v01::{Protocol, Serializer};
use guirpc_core::{BlockingClient, Client, Error, ErrorCode, Server};
use guirpc_tests::{expiring, unique_queue, uri};
use serde_json::{Value, json};

/// The virtual environment's Python with guirpc 0.1, installed once per run.
fn python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("guirpc01-venv");
            let python = venv.join("bin/python");
            let installed = || {
                Command::new(&python)
                    .args(["-c", "import guirpc.amqp.consumer, pika"])
                    .output()
                    .is_ok_and(|out| out.status.success())
            };
            if !installed() {
                let made = Command::new("python3")
                    .args(["-m", "venv"])
                    .arg(&venv)
                    .output()
                    .is_ok_and(|out| out.status.success());
                let pip = made
                    && Command::new(venv.join("bin/pip"))
                        .args(["install", "--quiet", "guirpc==0.1"])
                        .output()
                        .is_ok_and(|out| out.status.success());
                if !pip || !installed() {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "CI must install guirpc==0.1 (pip, in a virtual environment)"
                    );
                    eprintln!("skipped: guirpc==0.1 cannot be installed here (python3 -m venv, pip install guirpc==0.1)");
                    return None;
                }
            }
            Some(python)
        })
        .as_deref()
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/python")).join(name)
}

/// The broker's host, port, user and password, as the package's INI file wants them.
fn broker_parts() -> [String; 4] {
    let uri = uri();
    let rest = uri.strip_prefix("amqp://").expect("an amqp:// test URI");
    let (credentials, rest) = rest.split_once('@').unwrap_or(("guest:guest", rest));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let host_port = rest.split('/').next().unwrap_or("127.0.0.1:5672");
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5672"));
    [host, port, user, password].map(str::to_owned)
}

/// The package's producer calling `function` through `exchange` with `routing_key`.
async fn produce(exchange: &str, routing_key: &str, function: &str, value: (&str, &str)) -> Value {
    let python = python().expect("checked");
    let [host, port, user, password] = broker_parts();
    let mut command = Command::new(python);
    command
        .arg(script("guirpc01_call.py"))
        .args([
            "--exchange",
            exchange,
            "--routing-key",
            routing_key,
            "--function",
            function,
        ])
        .args([value.0, value.1])
        .args([
            "--host",
            &host,
            "--port",
            &port,
            "--user",
            &user,
            "--password",
            &password,
        ]);
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "the producer printed {stdout:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_packages_producer_calls_a_guirpc_service_unchanged() {
    if python().is_none() {
        return;
    }
    let queue = unique_queue("v01-serve");
    let exchange = format!("{queue}.gateway");
    let routing_key = format!("{queue}.key");
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .exchange(&exchange)
        .exchange_durable(false)
        .routing_key(&routing_key)
        .queue_arguments(expiring())
        .start()
        .await
        .unwrap();

    // JsonSerializer: an object by parameter name, an array in order.
    let reply = produce(
        &exchange,
        &routing_key,
        "add",
        ("--json", r#"{"a": 1, "b": 2}"#),
    )
    .await;
    assert_eq!(
        reply,
        json!({"status": 200, "object": 3, "error_message": null})
    );
    let reply = produce(&exchange, &routing_key, "add", ("--json", "[40, 2]")).await;
    assert_eq!(reply["object"], 42);
    let reply = produce(
        &exchange,
        &routing_key,
        "shift",
        ("--json", r#"{"point": {"x": 1.0, "y": 2.0}, "by": "Stay"}"#),
    )
    .await;
    assert_eq!(reply["object"], json!({"x": 1.0, "y": 2.0}));
    // TextSerializer: a text to a function of one String; the answer as text.
    let reply = produce(&exchange, &routing_key, "parse_port", ("--text", "8080")).await;
    assert_eq!(
        reply,
        json!({"status": 200, "object": "8080", "error_message": null})
    );

    // 400: arguments that do not fit, a function's own error, an unknown function.
    let reply = produce(
        &exchange,
        &routing_key,
        "add",
        ("--json", r#"{"a": "one", "b": 2}"#),
    )
    .await;
    assert_eq!(reply["status"], 400, "{reply}");
    let message = reply["error_message"].as_str().unwrap();
    assert!(
        message.starts_with("[bad_request] invalid arguments for `add`"),
        "{message}"
    );
    let reply = produce(&exchange, &routing_key, "parse_port", ("--text", "port")).await;
    assert_eq!(reply["status"], 400, "{reply}");
    assert!(
        reply["error_message"]
            .as_str()
            .unwrap()
            .starts_with("[handler_error]"),
        "{reply}"
    );
    let reply = produce(&exchange, &routing_key, "nope", ("--json", "{}")).await;
    assert_eq!(reply["status"], 400, "{reply}");
    assert!(
        reply["error_message"]
            .as_str()
            .unwrap()
            .contains("[not_found] no function `nope`"),
        "{reply}"
    );
    // 500: a panic.
    let reply = produce(&exchange, &routing_key, "explode", ("--text", "on purpose")).await;
    assert_eq!(reply["status"], 500, "{reply}");
    assert!(
        reply["error_message"]
            .as_str()
            .unwrap()
            .starts_with("[internal]"),
        "{reply}"
    );

    // guirpc's own callers still reach it, by its name, through the same exchange.
    let client = Client::builder()
        .uri(uri())
        .exchange(&exchange)
        .queue(&queue)
        .connect()
        .await
        .unwrap();
    assert_eq!(guirpc_tests::add::call(&client, 2, 3).await.unwrap(), 5);
    server.shutdown().await.unwrap();
    // Nothing left behind: every request was answered and acknowledged.
    assert!(
        guirpc_tests::until_queue(&queue, Duration::from_secs(10), |q| q.message_count() == 0)
            .await,
        "requests left in `{queue}`"
    );
}

/// The package's consumer, serving `add`, `shout` and `fail`, until dropped.
struct Consumer(Child);

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn consume(exchange: &str, queue: &str, routing_key: &str) -> Consumer {
    let child = Command::new(python().expect("checked"))
        .arg(script("guirpc01_consumer.py"))
        .args([
            "--url",
            &uri(),
            "--exchange",
            exchange,
            "--queue",
            queue,
            "--routing-key",
            routing_key,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Consumer(child)
}

#[tokio::test(flavor = "multi_thread")]
async fn guirpc_clients_call_the_packages_consumer_unchanged() {
    if python().is_none() {
        return;
    }
    let queue = unique_queue("v01-consume");
    let exchange = format!("{queue}.gateway");
    let routing_key = format!("{queue}.key");
    let _consumer = consume(&exchange, &queue, &routing_key);
    let client = |protocol| {
        Client::builder()
            .uri(uri())
            .exchange(&exchange)
            .queue(&routing_key)
            .protocol(protocol)
            .timeout(Duration::from_secs(5))
            .connect()
    };
    // The consumer declares its (not durable) exchange and queue: called once they are.
    let started = Instant::now();
    let json = loop {
        if let Ok(client) = client(Protocol::Guirpc01(Serializer::Json)).await {
            match client.call::<Value>("add", json!({"a": 1, "b": 2})).await {
                Ok(value) => {
                    assert_eq!(value, json!({"result": 3}));
                    break client;
                }
                Err(Error::NoRoute { .. }) => {}
                Err(other) => panic!("{other}"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the consumer never came up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Its 400 and 500, as guirpc's errors with its messages.
    let err = json
        .call::<Value>("add", json!({"a": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    assert!(
        err.to_string().contains("'a' and 'b' must be integers"),
        "{err}"
    );
    let err = json.call::<Value>("fail", json!({})).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
    assert!(err.to_string().contains("RuntimeError -> boom"), "{err}");
    let err = json.call::<Value>("nope", json!({})).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("FaaS with name 'nope' is not registered"),
        "{err}"
    );
    // Casts it cannot take are refused before anything is sent.
    let err = json.cast("add", json!({"a": 1, "b": 2})).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");

    // Its TextSerializer, with a text.
    let text = client(Protocol::Guirpc01(Serializer::Text)).await.unwrap();
    let shouted: String = text.call("shout", "quiet please").await.unwrap();
    assert_eq!(shouted, "QUIET PLEASE");

    // The blocking client, the same way.
    let builder = Client::builder()
        .uri(uri())
        .exchange(&exchange)
        .queue(&routing_key)
        .protocol(Protocol::Guirpc01(Serializer::Json));
    // Off the runtime, as a plain program calls.
    let value: Value = std::thread::spawn(move || {
        let blocking: BlockingClient = builder.connect_blocking().unwrap();
        blocking.call("add", json!({"a": 20, "b": 22}))
    })
    .join()
    .unwrap()
    .unwrap();
    assert_eq!(value, json!({"result": 42}));

    // A key no consumer is bound with: at once, no route.
    let nobody = Client::builder()
        .uri(uri())
        .exchange(&exchange)
        .queue(format!("{queue}.nobody"))
        .protocol(Protocol::Guirpc01(Serializer::Json))
        .connect()
        .await
        .unwrap();
    let err = nobody
        .call::<Value>("add", json!({"a": 1, "b": 2}))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoRoute { .. }), "{err}");
}
