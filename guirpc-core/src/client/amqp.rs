//! The client's transport over RabbitMQ.
//!
//! One connection and one channel (a *link*) carry every call. Replies come back over
//! RabbitMQ's direct reply-to, consumed by one router that hands each reply to the call
//! waiting for its correlation ID, so any number of calls can be in flight at once on one
//! client: a task, or a blocking call while it waits, on its own thread ([`Replies`]).
//! Requests are published `mandatory`: a request no queue is bound for comes back
//! from the broker, and its call fails within milliseconds with [`Error::NoRoute`] instead
//! of running into its timeout.
//!
//! When the link fails, every call waiting on it fails at once with a retriable
//! [`Error::Connection`] (its reply can no longer arrive: the reply-to address died with
//! the channel), and a supervisor task reconnects with backoff. A call made while there is
//! no link has not been sent: it waits for the next link until its timeout, and fails with
//! [`Error::Connection`] only if none comes in time.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures_lite::StreamExt;
use lapin::message::Delivery;
use lapin::options::ConfirmSelectOptions;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Confirmation, Connection};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::codec::{self, Codec};
use crate::error::Error;
use crate::link::{self, Backoff, Blocked, Brokers};
use crate::middleware::{BoxFuture, CallKind, ClientRequest, ClientResponse, OwnService};
use crate::protocol;
use crate::stream::{self, Piece};

/// Connects, and starts the supervisor that routes replies and reconnects.
pub(super) async fn connect(
    brokers: Brokers,
    exchange: &str,
    events_exchange: &str,
    metrics: Option<crate::Metrics>,
) -> Result<(Arc<Shared>, tokio::task::JoinHandle<()>), Error> {
    let shared = Arc::new(Shared {
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
    *shared.link.write().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
    let supervisor = tokio::spawn(supervise(target, shared.clone(), link, ended));
    Ok((shared, supervisor))
}

/// The innermost service of a client on the broker: one call, one round trip (and as many
/// more as its retries allow).
pub(super) struct Transport(pub(super) Arc<Shared>);

impl OwnService<ClientRequest, ClientResponse, Error> for Transport {
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
                        super::with_retries(request, wait, || round_trip(shared, request)).await
                    }
                    CallKind::Stream => open_stream(shared, request).await,
                    _ => cast(shared, request).await,
                }
            };
            // Sent (every retry too) or never to be: lapin copied it into its frames.
            codec::buffers::give_back(request.body);
            response
        })
    }
}

