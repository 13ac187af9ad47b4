//! Hostile and broken requests, each sent with a plain AMQP client: every one gets a clear
//! error reply where a reply is possible, is settled (never requeued in a loop), and the
//! server keeps serving everyone else.

use std::time::Duration;

use futures_lite::StreamExt;
use guirpc_tests::{add, expiring, recorded_times, unique_queue, until_queue, wait_recorded};
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicRejectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::json;

use crate::plain_amqp::{Plain, body, function, headers, json_request, status};

mod setup;

use setup::{close_the_servers_connection, stale_reply_address, start};

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_maximum_size_is_refused_before_decoding() {
    let queue = unique_queue("too-large");
    let (_server, client) = start(&queue, |s| s.max_message_size = 1024).await;
    let mut plain = Plain::connect().await;
    let big = json!({"parts": ["x".repeat(2000)], "separator": ""}).to_string();
    plain
        .publish(
            &queue,
            json_request("big", headers(&[function("text.join")])),
            big.as_bytes(),
        )
        .await;
    let reply = plain.reply().await;
    assert_eq!(status(&reply), "error");
    let envelope = body(&reply);
    assert_eq!(envelope["code"], "too_large");
    assert!(
        envelope["message"].as_str().unwrap().contains("1024"),
        "{envelope}"
    );
    // Through the client: the same, as a typed code.
    let err = client
        .call::<String>(
            "text.join",
            json!({"parts": ["y".repeat(4000)], "separator": ""}),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(guirpc_core::ErrorCode::TooLarge),
        "{err:?}"
    );
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_utf8_a_missing_correlation_id_and_dead_reply_addresses_disturb_nothing() {
    let queue = unique_queue("broken");
    let (_server, client) = start(&queue, |_| {}).await;
    let mut plain = Plain::connect().await;

    // A MessagePack string that is not UTF-8, where a String is expected.
    let mut request = vec![0x82, 0xa5];
    request.extend_from_slice(b"parts");
    request.extend_from_slice(&[0x91, 0xa2, 0xff, 0xfe, 0xa9]);
    request.extend_from_slice(b"separator");
    request.push(0xa0);
    let props = BasicProperties::default()
        .with_correlation_id("utf8".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_headers(headers(&[function("text.join")]));
    plain.publish(&queue, props, &request).await;
    let reply = plain.reply().await;
    assert_eq!(status(&reply), "error");
    let envelope: serde_json::Value = rmp_serde::from_slice(&reply.data).unwrap();
    assert_eq!(envelope["code"], "bad_request", "{envelope}");

    // No correlation_id: answered all the same, without one.
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_headers(headers(&[function("add")]));
    plain.publish(&queue, props, b"[2, 2]").await;
    let reply = plain.reply().await;
    assert!(reply.properties.correlation_id().is_none());
    assert_eq!(body(&reply), json!(4));

    // Replies to addresses that do not exist: a queue never declared, a direct reply-to
    // address of a connection that is gone, and one that was never valid.
    let stale = stale_reply_address().await;
    for reply_to in [
        "guirpc-test.no-such-reply-queue",
        stale.as_str(),
        "amq.rabbitmq.reply-to.garbage",
    ] {
        let props =
            json_request("lost", headers(&[function("add")])).with_reply_to(reply_to.into());
        plain.publish(&queue, props, b"[1, 1]").await;
    }
    for i in 0..20 {
        assert_eq!(
            add::call(&client, i, 1).await.unwrap(),
            i + 1,
            "the server stopped serving"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_request_is_run_and_answered() {
    let queue = unique_queue("redelivered");
    // Declare the queue, then stop serving it.
    let (server, _) = start(&queue, |_| {}).await;
    server.shutdown().await.unwrap();
    let mut plain = Plain::connect().await;
    plain
        .publish(
            &queue,
            json_request("again", headers(&[function("add")])),
            b"[20, 22]",
        )
        .await;
    // Another consumer takes it and gives it back: it is now marked redelivered.
    let taker = Plain::connect().await;
    let mut consumer = taker
        .channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let taken = consumer.next().await.unwrap().unwrap();
    taken
        .acker
        .reject(BasicRejectOptions { requeue: true })
        .await
        .unwrap();
    taker.connection.close(200, "done".into()).await.unwrap();

    let (_server, _) = start(&queue, |_| {}).await;
    let reply = plain.reply().await;
    assert_eq!((status(&reply), body(&reply)), ("ok".into(), json!(42)));
}

#[tokio::test(flavor = "multi_thread")]
async fn rejected_requests_are_dead_lettered_where_configured_and_answered() {
    let queue = unique_queue("dead-letter");
    let plain = Plain::connect().await;
    let (exchange, letters) = guirpc_tests::dead_letters(&plain.channel, &queue).await;
    let (_server, client) = start(&queue, |s| s.dead_letter_exchange = exchange.clone()).await;
    let mut caller = Plain::connect().await;
    let requests: [(BasicProperties, &[u8], &str); 3] = [
        (json_request("1", headers(&[])), b"{}", "bad_request"),
        (
            json_request("2", headers(&[function("nope")])),
            b"{}",
            "not_found",
        ),
        (
            json_request("3", headers(&[function("explode")])),
            br#"{"message": "x"}"#,
            "internal",
        ),
    ];
    for (props, request, code) in requests {
        caller.publish(&queue, props, request).await;
        assert_eq!(body(&caller.reply().await)["code"], code);
    }
    // A cast that fails has no caller to tell: it is dead-lettered too.
    client.cast("parse_port", ("not a port",)).await.unwrap();
    // Good calls are not dead-lettered; the three bad ones and the failed cast are.
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut letters = plain
        .channel
        .basic_consume(
            letters.as_str().into(),
            "".into(),
            no_ack,
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut dead = Vec::new();
    while dead.len() < 4 {
        let letter = tokio::time::timeout(Duration::from_secs(10), letters.next())
            .await
            .unwrap_or_else(|_| panic!("only {dead:?} were dead-lettered"))
            .unwrap()
            .unwrap();
        dead.push(
            letter
                .properties
                .correlation_id()
                .clone()
                .map_or_else(|| "cast".to_owned(), |id| id.to_string()),
        );
    }
    dead.sort();
    assert_eq!(dead, ["1", "2", "3", "cast"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_queued_while_no_server_runs_are_not_run_after_their_deadline() {
    let queue = unique_queue("late");
    let (server, client) = start(&queue, |_| {}).await;
    server.shutdown().await.unwrap();
    let token = format!("queued-while-down-{}", std::process::id());
    let short = client.with_timeout(Duration::from_millis(300));
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let (short, token) = (short.clone(), token.clone());
            tokio::spawn(async move { guirpc_tests::record::call(&short, token).await })
        })
        .collect();
    for call in calls {
        assert!(matches!(
            call.await.unwrap(),
            Err(guirpc_core::Error::Timeout { .. })
        ));
    }
    // Past their deadline, the broker drops them from the queue.
    assert!(
        until_queue(&queue, Duration::from_secs(10), |q| q.message_count() == 0).await,
        "the late calls stayed queued past their deadline"
    );
    let (_server, client) = start(&queue, |_| {}).await;
    // A call made now runs; the ten late ones never do.
    let fresh = format!("{token}-fresh");
    guirpc_tests::record::call(&client, fresh.clone())
        .await
        .unwrap();
    assert!(wait_recorded(&fresh, 1, Duration::from_secs(5)).await);
    assert!(
        !wait_recorded(&token, 1, Duration::from_millis(500)).await,
        "a call ran after its deadline"
    );
}

/// Reply addresses the broker cannot decode, which it answers by closing the connection
/// that carried the reply (541): malformed direct reply-to addresses, and (on RabbitMQ
/// 3.10) a well-formed one naming a node it does not know. A trickle of them among good
/// calls, from one plain AMQP client: every good call is answered, each hostile request
/// runs once and is settled, and the server's consuming connection is never lost.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_reply_addresses_cost_no_connection_and_no_innocent_call() {
    let queue = unique_queue("poison-reply");
    let (server, client) = start(&queue, |settings| {
        settings.metrics_addr = "127.0.0.1:0".into();
    })
    .await;
    let plain = Plain::connect().await;
    let token = format!("poison-{}", std::process::id());
    let poison = [
        "amq.rabbitmq.reply-to.AAAA.BBBB",
        "amq.rabbitmq.reply-to.!!!!.????",
        // NEW_PID_EXT of node `reply@1`, which no broker here is.
        "amq.rabbitmq.reply-to.g1h2AAdyZXBseUAxAAAAAAAAAAAAAAAA.a2tra2tra2tra2tra2tra2s=",
        "amq.rabbitmq.reply-to.g2QADW5vbm9kZUBub3doZXJlAAAAAAAAAAAA.x",
        "amq.rabbitmq.reply-to..",
        "amq.rabbitmq.reply-to.a.b.c",
    ];
    // 2,000 good calls, one hostile request among every 50.
    const CALLS: i64 = 2_000;
    let hostile = CALLS as usize / 50;
    let good: Vec<_> = (0..CALLS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { add::call(&client, i, 1).await })
        })
        .collect();
    for i in 0..hostile {
        let props = json_request(&format!("p{i}"), headers(&[function("record")]))
            .with_reply_to(poison[i % poison.len()].into());
        plain
            .publish(&queue, props, format!(r#"["{token}"]"#).as_bytes())
            .await;
    }
    for (i, call) in good.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as i64 + 1, "call {i}");
    }
    // Each hostile request ran once: none was redelivered, none loops.
    assert!(wait_recorded(&token, hostile as u32, Duration::from_secs(20)).await);
    for i in 0..20 {
        assert_eq!(add::call(&client, i, 2).await.unwrap(), i + 2);
    }
    assert_eq!(recorded_times(&token), Some(hostile as u32));
    let addr = server.metrics_addr().unwrap();
    let metrics = tokio::task::spawn_blocking(move || guirpc_tests::http_get(addr, "/metrics"))
        .await
        .unwrap()
        .1;
    let series = format!("guirpc_server_reconnects_total{{queue=\"{queue}\"}}");
    assert_eq!(
        guirpc_tests::sample(&metrics, &series),
        Some(0.0),
        "the consuming connection was lost:\n{metrics}"
    );
}

/// A request whose server's connection is closed under it, and closed again under its
/// redelivery before it is settled: it runs once, however often it comes back, and its
/// reply reaches its caller once.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_connection_is_closed_under_it_twice_runs_once_and_is_answered_once() {
    let queue = unique_queue("again");
    let (_server, client) = start(&queue, |_| {}).await;
    let mut plain = Plain::connect().await;
    let token = format!("again-{}", std::process::id());
    let slow = json_request("slow", headers(&[function("record_then_nap")]));
    plain
        .publish(&queue, slow, json!([token, 8000]).to_string().as_bytes())
        .await;
    assert!(
        wait_recorded(&token, 1, Duration::from_secs(10)).await,
        "the slow request runs"
    );
    for _ in 0..2 {
        close_the_servers_connection(&queue).await;
    }
    let reply = plain.reply().await;
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        "slow"
    );
    assert_eq!(status(&reply), "ok");
    let more = tokio::time::timeout(Duration::from_secs(2), plain.reply()).await;
    assert!(
        more.is_err(),
        "a second reply: {:?}",
        more.map(|r| r.properties)
    );
    assert_eq!(
        recorded_times(&token),
        Some(1),
        "the slow request ran again"
    );
    assert_eq!(add::call(&client, 2, 2).await.unwrap(), 4);
}

/// Requests without an identity (casts: no correlation ID, no reply address, no message
/// ID) cannot be told apart: two identical ones redelivered together both run again.
#[tokio::test(flavor = "multi_thread")]
async fn identical_casts_redelivered_together_both_run_again() {
    let queue = unique_queue("twin-casts");
    let (_server, client) = start(&queue, |_| {}).await;
    let plain = Plain::connect().await;
    let token = format!("twins-{}", std::process::id());
    let cast = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_headers(headers(&[function("record_then_nap")]));
    for _ in 0..2 {
        plain
            .publish(
                &queue,
                cast.clone(),
                json!([token, 6000]).to_string().as_bytes(),
            )
            .await;
    }
    assert!(wait_recorded(&token, 2, Duration::from_secs(10)).await);
    // Both nap: the server's connection is closed under them.
    close_the_servers_connection(&queue).await;
    assert!(
        wait_recorded(&token, 4, Duration::from_secs(10)).await,
        "each cast runs again"
    );
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
}

/// Nesting deep enough to exhaust a stack, in both codecs and at every depth up to
/// 100,000, to a function with typed parameters and to one that takes any value: each is
/// answered `bad_request`, and the server (a debug build here, as `cargo run` gives) lives.
#[tokio::test(flavor = "multi_thread")]
async fn deeply_nested_bodies_are_refused_and_the_server_survives() {
    let queue = unique_queue("deep");
    let (_server, client) = start(&queue, |_| {}).await;
    let mut plain = Plain::connect().await;
    for depth in [129usize, 1_000, 10_000, 100_000] {
        let mut msgpack = vec![0x81, 0xa5];
        msgpack.extend_from_slice(b"value");
        msgpack.extend(std::iter::repeat_n(0x91u8, depth));
        msgpack.push(0xc0);
        let json = format!(
            r#"{{"value": {}null{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        for name in ["count_values", "add"] {
            for (content_type, body) in [
                ("application/msgpack", msgpack.as_slice()),
                ("application/json", json.as_bytes()),
            ] {
                let props = BasicProperties::default()
                    .with_content_type(content_type.into())
                    .with_correlation_id(format!("{depth}").into())
                    .with_reply_to("amq.rabbitmq.reply-to".into())
                    .with_headers(headers(&[function(name)]));
                plain.publish(&queue, props, body).await;
                let reply = plain.reply().await;
                assert_eq!(status(&reply), "error", "{name} {content_type} {depth}");
                let envelope: serde_json::Value = match content_type {
                    "application/json" => serde_json::from_slice(&reply.data).unwrap(),
                    _ => rmp_serde::from_slice(&reply.data).unwrap(),
                };
                assert_eq!(envelope["code"], "bad_request", "{envelope}");
                assert!(
                    envelope["message"].as_str().unwrap().contains(name),
                    "{envelope}"
                );
            }
        }
    }
    // Nesting within the limit is served.
    let nested = (0..100).fold(json!(1), |inner, _| json!([inner]));
    assert_eq!(
        guirpc_tests::count_values::call(&client, nested)
            .await
            .unwrap(),
        101
    );
}

/// The built-in functions take no arguments, as PROTOCOL.md says, and the size and codec
/// refusals name the function.
#[tokio::test(flavor = "multi_thread")]
async fn builtins_refuse_arguments_and_refusals_name_the_function() {
    let queue = unique_queue("builtin-args");
    let (_server, _client) = start(&queue, |s| s.max_message_size = 64).await;
    let mut plain = Plain::connect().await;
    for name in ["guirpc.ping", "guirpc.describe"] {
        for (args, answer) in [
            ("{}", "ok"),
            ("[]", "ok"),
            ("null", "ok"),
            ("5", "error"),
            (r#""s""#, "error"),
            ("[1]", "error"),
            (r#"{"a": 1}"#, "error"),
        ] {
            plain
                .publish(
                    &queue,
                    json_request(args, headers(&[function(name)])),
                    args.as_bytes(),
                )
                .await;
            let reply = plain.reply().await;
            assert_eq!(status(&reply), answer, "{name} {args}");
            if answer == "ok" {
                continue;
            }
            let envelope = body(&reply);
            assert_eq!(envelope["code"], "bad_request", "{envelope}");
            assert!(
                envelope["message"].as_str().unwrap().contains(name),
                "{envelope}"
            );
        }
    }
    let big = format!("[{}]", "1, ".repeat(40) + "1");
    plain
        .publish(
            &queue,
            json_request("big", headers(&[function("add")])),
            big.as_bytes(),
        )
        .await;
    let envelope = body(&plain.reply().await);
    assert_eq!(envelope["code"], "too_large");
    assert!(
        envelope["message"].as_str().unwrap().contains("`add`"),
        "{envelope}"
    );
    let props =
        json_request("csv", headers(&[function("add")])).with_content_type("text/csv".into());
    plain.publish(&queue, props, b"1,2").await;
    let envelope = body(&plain.reply().await);
    assert_eq!(envelope["code"], "bad_request");
    let message = envelope["message"].as_str().unwrap();
    assert!(
        message.contains("`add`") && message.contains("text/csv"),
        "{envelope}"
    );
}

/// A server whose queue is deleted and declared again by someone else, with other
/// arguments, cannot serve it any longer: it stops with the broker's refusal instead of
/// living on with no consumer.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_cannot_declare_its_queue_on_reconnection_stops_with_the_error() {
    let queue = unique_queue("usurped");
    let (server, client) = start(&queue, |_| {}).await;
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
    let plain = Plain::connect().await;
    plain
        .channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    let mut other = expiring();
    other.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(10));
    plain
        .channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            other,
        )
        .await
        .unwrap();
    let ended = tokio::time::timeout(
        Duration::from_secs(20),
        server.run_until(std::future::pending()),
    )
    .await
    .expect("the server went on running with nothing to serve");
    let err = ended.unwrap_err();
    assert!(
        matches!(err, guirpc_core::ServeError::Topology { .. }),
        "{err:?}"
    );
    // Both sides named: what this server declares, and what the broker says the queue has.
    let message = err.to_string();
    assert!(
        message.contains(&queue)
            && message.contains("declared with ")
            && message.contains("x-expires = 60000")
            && message.contains("x-max-length"),
        "{message}"
    );
    plain
        .channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
}
