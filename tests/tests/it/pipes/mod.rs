//! Pipe functions: programs in bash, Python and Rust, reading JSON lines on stdin and
//! answering on stdout, served by a real server on the real broker.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use guirpc_core::pipe::PipeFunction;
use guirpc_core::{Client, Codec, Error, ErrorCode, Metrics, Server};
use guirpc_tests::{expiring, poll, sample, unique_queue, until, until_running, uri};
use serde_json::{Value, json};

mod warnings;

use warnings::Warnings;

/// The Rust worker (`tests/src/bin/pipe-worker.rs`).
fn rust_worker(name: &str) -> PipeFunction {
    PipeFunction::new(name, vec![env!("CARGO_BIN_EXE_pipe-worker").to_owned()])
}

/// Writes a worker script for the test, its path.
fn script(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("guirpc-pipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const PYTHON: &str = r#"
import json, os, sys
for line in sys.stdin:
    call = json.loads(line)
    args = call["args"]
    if args.get("fail"):
        answer = {"error": {"message": "asked to fail", "detail": {"why": args["fail"]}}}
    else:
        answer = {"ok": {"words": len(args["text"].split()), "function": call["function"], "pid": os.getpid(), "greeting": os.environ.get("GREETING"), "deadline_ms": call["deadline_ms"]}}
    print(json.dumps(answer), flush=True)
"#;

/// The bash worker of docs/PIPES.md, as it is there.
const BASH: &str = r#"
while IFS= read -r line; do
  printf '%s\n' "$(jq -c '{ok: (.args.text | [scan("\\S+")] | length)}' <<<"$line")"
done
"#;

async fn serve(test: &str, pipes: Vec<PipeFunction>) -> (Server, Client) {
    serve_with(test, pipes, None).await
}

async fn serve_with(
    test: &str,
    pipes: Vec<PipeFunction>,
    metrics: Option<&Metrics>,
) -> (Server, Client) {
    let queue = unique_queue(test);
    let mut builder = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .shutdown_grace(Duration::from_secs(5));
    if let Some(metrics) = metrics {
        builder = builder.metrics(metrics);
    }
    let server = pipes
        .into_iter()
        .fold(builder, |builder, pipe| builder.pipe(pipe))
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(uri())
        .queue(&queue)
        .timeout(Duration::from_secs(20))
        .connect()
        .await
        .unwrap();
    (server, client)
}

/// Whether process `pid` is gone within `limit`.
async fn gone_within(pid: u64, limit: Duration) -> bool {
    until(limit, || !alive(pid)).await
}

fn alive(pid: u64) -> bool {
    // A reaped process has no /proc entry; a zombie's state is `Z`.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bash_python_and_rust_programs_serve_functions_like_rust_ones() {
    let python = script("words.py", PYTHON);
    let bash = script("words.sh", BASH);
    let mut words = PipeFunction::new(
        "text.words",
        vec!["python3".into(), python.display().to_string()],
    );
    words.params = vec![guirpc_core::pipe::PipeParam {
        name: "text".into(),
        schema: Some(json!({"type": "string"})),
    }];
    words.returns = Some(json!({"type": "object", "required": ["words"]}));
    words.env.insert("GREETING".into(), "hello".into());
    words.description = "Counts words, in Python.".into();
    let metrics = Metrics::new();
    let (server, client) = serve_with(
        "pipes",
        vec![
            words,
            PipeFunction::parse(&format!("text.wc=bash {}", bash.display())).unwrap(),
            rust_worker("sum").workers(2),
        ],
        Some(&metrics),
    )
    .await;
    // Both codecs: MessagePack callers' arguments reach the worker as JSON, and its answer
    // comes back in MessagePack.
    for codec in [Codec::MsgPack, Codec::Json] {
        let client = client.with_codec(codec);
        let counted: Value = client
            .call("text.words", json!({"text": "one two three"}))
            .await
            .unwrap();
        assert_eq!(counted["words"], 3);
        assert_eq!(counted["function"], "text.words");
        assert_eq!(counted["greeting"], "hello");
        // The caller's deadline, for a worker that wants to give up in time.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let deadline = counted["deadline_ms"].as_u64().unwrap();
        assert!(
            deadline > now_ms && deadline <= now_ms + 21_000,
            "{deadline}"
        );
        // In order, named by the declared parameters.
        let counted: Value = client.call("text.words", ["a b"]).await.unwrap();
        assert_eq!(counted["words"], 2);
        let wc: u64 = client
            .call("text.wc", json!({"text": " the quick  brown\tfox "}))
            .await
            .unwrap();
        assert_eq!(wc, 4, "words are what blanks separate, however many");
        let sum: Value = client.call("sum", json!({"a": 2, "b": 3})).await.unwrap();
        assert_eq!(sum["sum"], 5);
    }
    // An error line reaches the caller as the function's error, detail and all.
    let err = client
        .call::<Value>("text.words", json!({"text": "", "fail": "on purpose"}))
        .await
        .unwrap_err();
    let Error::Remote(remote) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(remote.code(), &ErrorCode::HandlerError);
    assert_eq!(
        remote.message(),
        "`text.words` returned an error: asked to fail"
    );
    assert_eq!(
        remote.detail::<Value>().unwrap().unwrap(),
        json!({"why": "on purpose"})
    );
    let err = client
        .call::<Value>("sum", json!({"a": -4, "b": 7}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::HandlerError));
    let err = client
        .call::<Value>("text.words", ["too", "many"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err}");
    // Described and counted like any function.
    let description = client.describe().await.unwrap();
    let words = description
        .functions
        .iter()
        .find(|f| f.name == "text.words")
        .unwrap();
    assert_eq!(words.doc, "Counts words, in Python.");
    assert_eq!(words.params[0].name, "text");
    assert_eq!(words.params[0].ty, "string");
    // The types it declares are its schemas; a pipe without declarations takes anything.
    let schema = words.schema.as_ref().unwrap();
    assert_eq!(schema.params["properties"]["text"]["type"], "string");
    assert_eq!(schema.params["required"], json!(["text"]));
    assert_eq!(
        schema.returns.as_ref().unwrap()["required"],
        json!(["words"])
    );
    let wc = description
        .functions
        .iter()
        .find(|f| f.name == "text.wc")
        .unwrap();
    let any = &wc.schema.as_ref().unwrap().params;
    assert!(
        guirpc_core::schema::check(any, &json!({"whatever": [1]})).is_ok(),
        "{any}"
    );
    let text = metrics.encode();
    let series = format!(
        "guirpc_server_calls_total{{queue=\"{}\",function=\"sum\",code=\"ok\"}}",
        server.queue()
    );
    assert_eq!(sample(&text, &series), Some(2.0), "{text}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_crashes_writes_garbage_hangs_or_never_reads_costs_one_call() {
    let never_reads = PipeFunction::parse("deaf=sleep 600")
        .unwrap()
        .timeout(Duration::from_millis(700));
    let (server, client) = serve(
        "pipe-faults",
        vec![
            rust_worker("sum").timeout(Duration::from_secs(1)),
            never_reads,
        ],
    )
    .await;
    let pid_of = |answer: &Value| answer["pid"].as_u64().unwrap();
    let first: Value = client.call("sum", json!({"a": 1, "b": 1})).await.unwrap();
    for (a, says) in [
        (-1, "exited (exit status: 3) while running the call"),
        (-2, "answered with a line that is not JSON"),
        (-3, "did not answer within the pipe's timeout of 1s"),
        (-5, "exited (exit status: 0) while running the call"),
    ] {
        let started = Instant::now();
        let err = client
            .call::<Value>("sum", json!({"a": a, "b": 0}))
            .await
            .unwrap_err();
        let Error::Remote(remote) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(remote.code(), &ErrorCode::Internal, "{remote}");
        assert!(remote.message().contains(says), "{a}: {remote}");
        assert!(remote.message().contains("worker 1 (pid "), "{remote}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // The worker was replaced: the next call is answered, by a new process.
        let next: Value = client.call("sum", json!({"a": 2, "b": 2})).await.unwrap();
        assert_eq!(next["sum"], 4);
        assert_ne!(pid_of(&next), pid_of(&first), "{a}: the same worker");
    }
    // A worker that never reads its input runs into the timeout, every time.
    for _ in 0..2 {
        let err = client.call::<Value>("deaf", ()).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
    }
    // A caller's deadline shorter than the pipe's timeout: the caller hears of it by its
    // timeout (or, the two being the same instant, by the server's `deadline_exceeded`
    // when that comes first); the worker running past it is replaced.
    let impatient = client.with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let err = impatient
        .call::<Value>("sum", json!({"a": -3, "b": 0}))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { .. }) || err.code() == Some(ErrorCode::DeadlineExceeded),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "not by the deadline"
    );
    let next: Value = client.call("sum", json!({"a": 5, "b": 5})).await.unwrap();
    assert_eq!(next["sum"], 10);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_calls_through_four_workers_lose_none() {
    let (server, client) = serve("pipe-load", vec![rust_worker("sum").workers(4)]).await;
    let total = 10_000i64;
    let mut pending = tokio::task::JoinSet::new();
    let mut pids = std::collections::HashSet::new();
    let mut answered = 0;
    for i in 0..total {
        if pending.len() >= 64 {
            let (i, answer): (i64, Value) = pending.join_next().await.unwrap().unwrap();
            assert_eq!(answer["sum"], i * 2);
            pids.insert(answer["pid"].as_u64().unwrap());
            answered += 1;
        }
        let client = client.clone();
        pending.spawn(async move {
            let answer: Value = client.call("sum", json!({"a": i, "b": i})).await.unwrap();
            (i, answer)
        });
    }
    while let Some(done) = pending.join_next().await {
        let (i, answer) = done.unwrap();
        assert_eq!(answer["sum"], i * 2);
        pids.insert(answer["pid"].as_u64().unwrap());
        answered += 1;
    }
    assert_eq!(answered, total);
    assert_eq!(pids.len(), 4, "every worker served");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_answers_running_calls_then_ends_every_worker() {
    let (server, client) = serve("pipe-shutdown", vec![rust_worker("sum").workers(3)]).await;
    let running: Vec<_> = (0..3)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .call::<Value>("sum", json!({"a": -6, "b": 800}))
                    .await
            })
        })
        .collect();
    assert!(
        until_running(&client, 3, Duration::from_secs(10)).await,
        "the three calls never started"
    );
    let stopped = Instant::now();
    server.shutdown().await.unwrap();
    let mut pids = Vec::new();
    for call in running {
        let answer = call.await.unwrap().unwrap();
        assert_eq!(answer["sum"], 794);
        pids.push(answer["pid"].as_u64().unwrap());
    }
    assert!(stopped.elapsed() < Duration::from_secs(5));
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived its server");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_cannot_start_stops_the_server_at_start() {
    let err = Server::builder()
        .uri(uri())
        .queue(unique_queue("pipe-missing"))
        .pipe(PipeFunction::parse("missing=/no/such/program --flag").unwrap())
        .start()
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(err, guirpc_core::ServeError::Config(_)) && message.contains("/no/such/program"),
        "{message}"
    );
    // Two functions of one name, a Rust one and a pipe: refused too.
    let err = Server::builder()
        .uri(uri())
        .queue(unique_queue("pipe-duplicate"))
        .pipe(rust_worker("add"))
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`add`"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_out_of_step_with_its_calls_is_replaced_and_no_caller_gets_anothers_answer() {
    let (server, client) = serve("pipe-step", vec![rust_worker("sum")]).await;
    let first: Value = client.call("sum", json!({"a": 1, "b": 1})).await.unwrap();
    // Two lines for one call: the caller gets the first; the worker is replaced, so the
    // second is nobody's answer.
    let two: Value = client.call("sum", json!({"a": -7, "b": 1})).await.unwrap();
    assert_eq!(two["sum"], -6);
    let next: Value = client.call("sum", json!({"a": 5, "b": 5})).await.unwrap();
    assert_eq!(next["sum"], 10, "a caller got another call's answer");
    assert_ne!(next["pid"], first["pid"]);
    // A JSON line that is no answer: `internal`, and replaced.
    let err = client
        .call::<Value>("sum", json!({"a": -8, "b": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
    assert!(err.to_string().contains("neither"), "{err}");
    assert!(
        err.to_string()
            .contains("must write nothing to its standard output but"),
        "the error says the rule: {err}"
    );
    let after: Value = client.call("sum", json!({"a": 2, "b": 3})).await.unwrap();
    assert_eq!(after["sum"], 5);
    assert_ne!(after["pid"], next["pid"]);
    // Bytes on stderr that are not text are logged, and the worker serves on.
    let noisy: Value = client.call("sum", json!({"a": -9, "b": 10})).await.unwrap();
    assert_eq!(noisy["sum"], 1);
    for _ in 0..3 {
        let again: Value = client.call("sum", json!({"a": 1, "b": 2})).await.unwrap();
        assert_eq!(again["pid"], noisy["pid"], "the worker was replaced");
    }
    server.shutdown().await.unwrap();
}

/// Answers with its pid, then closes its standard output and waits for its next call.
const CLOSES_ITS_OUTPUT: &str = r#"
while IFS= read -r line; do
  printf '{"ok": {"pid": %d}}\n' "$$"
  exec 1>&-
done
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_closes_its_output_between_calls_is_replaced_before_a_call_pays() {
    let closes = script("closes.sh", CLOSES_ITS_OUTPUT);
    let (server, client) = serve(
        "pipe-closes",
        vec![PipeFunction::parse(&format!("closes=bash {}", closes.display())).unwrap()],
    )
    .await;
    let mut last: Value = client.call("closes", ()).await.unwrap();
    for _ in 0..2 {
        // Its output closed while it has no call (it still runs, reading its input): it is
        // replaced then, not when the next call finds it so.
        let pid = last["pid"].as_u64().unwrap();
        assert!(
            gone_within(pid, Duration::from_secs(10)).await,
            "worker {pid} closed its output and was left running"
        );
        let next: Value = client.call("closes", ()).await.unwrap();
        assert_ne!(next["pid"], last["pid"]);
        last = next;
    }
    server.shutdown().await.unwrap();
}

/// Writes a banner on its standard output before it reads its first call; exits (status 4)
/// when asked to crash.
const BANNER: &str = r#"
echo "banner worker 1.0, starting"
while IFS= read -r line; do
  case "$line" in
    *'"crash":true'*) exit 4 ;;
  esac
  printf '{"ok": {"pid": %d}}\n' "$$"
done
"#;

// A current-thread runtime, so that the server's tasks log where the test captures them.
#[tokio::test]
async fn a_worker_that_writes_a_banner_serves_and_so_does_each_replacement() {
    let warnings = Warnings::default();
    let _capture = warnings.capture();
    let banner = script("banner.sh", BANNER);
    let (server, client) = serve(
        "pipe-banner",
        vec![PipeFunction::parse(&format!("banner=bash {}", banner.display())).unwrap()],
    )
    .await;
    let said = |w: &str| w.contains("`banner`") && w.contains("before its first call");
    // Read while the worker waits for its first call, and said so, with the rule.
    assert!(warnings.wait_for(said).await, "no warning of the banner");
    assert_eq!(
        warnings.matching(|w| said(w) && w.contains("must write nothing to its standard output")),
        1
    );
    let first: Value = client.call("banner", json!({})).await.unwrap();
    let mut pids = vec![first["pid"].clone()];
    // Each replacement writes its banner too, while a call waits for it: the banner is
    // still not that call's answer.
    for _ in 0..3 {
        let err = client
            .call::<Value>("banner", json!({"crash": true}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("exit status: 4"), "{err}");
        let next: Value = client.call("banner", json!({})).await.unwrap();
        assert!(!pids.contains(&next["pid"]), "{next}: not a new worker");
        pids.push(next["pid"].clone());
    }
    assert_eq!(warnings.matching(said), 1, "said once");
    server.shutdown().await.unwrap();
}

/// Answers as its arguments ask: with extra keys, with both `ok` and `error`, or an error.
const SHAPES: &str = r#"
import json, sys
for line in sys.stdin:
    call = json.loads(line)
    how = call["args"]["how"]
    if how == "extra":
        answer = {"id": call["id"], "ok": "fine", "took_ms": 1}
    elif how == "both":
        answer = {"ok": 1, "error": "and yet"}
    else:
        answer = {"error": "text must be a string", "id": call["id"]}
    print(json.dumps(answer), flush=True)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_is_exactly_one_of_ok_and_error_and_other_keys_are_ignored() {
    let shapes = script("shapes.py", SHAPES);
    let (server, client) = serve(
        "pipe-shapes",
        vec![PipeFunction::parse(&format!("shapes=python3 {}", shapes.display())).unwrap()],
    )
    .await;
    let fine: String = client
        .call("shapes", json!({"how": "extra"}))
        .await
        .unwrap();
    assert_eq!(fine, "fine");
    let err = client
        .call::<Value>("shapes", json!({"how": "error"}))
        .await
        .unwrap_err();
    let Error::Remote(remote) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(remote.code(), &ErrorCode::HandlerError);
    assert_eq!(
        remote.message(),
        "`shapes` returned an error: text must be a string"
    );
    let err = client
        .call::<Value>("shapes", json!({"how": "both"}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
    assert!(err.to_string().contains("both `ok` and `error`"), "{err}");
    let fine: String = client
        .call("shapes", json!({"how": "extra"}))
        .await
        .unwrap();
    assert_eq!(fine, "fine");
    server.shutdown().await.unwrap();
}

/// On a call: writes its pid to the file its arguments name, then runs for ten minutes.
const LONG_CALL: &str = r#"
import json, os, sys, time
for line in sys.stdin:
    call = json.loads(line)
    path = call["args"]["pidfile"]
    with open(path + ".new", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".new", path)
    time.sleep(600)
    print(json.dumps({"ok": None}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_server_takes_its_workers_with_it_even_in_the_middle_of_a_call() {
    use std::io::BufRead;
    let long = script("long.py", LONG_CALL);
    let queue = unique_queue("pipe-killed");
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_pipe-server"))
        .args([
            uri(),
            queue.clone(),
            format!("long=python3 {}", long.display()),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut serving = String::new();
    std::io::BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut serving)
        .unwrap();
    assert_eq!(serving.trim(), "serving");
    let client = Client::builder()
        .uri(uri())
        .queue(&queue)
        .timeout(Duration::from_secs(60))
        .connect()
        .await
        .unwrap();
    let pidfile = long.with_file_name(format!("long-{}.pid", queue));
    let call = tokio::spawn({
        let pidfile = pidfile.display().to_string();
        async move {
            client
                .call::<Value>("long", json!({"pidfile": pidfile}))
                .await
        }
    });
    let pid = poll(Duration::from_secs(20), || async {
        let text = std::fs::read_to_string(&pidfile).map_err(drop)?;
        text.parse::<u64>().map_err(drop)
    })
    .await
    .expect("the call never reached a worker");
    assert!(alive(pid));
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        gone_within(pid, Duration::from_secs(5)).await,
        "worker {pid}, in the middle of a call, outlived its killed server"
    );
    call.abort();
    let _ = std::fs::remove_file(&pidfile);
}
