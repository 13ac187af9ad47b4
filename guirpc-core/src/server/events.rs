//! Serving `#[subscribe]` functions: per subscriber, a queue bound to the events exchange
//! with its pattern (durable and shared by the service's servers, or an instance's own for
//! broadcast), consumed on a channel of its own beside the requests. Each event runs
//! through the same pipeline as a request (layers, spans, metrics); it is acknowledged when
//! its handler succeeds, published again to its queue with its attempt counted when the
//! handler fails or panics (up to `events.retries` more times), and rejected (so
//! dead-lettered where configured) after that, or at once when it does not decode: never
//! requeued in a loop.

use std::sync::Arc;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tracing::{debug, error, warn};

use super::{Shared, pipeline, read_request};
use crate::protocol::{self, ErrorCode, HEADER_ATTEMPT};
use crate::registry::Subscriber;

/// One subscriber's consumer in a session.
pub(super) struct Subscription {
    subscriber: &'static Subscriber,
    channel: Channel,
    queue: ShortString,
    consumer: lapin::Consumer,
}

/// Declares and consumes every subscriber's queue on `connection`.
pub(super) async fn open(
    shared: &Shared,
    connection: &Connection,
    arguments: &FieldTable,
) -> lapin::Result<Vec<Subscription>> {
    let mut subscriptions = Vec::new();
    for &subscriber in &shared.dispatcher.subscribers {
        let channel = connection.create_channel().await?;
        channel
            .basic_qos(shared.settings.prefetch, BasicQosOptions::default())
            .await?;
        let exchange = shared.settings.events_exchange.as_str();
        protocol::declare_events_exchange(&channel, exchange).await?;
        let (name, options, arguments) = if subscriber.is_broadcast() {
            // Server-named, this connection's own, gone with it.
            let options = QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            };
            let mut own = FieldTable::default();
            if let Some(dlx) = arguments.inner().get(protocol::ARG_DEAD_LETTER_EXCHANGE) {
                own.insert(protocol::ARG_DEAD_LETTER_EXCHANGE.into(), dlx.clone());
            }
            (String::new(), options, own)
        } else {
            let name = format!("{}.{}", shared.settings.queue, subscriber.name());
            let options = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            (name, options, arguments.clone())
        };
        let queue = channel
            .queue_declare(name.as_str().into(), options, arguments)
            .await?;
        let queue = queue.name().clone();
        channel
            .queue_bind(
                queue.clone(),
                exchange.into(),
                subscriber.pattern().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        subscriptions.push(Subscription {
            subscriber,
            channel,
            queue,
            consumer,
        });
    }
    Ok(subscriptions)
}

/// Takes a subscription's events until told to stop or the channel ends; an end while
/// not stopping is told to `lost`, which ends the session (so the next one declares and
/// consumes the queue again: a server never goes on without serving a subscription).
pub(super) async fn serve(
    shared: Arc<Shared>,
    mut subscription: Subscription,
    mut stop: watch::Receiver<bool>,
    lost: tokio::sync::mpsc::UnboundedSender<String>,
) {
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            permit = shared.semaphore.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let delivery = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            delivery = subscription.consumer.next() => delivery,
        };
        match delivery {
            Some(Ok(delivery)) => {
                let (shared, channel, queue) = (
                    shared.clone(),
                    subscription.channel.clone(),
                    subscription.queue.clone(),
                );
                let subscriber = subscription.subscriber;
                tokio::spawn(async move {
                    handle(&shared, subscriber, &channel, queue, delivery).await;
                    drop(permit);
                });
            }
            Some(Err(err)) => {
                let name = subscription.subscriber.name();
                let _ = lost.send(format!("the consumer of `{name}` ended: {err}"));
                return;
            }
            None => {
                let name = subscription.subscriber.name();
                let _ = lost.send(format!(
                    "the broker cancelled the consumer of `{name}` (its queue deleted?)"
                ));
                return;
            }
        }
    }
    // Stopping: no new events; the running ones finish, the rest stay in the queue.
    let tag = subscription.consumer.tag();
    let _ = subscription
        .channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await;
}

async fn handle(
    shared: &Shared,
    subscriber: &'static Subscriber,
    channel: &Channel,
    queue: ShortString,
    delivery: Delivery,
) {
    let Delivery {
        delivery_tag,
        data,
        properties,
        redelivered,
        routing_key,
        ..
    } = delivery;
    let (mut request, _) = read_request(
        &properties,
        shared.dispatcher.queue.clone(),
        redelivered,
        data,
    );
    request.function = subscriber.name().to_owned();
    request.subscriber = Some(subscriber);
    let attempt = match request.headers.inner().get(HEADER_ATTEMPT) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX).max(1),
        _ => 1,
    };
    let (codec, headers, body) = (request.codec, request.headers.clone(), request.body.clone());
    let reply = pipeline::run(&shared.service, request).await;
    let name = subscriber.name();
    let settled = if reply.is_ok() {
        channel
            .basic_ack(delivery_tag, BasicAckOptions::default())
            .await
    } else {
        let message = crate::envelope::Summary(codec, reply.body());
        let retriable = matches!(
            reply.code(),
            Some(ErrorCode::HandlerError | ErrorCode::Internal)
        );
        if retriable && attempt <= shared.settings.event_retries {
            warn!(
                subscriber = name,
                topic = routing_key.as_str(),
                attempt,
                "the event handler failed: {message}; retrying"
            );
            let mut headers = headers;
            headers.insert(
                HEADER_ATTEMPT.into(),
                AMQPValue::LongLongInt(i64::from(attempt) + 1),
            );
            let again = properties.clone().with_headers(headers);
            // Published again to its own queue, then acknowledged: if the connection dies
            // between the two, the broker redelivers it (at least once, never lost).
            match channel
                .basic_publish(
                    "".into(),
                    queue,
                    BasicPublishOptions::default(),
                    &body,
                    again,
                )
                .await
            {
                Ok(_) => {
                    channel
                        .basic_ack(delivery_tag, BasicAckOptions::default())
                        .await
                }
                Err(err) => Err(err),
            }
        } else {
            error!(
                subscriber = name,
                topic = routing_key.as_str(),
                attempt,
                "the event handler failed: {message}; the event is dead-lettered where the queue has a dead-letter exchange"
            );
            if !reply.rejected {
                shared.count_rejected_late();
            }
            channel
                .basic_reject(delivery_tag, BasicRejectOptions { requeue: false })
                .await
        }
    };
    if let Err(err) = settled {
        // The channel is gone: the broker redelivers the event to the next consumer.
        debug!(subscriber = name, "cannot settle an event: {err}");
    }
}
