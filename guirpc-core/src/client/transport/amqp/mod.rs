//! The client's transport over RabbitMQ.
//!
//! One connection and one channel (a *link*) carry every call. Replies come back over
//! RabbitMQ's direct reply-to, consumed by one router that hands each reply to the call
//! waiting for its correlation ID, so any number of calls can be in flight at once on one
//! client: a task, or a blocking call while it waits, on its own thread ([`replies`]).
//! Requests are published `mandatory`: a request no queue is bound for comes back
//! from the broker, and its call fails within milliseconds with [`Error::NoRoute`] instead
//! of running into its timeout.
//!
//! When the link fails, every call waiting on it fails at once with a retriable
//! [`Error::Connection`] (its reply can no longer arrive: the reply-to address died with
//! the channel), and a supervisor task reconnects with backoff. A call made while there is
//! no link has not been sent: it waits for the next link until its timeout, and fails with
//! [`Error::Connection`] only if none comes in time.

mod calls;
mod casts;
mod link;
mod pending;
mod replies;
mod subscribe;

pub(crate) use replies::leading;
pub use subscribe::{Event, Subscription};

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use lapin::types::ShortString;
use tokio::sync::Notify;

use crate::codec;
use crate::error::Error;
use crate::link::{Blocked, Brokers};
use crate::middleware::{BoxFuture, CallKind, ClientRequest, ClientResponse, OwnService};
use crate::sync::RwLocked;
use link::Link;

/// Connects, and starts the supervisor that routes replies and reconnects.
pub(crate) async fn connect(
    brokers: Brokers,
    exchange: &str,
    events_exchange: &str,
    protocol: crate::protocol::v01::Protocol,
    metrics: Option<crate::Metrics>,
) -> Result<Handle, Error> {
    let shared = Arc::new(Shared {
        protocol,
        masked_uri: brokers.masked(),
        exchange: exchange.into(),
        events_exchange: events_exchange.into(),
        link: RwLock::new(None),
        blocked: Arc::default(),
        linked: Notify::new(),
        next_id: AtomicU64::new(1),
    });
    let target = Target { brokers, metrics };
    let (link, ended) = Link::open(&target, &shared).await?;
    let link = Arc::new(link);
    *shared.link.write_locked() = Some(link.clone());
    let supervisor = tokio::spawn(link::supervise(target, shared.clone(), link, ended));
    Ok(Handle { shared, supervisor })
}

/// A client's hold on its link: closed, and its supervisor stopped, when the last clone
/// of the client goes.
#[derive(Debug)]
pub(crate) struct Handle {
    shared: Arc<Shared>,
    supervisor: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// The service that carries the client's calls.
    pub(crate) fn calls(&self) -> Calls {
        Calls(self.shared.clone())
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.shared.link().is_some()
    }

    pub(crate) fn blocked(&self) -> Option<String> {
        self.shared.blocked()
    }

    /// Waits until there is a link, at most `limit`; whether there is.
    pub(crate) async fn wait_connected(&self, limit: Duration) -> bool {
        self.shared.wait_linked(limit).await
    }

    /// Closes the connection; calls still waiting fail with [`Error::Connection`].
    pub(crate) async fn close(&self) {
        if let Some(link) = self.detach() {
            link.close().await;
        }
    }

    /// Stops reconnecting, and takes the live link away to be closed.
    fn detach(&self) -> Option<Arc<Link>> {
        self.supervisor.abort();
        self.shared.take_link()
    }

    /// Subscribes to the events whose topic matches `pattern`.
    pub(crate) async fn subscribe(&self, pattern: &str) -> Result<Subscription, Error> {
        subscribe::subscribe(&self.shared, pattern).await
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // lapin keeps a connection open until it is closed: close it off the caller's path.
        if let Some(link) = self.detach()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { link.close().await });
        }
    }
}

/// The innermost service of a client on the broker: one call, one round trip (and as many
/// more as its retries allow).
pub(crate) struct Calls(Arc<Shared>);

impl OwnService<ClientRequest, ClientResponse, Error> for Calls {
    fn call(&self, request: ClientRequest) -> BoxFuture<Result<ClientResponse, Error>> {
        let shared = self.0.clone();
        Box::pin(async move {
            let waiter = shared.clone();
            let wait = move |limit| {
                let waiter = waiter.clone();
                async move { waiter.wait_linked(limit).await }
            };
            let response = {
                let (shared, request) = (&*shared, &request);
                match request.kind {
                    CallKind::Call => {
                        super::with_retries(request, wait, || calls::round_trip(shared, request))
                            .await
                    }
                    CallKind::Stream => calls::open_stream(shared, request).await,
                    _ => casts::cast(shared, request).await,
                }
            };
            // Sent (every retry too) or never to be: lapin copied it into its frames.
            codec::buffers::give_back(request.body);
            response
        })
    }
}

fn no_route(shared: &Shared, request: &ClientRequest) -> Error {
    Error::NoRoute {
        function: request.function.clone(),
        queue: request.queue.to_string(),
        exchange: shared.exchange.to_string(),
    }
}

fn timed_out(shared: &Shared, request: &ClientRequest) -> Error {
    match shared.blocked() {
        Some(reason) => Error::Blocked {
            function: request.function.clone(),
            reason,
        },
        None => request.timed_out(),
    }
}

fn not_connected(shared: &Shared, request: &ClientRequest) -> Error {
    Error::connection(
        &shared.masked_uri,
        format!(
            "not connected to the broker for the whole timeout of {:?} (reconnecting); the call was not sent",
            request.timeout
        ),
    )
}

/// Where a client connects, and where it counts moving to another node.
#[derive(Debug)]
struct Target {
    brokers: Brokers,
    metrics: Option<crate::Metrics>,
}

/// What the client's calls and its supervisor share.
#[derive(Debug)]
struct Shared {
    /// What calls are written in: guirpc's protocol, or guirpc 0.1's.
    protocol: crate::protocol::v01::Protocol,
    masked_uri: String,
    exchange: ShortString,
    events_exchange: ShortString,
    /// The live link; `None` while reconnecting.
    link: RwLock<Option<Arc<Link>>>,
    /// Whether, and why, the broker blocks this connection's publishes.
    blocked: Arc<Blocked>,
    /// Woken when a new link is up.
    linked: Notify,
    next_id: AtomicU64,
}

impl Shared {
    /// Waits until there is a link, at most `limit`; whether there is.
    async fn wait_linked(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            loop {
                let linked = self.linked.notified();
                if self.link().is_some() {
                    return;
                }
                linked.await;
            }
        })
        .await
        .is_ok()
    }

    fn link(&self) -> Option<Arc<Link>> {
        self.link.read_locked().clone()
    }

    fn take_link(&self) -> Option<Arc<Link>> {
        self.link.write_locked().take()
    }

    fn blocked(&self) -> Option<String> {
        self.blocked.reason()
    }
}
