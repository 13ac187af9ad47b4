//! `guirpc dead` and scheduled casts from the shell: what failed, why, and sending it back.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use guirpc_core::Server;
use guirpc_core::lapin::types::{AMQPValue, FieldTable};
use guirpc_core::retry::RetryPolicy;
use serde_json::{Value, json};

use crate::{LATER, broker, guirpc, text, unique_queue, until};

/// The dead letters `guirpc dead list --json` prints.
async fn listed(queue: &str) -> Vec<Value> {
    let out = guirpc(&["dead", "list", "--json", "-q", queue], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn wait_listed(queue: &str, count: usize) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let letters = listed(queue).await;
        if letters.len() >= count || started.elapsed() > Duration::from_secs(15) {
            return letters;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_lists_shows_sends_back_and_drops_what_failed_and_cast_waits_when_asked() {
    let mut arguments = FieldTable::default();
    arguments.insert("x-expires".into(), AMQPValue::LongInt(60_000));
    let server = Server::builder()
        .uri(broker())
        .queue(unique_queue("dead"))
        .queue_arguments(arguments)
        .retry(RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        })
        .start()
        .await
        .unwrap();
    let q = server.queue().to_owned();
    assert!(listed(&q).await.is_empty());
    let out = guirpc(&["dead", "list", "-q", &q], None).await;
    assert!(
        text(&out.stdout).contains("no dead letters"),
        "{}",
        text(&out.stdout)
    );
    for a in [1, 2] {
        let args = json!({ "a": a, "b": 0 }).to_string();
        let out = guirpc(&["cast", "div", &args, "-q", &q], None).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let letters = wait_listed(&q, 2).await;
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(letters[0]["function"], "div");
    assert_eq!(letters[0]["code"], "handler_error");
    assert_eq!(letters[0]["attempts"], 1);
    assert_eq!(letters[0]["queue"], q.as_str());
    let out = guirpc(&["dead", "list", "-q", &q], None).await;
    let table = text(&out.stdout);
    assert!(
        table.starts_with("ID") && table.contains("LAST FAILURE (UTC)"),
        "{table}"
    );
    assert!(table.contains("div") && table.contains("1 / 0"), "{table}");

    // One shown with its arguments.
    let id = letters[0]["id"].as_str().unwrap().to_owned();
    let out = guirpc(&["dead", "show", &id, "-q", &q], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["arguments"], json!({ "a": 1, "b": 0 }));
    assert_eq!(shown["message"], letters[0]["message"]);
    let out = guirpc(&["dead", "show", "no-such-id", "-q", &q], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no dead letter `no-such-id`"));

    // Sent back: it runs again (and, still dividing by zero, is dead again).
    let out = guirpc(&["dead", "retry", "-q", &q], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--all"), "{}", text(&out.stderr));
    let out = guirpc(&["dead", "retry", &id, "-q", &q], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(
        said.contains(&format!("sent {id} (div) back to `{q}`"))
            && said.contains("1 dead letter(s) sent back"),
        "{said}"
    );
    let again = wait_listed(&q, 2).await;
    assert_eq!(again.len(), 2);
    assert!(
        again.iter().all(|letter| letter["id"] != id.as_str()),
        "a new letter for the new failure"
    );

    // Dropped.
    let out = guirpc(&["dead", "purge", "--function", "div", "-q", &q], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 dead letter(s) dropped"),
        "{}",
        text(&out.stdout)
    );
    assert!(listed(&q).await.is_empty());
    let out = guirpc(&["dead", "list", "-q", &unique_queue("nobody")], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no dead-letter queue"),
        "{}",
        text(&out.stderr)
    );

    // A cast that waits: it runs no sooner than asked; one too far out is refused.
    let before = LATER.load(Ordering::SeqCst);
    let asked = Instant::now();
    let out = guirpc(
        &["cast", "tally_later", "[7]", "--delay", "1500ms", "-q", &q],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    until(Duration::from_secs(10), || {
        LATER.load(Ordering::SeqCst) > before
    })
    .await;
    assert_eq!(LATER.load(Ordering::SeqCst), before + 7);
    assert!(
        asked.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        asked.elapsed()
    );
    let out = guirpc(
        &["cast", "tally_later", "[1]", "--delay", "2000h", "-q", &q],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("longest a message can wait"),
        "{}",
        text(&out.stderr)
    );
    let out = guirpc(
        &["cast", "tally_later", "[1]", "--at", "tomorrow", "-q", &q],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("UTC time"),
        "{}",
        text(&out.stderr)
    );
    // `guirpc list` shows how casts are retried.
    let out = guirpc(&["list", "-q", &q], None).await;
    let list = text(&out.stdout);
    assert!(
        list.contains("CASTS RETRIED") && list.contains("no retries"),
        "{list}"
    );
    server.shutdown().await.unwrap();
}
