//! Who called, and who may: the caller's identity as the broker verified it, and
//! per-function permissions, on a private node with users of its own.

use std::time::Duration;

use guirpc_core::access::Access;
use guirpc_core::lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use guirpc_core::lapin::types::{AMQPValue, FieldTable};
use guirpc_core::lapin::{BasicProperties, Connection};
use guirpc_core::{Caller, Client, Error, ErrorCode, Server, rpc};
use guirpc_tests::broker::{PrivateBroker, one_at_a_time};

/// Who called, as the function sees it; only alice may.
#[rpc(allow = ["alice"])]
async fn whoami() -> String {
    Caller::current().to_string()
}

/// Who called; anyone may, verified or not.
#[rpc(allow = ["*"], allow_unverified)]
async fn who_called() -> String {
    Caller::current().to_string()
}

/// Open: nothing in the code says who may.
#[rpc]
async fn open_door() -> String {
    "open".into()
}

/// Who called, from a plain `fn` on the blocking pool.
#[rpc]
fn who_called_blocking() -> String {
    Caller::current().to_string()
}

fn callers() -> &'static std::sync::Mutex<Vec<String>> {
    static CALLERS: std::sync::OnceLock<std::sync::Mutex<Vec<String>>> = std::sync::OnceLock::new();
    CALLERS.get_or_init(Default::default)
}

/// Records its caller and fails the first time: its retry must run as the same caller.
#[rpc(allow = ["alice"], retry(attempts = 2, backoff = "100ms..100ms", jitter = 0))]
async fn fails_once() -> Result<(), String> {
    let mut callers = callers().lock().unwrap();
    callers.push(Caller::current().to_string());
    if callers.len() == 1 {
        return Err("not yet".into());
    }
    Ok(())
}

async fn client(uri: String) -> Client {
    Client::builder()
        .uri(uri)
        .queue("access")
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap()
}

fn code<T: std::fmt::Debug>(result: Result<T, Error>) -> ErrorCode {
    match result {
        Err(Error::Remote(remote)) => remote.code().clone(),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

/// A call from a plain AMQP client, with or without a `user_id`: the reply's error code,
/// or the body of a value; `None` when no reply came.
async fn plain_call(uri: &str, function: &str, user_id: Option<&str>) -> Option<serde_json::Value> {
    let connection = Connection::connect(uri, Default::default()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let mut replies = channel
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
    let mut headers = FieldTable::default();
    headers.insert(
        "guirpc-function".into(),
        AMQPValue::LongString(function.into()),
    );
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_correlation_id("1".into())
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_headers(headers);
    if let Some(user) = user_id {
        properties = properties.with_user_id(user.into());
    }
    let published = channel
        .basic_publish(
            "".into(),
            "access".into(),
            BasicPublishOptions::default(),
            b"{}",
            properties,
        )
        .await;
    if published.is_err() {
        return None;
    }
    use futures_lite::StreamExt;
    let reply = tokio::time::timeout(Duration::from_secs(3), replies.next()).await;
    let delivery = reply.ok()??.ok()?;
    serde_json::from_slice(&delivery.data).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_are_known_as_the_broker_verified_them_and_permissions_hold() {
    let (_one, broker) = one_at_a_time(|| PrivateBroker::start("access")).await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.add_user("alice", "alice-secret");
        broker.add_user("bob", "bob-secret");
        broker
    })
    .await
    .unwrap();
    let metrics = guirpc_core::Metrics::new();
    let server = Server::builder()
        .uri(broker.uri())
        .queue("access")
        .metrics(&metrics)
        .start()
        .await
        .unwrap();
    let alice = client(broker.uri_as("alice", "alice-secret")).await;
    let bob = client(broker.uri_as("bob", "bob-secret")).await;

    // The function sees who called, as the broker verified it.
    assert_eq!(whoami::call(&alice).await.unwrap(), "alice");
    assert_eq!(who_called::call(&bob).await.unwrap(), "bob");
    assert_eq!(who_called_blocking::call(&bob).await.unwrap(), "bob");
    // Not on the list: refused with the code, and it never runs.
    assert_eq!(code(whoami::call(&bob).await), ErrorCode::Forbidden);
    let forbidden =
        "guirpc_server_calls_total{queue=\"access\",function=\"whoami\",code=\"forbidden\"} 1";
    assert!(metrics.encode().contains(forbidden), "{}", metrics.encode());

    // A plain AMQP client that sets no user_id is unverified: refused where the function
    // wants a verified caller, served where it takes anyone.
    let unverified = plain_call(&broker.uri_as("bob", "bob-secret"), "whoami", None)
        .await
        .unwrap();
    assert_eq!(unverified["code"], "unauthorized", "{unverified}");
    let anyone = plain_call(&broker.uri_as("bob", "bob-secret"), "who_called", None).await;
    assert_eq!(anyone, Some(serde_json::json!("unknown")));
    // One that claims to be someone else is refused by the broker: the server never sees it.
    let calls_before = metrics.encode().matches("function=\"whoami\"").count();
    let forged = plain_call(&broker.uri_as("bob", "bob-secret"), "whoami", Some("alice")).await;
    assert_eq!(forged, None, "the broker let a forged user_id through");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        metrics.encode().matches("function=\"whoami\"").count(),
        calls_before
    );

    // A cast retried by the server runs again as its caller, not as the server.
    fails_once::cast(&alice).await.unwrap();
    assert!(
        guirpc_tests::until(Duration::from_secs(10), || callers().lock().unwrap().len()
            == 2)
        .await
    );
    assert_eq!(*callers().lock().unwrap(), ["alice", "alice"]);
    server.shutdown().await.unwrap();

    // An operator tightens the service in guirpc.toml, without rebuilding it: the file
    // wins over the code, and the built-ins can be restricted too.
    let dir = std::env::temp_dir().join(format!("guirpc-access-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("guirpc.toml");
    std::fs::write(
        &file,
        format!(
            "[broker]\nuri = \"{}\"\n[service]\nqueue = \"access\"\n\n\
             [[allow]]\nfunction = \"open_door\"\nusers = [\"alice\"]\n\n\
             [[allow]]\nfunction = \"whoami\"\nusers = [\"alice\", \"bob\"]\n\n\
             [[allow]]\nfunction = \"guirpc.ping\"\nusers = [\"alice\"]\n",
            broker.uri()
        ),
    )
    .unwrap();
    assert_eq!(open_door::call(&bob).await.ok(), None, "no server yet");
    let settings = guirpc_core::Settings::load(guirpc_core::config::LoadOptions {
        file: Some(file),
        ..Default::default()
    })
    .unwrap();
    let server = Server::builder()
        .settings(settings.service())
        .start()
        .await
        .unwrap();
    assert_eq!(code(open_door::call(&bob).await), ErrorCode::Forbidden);
    assert_eq!(open_door::call(&alice).await.unwrap(), "open");
    assert_eq!(whoami::call(&bob).await.unwrap(), "bob");
    assert_eq!(code(bob.ping().await), ErrorCode::Forbidden);
    assert!(alice.ping().await.is_ok());
    server.shutdown().await.unwrap();

    // From a program, the same rule.
    let server = Server::builder()
        .uri(broker.uri())
        .queue("access")
        .allow(
            "open_door",
            Access {
                users: vec!["bob".into()],
                unverified: false,
            },
        )
        .start()
        .await
        .unwrap();
    assert_eq!(open_door::call(&bob).await.unwrap(), "open");
    assert_eq!(code(open_door::call(&alice).await), ErrorCode::Forbidden);
    server.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
