//! The blocking client: the async client driven by a runtime of its own, for programs
//! without one.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Client, ClientBuilder, Idempotency};
use crate::codec::Codec;
use crate::error::Error;
use crate::stream::ItemStream;

impl ClientBuilder {
    /// Connects a [`BlockingClient`], for code without an async runtime.
    pub fn connect_blocking(self) -> Result<BlockingClient, Error> {
        BlockingClient::connect_with(self)
    }
}

/// A client for synchronous code: the same calls as [`Client`], each blocking the calling
/// thread until its reply (or its timeout). Cheap to clone, and safe to use from many
/// threads at once, all sharing one connection.
///
/// ```no_run
/// use guirpc_core::BlockingClient;
///
/// fn main() -> Result<(), guirpc_core::Error> {
///     let client = BlockingClient::connect("amqp://guest:guest@127.0.0.1:5672/%2f")?;
///     let sum: i64 = client.call("add", (1, 2))?;
///     println!("{sum}");
///     Ok(())
/// }
/// ```
///
/// Do not use it inside an async runtime: its calls refuse with [`Error::Config`] there.
#[derive(Debug, Clone)]
pub struct BlockingClient {
    client: Client,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl BlockingClient {
    /// Connects to the broker at `uri` with the default settings.
    pub fn connect(uri: &str) -> Result<BlockingClient, Error> {
        Client::builder().uri(uri).connect_blocking()
    }

    fn connect_with(builder: ClientBuilder) -> Result<BlockingClient, Error> {
        outside_runtime()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("guirpc-client")
            .enable_all()
            .build()
            .map_err(|err| Error::Config(format!("cannot start the client's runtime: {err}")))?;
        let client = runtime.block_on(builder.connect())?;
        Ok(BlockingClient {
            client,
            runtime: Arc::new(runtime),
        })
    }

    /// Calls `function` by name; see [`Client::call`].
    pub fn call<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error> {
        self.block_on(self.client.call(function, args))
    }

    /// Calls `function` by name, re-sending it after a retriable failure; see
    /// [`Client::call_idempotent`].
    pub fn call_idempotent<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error> {
        self.block_on(self.client.call_idempotent(function, args))
    }

    /// Calls a function that streams its result: an iterator of its items, each `next`
    /// blocking until the item comes; see [`Client::stream`].
    pub fn stream<R: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> BlockingItems<R> {
        self.invoke_stream(function, &args)
    }

    /// Calls a function that streams items of type `Result<R, E>`; see
    /// [`Client::stream_fallible`].
    pub fn stream_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> BlockingItems<R, E> {
        self.invoke_stream_fallible(function, &args)
    }

    /// What the typed stubs of streaming functions call ([`crate::__private`]).
    pub(crate) fn invoke_stream<R: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
    ) -> BlockingItems<R> {
        BlockingItems::new(
            self.client.invoke_stream(function, args),
            self.runtime.clone(),
        )
    }

