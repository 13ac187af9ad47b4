//! The properties of the messages guirpc writes: requests, casts and events, replies,
//! a stream's items and end, and a caller's credit.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use super::{
    CANCEL, CREDIT, DIRECT_REPLY_TO, HEADER_CREDIT_TO, HEADER_DEADLINE, HEADER_FUNCTION,
    HEADER_STREAM_ID, MAX_TYPE_LEN, STATUS_END, STATUS_ERROR, STATUS_ITEM, STATUS_OK,
};
use crate::codec::Codec;

/// The properties of a request from a guirpc client, in protocol version 2 (version 1
/// for a function name too long for `type`).
pub(crate) fn request_properties(
    function: &str,
    codec: Codec,
    correlation_id: ShortString,
    timeout: Duration,
    extra_headers: &FieldTable,
) -> BasicProperties {
    let deadline = SystemTime::now() + timeout;
    let deadline_ms = u64::try_from(
        deadline
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(u64::MAX);
    // A timeout under a millisecond would round to an expiration of 0: "expire at once".
    let expiration = timeout.as_millis().max(1);
    // No `delivery_mode`: absent means transient, and costs nothing to parse. No
    // `content_type` for MessagePack, which absent means: one short string less for the
    // client to write and for the broker and the server to read, on every call.
    let properties = BasicProperties::default()
        .with_correlation_id(correlation_id)
        .with_reply_to(DIRECT_REPLY_TO.into())
        .with_expiration(itoa::Buffer::new().format(expiration).into());
    let properties = announcing(properties, (codec != Codec::MsgPack).then_some(codec));
    addressed(properties, function, Some(deadline_ms), extra_headers)
}

/// Names the function a request runs and its deadline (milliseconds since the epoch):
/// in `type` and `timestamp` (version 2), or in version 1's headers when the name is too
/// long for a short string. Headers only when there are some.
fn addressed(
    properties: BasicProperties,
    function: &str,
    deadline_ms: Option<u64>,
    headers: &FieldTable,
) -> BasicProperties {
    // A layer's header under version 1's names would be read in place of the request's own.
    let own = |key: &ShortString| matches!(key.as_str(), HEADER_FUNCTION | HEADER_DEADLINE);
    let mut headers = match headers.inner().keys().any(own) {
        false => Cow::Borrowed(headers),
        true => Cow::Owned(FieldTable::from(
            headers
                .inner()
                .iter()
                .filter(|(key, _)| !own(key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )),
    };
    let properties = if function.len() > MAX_TYPE_LEN {
        let headers = headers.to_mut();
        headers.insert(
            HEADER_FUNCTION.into(),
            AMQPValue::LongString(LongString::from(function)),
        );
        if let Some(ms) = deadline_ms {
            let ms = i64::try_from(ms).unwrap_or(i64::MAX);
            headers.insert(HEADER_DEADLINE.into(), AMQPValue::LongLongInt(ms));
        }
        properties
    } else {
        let properties = properties.with_type(function.into());
        match deadline_ms {
            Some(ms) => properties.with_timestamp(ms),
            None => properties,
        }
    };
    match headers.inner().is_empty() {
        true => properties,
        false => properties.with_headers(headers.into_owned()),
    }
}

/// The properties of a cast: a one-way request, persistent (a durable queue keeps it
/// across a broker restart), with no reply address, deadline or expiration: it waits in
/// the queue for a server however long that takes.
pub(crate) fn cast_properties(
    function: &str,
    codec: Codec,
    extra_headers: &FieldTable,
) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type(codec.content_type().into())
        .with_delivery_mode(2);
    addressed(properties, function, None, extra_headers)
}

/// The properties of an event: persistent, its topic the routing key.
pub(crate) fn event_properties(codec: Codec, headers: &FieldTable) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_content_type(codec.content_type().into())
        .with_delivery_mode(2);
    if headers.inner().is_empty() {
        properties
    } else {
        properties.with_headers(headers.clone())
    }
}

/// The codec a request's reply, and each message of its stream, announces in
/// `content_type`: the request's codec when the request named one, none when it named
/// none. A caller that leaves `content_type` out reads an absent one as MessagePack, as
/// its request meant; one that names its codec gets its canonical name back.
pub(crate) fn announced_codec(request: &BasicProperties, codec: Codec) -> Option<Codec> {
    request.content_type().as_ref().map(|_| codec)
}

/// `properties` with `codec` named in `content_type`, if there is one to name.
fn announcing(properties: BasicProperties, codec: Option<Codec>) -> BasicProperties {
    match codec {
        Some(codec) => properties.with_content_type(codec.content_type().into()),
        None => properties,
    }
}

/// The properties of a reply to a request. `codec` is the `content_type` it announces:
/// the request's codec when the request named one, `None` when it named none (its caller
/// reads an absent `content_type` as MessagePack, as the request meant).
pub(crate) fn reply_properties(
    codec: Option<Codec>,
    correlation_id: Option<ShortString>,
    ok: bool,
) -> BasicProperties {
    // The status travels in the `type` property: a reply carries no header table to
    // encode and parse.
    let status = if ok { STATUS_OK } else { STATUS_ERROR };
    let props = announcing(BasicProperties::default(), codec).with_type(status.into());
    match correlation_id {
        Some(id) => props.with_correlation_id(id),
        None => props,
    }
}

/// The properties of one item of a stream. The first also says where the caller sends
/// credit (`credit_to`: the queue, and the server's ID of the stream).
pub(crate) fn item_properties(
    codec: Option<Codec>,
    correlation_id: Option<ShortString>,
    seq: u64,
    credit_to: Option<(&ShortString, u64)>,
) -> BasicProperties {
    let props = announcing(BasicProperties::default(), codec)
        .with_type(STATUS_ITEM.into())
        .with_message_id(itoa::Buffer::new().format(seq).into());
    let props = match correlation_id {
        Some(id) => props.with_correlation_id(id),
        None => props,
    };
    match credit_to {
        Some((queue, id)) => {
            let mut headers = FieldTable::default();
            headers.insert(
                HEADER_CREDIT_TO.into(),
                AMQPValue::LongString(queue.as_str().into()),
            );
            headers.insert(
                HEADER_STREAM_ID.into(),
                AMQPValue::LongLongInt(i64::try_from(id).unwrap_or(i64::MAX)),
            );
            props.with_headers(headers)
        }
        None => props,
    }
}

/// The properties of a stream's last message: the end marker (after `count` items), or
/// an error envelope.
pub(crate) fn end_properties(
    codec: Option<Codec>,
    correlation_id: Option<ShortString>,
    ok: bool,
    count: u64,
) -> BasicProperties {
    let props = reply_properties(codec, correlation_id, ok)
        .with_message_id(itoa::Buffer::new().format(count).into());
    if ok {
        props.with_type(STATUS_END.into())
    } else {
        props
    }
}

/// The properties of a caller's credit (`Some(n)`) or cancellation (`None`) of a stream.
pub(crate) fn credit_properties(stream_id: &ShortString, credit: Option<u32>) -> BasicProperties {
    let props = BasicProperties::default().with_correlation_id(stream_id.clone());
    match credit {
        Some(n) => props
            .with_type(CREDIT.into())
            .with_message_id(itoa::Buffer::new().format(n).into()),
        None => props.with_type(CANCEL.into()),
    }
}
