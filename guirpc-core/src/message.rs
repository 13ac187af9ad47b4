//! The messages of a call as the layers and the transports see them: a server's
//! [`Reply`], a client's [`ClientRequest`] and [`ClientResponse`], and the handles of a
//! stream's two ends ([`ItemSink`] on the server, [`Items`] on the client), whose
//! behaviour is `crate::stream`'s; and what a registered function is handed
//! ([`Invocation`]) and returns ([`HandlerFuture`]). Beneath the middleware, the registry
//! and the streams, which all speak in them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::codec::Codec;
use crate::envelope;
use crate::error::Error;
use crate::protocol::ErrorCode;

/// What a server answers: a return value or an error envelope, encoded in the request's
/// codec.
#[derive(Debug)]
pub struct Reply {
    pub(crate) code: Option<ErrorCode>,
    pub(crate) body: Vec<u8>,
    /// Settled with a `reject` (dead-lettered where the queue has a dead-letter exchange)
    /// instead of an `ack`: a request that cannot be served as it is.
    pub(crate) rejected: bool,
}

impl Reply {
    /// A reply carrying `value`, or an `internal` error if `value` cannot be encoded.
    pub fn value<T: Serialize + ?Sized>(codec: Codec, value: &T) -> Reply {
        match codec.encode_to_send(value) {
            Ok(body) => Reply::encoded(body),
            Err(err) => Reply::error(
                codec,
                ErrorCode::Internal,
                &format!("the return value cannot be encoded in {codec}: {err}"),
            ),
        }
    }

    /// The same outcome with another body (the reply to a guirpc 0.1 caller, in its form).
    pub(crate) fn rewritten(reply: Reply, body: Vec<u8>) -> Reply {
        Reply {
            code: reply.code.clone(),
            body,
            rejected: reply.rejected,
        }
    }

    /// An error reply: the caller's call fails with a remote error of this code.
    pub fn error(codec: Codec, code: ErrorCode, message: &str) -> Reply {
        Reply {
            body: envelope::encode(codec, &code, message),
            code: Some(code),
            rejected: false,
        }
    }

    /// An error reply to a request that can never be served as sent: the request is
    /// rejected, so that a dead-letter exchange keeps it.
    pub(crate) fn refusal(codec: Codec, code: ErrorCode, message: &str) -> Reply {
        let mut reply = Reply::error(codec, code, message);
        reply.rejected = true;
        reply
    }

    /// A return value, already encoded.
    pub(crate) fn encoded(body: Vec<u8>) -> Reply {
        Reply {
            code: None,
            body,
            rejected: false,
        }
    }

    /// Whether the reply carries a return value.
    pub fn is_ok(&self) -> bool {
        self.code.is_none()
    }

    /// The error code of an error reply.
    pub fn code(&self) -> Option<&ErrorCode> {
        self.code.as_ref()
    }

    /// The encoded body: the return value, or the error envelope.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The body, taken out: for whoever sends it on.
    pub(crate) fn into_body(mut self) -> Vec<u8> {
        std::mem::take(&mut self.body)
    }

    /// `ok`, or the error code: the outcome's name in spans and metrics.
    pub fn outcome(&self) -> &str {
        self.code.as_ref().map_or(OUTCOME_OK, ErrorCode::as_str)
    }
}

impl Drop for Reply {
    /// A reply's body was encoded into a kept buffer if it is large: dropped, the reply
    /// has been sent (lapin copied it into its frames) or never will be.
    fn drop(&mut self) {
        crate::codec::buffers::give_back(std::mem::take(&mut self.body));
    }
}

/// The outcome of a call that returned a value.
pub const OUTCOME_OK: &str = "ok";

/// A call as the client's layers see it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientRequest {
    /// The function called.
    pub function: String,
    /// The service queue it goes to.
    pub queue: ShortString,
    /// The codec of the arguments.
    pub codec: Codec,
    /// Headers sent with the request besides guirpc's own (a layer may add some).
    pub headers: FieldTable,
    /// How long the call may take.
    pub timeout: Duration,
    /// The encoded arguments.
    pub body: Vec<u8>,
    /// How many times the call is sent again after a retriable failure.
    pub retries: u32,
    /// A call, a cast, or an event.
    pub kind: CallKind,
    /// A scheduled cast: the time before which it must not run (it waits on the broker's
    /// delay ladder, [`crate::delay`]).
    pub not_before: Option<std::time::SystemTime>,
}

/// What a client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallKind {
    /// A call: a request, and its reply.
    Call,
    /// A cast: a one-way request, done once the broker has taken it.
    Cast,
    /// An event: `function` is its topic, published to the events exchange, done once
    /// the broker has taken it; `queue` is unused.
    Publish,
    /// A call whose result may come as a stream of items: the response comes with the
    /// first message, and the items follow.
    Stream,
}

impl ClientRequest {
    /// The error of this call when its deadline passed without a reply.
    pub(crate) fn timed_out(&self) -> Error {
        Error::Timeout {
            function: self.function.clone(),
            queue: self.queue.to_string(),
            timeout: self.timeout,
        }
    }

    /// Adds a header to the request.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        self.headers.insert(
            name.into(),
            AMQPValue::LongString(value.into().as_str().into()),
        );
    }

    /// A header's value, as text, when it is a string.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        header_str(&self.headers, name)
    }
}

