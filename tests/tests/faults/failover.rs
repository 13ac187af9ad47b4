//! More than one node: a URI list to move along, and a cluster losing the node that leads
//! a quorum queue under load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use guirpc_core::{Client, Error, Server};
use guirpc_tests::broker::{PrivateBroker, one_at_a_time};
use guirpc_tests::{add, poll, slow_square, until};

#[tokio::test(flavor = "multi_thread")]
async fn servers_and_clients_move_to_the_next_node_of_the_uri_list() {
    // Two independent nodes: what a URI list gives a server and a client, whatever the
    // nodes are (the cluster test has them share queues).
    let (turn, (first, second)) = one_at_a_time(|| {
        (
            PrivateBroker::start("failover-a"),
            PrivateBroker::start("failover-b"),
        )
    })
    .await;
    let list = format!("{}, {}", first.uri(), second.uri());
    let metrics = guirpc_core::Metrics::new();
    let _server = Server::builder()
        .uri(&list)
        .queue("failover")
        .metrics(&metrics)
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(&list)
        .queue("failover")
        .timeout(Duration::from_secs(5))
        .metrics(&metrics)
        .connect()
        .await
        .unwrap();
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);
    // The server's replies to the client, on the server's own node (which its probe of
    // direct reply-to found), go on its consuming connection: no quarantine connection.
    let mut names = first.connection_names();
    names.sort();
    assert_eq!(
        names,
        ["guirpc client", "guirpc server failover"],
        "both on the first node"
    );
    // The first node goes away: both move to the second, and calls go on there.
    let stopped = Instant::now();
    let first = tokio::task::spawn_blocking(move || {
        first.stop_app();
        first
    })
    .await
    .unwrap();
    let answered = poll(Duration::from_secs(30), || add::call(&client, 2, 3)).await;
    assert_eq!(answered.unwrap(), 5);
    println!(
        "calls answered again {:?} after the first node stopped",
        stopped.elapsed()
    );
    let names = second.connection_names();
    assert!(
        names.iter().any(|n| n.contains("guirpc server"))
            && names.iter().any(|n| n.contains("guirpc client")),
        "{names:?}"
    );
    let text = metrics.encode();
    for role in ["server", "client"] {
        let series = format!(
            "guirpc_broker_moves_total{{role=\"{role}\",node=\"{}\"}}",
            guirpc_core::config::mask_uri(&second.uri())
        );
        assert_eq!(guirpc_tests::sample(&text, &series), Some(1.0), "{text}");
    }
    drop((first, second, turn));
}

