//! Streams whose caller's or server's connection drops: they end with a retriable error,
//! and nothing streams on for no one.

use std::time::{Duration, Instant};

use guirpc_core::{Client, Error};
use guirpc_tests::broker::PrivateBroker;
use guirpc_tests::until;

use crate::{client, private_broker, server};

/// Takes items until the stream fails, each within `limit`: the error.
async fn stream_error(items: &mut guirpc_core::ItemStream<u64>, limit: Duration) -> Error {
    use futures_lite::StreamExt;
    loop {
        match tokio::time::timeout(limit, items.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => return err,
            Ok(None) => panic!("the stream ended as if complete"),
            Err(_) => panic!("the stream hangs after a connection dropped"),
        }
    }
}

/// Starts a long stream of `count_up` under `token`, takes 5 items, then closes the
/// connection named `connection`: the stream, the broker, and when it was closed.
async fn stream_then_drop(
    client: &Client,
    token: &str,
    broker: PrivateBroker,
    connection: &'static str,
) -> (guirpc_core::ItemStream<u64>, PrivateBroker, Instant) {
    use futures_lite::StreamExt;
    let mut items = guirpc_tests::count_up::call(client, token.into(), 1_000_000, 5);
    for i in 0..5 {
        assert_eq!(items.next().await.unwrap().unwrap(), i);
    }
    let broker = tokio::task::spawn_blocking(move || {
        assert_eq!(broker.close_connections_named(connection), 1);
        broker
    })
    .await
    .unwrap();
    // Once closed: the seconds `rabbitmqctl` takes to find and close it are not the stream's.
    let dropped_at = Instant::now();
    (items, broker, dropped_at)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_callers_connection_drops_ends_with_a_retriable_error() {
    use futures_lite::StreamExt;
    use guirpc_tests::{count_up, progress_of};
    let (_one, broker) = private_broker("stream-client-drop").await;
    let _server = server(&broker, "streams", 8).await;
    let client = client(&broker, "streams", Duration::from_secs(60)).await;
    let (mut items, broker, dropped_at) =
        stream_then_drop(&client, "client-drop", broker, "guirpc client").await;
    let err = stream_error(&mut items, Duration::from_secs(10)).await;
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert!(dropped_at.elapsed() < Duration::from_secs(3));
    assert!(items.next().await.is_none());
    // With no one to take its items, the server's stream stops at its credit and ends by
    // its deadline at the latest; the client reconnects and streams again.
    assert!(client.wait_connected(Duration::from_secs(5)).await);
    let again: Vec<u64> = count_up::call(&client, "client-drop-again".into(), 10, 0)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(again.len(), 10);
    assert!(progress_of("client-drop").produced < 1_000_000);
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_servers_connection_drops_ends_with_a_retriable_error() {
    use guirpc_tests::progress_of;
    let (_one, broker) = private_broker("stream-server-drop").await;
    let _server = server(&broker, "streams", 8).await;
    let client = client(&broker, "streams", Duration::from_secs(60)).await;
    let (mut items, broker, dropped_at) =
        stream_then_drop(&client, "server-drop", broker, "guirpc server streams").await;
    // The server reconnects and is delivered the request again: it starts the stream
    // anew, which the caller tells apart from the rest of the old one.
    let err = stream_error(&mut items, Duration::from_secs(20)).await;
    assert!(matches!(err, Error::Connection { .. }), "{err:?}");
    assert!(err.is_retriable());
    println!(
        "the caller heard of the server's lost connection {:?} after it",
        dropped_at.elapsed()
    );
    drop(items);
    // The stream started again is cancelled with the caller's stream.
    assert!(
        until(Duration::from_secs(10), || progress_of("server-drop")
            .dropped)
        .await,
        "the restarted stream runs on: {:?}",
        progress_of("server-drop")
    );
    drop(broker);
}
