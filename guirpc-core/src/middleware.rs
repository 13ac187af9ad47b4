//! Middleware: layers around the calls a server serves and the calls a client makes.
//!
//! Both paths are [`tower`] services, so any `tower::Layer` fits them, and so do the
//! layers a user writes with [`tower::layer::layer_fn`] or a struct of their own. On a
//! server, a layer wraps a [`Service`] from [`ServerRequest`] to [`Reply`]; on a client,
//! one from [`ClientRequest`] to [`ClientResponse`] (or an [`Error`]). A layer sees the
//! call's metadata, runs code before and after the call, can answer on its own without
//! calling further in, and sees the outcome.
//!
//! ```
//! use std::convert::Infallible;
//! use guirpc_core::middleware::{self, Reply, ServerRequest, ServerService};
//! use guirpc_core::{ErrorCode, Server};
//! use tower::{service_fn, ServiceExt};
//!
//! // Refuses callers whose request lacks an `x-api-key` header; lets the rest through.
//! let authorize = tower::layer::layer_fn(|inner: ServerService| {
//!     service_fn(move |request: ServerRequest| {
//!         let inner = inner.clone();
//!         async move {
//!             if request.header("x-api-key").is_none() {
//!                 let refusal = Reply::error(request.codec, ErrorCode::BadRequest, "no API key");
//!                 return Ok::<_, Infallible>(refusal);
//!             }
//!             inner.oneshot(request).await
//!         }
//!     })
//! });
//! let builder = Server::builder().queue("calculator").layer(authorize);
//! ```
//!
//! Layers run in the order they are added: the first one added is the outermost. The
//! built-in ones are layers too: every server and client starts with its tracing layer
//! (spans, trace context), then its metrics layer when metrics are on, then the user's.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use lapin::types::{FieldTable, ShortString};
use tower::ServiceExt;
pub use tower::util::BoxCloneSyncService;
pub use tower::{Layer, Service};

use crate::codec::Codec;
use crate::error::Error;
pub use crate::message::{CallKind, ClientRequest, ClientResponse, OUTCOME_OK, Reply};

/// A request as the server's layers see it.
#[derive(Debug)]
#[non_exhaustive]
pub struct ServerRequest {
    /// The function called (empty when the request names none: it is refused).
    pub function: String,
    /// The queue it came from.
    pub queue: Arc<str>,
    /// The caller's correlation ID.
    pub correlation_id: Option<ShortString>,
    /// The request's headers (none, from a guirpc client, unless a layer added some or
    /// the call is traced; a version 1 request's carry its function and deadline).
    pub headers: FieldTable,
    /// The version of the wire protocol the request is written in: 2 from guirpc clients
    /// of this version, 1 from older ones (`docs/PROTOCOL.md`).
    pub version: u8,
    /// When the caller stops waiting for the reply.
    pub deadline: Option<SystemTime>,
    /// Whether the broker delivered this request before (it may have run).
    pub redelivered: bool,
    /// The codec of the arguments, and of the reply.
    pub codec: Codec,
    /// The encoded arguments.
    pub body: Vec<u8>,
    /// Who sent it, as the broker verified it (its `user_id`).
    pub caller: crate::Caller,
    /// Why the request is refused before it is dispatched (an unsupported content type).
    pub(crate) unreadable: Option<String>,
    /// How a guirpc 0.1 request's body is written: read into JSON arguments as it is
    /// dispatched.
    pub(crate) legacy: Option<crate::protocol::v01::Form>,
    /// For an event: the `#[subscribe]` function it goes to.
    pub(crate) subscriber: Option<&'static crate::registry::Subscriber>,
    /// The caller's initial credit, when it asks for a stream.
    pub(crate) credit: Option<u32>,
    /// Where a streaming function's items go (set by the transport).
    pub(crate) items: Option<crate::stream::ItemSink>,
}

impl ServerRequest {
    /// Whether this is an event for a `#[subscribe]` function (`function` is its name).
    pub fn is_event(&self) -> bool {
        self.subscriber.is_some()
    }

