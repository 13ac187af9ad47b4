//! The `guirpc` binary, run for real against services on the real broker: every command,
//! every exit code.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use guirpc_core::lapin::types::{AMQPValue, FieldTable};
use guirpc_core::{Server, rpc};
use serde_json::{Value, json};

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

/// Sleeps, then answers.
#[rpc]
async fn nap(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// What [`tally`] has added up.
static TALLY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Adds `n` to a total this process keeps: lets casts from the shell be observed.
#[rpc]
async fn tally(n: u64) {
    TALLY.fetch_add(n, Ordering::SeqCst);
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

#[tokio::test(flavor = "multi_thread")]
async fn call_prints_the_result_as_json_in_both_codecs() {
    let server = serve("call").await;
    let q = server.queue();
    for codec in ["msgpack", "json"] {
        let out = guirpc(
            &[
                "call",
                "add",
                r#"{"a": 40, "b": 2}"#,
                "-q",
                q,
                "--codec",
                codec,
            ],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "42");
        let out = guirpc(&["call", "add", "[1, 2]", "-q", q, "--codec", codec], None).await;
        assert_eq!(text(&out.stdout).trim(), "3");
        let out = guirpc(
            &["call", "first_bytes", "[3]", "-q", q, "--codec", codec],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "[0,1,2]");
    }
    // Through the environment, as a script would set it.
    let out = tokio::task::spawn_blocking({
        let q = q.to_owned();
        move || {
            Command::new(env!("CARGO_BIN_EXE_guirpc"))
                .args(["call", "div", "[7, 2]", "--pretty"])
                .env("GUIRPC_URI", broker())
                .env("GUIRPC_QUEUE", q)
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(text(&out.stdout).trim(), "3", "{}", text(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn call_prints_one_line_per_item_of_a_stream() {
    let server = serve("stream").await;
    let q = server.queue();
    let out = guirpc(&["call", "countdown", "[3, null]", "-q", q], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3\n2\n1\n");
    // An error ends the stream: the items before it, then the error line; exit code 1.
    let out = guirpc(
        &["call", "countdown", r#"{"from": 5, "fail_at": 3}"#, "-q", q],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..2], ["5", "4"]);
    let error: Value = serde_json::from_str(lines[2]).unwrap();
    assert_eq!(error["error"]["code"], "handler_error");
    assert_eq!(error["error"]["detail"], "stopped at 3");
    assert_eq!(lines.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn call_exit_codes_tell_the_outcome_apart() {
    let server = serve("exit-codes").await;
    let q = server.queue();

    // 1: the function failed; the envelope on stdout, one sentence on stderr.
    let out = guirpc(&["call", "div", "[1, 0]", "-q", q], None).await;
    assert_eq!(out.status.code(), Some(1));
    let envelope: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(envelope["error"]["code"], "handler_error");
    assert_eq!(envelope["error"]["detail"], "1 / 0");
    assert_eq!(
        text(&out.stderr)
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1
    );
    let out = guirpc(&["call", "nope", "-q", q], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("guirpc list"),
        "{}",
        text(&out.stderr)
    );

    // 2: usage, before any connection: bad JSON says where.
    let out = guirpc(&["call", "add", r#"{"a": 1,, "b": 2}"#, "-q", q], None).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 1 column 9") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );

    // 3: broker unreachable, password masked.
    let out = guirpc(
        &[
            "call",
            "add",
            "[1, 2]",
            "--uri",
            "amqp://guest:hunter2@127.0.0.1:1/%2f",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("amqp://guest:****@127.0.0.1:1/%2f") && !stderr.contains("hunter2"),
        "{stderr}"
    );

    // 4: no reply in time.
    let out = guirpc(
        &["call", "nap", "[3000]", "-q", q, "--timeout", "300ms"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));

    // 5: no such service queue.
    let out = guirpc(
        &["call", "add", "[1, 2]", "-q", "guirpc-test.cli.nobody-home"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("guirpc-test.cli.nobody-home"));
    assert!(
        !text(&out.stderr).contains("Server returned us a message"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn call_stdin_answers_thousands_of_lines_in_order_with_bad_lines_among_them() {
    let server = serve("stdin").await;
    let q = server.queue();
    let n = 5000;
    let mut input = String::new();
    for i in 0..n {
        match i % 97 {
            13 => input.push_str("{not json\n"),
            14 => input.push_str("42\n"),
            15 => input.push_str(&format!("{{\"a\": {i}}}\n")),
            _ if i % 101 == 0 => input.push_str(&format!("[{i}, 0]\n")),
            _ => input.push_str(&format!("[{i}, 1]\n")),
        }
    }
    let out = guirpc(
        &["call", "div", "--stdin", "--inflight", "64", "-q", q],
        Some(input),
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "some lines failed: {}",
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), n, "one output line per input line");
    for (i, line) in lines.iter().enumerate() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("line {i}: {e}: {line}"));
        let code = &value["error"]["code"];
        match i % 97 {
            13 => assert_eq!(code, "invalid_json", "line {i}: {line}"),
            14 => assert_eq!(code, "invalid_json", "line {i}: {line}"),
            15 => assert_eq!(code, "bad_request", "line {i}: {line}"),
            _ if i % 101 == 0 => assert_eq!(code, "handler_error", "line {i}: {line}"),
            _ => assert_eq!(value, json!(i), "line {i}"),
        }
    }
    assert!(
        lines[13].contains("line 14"),
        "errors name their input line: {}",
        lines[13]
    );

    let out = guirpc(
        &["call", "add", "--stdin", "-q", q],
        Some("[1, 2]\n[3, 4]\n".into()),
    )
    .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "3\n7\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_every_function_with_its_signature_and_description() {
    let server = serve("list").await;
    let out = guirpc(&["list", "-q", server.queue()], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let header = stdout.lines().next().unwrap();
    assert!(
        header.starts_with("NAME")
            && header.contains("PARAMETERS")
            && header.contains("DESCRIPTION")
    );
    let add_line = stdout
        .lines()
        .find(|l| l.starts_with("add "))
        .expect(&stdout);
    assert!(
        add_line.contains("a: i64, b: i64") && add_line.contains("Adds two integers."),
        "{add_line}"
    );
    let div_line = stdout
        .lines()
        .find(|l| l.starts_with("div "))
        .expect(&stdout);
    assert!(div_line.contains("Result<i64, String>"), "{div_line}");

    let out = guirpc(&["list", "-q", server.queue(), "--json"], None).await;
    let description: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(description["queue"], server.queue());
    let functions = description["functions"].as_array().unwrap();
    let names: Vec<&str> = functions
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["add", "countdown", "div", "first_bytes", "nap", "tally"]
    );
    assert_eq!(
        functions[0]["params"],
        json!([{"name": "a", "type": "i64"}, {"name": "b", "type": "i64"}])
    );
    assert_eq!(functions[1]["streams"], true);
    assert_eq!(functions[2]["blocking"], true);
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_answers_only_when_a_server_does() {
    let server = serve("ping").await;
    let q = server.queue().to_owned();
    let out = guirpc(&["ping", "-q", &q], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("pong from ") && stdout.contains(&format!("queue `{q}`")),
        "{stdout}"
    );
    let out = guirpc(&["ping", "-q", &q, "--json"], None).await;
    let pong: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(pong["in_flight"], 0);
    assert_eq!(pong["functions"], 6);
    assert!(
        pong["instance"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{}", std::process::id()))
    );
    assert!(pong["latency_ms"].as_f64().unwrap() > 0.0);

    // The queue outlives its server: a ping then times out.
    server.shutdown().await.unwrap();
    let out = guirpc(&["ping", "-q", &q, "--timeout", "300ms"], None).await;
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let out = guirpc(&["ping", "-q", "guirpc-test.cli.nobody-home"], None).await;
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn config_init_writes_every_setting_and_never_overwrites() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["config".into(), "init".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(dir.join("guirpc.toml")).unwrap();
    for key in [
        "uri = ",
        "queue = ",
        "prefetch = 128",
        "concurrency = 64",
        "timeout = \"30s\"",
        "GUIRPC_URI",
    ] {
        assert!(written.contains(key), "{key} missing from\n{written}");
    }
    std::fs::write(dir.join("guirpc.toml"), "[service]\nqueue = \"mine\"\n").unwrap();
    let out = run(&["config".into(), "init".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("guirpc.toml")).unwrap(),
        "[service]\nqueue = \"mine\"\n"
    );

    // show: where each value came from; the password masked.
    let args: Vec<String> = [
        "config",
        "show",
        "--json",
        "--timeout",
        "5s",
        "--uri",
        "amqp://u:hunter2@h/%2f",
    ]
    .map(String::from)
    .to_vec();
    let out = run(&args, None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("hunter2"));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |key: &str| entries.iter().find(|e| e["key"] == key).unwrap().clone();
    assert_eq!(find("service.queue")["value"], "mine");
    assert!(
        find("service.queue")["source"]
            .as_str()
            .unwrap()
            .starts_with("file ")
    );
    assert_eq!(find("client.timeout")["source"], "flag");
    assert_eq!(find("broker.uri")["value"], "amqp://u:****@h/%2f");
    assert_eq!(find("service.prefetch")["source"], "default");
    let out = Command::new(env!("CARGO_BIN_EXE_guirpc"))
        .args(["config", "show"])
        .current_dir(&dir)
        .env("GUIRPC_PREFETCH", "7")
        .output()
        .unwrap();
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("service.prefetch"))
        .unwrap();
    assert!(
        row.contains(" 7 ") && row.ends_with("env GUIRPC_PREFETCH"),
        "{row}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_show_lists_the_pipe_tables() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-config-pipes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("guirpc.toml"),
        "[[pipe]]\nname = \"text.wc\"\ncommand = \"python3 wc.py\"\nworkers = 4\ntimeout = \"5s\"\ndir = \"scripts\"\n\n[[pipe]]\nname = \"say\"\ncommand = [\"bash\", \"-c\", \"echo 'hi there'\"]\n",
    )
    .unwrap();
    let out = run(&["config".into(), "show".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = |key: &str| {
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{table}"));
        assert!(row.ends_with("file guirpc.toml"), "{row}");
        row.to_owned()
    };
    assert!(row("pipe[text.wc].command").contains(" python3 wc.py "));
    assert!(row("pipe[text.wc].workers").contains(" 4 "));
    assert!(row("pipe[text.wc].timeout").contains(" 5s "));
    assert!(row("pipe[text.wc].dir").contains(" scripts "));
    assert!(row("pipe[say].workers").contains(" 1 "));
    assert!(row("pipe[say].timeout").contains(" 30s "));
    assert!(row("pipe[say].dir").contains(" . "));
    // The command as `--pipe` reads it back, quotes and all.
    let args: Vec<String> = ["config", "show", "--json"].map(String::from).to_vec();
    let out = run(&args, None, Some(&dir));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let value = |key: &str| {
        entries
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no {key}"))["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(value("pipe[text.wc].workers"), "4");
    let say =
        guirpc_core::pipe::PipeFunction::parse(&format!("say={}", value("pipe[say].command")))
            .unwrap();
    assert_eq!(say.command, ["bash", "-c", "echo 'hi there'"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn new_refuses_existing_directories_and_bad_names() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/keep.txt"), "mine").unwrap();
    let out = run(&["new".into(), "taken".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(dir.join("taken/keep.txt")).unwrap(),
        "mine"
    );
    let out = run(&["new".into(), "9lives".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.join("9lives").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_service_builds_serves_and_answers_at_once() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-scaffold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["new".into(), "greeter".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let crate_dir = dir.join("greeter");
    for file in [
        "Cargo.toml",
        "guirpc.toml",
        "src/lib.rs",
        "src/main.rs",
        "examples/client.rs",
        "README.md",
    ] {
        assert!(crate_dir.join(file).exists(), "{file} missing");
    }
    // Built in a target directory of its own next to the workspace's, kept between runs.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bins", "--examples"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "the new crate does not build:\n{}",
        text(&build.stderr)
    );

    let queue = unique_queue("scaffold");
    // The standalone `guirpc serve`, run in the crate's directory, serves the crate's functions.
    let mut service = Command::new(env!("CARGO_BIN_EXE_guirpc"))
        .args(["serve", "--queue", &queue])
        .current_dir(&crate_dir)
        .env("GUIRPC_URI", broker())
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO", env!("CARGO"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `ping` until the service answers: it is up once its queue exists and it consumes.
    let mut answered = false;
    for _ in 0..100 {
        let out = run(
            &[
                "ping".into(),
                "-q".into(),
                queue.clone(),
                "-t".into(),
                "1s".into(),
            ],
            None,
            None,
        );
        if out.status.success() {
            answered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(answered, "the new service never answered a ping");
    let out = run(
        &[
            "call".into(),
            "greet".into(),
            r#"{"name": "you"}"#.into(),
            "-q".into(),
            queue.clone(),
        ],
        None,
        None,
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "\"Hello, you!\"",
        "{}",
        text(&out.stderr)
    );
    let client = Command::new(target.join("debug/examples/client"))
        .current_dir(&crate_dir)
        .env("GUIRPC_URI", broker())
        .env("GUIRPC_QUEUE", &queue)
        .output()
        .unwrap();
    assert_eq!(
        text(&client.stdout).trim(),
        "Hello, world!",
        "{}",
        text(&client.stderr)
    );
    Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()
        .unwrap();
    assert!(service.wait().unwrap().success());
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_help_and_a_serve_without_functions() {
    let out = run(&["completions".into(), "bash".into()], None, None);
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(
        script.contains("guirpc") && script.contains("ping"),
        "{script}"
    );
    for command in [
        "new",
        "config",
        "config init",
        "config show",
        "serve",
        "call",
        "list",
        "ping",
    ] {
        let mut args: Vec<String> = command.split(' ').map(String::from).collect();
        args.push("--help".into());
        let out = run(&args, None, None);
        assert_eq!(out.status.code(), Some(0), "{command}");
        assert!(
            text(&out.stdout).contains("Example"),
            "`{command} --help` shows no example"
        );
    }
    let out = run(&["frobnicate".into()], None, None);
    assert_eq!(out.status.code(), Some(2));
    // The standalone binary links no functions and this is no crate directory.
    let out = run(&["serve".into()], None, Some(&std::env::temp_dir()));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no #[rpc] functions"),
        "{}",
        text(&out.stderr)
    );
}

/// A reader that closes the pipe before the output comes (`guirpc list | head -1`) ends
/// the command quietly, not with a panic.
#[tokio::test(flavor = "multi_thread")]
async fn a_closed_output_pipe_ends_quietly() {
    let server = serve("closed-pipe").await;
    let q = server.queue().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_guirpc"))
            .args(["list", "-q", &q])
            .env("GUIRPC_URI", broker())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before a line is written.
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}

/// `call --stdin` shows its progress on a terminal (here a pseudo-terminal made by
/// `script`), and writes nothing to standard error otherwise.
#[tokio::test(flavor = "multi_thread")]
async fn call_stdin_shows_progress_only_on_a_terminal() {
    let server = serve("progress").await;
    let q = server.queue().to_owned();
    let dir = std::env::temp_dir().join(format!("guirpc-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input: String = (0..3000).map(|i| format!("[{i}, 1]\n")).collect();
    std::fs::write(dir.join("in.jsonl"), &input).unwrap();

    let quiet = guirpc(&["call", "add", "--stdin", "-q", &q], Some(input)).await;
    assert_eq!(quiet.status.code(), Some(0));
    assert_eq!(text(&quiet.stderr), "", "progress on a pipe");
    assert_eq!(text(&quiet.stdout).lines().count(), 3000);

    let shell = format!(
        "{} call add --stdin -q {q} < in.jsonl > out.jsonl",
        env!("CARGO_BIN_EXE_guirpc")
    );
    let on_terminal = tokio::task::spawn_blocking(move || {
        let out = Command::new("script")
            .args(["-qec", &shell, "/dev/null"])
            .current_dir(&dir)
            .env("GUIRPC_URI", broker())
            .stdin(Stdio::null())
            .output()
            .expect("`script` (util-linux) runs");
        let results = std::fs::read_to_string(dir.join("out.jsonl")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (out, results)
    })
    .await
    .unwrap();
    let (out, results) = on_terminal;
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert_eq!(results.lines().count(), 3000);
    let screen = text(&out.stdout);
    assert!(
        screen.contains("lines done"),
        "no progress shown: {screen:?}"
    );
}

/// Flags take typed values, listed in help; the help shows the program's own defaults;
/// `GUIRPC_LOG` takes `tracing`'s filter syntax and refuses a word that is no level.
#[tokio::test(flavor = "multi_thread")]
async fn flags_are_typed_and_log_filters_are_checked() {
    let out = guirpc(&["call", "add", "[1, 2]", "--timeout", "soon"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("30s"), "{}", text(&out.stderr));
    let out = guirpc(&["serve", "--delivery", "twice"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at-least-once"),
        "{}",
        text(&out.stderr)
    );
    let out = guirpc(&["ping", "--log-level", "loud"], None).await;
    assert_eq!(out.status.code(), Some(2));
    let out = guirpc(&["serve", "--help"], None).await;
    let help = text(&out.stdout);
    for expected in [
        "[default: guirpc]",
        "[env: GUIRPC_PREFETCH] [default: 128]",
        "at-most-once",
        "[possible values: error, warn, info, debug, trace]",
        "--metrics-addr <HOST:PORT>",
        "[env: GUIRPC_METRICS_ADDR] [default: \"\"]",
        "--otlp-endpoint <URL>",
        "[env: GUIRPC_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT]",
    ] {
        assert!(help.contains(expected), "`{expected}` missing from {help}");
    }

    let server = serve("log-filter").await;
    let q = server.queue().to_owned();
    let log = |filter: &'static str| {
        let q = q.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_guirpc"))
                .args(["call", "add", "[1, 2]", "-q", &q])
                .env("GUIRPC_URI", broker())
                .env("GUIRPC_LOG", filter)
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        })
    };
    let out = log("warn,guirpc_core=debug").await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3\n");
    let out = log("loud").await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`loud` is not a level"),
        "{}",
        text(&out.stderr)
    );
}

/// Logs on a terminal are in colour, unless `NO_COLOR` is set.
#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    let screen = |no_color: bool| {
        let shell = format!(
            "{} ping -q guirpc-test.cli.no-such-queue --timeout 1s --log-level debug",
            env!("CARGO_BIN_EXE_guirpc")
        );
        let mut command = Command::new("script");
        command
            .args(["-qec", &shell, "/dev/null"])
            .env("GUIRPC_URI", broker())
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if no_color {
            command.env("NO_COLOR", "1");
        }
        text(&command.output().expect("`script` (util-linux) runs").stdout)
    };
    let coloured = screen(false);
    assert!(
        coloured.contains("DEBUG") && coloured.contains("\x1b["),
        "{coloured:?}"
    );
    let plain = screen(true);
    assert!(
        plain.contains("DEBUG") && !plain.contains("\x1b[3"),
        "{plain:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cast_feeds_a_work_queue_from_a_pipe_and_names_the_lines_it_could_not_cast() {
    let server = serve("cast").await;
    let q = server.queue().to_owned();
    let before = TALLY.load(Ordering::SeqCst);
    let out = guirpc(&["cast", "tally", r#"{"n": 1000000}"#, "-q", &q], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    // A producer's lines, one bad among them: every good one is cast, the bad one named.
    let mut lines: Vec<String> = (1..=500).map(|n| format!("[{n}]")).collect();
    lines.insert(250, "not json".into());
    let out = guirpc(
        &["cast", "tally", "--stdin", "-q", &q],
        Some(lines.join("\n") + "\n"),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("line 251: invalid JSON arguments"),
        "{stderr}"
    );
    assert!(stderr.contains("1 of 501 casts failed"), "{stderr}");
    let expected = before + 1_000_000 + (1..=500).sum::<u64>();
    for _ in 0..200 {
        if TALLY.load(Ordering::SeqCst) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(TALLY.load(Ordering::SeqCst), expected);
    // No queue, no cast: exit 5 at once.
    let out = guirpc(
        &["cast", "tally", "[1]", "-q", &unique_queue("nobody")],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

#[test]
fn subscribe_prints_the_events_publish_sends_one_json_line_each() {
    use std::io::{BufRead, BufReader};
    let prefix = unique_queue("events").replace('.', "-");
    let mut subscriber = Command::new(env!("CARGO_BIN_EXE_guirpc"))
        .args(["subscribe", &format!("{prefix}.*")])
        .env("GUIRPC_URI", broker())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(subscriber.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert!(ready.starts_with("subscribed to"), "{ready}");

    let topic = format!("{prefix}.created");
    let out = run(
        &["publish".into(), topic.clone(), r#"{"id": 1}"#.into()],
        None,
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines = "{\"id\": 2}\nnot json\n[3]\n".to_owned();
    let out = run(
        &["publish".into(), topic.clone(), "--stdin".into()],
        Some(lines),
        None,
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("line 2: invalid JSON event"),
        "{}",
        text(&out.stderr)
    );
    // Not matched by `prefix.*`: never printed.
    let deep = format!("{prefix}.deep.down");
    run(&["publish".into(), deep, "0".into()], None, None);

    let mut printed = BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    for _ in 0..3 {
        let line = printed.next().unwrap().unwrap();
        let value: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["topic"], topic.as_str());
        events.push(value["event"].clone());
    }
    events.sort_by_key(|e| e.to_string());
    assert_eq!(events, [json!([3]), json!({"id": 1}), json!({"id": 2})]);
    subscriber.kill().unwrap();
    subscriber.wait().unwrap();
}

/// Starts `guirpc serve` with `args` in `dir`, and waits until it serves.
fn serve_process(args: &[&str], dir: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_guirpc"))
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("GUIRPC_URI", broker())
        .env_remove("GUIRPC_CONFIG")
        .env_remove("GUIRPC_QUEUE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
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
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("serving") => return child,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("guirpc serve did not start serving");
            }
        }
    }
}

fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standalone_binary_serves_pipe_functions_and_no_worker_outlives_it() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-pipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pid.py"),
        "import json, os, sys\nfor line in sys.stdin:\n    call = json.loads(line)\n    print(json.dumps({\"ok\": {\"pid\": os.getpid(), \"args\": call[\"args\"]}}), flush=True)\n",
    )
    .unwrap();
    let queue = unique_queue("pipes");
    // From the command line, in a directory with no crate: no Rust function at all.
    let mut server = serve_process(
        &[
            "--queue",
            &queue,
            "--pipe",
            "pid=python3 pid.py",
            "--pipe-workers",
            "2",
        ],
        &dir,
    );
    let out = guirpc(&["call", "pid", r#"{"x": 1}"#, "-q", &queue], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["args"], json!({"x": 1}));
    let pid = answer["pid"].as_u64().unwrap();
    assert!(alive(pid));
    // Killed outright, the server cannot end its workers: they see their input close.
    server.kill().unwrap();
    server.wait().unwrap();
    let started = std::time::Instant::now();
    while alive(pid) && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!alive(pid), "worker {pid} outlived its killed server");

    // From guirpc.toml: a [[pipe]] table, described for `guirpc list`.
    std::fs::write(
        dir.join("guirpc.toml"),
        format!(
            "[service]\nqueue = \"{queue}\"\n\n[[pipe]]\nname = \"whoami\"\ncommand = [\"python3\", \"pid.py\"]\nworkers = 2\ntimeout = \"5s\"\ndescription = \"Says which worker answers.\"\nparams = [\"x\"]\n"
        ),
    )
    .unwrap();
    let server = serve_process(&[], &dir);
    let out = guirpc(&["call", "whoami", "[7]", "-q", &queue], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["args"], json!({"x": 7}));
    let out = guirpc(&["list", "-q", &queue], None).await;
    let listed = text(&out.stdout);
    assert!(
        listed.contains("whoami") && listed.contains("Says which worker answers."),
        "{listed}"
    );
    let pid = answer["pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let mut server = server;
    assert!(server.wait().unwrap().success());
    assert!(!alive(pid), "worker {pid} outlived its stopped server");

    // A bad table is a configuration error naming it.
    std::fs::write(
        dir.join("guirpc.toml"),
        "[[pipe]]\nname = \"broken\"\nworkers = 2\n",
    )
    .unwrap();
    let out = run(&["serve".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("command"),
        "{}",
        text(&out.stderr)
    );
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipes_example_serves_a_python_and_a_bash_function() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipes/guirpc.toml");
    let queue = unique_queue("pipes-example");
    let config = config.display().to_string();
    // From another directory: the commands run in the file's.
    let mut server = serve_process(
        &["--config", &config, "--queue", &queue],
        &std::env::temp_dir(),
    );
    let out = guirpc(
        &[
            "call",
            "text.wc",
            r#"{"text": "to be or not"}"#,
            "-q",
            &queue,
        ],
        None,
    )
    .await;
    assert_eq!(text(&out.stdout).trim(), "4", "{}", text(&out.stderr));
    let out = guirpc(&["call", "text.shout", r#"["quiet"]"#, "-q", &queue], None).await;
    assert_eq!(
        text(&out.stdout).trim(),
        "\"QUIET\"",
        "{}",
        text(&out.stderr)
    );
    let out = guirpc(&["call", "text.wc", r#"{"text": 5}"#, "-q", &queue], None).await;
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["code"], "handler_error");
    assert_eq!(error["error"]["detail"], json!({"got": 5}));
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
}
