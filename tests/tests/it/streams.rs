//! Streamed results: items as they are produced, with flow control, cancellation and
//! deadlines, on the real broker.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use guirpc_core::{Client, Error, ErrorCode};
use guirpc_tests::{DivError, count_up, lines, progress_of, shaky, until, uri};

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_arrives_in_order_from_the_typed_stub_by_name_and_blocking() {
    let (server, client) = guirpc_tests::serve("stream-order").await;
    let token = format!("{}-typed", server.queue());
    let items: Vec<u64> = count_up::call(&client, token.clone(), 500, 0)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, (0..500).collect::<Vec<_>>());
    assert!(until(Duration::from_secs(5), || progress_of(&token).dropped).await);

    let by_name: Vec<u64> = client
        .stream::<u64>(
            "count_up",
            serde_json::json!({"token": format!("{token}-by-name"), "n": 3, "pause_ms": 0}),
        )
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(by_name, [0, 1, 2]);

    // No items at all is a stream too.
    let mut empty = count_up::call(&client, format!("{token}-empty"), 0, 0);
    assert!(empty.next().await.is_none());

    let queue = server.queue().to_owned();
    let blocking = std::thread::spawn(move || {
        let client = Client::builder()
            .uri(uri())
            .queue(&queue)
            .connect_blocking()
            .unwrap();
        count_up::call_blocking(&client, format!("{queue}-blocking"), 100, 0)
            .map(Result::unwrap)
            .sum::<u64>()
    })
    .join()
    .unwrap();
    assert_eq!(blocking, (0..100).sum::<u64>());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_err_item_ends_the_stream_with_the_functions_own_error() {
    let (_server, client) = guirpc_tests::serve("stream-err").await;
    let mut items = lines::call(&client, 10, Some(3));
    for i in 0..3 {
        assert_eq!(items.next().await.unwrap().unwrap(), format!("line {i}"));
    }
    match items.next().await {
        Some(Err(Error::Handler {
            error: DivError::ByZero(3),
            function,
        })) => assert_eq!(function, "lines"),
        other => panic!("expected the handler's error, got {other:?}"),
    }
    assert!(items.next().await.is_none());

    // A panic in the middle ends it with `internal`; the server goes on.
    let mut items = shaky::call(&client, 10, 4);
    for i in 0..4 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
    }
    match items.next().await {
        Some(Err(Error::Remote(remote))) => {
            assert_eq!(remote.code(), &ErrorCode::Internal);
            assert!(remote.message().contains("shaky gave up at 4"), "{remote}");
        }
        other => panic!("expected internal, got {other:?}"),
    }
    let all: Vec<String> = lines::call(&client, 2, None)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(all, ["line 0", "line 1"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_come_as_the_first_item_and_plain_functions_answer_with_one() {
    let (_server, client) = guirpc_tests::serve("stream-refusals").await;
    // A function that does not stream answers a stream request with its one value.
    let sums: Vec<i64> = client
        .stream::<i64>("add", (1, 2))
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(sums, [3]);
    // An unknown function, bad arguments: one error, then the end.
    let mut missing = client.stream::<u64>("missing", ());
    match missing.next().await {
        Some(Err(Error::Remote(remote))) => assert_eq!(remote.code(), &ErrorCode::NotFound),
        other => panic!("expected not_found, got {other:?}"),
    }
    assert!(missing.next().await.is_none());
    let mut bad = client.stream::<u64>("count_up", serde_json::json!({"n": "many"}));
    match bad.next().await {
        Some(Err(Error::Remote(remote))) => assert_eq!(remote.code(), &ErrorCode::BadRequest),
        other => panic!("expected bad_request, got {other:?}"),
    }
    // A streaming function called as a plain call has nowhere to send its items.
    match client
        .call::<u64>(
            "count_up",
            serde_json::json!({"token": "x", "n": 1, "pause_ms": 0}),
        )
        .await
    {
        Err(Error::Remote(remote)) => {
            assert_eq!(remote.code(), &ErrorCode::BadRequest);
            assert!(remote.message().contains("streams its result"), "{remote}");
        }
        other => panic!("expected bad_request, got {other:?}"),
    }
    // No queue: no route, at once.
    let started = Instant::now();
    let mut nowhere = client
        .with_queue("guirpc-no-such-queue")
        .stream::<u64>("count_up", ());
    assert!(matches!(
        nowhere.next().await,
        Some(Err(Error::NoRoute { .. }))
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_consumer_holds_the_producer_to_the_credit_window() {
    let (server, client) = guirpc_tests::serve("stream-slow").await;
    let token = format!("{}-slow", server.queue());
    let total = 1_000;
    let mut items = count_up::call(&client, token.clone(), total, 0);
    for i in 0..10 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
    }
    // The consumer stops; the producer must stop too, a window ahead at most.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ahead = progress_of(&token).produced;
    let window = u64::from(guirpc_core::stream::DEFAULT_WINDOW);
    assert!(
        ahead <= 10 + window + 1,
        "the producer ran {ahead} items while the caller took 10 (window {window})"
    );
    assert!(
        ahead >= 10 + window / 2,
        "the producer stalled early at {ahead}"
    );
    // It goes on as the consumer does, to the end.
    let mut next = 10;
    while let Some(item) = items.next().await {
        assert_eq!(item.unwrap(), next);
        next += 1;
    }
    assert_eq!(next, total);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_stream_cancels_the_function_and_the_server_serves_on() {
    let (server, client) = guirpc_tests::serve("stream-cancel").await;
    let token = format!("{}-cancel", server.queue());
    let mut items = count_up::call(&client, token.clone(), 1_000_000, 1);
    for i in 0..5 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
    }
    drop(items);
    assert!(
        until(Duration::from_secs(5), || progress_of(&token).dropped).await,
        "the function still runs after its caller dropped the stream: {:?}",
        progress_of(&token)
    );
    let produced = progress_of(&token).produced;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        progress_of(&token).produced,
        produced,
        "it stopped producing"
    );

    // A function waiting for its next item is stopped by the cancellation, not by its
    // next item.
    let waiting = format!("{token}-waiting");
    let mut items = count_up::call(&client, waiting.clone(), 1_000_000, 1_500);
    assert_eq!(items.next().await.unwrap().unwrap(), 0);
    let dropped = Instant::now();
    drop(items);
    assert!(
        until(Duration::from_secs(1), || progress_of(&waiting).dropped).await,
        "a function waiting for its next item ran on after the cancellation"
    );
    assert!(dropped.elapsed() < Duration::from_millis(1_400));
    assert_eq!(progress_of(&waiting).produced, 1);

    // Dropped before the first item came: cancelled when it comes.
    let early = format!("{token}-early");
    let mut items = count_up::call(&client, early.clone(), 1_000_000, 300);
    let _ = tokio::time::timeout(Duration::from_millis(50), items.next()).await;
    drop(items);
    assert!(
        until(Duration::from_secs(5), || progress_of(&early).dropped).await,
        "a stream dropped before its first item runs on: {:?}",
        progress_of(&early)
    );
    assert_eq!(guirpc_tests::add::call(&client, 2, 2).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deadline_bounds_the_whole_stream() {
    let (server, client) = guirpc_tests::serve("stream-deadline").await;
    let token = format!("{}-deadline", server.queue());
    let client = client.with_timeout(Duration::from_millis(800));
    let started = Instant::now();
    let mut items = count_up::call(&client, token.clone(), 1_000, 50);
    let mut got = 0;
    let err = loop {
        match items.next().await {
            Some(Ok(_)) => got += 1,
            Some(Err(err)) => break err,
            None => panic!("the stream ended without its deadline"),
        }
    };
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(got > 3, "only {got} items before the deadline");
    assert!(started.elapsed() < Duration::from_secs(3));
    // The server stops it by the same deadline.
    assert!(until(Duration::from_secs(5), || progress_of(&token).dropped).await);
}
