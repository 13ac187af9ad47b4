//! One request, from delivery to settlement: read its properties into a
//! [`ServerRequest`], run it through the pipeline, hand the reply to the replier, and
//! settle the request once the broker has the reply. A request this server runs, or has
//! run, is not run again when the broker delivers it again (see `redeliveries`).

use std::sync::Arc;

use lapin::BasicProperties;
use lapin::message::Delivery;
use lapin::types::ShortString;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, warn};

use super::Shared;
use super::jobs::{Failed, Jobs};
use super::redeliveries::Outcome;
use super::reply::{Replier, Sent, Undelivered};
use super::settle::{Settler, Verdict};
use super::streams::{ReplyTo, Streams};
use super::{pipeline, read_request};
use crate::codec::Codec;
use crate::config::Delivery as DeliveryGuarantee;
use crate::envelope;
use crate::middleware::{Reply, ServerRequest};
use crate::protocol::{self, ErrorCode};
use crate::stream::{ItemSink, Last, Stopped};

/// What a session's deliveries are handled with: the server's state, and the session's
/// settler, replier and streams (one per connection).
pub(super) struct Dispatch {
    pub(super) shared: Arc<Shared>,
    pub(super) settler: Settler,
    pub(super) replier: Arc<Replier>,
    pub(super) streams: Option<Arc<Streams>>,
    /// The retries and dead letters of its casts (and events).
    pub(super) jobs: Arc<Jobs>,
}

impl Dispatch {
    /// Handles one delivery, from its properties to its settlement; `_permit` holds its
    /// place among the requests that run at once until it is done.
    pub(super) async fn handle(self: Arc<Self>, delivery: Delivery, _permit: OwnedSemaphorePermit) {
        let (shared, settler) = (&*self.shared, &self.settler);
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
        let (request, reply_to) = read_request(
            &properties,
            shared.dispatcher.queue.clone(),
            redelivered,
            data,
            Some(&self.jobs.user),
        );
        // An acknowledged request is never delivered again: nothing to remember of it.
        let key = (!at_most_once)
            .then(|| {
                shared
                    .redeliveries
                    .key(&request, reply_to.as_ref(), &properties)
            })
            .flatten();
        let mut settled = at_most_once;
        let (claim, before) = match key {
            Some(key) => {
                // A delivery of a request still running here, after the broker's consumer
                // timeout took a channel away: acknowledged now, or it would time out in its
                // turn while it waits for the run, and come back again (see `consumer_timeout`
                // in the module of the server's sessions).
                if redelivered
                    && !settled
                    && shared.consumer_timed_out()
                    && shared.redeliveries.is_running(key)
                {
                    debug!(
                        function = request.function,
                        "a delivery of a request still running here: acknowledged, answered when the run ends"
                    );
                    settler.finished(delivery_tag, Verdict::Served).await;
                    settled = true;
                }
                let (claim, before) = shared.redeliveries.claim(key).await;
                (Some(claim), before)
            }
            None => (None, None),
        };
        let ran = if let Some(before) = before {
            debug!(
                function = request.function,
                "a request this server has run before: not run again"
            );
            let outcome = self.again(before, reply_to, &request.function).await;
            Some(Ran {
                outcome,
                // Sent again only through the quarantine, confirmed.
                unconfirmed: None,
            })
        } else {
            if redelivered {
                debug!(
                    function = request.function,
                    "a redelivered request: it may have run before"
                );
            }
            let keep = claim.is_some();
            self.serve(request, reply_to, &properties, keep).await
        };
        // Not acknowledged: the broker redelivers the request once we reconnect, and it runs
        // again (or is answered from what was kept).
        let Some(Ran {
            outcome,
            unconfirmed,
        }) = ran
        else {
            return;
        };
        let verdict = match outcome {
            Outcome::Settled(verdict) => Some(verdict),
            Outcome::Unsent { .. } => None,
        };
        if let Some(verdict) = verdict
            && !settled
        {
            settler.finished(delivery_tag, verdict).await;
        }
        if let Some(claim) = claim {
            // A first delivery settled on a live channel will not come back; any other may.
            if !redelivered && verdict.is_some() && settler.connected() {
                claim.forget();
                return;
            }
            // A reply written unconfirmed comes only from a first delivery that was settled, so
            // here its channel is gone: the reply may have been discarded with the
            // acknowledgement after it, and is kept for the delivery that comes back (sent
            // again, at worst twice: a caller takes the first and drops the other).
            let outcome = match (outcome, unconfirmed) {
                (Outcome::Settled(verdict), Some(unconfirmed)) => unconfirmed.kept(verdict),
                (outcome, _) => outcome,
            };
            claim.end(outcome);
        }
    }

