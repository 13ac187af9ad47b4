//! One request, from delivery to settlement: read its properties into a
//! [`ServerRequest`], run it through the pipeline, hand the reply to the replier, and
//! settle the request once the broker has the reply.

use std::sync::Arc;

use lapin::message::Delivery;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, warn};

use super::Shared;
use super::pipeline;
use super::reply::{Replier, Undelivered};
use super::settle::{Settler, Verdict};
use super::streams::{ReplyTo, Streams};
use crate::config::Delivery as DeliveryGuarantee;
use crate::envelope;
use crate::middleware::ServerRequest;
use crate::protocol;
use crate::stream::{ItemSink, Last, Stopped};

pub(super) async fn handle(
    shared: Arc<Shared>,
    settler: Arc<Settler>,
    replier: Arc<Replier>,
    streams: Option<Arc<Streams>>,
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
) {
    let Delivery {
        delivery_tag,
        data,
        properties,
        redelivered,
        ..
    } = delivery;
    let at_most_once = shared.settings.delivery == DeliveryGuarantee::AtMostOnce;
    if at_most_once {
        settler.finished(delivery_tag, Verdict::Served).await;
    }
    let (mut request, reply_to) = ServerRequest::read(
        &properties,
        shared.dispatcher.queue.clone(),
        redelivered,
        data,
    );
    let announced = protocol::announced_codec(&properties, request.codec);
    // A caller asking for a stream gets one from a function that streams; any other
    // function answers it with a plain reply.
    let progress = match (&reply_to, request.credit, &streams) {
        (Some(to), Some(credit), Some(streams)) => {
            let reply = ReplyTo {
                to: to.clone(),
                correlation_id: request.correlation_id.clone(),
                codec: announced,
                redelivered,
            };
            let (sink, progress) = ItemSink::new(streams.outlet(replier.clone(), reply, credit));
            request.items = Some(sink);
            Some(progress)
        }
        _ => None,
    };
    if redelivered {
        debug!(
            function = request.function,
            "a redelivered request: it may have run before"
        );
    }
    let (codec, correlation_id) = (request.codec, request.correlation_id.clone());
    let function = request.function.clone();
    let reply = pipeline::run(&shared.service, request).await;
    let mut verdict = if reply.rejected {
        Verdict::Rejected
    } else {
        Verdict::Served
    };
    let function = function.as_str();
    let last = progress.map_or(Last::Plain, |progress| progress.last());
    if let Last::Nothing(stopped) = last {
        match stopped {
            // Not acknowledged: the broker redelivers the request once we reconnect.
            Stopped::SessionLost => {
                warn!(function, "the connection was lost during a stream");
                return;
            }
            Stopped::Cancelled => debug!(function, "the caller cancelled a stream"),
            Stopped::GaveUp(why) => error!(
                function,
                "the broker refused an item of this stream on every attempt ({why}); the request is settled without its end"
            ),
        }
        if !at_most_once {
            settler.finished(delivery_tag, verdict).await;
        }
        return;
    }
    if let Some(reply_to) = reply_to {
        let properties = match last {
            Last::End { count } => {
                protocol::end_properties(announced, correlation_id, reply.is_ok(), count)
            }
            _ => protocol::reply_properties(announced, correlation_id, reply.is_ok()),
        };
        match replier
            .send(reply_to, properties, reply.body(), redelivered)
            .await
        {
            Ok(()) => {}
            // Not acknowledged: the broker redelivers the request once we reconnect.
            Err(Undelivered::SessionLost) => {
                warn!(
                    function,
                    "the connection was lost before the reply was sent"
                );
                return;
            }
            Err(Undelivered::GaveUp(why)) => {
                error!(
                    function,
                    "the broker refused this request's reply on every attempt ({why}); the request is settled without a reply"
                );
                if verdict != Verdict::Rejected {
                    shared.count_rejected_late();
                }
                verdict = Verdict::Rejected;
            }
        }
    } else if !reply.is_ok() {
        // No caller hears of it: the request is kept where the queue dead-letters.
        let message = envelope::Summary(codec, reply.body());
        warn!(function, "one-way call failed: {message}");
        if verdict != Verdict::Rejected {
            shared.count_rejected_late();
        }
        verdict = Verdict::Rejected;
    }
    if !at_most_once {
        settler.finished(delivery_tag, verdict).await;
    }
}
