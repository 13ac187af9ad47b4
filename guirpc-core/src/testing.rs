//! Tests without a broker: a [`Client`] whose calls are served in this process, by the
//! program's own `#[rpc]` functions, through the same codec, dispatch and layers as over
//! RabbitMQ.
//!
//! ```standalone_crate
//! use guirpc_core::rpc;
//!
//! /// Adds two numbers.
//! #[rpc]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), guirpc_core::Error> {
//! let client = guirpc_core::testing::client();
//! assert_eq!(add::call(&client, 1, 2).await?, 3);
//! # Ok(()) }
//! ```
//!
//! Arguments and replies are encoded and decoded exactly as on the wire, errors arrive as
//! the same [`Error`] variants (an unknown function is a remote `not_found`, a slow one a
//! [`Error::Timeout`], a call to another queue [`Error::NoRoute`]), and the server's and
//! the client's layers run around each call. Build the server side with
//! [`ServerBuilder::in_memory`](crate::ServerBuilder::in_memory) to give it layers,
//! metrics or a registry of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::{Transport, with_retries};
use crate::error::Error;
use crate::middleware::{
    BoxFuture, CallKind, ClientRequest, ClientResponse, ClientService, OwnService, Reply,
    ServerRequest, ServerService,
};
use crate::protocol;
use crate::server::pipeline;
use crate::server::{ServeError, ServerBuilder};
use crate::stream::{self, Control, ItemSink, Last, Outlet, Piece, Stopped};
use crate::{Client, ClientBuilder, Server};

/// A client of every `#[rpc]` function of this program, served in memory, with the
/// default settings. Panics if two functions share a name (as a server would refuse to
/// start).
pub fn client() -> Client {
    match Server::builder().in_memory() {
        Ok(server) => server.client(),
        Err(err) => panic!("cannot serve this program's functions in memory: {err}"),
    }
}

impl ServerBuilder {
    /// The server's functions, layers and metrics, serving in this process without a
    /// broker: for tests (see [`crate::testing`]). Pipe functions are not served in memory.
    #[allow(clippy::result_large_err)]
    pub fn in_memory(self) -> Result<InMemoryServer, ServeError> {
        let (queue, service) = self.in_memory_parts()?;
        Ok(InMemoryServer { service, queue })
    }
}

/// A server's pipeline, serving in memory: the functions, layers and metrics of the
/// [`ServerBuilder`] it was built from.
#[derive(Clone)]
pub struct InMemoryServer {
    pub(crate) service: ServerService,
    pub(crate) queue: Arc<str>,
}

impl std::fmt::Debug for InMemoryServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryServer")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl InMemoryServer {
    /// A client of this server, with the default client settings.
    pub fn client(&self) -> Client {
        self.client_with(Client::builder())
    }

    /// A client of this server, with `builder`'s settings and layers (its URI is unused).
    pub fn client_with(&self, builder: ClientBuilder) -> Client {
        let builder = builder.queue(&*self.queue);
        let transport = InMemory {
            server: self.service.clone(),
            queue: self.queue.clone(),
            next_id: Arc::new(AtomicU64::new(1)),
        };
        builder.build(ClientService::own(transport), Transport::Memory)
    }
}

/// The innermost service of an in-memory client.
#[derive(Clone)]
struct InMemory {
    server: ServerService,
    queue: Arc<str>,
    next_id: Arc<AtomicU64>,
}

impl OwnService<ClientRequest, ClientResponse, Error> for InMemory {
    fn call(&self, request: ClientRequest) -> BoxFuture<Result<ClientResponse, Error>> {
        let this = self.clone();
        Box::pin(async move {
            let no_wait = |_| async { true };
            match request.kind {
                CallKind::Cast => return this.cast(request),
                // No subscriber lives in memory: the event goes nowhere, as on a broker
                // where no one subscribes.
                CallKind::Publish => {
                    return Ok(ClientResponse {
                        ok: true,
                        codec: request.codec,
                        body: Vec::new(),
                        items: None,
                    });
                }
                CallKind::Stream => return this.open_stream(request).await,
                _ => {}
            }
            let (this, request) = (&this, &request);
            with_retries(request, no_wait, || this.round_trip(request)).await
        })
    }
}

impl InMemory {
    fn route(&self, request: &ClientRequest) -> Result<(), Error> {
        if request.queue.as_str() == &*self.queue {
            return Ok(());
        }
        Err(Error::NoRoute {
            function: request.function.clone(),
            queue: request.queue.to_string(),
            exchange: String::new(),
        })
    }