    /// Runs a request and sends its reply: what became of it, or nothing when the connection
    /// was lost first and there is nothing to keep (a stream cut off, or a reply not to be
    /// kept: only a remembered request's is, to be sent when it comes back).
    async fn serve(
        &self,
        mut request: ServerRequest,
        reply_to: Option<ShortString>,
        properties: &BasicProperties,
        keep: bool,
    ) -> Option<Ran> {
        let (shared, replier) = (&*self.shared, &self.replier);
        let redelivered = request.redelivered;
        let announced = protocol::announced_codec(properties, request.codec);
        // A caller asking for a stream gets one from a function that streams; any other
        // function answers it with a plain reply.
        let progress = match (&reply_to, request.credit, &self.streams) {
            (Some(to), Some(credit), Some(streams)) => {
                let reply = ReplyTo {
                    to: to.clone(),
                    correlation_id: request.correlation_id.clone(),
                    codec: announced,
                    redelivered,
                };
                let (sink, progress) =
                    ItemSink::new(streams.outlet(replier.clone(), reply, credit));
                request.items = Some(sink);
                Some(progress)
            }
            _ => None,
        };
        let (codec, correlation_id) = (request.codec, request.correlation_id.clone());
        let function = request.function.clone();
        // A guirpc 0.1 caller is answered in its form, with its request's serializer (as
        // text when it cannot be read: the reply says why).
        let legacy = request
            .legacy
            .as_ref()
            .map(|form| form.serializer().unwrap_or(protocol::v01::Serializer::Text));
        // A cast's body, in case it fails: it is published again (shared, not copied).
        let cast = reply_to
            .is_none()
            .then(|| (request.body.clone(), request.caller.clone()));
        let reply = pipeline::run(&shared.service, request).await;
        let reply = within_limit(reply, codec, &function, shared.settings.max_reply_size);
        let (reply, legacy) = match legacy {
            Some(serializer) => {
                let (reply, head) = in_v01_form(serializer, reply);
                (reply, Some(head))
            }
            None => (reply, None),
        };
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
            return Some(Ran::settled(verdict));
        }
        let Some(reply_to) = reply_to else {
            let (body, caller) = cast.unwrap_or_default();
            let cast = Cast {
                function,
                properties,
                body: &body,
                codec,
                caller: &caller,
            };
            return self.cast_ended(cast, reply).await;
        };
        let head = Head {
            codec: announced,
            legacy,
            ok: reply.is_ok(),
            count: match last {
                Last::End { count } => Some(count),
                _ => None,
            },
        };
        let outgoing = Outgoing {
            to: reply_to,
            properties: head.properties(correlation_id.clone()),
            body: reply.body(),
            redelivered,
        };
        let sent = self.answer(outgoing, verdict, function).await;
        let unconfirmed = |reply| Unconfirmed {
            head,
            correlation_id,
            reply,
        };
        Some(match sent {
            Some((verdict, Sent::Unconfirmed)) if keep => Ran {
                outcome: Outcome::Settled(verdict),
                unconfirmed: Some(unconfirmed(reply)),
            },
            Some((verdict, _)) => Ran::settled(verdict),
            None if keep => Ran {
                outcome: unconfirmed(reply).kept(verdict),
                unconfirmed: None,
            },
            None => return None,
        })
    }

    /// Settles a cast by its outcome: done, or failed and so run again later or given up
    /// as a dead letter (no caller hears of it); `None` when the connection was lost
    /// before the retry or dead letter was published (the broker delivers it again).
    async fn cast_ended(&self, cast: Cast<'_>, reply: Reply) -> Option<Ran> {
        let Cast {
            function,
            properties,
            body,
            codec,
            caller,
        } = cast;
        let shared = &*self.shared;
        let known = shared.dispatcher.registry.get(function);
        if let Some(known) = known {
            self.jobs.ran(shared, known.name(), properties);
        }
        let Some(code) = reply.code().cloned() else {
            return Some(Ran::settled(Verdict::Served));
        };
        let (_, message) = envelope::read(codec, reply.body());
        let failed = Failed {
            queue: &shared.settings.queue,
            function,
            topic: None,
            policy: shared.retry_policy(known.and_then(|f| f.retry())),
            properties,
            body,
            code,
            message,
            caller,
        };
        let verdict = self.jobs.failed(shared, failed).await?;
        Some(Ran::settled(verdict))
    }

    /// Answers a redelivered request that ran here before, from what became of it.
    async fn again(
        &self,
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
                let outgoing = Outgoing {
                    to: reply_to,
                    properties: (*properties).clone(),
                    body: &body,
                    redelivered: true,
                };
                let sent = self.answer(outgoing, verdict, function).await;
                match sent {
                    Some((verdict, sent)) => {
                        // A redelivered request's reply goes through the quarantine: confirmed,
                        // nothing to keep.
                        debug_assert_eq!(sent, Sent::Confirmed);
                        Outcome::Settled(verdict)
                    }
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

    /// Sends a request's reply: how to settle the request and how the reply went, or `None`
    /// when the connection was lost first (the request must not be settled: the broker
    /// redelivers it).
    async fn answer(
        &self,
        reply: Outgoing<'_>,
        verdict: Verdict,
        function: &str,
    ) -> Option<(Verdict, Sent)> {
        let Outgoing {
            to,
            properties,
            body,
            redelivered,
        } = reply;
        match self.replier.send(to, properties, body, redelivered).await {
            Ok(sent) => Some((verdict, sent)),
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
                    "this request's reply could not be delivered ({why}); the request is settled without a reply"
                );
                if verdict != Verdict::Rejected {
                    self.shared.count_rejected_late();
                }
                Some((Verdict::Rejected, Sent::Confirmed))
            }
        }
    }
}

