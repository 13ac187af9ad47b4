//! What a server remembers of the requests it runs, so that it runs none of them a second
//! time when the broker delivers it again.
//!
//! The broker delivers a request again when the channel that carried it closed before the
//! broker had its acknowledgement: a lost connection, another request's reply that closed
//! it, or the broker's consumer timeout (a request left unacknowledged longer than
//! `consumer_timeout`: a function that runs longer). The request may still be running
//! here, or have run. So each request a server runs is remembered while it runs, by a keyed
//! hash of what tells it apart (function, correlation ID, reply address, deadline, message
//! ID, arguments), and a delivery of it that arrives meanwhile waits for that run's outcome
//! instead of running it again. A run whose channel is gone by its end (its reply could
//! not be sent, or its acknowledgement may not have reached the broker) is remembered
//! after it with what became of it: settled, or its reply kept. A redelivered request's
//! run always is. A request that comes back is then not run: its kept reply is sent, and
//! it is settled as it would have been. A run that ends on a live channel is forgotten at
//! once: the broker has its acknowledgement and will not deliver it again.
//!
//! A run that ends without an outcome (its stream was cut off, its task cancelled) is
//! forgotten, and runs again. A request without an identity (no correlation ID with its
//! reply address, no message ID: a cast) is not remembered: another just like it is a call
//! of its own, and runs.
//!
//! The memory is bounded: the requests running, and of the ended ones the [`ENTRIES`] most
//! recent and [`KEPT_BYTES`] of kept replies, the oldest forgotten first. A forgotten
//! request that comes back runs again, as at-least-once delivery allows; so does one
//! redelivered to another server.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, DefaultHasher, Hasher, RandomState};
use std::sync::{Mutex, MutexGuard};

use lapin::BasicProperties;
use lapin::types::ShortString;
use tokio::sync::Notify;

use super::settle::Verdict;
use crate::middleware::ServerRequest;
use crate::sync::Locked;

/// How many ended requests a server remembers.
const ENTRIES: usize = 10_000;
/// How many bytes of replies kept for requests that come back, at most.
const KEPT_BYTES: usize = 16 << 20;
/// How many bytes of each end of a large body go into its key.
const SAMPLE: usize = 128;

/// The requests a server runs, and those it has run whose channel was gone by their end.
#[derive(Debug, Default)]
pub(super) struct Redeliveries {
    /// Keys the hash, so that no caller can make its request pass for another's.
    keys: RandomState,
    state: Mutex<State>,
    /// Woken when a run ends, for deliveries waiting on it.
    ended: Notify,
}

#[derive(Debug, Default)]
struct State {
    entries: HashMap<u64, Entry>,
    /// Ended runs, oldest first, each with the `serial` of its entry when it ended: an
    /// entry that ran again since is found under a newer serial and stays.
    ended: VecDeque<(u64, u64)>,
    kept_bytes: usize,
    serial: u64,
}

#[derive(Debug)]
enum Entry {
    Running,
    Ended { outcome: Outcome, serial: u64 },
}

/// What became of a request's run.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// Nothing is left to send: settle it so.
    Settled(Verdict),
    /// Its reply, not sent because the connection was lost first; then settle it so.
    Unsent {
        /// Boxed: a request that leaves a reply unsent is rare, its properties large.
        properties: Box<BasicProperties>,
        body: Vec<u8>,
        verdict: Verdict,
    },
}

impl Outcome {
    fn kept_bytes(&self) -> usize {
        match self {
            Outcome::Settled(_) => 0,
            Outcome::Unsent { body, .. } => body.len(),
        }
    }
}

/// What tells a request apart, laid end to end with each part's length and fed to a
/// keyed hasher a buffer at a time: one pass over a hundred bytes or so costs less than a
/// dozen small writes. (The hasher is a stream: where the buffer breaks changes nothing.)
struct Parts<'h> {
    hasher: &'h mut DefaultHasher,
    buffer: [u8; 512],
    len: usize,
}

