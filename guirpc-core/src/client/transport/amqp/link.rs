//! A client's link: one connection and its channel, its reply consumer, and the
//! supervisor that collects returned requests, fails the calls of a lost link and
//! reconnects.

use std::sync::Arc;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::pending::{Pending, correlation};
use super::replies::{Replies, route_replies};
use super::{Shared, Target};
use crate::error::Error;
use crate::link::{self, Backoff};
use crate::protocol;
use crate::sync::RwLocked;

/// One connection, its channel, and the calls waiting for replies on it.
#[derive(Debug)]
pub(super) struct Link {
    pub(super) connection: Connection,
    pub(super) channel: Channel,
    /// Its reply consumer, and the calls waiting for replies.
    pub(super) replies: Arc<Replies>,
    /// The user the connection authenticated as: every request's `user_id`, which the
    /// broker checks, so that servers know who called.
    pub(super) user: lapin::types::ShortString,
    /// The channel casts are published on, in publisher-confirm mode; opened by the first
    /// cast (calls need no confirms: their reply is the confirmation).
    casts: tokio::sync::OnceCell<Channel>,
    /// The delay ladder, declared by the first scheduled cast, and the queues bound to its
    /// end since.
    ladder: tokio::sync::Mutex<Option<std::collections::HashSet<String>>>,
}

impl Link {
    /// Opens a link; the receiver learns when its reply consumer ends.
    pub(super) async fn open(
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
        let user = connected.user.as_str().into();
        link::watch_blocked(
            &connection,
            shared.masked_uri.clone(),
            "calls",
            shared.blocked.clone(),
        );
        let channel = connection.create_channel().await.map_err(failed)?;
        // Declared so that a publish never meets a missing exchange, which would close
        // the channel; the service queues are the servers' to declare.
        // A guirpc 0.1 gateway is its consumers' to declare (not durable): only checked.
        let declare = (shared.protocol == protocol::v01::Protocol::Guirpc).then_some(true);
        protocol::declare_exchange(&connection, &channel, shared.exchange.as_str(), declare)
            .await
            .map_err(failed)?;
        let replies = protocol::consume_no_ack(&channel, protocol::DIRECT_REPLY_TO.into())
            .await
            .map_err(failed)?;
        let replies = Arc::new(Replies::new(replies, channel.clone()));
        let (ended, end) = oneshot::channel();
        tokio::spawn(route_replies(replies.clone(), ended));
        let link = Link {
            connection,
            channel,
            replies,
            user,
            casts: tokio::sync::OnceCell::new(),
            ladder: tokio::sync::Mutex::new(None),
        };
        Ok((link, end))
    }

    /// The confirming channel of casts and events, opened on first use (and the events
    /// exchange declared, so that publishing never meets a missing one).
    pub(super) async fn casts(&self, shared: &Shared) -> Result<&Channel, lapin::Error> {
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

    /// Readies the delay ladder for a scheduled cast to `queue`: declared once per link,
    /// and `queue` bound to its end, on a channel of their own (binding fails, closing its
    /// channel, when no server has declared the queue yet: a scheduled cast must not be
    /// lost at the end of its wait).
    pub(super) async fn ladder(&self, queue: &str) -> Result<(), lapin::Error> {
        let mut ladder = self.ladder.lock().await;
        if ladder.as_ref().is_some_and(|bound| bound.contains(queue)) {
            return Ok(());
        }
        let channel = self.connection.create_channel().await?;
        if ladder.is_none() {
            crate::delay::declare(&channel).await?;
        }
        let bound = ladder.get_or_insert_default();
        crate::delay::bind(&channel, queue).await?;
        bound.insert(queue.to_owned());
        let _ = channel.close(200, "ladder ready".into()).await;
        Ok(())
    }

    pub(super) async fn close(&self) {
        link::close(&self.connection, "client closed").await;
        self.pending().close();
    }

    pub(super) fn pending(&self) -> &Pending {
        &self.replies.pending
    }
}

/// Collects returned requests while the link lives; then fails its calls and reconnects,
/// forever.
pub(super) async fn supervise(
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
        *shared.link.write_locked() = Some(link.clone());
        shared.linked.notify_waiters();
        info!("reconnected to {}", shared.masked_uri);
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
