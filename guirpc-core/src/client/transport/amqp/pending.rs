//! The calls waiting for their replies on one link, by correlation ID, with their
//! deadlines: what the reply router, the returns tick and the link's end hand answers to.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use lapin::message::Delivery;
use lapin::types::ShortString;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::warn;

use crate::protocol;
use crate::stream::Piece;
use crate::sync::Locked;

/// Calls waiting for their reply, by correlation ID.
#[derive(Debug, Default)]
pub(super) struct Pending {
    pub(super) calls: Mutex<PendingCalls>,
    /// Set while the reply router sleeps without collecting returns (no call for a while).
    router_parked: AtomicBool,
    /// Wakes a parked reply router when a call starts waiting.
    pub(super) busy: Notify,
}

#[derive(Debug, Default)]
pub(super) struct PendingCalls {
    waiting: HashMap<u64, Waiter, BuildHasherDefault<IdHasher>>,
    /// The waiting calls' deadlines, earliest first.
    deadlines: BTreeSet<(Instant, u64)>,
    /// Set once replies can no longer arrive; no call may wait after that.
    closed: bool,
    /// Who routes replies now.
    pub(super) router: Router,
    /// Set once the reply consumer has ended (whoever routed saw it).
    pub(super) ended: bool,
}

/// Who polls the link's reply consumer and hands out what it brings: one at a time, since
/// the consumer wakes only the last to poll it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) enum Router {
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
    pub(super) fn insert(
        &self,
        id: u64,
        deadline: Instant,
        lead: bool,
    ) -> Option<(oneshot::Receiver<Answer>, bool)> {
        let (answer, rx) = oneshot::channel();
        let leads = self.wait(id, Waiter::Call { answer, deadline }, lead)?;
        Some((rx, leads))
    }

    pub(super) fn insert_stream(&self, id: u64, tx: mpsc::Sender<Piece>) -> Option<()> {
        self.wait(id, Waiter::Stream(tx), false).map(drop)
    }

    /// Puts a waiter in unless replies can no longer come; whether it leads.
    fn wait(&self, id: u64, waiter: Waiter, lead: bool) -> Option<bool> {
        let mut calls = self.calls.locked();
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
    pub(super) fn router(&self) -> Option<Router> {
        let calls = self.calls.locked();
        (!calls.ended).then_some(calls.router)
    }

    /// Hands a reply to whoever waits for it; the reply back when no one does.
    pub(super) fn route(&self, id: u64, delivery: Delivery) -> Option<Delivery> {
        use std::collections::hash_map::Entry;
        let mut calls = self.calls.locked();
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
    pub(super) fn returned(&self, id: u64) {
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
    pub(super) fn park_router(&self) -> bool {
        self.router_parked.store(true, Ordering::SeqCst);
        if self.has_waiting() {
            self.router_parked.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Forgets a call or stream that ends without an answer (given up, or cancelled).
    pub(super) fn forget(&self, id: u64) {
        drop(self.remove(id));
    }

    fn remove(&self, id: u64) -> Option<Waiter> {
        self.calls.locked().take(id)
    }

    /// Times out the calls whose deadline has come.
    pub(super) fn expire(&self, now: Instant) {
        let mut expired = Vec::new();
        {
            let mut calls = self.calls.locked();
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

    pub(super) fn has_waiting(&self) -> bool {
        !self.calls.locked().waiting.is_empty()
    }

    /// Fails every waiting call at once: their senders drop.
    pub(super) fn close(&self) {
        let mut calls = self.calls.locked();
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

/// A stream's message, as the caller's stream takes it.
pub(super) fn piece(delivery: Delivery) -> Piece {
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
        _ => Piece::Reply {
            ok: protocol::reply_is_ok(properties),
            codec: protocol::received_codec(properties),
            body: delivery.data,
        },
    }
}

pub(super) fn correlation(delivery: &Delivery) -> Option<u64> {
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
pub(super) enum Answer {
    /// The reply.
    Reply(Delivery),
    /// The broker returned the request: no queue is bound for it.
    Returned,
    /// Its deadline came first.
    Expired,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