impl Shared {
    /// Waits until there is a link, at most `limit`; whether there is.
    pub(super) async fn wait_linked(&self, limit: Duration) -> bool {
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
}

/// Publishes a request once there is a link (waiting for one until the call's deadline),
/// its reply awaited as `register` arranges: what `register` returned, and the
/// guard that forgets the call however it ends.
async fn send_request<R>(
    shared: &Shared,
    request: &ClientRequest,
    deadline: Instant,
    register: impl Fn(&Pending, u64) -> Option<(R, bool)>,
) -> Result<(Waiting, R), Error> {
    let function = request.function.as_str();
    // A call that has not been sent waits for a connection until its deadline; only a
    // call in flight when its connection drops fails at once.
    loop {
        let linked = shared.linked.notified();
        if let Some(link) = shared.link() {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            if let Some((reply, leading)) = register(link.pending(), id) {
                let waiting = Waiting {
                    link,
                    id,
                    answered: false,
                    leading,
                };
                let properties = protocol::request_properties(
                    function,
                    request.codec,
                    itoa::Buffer::new().format(id).into(),
                    request.timeout,
                    &request.headers,
                );
                let publish = waiting.link.channel.basic_publish(
                    shared.exchange.clone(),
                    request.queue.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &request.body,
                    properties,
                );
                // Polled once, a publish has queued its frames (or found the channel
                // closed): the call waits for its reply, not for the frames to be written,
                // which would cost a wake-up of its task (its thread, for a blocking call)
                // per call. Frames that a failing connection never writes fail the call
                // with the link, like a reply that never comes.
                match futures_lite::future::poll_once(publish).await {
                    // Not sent: the link is dying; wait for the next.
                    Some(Err(err)) => debug!(function, "the request was not sent: {err}"),
                    _ => return Ok((waiting, reply)),
                }
            }
        }
        // A timer only while there is no link to send on.
        tokio::select! {
            () = linked => {}
            () = tokio::time::sleep_until(deadline) => return Err(not_connected(shared, request)),
        }
    }
}

async fn round_trip(shared: &Shared, request: &ClientRequest) -> Result<ClientResponse, Error> {
    // One deadline for the whole call, the wait for a connection included. A call waiting
    // for its reply is timed out by its link's returns tick (in the table of pending calls),
    // not by a timer of its own: registering one with tokio's timer and removing it again
    // cost about 2% of the rate with one call in flight.
    let deadline = Instant::now() + request.timeout;
    let lead = LEADS.get();
    let (mut waiting, mut reply) = send_request(shared, request, deadline, |pending, id| {
        pending.insert(id, deadline, lead)
    })
    .await?;
    let answer = if waiting.leading {
        waiting.link.replies.lead(&mut reply).await
    } else {
        reply.await
    };
    // Whatever came, the router, the returns tick or the link's end took the entry out.
    waiting.answered = true;
    match answer {
        Ok(Answer::Reply(delivery)) => {
            let content_type = delivery.properties.content_type().as_ref();
            let codec = Codec::from_content_type(content_type.map(ShortString::as_str))
                .unwrap_or(request.codec);
            Ok(ClientResponse {
                ok: protocol::reply_is_ok(&delivery.properties),
                codec,
                body: delivery.data,
                items: None,
            })
        }
        Ok(Answer::Returned) => Err(no_route(shared, request)),
        Ok(Answer::Expired) => Err(timed_out(shared, request)),
        Err(_) => Err(Error::connection(
            &shared.masked_uri,
            "the connection to the broker was lost before the reply arrived (the call may have run)",
        )),
    }
}

/// Sends a call asking for a stream, and waits for its first message.
async fn open_stream(shared: &Shared, request: &ClientRequest) -> Result<ClientResponse, Error> {
    let window = request
        .headers
        .inner()
        .get(protocol::HEADER_STREAM)
        .and_then(protocol::value_as_u64)
        .map_or(stream::DEFAULT_WINDOW, |w| {
            u32::try_from(w)
                .unwrap_or(protocol::MAX_CREDIT)
                .clamp(1, protocol::MAX_CREDIT)
        });
    // The deadline bounds the whole stream: its timer goes on with the items.
    let deadline = Instant::now() + request.timeout;
    let (tx, rx) = stream::channel(window);
    let (waiting, ()) = send_request(shared, request, deadline, |pending, id| {
        pending.insert_stream(id, tx.clone()).map(|()| ((), false))
    })
    .await?;
    let expired = Box::pin(tokio::time::sleep_until(deadline));
    drop(tx);
    let credit = Credit {
        waiting,
        to: None,
        window: u64::from(window),
        granted: u64::from(window),
        consumed: 0,
        open: true,
        runtime: tokio::runtime::Handle::current(),
    };
    let uri = shared.masked_uri.clone();
    let cut = Arc::new(move |why: String| Error::connection(&uri, why));
    stream::open(request, rx, Box::new(credit), expired, cut, || {
        no_route(shared, request)
    })
    .await
}

fn no_route(shared: &Shared, request: &ClientRequest) -> Error {
    Error::NoRoute {
        function: request.function.clone(),
        queue: request.queue.to_string(),
        exchange: shared.exchange.to_string(),
    }
}

/// A stream's credit: granted back to the server as the caller's code consumes items,
/// half a window at a time; a cancellation when the stream is dropped before its end.
struct Credit {
    /// Forgets the stream's entry when the stream goes.
    waiting: Waiting,
    /// The credit queue and the server's ID of the stream, from the first item.
    to: Option<(ShortString, ShortString)>,
    window: u64,
    granted: u64,
    consumed: u64,
    /// Whether the stream is still running (else nothing is due).
    open: bool,
    runtime: tokio::runtime::Handle,
}

impl Credit {
    fn send(&self, credit: Option<u32>) {
        if let Some((queue, id)) = self.to.clone() {
            let channel = self.waiting.link.channel.clone();
            self.runtime.spawn(send_credit(channel, queue, id, credit));
        }
    }
}

/// Grants a stream `credit` more items, or cancels it (`None`).
async fn send_credit(channel: Channel, queue: ShortString, id: ShortString, credit: Option<u32>) {
    let properties = protocol::credit_properties(&id, credit);
    if let Err(err) = channel
        .basic_publish(
            "".into(),
            queue,
            BasicPublishOptions::default(),
            &[],
            properties,
        )
        .await
    {
        debug!("cannot send a stream's credit: {err}");
    }
}

impl stream::Control for Credit {
    fn consumed(&mut self, credit_to: Option<(ShortString, ShortString)>) {
        if self.to.is_none() {
            self.to = credit_to;
        }
        self.consumed += 1;
        let outstanding = self.granted.saturating_sub(self.consumed);
        if outstanding <= self.window / 2 {
            let more = self.window - outstanding;
            self.granted += more;
            self.send(Some(u32::try_from(more).unwrap_or(u32::MAX)));
        }
    }

