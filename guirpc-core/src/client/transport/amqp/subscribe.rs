//! Events from the subscriber's side: a queue of the subscription's own, bound to the
//! events exchange with a topic pattern, for as long as the subscription lives.

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::types::FieldTable;

use super::Shared;
use crate::codec::Codec;
use crate::error::Error;
use crate::protocol;

/// A subscription to events: see [`Client::subscribe`](crate::Client::subscribe).
#[derive(Debug)]
pub struct Subscription {
    channel: Channel,
    consumer: lapin::Consumer,
    masked_uri: String,
    ended: bool,
}

/// An event, as a subscription receives it.
#[derive(Debug, Clone)]
pub struct Event {
    topic: String,
    codec: Codec,
    body: Vec<u8>,
}

impl Event {
    /// The topic it was published on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The codec its body is encoded in.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The event, decoded.
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::codec::CodecError> {
        self.codec.decode(&self.body)
    }
}

impl Subscription {
    /// The next event. A lost connection ends the subscription with a retriable
    /// [`Error::Connection`] (its queue is gone with it: subscribe again), then `None`.
    pub async fn next(&mut self) -> Option<Result<Event, Error>> {
        if self.ended {
            return None;
        }
        match self.consumer.next().await {
            Some(Ok(delivery)) => {
                let codec = protocol::received_codec(&delivery.properties);
                Some(Ok(Event {
                    topic: delivery.routing_key.to_string(),
                    codec,
                    body: delivery.data,
                }))
            }
            Some(Err(err)) => {
                self.ended = true;
                Some(Err(Error::connection(&self.masked_uri, err)))
            }
            None => {
                self.ended = true;
                Some(Err(Error::connection(
                    &self.masked_uri,
                    "the subscription ended with its connection",
                )))
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Closing the channel cancels the consumer, which deletes the queue.
        let channel = self.channel.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = channel.close(200, "unsubscribed".into()).await;
            });
        }
    }
}

/// A queue of the subscription's own, bound to the events exchange with `pattern`.
pub(super) async fn subscribe(shared: &Shared, pattern: &str) -> Result<Subscription, Error> {
    let failed = |err: lapin::Error| Error::connection(&shared.masked_uri, err);
    let Some(link) = shared.link() else {
        return Err(Error::connection(
            &shared.masked_uri,
            "not connected to the broker (reconnecting)",
        ));
    };
    let channel = link.connection.create_channel().await.map_err(failed)?;
    protocol::declare_events_exchange(&channel, shared.events_exchange.as_str())
        .await
        .map_err(failed)?;
    let queue = channel
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    channel
        .queue_bind(
            queue.name().clone(),
            shared.events_exchange.clone(),
            pattern.into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(failed)?;
    let consumer = protocol::consume_no_ack(&channel, queue.name().clone())
        .await
        .map_err(failed)?;
    Ok(Subscription {
        channel,
        consumer,
        masked_uri: shared.masked_uri.clone(),
        ended: false,
    })
}