/// A reply as the client's layers see it, before it is decoded into the caller's type.
#[derive(Debug)]
pub struct ClientResponse {
    pub(crate) ok: bool,
    pub(crate) codec: Codec,
    pub(crate) body: Vec<u8>,
    /// A stream's items, after its first message (which made this response).
    pub(crate) items: Option<crate::stream::Items>,
}

impl ClientResponse {
    /// Whether the reply carries a return value (else an error envelope).
    pub fn is_ok(&self) -> bool {
        self.ok
    }

    /// The codec of the body.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The encoded body (empty for a stream, whose items follow).
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// Whether this opens a stream of items (the call asked for one, and the function
    /// streams).
    pub fn is_stream(&self) -> bool {
        self.items.is_some()
    }

    /// `ok`, or the error code of an error reply.
    pub fn outcome(&self) -> Cow<'static, str> {
        if self.ok {
            Cow::Borrowed(OUTCOME_OK)
        } else {
            Cow::Owned(envelope::read(self.codec, &self.body).0.as_str().to_owned())
        }
    }
}

/// Where a streaming function's items go: the code `#[rpc]` generates sends them here.
pub struct ItemSink {
    pub(crate) outlet: Box<dyn Outlet>,
    pub(crate) deadline: Option<SystemTime>,
    pub(crate) progress: Arc<Progress>,
}

impl std::fmt::Debug for ItemSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemSink")
            .field("progress", &self.progress)
            .finish_non_exhaustive()
    }
}

/// Why a stream stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// The caller cancelled it (dropped its stream).
    Cancelled,
    /// The server's connection is gone: the request goes back to the queue.
    SessionLost,
    /// The broker refused an item on every attempt.
    GaveUp(String),
}

/// Publishes items: to the broker, or to an in-memory caller.
pub(crate) trait Outlet: Send + Sync {
    /// Sends item `seq` (a reply carrying a value), once the caller has granted credit
    /// for it.
    fn send(
        &mut self,
        seq: u64,
        item: Reply,
    ) -> Pin<Box<dyn Future<Output = Result<(), Stopped>> + Send + '_>>;

    /// Resolves when the stream must stop whatever its function is doing: the caller
    /// cancelled it, or the connection is gone.
    fn stopped(&self) -> Pin<Box<dyn Future<Output = Stopped> + Send + 'static>>;
}

/// How far a stream got, for the transport to send its last message (or none).
#[derive(Debug, Default)]
pub(crate) struct Progress {
    /// Whether the function streamed at all (else its reply is a plain one).
    pub(crate) started: AtomicBool,
    pub(crate) sent: AtomicU64,
    pub(crate) stopped: Mutex<Option<Stopped>>,
}

/// One message of a stream, as a transport hands it to the caller.
#[derive(Debug)]
pub(crate) enum Piece {
    /// An item; the first says where credit goes (the queue, the server's stream ID).
    Item {
        seq: u64,
        body: Vec<u8>,
        credit_to: Option<(ShortString, ShortString)>,
    },
    /// The end, after `count` items.
    End { count: u64 },
    /// A reply that is no stream: a plain function's value, or an error envelope (which
    /// ends a stream early).
    Reply {
        ok: bool,
        codec: Codec,
        body: Vec<u8>,
    },
    /// The broker returned the request: no queue is bound for it.
    Returned,
}

/// What a caller's stream tells its transport: items consumed (so credit is due) and
/// the end of its interest.
pub(crate) trait Control: Send {
    /// The caller's code took an item; `credit_to` is the first item's address.
    fn consumed(&mut self, credit_to: Option<(ShortString, ShortString)>);
    /// The stream ended or failed: no credit or cancellation is due any more.
    fn finished(&mut self);
    /// The server started the stream again (its connection was lost, and the request
    /// delivered anew): a cancellation, when due, goes to the new stream's address.
    fn restarted(&mut self, credit_to: Option<(ShortString, ShortString)>);
}

/// The messages of one stream, as they arrive (the transport's half of an
/// [`ItemStream`]).
pub(crate) struct Items {
    /// Messages already taken from the channel (the first, which opened the stream).
    pub(crate) ready: VecDeque<Piece>,
    pub(crate) rx: mpsc::Receiver<Piece>,
    pub(crate) control: Box<dyn Control>,
    pub(crate) codec: Codec,
    pub(crate) received: u64,
    pub(crate) expired: Pin<Box<tokio::time::Sleep>>,
    /// Makes the error of a stream cut off (its connection lost).
    pub(crate) cut: Arc<dyn Fn(String) -> Error + Send + Sync>,
    pub(crate) done: bool,
}

impl std::fmt::Debug for Items {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Items")
            .field("received", &self.received)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

pub(crate) fn header_str<'a>(headers: &'a FieldTable, name: &str) -> Option<Cow<'a, str>> {
    headers
        .inner()
        .get(name)
        .and_then(crate::protocol::value_as_str)
}

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Reply> + Send + 'static>>;

/// The entry point `#[rpc]` generates for a function.
pub type HandlerFn = fn(Invocation) -> HandlerFuture;

/// A request handed to a handler: its codec and its encoded arguments.
#[derive(Debug)]
pub struct Invocation {
    /// The codec of the arguments, and of the reply.
    pub codec: Codec,
    /// The encoded arguments, shared with the [`crate::Bytes`] decoded from them.
    pub body: bytes::Bytes,
    /// When the caller stops waiting.
    pub deadline: Option<std::time::SystemTime>,
    /// Where a streaming function's items go, when the caller asked for a stream.
    pub items: Option<crate::message::ItemSink>,
}