    /// What the typed stubs of streaming functions with fallible items call ([`crate::__private`]).
    pub(crate) fn invoke_stream_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
    ) -> BlockingItems<R, E> {
        BlockingItems::new(
            self.client.invoke_stream_fallible(function, args),
            self.runtime.clone(),
        )
    }

    /// Casts `function`, blocking until the broker has taken it; see [`Client::cast`].
    pub fn cast(&self, function: &str, args: impl Serialize) -> Result<(), Error> {
        self.block_on(self.client.cast(function, args))
    }

    /// Casts `function` to run no sooner than `delay` from now; see [`Client::cast_after`].
    pub fn cast_after(
        &self,
        delay: std::time::Duration,
        function: &str,
        args: impl Serialize,
    ) -> Result<(), Error> {
        self.block_on(self.client.cast_after(delay, function, args))
    }

    /// Casts `function` to run no sooner than `at`; see [`Client::cast_at`].
    pub fn cast_at(
        &self,
        at: std::time::SystemTime,
        function: &str,
        args: impl Serialize,
    ) -> Result<(), Error> {
        self.block_on(self.client.cast_at(at, function, args))
    }

    /// Publishes an event, blocking until the broker has taken it; see [`Client::publish`].
    pub fn publish(&self, topic: &str, event: impl Serialize) -> Result<(), Error> {
        self.block_on(self.client.publish(topic, event))
    }

    /// What the typed stubs call ([`crate::__private`]).
    pub(crate) fn invoke<R: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<R, Error> {
        self.block_on(self.client.invoke(function, args, idempotency))
    }

    /// What the typed stubs of fallible functions call ([`crate::__private`]).
    pub(crate) fn invoke_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: &impl Serialize,
        idempotency: Idempotency,
    ) -> Result<R, Error<E>> {
        self.block_on(self.client.invoke_fallible(function, args, idempotency))
    }

    /// Calls a function whose own error type is `E`; see [`Client::call_fallible`].
    pub fn call_fallible<R: DeserializeOwned, E: DeserializeOwned>(
        &self,
        function: &str,
        args: impl Serialize,
    ) -> Result<R, Error<E>> {
        self.block_on(self.client.call_fallible(function, args))
    }

    /// This client, calling another service queue.
    #[must_use]
    pub fn with_queue(&self, queue: &str) -> BlockingClient {
        self.with(self.client.with_queue(queue))
    }

    /// This client, with another timeout.
    #[must_use]
    pub fn with_timeout(&self, timeout: Duration) -> BlockingClient {
        self.with(self.client.with_timeout(timeout))
    }

    /// This client, re-sending idempotent calls up to `retries` times.
    #[must_use]
    pub fn with_retries(&self, retries: u32) -> BlockingClient {
        self.with(self.client.with_retries(retries))
    }

    /// This client, encoding with another codec.
    #[must_use]
    pub fn with_codec(&self, codec: Codec) -> BlockingClient {
        self.with(self.client.with_codec(codec))
    }

    /// The async client inside, sharing this one's connection.
    pub fn as_async(&self) -> &Client {
        &self.client
    }

    /// Closes the connection.
    pub fn close(&self) {
        if outside_runtime::<()>().is_ok() {
            self.runtime.block_on(self.client.close());
        }
    }

    fn with(&self, client: Client) -> BlockingClient {
        BlockingClient {
            client,
            runtime: self.runtime.clone(),
        }
    }

    fn block_on<T, E>(
        &self,
        call: impl Future<Output = Result<T, Error<E>>>,
    ) -> Result<T, Error<E>> {
        outside_runtime()?;
        // The call routes replies while it waits: its reply wakes this thread straight
        // from lapin's I/O thread, not through the client's runtime thread.
        super::transport::amqp::leading(|| self.runtime.block_on(call))
    }
}

pub(crate) fn outside_runtime<E>() -> Result<(), Error<E>> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(Error::Config(
            "the blocking client cannot be used inside an async runtime: use guirpc_core::Client there".into(),
        )),
        Err(_) => Ok(()),
    }
}

/// The items of a streamed call on a [`BlockingClient`](crate::BlockingClient): an
/// `Iterator` of `Result<T, Error<E>>`, each `next` blocking until the item comes.
/// Dropping it cancels the call.
pub struct BlockingItems<T, E = Infallible> {
    stream: Option<ItemStream<T, E>>,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl<T, E> std::fmt::Debug for BlockingItems<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingItems")
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

impl<T, E> BlockingItems<T, E> {
    pub(crate) fn new(stream: ItemStream<T, E>, runtime: Arc<tokio::runtime::Runtime>) -> Self {
        BlockingItems {
            stream: Some(stream),
            runtime,
        }
    }
}

impl<T: DeserializeOwned, E> Iterator for BlockingItems<T, E> {
    type Item = Result<T, Error<E>>;

    fn next(&mut self) -> Option<Self::Item> {
        let stream = self.stream.as_mut()?;
        if let Err(err) = outside_runtime::<E>() {
            self.stream = None;
            return Some(Err(err));
        }
        self.runtime.block_on(futures_lite::StreamExt::next(stream))
    }
}

impl<T, E> Drop for BlockingItems<T, E> {
    fn drop(&mut self) {
        // Dropped inside the client's runtime, where a cancellation can be sent.
        let _guard = self.runtime.enter();
        self.stream.take();
    }
}
