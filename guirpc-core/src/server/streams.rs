//! The server's half of streamed results over the broker: a session's credit queue, where
//! callers grant credit and cancel, and the outlet that publishes a stream's items once
//! credit allows.
//!
//! The credit queue is exclusive to the session's connection and named by the broker; a
//! stream's first item names it (and the stream's ID) to the caller. A stream holds at
//! most [`MAX_CREDIT`] items of credit however much a caller grants, so a caller can make
//! neither the server nor the broker hold more than that. When the session ends, every
//! stream stops: its request goes back to the queue, unacknowledged.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use tokio::sync::{Semaphore, watch};
use tracing::debug;

use super::reply::{Replier, Undelivered};
use crate::codec::Codec;
use crate::middleware::Reply;
use crate::protocol::{self, MAX_CREDIT};
use crate::stream::{Outlet, Stopped};
use crate::sync::Locked;

/// The streams of one session, by the ID their callers' credit messages carry.
#[derive(Debug)]
pub(super) struct Streams {
    /// The credit queue.
    queue: ShortString,
    flows: Mutex<HashMap<u64, Arc<Flow>>>,
}

/// One stream's credit, and why it stopped, once it has.
#[derive(Debug)]
struct Flow {
    credit: Semaphore,
    stopped: watch::Sender<Option<Stopped>>,
}

impl Flow {
    /// Stops the stream: no more credit, and its function is dropped.
    fn stop(&self, why: Stopped) {
        self.stopped.send_if_modified(|stopped| {
            if stopped.is_none() {
                *stopped = Some(why);
                true
            } else {
                false
            }
        });
        self.credit.close();
    }

    fn why(&self) -> Stopped {
        self.stopped
            .borrow()
            .clone()
            .unwrap_or(Stopped::SessionLost)
    }
}

impl Streams {
    /// Declares the session's credit queue and starts consuming it.
    pub(super) async fn open(channel: &Channel) -> lapin::Result<(Arc<Streams>, lapin::Consumer)> {
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let streams = Streams {
            queue: queue.name().clone(),
            flows: Mutex::default(),
        };
        Ok((Arc::new(streams), consumer))
    }

    /// Applies callers' credit and cancellations until the consumer ends (with the
    /// connection); then stops every stream of the session.
    pub(super) async fn serve(self: Arc<Self>, mut consumer: lapin::Consumer) -> String {
        let why = loop {
            match consumer.next().await {
                Some(Ok(delivery)) => self.apply(&delivery.properties),
                Some(Err(err)) => break err.to_string(),
                None => break "the broker cancelled the credit consumer".to_owned(),
            }
        };
        let flows: Vec<Arc<Flow>> = self.flows().drain().map(|(_, flow)| flow).collect();
        for flow in flows {
            flow.stop(Stopped::SessionLost);
        }
        why
    }

    fn apply(&self, properties: &lapin::BasicProperties) {
        let id = properties
            .correlation_id()
            .as_ref()
            .and_then(|id| id.as_str().parse::<u64>().ok());
        let Some(flow) = id.and_then(|id| self.flows().get(&id).cloned()) else {
            debug!("credit for a stream that is over (or never was)");
            return;
        };
        match properties.kind().as_ref().map(ShortString::as_str) {
            Some(protocol::CREDIT) => {
                let granted = properties
                    .message_id()
                    .as_ref()
                    .and_then(|n| n.as_str().parse::<u32>().ok())
                    .unwrap_or(0);
                // A caller grants for itself: at most MAX_CREDIT items outstanding.
                let room = (MAX_CREDIT as usize).saturating_sub(flow.credit.available_permits());
                flow.credit.add_permits((granted as usize).min(room));
            }
            Some(protocol::CANCEL) => flow.stop(Stopped::Cancelled),
            other => debug!("a message of type {other:?} on the credit queue, ignored"),
        }
    }

    fn flows(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Flow>>> {
        self.flows.locked()
    }

    /// The outlet of a stream to `reply_to`, with the caller's initial credit.
    pub(super) fn outlet(
        self: &Arc<Self>,
        replier: Arc<Replier>,
        reply: ReplyTo,
        credit: u32,
    ) -> AmqpOutlet {
        let flow = Arc::new(Flow {
            credit: Semaphore::new(credit.min(MAX_CREDIT) as usize),
            stopped: watch::Sender::new(None),
        });
        // Random IDs: a caller that learns the credit queue's name cannot guess another
        // caller's stream to cancel or flood it.
        let id = {
            let mut flows = self.flows();
            let id = loop {
                let id = fastrand::u64(1..i64::MAX as u64);
                if !flows.contains_key(&id) {
                    break id;
                }
            };
            flows.insert(id, flow.clone());
            id
        };
        AmqpOutlet {
            streams: self.clone(),
            id,
            flow,
            replier,
            reply,
        }
    }
}

/// Where a request's reply, or its stream, goes.
#[derive(Debug, Clone)]
pub(super) struct ReplyTo {
    pub to: ShortString,
    pub correlation_id: Option<ShortString>,
    /// The codec its messages announce (`protocol::announced_codec`).
    pub codec: Option<Codec>,
    pub redelivered: bool,
}

/// Publishes one stream's items, as its credit allows.
pub(super) struct AmqpOutlet {
    streams: Arc<Streams>,
    id: u64,
    flow: Arc<Flow>,
    replier: Arc<Replier>,
    reply: ReplyTo,
}

impl Outlet for AmqpOutlet {
    fn send(
        &mut self,
        seq: u64,
        item: Reply,
    ) -> Pin<Box<dyn Future<Output = Result<(), Stopped>> + Send + '_>> {
        Box::pin(async move {
            match self.flow.credit.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return Err(self.flow.why()),
            }
            let credit_to = (seq == 0).then_some((&self.streams.queue, self.id));
            let properties = protocol::item_properties(
                self.reply.codec,
                self.reply.correlation_id.clone(),
                seq,
                credit_to,
            );
            self.replier
                .send_item(
                    self.reply.to.clone(),
                    properties,
                    item.body(),
                    self.reply.redelivered,
                )
                .await
                .map_err(|undelivered| match undelivered {
                    Undelivered::SessionLost => Stopped::SessionLost,
                    Undelivered::GaveUp(why) => Stopped::GaveUp(why),
                })
        })
    }

    fn stopped(&self) -> Pin<Box<dyn Future<Output = Stopped> + Send + 'static>> {
        self.stopped_future()
    }
}

impl AmqpOutlet {
    fn stopped_future(&self) -> Pin<Box<dyn Future<Output = Stopped> + Send + 'static>> {
        let mut stopped = self.flow.stopped.subscribe();
        Box::pin(async move {
            match stopped.wait_for(Option::is_some).await {
                Ok(why) => why.clone().unwrap_or(Stopped::SessionLost),
                Err(_) => Stopped::SessionLost,
            }
        })
    }
}

impl Drop for AmqpOutlet {
    fn drop(&mut self) {
        self.streams.flows().remove(&self.id);
    }
}
