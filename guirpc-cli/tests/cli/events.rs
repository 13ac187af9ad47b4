//! `cast`, `publish` and `subscribe` from the shell: work fed from a pipe, events printed
//! one JSON line each.

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{TALLY, broker, guirpc, run, serve, text, unique_queue, until};

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
    until(Duration::from_secs(10), || {
        TALLY.load(Ordering::SeqCst) >= expected
    })
    .await;
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
