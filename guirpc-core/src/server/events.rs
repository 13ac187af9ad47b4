//! Serving `#[subscribe]` functions: per subscriber, a queue bound to the events exchange
//! with its pattern (durable and shared by the service's servers, or an instance's own for
//! broadcast), consumed on a channel of its own beside the requests. Each event runs
//! through the same pipeline as a request (layers, spans, metrics); it is acknowledged when
//! its handler succeeds, and when it fails, run again later or given up as a dead letter
//! by the subscriber's retry policy (see `jobs`): never requeued in a loop.

use std::sync::Arc;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, BasicRejectOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tracing::debug;

use super::jobs::{Failed, Jobs};
use super::settle::Verdict;
use super::{Shared, pipeline, read_request};
use crate::protocol;
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
    jobs: Arc<Jobs>,
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
                let (shared, jobs, channel, queue) = (
                    shared.clone(),
                    jobs.clone(),
                    subscription.channel.clone(),
                    subscription.queue.clone(),
                );
                let subscriber = subscription.subscriber;
                tokio::spawn(async move {
                    handle(&shared, &jobs, subscriber, &channel, queue, delivery).await;
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
    jobs: &Jobs,
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
        Some(&jobs.user),
    );
    request.function = subscriber.name().to_owned();
    request.subscriber = Some(subscriber);
    let (codec, body, caller) = (request.codec, request.body.clone(), request.caller.clone());
    // A retried event comes back through the delay ladder, its topic in a header.
    let retried_topic = request
        .headers
        .inner()
        .get(protocol::HEADER_TOPIC)
        .and_then(protocol::value_as_str)
        .map(std::borrow::Cow::into_owned);
    let reply = pipeline::run(&shared.service, request).await;
    let name = subscriber.name();
    jobs.ran(shared, name, &properties);
    let verdict = match reply.code().cloned() {
        None => Some(Verdict::Served),
        Some(code) => {
            let (_, message) = crate::envelope::read(codec, reply.body());
            let topic = retried_topic.unwrap_or_else(|| routing_key.to_string());
            let failed = Failed {
                queue: queue.as_str(),
                function: name,
                topic: Some(topic.as_str()),
                policy: shared.retry_policy(subscriber.retry()),
                properties: &properties,
                body: &body,
                code,
                message,
                caller: &caller,
            };
            jobs.failed(shared, failed).await
        }
    };
    // Queued on the channel, not waited for: the task ends without the wake-up that
    // reports the write. A connection lost before the write means a redelivery, as a
    // write the broker never read would.
    let settled = match verdict {
        Some(Verdict::Served) => {
            let ack = channel.basic_ack(delivery_tag, BasicAckOptions::default());
            super::sent(ack, false).await
        }
        Some(Verdict::Rejected) => {
            let reject = channel.basic_reject(delivery_tag, BasicRejectOptions { requeue: false });
            super::sent(reject, false).await
        }
        // The connection was lost before the retry or dead letter was published: the
        // broker delivers the event again.
        None => return,
    };
    if let Some(Err(err)) = settled {
        // The channel is gone: the broker redelivers the event to the next consumer.
        debug!(subscriber = name, "cannot settle an event: {err}");
    }
}
