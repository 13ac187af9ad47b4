//! Settling a channel's deliveries, with as few frames as the order of completion allows.
//!
//! A request is settled as soon as its reply is published. Settlements that fall due
//! together travel together: the handler that finds no settlement under way acknowledges
//! every finished delivery older than the oldest one still running with a single
//! `basic.ack` (`multiple`), and while that frame is on its way, other handlers finish and
//! leave their deliveries for the next. A delivery that finishes while an older one still
//! runs is acknowledged on its own, so that a slow call never holds back the
//! acknowledgement of a fast one. Rejections (dead-lettering) always go one by one.
//!
//! When no request is running, nothing could come to share the next frame: the
//! acknowledgement is queued on the channel (behind the reply, which is written by then)
//! and the handler ends, instead of waiting to be woken once the frame is written.
//!
//! Frames go straight to the channel rather than through lapin's `Acker`, which would
//! pass each one through lapin's internal task first.

use std::collections::BTreeSet;
use std::sync::{Mutex, MutexGuard};

use crate::sync::Locked;
use lapin::Channel;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use tracing::warn;

/// What became of a request, for its settlement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Run (or refused for lateness): acknowledged.
    Served,
    /// Malformed, unknown, too large, its function panicked, or a cast that failed (no
    /// caller hears of it): dead-lettered where
    /// configured, acknowledged otherwise. Never requeued: it would fail again.
    Rejected,
}

/// The settlements of one channel.
#[derive(Debug)]
pub(super) struct Settler {
    channel: Channel,
    /// Whether rejected requests are rejected (to be dead-lettered) rather than acknowledged.
    dead_letter: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Delivered and not finished, by delivery tag.
    running: BTreeSet<u64>,
    /// Finished and not yet settled.
    due: Vec<(u64, Settlement)>,
    /// Whether a handler is sending settlements now.
    sending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settlement {
    Ack,
    Reject,
}

impl Settler {
    pub(super) fn new(channel: Channel, dead_letter: bool) -> Settler {
        Settler {
            channel,
            dead_letter,
            state: Mutex::default(),
        }
    }

    /// Whether the channel is open: settlements made now reach the broker.
    pub(super) fn connected(&self) -> bool {
        self.channel.status().connected()
    }

    /// Records a delivery taken off the consumer, in the order of delivery.
    pub(super) fn received(&self, tag: u64) {
        self.state().running.insert(tag);
    }

    /// Settles a finished delivery, and whatever else falls due while that is sent.
    /// A delivery that is never finished (its reply could not be published) is never
    /// settled: the broker redelivers it when the channel closes.
    pub(super) async fn finished(&self, tag: u64, verdict: Verdict) {
        let settlement = if verdict == Verdict::Rejected && self.dead_letter {
            Settlement::Reject
        } else {
            Settlement::Ack
        };
        {
            let mut state = self.state();
            state.running.remove(&tag);
            state.due.push((tag, settlement));
            if state.sending {
                // The handler sending now takes this one before it stops.
                return;
            }
            state.sending = true;
        }
        let mut sending = Sending(Some(self));
        loop {
            let (mut batch, oldest_running) = {
                let mut state = self.state();
                if state.due.is_empty() {
                    state.sending = false;
                    sending.0 = None;
                    return;
                }
                (
                    std::mem::take(&mut state.due),
                    state.running.first().copied(),
                )
            };
            batch.sort_unstable_by_key(|&(tag, _)| tag);
            self.send(&batch, oldest_running).await;
        }
    }

    async fn send(&self, batch: &[(u64, Settlement)], oldest_running: Option<u64>) {
        let older = |tag: u64| oldest_running.is_none_or(|oldest| tag < oldest);
        // Rejections first: the acknowledgement below covers every older delivery that is
        // still unsettled when it arrives.
        for &(tag, _) in batch.iter().filter(|(_, s)| *s == Settlement::Reject) {
            let rejected = self
                .channel
                .basic_reject(tag, BasicRejectOptions { requeue: false })
                .await;
            report(rejected);
        }
        let mut acks = batch
            .iter()
            .filter(|(_, s)| *s == Settlement::Ack)
            .map(|&(tag, _)| tag);
        // Every delivery up to the newest acknowledgement older than all running ones has
        // finished: one frame settles them all.
        if let Some(newest) = acks.clone().take_while(|&tag| older(tag)).last() {
            let ack = self
                .channel
                .basic_ack(newest, BasicAckOptions { multiple: true });
            // Awaited only while a request runs, whose settlement could share the next frame.
            if let Some(acked) = super::sent(ack, oldest_running.is_some()).await {
                report(acked);
            }
        }
        for tag in acks.by_ref().filter(|&tag| !older(tag)) {
            let acked = self
                .channel
                .basic_ack(tag, BasicAckOptions { multiple: false })
                .await;
            report(acked);
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.locked()
    }
}

fn report(settled: lapin::Result<()>) {
    if let Err(err) = settled {
        warn!("cannot settle a request: {err}; the broker will redeliver it");
    }
}

/// Hands the sending role back if the sender is dropped mid-way (its runtime shutting
/// down); `None` once handed back in order.
struct Sending<'a>(Option<&'a Settler>);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(settler) = self.0 {
            settler.state().sending = false;
        }
    }
}
