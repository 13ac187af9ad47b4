//! Every function shape, through typed stubs and by name, in both codecs.

use std::collections::HashMap;

use guirpc_core::Codec;
use guirpc_tests::{
    Move, Point, add, answer, api, checked_div, echo, echo_shared, histogram, join, nothing, serve,
    shift,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn async_and_plain_functions_answer_through_typed_stubs() {
    let (_server, client) = serve("stubs").await;
    assert_eq!(add::call(&client, 2, 3).await.unwrap(), 5);
    assert_eq!(
        join::call(&client, vec!["a".into(), "b".into()], "-".into())
            .await
            .unwrap(),
        "a-b"
    );
    assert_eq!(answer::call(&client).await.unwrap(), 42);
    nothing::call(&client, true).await.unwrap();
    let moved = shift::call(
        &client,
        Point { x: 1.0, y: 1.0 },
        Move::By { dx: 1.0, dy: -1.0 },
        Some(2.0),
    )
    .await
    .unwrap();
    assert_eq!(moved, Point { x: 3.0, y: -1.0 });
    assert_eq!(
        shift::call(&client, Point { x: 1.0, y: 1.0 }, Move::Stay, None)
            .await
            .unwrap(),
        Point { x: 1.0, y: 1.0 }
    );
    let counts = histogram::call(&client, vec!["a".into(), "b".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(
        counts,
        HashMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
    );
    assert_eq!(checked_div::call(&client, 7, 2).await.unwrap(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn both_codecs_carry_every_shape() {
    let (_server, client) = serve("codecs").await;
    for codec in [Codec::MsgPack, Codec::Json] {
        let client = client.with_codec(codec);
        assert_eq!(add::call(&client, -4, 1).await.unwrap(), -3, "{codec}");
        let moved = shift::call(
            &client,
            Point { x: 0.5, y: 0.0 },
            Move::By { dx: 1.0, dy: 2.0 },
            None,
        )
        .await
        .unwrap();
        assert_eq!(moved, Point { x: 1.5, y: 2.0 }, "{codec}");
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(
            echo::call(&client, bytes.clone()).await.unwrap(),
            bytes,
            "{codec}"
        );
        // `Bytes` reads what `Vec<u8>` writes, and back; from MessagePack without a copy.
        let (shared, was_shared) = echo_shared::call(&client, bytes.clone().into())
            .await
            .unwrap();
        assert_eq!(&shared[..], &bytes[..], "{codec}");
        assert_eq!(was_shared, codec == Codec::MsgPack, "{codec}");
        let (plain, _): (Vec<u8>, bool) = client
            .call("echo_shared", json!({ "data": bytes }))
            .await
            .unwrap();
        assert_eq!(plain, bytes, "{codec}");
        let text = "naïve ☃ ünïcödé".to_string();
        assert_eq!(
            join::call(&client, vec![text.clone()], String::new())
                .await
                .unwrap(),
            text,
            "{codec}"
        );
    }
}

/// Large bodies are encoded into buffers kept from earlier calls: many calls at once, of
/// sizes that grow and shrink from wave to wave, each get their own bytes back.
#[tokio::test(flavor = "multi_thread")]
async fn large_bodies_of_many_calls_at_once_each_come_back_whole() {
    let (_server, client) = serve("large-bodies").await;
    let body = |wave: usize, i: usize, len: usize| -> Vec<u8> {
        (0..len).map(|k| (k * 31 + i * 7 + wave) as u8).collect()
    };
    let sizes = [
        16 * 1024,
        300 * 1024,
        64 * 1024,
        100,
        1536 * 1024,
        20 * 1024,
    ];
    for (wave, codec) in [(0, Codec::MsgPack), (1, Codec::MsgPack), (2, Codec::Json)] {
        let client = client.with_codec(codec);
        let calls = (0..24).map(|i| {
            // JSON writes bytes as numbers: smaller bodies keep the test quick.
            let len = sizes[(i + wave) % sizes.len()] / if codec == Codec::Json { 8 } else { 1 };
            let sent = body(wave, i, len);
            let client = client.clone();
            tokio::spawn(async move {
                let back = if i % 2 == 0 {
                    echo::call(&client, sent.clone()).await.unwrap()
                } else {
                    let (back, _) = echo_shared::call(&client, sent.clone().into())
                        .await
                        .unwrap();
                    back.to_vec()
                };
                (i, sent, back)
            })
        });
        for call in calls.collect::<Vec<_>>() {
            let (i, sent, back) = call.await.unwrap();
            assert!(
                back == sent,
                "call {i} of wave {wave} ({codec}): {} bytes sent, {} back",
                sent.len(),
                back.len()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamic_calls_take_arguments_by_name_or_in_order() {
    let (_server, client) = serve("dynamic").await;
    for codec in [Codec::MsgPack, Codec::Json] {
        let client = client.with_codec(codec);
        let by_name: i64 = client.call("add", json!({"b": 2, "a": 40})).await.unwrap();
        let in_order: i64 = client.call("add", (40, 2)).await.unwrap();
        let as_array: i64 = client.call("add", json!([40, 2])).await.unwrap();
        assert_eq!((by_name, in_order, as_array), (42, 42, 42), "{codec}");
        let joined: String = client
            .call("text.join", json!({"parts": ["x", "y"], "separator": "+"}))
            .await
            .unwrap();
        assert_eq!(joined, "x+y");
        let none: Option<()> = client
            .call("nothing", json!({"_ignored": false}))
            .await
            .unwrap();
        assert_eq!(none, None);
        let answer: u32 = client.call("answer", json!({})).await.unwrap();
        assert_eq!(answer, 42);
        let answer: u32 = client.call("answer", ()).await.unwrap();
        assert_eq!(answer, 42);
        let err = client.call::<i64>("add", ()).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(guirpc_core::ErrorCode::BadRequest),
            "{err:?}"
        );
        let moved: serde_json::Value = client
            .call(
                "shift",
                json!({"point": {"x": 1.0, "y": 2.0}, "by": "Stay", "scale": null}),
            )
            .await
            .unwrap();
        assert_eq!(moved, json!({"x": 1.0, "y": 2.0}));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_stubs_call_functions_served_elsewhere() {
    let (_server, client) = serve("declared").await;
    assert_eq!(api::add::call(&client, 1, 2).await.unwrap(), 3);
    assert_eq!(api::checked_div::call(&client, 9, 3).await.unwrap(), 3);
    let err = api::checked_div::call(&client, 9, 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            guirpc_core::Error::Handler {
                error: guirpc_tests::DivError::ByZero(9),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(api::missing::NAME, "missing.function");
}

/// Requests go through the default exchange unless one is named; a named exchange is
/// declared and bound by the server, and the queue stays reachable by name as well.
#[tokio::test(flavor = "multi_thread")]
async fn a_named_exchange_carries_calls_too() {
    let queue = guirpc_tests::unique_queue("named-exchange");
    let exchange = format!("{queue}.x");
    let _server = guirpc_core::Server::builder()
        .uri(guirpc_tests::uri())
        .exchange(&exchange)
        .queue(&queue)
        .queue_arguments(guirpc_tests::expiring())
        .start()
        .await
        .unwrap();
    let through = |exchange: &str, queue: &str| {
        guirpc_core::Client::builder()
            .uri(guirpc_tests::uri())
            .exchange(exchange)
            .queue(queue)
            .connect()
    };
    let named = through(&exchange, &queue).await.unwrap();
    assert_eq!(add::call(&named, 2, 3).await.unwrap(), 5);
    let default = through("", &queue).await.unwrap();
    assert_eq!(add::call(&default, 4, 5).await.unwrap(), 9);

    let elsewhere = through(&exchange, "guirpc-test.not-bound-here")
        .await
        .unwrap();
    let err = add::call(&elsewhere, 1, 1).await.unwrap_err();
    assert!(
        matches!(&err, guirpc_core::Error::NoRoute { .. })
            && err.to_string().contains(&format!("exchange `{exchange}`")),
        "{err}"
    );
    // The exchange is the test's own: leave nothing behind on the shared broker.
    let connection = lapin::Connection::connect(&guirpc_tests::uri(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await
        .unwrap();
    connection.close(200, "done".into()).await.unwrap();
}
