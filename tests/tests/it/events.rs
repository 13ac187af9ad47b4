//! Events: published to a topic exchange, confirmed by the broker, received by every
//! subscription whose pattern matches.

use std::time::Duration;

use guirpc_core::{Client, Event, Subscription};
use guirpc_tests::{Point, unique_queue, uri};

async fn next(subscription: &mut Subscription) -> Event {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("an event within 10 s")
        .expect("the subscription goes on")
        .expect("no connection failure")
}

#[tokio::test(flavor = "multi_thread")]
async fn events_reach_every_subscription_whose_pattern_matches_and_no_other() {
    let prefix = unique_queue("events").replace('.', "-");
    let client = Client::builder().uri(uri()).connect().await.unwrap();
    let mut one_word = client.subscribe(&format!("{prefix}.*")).await.unwrap();
    let mut any_depth = client.subscribe(&format!("{prefix}.#")).await.unwrap();

    let created = format!("{prefix}.created");
    let point = Point { x: 1.5, y: -2.0 };
    client.publish(&created, &point).await.unwrap();
    client
        .with_codec(guirpc_core::Codec::Json)
        .publish(&format!("{prefix}.deep.down"), serde_json::json!({"n": 1}))
        .await
        .unwrap();
    client.publish("elsewhere.created", 0).await.unwrap();

    let first = next(&mut one_word).await;
    assert_eq!(first.topic(), created);
    assert_eq!(first.decode::<Point>().unwrap(), point);
    let first = next(&mut any_depth).await;
    assert_eq!(first.topic(), created);
    let second = next(&mut any_depth).await;
    assert_eq!(second.topic(), format!("{prefix}.deep.down"));
    assert_eq!(second.codec(), guirpc_core::Codec::Json);
    assert_eq!(second.decode::<serde_json::Value>().unwrap()["n"], 1);
    // Nothing more for the one-word pattern: not the deep topic, not the other prefix.
    let more = tokio::time::timeout(Duration::from_millis(300), one_word.next()).await;
    assert!(more.is_err(), "an unexpected event: {more:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_no_one_subscribes_to_is_published_without_error_and_in_memory_too() {
    let client = Client::builder().uri(uri()).connect().await.unwrap();
    client
        .publish(&format!("{}.nobody", unique_queue("events-void")), "hello")
        .await
        .unwrap();
    let offline = guirpc_core::testing::client();
    offline.publish("anything", 1).await.unwrap();
    assert!(offline.subscribe("#").await.is_err());
}
