//! One request, from delivery to settlement: read its properties, find and run the
//! function (every failure becomes an error reply), hand the reply to the replier, and
//! settle the request once the broker has the reply.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use futures_lite::FutureExt;
use lapin::message::Delivery;
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, error, warn};

use super::Shared;
use super::reply::{Replier, Undelivered};
use super::settle::{Settler, Verdict};
use crate::codec::Codec;
use crate::config::Delivery as DeliveryGuarantee;
use crate::protocol::{
    self, Description, Envelope, ErrorCode, FunctionDescription, ParamDescription, Pong,
    RequestMeta,
};
use crate::registry::{Invocation, Reply};

pub(super) async fn handle(
    shared: Arc<Shared>,
    settler: Arc<Settler>,
    replier: Arc<Replier>,
    delivery: Delivery,
    _permit: OwnedSemaphorePermit,
) {
    shared.in_flight.fetch_add(1, Ordering::Relaxed);
    let _running = InFlight(&shared.in_flight);
    let Delivery {
        delivery_tag,
        data,
        properties,
        redelivered,
        ..
    } = delivery;
    let meta = RequestMeta::read(&properties);
    let at_most_once = shared.settings.delivery == DeliveryGuarantee::AtMostOnce;
    if at_most_once {
        settler.finished(delivery_tag, Verdict::Served).await;
    }
    if redelivered {
        debug!(
            function = meta.function.as_deref(),
            "a redelivered request: it may have run before"
        );
    }
    let (codec, reply, mut verdict) = dispatch(&shared, &meta, data).await;
    let RequestMeta {
        function,
        correlation_id,
        reply_to,
        ..
    } = meta;
    let function = function.as_deref();
    if let Some(reply_to) = reply_to {
        let properties = protocol::reply_properties(codec, correlation_id, reply.ok);
        match replier
            .send(reply_to, properties, &reply.body, redelivered)
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
                verdict = Verdict::Rejected;
            }
        }
    } else if !reply.ok {
        let message = RemoteMessage(codec, &reply.body);
        warn!(function, "one-way call failed: {message}");
    }
    if !at_most_once {
        settler.finished(delivery_tag, verdict).await;
    }
}

/// Counts a call as running until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Finds and runs the function; every failure becomes an error reply.
async fn dispatch(shared: &Shared, meta: &RequestMeta, body: Vec<u8>) -> (Codec, Reply, Verdict) {
    let rejected = |codec: Codec, code: ErrorCode, message: &str| {
        warn!(
            function = meta.function.as_deref(),
            "rejected a request ({code}): {message}"
        );
        (codec, Reply::error(codec, code, message), Verdict::Rejected)
    };
    // Every message names the function, when the request does; built only for a refusal.
    let call = || match meta.function.as_deref() {
        Some(name) => format!("the call to `{name}`"),
        None => "the request".to_owned(),
    };
    let codec = match &meta.codec {
        Ok(codec) => *codec,
        Err(unsupported) => {
            let message = format!("{} has {unsupported}", call());
            return rejected(Codec::Json, ErrorCode::BadRequest, &message);
        }
    };
    // Checked before anything is decoded.
    let limit = shared.settings.max_message_size;
    if body.len() > limit {
        let message = format!(
            "the body of {} is {} bytes, over the maximum of {limit} bytes",
            call(),
            body.len()
        );
        return rejected(codec, ErrorCode::TooLarge, &message);
    }
    let Some(name) = meta.function.as_deref() else {
        let message = format!(
            "the request has no `{}` header naming the function",
            protocol::HEADER_FUNCTION
        );
        return rejected(codec, ErrorCode::BadRequest, &message);
    };
    if name.starts_with(protocol::RESERVED_PREFIX) {
        return match builtin(shared, name, codec, &body) {
            Ok(reply) => (codec, reply, Verdict::Served),
            Err((code, message)) => rejected(codec, code, &message),
        };
    }
    let Some(function) = shared.registry.get(name) else {
        let message = format!(
            "no function `{name}` is served on queue `{}`",
            shared.settings.queue
        );
        return rejected(codec, ErrorCode::NotFound, &message);
    };
    if meta
        .deadline
        .is_some_and(|deadline| SystemTime::now() > deadline)
    {
        let message = format!("the deadline of this call to `{name}` passed before it could start");
        debug!("{message}");
        return (
            codec,
            Reply::error(codec, ErrorCode::DeadlineExceeded, &message),
            Verdict::Served,
        );
    }
    let future = (function.handler())(Invocation { codec, body });
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(reply) => (codec, reply, Verdict::Served),
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            error!(function = name, "handler panicked: {what}");
            let reply = Reply::error(
                codec,
                ErrorCode::Internal,
                &format!("`{name}` panicked: {what}"),
            );
            (codec, reply, Verdict::Rejected)
        }
    }
}

/// The functions every server answers from its own state. They take no arguments:
/// `{}`, `[]` or `null`, as any function without parameters.
fn builtin(
    shared: &Shared,
    name: &str,
    codec: Codec,
    body: &[u8],
) -> Result<Reply, (ErrorCode, String)> {
    if !matches!(name, protocol::FUNCTION_DESCRIBE | protocol::FUNCTION_PING) {
        let message =
            format!("no built-in function `{name}` (names starting with `guirpc.` are reserved)");
        return Err((ErrorCode::NotFound, message));
    }
    let no_arguments = match codec.decode::<serde_json::Value>(body) {
        Ok(serde_json::Value::Null) => true,
        Ok(serde_json::Value::Object(map)) => map.is_empty(),
        Ok(serde_json::Value::Array(items)) => items.is_empty(),
        _ => false,
    };
    if !no_arguments {
        let message =
            format!("invalid arguments for `{name}`: it takes none (`{{}}`, `[]` or `null`)");
        return Err((ErrorCode::BadRequest, message));
    }
    let encoded = if name == protocol::FUNCTION_DESCRIBE {
        codec.encode(&Description {
            queue: shared.settings.queue.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            functions: shared
                .registry
                .iter()
                .map(|f| FunctionDescription {
                    name: f.name().to_owned(),
                    doc: f.doc().to_owned(),
                    params: f
                        .params()
                        .iter()
                        .map(|p| ParamDescription {
                            name: p.name.to_owned(),
                            ty: p.ty.to_owned(),
                        })
                        .collect(),
                    returns: f.returns().to_owned(),
                    blocking: f.is_blocking(),
                })
                .collect(),
        })
    } else {
        codec.encode(&Pong {
            instance: shared.instance.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            queue: shared.settings.queue.clone(),
            uptime_ms: u64::try_from(shared.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            // This ping holds one of the permits.
            in_flight: shared.in_flight.load(Ordering::Relaxed).saturating_sub(1),
            concurrency: shared.settings.concurrency,
            functions: shared.registry.len(),
        })
    };
    Ok(match encoded {
        Ok(body) => Reply { ok: true, body },
        Err(err) => Reply::error(codec, ErrorCode::Internal, &err.to_string()),
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}

/// Shows an encoded error envelope's message in a log line.
struct RemoteMessage<'a>(Codec, &'a [u8]);

impl std::fmt::Display for RemoteMessage<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.decode::<Envelope<'_, serde::de::IgnoredAny>>(self.1) {
            Ok(envelope) => write!(f, "{} ({})", envelope.message, envelope.code),
            Err(_) => f.write_str("<undecodable error envelope>"),
        }
    }
}
