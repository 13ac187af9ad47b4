//! One request, from delivery to settlement: read its properties into a
//! [`ServerRequest`], run it through the pipeline, hand the reply to the replier, and
//! settle the request once the broker has the reply. A redelivered request this server has
//! run before is not run again (see `redeliveries`).

use std::sync::Arc;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::ShortString;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, warn};

use super::Shared;
use super::pipeline;
use super::redeliveries::Outcome;
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
    let (request, reply_to) = ServerRequest::read(
        &properties,
        shared.dispatcher.queue.clone(),
        redelivered,
        data,
    );
    let key = redelivered
        .then(|| {
            shared
                .redeliveries
                .key(&request, reply_to.as_ref(), &properties)
        })
        .flatten();
    let (claim, before) = match key {
        Some(key) => {
            let (claim, before) = shared.redeliveries.claim(key).await;
            (Some(claim), before)
        }
        None => (None, None),
    };
    let outcome = if let Some(before) = before {
        debug!(
            function = request.function,
            "a redelivered request this server has run before: not run again"
        );
        Some(again(&shared, &replier, before, reply_to, &request.function).await)
    } else {
        if redelivered {
            debug!(
                function = request.function,
                "a redelivered request: it may have run before"
            );
        }
        let keep = claim.is_some();
        serve(
            &shared,
            &replier,
            streams,
            request,
            reply_to,
            &properties,
            keep,
        )
        .await
    };
    // Not acknowledged: the broker redelivers the request once we reconnect, and it runs
    // again (or is answered from what was kept).
    let Some(outcome) = outcome else { return };
    let verdict = match outcome {
        Outcome::Settled(verdict) => Some(verdict),
        Outcome::Unsent { .. } => None,
    };
    if let Some(claim) = claim {
        claim.end(outcome);
    }
    if let Some(verdict) = verdict
        && !at_most_once
    {
        settler.finished(delivery_tag, verdict).await;
    }
}

/// Runs a request and sends its reply: what became of it, or nothing when the connection
/// was lost first and there is nothing to keep (a stream cut off, or a reply not to be
/// kept: only a remembered redelivery's is, to be sent when it comes back).
async fn serve(
    shared: &Shared,
    replier: &Arc<Replier>,
    streams: Option<Arc<Streams>>,
    mut request: ServerRequest,
    reply_to: Option<ShortString>,
    properties: &BasicProperties,
    keep: bool,
) -> Option<Outcome> {
    let redelivered = request.redelivered;
    let announced = protocol::announced_codec(properties, request.codec);
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
    let (codec, correlation_id) = (request.codec, request.correlation_id.clone());
    let function = request.function.clone();
    let reply = pipeline::run(&shared.service, request).await;
    let verdict = if reply.rejected {
        Verdict::Rejected
    } else {
        Verdict::Served
    };
    let function = function.as_str();
    let last = progress.map_or(Last::Plain, |progress| progress.last());
    if let Last::Nothing(stopped) = last {
        match stopped {
            Stopped::SessionLost => {
                warn!(function, "the connection was lost during a stream");
                return None;
            }
            Stopped::Cancelled => debug!(function, "the caller cancelled a stream"),
            Stopped::GaveUp(why) => error!(
                function,
                "the broker refused an item of this stream on every attempt ({why}); the request is settled without its end"
            ),
        }
        return Some(Outcome::Settled(verdict));
    }
    let Some(reply_to) = reply_to else {
        if reply.is_ok() {
            return Some(Outcome::Settled(verdict));
        }
        // No caller hears of it: the request is kept where the queue dead-letters.
        let message = envelope::Summary(codec, reply.body());
        warn!(function, "one-way call failed: {message}");
        if verdict != Verdict::Rejected {
            shared.count_rejected_late();
        }
        return Some(Outcome::Settled(Verdict::Rejected));
    };
    let properties = match last {
        Last::End { count } => {
            protocol::end_properties(announced, correlation_id, reply.is_ok(), count)
        }
        _ => protocol::reply_properties(announced, correlation_id, reply.is_ok()),
    };
    let kept = keep.then(|| Box::new(properties.clone()));
    let sent = answer(
        shared,
        replier,
        reply_to,
        properties,
        reply.body(),
        verdict,
        redelivered,
        function,
    )
    .await;
    Some(match (sent, kept) {
        (Some(verdict), _) => Outcome::Settled(verdict),
        (None, Some(properties)) => Outcome::Unsent {
            properties,
            // A copy of its own size: the reply's buffer may be a kept one, much larger,
            // and goes back as the reply is dropped.
            body: reply.body().to_vec(),
            verdict,
        },
        (None, None) => return None,
    })
}

/// Answers a redelivered request that ran here before, from what became of it.
async fn again(
    shared: &Shared,
    replier: &Replier,
    before: Outcome,
    reply_to: Option<ShortString>,
    function: &str,
) -> Outcome {
    match (before, reply_to) {
        (
            Outcome::Unsent {
                properties,
                body,
                verdict,
            },
            Some(reply_to),
        ) => {
            let sent = answer(
                shared,
                replier,
                reply_to,
                (*properties).clone(),
                &body,
                verdict,
                true,
                function,
            )
            .await;
            match sent {
                Some(verdict) => Outcome::Settled(verdict),
                None => Outcome::Unsent {
                    properties,
                    body,
                    verdict,
                },
            }
        }
        (Outcome::Unsent { verdict, .. } | Outcome::Settled(verdict), _) => {
            Outcome::Settled(verdict)
        }
    }
}

/// Sends a request's reply: how to settle the request, or `None` when the connection was
/// lost first (the request must not be settled: the broker redelivers it).
#[allow(clippy::too_many_arguments)]
async fn answer(
    shared: &Shared,
    replier: &Replier,
    reply_to: ShortString,
    properties: BasicProperties,
    body: &[u8],
    verdict: Verdict,
    redelivered: bool,
    function: &str,
) -> Option<Verdict> {
    match replier.send(reply_to, properties, body, redelivered).await {
        Ok(()) => Some(verdict),
        Err(Undelivered::SessionLost) => {
            warn!(
                function,
                "the connection was lost before the reply was sent"
            );
            None
        }
        Err(Undelivered::GaveUp(why)) => {
            error!(
                function,
                "the broker refused this request's reply on every attempt ({why}); the request is settled without a reply"
            );
            if verdict != Verdict::Rejected {
                shared.count_rejected_late();
            }
            Some(Verdict::Rejected)
        }
    }
}
