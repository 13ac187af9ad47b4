//! The wire format, in one place so that it reads side by side with `docs/PROTOCOL.md`:
//! names, headers, status values, error codes and the error envelope, and how a request's
//! AMQP properties are read and a reply's are written.

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;

mod reply_to;
pub mod v01;
mod write;
pub(crate) use reply_to::{DirectReplyTo, direct_reply_to};
pub(crate) use write::{
    announced_codec, cast_properties, credit_properties, end_properties, event_properties,
    item_properties, reply_properties, request_properties,
};

/// The exchange requests are published to, unless configured otherwise: RabbitMQ's default
/// exchange, which routes a message to the queue its routing key names, with no declaration
/// or binding, and the least work per message for the broker.
pub const DEFAULT_EXCHANGE: &str = "";
/// The topic exchange events are published to, unless configured otherwise
/// (`events.exchange`): durable, declared by whoever publishes or subscribes first.
pub const DEFAULT_EVENTS_EXCHANGE: &str = "guirpc.events";
/// The header counting the runs of a cast or an event that failed before: absent on the
/// first, 2 on the second, ...
pub const HEADER_ATTEMPT: &str = "guirpc-attempt";
/// A retried event's topic: it comes back through the delay ladder, whose routing key is
/// not the topic.
pub const HEADER_TOPIC: &str = "guirpc-topic";
/// When the first run of a retried cast or event failed (an AMQP timestamp, seconds).
pub const HEADER_FIRST_FAILURE: &str = "guirpc-first-failure";
/// A scheduled cast: the time before which it must not run, in milliseconds since the
/// Unix epoch (informative: the broker's delay ladder keeps it until then).
pub const HEADER_NOT_BEFORE: &str = "guirpc-not-before";
/// A dead letter's headers: why a server gave it up, for a person and for
/// `guirpc dead`. Each is a text, a number or a timestamp; see docs/PROTOCOL.md.
pub mod dead {
    /// A short id of the dead letter, for `guirpc dead show|retry|purge`.
    pub const ID: &str = "guirpc-dead-id";
    /// The queue it was taken from, where `guirpc dead retry` sends it back.
    pub const QUEUE: &str = "guirpc-dead-queue";
    /// The function (or subscriber) that failed it.
    pub const FUNCTION: &str = "guirpc-dead-function";
    /// The error code of its last run (`handler_error`, ...).
    pub const CODE: &str = "guirpc-dead-code";
    /// The error message of its last run.
    pub const MESSAGE: &str = "guirpc-dead-message";
    /// How many times it ran.
    pub const ATTEMPTS: &str = "guirpc-dead-attempts";
    /// When its first run failed (timestamp, seconds).
    pub const FIRST_FAILURE: &str = "guirpc-dead-first-failure";
    /// When its last run failed (timestamp, seconds).
    pub const LAST_FAILURE: &str = "guirpc-dead-last-failure";
    /// The server instance that gave it up: `host/pid`.
    pub const INSTANCE: &str = "guirpc-dead-instance";
    /// The topic of a dead event.
    pub const TOPIC: &str = "guirpc-dead-topic";
}
/// The suffix of a service's dead-letter queue: `orders.dead`.
pub const DEAD_SUFFIX: &str = ".dead";
/// Names an exchange in messages: `exchange `name``, or `the default exchange`.
#[derive(Debug, Clone, Copy)]
pub struct ExchangeName<'a>(pub &'a str);

impl std::fmt::Display for ExchangeName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            "" => f.write_str("the default exchange"),
            name => write!(f, "exchange `{name}`"),
        }
    }
}

