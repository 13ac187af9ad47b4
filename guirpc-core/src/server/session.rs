//! A server's connection to the broker, one session at a time: topology, consumer,
//! acknowledgements, replies (and the reply quarantine beside it, see `reply`). A session
//! ends when the consuming connection fails; the supervisor opens the next one.
//!
//! Per class of failure: a broker that cannot be reached (refused, closed, timed out, an
//! authentication the broker turned down) is retried for as long as it takes, logged at
//! every attempt; a broker that refuses the topology (`PRECONDITION_FAILED`,
//! `ACCESS_REFUSED`, ...) will refuse it again, so the server stops with that error.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use futures_lite::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::dispatch::Dispatch;
use super::events;
use super::jobs;
use super::reply::Replier;
use super::settle::Settler;
use super::streams::Streams;
use super::{ServeError, Shared};
use crate::config::QueueType;
use crate::link::{self, Backoff};
use crate::protocol::{self, ExchangeName};

/// One connection's worth of serving.
pub(super) struct Session {
    connection: Arc<Connection>,
    channel: Channel,
    consumer: lapin::Consumer,
    /// How its deliveries are handled: its settler, replier and streams.
    dispatch: Arc<Dispatch>,
    /// The `#[subscribe]` consumers, handed to their tasks when serving starts.
    subscriptions: Vec<events::Subscription>,
    /// The consumer of the streams' credit queue, when some function streams (handed to
    /// its task when serving starts).
    credit: Option<lapin::Consumer>,
    /// Told why when a subscription's consumer ends while the connection lives (its queue
    /// deleted, say): the session is then lost too, and the next one declares it again.
    lost: tokio::sync::mpsc::UnboundedReceiver<String>,
    lost_tx: tokio::sync::mpsc::UnboundedSender<String>,
}

enum SessionError {
    Connect(link::ConnectError),
    Topology(lapin::Error),
}

impl Session {
    pub(super) async fn open_with_retry(shared: &Arc<Shared>) -> Result<Session, ServeError> {
        let mut backoff = Backoff::new();
        loop {
            match Session::open(shared).await {
                Ok(session) => {
                    shared.health.consuming.store(true, Ordering::Relaxed);
                    return Ok(session);
                }
                Err(SessionError::Connect(err)) => {
                    let delay = backoff.next_delay();
                    warn!(
                        "broker unreachable at {}: {err}; retrying in {:.1}s",
                        shared.masked_uri,
                        delay.as_secs_f64()
                    );
                    tokio::time::sleep(delay).await;
                }
                Err(SessionError::Topology(source)) => {
                    return Err(ServeError::Topology {
                        uri: shared.masked_uri.clone(),
                        queue: shared.settings.queue.clone(),
                        declared: describe_arguments(&queue_arguments(shared)),
                        source,
                    });
                }
            }
        }
    }

