//! Routing a link's replies to the calls that wait for them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use futures_lite::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use tokio::sync::oneshot;
use tracing::debug;

use super::pending::{Answer, Pending, Router, correlation, piece};
use crate::protocol;
use crate::stream::Piece;
use crate::sync::Locked;

thread_local! {
    /// Set while this thread makes a blocking call ([`leading`]).
    static LEADS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread makes a blocking call now: its calls lead ([`leading`]).
pub(super) fn leads() -> bool {
    LEADS.get()
}

/// Runs `block_on`, a blocking call, whose calls route replies while they wait. Only
/// blocking calls do: their thread waits in `block_on`, polling as soon as it is woken,
/// where an async call's future may sit unpolled for a while (a branch of a `select!` kept
/// for later) and every other call's reply would wait with it.
pub(crate) fn leading<T>(block_on: impl FnOnce() -> T) -> T {
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
pub(super) struct Replies {
    pub(super) pending: Pending,
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
    /// The replies `consumer` brings, on `channel`, routed to no one yet.
    pub(super) fn new(consumer: lapin::Consumer, channel: Channel) -> Replies {
        Replies {
            pending: Pending::default(),
            consumer: Mutex::new(consumer),
            channel,
            runtime: tokio::runtime::Handle::current(),
            task: Mutex::new(None),
        }
    }

    /// The next reply, if `router` routes: `Ready(None)` once the consumer has ended;
    /// pending with `cx` registered, or, once `router` no longer routes, with nothing
    /// registered.
    fn poll_next(&self, router: Router, cx: &mut Context<'_>) -> Poll<Option<Delivery>> {
        let next = {
            let mut consumer = self.consumer.locked();
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
            let mut calls = self.pending.calls.locked();
            calls.ended = true;
            calls.router = Router::Task;
        }
        if let Some(task) = self.task_waker() {
            task.wake();
        }
    }

    /// Waits for a leading call's answer, routing replies (its own among them) meanwhile.
    pub(super) async fn lead(
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
    pub(super) fn hand_back(&self) {
        {
            let mut calls = self.pending.calls.locked();
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
        self.task.locked().clone()
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
pub(super) async fn route_replies(replies: Arc<Replies>, ended: oneshot::Sender<()>) {
    std::future::poll_fn(|cx| {
        {
            let mut task = replies.task.locked();
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

/// Grants a stream `credit` more items, or cancels it (`None`).
pub(super) async fn send_credit(
    channel: Channel,
    queue: ShortString,
    id: ShortString,
    credit: Option<u32>,
) {
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