impl<'h> Parts<'h> {
    fn new(hasher: &'h mut DefaultHasher) -> Self {
        Parts {
            hasher,
            buffer: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, part: &[u8]) {
        let length = (part.len() as u64).to_le_bytes();
        for bytes in [&length[..], part] {
            if self.len + bytes.len() > self.buffer.len() {
                self.flush();
                if bytes.len() > self.buffer.len() {
                    self.hasher.write(bytes);
                    continue;
                }
            }
            self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    fn flush(&mut self) {
        self.hasher.write(&self.buffer[..self.len]);
        self.len = 0;
    }

    fn finish(mut self) -> u64 {
        self.flush();
        self.hasher.finish()
    }
}

/// The right to run (or answer) a request, held while it does. Dropped without
/// [`Claim::end`] or [`Claim::forget`], the request is forgotten and runs again when it
/// comes back.
#[derive(Debug)]
pub(super) struct Claim<'a> {
    redeliveries: &'a Redeliveries,
    key: u64,
    ended: bool,
}

impl Redeliveries {
    /// The key of a request, equal for every delivery of one message; `None` for a
    /// request that carries no identity (neither a correlation ID to go with its reply
    /// address nor a message ID), which could not be told from another just like it: two
    /// identical casts must both run.
    pub(super) fn key(
        &self,
        request: &ServerRequest,
        reply_to: Option<&ShortString>,
        properties: &BasicProperties,
    ) -> Option<u64> {
        let identified = reply_to.is_some() && request.correlation_id.is_some();
        if !identified && properties.message_id().is_none() {
            return None;
        }
        // The parts, each with its length, in one buffer hashed at once: one pass over a
        // hundred bytes or so costs less than a dozen small writes.
        let mut hasher = self.keys.build_hasher();
        let mut parts = Parts::new(&mut hasher);
        parts.push(request.function.as_bytes());
        parts.push(
            request
                .correlation_id
                .as_ref()
                .map_or(&[][..], |id| id.as_str().as_bytes()),
        );
        parts.push(reply_to.map_or(&[][..], |to| to.as_str().as_bytes()));
        let deadline = request
            .deadline
            .and_then(|deadline| deadline.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(u128::MAX, |since| since.as_nanos());
        parts.push(&deadline.to_le_bytes());
        parts.push(
            properties
                .message_id()
                .as_ref()
                .map_or(&[][..], |id| id.as_str().as_bytes()),
        );
        // Every request is keyed: a large body by its length and its two ends, which with
        // the identity above tell one delivery from another, at a fixed cost.
        let body: &[u8] = &request.body;
        if body.len() <= 2 * SAMPLE {
            parts.push(body);
        } else {
            parts.push(&body.len().to_le_bytes());
            parts.push(&body[..SAMPLE]);
            parts.push(&body[body.len() - SAMPLE..]);
        }
        Some(parts.finish())
    }

    /// Whether the request of `key` is running now.
    pub(super) fn is_running(&self, key: u64) -> bool {
        matches!(self.state().entries.get(&key), Some(Entry::Running))
    }

    /// Claims the request of `key`: with what became of it if it ran here before, waiting
    /// first for a run of it still under way.
    pub(super) async fn claim(&self, key: u64) -> (Claim<'_>, Option<Outcome>) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            {
                let mut state = self.state();
                let before = match state.entries.get(&key) {
                    Some(Entry::Running) => None,
                    Some(Entry::Ended { outcome, .. }) => Some(Some(outcome.clone())),
                    None => Some(None),
                };
                if let Some(before) = before {
                    if let Some(Entry::Ended { outcome, .. }) =
                        state.entries.insert(key, Entry::Running)
                    {
                        state.kept_bytes -= outcome.kept_bytes();
                    }
                    let claim = Claim {
                        redeliveries: self,
                        key,
                        ended: false,
                    };
                    return (claim, before);
                }
            }
            ended.await;
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }
}

impl Claim<'_> {
    /// The run ended and the broker has its settlement: nothing to remember.
    pub(super) fn forget(self) {
        // Dropped unended: the entry goes, and deliveries waiting on it are woken.
    }

    /// Records what became of the request, for when it comes back.
    pub(super) fn end(mut self, outcome: Outcome) {
        self.ended = true;
        let mut state = self.redeliveries.state();
        state.serial += 1;
        let serial = state.serial;
        state.kept_bytes += outcome.kept_bytes();
        state
            .entries
            .insert(self.key, Entry::Ended { outcome, serial });
        state.ended.push_back((self.key, serial));
        state.forget_oldest();
        drop(state);
        self.redeliveries.ended.notify_waiters();
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.redeliveries.state().entries.remove(&self.key);
            self.redeliveries.ended.notify_waiters();
        }
    }
}