/// The service queue, unless configured otherwise.
pub const DEFAULT_QUEUE: &str = "guirpc";
/// The queue argument giving a queue a consumer timeout of its own (milliseconds; RabbitMQ
/// 3.12 and later honour it, earlier versions ignore it).
pub const ARG_CONSUMER_TIMEOUT: &str = "x-consumer-timeout";
/// The queue argument naming the exchange a queue dead-letters to.
pub const ARG_DEAD_LETTER_EXCHANGE: &str = "x-dead-letter-exchange";
/// The queue argument deleting a queue unused for this long (milliseconds).
pub const ARG_EXPIRES: &str = "x-expires";
/// The queue argument choosing a queue's type (`quorum`).
pub const ARG_QUEUE_TYPE: &str = "x-queue-type";
/// The queue argument of a quorum queue: deliveries after which a message no consumer
/// settled is dead-lettered.
pub const ARG_DELIVERY_LIMIT: &str = "x-delivery-limit";
/// The request header carrying the caller's trace context (W3C Trace Context).
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// The request header carrying vendor trace state (W3C Trace Context).
pub const HEADER_TRACESTATE: &str = "tracestate";
/// RabbitMQ's direct reply-to pseudo-queue.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The version of the wire protocol guirpc clients speak (`docs/PROTOCOL.md`). Version 2
/// names the function in a request's `type` and carries its deadline in `timestamp`, so
/// that a request has no header table for the broker to parse; version 1 carried both in
/// headers. Servers read both: a request with the [`HEADER_FUNCTION`] header is version 1.
pub const PROTOCOL_VERSION: u8 = 2;
/// The longest function name a version 2 request carries (in `type`, an AMQP short
/// string); a longer one is sent in version 1's header.
pub const MAX_TYPE_LEN: usize = 255;

/// Version 1's request header naming the function to run.
pub const HEADER_FUNCTION: &str = "guirpc-function";
/// Version 1's request header with the absolute deadline, milliseconds since the Unix
/// epoch.
pub const HEADER_DEADLINE: &str = "guirpc-deadline";

/// The `type` of a reply whose body is the return value.
pub const STATUS_OK: &str = "ok";
/// The `type` of a reply whose body is an error envelope.
pub const STATUS_ERROR: &str = "error";

/// Request header asking for the result as a stream of items: its value is the caller's
/// initial credit, how many items the server may send before the caller grants more.
pub const HEADER_STREAM: &str = "guirpc-stream";
/// Header of a stream's first item: the queue the caller sends credit and cancellation to.
pub const HEADER_CREDIT_TO: &str = "guirpc-credit-to";
/// Header of a stream's first item: the server's ID of the stream, the `correlation_id`
/// of the caller's credit messages.
pub const HEADER_STREAM_ID: &str = "guirpc-stream-id";
/// The `type` of one item of a stream; its `message_id` is its sequence number, from 0.
pub const STATUS_ITEM: &str = "item";
/// The `type` of the message ending a stream; its `message_id` is the number of items.
pub const STATUS_END: &str = "end";
/// The `type` of a caller's message granting a stream more credit (`message_id` items).
pub const CREDIT: &str = "credit";
/// The `type` of a caller's message cancelling a stream.
pub const CANCEL: &str = "cancel";
/// The most credit a server holds for one stream, however much a caller grants.
pub const MAX_CREDIT: u32 = 4096;

/// The built-in function every server answers with a [`Description`] of what it serves.
pub const FUNCTION_DESCRIBE: &str = "guirpc.describe";
/// The built-in function every server answers with a [`Pong`].
pub const FUNCTION_PING: &str = "guirpc.ping";
/// Names starting with this are reserved for built-in functions.
pub const RESERVED_PREFIX: &str = "guirpc.";

/// What a server serves: the reply of [`FUNCTION_DESCRIBE`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Description {
    /// The service queue.
    pub queue: String,
    /// The guirpc version of the server.
    pub version: String,
    /// The functions, by name.
    pub functions: Vec<FunctionDescription>,
    /// The `#[subscribe]` functions, by name (absent from servers before 0.1's events).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionDescription>,
    /// The exchange requests are published to: `""`, the default exchange, unless
    /// `broker.exchange` names one (absent from servers before schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// The topic exchange events are published to (absent from servers before schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_exchange: Option<String>,
}

/// The JSON Schemas (2020-12) of a function's data, each standalone (its definitions
/// under its own `$defs`), each naming its Rust type under `x-rust-type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionSchema {
    /// The arguments, as a map of parameter name to value.
    pub params: serde_json::Value,
    /// What a call returns (the `Ok` type of a `Result`); absent for a streaming function.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<serde_json::Value>,
    /// Each item of a streaming function (the `Ok` type of a `Result` item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item: Option<serde_json::Value>,
    /// The `detail` of a `handler_error`: the `E` of a function returning `Result<T, E>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

/// The JSON Schema (2020-12) of the events a subscriber takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionSchema {
    /// The event, the body of what is published.
    pub event: serde_json::Value,
}

/// One `#[subscribe]` function of a [`Description`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionDescription {
    /// The subscription's name.
    pub name: String,
    /// The topic pattern it is bound with.
    pub pattern: String,
    /// Whether every server instance gets every event.
    pub broadcast: bool,
    /// The first line of its doc comment.
    pub summary: String,
    /// How a failed event is run again (absent from servers before retry policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDescription>,
    /// The event's schema (absent from servers before schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<SubscriptionSchema>,
}