    /// Whether the caller asked for the result as a stream of items.
    pub fn wants_stream(&self) -> bool {
        self.credit.is_some()
    }
}

impl ServerRequest {
    /// A header's value, as text, when it is a string.
    pub fn header(&self, name: &str) -> Option<Cow<'_, str>> {
        crate::message::header_str(&self.headers, name)
    }
}

/// The service a server's layers wrap.
pub type ServerService = Pipeline<ServerRequest, Reply, Infallible>;

/// The service a client's layers wrap.
pub type ClientService = Pipeline<ClientRequest, ClientResponse, Error>;

/// A future as the pipelines' services return it.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The rest of a pipeline, as a layer holds it ([`ServerService`], [`ClientService`]): a
/// [`Service`] that is cheap to clone, like tower's [`BoxCloneSyncService`], which boxes
/// a user's layer. guirpc's own layers (tracing, metrics, the transports) are always ready
/// and called through a shared reference: cloning one allocates nothing, and its future is
/// boxed once, not again by every box around it.
pub struct Pipeline<Req, Res, Err>(Node<Req, Res, Err>);

enum Node<Req, Res, Err> {
    Own(Arc<dyn OwnService<Req, Res, Err>>),
    Boxed(BoxCloneSyncService<Req, Res, Err>),
}

/// One of guirpc's own services: ready at any time, called through a shared reference.
pub(crate) trait OwnService<Req, Res, Err>: Send + Sync + 'static {
    fn call(&self, request: Req) -> BoxFuture<Result<Res, Err>>;
}

impl<Req, Res, Err> Pipeline<Req, Res, Err>
where
    Req: Send + 'static,
    Res: Send + 'static,
    Err: Send + 'static,
{
    /// Boxes `service`.
    pub fn new<S>(service: S) -> Self
    where
        S: Service<Req, Response = Res, Error = Err> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Pipeline(Node::Boxed(BoxCloneSyncService::new(service)))
    }

    /// One of guirpc's own services.
    pub(crate) fn own(service: impl OwnService<Req, Res, Err>) -> Self {
        Pipeline(Node::Own(Arc::new(service)))
    }

    /// Calls the service once, as [`ServiceExt::oneshot`] on a clone does: a user's layer
    /// is cloned and waited ready in the future; guirpc's own service is called at once.
    pub(crate) fn call_once(&self, request: Req) -> BoxFuture<Result<Res, Err>> {
        match &self.0 {
            Node::Own(service) => service.call(request),
            Node::Boxed(service) => Box::pin(service.clone().oneshot(request)),
        }
    }
}

impl<Req, Res, Err> Clone for Pipeline<Req, Res, Err> {
    fn clone(&self) -> Self {
        Pipeline(match &self.0 {
            Node::Own(service) => Node::Own(service.clone()),
            Node::Boxed(service) => Node::Boxed(service.clone()),
        })
    }
}

impl<Req: 'static, Res: 'static, Err: 'static> Service<Req> for Pipeline<Req, Res, Err> {
    type Response = Res;
    type Error = Err;
    type Future = BoxFuture<Result<Res, Err>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Err>> {
        match &mut self.0 {
            Node::Own(_) => Poll::Ready(Ok(())),
            Node::Boxed(service) => service.poll_ready(cx),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match &mut self.0 {
            Node::Own(service) => service.call(request),
            Node::Boxed(service) => service.call(request),
        }
    }
}

impl<Req, Res, Err> fmt::Debug for Pipeline<Req, Res, Err> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            Node::Own(_) => "Pipeline(guirpc's own)",
            Node::Boxed(_) => "Pipeline(boxed)",
        })
    }
}

/// Makes one of guirpc's own services a [`Service`] too (for a user who stacks its layer
/// in a tower stack of their own): always ready, its call the shared one.
macro_rules! service_of_own {
    ($service:ty, $request:ty, $response:ty, $error:ty) => {
        impl $crate::middleware::Service<$request> for $service {
            type Response = $response;
            type Error = $error;
            type Future = $crate::middleware::BoxFuture<Result<$response, $error>>;

            fn poll_ready(
                &mut self,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), $error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: $request) -> Self::Future {
                $crate::middleware::OwnService::call(self, request)
            }
        }
    };
}
pub(crate) use service_of_own;

