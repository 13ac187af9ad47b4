//! A delivery's properties, read into the request the server's layers see.

use std::sync::Arc;

use lapin::types::ShortString;

use crate::codec::Codec;
use crate::middleware::ServerRequest;
use crate::protocol::RequestMeta;

/// A request as its message's properties say (a delivery from the broker, or the
/// in-memory transport's), and where its reply goes. `trusted`, the reading server's own
/// user, may publish on another caller's behalf (its retries and dead letters).
pub(crate) fn read_request(
    properties: &lapin::BasicProperties,
    queue: Arc<str>,
    redelivered: bool,
    body: Vec<u8>,
    trusted: Option<&str>,
) -> (ServerRequest, Option<ShortString>) {
    let meta = RequestMeta::read(properties);
    let (codec, unreadable) = match meta.codec {
        Ok(codec) => (codec, None),
        Err(unsupported) => (Codec::Json, Some(unsupported)),
    };
    let request = ServerRequest {
        function: meta.function.unwrap_or_default(),
        queue,
        correlation_id: meta.correlation_id,
        headers: properties.headers().clone().unwrap_or_default(),
        version: meta.version,
        deadline: meta.deadline,
        redelivered,
        codec,
        body,
        caller: crate::Caller::of(properties, trusted),
        unreadable,
        legacy: meta.legacy,
        subscriber: None,
        credit: meta.stream,
        items: None,
    };
    (request, meta.reply_to)
}