/// Calls `slow_square(i)` for each `i` of `calls`, `inflight` at a time, recording each
/// outcome and when it ended.
async fn square_load(
    client: Client,
    calls: impl Iterator<Item = i64>,
    inflight: usize,
    answered: std::sync::Arc<AtomicUsize>,
) -> Vec<(i64, Result<i64, Error>, Instant)> {
    let mut running = tokio::task::JoinSet::new();
    let mut done = Vec::new();
    for i in calls {
        if running.len() >= inflight {
            done.push(running.join_next().await.unwrap().unwrap());
        }
        let (client, answered) = (client.clone(), answered.clone());
        running.spawn(async move {
            let outcome = slow_square::call(&client, i, 0).await;
            answered.fetch_add(1, Ordering::Relaxed);
            (i, outcome, Instant::now())
        });
    }
    while let Some(outcome) = running.join_next().await {
        done.push(outcome.unwrap());
    }
    done
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_loses_the_node_leading_the_queue_under_load_and_no_call_is_lost() {
    use guirpc_core::config::QueueType;
    use guirpc_tests::broker::PrivateCluster;
    let started = Instant::now();
    let (turn, cluster) = one_at_a_time(|| PrivateCluster::start("cluster", 3)).await;
    println!("a cluster of three formed in {:?}", started.elapsed());
    let uris = cluster.uris();
    let mut servers = Vec::new();
    for _ in 0..2 {
        servers.push(
            Server::builder()
                .uri(&uris)
                .queue("cluster")
                .queue_type(QueueType::Quorum)
                .concurrency(32)
                .prefetch(64)
                .start()
                .await
                .unwrap(),
        );
    }
    let clients: Vec<Client> = {
        let mut clients = Vec::new();
        for _ in 0..2 {
            clients.push(
                Client::builder()
                    .uri(&uris)
                    .queue("cluster")
                    .timeout(Duration::from_secs(10))
                    .retries(5)
                    .connect()
                    .await
                    .unwrap(),
            );
        }
        clients
    };
    let cluster = std::sync::Arc::new(cluster);
    let leader = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.leader_of("cluster"))
            .await
            .unwrap()
            .expect("the quorum queue has a leader")
    };
    // Two clients call until told to stop: the leader's node stops after the first 2,000
    // answers, and the load goes on until 2,000 more have come after it stopped, however
    // fast the calls are.
    let progress = std::sync::Arc::new(AtomicUsize::new(0));
    let enough = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(k, client)| {
            let base = k as i64 * 1_000_000;
            let enough = enough.clone();
            tokio::spawn(square_load(
                client.clone(),
                (base..base + 1_000_000).take_while(move |_| !enough.load(Ordering::Relaxed)),
                32,
                progress.clone(),
            ))
        })
        .collect();
    assert!(
        until(Duration::from_secs(120), || progress
            .load(Ordering::Relaxed)
            >= 2_000)
        .await,
        "the load never got under way"
    );
    let stopping_at = Instant::now();
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || cluster.nodes[leader].stop_app())
            .await
            .unwrap();
    }
    // `stop_app` returns once the node has stopped: its connections are closed.
    let stopped_at = Instant::now();
    let answered_by_then = progress.load(Ordering::Relaxed);
    let recovering = until(Duration::from_secs(60), || {
        progress.load(Ordering::Relaxed) >= answered_by_then + 2_000
    })
    .await;
    enough.store(true, Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for load in loads {
        outcomes.extend(load.await.unwrap());
    }
    assert!(
        recovering,
        "fewer than 2,000 calls ended in the minute after the node stopped: {} did",
        progress.load(Ordering::Relaxed) - answered_by_then
    );
    assert_eq!(outcomes.len(), progress.load(Ordering::Relaxed));
    let (mut answered, mut retriable) = (0, 0);
    for (i, outcome, _) in &outcomes {
        match outcome {
            Ok(square) => {
                assert_eq!(*square, i * i);
                answered += 1;
            }
            Err(err) => {
                assert!(err.is_retriable(), "call {i}: {err:?}");
                retriable += 1;
            }
        }
    }
    let first_after = outcomes
        .iter()
        .filter(|(_, outcome, at)| outcome.is_ok() && *at > stopped_at)
        .map(|(_, _, at)| *at)
        .min()
        .expect("calls answered after the stop");
    // The longest wait between two answers: the outage the callers saw.
    let mut times: Vec<Instant> = outcomes.iter().map(|(_, _, at)| *at).collect();
    times.sort_unstable();
    let outage = times
        .windows(2)
        .map(|pair| pair[1] - pair[0])
        .max()
        .unwrap_or_default();
    println!(
        "{answered} answered, {retriable} failed retriably; the leader's node (node {leader}) took {:?} to stop, with {answered_by_then} calls answered; first answer {:?} after it had stopped; longest gap between answers {outage:?}",
        stopped_at - stopping_at,
        first_after - stopped_at
    );
    assert!(
        retriable <= 64,
        "{retriable} calls failed: more than were in flight"
    );
    // The node comes back, rejoins, and the load goes on.
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster.nodes[leader].start_app();
            cluster.wait_running(3, Duration::from_secs(60));
        })
        .await
        .unwrap();
    }
    let more = square_load(clients[0].clone(), 0..500, 16, progress.clone()).await;
    assert!(
        more.iter()
            .all(|(i, outcome, _)| matches!(outcome, Ok(s) if *s == i * i))
    );
    for server in servers {
        server.shutdown().await.unwrap();
    }
    drop(clients);
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .unwrap();
    drop(turn);
}
