//! Hostile and broken requests, each sent with a plain AMQP client: every one gets a clear
//! error reply where a reply is possible, is settled (never requeued in a loop), and the
//! server keeps serving everyone else.

use std::time::Duration;

use futures_lite::StreamExt;
use guirpc_core::Server;
use guirpc_core::config::ServiceSettings;
use guirpc_tests::{add, expiring, unique_queue, uri, wait_recorded};
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicRejectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::json;

use crate::plain_amqp::{Plain, body, function, headers, json_request, status};

async fn start(
    queue: &str,
    configure: impl FnOnce(&mut ServiceSettings),
) -> (Server, guirpc_core::Client) {
    let mut settings = guirpc_core::Settings::default().service();
    settings.uri = uri();
    settings.queue = queue.to_owned();
    configure(&mut settings);
    let server = Server::builder()
        .settings(settings)
        .queue_arguments(expiring())
        .start()
        .await
        .unwrap();
    let client = guirpc_core::Client::builder()
        .uri(uri())
        .queue(queue)
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    (server, client)
}

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

/// The real direct reply-to address of a connection that has closed since.
async fn stale_reply_address() -> String {
    let plain = Plain::connect().await;
    let capture = unique_queue("capture");
    declare_private_queue(&plain, &capture).await;
    // The broker rewrites `amq.rabbitmq.reply-to` into this connection's own address.
    let props = BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into());
    plain
        .channel
        .basic_publish(
            "".into(),
            capture.as_str().into(),
            Default::default(),
            b"x",
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let message = loop {
        if let Some(message) = plain
            .channel
            .basic_get(capture.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            break message;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let address = message
        .delivery
        .properties
        .reply_to()
        .as_ref()
        .unwrap()
        .to_string();
    assert!(address.starts_with("amq.rabbitmq.reply-to."), "{address}");
    plain.connection.close(200, "done".into()).await.unwrap();
    address
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_request_is_run_and_answered() {
    let queue = unique_queue("redelivered");
    // Declare the queue, then stop serving it.
    let (server, _) = start(&queue, |_| {}).await;
    server.shutdown().await;
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
    let exchange = format!("{queue}.dlx");
    let letters = format!("{queue}.letters");
    let plain = Plain::connect().await;
    plain
        .channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    declare_private_queue(&plain, &letters).await;
    plain
        .channel
        .queue_bind(
            letters.as_str().into(),
            exchange.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
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
    // Good calls are not dead-lettered; the three bad ones are.
    assert_eq!(add::call(&client, 1, 2).await.unwrap(), 3);
    let mut dead = Vec::new();
    for _ in 0..100 {
        if let Some(message) = plain
            .channel
            .basic_get(letters.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            dead.push(
                message
                    .delivery
                    .properties
                    .correlation_id()
                    .clone()
                    .unwrap()
                    .to_string(),
            );
            if dead.len() == 3 {
                break;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    dead.sort();
    assert_eq!(dead, ["1", "2", "3"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_queued_while_no_server_runs_are_not_run_after_their_deadline() {
    let queue = unique_queue("late");
    let (server, client) = start(&queue, |_| {}).await;
    server.shutdown().await;
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
    tokio::time::sleep(Duration::from_millis(200)).await;
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

/// A queue only this connection uses, gone with it.
async fn declare_private_queue(plain: &Plain, queue: &str) {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    plain
        .channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .unwrap();
}