impl State {
    /// Forgets the oldest ended runs until the memory is within its bounds.
    fn forget_oldest(&mut self) {
        while self.ended.len() > ENTRIES || self.kept_bytes > KEPT_BYTES {
            let Some((key, serial)) = self.ended.pop_front() else {
                return;
            };
            if let Some(Entry::Ended {
                serial: current, ..
            }) = self.entries.get(&key)
                && *current == serial
                && let Some(Entry::Ended { outcome, .. }) = self.entries.remove(&key)
            {
                self.kept_bytes -= outcome.kept_bytes();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsent(len: usize) -> Outcome {
        Outcome::Unsent {
            properties: Box::default(),
            body: vec![7; len],
            verdict: Verdict::Served,
        }
    }

    #[tokio::test]
    async fn a_request_is_claimed_once_then_answered_from_its_outcome() {
        let redeliveries = Redeliveries::default();
        let (claim, before) = redeliveries.claim(1).await;
        assert!(before.is_none());
        claim.end(unsent(3));
        let (claim, before) = redeliveries.claim(1).await;
        assert!(matches!(before, Some(Outcome::Unsent { ref body, .. }) if body.len() == 3));
        claim.end(Outcome::Settled(Verdict::Rejected));
        let (_claim, before) = redeliveries.claim(1).await;
        assert!(matches!(before, Some(Outcome::Settled(Verdict::Rejected))));
        assert_eq!(redeliveries.state().kept_bytes, 0);
    }

    #[tokio::test]
    async fn a_delivery_waits_for_a_run_under_way_and_a_dropped_claim_is_forgotten() {
        let redeliveries = std::sync::Arc::new(Redeliveries::default());
        let (claim, _) = redeliveries.claim(9).await;
        let waiting = {
            let redeliveries = redeliveries.clone();
            tokio::spawn(async move { redeliveries.claim(9).await.1.is_none() })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(claim);
        assert!(
            waiting.await.unwrap(),
            "a dropped claim leaves nothing behind"
        );
    }

    #[tokio::test]
    async fn the_oldest_are_forgotten_first_within_both_bounds() {
        let redeliveries = Redeliveries::default();
        for key in 0..(ENTRIES as u64 + 5) {
            redeliveries
                .claim(key)
                .await
                .0
                .end(Outcome::Settled(Verdict::Served));
        }
        assert_eq!(redeliveries.state().entries.len(), ENTRIES);
        assert!(redeliveries.claim(4).await.1.is_none(), "forgotten");
        assert!(redeliveries.claim(5).await.1.is_some(), "remembered");

        let redeliveries = Redeliveries::default();
        let big = KEPT_BYTES / 4 + 1;
        for key in 0..4 {
            redeliveries.claim(key).await.0.end(unsent(big));
        }
        let state = redeliveries.state();
        assert!(state.kept_bytes <= KEPT_BYTES);
        assert!(!state.entries.contains_key(&0) && state.entries.contains_key(&3));
    }

    #[tokio::test]
    async fn running_again_keeps_the_newest_outcome_when_the_oldest_are_forgotten() {
        let redeliveries = Redeliveries::default();
        redeliveries
            .claim(1)
            .await
            .0
            .end(Outcome::Settled(Verdict::Served));
        redeliveries.claim(1).await.0.end(unsent(10));
        for key in 2..(ENTRIES as u64 + 1) {
            redeliveries
                .claim(key)
                .await
                .0
                .end(Outcome::Settled(Verdict::Served));
        }
        // The first ending of 1 was the oldest; its second is not.
        assert!(matches!(
            redeliveries.claim(1).await.1,
            Some(Outcome::Unsent { .. })
        ));
    }
}