/// The outcome of a client call, for spans and metrics: `ok`, the server's error code, or
/// what went wrong on the way (`timeout`, `no_route`, `connection`, `blocked`, ...).
pub fn client_outcome(result: &Result<ClientResponse, Error>) -> Cow<'static, str> {
    match result {
        Ok(response) => response.outcome(),
        Err(err) => err.outcome(),
    }
}

/// Turns layers into one function from the innermost service to the wrapped one.
pub(crate) type Wrap<S> = Arc<dyn Fn(S) -> S + Send + Sync>;

/// The layers of a builder, outermost first.
#[derive(Clone)]
pub(crate) struct Layers<S>(Vec<Wrap<S>>);

impl<S> Default for Layers<S> {
    fn default() -> Self {
        Layers(Vec::new())
    }
}

impl<S> fmt::Debug for Layers<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} layer(s)", self.0.len())
    }
}

impl<S> Layers<S> {
    pub(crate) fn push(&mut self, wrap: Wrap<S>) {
        self.0.push(wrap);
    }

    /// `inner` inside every layer, the first pushed outermost.
    pub(crate) fn wrap(&self, inner: S) -> S {
        self.0
            .iter()
            .rev()
            .fold(inner, |service, wrap| wrap(service))
    }
}

/// Boxes a user's server layer.
pub(crate) fn server_wrap<L>(layer: L) -> Wrap<ServerService>
where
    L: Layer<ServerService> + Send + Sync + 'static,
    L::Service: Service<ServerRequest, Response = Reply, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<ServerRequest>>::Future: Send + 'static,
{
    Arc::new(move |inner| ServerService::new(layer.layer(inner)))
}

/// Boxes a user's client layer.
pub(crate) fn client_wrap<L>(layer: L) -> Wrap<ClientService>
where
    L: Layer<ClientService> + Send + Sync + 'static,
    L::Service: Service<ClientRequest, Response = ClientResponse, Error = Error>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as Service<ClientRequest>>::Future: Send + 'static,
{
    Arc::new(move |inner| ClientService::new(layer.layer(inner)))
}

#[cfg(test)]
mod tests {
    use std::future::{Ready, ready};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A user's service: ready on every second poll, and failing a call it was not
    /// readied for.
    #[derive(Clone, Default)]
    struct ReadyLate {
        polls: Arc<AtomicUsize>,
        ready: bool,
    }

    impl Service<u32> for ReadyLate {
        type Response = u32;
        type Error = Infallible;
        type Future = Ready<Result<u32, Infallible>>;

        fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            if self.polls.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.ready = true;
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, n: u32) -> Self::Future {
            assert!(
                std::mem::take(&mut self.ready),
                "called before it was ready"
            );
            ready(Ok(n + 1))
        }
    }

    /// guirpc's own service around it, as the tracing layer wraps a user's layers.
    struct Around(Pipeline<u32, u32, Infallible>);

    impl OwnService<u32, u32, Infallible> for Around {
        fn call(&self, n: u32) -> BoxFuture<Result<u32, Infallible>> {
            self.0.call_once(n * 10)
        }
    }

    #[tokio::test]
    async fn a_users_service_inside_guirpcs_own_is_called_once_ready() {
        let user = ReadyLate::default();
        let polls = user.polls.clone();
        let pipeline = Pipeline::own(Around(Pipeline::new(user)));
        assert_eq!(pipeline.call_once(4).await, Ok(41));
        // As a user's layer outside calls it: cloned, readied, called.
        assert_eq!(pipeline.clone().oneshot(5).await, Ok(51));
        assert_eq!(pipeline.call_once(6).await, Ok(61));
        assert_eq!(polls.load(Ordering::SeqCst), 6, "two polls per call");
    }
}