    fn finished(&mut self) {
        self.open = false;
    }

    fn restarted(&mut self, credit_to: Option<(ShortString, ShortString)>) {
        if credit_to.is_some() {
            self.to = credit_to;
        }
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        if self.open {
            self.send(None);
        }
    }
}

/// Publishes a cast, or an event, on the link's confirming channel and waits for the
/// broker to take it.
async fn cast(shared: &Shared, request: &ClientRequest) -> Result<ClientResponse, Error> {
    let function = request.function.as_str();
    let event = request.kind == CallKind::Publish;
    let what = if event { "event" } else { "cast" };
    let expired = tokio::time::sleep(request.timeout);
    tokio::pin!(expired);
    loop {
        let linked = shared.linked.notified();
        if let Some(link) = shared.link() {
            let publish = async {
                let channel = link.casts(shared).await?;
                // An event goes to the events exchange by its topic; no subscriber is no
                // error. A cast goes to its service queue, which must exist.
                let (properties, exchange, routing_key) = if event {
                    let properties = protocol::event_properties(request.codec, &request.headers);
                    (properties, shared.events_exchange.clone(), function.into())
                } else {
                    let properties =
                        protocol::cast_properties(function, request.codec, &request.headers);
                    (properties, shared.exchange.clone(), request.queue.clone())
                };
                channel
                    .basic_publish(
                        exchange,
                        routing_key,
                        BasicPublishOptions {
                            mandatory: !event,
                            ..Default::default()
                        },
                        &request.body,
                        properties,
                    )
                    .await?
                    .await
            };
            let confirmed = tokio::select! {
                confirmed = publish => confirmed,
                () = &mut expired => return Err(timed_out(shared, request)),
            };
            return match confirmed {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => Ok(ClientResponse {
                    ok: true,
                    codec: request.codec,
                    body: Vec::new(),
                    items: None,
                }),
                Ok(Confirmation::Ack(Some(_))) => Err(no_route(shared, request)),
                Ok(Confirmation::Nack(_)) => Err(Error::connection(
                    &shared.masked_uri,
                    format!(
                        "the broker refused the {what} `{function}` (nack): it may not have been stored"
                    ),
                )),
                // The link failed under it: whether the broker took it is unknown.
                Err(err) => Err(Error::connection(
                    &shared.masked_uri,
                    format!(
                        "the connection failed before the broker confirmed the {what} `{function}` (it may have been taken): {err}"
                    ),
                )),
            };
        }
        tokio::select! {
            () = linked => {}
            () = &mut expired => return Err(not_connected(shared, request)),
        }
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
pub(crate) struct Shared {
    pub(super) masked_uri: String,
    exchange: ShortString,
    pub(super) events_exchange: ShortString,
    /// The live link; `None` while reconnecting.
    link: RwLock<Option<Arc<Link>>>,
    /// Whether, and why, the broker blocks this connection's publishes.
    blocked: Arc<Blocked>,
    /// Woken when a new link is up.
    pub(super) linked: Notify,
    next_id: AtomicU64,
}

impl Shared {
    pub(super) fn link(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(super) fn take_link(&self) -> Option<Arc<Link>> {
        self.link.write().unwrap_or_else(|e| e.into_inner()).take()
    }

    pub(super) fn blocked(&self) -> Option<String> {
        self.blocked.reason()
    }
}

/// One connection, its channel, and the calls waiting for replies on it.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) connection: Connection,
    channel: Channel,
    /// Its reply consumer, and the calls waiting for replies.
    replies: Arc<Replies>,
    /// The channel casts are published on, in publisher-confirm mode; opened by the first
    /// cast (calls need no confirms: their reply is the confirmation).
    casts: tokio::sync::OnceCell<Channel>,
}

impl Link {
    /// Opens a link; the receiver learns when its reply consumer ends.
    async fn open(
        target: &Target,
        shared: &Arc<Shared>,
    ) -> Result<(Link, oneshot::Receiver<()>), Error> {
        let failed = |err: lapin::Error| Error::connection(&shared.masked_uri, err);
        let connected = target
            .brokers
            .connect("guirpc client")
            .await
            .map_err(|err| Error::connection(&shared.masked_uri, err))?;
        if let Some(from) = &connected.moved_from {
            warn!("moved from {from} to {}", connected.masked_uri);
            if let Some(metrics) = &target.metrics {
                metrics.count_move("client", &connected.masked_uri);
            }
        }
        let connection = connected.connection;
        link::watch_blocked(
            &connection,
            shared.masked_uri.clone(),
            "calls",
            shared.blocked.clone(),
        );
        let channel = connection.create_channel().await.map_err(failed)?;
        // Declared so that a publish never meets a missing exchange, which would close
        // the channel; the service queues are the servers' to declare.
        protocol::declare_exchange(&channel, shared.exchange.as_str())
            .await
            .map_err(failed)?;
        let replies = channel
            .basic_consume(
                protocol::DIRECT_REPLY_TO.into(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(failed)?;
        let replies = Arc::new(Replies {
            pending: Pending::default(),
            consumer: Mutex::new(replies),
            channel: channel.clone(),
            runtime: tokio::runtime::Handle::current(),
            task: Mutex::new(None),
        });
        let (ended, end) = oneshot::channel();
        tokio::spawn(route_replies(replies.clone(), ended));
        let link = Link {
            connection,
            channel,
            replies,
            casts: tokio::sync::OnceCell::new(),
        };
        Ok((link, end))
    }

    /// The confirming channel of casts and events, opened on first use (and the events
    /// exchange declared, so that publishing never meets a missing one).
    async fn casts(&self, shared: &Shared) -> Result<&Channel, lapin::Error> {
        self.casts
            .get_or_try_init(|| async {
                let channel = self.connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                protocol::declare_events_exchange(&channel, shared.events_exchange.as_str())
                    .await?;
                Ok(channel)
            })
            .await
    }

    pub(super) async fn close(&self) {
        link::close(&self.connection, "client closed").await;
        self.pending().close();
    }

    fn pending(&self) -> &Pending {
        &self.replies.pending
    }
}

/// Collects returned requests while the link lives; then fails its calls and reconnects,
/// forever.
async fn supervise(
    target: Target,
    shared: Arc<Shared>,
    mut link: Arc<Link>,
    mut ended: oneshot::Receiver<()>,
) {
    loop {
        collect_returns(&mut ended, &link).await;
        // Unpublished first: a call failed below and retried must find no link, and wait
        // for the next one rather than try the dead one again.
        drop(shared.take_link());
        link.pending().close();
        shared.blocked.clear();
        warn!("lost the connection to {}; reconnecting", shared.masked_uri);
        target.brokers.lost();
        let mut backoff = Backoff::new();
        (link, ended) = loop {
            backoff.wait().await;
            match Link::open(&target, &shared).await {
                Ok((new, ended)) => break (Arc::new(new), ended),
                Err(err) => warn!("cannot reconnect to {}: {err}", shared.masked_uri),
            }
        };
        *shared.link.write().unwrap_or_else(|e| e.into_inner()) = Some(link.clone());
        shared.linked.notify_waiters();
        info!("reconnected to {}", shared.masked_uri);
    }
}

/// Calls waiting for their reply, by correlation ID.
#[derive(Debug, Default)]
struct Pending {
    calls: Mutex<PendingCalls>,
    /// Set while the reply router sleeps without collecting returns (no call for a while).
    router_parked: AtomicBool,
    /// Wakes a parked reply router when a call starts waiting.
    busy: Notify,
}

#[derive(Debug, Default)]
struct PendingCalls {
    waiting: HashMap<u64, Waiter, BuildHasherDefault<IdHasher>>,
    /// The waiting calls' deadlines, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Set once replies can no longer arrive; no call may wait after that.
    closed: bool,
    /// Who routes replies now.
    router: Router,
    /// Set once the reply consumer has ended (whoever routed saw it).
    ended: bool,
}

/// Who polls the link's reply consumer and hands out what it brings: one at a time, since
/// the consumer wakes only the last to poll it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Router {
    /// The link's router task, on the client's runtime.
    #[default]
    Task,
    /// A blocking call, on its own thread, until its reply comes: lapin's I/O thread wakes
    /// that thread directly, not through the router task (one thread wake-up per reply
    /// instead of two).
    Caller,
}

impl PendingCalls {
    /// Puts a call or stream in, a call's deadline with it.
    fn put(&mut self, id: u64, waiter: Waiter) {
        if let Waiter::Call { deadline, .. } = waiter {
            self.deadlines.insert((deadline, id));
        }
        self.waiting.insert(id, waiter);
    }

    /// Takes a call or stream out, its deadline with it.
    fn take(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.waiting.remove(&id)?;
        if let Waiter::Call { deadline, .. } = waiter {
            self.deadlines.remove(&(deadline, id));
        }
        Some(waiter)
    }
}

/// Who waits for the replies of a call.
#[derive(Debug)]
enum Waiter {
    /// A call: its one reply, until its deadline.
    Call {
        answer: oneshot::Sender<Answer>,
        deadline: Instant,
    },
    /// A stream: its messages, until one ends it.
    Stream(mpsc::Sender<Piece>),
}

impl Pending {
    /// Puts a call in; its answer, and whether it routes replies until it comes (`lead`
    /// asks to, and no other call does).
    fn insert(
        &self,
        id: u64,
        deadline: Instant,
        lead: bool,
    ) -> Option<(oneshot::Receiver<Answer>, bool)> {
        let (answer, rx) = oneshot::channel();
        let leads = self.wait(id, Waiter::Call { answer, deadline }, lead)?;
        Some((rx, leads))
    }

    fn insert_stream(&self, id: u64, tx: mpsc::Sender<Piece>) -> Option<()> {
        self.wait(id, Waiter::Stream(tx), false).map(drop)
    }

    /// Puts a waiter in unless replies can no longer come; whether it leads.
    fn wait(&self, id: u64, waiter: Waiter, lead: bool) -> Option<bool> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.closed {
            return None;
        }
        // Taken from the router task without waking it: the leader's first poll of the
        // consumer puts its own waker in the task's place.
        let leads = lead && calls.router == Router::Task && !calls.ended;
        if leads {
            calls.router = Router::Caller;
        }
        calls.put(id, waiter);
        drop(calls);
        if self.router_parked.swap(false, Ordering::SeqCst) {
            self.busy.notify_one();
        }
        Some(leads)
    }

    /// Who routes replies, unless the consumer has ended.
    fn router(&self) -> Option<Router> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        (!calls.ended).then_some(calls.router)
    }

    /// Hands a reply to whoever waits for it; the reply back when no one does.
    fn route(&self, id: u64, delivery: Delivery) -> Option<Delivery> {
        use std::collections::hash_map::Entry;
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let Entry::Occupied(entry) = calls.waiting.entry(id) else {
            return Some(delivery);
        };
        match entry.get() {
            Waiter::Call { .. } => {
                let Some(Waiter::Call { answer, .. }) = calls.take(id) else {
                    unreachable!("matched as a call")
                };
                drop(calls);
                let _ = answer.send(Answer::Reply(delivery));
            }
            Waiter::Stream(tx) => {
                let piece = piece(delivery);
                if !matches!(piece, Piece::Item { .. }) {
                    // The stream's last message: no more after it.
                    let _ = tx.try_send(piece);
                    entry.remove();
                    return None;
                }
                match tx.try_send(piece) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!(
                            "a server sent more stream items than its credit allowed; the stream is cut off"
                        );
                        entry.remove();
                    }
                    // The stream was dropped; its guard removes the entry.
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
        None
    }

    /// Fails a call whose request the broker returned.
    fn returned(&self, id: u64) {
        match self.remove(id) {
            Some(Waiter::Call { answer, .. }) => {
                let _ = answer.send(Answer::Returned);
            }
            Some(Waiter::Stream(tx)) => {
                let _ = tx.try_send(Piece::Returned);
            }
            None => {}
        }
    }

    /// Parks the router unless a call waits (then it must go on collecting returns).
    fn park_router(&self) -> bool {
        self.router_parked.store(true, Ordering::SeqCst);
        if self.has_waiting() {
            self.router_parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn remove(&self, id: u64) -> Option<Waiter> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(id)
    }

    /// Times out the calls whose deadline has come.
    fn expire(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(&(deadline, id)) = calls.deadlines.first()
                && deadline <= now
            {
                calls.deadlines.pop_first();
                if let Some(Waiter::Call { answer, .. }) = calls.waiting.remove(&id) {
                    expired.push(answer);
                }
            }
        }
        for answer in expired {
            let _ = answer.send(Answer::Expired);
        }
    }

    fn has_waiting(&self) -> bool {
        !self
            .calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting
            .is_empty()
    }

    /// Fails every waiting call at once: their senders drop.
    fn close(&self) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.closed = true;
        calls.waiting.clear();
        calls.deadlines.clear();
    }
}

/// Hashes call IDs, which are distinct counters: one multiplication spreads them over the
/// table, where SipHash would cost more than the rest of a lookup.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Removes a call's entry however the call ends, cancellation included, unless an
/// answer came (whoever sent it removed the entry).
struct Waiting {
    link: Arc<Link>,
    id: u64,
    answered: bool,
    /// Whether this call routes the link's replies (and hands that back when it ends).
    leading: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.answered {
            self.link.pending().remove(self.id);
        }
        if self.leading {
            self.link.replies.hand_back();
        }
    }
}

/// How often returned (unroutable) requests are collected, and calls past their deadline
/// timed out. A call to a queue that does not exist fails within about this long, instead
/// of running into its timeout, and a call times out at most about this long after its
/// deadline.
const RETURNS_EVERY: Duration = Duration::from_millis(10);

/// How many collections without a waiting call before the router parks. A client that
/// calls now and then keeps its router awake, so that no call has to wake it; an idle
/// client costs no wake-ups.
const PARK_AFTER_QUIET_TICKS: u32 = 100;

/// Fails calls whose request the broker returned as unroutable, until the link's reply
/// consumer ends.
async fn collect_returns(ended: &mut oneshot::Receiver<()>, link: &Link) {
    let mut returns = tokio::time::interval(RETURNS_EVERY);
    returns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut parked, mut quiet_ticks) = (false, 0);
    loop {
        tokio::select! {
            _ = &mut *ended => return,
            () = link.pending().busy.notified(), if parked => {
                (parked, quiet_ticks) = (false, 0);
            }
            _ = returns.tick(), if !parked => {
                link.pending().expire(Instant::now());
                if link.pending().has_waiting() {
                    quiet_ticks = 0;
                } else {
                    quiet_ticks += 1;
                    if quiet_ticks >= PARK_AFTER_QUIET_TICKS {
                        parked = link.pending().park_router();
                    }
                }
                // Publisher confirms would report returns per message, at the price of one
                // more frame per call: the channel is not in confirm mode, and lapin keeps
                // the returned messages until they are collected here.
                match link.channel.wait_for_confirms().await {
                    Ok(returned) => {
                        for message in returned {
                            if let Some(id) = correlation(&message.delivery) {
                                link.pending().returned(id);
                            }
                        }
                    }
                    Err(err) => debug!("collecting returned requests: {err}"),
                }
            }
        }
    }
}

