//! Requests in the Python package guirpc 0.1's form, written by hand as hostile or careless
//! callers would: refused with a 400 that says why, answered in that form, and nothing
//! lost (the package itself: tests/guirpc01.rs).

use base64::Engine as _;
use lapin::BasicProperties;
use lapin::types::AMQPValue;

use super::plain_amqp::{Plain, headers};
use guirpc_tests::{serve, wait_recorded};

fn faas(name: &str, content_type: Option<&str>) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_correlation_id("c-1".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_content_encoding("ascii".into())
        .with_headers(headers(&[(
            "FaaS-Name",
            AMQPValue::LongString(name.into()),
        )]));
    match content_type {
        Some(content_type) => properties.with_content_type(content_type.into()),
        None => properties,
    }
}

fn base64(text: &[u8]) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .encode(text)
        .into_bytes()
}

/// The reply's status and its body's text.
fn read(reply: &lapin::message::Delivery) -> (i32, String, String) {
    let headers = reply
        .properties
        .headers()
        .as_ref()
        .expect("headers")
        .inner();
    let status = match headers.get("Response-Status") {
        Some(AMQPValue::LongInt(status)) => *status,
        other => panic!("Response-Status {other:?}"),
    };
    let serializer = match headers.get("Response-Serializer") {
        Some(AMQPValue::LongString(name)) => String::from_utf8_lossy(name.as_bytes()).into_owned(),
        other => panic!("Response-Serializer {other:?}"),
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(&reply.data)
        .expect("a base64 body");
    (status, serializer, String::from_utf8(text).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn careless_and_hostile_guirpc_0_1_requests_get_a_400_that_says_why() {
    let (server, _client) = serve("v01-hostile").await;
    let queue = server.queue().to_owned();
    let mut plain = Plain::connect().await;
    let cases: [(BasicProperties, Vec<u8>, &str); 5] = [
        // A pickle (BinarySerializer): never unpickled.
        (
            faas("add", None),
            base64(b"\x80\x04K\x03."),
            "never unpickles",
        ),
        (
            faas("add", Some("application/json")),
            b"%%% not base64".to_vec(),
            "not base64",
        ),
        (
            faas("add", Some("application/json")),
            base64(b"{\"a\": "),
            "does not parse",
        ),
        (
            faas("add", Some("application/json")),
            base64("\"é\"".as_bytes()),
            "not ASCII",
        ),
        (
            faas("add", Some("application/xml")),
            base64(b"<a/>"),
            "application/xml",
        ),
    ];
    for (properties, body, says) in cases {
        plain.publish(&queue, properties, &body).await;
        let reply = plain.reply().await;
        let (status, serializer, text) = read(&reply);
        assert_eq!(
            (status, serializer.as_str()),
            (400, "TextSerializer"),
            "{text}"
        );
        assert!(
            text.starts_with("[bad_request]") && text.contains(says),
            "{says}: {text}"
        );
        assert_eq!(
            reply.properties.correlation_id().as_ref().unwrap().as_str(),
            "c-1"
        );
    }
    // Answered in its form, the result's text ASCII as the package reads it.
    let properties = faas("text.join", Some("application/json"));
    plain
        .publish(
            &queue,
            properties,
            &base64(br#"{"parts": ["caf\u00e9", "ol\u00e9"], "separator": "-"}"#),
        )
        .await;
    let reply = plain.reply().await;
    let (status, serializer, text) = read(&reply);
    assert_eq!((status, serializer.as_str()), (200, "JsonSerializer"));
    assert_eq!(text, r#""caf\u00e9-ol\u00e9""#);
    // Without `reply_to`, a cast: run, acknowledged, nothing sent (guirpc 0.1's consumer
    // would take it for ever).
    let cast = faas("record", Some("text/plain")).with_reply_to("".into());
    plain.publish(&queue, cast, &base64(b"v01-cast")).await;
    assert!(wait_recorded("v01-cast", 1, std::time::Duration::from_secs(10)).await);
    server.shutdown().await.unwrap();
}