/// A cast that ran: what it takes to run it again or keep it as a dead letter.
struct Cast<'a> {
    function: &'a str,
    properties: &'a BasicProperties,
    body: &'a [u8],
    codec: Codec,
    caller: &'a crate::Caller,
}

/// A reply on its way: where to, with what, and whether its request was redelivered
/// (a redelivered request's reply goes through the quarantine).
struct Outgoing<'a> {
    to: ShortString,
    properties: BasicProperties,
    body: &'a [u8],
    redelivered: bool,
}

/// `reply`, or a `too_large` error in its place when its body is over `limit`: the broker
/// would close the channel that carried it (RabbitMQ 4 refuses messages over 16 MiB), and
/// with it every request in flight on the consuming channel.
fn within_limit(reply: Reply, codec: Codec, function: &str, limit: usize) -> Reply {
    let size = reply.body().len();
    if size <= limit {
        return reply;
    }
    let message = format!(
        "the result of `{function}` is {size} bytes encoded, over the maximum of {limit} bytes of a reply (service.max_reply_size)"
    );
    warn!(function, "{message}");
    Reply::error(codec, ErrorCode::TooLarge, &message)
}

/// What became of a run, and the reply it wrote unconfirmed on the consuming channel, if
/// it did: known to have reached the broker only once the request's acknowledgement has.
struct Ran {
    outcome: Outcome,
    unconfirmed: Option<Unconfirmed>,
}

impl Ran {
    fn settled(verdict: Verdict) -> Ran {
        Ran {
            outcome: Outcome::Settled(verdict),
            unconfirmed: None,
        }
    }
}

/// A reply written unconfirmed, with what it takes to write it again.
struct Unconfirmed {
    head: Head,
    correlation_id: Option<ShortString>,
    reply: Reply,
}

impl Unconfirmed {
    /// The reply, kept to be sent when its request comes back.
    fn kept(self, verdict: Verdict) -> Outcome {
        Outcome::Unsent {
            properties: Box::new(self.head.properties(self.correlation_id)),
            // A copy of its own size: the reply's buffer may be a kept one, much larger,
            // and goes back as the reply is dropped.
            body: self.reply.body().to_vec(),
            verdict,
        }
    }
}

/// What a reply's properties say besides its correlation ID.
#[derive(Clone, Copy)]
struct Head {
    codec: Option<Codec>,
    /// A reply to a guirpc 0.1 caller, in its form.
    legacy: Option<V01Head>,
    ok: bool,
    /// A stream's end, after this many items.
    count: Option<u64>,
}

/// What a guirpc 0.1 reply's properties say.
#[derive(Clone, Copy)]
struct V01Head {
    serializer: protocol::v01::Serializer,
    encoding: &'static str,
    status: i32,
}

/// A reply as a guirpc 0.1 caller reads it: base64 of the result's text (the server wrote
/// it in JSON, as the request was read), or of `[code] message`.
fn in_v01_form(serializer: protocol::v01::Serializer, reply: Reply) -> (Reply, V01Head) {
    use protocol::v01;
    let code = reply.code().cloned();
    let (body, encoding) = match &code {
        None => match Codec::Json.decode::<serde_json::Value>(reply.body()) {
            Ok(value) => v01::reply_body(serializer, Ok(&value)),
            Err(err) => {
                let code = ErrorCode::Internal;
                let why = format!("the result cannot be read back: {err}");
                return in_v01_form(serializer, Reply::error(Codec::Json, code, &why));
            }
        },
        Some(code) => {
            let (_, message) = envelope::read(Codec::Json, reply.body());
            v01::reply_body(serializer, Err((code, &message)))
        }
    };
    let head = V01Head {
        serializer,
        encoding,
        status: v01::status(code.as_ref()),
    };
    (Reply::rewritten(reply, body), head)
}

impl Head {
    fn properties(self, correlation_id: Option<ShortString>) -> BasicProperties {
        if let Some(legacy) = self.legacy {
            return protocol::v01::reply_properties(
                legacy.serializer,
                legacy.encoding,
                legacy.status,
                correlation_id,
            );
        }
        match self.count {
            Some(count) => protocol::end_properties(self.codec, correlation_id, self.ok, count),
            None => protocol::reply_properties(self.codec, correlation_id, self.ok),
        }
    }
}