thread_local! {
    /// Set while this thread makes a blocking call ([`leading`]).
    static LEADS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `block_on`, a blocking call, whose calls route replies while they wait. Only
/// blocking calls do: their thread waits in `block_on`, polling as soon as it is woken,
/// where an async call's future may sit unpolled for a while (a branch of a `select!` kept
/// for later) and every other call's reply would wait with it.
pub(super) fn leading<T>(block_on: impl FnOnce() -> T) -> T {
    struct Unset;
    impl Drop for Unset {
        fn drop(&mut self) {
            LEADS.set(false);
        }
    }
    LEADS.set(true);
    let _unset = Unset;
    block_on()
}

/// A link's reply consumer and who routes what it brings.
///
/// The router task routes replies unless a blocking call does: a blocking call takes the
/// consumer over while it waits (lapin's I/O thread then wakes the caller's thread itself,
/// where through the task a reply would cost two thread wake-ups), routing every reply
/// that comes meanwhile, and hands it back to the task when its own reply has come,
/// without waking it. Routing on lapin's I/O thread instead (a consumer delegate) would
/// save the same hop, but lapin spawns a task for every delivery a delegate takes:
/// measured, that cost more than the hop (docs/PERFORMANCE.md).
struct Replies {
    pending: Pending,
    /// Polled only by the router of the moment, checked under this lock: the consumer
    /// keeps one waker, the last poller's.
    consumer: Mutex<lapin::Consumer>,
    channel: Channel,
    runtime: tokio::runtime::Handle,
    /// The router task's waker, to hand routing back to it.
    task: Mutex<Option<Waker>>,
}

impl std::fmt::Debug for Replies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replies").finish_non_exhaustive()
    }
}

