//! Clients: publish a request, wait for its reply.
//!
//! A [`Client`] runs each call through its pipeline (tracing, metrics, the user's layers;
//! see [`crate::middleware`]) to its transport ([`transport`]): the broker, or, for tests,
//! the program's own functions in memory ([`crate::testing`]).

mod blocking;
mod builder;
pub(crate) mod transport;

pub use blocking::{BlockingClient, BlockingItems};
pub use builder::ClientBuilder;
pub use transport::amqp::{Event, Subscription};

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use lapin::types::{FieldTable, ShortString};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::error::{Error, RemoteError};
use crate::middleware::{CallKind, ClientRequest, ClientResponse, ClientService};
use crate::protocol::{self, ErrorCode};
use crate::stream::ItemStream;
use transport::Transport;

/// An async client. Cheap to clone; clones share one connection and may be used from any
/// number of tasks at once.
///
/// ```no_run
/// # async fn run() -> Result<(), guirpc_core::Error> {
/// use std::time::Duration;
/// use guirpc_core::Client;
///
/// let client = Client::connect("amqp://guest:guest@127.0.0.1:5672/%2f").await?;
/// // By name, with arguments by parameter name ...
/// let sum: i64 = client.call("add", serde_json::json!({"a": 1, "b": 2})).await?;
/// // ... or in order, with a timeout of its own.
/// let sum: i64 = client.with_timeout(Duration::from_secs(1)).call("add", (1, 2)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
    queue: ShortString,
    timeout: Duration,
    codec: Codec,
    retries: u32,
    max_message_size: usize,
}

/// What the clones of one client share.
pub(crate) struct Inner {
    /// The pipeline every call runs through.
    service: ClientService,
    transport: Transport,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// Whether a call may be sent again after a retriable failure (the typed stubs say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Running it twice is harmless: retry per the client's policy.
    Idempotent,
    /// Never sent twice by the client.
    Once,
}

impl Client {
    /// A builder with the defaults: the local broker, queue `guirpc`, a 30 s timeout,
    /// MessagePack, no retries.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Connects to the broker at `uri` with the default settings.
    pub async fn connect(uri: &str) -> Result<Client, Error> {
        Client::builder().uri(uri).connect().await
    }

    /// This client, calling another service queue.
    #[must_use]
    pub fn with_queue(&self, queue: &str) -> Client {
        Client {
            queue: queue.into(),
            ..self.clone()
        }
    }

