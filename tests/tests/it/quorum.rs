//! Quorum queues and their delivery limit: a request that kills its server process every
//! time it is delivered (an abort, which nothing in the process can catch) is dead-lettered
//! after the limit instead of taking down every server of the queue in turn.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guirpc_core::lapin::options::{BasicGetOptions, QueueDeleteOptions};
use guirpc_core::lapin::{Connection, ConnectionProperties};
use guirpc_tests::{dead_letters, unique_queue, uri};

/// Starts the abort server and waits until it serves, or has been killed by the request.
fn abort_server(queue: &str, limit: u32, dlx: &str) -> std::process::Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_abort-server"))
        .args([&uri(), queue, &limit.to_string(), dlx])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    // A redelivered request may kill the server before it prints that it serves: it
    // consumes from the moment it starts. Its stdout then ends, and the caller sees it exit.
    assert!(line.trim() == "serving" || line.is_empty(), "{line:?}");
    child
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_kills_every_server_is_dead_lettered_after_the_delivery_limit() {
    let queue = unique_queue("quorum-abort");
    let connection = Connection::connect(&uri(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let (dlx, letters) = dead_letters(&channel, &queue).await;
    let limit = 2;
    let client = guirpc_tests::client(&queue).await;
    let mut crashed = 0;
    let mut server = abort_server(&queue, limit, &dlx);
    client.cast("crash", ()).await.unwrap();
    loop {
        // The request kills the server within moments, or it has been dead-lettered.
        let started = Instant::now();
        let mut exited = None;
        while started.elapsed() < Duration::from_secs(5) {
            if let Some(status) = server.try_wait().unwrap() {
                exited = Some(status);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        match exited {
            Some(status) => {
                assert!(!status.success(), "{status}");
                crashed += 1;
                assert!(
                    crashed <= limit + 1,
                    "the request is delivered over and over"
                );
                server = abort_server(&queue, limit, &dlx);
            }
            None => break,
        }
    }
    assert!(
        crashed >= limit,
        "only {crashed} crash(es) before the limit of {limit}"
    );
    // Kept where the dead letters go, and the last server lives and serves.
    let letter = channel
        .basic_get(letters.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the request was dead-lettered");
    // Version 2 of the protocol names the function in `type`.
    let function = letter.delivery.properties.kind().clone();
    assert_eq!(function.as_ref().map(|f| f.as_str()), Some("crash"));
    let pong = client.ping().await.expect("the last server serves");
    assert_eq!(pong.functions, 1);
    server.kill().unwrap();
    server.wait().unwrap();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    // A delivery limit on a classic queue is refused, at start.
    let err = guirpc_core::Server::builder()
        .uri(uri())
        .queue(unique_queue("classic-limit"))
        .delivery_limit(3)
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("quorum"), "{err}");
}
