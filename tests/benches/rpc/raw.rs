//! The baseline: request/reply written directly on lapin, and nothing more.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::oneshot;

/// Echoes every request to its `reply_to`, each reply published (then acknowledged)
/// from a task of its own.
pub(crate) async fn serve(uri: &str, queue: &str, prefetch: u16) -> Connection {
    let connection = Connection::connect(uri, ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .unwrap();
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut requests = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Some(Ok(request)) = requests.next().await {
            let channel = channel.clone();
            tokio::spawn(async move {
                let (Some(reply_to), Some(id)) = (
                    request.properties.reply_to().clone(),
                    request.properties.correlation_id().clone(),
                ) else {
                    return;
                };
                let mut properties = BasicProperties::default().with_correlation_id(id);
                // Answered as guirpc answers a request naming a function in `type`:
                // the status in `type`, the request's `content_type` echoed when it
                // named one. The bare baseline adds nothing.
                if let Some(codec) = request.properties.content_type().clone() {
                    properties = properties.with_content_type(codec);
                }
                if request.properties.kind().is_some() {
                    properties = properties.with_type("ok".into());
                }
                channel
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions::default(),
                        &request.data,
                        properties,
                    )
                    .await
                    .unwrap();
                request.acker.ack(BasicAckOptions::default()).await.unwrap();
            });
        }
    });
    connection
}

/// Publishes requests to a queue and matches replies on direct reply-to.
pub(crate) struct Client {
    _connection: Connection,
    channel: Channel,
    queue: String,
    next: AtomicU64,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>>,
    adds: Adds,
    /// Each request's `user_id` (the URI's user, whom the connection authenticated as),
    /// when `adds` asks for it.
    user_id: Option<lapin::types::ShortString>,
}

/// Protocol features added to the baseline, to measure what each costs:
/// `RAW_CONFIRM`, `RAW_HEADERS`, `RAW_EXPIRATION`, `RAW_TYPE`, `RAW_CODEC`,
/// `RAW_MANDATORY`, `RAW_USER_ID` in the environment of the `raw` arm, or the arm that
/// adds them. Read once.
#[derive(Default)]
pub(crate) struct Adds {
    pub(crate) confirm: bool,
    pub(crate) headers: bool,
    pub(crate) expiration: bool,
    pub(crate) kind: bool,
    /// The request's `content_type` (`application/msgpack`, which guirpc's calls leave
    /// out since it is the default), echoed in the reply's.
    pub(crate) codec: bool,
    pub(crate) mandatory: bool,
    /// The connection's user in `user_id`, which the broker checks against it: guirpc's
    /// calls carry it for the server to know who called.
    pub(crate) user_id: bool,
}

impl Adds {
    /// Every property a guirpc version 2 call in MessagePack carries (and its reply:
    /// the status in `type`), but those named in `RAW_ALL_SKIP` (any of `expiration`,
    /// `type`, `mandatory`, `user_id`), to measure what leaving one out would save;
    /// `RAW_ALL_CODEC` adds the request's `content_type`, echoed in the reply's, as
    /// guirpc's calls carried them before they left them out.
    pub(crate) fn version_2() -> Adds {
        let skip = std::env::var("RAW_ALL_SKIP").unwrap_or_default();
        Adds {
            expiration: !skip.contains("expiration"),
            kind: !skip.contains("type"),
            codec: std::env::var_os("RAW_ALL_CODEC").is_some(),
            mandatory: !skip.contains("mandatory"),
            user_id: !skip.contains("user_id"),
            ..Adds::default()
        }
    }

    pub(crate) fn from_env() -> Adds {
        let set = |name: &str| std::env::var_os(name).is_some();
        Adds {
            confirm: set("RAW_CONFIRM"),
            headers: set("RAW_HEADERS"),
            expiration: set("RAW_EXPIRATION"),
            kind: set("RAW_TYPE"),
            codec: set("RAW_CODEC"),
            mandatory: set("RAW_MANDATORY"),
            user_id: set("RAW_USER_ID"),
        }
    }
}

impl Client {
    pub(crate) async fn connect_with(uri: &str, queue: &str, adds: Adds) -> Client {
        let user_id = adds.user_id.then(|| {
            let parsed: lapin::uri::AMQPUri = uri.parse().unwrap();
            parsed.authority.userinfo.username.as_str().into()
        });
        let connection = Connection::connect(uri, ConnectionProperties::default())
            .await
            .unwrap();
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
        if adds.confirm {
            channel.confirm_select(Default::default()).await.unwrap();
        }
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Vec<u8>>>>> = Arc::default();
        let routes = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let id = reply
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|id| id.as_str().parse::<u64>().ok());
                if let Some(waiting) = id.and_then(|id| routes.lock().unwrap().remove(&id)) {
                    let _ = waiting.send(reply.data);
                }
            }
        });
        Client {
            _connection: connection,
            channel,
            queue: queue.to_owned(),
            next: AtomicU64::new(0),
            pending,
            adds,
            user_id,
        }
    }

    pub(crate) async fn call(&self, payload: &[u8]) -> Vec<u8> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(id, tx);
        let mut properties = BasicProperties::default()
            .with_correlation_id(id.to_string().into())
            .with_reply_to("amq.rabbitmq.reply-to".into());
        if self.adds.headers {
            let mut headers = FieldTable::default();
            headers.insert(
                "guirpc-function".into(),
                lapin::types::AMQPValue::LongString("bench.echo".into()),
            );
            headers.insert(
                "guirpc-deadline".into(),
                lapin::types::AMQPValue::LongLongInt(1 << 50),
            );
            properties = properties.with_headers(headers);
        }
        if self.adds.expiration {
            properties = properties.with_expiration("30000".into());
        }
        if self.adds.kind {
            properties = properties
                .with_type("bench.echo".into())
                .with_timestamp(1 << 50);
        }
        if self.adds.codec {
            properties =
                properties.with_content_type(guirpc_core::Codec::MsgPack.content_type().into());
        }
        if let Some(user) = &self.user_id {
            properties = properties.with_user_id(user.clone());
        }
        let confirm = self.adds.confirm;
        let options = BasicPublishOptions {
            mandatory: confirm || self.adds.mandatory,
            ..Default::default()
        };
        let confirmation = self
            .channel
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                options,
                payload,
                properties,
            )
            .await
            .unwrap();
        if confirm {
            confirmation.await.unwrap();
        }
        rx.await.unwrap()
    }
}
