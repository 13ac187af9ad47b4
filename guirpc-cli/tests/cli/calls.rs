//! `call`, `list` and `ping`: results printed as JSON, one line per item or per input
//! line, exit codes that tell the outcomes apart, progress only on a terminal.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{broker, guirpc, serve, text};

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

/// `--inflight` bounds the calls running, not the lines between the oldest unanswered and
/// the newest: a slow line's later lines go on past it, their results waiting to be
/// written in order. Line 1 passes only after the 12 lines behind it have, 2 in flight
/// (up to 16 lines may wait).
#[tokio::test(flavor = "multi_thread")]
async fn call_stdin_goes_on_past_a_slow_line_and_still_answers_in_order() {
    let server = serve("slow_line").await;
    let input = std::iter::once("[12]\n".to_owned())
        .chain((0..12).map(|_| "[0]\n".to_owned()))
        .collect();
    let out = guirpc(
        &[
            "call",
            "gate",
            "--stdin",
            "--inflight",
            "2",
            "-q",
            server.queue(),
        ],
        Some(input),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 13, "{stdout}");
    assert_eq!(lines[0], "12");
    assert!(lines[1..].iter().all(|line| *line == "0"), "{stdout}");
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
        [
            "add",
            "countdown",
            "div",
            "first_bytes",
            "gate",
            "nap",
            "tally",
            "tally_later"
        ]
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
    assert_eq!(pong["functions"], 8);
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