impl Replies {
    /// The next reply, if `router` routes: `Ready(None)` once the consumer has ended;
    /// pending with `cx` registered, or, once `router` no longer routes, with nothing
    /// registered.
    fn poll_next(&self, router: Router, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let next = {
            let mut consumer = self.consumer.lock().unwrap_or_else(|e| e.into_inner());
            match self.pending.router() {
                None => return Poll::Ready(None),
                Some(now) if now != router => return Poll::Pending,
                Some(_) => {}
            }
            consumer.poll_next(cx)
        };
        match next {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(delivery))) => Poll::Ready(Some(delivery)),
            Poll::Ready(end) => {
                if let Some(Err(err)) = end {
                    debug!("the reply consumer ended: {err}");
                }
                self.ended();
                Poll::Ready(None)
            }
        }
    }

    fn route(&self, delivery: Delivery) {
        let unwanted = match correlation(&delivery) {
            Some(id) => self.pending.route(id, delivery),
            None => Some(delivery),
        };
        if let Some(delivery) = unwanted {
            self.refuse(delivery);
        }
    }

    /// Notes the consumer's end, and wakes the router task to report it.
    fn ended(&self) {
        {
            let mut calls = self.pending.calls.lock().unwrap_or_else(|e| e.into_inner());
            calls.ended = true;
            calls.router = Router::Task;
        }
        if let Some(task) = self.task_waker() {
            task.wake();
        }
    }

    /// Waits for a leading call's answer, routing replies (its own among them) meanwhile.
    async fn lead(
        &self,
        answer: &mut oneshot::Receiver<Answer>,
    ) -> Result<Answer, oneshot::error::RecvError> {
        std::future::poll_fn(|cx| {
            loop {
                // Checked after each reply routed: a call returns as soon as its own has
                // come, however many others keep coming.
                if let Poll::Ready(answer) = Pin::new(&mut *answer).poll(cx) {
                    return Poll::Ready(answer);
                }
                match self.poll_next(Router::Caller, cx) {
                    Poll::Ready(Some(delivery)) => self.route(delivery),
                    // Once the consumer has ended, the link's end fails the call.
                    Poll::Ready(None) | Poll::Pending => return Pin::new(&mut *answer).poll(cx),
                }
            }
        })
        .await
    }

    /// A leading call ends: the router task routes again. Its waker goes back into the
    /// consumer by polling it in the task's name: the task is woken by the next reply, not
    /// now (but at once if a reply is there already, which is then the task's to route,
    /// after this one).
    fn hand_back(&self) {
        {
            let mut calls = self.pending.calls.lock().unwrap_or_else(|e| e.into_inner());
            if calls.router != Router::Caller {
                return;
            }
            calls.router = Router::Task;
        }
        // No waker: the task has not polled yet, and will.
        let Some(task) = self.task_waker() else {
            return;
        };
        if let Poll::Ready(Some(delivery)) =
            self.poll_next(Router::Task, &mut Context::from_waker(&task))
        {
            self.route(delivery);
            task.wake();
        }
    }

    fn task_waker(&self) -> Option<Waker> {
        self.task.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A reply no call waits for (late, or a duplicate) is dropped; the first item of a
    /// stream no one waits for any more (its caller gave up before it came) is cancelled,
    /// so that its server stops.
    fn refuse(&self, delivery: Delivery) {
        debug!("dropping a reply no call waits for (late, or a duplicate)");
        if let Piece::Item {
            credit_to: Some((queue, id)),
            ..
        } = piece(delivery)
        {
            self.runtime
                .spawn(send_credit(self.channel.clone(), queue, id, None));
        }
    }
}