/// A retry policy in a [`Description`]: how a failed cast or event is run again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryDescription {
    /// Runs in all, the first included.
    pub attempts: u32,
    /// The first delay and the largest: `1s..60s`.
    pub backoff: String,
    /// How much each delay grows over the one before.
    pub factor: f64,
    /// The fraction by which a delay is shortened at random, at most.
    pub jitter: f64,
    /// The outcomes retried: `handler_error`, `internal`, `max_run_exceeded`.
    pub on: Vec<String>,
}

impl std::fmt::Display for RetryDescription {
    /// `3 attempts, 1s..60s`, or `no retries`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.attempts <= 1 {
            f.write_str("no retries")
        } else {
            write!(f, "{} attempts, {}", self.attempts, self.backoff)
        }
    }
}

/// One function of a [`Description`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDescription {
    /// The name callers use.
    pub name: String,
    /// The doc comment.
    pub doc: String,
    /// The parameters, in order.
    pub params: Vec<ParamDescription>,
    /// The return type as written in the source.
    pub returns: String,
    /// Whether it runs on the blocking pool.
    pub blocking: bool,
    /// Whether it streams its result, one item at a time (call it asking for a stream).
    #[serde(default)]
    pub streams: bool,
    /// How a failed cast of it is run again (calls with a reply never are; absent from
    /// servers before retry policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryDescription>,
    /// The schemas of its arguments, result, items and error (absent from servers before
    /// schemas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<FunctionSchema>,
}

impl FunctionDescription {
    /// The parameters as a person reads them: `a: i64, b: i64`.
    pub fn parameters(&self) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|p| format!("{}: {}", p.name, p.ty))
            .collect();
        params.join(", ")
    }

    /// The signature: `add(a: i64, b: i64) -> i64`.
    pub fn signature(&self) -> String {
        format!("{}({}) -> {}", self.name, self.parameters(), self.returns)
    }

    /// The first line of its doc comment that is not blank.
    pub fn summary(&self) -> &str {
        first_line(&self.doc)
    }
}

/// The first line of a doc comment that is not blank.
pub(crate) fn first_line(doc: &str) -> &str {
    doc.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
}

/// One parameter of a [`FunctionDescription`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamDescription {
    /// The parameter's name.
    pub name: String,
    /// Its Rust type.
    #[serde(rename = "type")]
    pub ty: String,
}

/// A server's answer to [`FUNCTION_PING`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pong {
    /// Which server answered: `host:pid`.
    pub instance: String,
    /// The guirpc version of the server.
    pub version: String,
    /// The service queue.
    pub queue: String,
    /// How long the server has been running, in milliseconds.
    pub uptime_ms: u64,
    /// Calls running on it now, besides this ping.
    pub in_flight: usize,
    /// How many calls it runs at once at most.
    pub concurrency: usize,
    /// How many functions it serves.
    pub functions: usize,
}

/// Why a call failed on the server side; the `code` of an error envelope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request was malformed: no function header, unknown codec, bad arguments.
    BadRequest,
    /// No function of that name is served on the queue.
    NotFound,
    /// The function returned `Err(e)`; `e` travels in the envelope's `detail`.
    HandlerError,
    /// The function panicked.
    Internal,
    /// The request's deadline passed before the server could start it.
    DeadlineExceeded,
    /// The request body is larger than the server accepts.
    TooLarge,
    /// The caller cancelled the call (it dropped its stream).
    Cancelled,
    /// The function ran longer than its `max_run` and was cancelled.
    MaxRunExceeded,
    /// The function takes calls only from verified users, and the request carries no
    /// `user_id`.
    Unauthorized,
    /// The verified caller may not call the function.
    Forbidden,
    /// A code this version does not know; treat it like [`ErrorCode::Internal`].
    Unknown(String),
}

