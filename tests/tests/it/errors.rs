//! Every error a caller can meet, and that the server survives each.

use std::time::Duration;

use guirpc_core::{Client, Error, ErrorCode};
use guirpc_tests::{
    DivError, add, checked_div, explode, explode_blocking, nap, parse_port, serve, uri,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn unknown_function_gets_not_found_naming_it() {
    let (server, client) = serve("not-found").await;
    let err = client
        .call::<i64>("no.such.function", json!({}))
        .await
        .unwrap_err();
    let Error::Remote(remote) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(remote.code(), &ErrorCode::NotFound);
    assert!(
        remote.message().contains("no.such.function"),
        "{}",
        remote.message()
    );
    assert!(
        remote.message().contains(server.queue()),
        "{}",
        remote.message()
    );
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_arguments_get_bad_request_saying_what_was_wrong() {
    let (_server, client) = serve("bad-args").await;
    let cases = [
        (json!({"a": 1}), "missing field `b`"),
        (json!({"a": 1, "b": "two"}), "invalid type"),
        (json!({"a": 1, "b": 2, "c": 3}), "unknown field `c`"),
        (json!([1]), "invalid length"),
        (json!("a string"), "invalid type"),
    ];
    for codec in [guirpc_core::Codec::MsgPack, guirpc_core::Codec::Json] {
        for (args, expected) in &cases {
            let err = client
                .with_codec(codec)
                .call::<i64>("add", args)
                .await
                .unwrap_err();
            let Error::Remote(remote) = &err else {
                panic!("{err:?}")
            };
            assert_eq!(remote.code(), &ErrorCode::BadRequest, "{codec} {args}");
            assert!(remote.message().contains("`add`"), "{}", remote.message());
            assert!(
                remote.message().contains(expected),
                "{codec} {args}: {}",
                remote.message()
            );
        }
    }
    // Too many positional arguments.
    let err = client.call::<i64>("add", (1, 2, 3)).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadRequest), "{err:?}");
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_handler_errors_reach_the_caller_as_their_type() {
    let (_server, client) = serve("typed-errors").await;
    for codec in [guirpc_core::Codec::MsgPack, guirpc_core::Codec::Json] {
        let client = client.with_codec(codec);
        match checked_div::call(&client, 5, 0).await {
            Err(Error::Handler { function, error }) => {
                assert_eq!(function, "checked_div");
                assert_eq!(error, DivError::ByZero(5));
            }
            other => panic!("{other:?}"),
        }
        match parse_port::call(&client, "http".into()).await {
            Err(Error::Handler { error, .. }) => {
                assert!(error.contains("`http` is not a port"), "{error}")
            }
            other => panic!("{other:?}"),
        }
        // By name, the same error arrives as a remote error whose detail decodes.
        let err = client.call::<i64>("checked_div", (5, 0)).await.unwrap_err();
        let Error::Remote(remote) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(remote.code(), &ErrorCode::HandlerError);
        assert!(remote.message().contains("ByZero"), "{}", remote.message());
        assert_eq!(
            remote.detail::<DivError>().unwrap().unwrap(),
            DivError::ByZero(5)
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_handler_gets_internal_and_the_server_keeps_serving() {
    let (_server, client) = serve("panics").await;
    for _ in 0..3 {
        let err = explode::call(&client, "kaboom".into()).await.unwrap_err();
        let Error::Remote(remote) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(remote.code(), &ErrorCode::Internal);
        assert!(remote.message().contains("kaboom"), "{}", remote.message());
        let err = explode_blocking::call(&client, "crash".into())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Internal), "{err:?}");
        assert!(err.to_string().contains("crash"), "{err}");
    }
    assert_eq!(add::call(&client, 2, 2).await.unwrap(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_without_a_reply_ends_with_a_timeout() {
    let (_server, client) = serve("timeout").await;
    let short = client.with_timeout(Duration::from_millis(300));
    // Let the client's returns tick park (a second without calls): the call must wake it,
    // since that tick is what times calls out.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = tokio::time::Instant::now();
    let err = nap::call(&short, 5000).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(&err, Error::Timeout { function, .. } if function == "nap"),
        "{err:?}"
    );
    assert!(err.is_retriable());
    assert!(
        waited >= Duration::from_millis(300),
        "timed out before its timeout: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(1),
        "the call waited well past its timeout: {waited:?}"
    );
    // The late reply is dropped; the client goes on.
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_to_a_service_that_does_not_exist_fails_at_once_with_no_route() {
    let client = Client::builder()
        .uri(uri())
        .queue("guirpc-test.no-such-service")
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    // Let the client's reply router park (after a second without calls): the call must
    // wake it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = tokio::time::Instant::now();
    let err = add::call(&client, 1, 2).await.unwrap_err();
    assert!(
        matches!(&err, Error::NoRoute { queue, .. } if queue == "guirpc-test.no-such-service"),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no route must not wait for the timeout"
    );
    assert!(
        err.to_string().contains("guirpc-test.no-such-service")
            && err.to_string().contains("the default exchange"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_cannot_be_encoded_fails_before_sending() {
    let (_server, client) = serve("encode").await;
    let mut map = std::collections::HashMap::new();
    map.insert(vec![1u8], 1);
    let err = client
        .with_codec(guirpc_core::Codec::Json)
        .call::<i64>("add", map)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_of_the_wrong_type_is_a_decode_error() {
    let (_server, client) = serve("decode").await;
    let err = client.call::<String>("add", (1, 2)).await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("`add`"), "{err}");
}

/// A server on a queue of its own, with settings `configure` changes.
async fn serve_with(
    test: &str,
    configure: impl FnOnce(&mut guirpc_core::config::ServiceSettings),
) -> (String, guirpc_core::Server) {
    let queue = guirpc_tests::unique_queue(test);
    let mut settings = guirpc_core::Settings::default().service();
    settings.broker.uri = guirpc_tests::uri();
    settings.queue = queue.clone();
    configure(&mut settings);
    let server = guirpc_core::Server::builder()
        .settings(settings)
        .queue_arguments(guirpc_tests::expiring())
        .start()
        .await
        .unwrap();
    (queue, server)
}

/// A function that runs past its `max_run` (`#[rpc(max_run = "500ms")]`) is cancelled and
/// its caller answered `max_run_exceeded` at once, not at its own deadline; a server's
/// `service.max_run` bounds the functions that state none.
#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_max_run_is_cancelled_and_its_caller_told_so() {
    use guirpc_tests::{nap, overrun};
    let (queue, _server) = serve_with("max-run", |s| s.max_run = Duration::from_millis(800)).await;
    let client = guirpc_tests::client(&queue).await;
    let token = format!("overrun-{}", std::process::id());
    let started = std::time::Instant::now();
    let err = overrun::call(&client, token.clone(), 10_000)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MaxRunExceeded), "{err}");
    assert!(
        err.to_string().contains("max_run of 500ms"),
        "the message names the limit: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered only after {:?}",
        started.elapsed()
    );
    // Within its limit it answers; the server's own limit bounds the others.
    assert_eq!(overrun::call(&client, token.clone(), 10).await.unwrap(), 10);
    assert_eq!(
        guirpc_tests::recorded_times(&token),
        Some(2),
        "neither ran again"
    );
    let err = nap::call(&client, 5_000).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MaxRunExceeded), "{err}");
    assert_eq!(nap::call(&client, 10).await.unwrap(), 10);
}

/// Arguments over the client's `max_message_size` (16 MiB by default, RabbitMQ 4's limit)
/// fail at once, not retriable, before anything is sent, for calls, casts and events alike;
/// a result over the server's `max_reply_size` is answered `too_large`. Neither costs any
/// other call in flight.
#[tokio::test(flavor = "multi_thread")]
async fn oversized_arguments_fail_before_sending_and_oversized_results_are_answered_too_large() {
    use guirpc_tests::{echo, echo_shared};
    let (queue, _server) = serve_with("oversized", |s| s.max_reply_size = 64 * 1024).await;
    let client = guirpc_tests::client(&queue).await;
    // The default limit: 27 MB of arguments among 50 small calls.
    let small: Vec<_> = (0..50i64)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { guirpc_tests::add::call(&client, i, 1).await })
        })
        .collect();
    let huge = guirpc_core::Bytes::from(vec![7u8; 27_000_000]);
    let err = echo_shared::call(&client, huge.clone()).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("max_message_size"), "{err}");
    for (i, call) in small.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as i64 + 1);
    }
    let err = client
        .cast("echo_shared", (huge.clone(),))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    let err = client.publish("oversized.event", huge).await.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    // A limit of the client's own.
    let strict = Client::builder()
        .uri(guirpc_tests::uri())
        .queue(queue.as_str())
        .max_message_size(1024)
        .connect()
        .await
        .unwrap();
    let err = echo::call(&strict, vec![1; 2048]).await.unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit: 1024, .. }),
        "{err:?}"
    );
    assert_eq!(echo::call(&strict, vec![1; 10]).await.unwrap(), vec![1; 10]);
    // A result over the server's reply limit.
    let big = guirpc_core::Bytes::from(vec![1u8; 100_000]);
    let err = echo_shared::call(&client, big).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::TooLarge), "{err}");
    assert!(err.to_string().contains("max_reply_size"), "{err}");
    assert_eq!(guirpc_tests::add::call(&client, 2, 2).await.unwrap(), 4);
}