    /// This client, with another timeout.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            timeout,
            ..self.clone()
        }
    }

    /// This client, encoding with another codec.
    #[must_use]
    pub fn with_codec(&self, codec: Codec) -> Client {
        Client {
            codec,
            ..self.clone()
        }
    }

    /// This client, re-sending idempotent calls up to `retries` times.
    #[must_use]
    pub fn with_retries(&self, retries: u32) -> Client {
        Client {
            retries,
            ..self.clone()
        }
    }

    /// The service queue calls go to.
    pub fn queue(&self) -> &str {
        self.queue.as_str()
    }

    /// The timeout of a call.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The codec arguments are sent in.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Whether the client is connected now (it reconnects by itself when not). An
    /// in-memory client ([`crate::testing`]) always is.
    pub fn is_connected(&self) -> bool {
        self.inner.transport.is_connected()
    }

    /// Why the broker blocks this client's publishes (a memory or disk alarm), while it does.
    pub fn blocked(&self) -> Option<String> {
        self.inner.transport.blocked()
    }

    /// Waits until the client is connected, at most `limit`; whether it is.
    pub async fn wait_connected(&self, limit: Duration) -> bool {
        self.inner.transport.wait_connected(limit).await
    }

    /// Calls `function` by name. `args` is a map or struct of arguments by parameter
    /// name, or a tuple or sequence of them in order.
    pub async fn call<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error> {
        self.invoke(function, &args, Idempotency::Once).await
    }

    /// Calls `function` by name, re-sending it after a lost connection or a timeout as
    /// often as the client's [`retries`](ClientBuilder::retries) allow: for functions that
    /// may run twice without harm.
    pub async fn call_idempotent<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error> {
        self.invoke(function, &args, Idempotency::Idempotent).await
    }

    /// Calls a function whose own error type is `E`; its `Err(e)` arrives as
    /// [`Error::Handler`]. Typed stubs generated by `#[rpc]` call this.
    pub async fn call_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error<E>> {
        self.invoke_fallible(function, &args, Idempotency::Once)
            .await
    }

    /// What the typed stubs call ([`crate::__private`]).
    pub(crate) async fn invoke<R: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<R, Error> {
        let reply = self.round_trips(function, args, idempotency).await?;
        self.decode(function, reply)
    }

    /// What the typed stubs of fallible functions call ([`crate::__private`]).
    pub(crate) async fn invoke_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<R, Error<E>> {
        let reply = self
            .round_trips(function, args, idempotency)
            .await
            .map_err(Error::widen)?;
        self.decode(function, reply)
            .map_err(|err| typed(function, err))
    }

    /// Calls a function that streams its result: its items arrive as they are produced,
    /// each a `Result<R, Error>`, in a [`ItemStream`] (see [`crate::stream`]). The
    /// client's timeout bounds the whole stream; dropping the stream cancels the function.
    /// A function that does not stream answers with one item.
    pub fn stream<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> ItemStream<R> {
        self.invoke_stream(function, &args)
    }

    /// Calls a function that streams items of type `Result<R, E>`: its first `Err(e)`
    /// ends the stream as [`Error::Handler`].
    pub fn stream_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> ItemStream<R, E> {
        self.invoke_stream_fallible(function, &args)
    }

    /// What the typed stubs of streaming functions call ([`crate::__private`]).
    pub(crate) fn invoke_stream<R: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
    ) -> ItemStream<R> {
        self.open_stream(function, args, |_, err| err)
    }

    /// What the typed stubs of streaming functions with fallible items call ([`crate::__private`]).
    pub(crate) fn invoke_stream_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
    ) -> ItemStream<R, E> {
        self.open_stream(function, args, typed::<E>)
    }

    fn open_stream<R, E>(
        &self,
        function: &str,
        args: &impl Serialize,
        typed: fn(&str, Error) -> Error<E>,
    ) -> ItemStream<R, E> {
        let mut request = match self.request(function, args, 0, CallKind::Stream) {
            Ok(request) => request,
            Err(err) => return ItemStream::failed(function, typed, err),
        };
        request.headers.insert(
            protocol::HEADER_STREAM.into(),
            lapin::types::AMQPValue::LongUInt(crate::stream::DEFAULT_WINDOW),
        );
        let opening = ItemStream::<R, E>::opening(&request);
        let response = self.inner.service.call_once(request);
        ItemStream::new(opening, typed, response)
    }

    /// Asks the service what it serves (the built-in `guirpc.describe`).
    pub async fn describe(&self) -> Result<protocol::Description, Error> {
        self.call_idempotent(protocol::FUNCTION_DESCRIBE, ()).await
    }

    /// Asks one server of the service how it is (the built-in `guirpc.ping`).
    pub async fn ping(&self) -> Result<protocol::Pong, Error> {
        self.call(protocol::FUNCTION_PING, ()).await
    }

    /// Closes the connection; calls still waiting fail with [`Error::Connection`].
    pub async fn close(&self) {
        self.inner.transport.close().await;
    }

    /// Encodes the arguments and runs the call through the client's pipeline.
    async fn round_trips(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<ClientResponse, Error> {
        let retries = if idempotency == Idempotency::Idempotent {
            self.retries
        } else {
            0
        };
        let request = self.request(function, args, retries, CallKind::Call)?;
        self.inner.service.call_once(request).await
    }

    /// Casts `function`: a one-way call whose result no one waits for. Returns once the
    /// broker has taken the request (publisher confirms): a cast no queue is bound for
    /// fails with [`Error::NoRoute`], one the broker refuses with [`Error::Connection`].
    /// The request is persistent and has no deadline, so a durable service queue keeps
    /// it, across a broker restart too, until a server runs it; a failure there is logged,
    /// counted, and dead-lettered where the queue has a dead-letter exchange.
    pub async fn cast(&self, function: &str, args: impl Serialize) -> Result<(), Error> {
        let request = self.request(function, &args, 0, CallKind::Cast)?;
        self.inner.service.call_once(request).await.map(drop)
    }

    /// Casts `function` to run no sooner than `delay` from now: the request waits in the
    /// broker (on its delay ladder, [`crate::delay`]; no process holds it), then goes to
    /// the service queue as any cast. Returns once the broker has taken it. A delay longer
    /// than [`crate::delay::MAX_DELAY`] (about 49.7 days) fails with [`Error::Config`]; a
    /// service whose queue does not exist yet, with [`Error::NoRoute`].
    pub async fn cast_after(
        &self,
        delay: std::time::Duration,
        function: &str,
        args: impl Serialize,
    ) -> Result<(), Error> {
        let at = std::time::SystemTime::now() + delay;
        self.cast_at(at, function, args).await
    }

    /// Casts `function` to run no sooner than `at`; see [`Client::cast_after`]. A time
    /// already past casts it at once.
    pub async fn cast_at(
        &self,
        at: std::time::SystemTime,
        function: &str,
        args: impl Serialize,
    ) -> Result<(), Error> {
        let mut request = self.request(function, &args, 0, CallKind::Cast)?;
        request.not_before = Some(at);
        self.inner.service.call_once(request).await.map(drop)
    }

    /// Publishes an event on `topic` (`orders.created`, say) to the events exchange (a
    /// topic exchange, `events.exchange`, `guirpc.events` by default). Returns once the
    /// broker has taken it (publisher confirms); the event is persistent, so the durable
    /// queues of subscribed services keep it across a broker restart. An event no one
    /// subscribes to is dropped by the broker, as topic exchanges do: that is not an error.
    pub async fn publish(&self, topic: &str, event: impl Serialize) -> Result<(), Error> {
        let request = self.request(topic, &event, 0, CallKind::Publish)?;
        self.inner.service.call_once(request).await.map(drop)
    }

    /// Subscribes to the events whose topic matches `pattern` (`orders.*`, `#`), for as
    /// long as the returned [`Subscription`] lives: a queue of its own, exclusive to this
    /// connection, bound to the events exchange, deleted when the subscription or the
    /// connection ends. Events published before it are not seen.
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, Error> {
        self.inner.transport.subscribe(pattern).await
    }

    /// A call as the pipeline takes it, its arguments encoded.
    fn request(
        &self,
        function: &str,
        args: &impl Serialize,
        retries: u32,
        kind: CallKind,
    ) -> Result<ClientRequest, Error> {
        let body = self
            .codec
            .encode_to_send(args)
            .map_err(|source| Error::Encode {
                function: function.to_owned(),
                source,
            })?;
        if body.len() > self.max_message_size {
            let size = body.len();
            crate::codec::buffers::give_back(body);
            return Err(Error::TooLarge {
                function: function.to_owned(),
                size,
                limit: self.max_message_size,
            });
        }
        Ok(ClientRequest {
            function: function.to_owned(),
            queue: self.queue.clone(),
            codec: self.codec,
            headers: FieldTable::default(),
            timeout: self.timeout,
            body,
            retries,
            kind,
            not_before: None,
        })
    }

    fn decode<R: DeserializeOwned>(
        &self,
        function: &str,
        reply: ClientResponse,
    ) -> Result<R, Error> {
        if reply.ok {
            // The `Bytes` in the value share the reply's buffer.
            let body = bytes::Bytes::from(reply.body);
            reply
                .codec
                .decode_shared(&body)
                .map_err(|source| Error::Decode {
                    function: function.to_owned(),
                    source,
                })
        } else {
            Err(Error::Remote(RemoteError::from_reply(
                function,
                reply.codec,
                reply.body,
            )))
        }
    }
}

/// Turns a handler error carried in a remote error into the function's own type.
pub(crate) fn typed<E: DeserializeOwned>(function: &str, err: Error<Infallible>) -> Error<E> {
    match err {
        Error::Remote(remote) if remote.code() == &ErrorCode::HandlerError => {
            match remote.detail::<E>() {
                Some(Ok(error)) => Error::Handler {
                    function: function.to_owned(),
                    error,
                },
                Some(Err(source)) => Error::Decode {
                    function: function.to_owned(),
                    source,
                },
                None => Error::Remote(remote),
            }
        }
        other => Error::widen(other),
    }
}