impl ErrorCode {
    /// The code as it is written on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::HandlerError => "handler_error",
            ErrorCode::Internal => "internal",
            ErrorCode::DeadlineExceeded => "deadline_exceeded",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::MaxRunExceeded => "max_run_exceeded",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::Unknown(code) => code,
        }
    }

    /// Reads a code from the wire.
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "bad_request" => ErrorCode::BadRequest,
            "not_found" => ErrorCode::NotFound,
            "handler_error" => ErrorCode::HandlerError,
            "internal" => ErrorCode::Internal,
            "deadline_exceeded" => ErrorCode::DeadlineExceeded,
            "too_large" => ErrorCode::TooLarge,
            "cancelled" => ErrorCode::Cancelled,
            "max_run_exceeded" => ErrorCode::MaxRunExceeded,
            "unauthorized" => ErrorCode::Unauthorized,
            "forbidden" => ErrorCode::Forbidden,
            other => ErrorCode::Unknown(other.to_owned()),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the broker answered `NOT_FOUND`: a queue or exchange that does not exist.
pub(crate) fn is_not_found(err: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(
        err.kind(),
        lapin::ErrorKind::ProtocolError(amqp)
            if *amqp.kind() == AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND)
    )
}

/// The codec of a message by its `content_type`: the one policy for every message guirpc
/// reads (docs/PROTOCOL.md, "Codecs"). The codec it names; MessagePack when it names none;
/// for a content type guirpc does not speak, `Err` saying so. A server refuses such a
/// request (`bad_request`, in JSON); a client reads such a reply, stream message or event
/// as JSON ([`received_codec`]).
pub(crate) fn codec_of(properties: &BasicProperties) -> Result<Codec, String> {
    let content_type = properties.content_type().as_ref().map(ShortString::as_str);
    Codec::from_content_type(content_type).ok_or_else(|| {
        format!(
            "unsupported content_type `{}` (expected application/msgpack or application/json)",
            content_type.unwrap_or_default()
        )
    })
}

/// The codec a client reads a reply, a stream's message or an event in ([`codec_of`]):
/// one it does not speak is read as JSON, whose decoding error then shows what came.
pub(crate) fn received_codec(properties: &BasicProperties) -> Codec {
    codec_of(properties).unwrap_or(Codec::Json)
}

/// What a server reads from a request's properties before dispatching it.
#[derive(Debug)]
pub(crate) struct RequestMeta {
    /// The protocol version the request is written in: 1 or 2, or 0 for the Python
    /// package guirpc 0.1's form.
    pub version: u8,
    /// How a guirpc 0.1 request's body is written.
    pub legacy: Option<v01::Form>,
    pub function: Option<String>,
    pub codec: Result<Codec, String>,
    pub correlation_id: Option<ShortString>,
    pub reply_to: Option<ShortString>,
    pub deadline: Option<SystemTime>,
    /// The initial credit of a call asking for a stream.
    pub stream: Option<u32>,
}

impl RequestMeta {
    pub(crate) fn read(props: &BasicProperties) -> RequestMeta {
        let headers = props.headers().as_ref();
        let header = |name: &str| headers.and_then(|h| h.inner().get(name));
        // Version 1 names the function in a header, which wins over any `type`; version 2
        // in `type`, with the deadline in `timestamp`.
        // guirpc 0.1 names it in `FaaS-Name`, has no `type` and no deadline.
        if let (None, Some(function)) = (header(HEADER_FUNCTION), header(v01::HEADER_FAAS_NAME)) {
            return RequestMeta {
                version: 0,
                legacy: Some(v01::Form::of(props)),
                function: value_as_str(function).map(Cow::into_owned),
                codec: Ok(Codec::Json),
                correlation_id: props.correlation_id().clone(),
                reply_to: props.reply_to().clone().filter(|r| !r.as_str().is_empty()),
                deadline: None,
                stream: None,
            };
        }
        let (version, function, deadline) = match (header(HEADER_FUNCTION), props.kind()) {
            (None, Some(function)) => (
                2,
                Some(function.as_str().to_owned()),
                props.timestamp().map(instant_of_ms),
            ),
            (function, _) => (
                1,
                function.and_then(value_as_str).map(Cow::into_owned),
                header(HEADER_DEADLINE).and_then(deadline_of),
            ),
        };
        RequestMeta {
            version,
            legacy: None,
            function,
            codec: codec_of(props),
            correlation_id: props.correlation_id().clone(),
            reply_to: props.reply_to().clone().filter(|r| !r.as_str().is_empty()),
            deadline,
            stream: header(HEADER_STREAM).and_then(value_as_u64).map(|credit| {
                u32::try_from(credit)
                    .unwrap_or(MAX_CREDIT)
                    .clamp(1, MAX_CREDIT)
            }),
        }
    }
}

