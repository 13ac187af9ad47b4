//! `--patterns`' streams: items of streamed results, beside raw lapin streaming the same
//! items with the same window of credit.
//!
//! The raw baseline does what docs/PROTOCOL.md's streams ask of the broker, and nothing
//! else: a server consuming stream requests (prefetch 128) that publishes each item to the
//! request's direct reply-to address (`type` `item`, `message_id` its number, the first with
//! the credit queue and the stream's ID in its headers) while the caller's credit lasts,
//! then `end`, then acknowledges the request; a credit queue of its own, exclusive to its
//! connection; a caller on direct reply-to granting half a window (32) each time it has
//! taken half a window (the window: 64, guirpc's). Items are queued on the channel in order
//! without waiting for each write, as guirpc's server does.
//!
//! A round runs `S` streams at once (the in-flight count), `M / S` items each, and its rate
//! is `M` over the time from the first request to the last stream's end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_lite::{Stream, StreamExt};
use guirpc_core::{Client, rpc};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{Semaphore, mpsc};

use crate::patterns::{Results, expiring};
use crate::{Options, broker};

/// The caller's window of credit, guirpc's: the server may send this many items ahead.
const WINDOW: u32 = guirpc_core::stream::DEFAULT_WINDOW;

/// Streams `0..n`.
#[rpc(name = "bench.items")]
async fn items(n: u64) -> impl Stream<Item = u64> {
    futures_lite::stream::iter(0..n)
}

pub(crate) async fn streams(options: &Options, results: &mut Results) {
    let pid = std::process::id();
    let (raw_queue, queue) = (
        format!("bench.streams.raw.{pid}"),
        format!("bench.streams.{pid}"),
    );
    let _raw_server = raw_server(&raw_queue).await;
    let raw_client = RawCaller::connect(&raw_queue).await;
    let server = crate::server()
        .uri(broker())
        .queue(&queue)
        .queue_arguments(expiring())
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker())
        .queue(&queue)
        .timeout(Duration::from_secs(120))
        .connect()
        .await
        .unwrap();
    let messages = options.messages;
    for &streams in &options.streams {
        let each = messages / streams as u64;
        let (mut raw_rates, mut rates) = (Vec::new(), Vec::new());
        for _ in 0..options.rounds {
            let started = Instant::now();
            let running: Vec<_> = (0..streams)
                .map(|_| {
                    let raw_client = raw_client.clone();
                    tokio::spawn(async move { raw_client.stream(each).await })
                })
                .collect();
            for stream in running {
                assert_eq!(stream.await.unwrap(), each);
            }
            raw_rates.push((each * streams as u64) as f64 / started.elapsed().as_secs_f64());

            let started = Instant::now();
            let running: Vec<_> = (0..streams)
                .map(|_| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        let mut items = items::call(&client, each);
                        let mut next = 0;
                        while let Some(item) = items.next().await {
                            assert_eq!(item.unwrap(), next);
                            next += 1;
                        }
                        next
                    })
                })
                .collect();
            for stream in running {
                assert_eq!(stream.await.unwrap(), each);
            }
            rates.push((each * streams as u64) as f64 / started.elapsed().as_secs_f64());
        }
        results.raw("streamed items", streams, &mut raw_rates, &mut rates);
    }
    server.shutdown().await.unwrap();
}

/// The raw stream server: its connection (dropping it ends the server).
async fn raw_server(queue: &str) -> Connection {
    let connection = Connection::connect(&broker(), ConnectionProperties::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    channel
        .basic_qos(128, BasicQosOptions::default())
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
    // The credit queue: server-named, exclusive to this connection.
    let credit_channel = connection.create_channel().await.unwrap();
    let credit_queue = credit_channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap()
        .name()
        .clone();
    let flows: Arc<Mutex<HashMap<u64, Arc<Semaphore>>>> = Arc::default();
    let mut credit = credit_channel
        .basic_consume(
            credit_queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    let granted = flows.clone();
    tokio::spawn(async move {
        let _channel = credit_channel;
        while let Some(Ok(grant)) = credit.next().await {
            let id = grant.properties.correlation_id().as_ref();
            let more = grant.properties.message_id().as_ref();
            if let (Some(id), Some(more)) = (id, more) {
                let flow = granted
                    .lock()
                    .unwrap()
                    .get(&id.as_str().parse().unwrap())
                    .cloned();
                if let Some(flow) = flow {
                    flow.add_permits(more.as_str().parse().unwrap());
                }
            }
        }
    });
    let mut requests = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let next_id = Arc::new(AtomicU64::new(1));
    tokio::spawn(async move {
        while let Some(Ok(request)) = requests.next().await {
            let (channel, flows, credit_queue) =
                (channel.clone(), flows.clone(), credit_queue.clone());
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let reply_to = request.properties.reply_to().clone().unwrap();
                let correlation_id = request.properties.correlation_id().clone().unwrap();
                let n: u64 = rmp_serde::from_slice(&request.data).unwrap();
                let flow = Arc::new(Semaphore::new(WINDOW as usize));
                flows.lock().unwrap().insert(id, flow.clone());
                for seq in 0..n {
                    flow.acquire().await.unwrap().forget();
                    let mut properties = BasicProperties::default()
                        .with_correlation_id(correlation_id.clone())
                        .with_type("item".into())
                        .with_message_id(seq.to_string().into());
                    if seq == 0 {
                        let mut headers = FieldTable::default();
                        headers.insert(
                            "guirpc-credit-to".into(),
                            AMQPValue::LongString(credit_queue.as_str().into()),
                        );
                        headers
                            .insert("guirpc-stream-id".into(), AMQPValue::LongLongInt(id as i64));
                        properties = properties.with_headers(headers);
                    }
                    let body = rmp_serde::to_vec(&seq).unwrap();
                    queue_publish(&channel, reply_to.clone(), &body, properties).await;
                }
                let end = BasicProperties::default()
                    .with_correlation_id(correlation_id)
                    .with_type("end".into())
                    .with_message_id(n.to_string().into());
                queue_publish(&channel, reply_to, &[], end).await;
                flows.lock().unwrap().remove(&id);
                request.acker.ack(BasicAckOptions::default()).await.unwrap();
            });
        }
    });
    connection
}

