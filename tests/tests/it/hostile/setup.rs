//! What the hostile tests stand on: the server under attack, its consuming connection
//! closed as an operator would, and the broker-side queues and addresses they aim at it.

use std::time::Duration;

use guirpc_core::Server;
use guirpc_core::config::ServiceSettings;
use guirpc_tests::{expiring, poll, unique_queue, until_blocking, uri};
use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::plain_amqp::Plain;

/// Serves `queue` with the default settings as `configure` changes them, and a client of it.
pub(super) async fn start(
    queue: &str,
    configure: impl FnOnce(&mut ServiceSettings),
) -> (Server, guirpc_core::Client) {
    let mut settings = guirpc_core::Settings::default().service();
    settings.broker.uri = uri();
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

/// The real direct reply-to address of a connection that has closed since.
pub(super) async fn stale_reply_address() -> String {
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
    let message = poll(Duration::from_secs(10), || async {
        let got = plain
            .channel
            .basic_get(capture.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap();
        got.ok_or(())
    })
    .await
    .expect("the captured message arrives");
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

/// Closes the server's consuming connection, as an operator or a network fault would,
/// once it has one (it may be reconnecting).
pub(super) async fn close_the_servers_connection(queue: &str) {
    let name = format!("guirpc server {queue}");
    let closed = tokio::task::spawn_blocking(move || {
        let mut closed = 0;
        until_blocking(Duration::from_secs(10), || {
            closed = guirpc_tests::broker::close_shared_connections_named(&name);
            closed > 0
        });
        closed
    })
    .await
    .unwrap();
    assert_eq!(closed, 1, "the server has one consuming connection");
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
