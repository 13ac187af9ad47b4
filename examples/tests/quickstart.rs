//! The README's quickstart, run for real: the calculator binary serves, both client
//! binaries call it, and `serve` reports a bad configuration or broker clearly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn broker() -> String {
    std::env::var("GUIRPC_TEST_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The `rabbitmqctl` of the broker the tests use: `$GUIRPC_TEST_CTL`, or the machine's.
fn ctl() -> String {
    std::env::var("GUIRPC_TEST_CTL").unwrap_or_else(|_| "rabbitmqctl".into())
}

fn queue(test: &str) -> String {
    format!("guirpc-test.quickstart.{test}.{}", std::process::id())
}

/// Starts `calculator serve` and returns it with its stderr lines, as they come.
fn serve(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_calculator"))
        .arg("serve")
        .args(args)
        .env("GUIRPC_URI", broker())
        .env_remove("GUIRPC_QUEUE")
        .env_remove("GUIRPC_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the calculator binary runs");
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// Reads lines until one contains `needle`; returns all lines read.
fn wait_for(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return seen;
                }
            }
            Err(_) => panic!(
                "no line containing {needle:?} within 30 s; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

fn terminate(mut child: Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap()
}

fn run_client(binary: &str, queue: &str) -> Output {
    Command::new(binary)
        .env("GUIRPC_URI", broker())
        .env("GUIRPC_QUEUE", queue)
        .output()
        .unwrap()
}

#[test]
fn the_calculator_serves_both_clients_and_stops_cleanly_on_sigterm() {
    let queue = queue("serve");
    let (child, lines) = serve(&["--queue", &queue, "--metrics-addr", "127.0.0.1:0"]);
    let mut seen = wait_for(&lines, "metrics, health and status at http://");
    let metrics = seen
        .last()
        .and_then(|line| line.split("http://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .expect("the metrics address")
        .to_owned();
    seen.extend(wait_for(&lines, "serving 3 function(s)"));
    let banner = seen.join("\n");
    assert!(
        banner.contains(&format!("serving queue `{queue}`")),
        "{banner}"
    );
    assert!(banner.contains("amqp://guest:****@"), "{banner}");
    assert!(
        !banner.contains("guest:guest"),
        "the password leaked: {banner}"
    );
    assert!(banner.contains("add(a: i64, b: i64) -> i64"), "{banner}");
    assert!(
        banner.contains("divide(dividend: f64, divisor: f64) -> Result<f64, DivideError>"),
        "{banner}"
    );
    assert!(
        banner.contains("stats.summary(numbers: Vec<f64>) -> Stats"),
        "{banner}"
    );

    let output = run_client(env!("CARGO_BIN_EXE_calc-client"), &queue);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("add(2, 3) = 5"), "{stdout}");
    assert!(stdout.contains("division of 1 by zero"), "{stdout}");
    assert!(
        stdout.contains("100 concurrent additions sum to 9900"),
        "{stdout}"
    );

    let output = run_client(env!("CARGO_BIN_EXE_calc-blocking"), &queue);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("add(20, 22) = 42"), "{stdout}");
    assert!(
        stdout.contains("8 threads got [1, 2, 3, 4, 5, 6, 7, 8]"),
        "{stdout}"
    );

    // The calls show in the metrics, read with curl as Prometheus would scrape them.
    let scrape = |path: &str| {
        let out = Command::new("curl")
            .args([
                "-s",
                "-w",
                "\n%{http_code}",
                &format!("http://{metrics}{path}"),
            ])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let exposition = scrape("/metrics");
    assert!(exposition.ends_with("# EOF\n\n200"), "{exposition}");
    let adds = exposition
        .lines()
        .find_map(|line| {
            line.strip_prefix(&format!(
                "guirpc_server_calls_total{{queue=\"{queue}\",function=\"add\",code=\"ok\"}} "
            ))
        })
        .and_then(|count| count.parse::<u64>().ok());
    assert!(adds.is_some_and(|n| n >= 102), "{exposition}");
    assert_eq!(scrape("/readyz"), "ready: connected and consuming\n\n200");

    let status = terminate(child);
    assert!(
        status.success(),
        "serve should exit 0 on SIGTERM, got {status}"
    );
    // The service queue stays for the next server; remove this test's.
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
}

#[test]
fn an_unreachable_broker_is_reported_masked_and_retried() {
    let (mut child, lines) = serve(&[
        "--uri",
        "amqp://guest:hunter2@127.0.0.1:1/%2f",
        "--queue",
        "unused",
    ]);
    let first = wait_for(
        &lines,
        "broker unreachable at amqp://guest:****@127.0.0.1:1/%2f",
    );
    let again = wait_for(&lines, "broker unreachable");
    let all = [first, again].concat().join("\n");
    assert!(all.contains("retrying in"), "{all}");
    assert!(!all.contains("hunter2"), "the password leaked: {all}");
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve gave up instead of retrying"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn bad_configuration_is_a_usage_error_naming_file_line_and_key() {
    let dir = std::env::temp_dir().join(format!("guirpc-quickstart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[service]\nqueue = \"q\"\nconcurency = 4\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_calculator"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("bad.toml:3:"), "{stderr}");
    assert!(
        stderr.contains("unknown key `service.concurency`"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().filter(|l| l.starts_with("error:")).count(),
        1,
        "{stderr}"
    );

    let output = Command::new(env!("CARGO_BIN_EXE_calculator"))
        .args(["serve", "--uri", "amqp://user:hunter2@host:notaport/%2f"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid broker URI"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    let output = Command::new(env!("CARGO_BIN_EXE_calculator"))
        .args(["serve"])
        .env("GUIRPC_PREFETCH", "lots")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("GUIRPC_PREFETCH"), "{stderr}");
}

/// Whether `python3` with pika can run here. CI installs it (`.ci/run`); elsewhere the
/// Python check is skipped with a note rather than failed.
fn python_with_pika() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import pika"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with pika (apt-get install python3-pika)"
        );
        eprintln!("skipped: python3 with pika is not installed (apt-get install python3-pika)");
    }
    found
}

/// PROTOCOL.md's Python client, exactly as printed there, calls the calculator: a result,
/// each kind of error with its exit code, and a missing service at once.
#[test]
fn the_python_client_of_the_protocol_document_works_as_printed() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = std::fs::read_to_string(format!("{root}/examples/python/call.py")).unwrap();
    let protocol = std::fs::read_to_string(format!("{root}/docs/PROTOCOL.md")).unwrap();
    let printed = protocol
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("PROTOCOL.md has a python block");
    assert_eq!(
        printed, script,
        "PROTOCOL.md's example differs from examples/python/call.py"
    );
    if !python_with_pika() {
        return;
    }
    let queue = queue("python");
    let (child, lines) = serve(&["--queue", &queue]);
    wait_for(&lines, "serving 3 function(s)");
    let python = |function: &str, args: &str, queue: &str| {
        let out = Command::new("python3")
            .arg(format!("{root}/examples/python/call.py"))
            .args([queue, function, args, "--uri", &broker(), "--timeout", "10"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = python("add", r#"{"a": 1, "b": 2}"#, &queue);
    assert_eq!((code, stdout.as_str()), (Some(0), "3"), "{stderr}");
    let (code, _, stderr) = python("divide", r#"{"dividend": 1, "divisor": 0}"#, &queue);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("handler_error"), "{stderr}");
    let (code, _, stderr) = python("nope", "{}", &queue);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not_found"), "{stderr}");
    let started = std::time::Instant::now();
    let (code, _, stderr) = python("add", "[1, 2]", &format!("{queue}.missing"));
    assert_eq!(code, Some(5), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a missing service took {:?}",
        started.elapsed()
    );
    assert!(terminate(child).success());
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
}