    async fn open(shared: &Arc<Shared>) -> Result<Session, SessionError> {
        let settings = &shared.settings;
        let name = format!("guirpc server {}", settings.queue);
        let connected = shared
            .brokers
            .connect(&name)
            .await
            .map_err(SessionError::Connect)?;
        if let Some(from) = &connected.moved_from {
            warn!("moved from {from} to {}", connected.masked_uri);
            shared.count_move(&connected.masked_uri);
        }
        let node = connected.masked_uri;
        let user: Arc<str> = connected.user.into();
        let connection = Arc::new(connected.connection);
        shared.health.blocked.clear();
        link::watch_blocked(
            &connection,
            shared.masked_uri.clone(),
            "replies",
            shared.health.blocked.clone(),
        );
        let channel = connection
            .create_channel()
            .await
            .map_err(|err| SessionError::Connect(err.into()))?;
        let dead = settings
            .dead_letter_queue()
            .map(|queue| (queue, dead_queue_arguments(shared)));
        let topology = async {
            let durable = Some(settings.exchange_durable);
            protocol::declare_exchange(&connection, &channel, &settings.exchange, durable).await?;
            channel
                .queue_declare(
                    settings.queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    queue_arguments(shared),
                )
                .await?;
            // The default exchange routes to every queue by its name, and takes no bindings.
            // Bound by its name, and by `broker.routing_key` if set (guirpc 0.1 producers').
            if !settings.exchange.is_empty() {
                let keys = [settings.queue.as_str(), settings.routing_key.as_str()];
                for key in keys.into_iter().filter(|k| !k.is_empty()) {
                    channel
                        .queue_bind(
                            settings.queue.as_str().into(),
                            settings.exchange.as_str().into(),
                            key.into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        )
                        .await?;
                }
            }
            // Failed casts and events are kept in the dead-letter queue.
            if let Some((queue, arguments)) = &dead {
                declare_dead_queue(&channel, queue, arguments.clone()).await?;
            }
            channel
                .basic_qos(settings.prefetch, BasicQosOptions::default())
                .await?;
            let subscriptions = events::open(shared, &connection, &queue_arguments(shared)).await?;
            let streams = if shared.dispatcher.registry.iter().any(|f| f.streams()) {
                Some(Streams::open(&channel).await?)
            } else {
                None
            };
            Ok::<_, lapin::Error>((subscriptions, streams))
        };
        // The probe of the reply addresses (on a channel of its own) runs beside the
        // declarations: requests are taken once both are done.
        let (_, declared) = tokio::join!(shared.reply_nodes.probe(&connection), topology);
        let consumed = async {
            let (subscriptions, streams) = declared?;
            let consumer = channel
                .basic_consume(
                    settings.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok((consumer, subscriptions, streams))
        };
        let (consumer, subscriptions, streams) = match consumed.await {
            Ok(consumed) => consumed,
            // A channel error is the broker's answer to the topology; a connection that
            // failed meanwhile is only a connection failure, retried.
            Err(err) if connection.status().connected() => {
                link::close(&connection, "topology refused").await;
                return Err(SessionError::Topology(err));
            }
            Err(err) => return Err(SessionError::Connect(err.into())),
        };
        info!(
            "serving {} function(s) on queue `{}` ({}) at {node}",
            shared.dispatcher.registry.len(),
            settings.queue,
            ExchangeName(&settings.exchange),
        );
        // Scheduled casts reach the queue through the delay ladder's end: bound beside the
        // serving, which neither waits for it nor fails with it (a client binds the queue
        // too before its first scheduled cast).
        tokio::spawn(jobs::Jobs::bind(connection.clone(), settings.queue.clone()));
        if let Some((queue, arguments)) = dead {
            tokio::spawn(keep_dead_queue(
                Arc::downgrade(&connection),
                queue,
                arguments,
            ));
        }
        let (lost_tx, lost) = tokio::sync::mpsc::unbounded_channel();
        let dead_letter = settings.rejects_to_exchange();
        let (streams, credit) = streams.unzip();
        let dispatch = Dispatch {
            shared: shared.clone(),
            settler: Settler::new(channel.clone(), dead_letter),
            replier: Arc::new(Replier::new(shared, channel.clone())),
            streams,
            jobs: Arc::new(jobs::Jobs::new(connection.clone(), user)),
        };
        Ok(Session {
            dispatch: Arc::new(dispatch),
            credit,
            connection,
            channel,
            consumer,
            subscriptions,
            lost,
            lost_tx,
        })
    }

    async fn close(&self) {
        link::close(&self.connection, "shutdown").await;
        self.dispatch.replier.close().await;
    }
}

/// The queue's declaration arguments: the configured ones, the queue type and its delivery
/// limit, dead-lettering if set, and the consumer timeout its functions need.
fn queue_arguments(shared: &Shared) -> FieldTable {
    let mut arguments = shared.queue_arguments.clone();
    if !arguments
        .inner()
        .contains_key(protocol::ARG_CONSUMER_TIMEOUT)
    {
        let millis = i64::try_from(consumer_timeout(shared).as_millis()).unwrap_or(i64::MAX);
        arguments.insert(
            protocol::ARG_CONSUMER_TIMEOUT.into(),
            lapin::types::AMQPValue::LongLongInt(millis),
        );
    }
    if shared.settings.queue_type == QueueType::Quorum {
        arguments.insert(
            protocol::ARG_QUEUE_TYPE.into(),
            lapin::types::AMQPValue::LongString("quorum".into()),
        );
        if shared.settings.delivery_limit > 0 {
            arguments.insert(
                protocol::ARG_DELIVERY_LIMIT.into(),
                lapin::types::AMQPValue::LongLongInt(shared.settings.delivery_limit.into()),
            );
        }
    }
    let exchange = &shared.settings.dead_letter_exchange;
    if !exchange.is_empty() {
        arguments.insert(
            protocol::ARG_DEAD_LETTER_EXCHANGE.into(),
            lapin::types::AMQPValue::LongString(exchange.as_str().into()),
        );
    }
    arguments
}

/// The dead-letter queue's arguments: the service queue's type, and its expiry when it
/// has one (a dead-letter queue lives as long as its service queue would).
fn dead_queue_arguments(shared: &Shared) -> FieldTable {
    let mut arguments = FieldTable::default();
    let service = queue_arguments(shared);
    for name in [protocol::ARG_QUEUE_TYPE, protocol::ARG_EXPIRES] {
        if let Some(value) = service.inner().get(name) {
            arguments.insert(name.into(), value.clone());
        }
    }
    arguments
}

async fn declare_dead_queue(
    channel: &Channel,
    dead: &str,
    arguments: FieldTable,
) -> lapin::Result<()> {
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(dead.into(), durable, arguments)
        .await
        .map(drop)
}

/// Keeps a dead-letter queue that expires alive while its server serves: nothing consumes
/// it, so the broker would delete it `x-expires` after its declaration, dead letters and
/// all. Declaring it again renews its lease (and brings it back if someone deleted it), a
/// third of its expiry apart, for as long as the session's connection lives (held weakly:
/// the session owns it); after that it expires as its service queue does, that long after
/// the last server left.
async fn keep_dead_queue(connection: Weak<Connection>, dead: String, arguments: FieldTable) {
    let Some(expires) = arguments
        .inner()
        .get(protocol::ARG_EXPIRES)
        .and_then(protocol::value_as_u64)
    else {
        return;
    };
    let period = std::time::Duration::from_millis((expires / 3).max(100));
    loop {
        tokio::time::sleep(period).await;
        let Some(connection) = connection.upgrade() else {
            return;
        };
        let renewed = match connection.create_channel().await {
            Ok(channel) => {
                let renewed = declare_dead_queue(&channel, &dead, arguments.clone()).await;
                let _ = channel.close(200, "renewed".into()).await;
                renewed
            }
            Err(err) => Err(err),
        };
        if let Err(err) = renewed {
            if connection.status().connected() {
                warn!("could not renew the dead-letter queue `{dead}`: {err}");
            }
            return;
        }
    }
}

/// How long the broker must let a delivery of this queue go unacknowledged: a request may
/// wait behind every other the server runs (prefetched while all `concurrency` slots are
/// taken) for as long as their longest run, then run its own longest, and a minute more.
///
/// The broker closes a channel whose oldest delivery is older than its consumer timeout
/// (`consumer_timeout`, 30 minutes by default), taking back every request on it. From
/// RabbitMQ 3.12 a queue declared with `x-consumer-timeout` has its own; 3.10 and 3.11
/// ignore the argument, and a queue declared before keeps what it had (a `consumer-timeout`
/// policy changes it). There, a function that runs past the broker's timeout costs the
/// server its channel once: the requests on it come back, those still running are not run
/// again (`redeliveries`), and from then on their deliveries are acknowledged as they come.
fn consumer_timeout(shared: &Shared) -> std::time::Duration {
    let default = shared.settings.max_run;
    let longest = shared
        .dispatcher
        .registry
        .iter()
        .map(|function| function.max_run().unwrap_or(default))
        .max()
        .unwrap_or(default);
    let concurrency = shared.settings.concurrency.max(1);
    let turns = 1 + usize::from(shared.settings.prefetch).div_ceil(concurrency);
    longest.saturating_mul(u32::try_from(turns).unwrap_or(u32::MAX))
        + std::time::Duration::from_secs(60)
}

/// Whether the broker closed a channel for its consumer timeout: `PRECONDITION_FAILED -
/// delivery acknowledgement on channel 1 timed out`.
fn consumer_timed_out(why: &str) -> bool {
    why.contains("PRECONDITION_FAILED")
        && why.contains("acknowledgement")
        && why.contains("timed out")
}

/// Declaration arguments as a person reads them: `x-queue-type = "quorum", x-expires = 60000`,
/// or `no arguments`.
fn describe_arguments(arguments: &FieldTable) -> String {
    use lapin::types::AMQPValue;
    let described: Vec<String> = arguments
        .inner()
        .iter()
        .map(|(name, value)| {
            let value = match value {
                AMQPValue::LongString(text) => {
                    format!("{:?}", String::from_utf8_lossy(text.as_bytes()))
                }
                AMQPValue::ShortString(text) => format!("{:?}", text.as_str()),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::ShortInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::Boolean(b) => b.to_string(),
                other => format!("{other:?}"),
            };
            format!("{name} = {value}")
        })
        .collect();
    if described.is_empty() {
        "no arguments".to_owned()
    } else {
        described.join(", ")
    }
}

/// Serves session after session until told to stop (`Ok`), or until the broker refuses
/// the topology on a reconnection (`Err`: the server cannot serve any longer).
pub(super) async fn supervise(
    shared: Arc<Shared>,
    mut session: Session,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ServeError> {
    loop {
        match consume(&shared, &mut session, &mut stop).await {
            Ok(()) => {
                drain(&shared, &session).await;
                return Ok(());
            }
            Err(err) => {
                shared.health.consuming.store(false, Ordering::Relaxed);
                if consumer_timed_out(&err) {
                    shared.consumer_timeouts.fetch_add(1, Ordering::Relaxed);
                    warn!(
                        "the broker at {} took the channel away: a request stayed unacknowledged past its consumer_timeout ({err}). The requests on the channel come back; those still running are not run again, and are acknowledged as they come from now on. Raise the broker's consumer_timeout above the longest max_run (or use RabbitMQ 3.12 or later, where the queue carries its own); reconnecting",
                        shared.masked_uri
                    );
                } else {
                    warn!(
                        "lost the connection to {}: {err}; reconnecting",
                        shared.masked_uri
                    );
                }
                session.dispatch.replier.close().await;
                shared.brokers.lost();
                session = tokio::select! {
                    session = Session::open_with_retry(&shared) => session?,
                    _ = stop.wait_for(|stop| *stop) => return Ok(()),
                };
                shared.count_reconnect();
            }
        }
    }
}

/// Takes deliveries until told to stop (`Ok`) or the connection fails (`Err`).
async fn consume(
    shared: &Arc<Shared>,
    session: &mut Session,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    for subscription in session.subscriptions.drain(..) {
        let lost = session.lost_tx.clone();
        tokio::spawn(events::serve(
            shared.clone(),
            session.dispatch.jobs.clone(),
            subscription,
            stop.clone(),
            lost,
        ));
    }
    if let Some(credit) = session.credit.take()
        && let Some(streams) = session.dispatch.streams.clone()
    {
        let lost = session.lost_tx.clone();
        tokio::spawn(async move {
            let why = streams.serve(credit).await;
            let _ = lost.send(format!("the credit queue of streams failed: {why}"));
        });
    }
    loop {
        let permit = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            permit = shared.semaphore.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let delivery = tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            Some(why) = session.lost.recv() => return Err(why),
            delivery = session.consumer.next() => delivery,
        };
        match delivery {
            Some(Ok(delivery)) => {
                session.dispatch.settler.received(delivery.delivery_tag);
                // Boxed: a request's future is several kilobytes (the reply's publish
                // among them), which the runtime would copy on spawn and again as the
                // task ends; a box is moved as a pointer.
                let dispatch = session.dispatch.clone();
                tokio::spawn(Box::pin(dispatch.handle(delivery, permit)));
            }
            Some(Err(err)) => return Err(err.to_string()),
            None => return Err("the broker cancelled the consumer".into()),
        }
    }
}

/// Graceful end of a session: no new deliveries, running handlers finish, the rest go back.
async fn drain(shared: &Shared, session: &Session) {
    let tag = session.consumer.tag();
    if let Err(err) = session
        .channel
        .basic_cancel(tag, BasicCancelOptions::default())
        .await
    {
        debug!("cancelling the consumer: {err}");
    }
    let all = u32::try_from(shared.settings.concurrency).unwrap_or(u32::MAX);
    let grace = shared.settings.shutdown_grace;
    if tokio::time::timeout(grace, shared.semaphore.acquire_many(all))
        .await
        .is_err()
    {
        warn!(
            "calls still running after the {grace:?} grace period are abandoned; the broker will redeliver them"
        );
    }
    // Closing returns every request delivered but not acknowledged to the queue.
    session.close().await;
}