/// Queues a publish's frames on `channel` without waiting for them to be written.
async fn queue_publish(
    channel: &Channel,
    to: ShortString,
    body: &[u8],
    properties: BasicProperties,
) {
    let publish = channel.basic_publish(
        "".into(),
        to,
        BasicPublishOptions::default(),
        body,
        properties,
    );
    futures_lite::future::poll_once(publish).await;
}

/// The raw caller of streams: direct reply-to, items routed to their stream by
/// correlation ID.
#[derive(Clone)]
struct RawCaller {
    channel: Channel,
    queue: Arc<str>,
    next: Arc<AtomicU64>,
    routes: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<lapin::message::Delivery>>>>,
    _connection: Arc<Connection>,
}

impl RawCaller {
    async fn connect(queue: &str) -> RawCaller {
        let connection = Connection::connect(&broker(), ConnectionProperties::default())
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
        let routes: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<_>>>> = Arc::default();
        let to = routes.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = replies.next().await {
                let id = message.properties.correlation_id().as_ref();
                let id: u64 = id.unwrap().as_str().parse().unwrap();
                if let Some(stream) = to.lock().unwrap().get(&id) {
                    let _ = stream.send(message);
                }
            }
        });
        RawCaller {
            channel,
            queue: queue.into(),
            next: Arc::default(),
            routes,
            _connection: Arc::new(connection),
        }
    }

    /// Streams `n` items; how many came.
    async fn stream(&self, n: u64) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.routes.lock().unwrap().insert(id, tx);
        let mut headers = FieldTable::default();
        headers.insert("guirpc-stream".into(), AMQPValue::LongUInt(WINDOW));
        let properties = BasicProperties::default()
            .with_correlation_id(id.to_string().into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_headers(headers);
        self.channel
            .basic_publish(
                "".into(),
                self.queue.as_ref().into(),
                BasicPublishOptions::default(),
                &rmp_serde::to_vec(&n).unwrap(),
                properties,
            )
            .await
            .unwrap();
        let (mut taken, mut credit_to) = (0u64, None);
        while let Some(message) = rx.recv().await {
            if message.properties.kind().as_ref().map(|kind| kind.as_str()) == Some("end") {
                break;
            }
            let item: u64 = rmp_serde::from_slice(&message.data).unwrap();
            assert_eq!(item, taken);
            if taken == 0 {
                let headers = message.properties.headers().as_ref().unwrap();
                let queue = match headers.inner().get("guirpc-credit-to") {
                    Some(AMQPValue::LongString(queue)) => queue.to_string(),
                    other => panic!("no credit queue: {other:?}"),
                };
                let stream = match headers.inner().get("guirpc-stream-id") {
                    Some(AMQPValue::LongLongInt(stream)) => *stream,
                    other => panic!("no stream ID: {other:?}"),
                };
                credit_to = Some((queue, stream.to_string()));
            }
            taken += 1;
            if taken % u64::from(WINDOW / 2) == 0 {
                let (queue, stream) = credit_to.as_ref().unwrap();
                let grant = BasicProperties::default()
                    .with_correlation_id(stream.as_str().into())
                    .with_type("credit".into())
                    .with_message_id((WINDOW / 2).to_string().into());
                self.channel
                    .basic_publish(
                        "".into(),
                        queue.as_str().into(),
                        BasicPublishOptions::default(),
                        &[],
                        grant,
                    )
                    .await
                    .unwrap();
            }
        }
        self.routes.lock().unwrap().remove(&id);
        taken
    }
}