    /// A cast is taken at once and served in the background, as a server would.
    fn cast(&self, request: ClientRequest) -> Result<ClientResponse, Error> {
        self.route(&request)?;
        let properties =
            protocol::cast_properties(&request.function, request.codec, &request.headers);
        let (served, _) = ServerRequest::read(&properties, self.queue.clone(), false, request.body);
        let server = self.server.clone();
        tokio::spawn(async move {
            let reply = pipeline::run(&server, served).await;
            if !reply.is_ok() {
                let message = crate::envelope::Summary(request.codec, reply.body());
                tracing::warn!(
                    function = request.function,
                    "one-way call failed: {message}"
                );
            }
        });
        Ok(ClientResponse {
            ok: true,
            codec: request.codec,
            body: Vec::new(),
            items: None,
        })
    }

    /// The request as the broker would deliver it: the same properties, read the same way.
    fn deliver(&self, request: &ClientRequest) -> ServerRequest {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let properties = protocol::request_properties(
            &request.function,
            request.codec,
            itoa::Buffer::new().format(id).into(),
            request.timeout,
            &request.headers,
        );
        ServerRequest::read(&properties, self.queue.clone(), false, request.body.clone()).0
    }

    /// A stream is served in the background, its items handed over through a channel as
    /// long as the credit window: the function waits while the caller does not take them.
    async fn open_stream(&self, request: ClientRequest) -> Result<ClientResponse, Error> {
        self.route(&request)?;
        let mut served = self.deliver(&request);
        let window = served.credit.unwrap_or(stream::DEFAULT_WINDOW);
        let (tx, rx) = stream::channel(window);
        let (sink, progress) = ItemSink::new(MemoryOutlet(tx.clone()));
        served.items = Some(sink);
        let codec = served.codec;
        let server = self.server.clone();
        let serving = tokio::spawn(async move {
            let reply = pipeline::run(&server, served).await;
            let last = match progress.last() {
                Last::End { count } if reply.is_ok() => Piece::End { count },
                Last::Nothing(_) => return,
                _ => Piece::Reply {
                    ok: reply.is_ok(),
                    codec,
                    body: reply.into_body(),
                },
            };
            let _ = tx.send(last).await;
        });
        let control = Box::new(Serving {
            task: serving.abort_handle(),
            open: true,
        });
        let expired = Box::pin(tokio::time::sleep(request.timeout));
        let cut = Arc::new(|why: String| Error::connection("memory", why));
        stream::open(&request, rx, control, expired, cut, || {
            unreachable!("routed above")
        })
        .await
    }

    async fn round_trip(&self, request: &ClientRequest) -> Result<ClientResponse, Error> {
        self.route(request)?;
        let served = self.deliver(request);
        let codec = served.codec;
        match tokio::time::timeout(request.timeout, pipeline::run(&self.server, served)).await {
            Ok(reply) => Ok(ClientResponse {
                ok: reply.is_ok(),
                codec,
                body: reply.into_body(),
                items: None,
            }),
            Err(_) => Err(request.timed_out()),
        }
    }
}

/// Hands a stream's items to the in-memory caller.
struct MemoryOutlet(tokio::sync::mpsc::Sender<Piece>);

impl Outlet for MemoryOutlet {
    fn send(
        &mut self,
        seq: u64,
        item: Reply,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), Stopped>> + Send + '_>> {
        Box::pin(async move {
            let item = Piece::Item {
                seq,
                body: item.into_body(),
                credit_to: None,
            };
            self.0.send(item).await.map_err(|_| Stopped::Cancelled)
        })
    }

    fn stopped(&self) -> std::pin::Pin<Box<dyn Future<Output = Stopped> + Send + 'static>> {
        let items = self.0.clone();
        Box::pin(async move {
            items.closed().await;
            Stopped::Cancelled
        })
    }
}

/// The in-memory stream's function, cancelled when its caller drops the stream.
struct Serving {
    task: tokio::task::AbortHandle,
    open: bool,
}

impl Control for Serving {
    fn consumed(&mut self, _: Option<(lapin::types::ShortString, lapin::types::ShortString)>) {}

    fn finished(&mut self) {
        self.open = false;
    }

    fn restarted(&mut self, _: Option<(lapin::types::ShortString, lapin::types::ShortString)>) {}
}

impl Drop for Serving {
    fn drop(&mut self) {
        if self.open {
            self.task.abort();
        }
    }
}
