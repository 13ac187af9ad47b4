//! Calls made with nothing but a plain AMQP client and JSON, following docs/PROTOCOL.md:
//! what a program in another language does.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_lite::StreamExt;
use guirpc_tests::{add, serve, uri, wait_recorded};
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer};
use serde_json::{Value, json};

/// A bare AMQP caller on direct reply-to.
pub(crate) struct Plain {
    pub(crate) connection: Connection,
    pub(crate) channel: Channel,
    replies: Consumer,
}

impl Plain {
    pub(crate) async fn connect() -> Plain {
        let connection = Connection::connect(&uri(), ConnectionProperties::default())
            .await
            .unwrap();
        let channel = connection.create_channel().await.unwrap();
        let replies = channel
            .basic_consume(
                "amq.rabbitmq.reply-to".into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap();
        Plain {
            connection,
            channel,
            replies,
        }
    }

    pub(crate) async fn publish(&self, queue: &str, properties: BasicProperties, body: &[u8]) {
        self.channel
            .basic_publish(
                // The default exchange, routing key = the service's queue.
                "".into(),
                queue.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await
            .unwrap();
    }

    pub(crate) async fn reply(&mut self) -> Delivery {
        tokio::time::timeout(Duration::from_secs(10), self.replies.next())
            .await
            .expect("a reply within 10 s")
            .unwrap()
            .unwrap()
    }
}

pub(crate) fn headers(pairs: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in pairs {
        table.insert((*key).into(), value.clone());
    }
    table
}

pub(crate) fn function(name: &str) -> (&'static str, AMQPValue) {
    ("guirpc-function", AMQPValue::LongString(name.into()))
}

pub(crate) fn json_request(correlation_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id(correlation_id.into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_headers(headers)
}

pub(crate) fn status(reply: &Delivery) -> String {
    match reply.properties.kind() {
        Some(status) => status.to_string(),
        None => panic!("a reply without a status (`type`): {:?}", reply.properties),
    }
}

pub(crate) fn body(reply: &Delivery) -> Value {
    assert_eq!(
        reply.properties.content_type().as_ref().unwrap().as_str(),
        "application/json"
    );
    serde_json::from_slice(&reply.data).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_amqp_client_calls_with_json_and_reads_the_reply() {
    let (server, _) = serve("plain-ok").await;
    let mut plain = Plain::connect().await;
    let props = json_request("call-1", headers(&[function("add")])).with_expiration("5000".into());
    plain
        .publish(server.queue(), props, br#"{"a": 1, "b": 2}"#)
        .await;
    let reply = plain.reply().await;
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        "call-1"
    );
    assert_eq!(status(&reply), "ok");
    assert_eq!(body(&reply), json!(3));

    plain
        .publish(
            server.queue(),
            json_request("call-2", headers(&[function("add")])),
            b"[40, 2]",
        )
        .await;
    let reply = plain.reply().await;
    assert_eq!((status(&reply), body(&reply)), ("ok".into(), json!(42)));
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_errors_carry_the_envelope() {
    let (server, client) = serve("plain-errors").await;
    let mut plain = Plain::connect().await;
    let cases: Vec<(BasicProperties, &[u8], &str, &str)> = vec![
        (
            json_request("1", headers(&[function("nope")])),
            b"{}",
            "not_found",
            "nope",
        ),
        (
            json_request("2", headers(&[])),
            b"{}",
            "bad_request",
            "guirpc-function",
        ),
        (
            json_request("3", headers(&[function("add")])),
            b"{not json",
            "bad_request",
            "invalid arguments",
        ),
        (
            json_request("4", headers(&[function("add")])),
            br#"{"a": true, "b": 1}"#,
            "bad_request",
            "invalid type",
        ),
        (
            json_request("5", headers(&[function("add")])).with_content_type("text/csv".into()),
            b"1,2",
            "bad_request",
            "text/csv",
        ),
        (
            json_request("6", headers(&[function("checked_div")])),
            br#"{"a": 4, "b": 0}"#,
            "handler_error",
            "ByZero",
        ),
        (
            json_request("7", headers(&[function("explode")])),
            br#"{"message": "boom"}"#,
            "internal",
            "boom",
        ),
    ];
    for (props, request, code, needle) in cases {
        let id = props.correlation_id().clone().unwrap();
        plain.publish(server.queue(), props, request).await;
        let reply = plain.reply().await;
        assert_eq!(reply.properties.correlation_id().as_ref(), Some(&id));
        assert_eq!(status(&reply), "error", "case {id}");
        let envelope = body(&reply);
        assert_eq!(envelope["code"], code, "case {id}: {envelope}");
        let message = envelope["message"].as_str().unwrap();
        assert!(message.contains(needle), "case {id}: {message}");
        if code == "handler_error" {
            assert_eq!(envelope["detail"], json!({"ByZero": 4}));
        } else {
            assert_eq!(envelope["detail"], Value::Null);
        }
    }
    // MessagePack without content_type is the default, and its reply leaves it out too;
    // a request that names its codec, by any alias, gets the canonical name back.
    let request = rmp_serde::to_vec_named(&json!({"a": 2, "b": 3})).unwrap();
    for (named, announced) in [
        (None, None),
        (Some("application/x-msgpack"), Some("application/msgpack")),
        (Some("application/msgpack"), Some("application/msgpack")),
    ] {
        let props = BasicProperties::default()
            .with_correlation_id("mp".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_headers(headers(&[function("add")]));
        let props = match named {
            Some(content_type) => props.with_content_type(content_type.into()),
            None => props,
        };
        plain.publish(server.queue(), props, &request).await;
        let reply = plain.reply().await;
        let content_type = reply.properties.content_type().as_ref();
        assert_eq!(content_type.map(|c| c.as_str()), announced, "{named:?}");
        assert_eq!(status(&reply), "ok");
        assert_eq!(rmp_serde::from_slice::<i64>(&reply.data).unwrap(), 5);
    }
    // Nothing of this disturbed the service.
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_without_reply_to_is_run_and_acknowledged() {
    let (server, client) = serve("one-way").await;
    let plain = Plain::connect().await;
    let token = format!("one-way-{}", std::process::id());
    for _ in 0..3 {
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_headers(headers(&[function("record")]));
        plain
            .publish(
                server.queue(),
                props,
                json!({"token": token}).to_string().as_bytes(),
            )
            .await;
    }
    assert!(
        wait_recorded(&token, 3, Duration::from_secs(10)).await,
        "the one-way calls did not run"
    );
    // A failing one-way call (no such function) is logged, acknowledged, and stalls nothing.
    let props = BasicProperties::default().with_headers(headers(&[function("nope")]));
    plain.publish(server.queue(), props, b"\x80").await;
    assert_eq!(add::call(&client, 1, 1).await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_past_its_deadline_is_not_run() {
    let (server, _) = serve("deadline").await;
    let mut plain = Plain::connect().await;
    let token = format!("late-{}", std::process::id());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    record_by(&plain, server.queue(), &token, now - 1000, "late").await;
    let reply = plain.reply().await;
    assert_eq!(status(&reply), "error");
    assert_eq!(body(&reply)["code"], "deadline_exceeded");
    assert!(
        !wait_recorded(&token, 1, Duration::from_millis(200)).await,
        "a late request ran"
    );
    // A deadline in the future runs.
    record_by(&plain, server.queue(), &token, now + 60_000, "on-time").await;
    assert_eq!(status(&plain.reply().await), "ok");
    assert!(wait_recorded(&token, 1, Duration::from_secs(1)).await);
}

/// Protocol version 2: the function in `type`, the deadline in `timestamp` (milliseconds
/// since the epoch), no header table; the same server answers version 1 beside it.
#[tokio::test(flavor = "multi_thread")]
async fn version_2_requests_name_the_function_in_type_and_the_deadline_in_timestamp() {
    let (server, _) = serve("plain-v2").await;
    let mut plain = Plain::connect().await;
    let v2 = |id: &str, function: &str| {
        BasicProperties::default()
            .with_content_type("application/json".into())
            .with_correlation_id(id.into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_type(function.into())
    };
    plain
        .publish(server.queue(), v2("v2-1", "add"), br#"{"a": 1, "b": 2}"#)
        .await;
    let reply = plain.reply().await;
    assert_eq!((status(&reply), body(&reply)), ("ok".into(), json!(3)));
    // Version 1 on the same queue, and a header that wins over a `type` of its own.
    let v1 = json_request("v1-1", headers(&[function("add")])).with_type("order".into());
    plain.publish(server.queue(), v1, b"[40, 2]").await;
    let reply = plain.reply().await;
    assert_eq!((status(&reply), body(&reply)), ("ok".into(), json!(42)));
    // A deadline in the past: not run.
    let token = format!("late-v2-{}", std::process::id());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let record = json!({ "token": token }).to_string();
    plain
        .publish(
            server.queue(),
            v2("v2-late", "record").with_timestamp(now - 1000),
            record.as_bytes(),
        )
        .await;
    let reply = plain.reply().await;
    assert_eq!(body(&reply)["code"], "deadline_exceeded");
    assert!(!wait_recorded(&token, 1, Duration::from_millis(200)).await);
    plain
        .publish(
            server.queue(),
            v2("v2-on-time", "record").with_timestamp(now + 60_000),
            record.as_bytes(),
        )
        .await;
    assert_eq!(status(&plain.reply().await), "ok");
    assert!(wait_recorded(&token, 1, Duration::from_secs(1)).await);
    // An unknown function named in `type`.
    plain
        .publish(server.queue(), v2("v2-nope", "nope"), b"{}")
        .await;
    let reply = plain.reply().await;
    assert_eq!(body(&reply)["code"], "not_found");
}

/// Asks `record` to record `token`, with a deadline (milliseconds since the epoch).
async fn record_by(plain: &Plain, queue: &str, token: &str, deadline: i64, id: &str) {
    let props = json_request(
        id,
        headers(&[
            function("record"),
            ("guirpc-deadline", AMQPValue::LongLongInt(deadline)),
        ]),
    );
    plain
        .publish(
            queue,
            props,
            json!({ "token": token }).to_string().as_bytes(),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_without_a_deadline_is_refused_and_credit_for_unknown_streams_is_ignored() {
    let (server, client) = serve("plain-stream").await;
    let mut plain = Plain::connect().await;
    // Asked as a stream, with no deadline: it could wait for credit for ever.
    let stream = ("guirpc-stream", AMQPValue::LongUInt(8));
    plain
        .publish(
            server.queue(),
            json_request("s-1", headers(&[function("count_up"), stream.clone()])),
            br#"{"token": "plain-no-deadline", "n": 3, "pause_ms": 0}"#,
        )
        .await;
    let reply = plain.reply().await;
    assert_eq!(status(&reply), "error");
    let envelope = body(&reply);
    assert_eq!(envelope["code"], "bad_request");
    assert!(
        envelope["message"].as_str().unwrap().contains("deadline"),
        "{envelope}"
    );
    // With one: items, then the end marker with the count.
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 10_000;
    plain
        .publish(
            server.queue(),
            json_request(
                "s-2",
                headers(&[
                    function("count_up"),
                    stream,
                    ("guirpc-deadline", AMQPValue::LongLongInt(deadline)),
                ]),
            ),
            br#"{"token": "plain-deadline", "n": 3, "pause_ms": 0}"#,
        )
        .await;
    let mut seen = Vec::new();
    loop {
        let message = plain.reply().await;
        let kind = status(&message);
        let seq = message
            .properties
            .message_id()
            .as_ref()
            .unwrap()
            .to_string();
        if kind == "end" {
            assert_eq!(seq, "3");
            break;
        }
        assert_eq!(kind, "item");
        if seq == "0" {
            let credit_to = message
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("guirpc-credit-to").cloned());
            assert!(credit_to.is_some(), "{:?}", message.properties);
        }
        seen.push(body(&message));
    }
    assert_eq!(seen, [json!(0), json!(1), json!(2)]);
    assert_eq!(guirpc_tests::add::call(&client, 1, 1).await.unwrap(), 2);
}