/// Consumes `queue` without acknowledgements: replies (direct reply-to, which takes no
/// acks) and events of a subscription of one's own, which die with their consumer.
pub(crate) async fn consume_no_ack(
    channel: &lapin::Channel,
    queue: ShortString,
) -> lapin::Result<lapin::Consumer> {
    let options = lapin::options::BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    channel
        .basic_consume(queue, "".into(), options, FieldTable::default())
        .await
}

/// Declares a named exchange as the protocol specifies (direct, durable unless
/// `durable` says otherwise), unless it exists: then it is used as it is (a guirpc 0.1
/// system's `rpc_gateway` is not durable, and its consumers declare it so). `durable`
/// `None` only checks that it exists (`NOT_FOUND` if not). The default exchange (`""`)
/// always exists and cannot be declared.
pub(crate) async fn declare_exchange(
    connection: &lapin::Connection,
    channel: &lapin::Channel,
    name: &str,
    durable: Option<bool>,
) -> lapin::Result<()> {
    if name.is_empty() {
        return Ok(());
    }
    // Asked on a channel of its own: a passive declaration of an exchange that does not
    // exist closes its channel.
    let probe = connection.create_channel().await?;
    let exists = probe
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    match exists {
        Ok(()) => {
            let _ = probe.close(200, "".into()).await;
            return Ok(());
        }
        Err(err) if !is_not_found(&err) || durable.is_none() => return Err(err),
        Err(_) => {}
    }
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                durable: durable.unwrap_or(true),
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// Declares the events exchange: a durable topic exchange.
pub(crate) async fn declare_events_exchange(
    channel: &lapin::Channel,
    name: &str,
) -> lapin::Result<()> {
    channel
        .exchange_declare(
            name.into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
}

/// An unsigned number in a header or a short string property, whatever its AMQP type.
pub(crate) fn value_as_u64(value: &AMQPValue) -> Option<u64> {
    match *value {
        AMQPValue::ShortShortInt(v) => u64::try_from(v).ok(),
        AMQPValue::ShortShortUInt(v) => Some(v.into()),
        AMQPValue::ShortInt(v) => u64::try_from(v).ok(),
        AMQPValue::ShortUInt(v) => Some(v.into()),
        AMQPValue::LongInt(v) => u64::try_from(v).ok(),
        AMQPValue::LongUInt(v) => Some(v.into()),
        AMQPValue::LongLongInt(v) => u64::try_from(v).ok(),
        AMQPValue::LongString(ref s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(ref s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

/// Whether a reply carries a return value (`true`) or an error envelope (`false`).
/// A reply without a status is read as an error, so that a foreign or broken server's
/// body is never mistaken for a return value.
pub(crate) fn reply_is_ok(props: &BasicProperties) -> bool {
    props
        .kind()
        .as_ref()
        .is_some_and(|status| status.as_str() == STATUS_OK)
}

pub(crate) fn value_as_str(value: &AMQPValue) -> Option<Cow<'_, str>> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes())),
        AMQPValue::ShortString(s) => Some(Cow::Borrowed(s.as_str())),
        AMQPValue::ByteArray(b) => Some(String::from_utf8_lossy(b.as_slice())),
        _ => None,
    }
}

/// An instant given as milliseconds since the epoch; one the clock cannot reach is far
/// enough in the future to be no deadline at all.
fn instant_of_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_millis(ms))
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(i64::MAX as u64 / 2))
}

/// A deadline header's instant. Milliseconds before the epoch (a negative number) are a
/// deadline in the past, not the absence of one.
fn deadline_of(value: &AMQPValue) -> Option<SystemTime> {
    let ms: i128 = match *value {
        AMQPValue::ShortShortInt(v) => v.into(),
        AMQPValue::ShortShortUInt(v) => v.into(),
        AMQPValue::ShortInt(v) => v.into(),
        AMQPValue::ShortUInt(v) => v.into(),
        AMQPValue::LongInt(v) => v.into(),
        AMQPValue::LongUInt(v) => v.into(),
        AMQPValue::LongLongInt(v) => v.into(),
        AMQPValue::Timestamp(v) => v.into(),
        // `as` saturates, and a NaN becomes 0: the epoch, long past.
        AMQPValue::Double(v) => v as i128,
        AMQPValue::Float(v) => v as i128,
        AMQPValue::LongString(ref s) => std::str::from_utf8(s.as_bytes())
            .ok()?
            .trim()
            .parse()
            .ok()?,
        _ => return None,
    };
    Some(instant_of_ms(u64::try_from(ms.max(0)).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests;
