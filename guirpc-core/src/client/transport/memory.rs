//! The in-memory transport: a client's calls served in this process by a server's
//! pipeline, through the same codec, properties, dispatch and layers as over RabbitMQ
//! (its public front is [`crate::testing`]).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::with_retries;
use crate::error::Error;
use crate::middleware::{
    BoxFuture, CallKind, ClientRequest, ClientResponse, OwnService, Reply, ServerRequest,
    ServerService,
};
use crate::protocol;
use crate::server::{pipeline, read_request};
use crate::stream::{self, Control, ItemSink, Last, Outlet, Piece, Stopped};

/// The innermost service of an in-memory client.
#[derive(Clone)]
pub(crate) struct InMemory {
    server: ServerService,
    queue: Arc<str>,
    next_id: Arc<AtomicU64>,
    /// The user its calls come from, as if a broker had verified it.
    user: Option<lapin::types::ShortString>,
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
    /// Calls to `queue`, served by `server`.
    pub(crate) fn new(
        server: ServerService,
        queue: Arc<str>,
        user: Option<lapin::types::ShortString>,
    ) -> InMemory {
        InMemory {
            server,
            queue,
            user,
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

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

    /// A cast is taken at once and served in the background, as a server would; a
    /// scheduled one when its time comes. (It runs once: retries wait on the broker.)
    fn cast(&self, request: ClientRequest) -> Result<ClientResponse, Error> {
        self.route(&request)?;
        let wait = match request.not_before {
            Some(at) => {
                let wait = at
                    .duration_since(std::time::SystemTime::now())
                    .unwrap_or_default();
                crate::delay::millis(wait)
                    .map_err(|why| Error::Config(format!("cast `{}`: {why}", request.function)))?;
                wait
            }
            None => std::time::Duration::ZERO,
        };
        let properties = self.identified(protocol::cast_properties(
            &request.function,
            request.codec,
            &request.headers,
        ));
        let (served, _) = read_request(&properties, self.queue.clone(), false, request.body, None);
        let server = self.server.clone();
        tokio::spawn(async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
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

    /// `properties` with the `user_id` of this client's user, when it has one.
    fn identified(&self, properties: lapin::BasicProperties) -> lapin::BasicProperties {
        match &self.user {
            Some(user) => properties.with_user_id(user.clone()),
            None => properties,
        }
    }

    /// The request as the broker would deliver it: the same properties, read the same way.
    fn deliver(&self, request: &ClientRequest) -> ServerRequest {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let properties = self.identified(protocol::request_properties(
            &request.function,
            request.codec,
            itoa::Buffer::new().format(id).into(),
            request.timeout,
            &request.headers,
        ));
        read_request(
            &properties,
            self.queue.clone(),
            false,
            request.body.clone(),
            None,
        )
        .0
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