/// Routes replies whenever no blocking call does, until the consumer ends; then says so.
async fn route_replies(replies: Arc<Replies>, ended: oneshot::Sender<()>) {
    std::future::poll_fn(|cx| {
        {
            let mut task = replies.task.lock().unwrap_or_else(|e| e.into_inner());
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        loop {
            match replies.poll_next(Router::Task, cx) {
                Poll::Ready(Some(delivery)) => replies.route(delivery),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    })
    .await;
    let _ = ended.send(());
}

/// A stream's message, as the caller's stream takes it.
fn piece(delivery: Delivery) -> Piece {
    let properties = &delivery.properties;
    let seq = || {
        properties
            .message_id()
            .as_ref()
            .and_then(|id| id.as_str().parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    match properties.kind().as_ref().map(ShortString::as_str) {
        Some(protocol::STATUS_ITEM) => {
            let headers = properties.headers().as_ref();
            let header = |name: &str| headers.and_then(|h| h.inner().get(name));
            let queue = header(protocol::HEADER_CREDIT_TO).and_then(protocol::value_as_str);
            let id = header(protocol::HEADER_STREAM_ID).and_then(protocol::value_as_u64);
            let credit_to = queue
                .zip(id)
                .map(|(queue, id)| (queue.as_ref().into(), itoa::Buffer::new().format(id).into()));
            Piece::Item {
                seq: seq(),
                credit_to,
                body: delivery.data,
            }
        }
        Some(protocol::STATUS_END) => Piece::End { count: seq() },
        _ => {
            let content_type = properties.content_type().as_ref();
            Piece::Reply {
                ok: protocol::reply_is_ok(properties),
                // An unknown content type reads as JSON, whose failure says what came.
                codec: Codec::from_content_type(content_type.map(ShortString::as_str))
                    .unwrap_or(Codec::Json),
                body: delivery.data,
            }
        }
    }
}

fn correlation(delivery: &Delivery) -> Option<u64> {
    delivery
        .properties
        .correlation_id()
        .as_ref()?
        .as_str()
        .parse()
        .ok()
}

/// What a waiting call receives.
// Moved once, through a oneshot: boxing the reply would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Answer {
    /// The reply.
    Reply(Delivery),
    /// The broker returned the request: no queue is bound for it.
    Returned,
    /// Its deadline came first.
    Expired,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tick_times_out_the_calls_whose_deadline_came_and_only_those() {
        let pending = Pending::default();
        let now = Instant::now();
        let at = |ms| now + Duration::from_millis(ms);
        let mut late = pending.insert(1, at(30), false).unwrap().0;
        let mut first = pending.insert(2, at(10), false).unwrap().0;
        let mut second = pending.insert(3, at(20), false).unwrap().0;
        let mut cancelled = pending.insert(4, at(5), false).unwrap().0;
        // A call that ends otherwise (here: cancelled) leaves no deadline behind.
        assert!(matches!(pending.remove(4), Some(Waiter::Call { .. })));
        assert!(cancelled.try_recv().is_err());
        pending.expire(at(20));
        assert!(matches!(first.try_recv(), Ok(Answer::Expired)));
        assert!(matches!(second.try_recv(), Ok(Answer::Expired)));
        assert!(late.try_recv().is_err(), "timed out before its deadline");
        let calls = pending.calls.lock().unwrap();
        assert_eq!(calls.deadlines.len(), 1);
        assert_eq!(calls.waiting.len(), 1);
        drop(calls);
        pending.returned(1);
        assert!(matches!(late.try_recv(), Ok(Answer::Returned)));
        assert!(pending.calls.lock().unwrap().deadlines.is_empty());
    }
}
