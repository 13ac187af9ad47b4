//! The last quarter of an hour of a server's calls, for the status page's charts: per
//! function, calls, errors and a latency histogram in 10-second slots; and the last
//! errors with their messages.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::LATENCY_BUCKETS;
use crate::sync::Locked;

/// The width of a slot.
pub(crate) const SLOT: Duration = Duration::from_secs(10);

/// How many slots are kept: 15 minutes.
pub(crate) const SLOTS: usize = 90;

/// How many errors are kept.
pub(crate) const LAST_ERRORS: usize = 20;

/// Everything recent, of every queue a process serves.
#[derive(Debug)]
pub(crate) struct Recent {
    start: Instant,
    series: Mutex<HashMap<(String, String), Arc<Series>>>,
    errors: Mutex<VecDeque<RecentError>>,
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            start: Instant::now(),
            series: Mutex::default(),
            errors: Mutex::default(),
        }
    }
}

/// One error reply.
#[derive(Debug, Clone)]
pub(crate) struct RecentError {
    pub at: SystemTime,
    pub queue: String,
    pub function: String,
    pub code: String,
    pub message: String,
}

/// One function's slots, a ring: slot `n` (counted from the start) lives at `n % SLOTS`.
#[derive(Debug)]
pub(crate) struct Series {
    start: Instant,
    slots: Mutex<Vec<Slot>>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Slot {
    /// Which slot since the start this is; a stale one is emptied when reused.
    number: u64,
    pub calls: u64,
    pub errors: u64,
    /// Calls by latency bucket (`LATENCY_BUCKETS`, then above the last).
    latency: [u64; LATENCY_BUCKETS.len() + 1],
}

impl Recent {
    /// The series of one function, made at its first call.
    pub(crate) fn series(&self, queue: &str, function: &str) -> Arc<Series> {
        self.series
            .locked()
            .entry((queue.to_owned(), function.to_owned()))
            .or_insert_with(|| {
                Arc::new(Series {
                    start: self.start,
                    slots: Mutex::new(vec![Slot::default(); SLOTS]),
                })
            })
            .clone()
    }

    /// Keeps an error, dropping the oldest beyond [`LAST_ERRORS`].
    pub(crate) fn error(&self, error: RecentError) {
        let mut errors = self.errors.locked();
        if errors.len() == LAST_ERRORS {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    /// The errors of one queue, newest first.
    pub(crate) fn errors(&self, queue: &str) -> Vec<RecentError> {
        self.errors
            .locked()
            .iter()
            .rev()
            .filter(|e| e.queue == queue)
            .cloned()
            .collect()
    }

    /// The slots of one function, oldest first, ending with the current one: empty ones
    /// where it had no calls, and all empty for a function not called yet.
    pub(crate) fn window(&self, queue: &str, function: &str) -> Vec<Slot> {
        let now = slot_number(self.start, Instant::now());
        let series = self
            .series
            .locked()
            .get(&(queue.to_owned(), function.to_owned()))
            .cloned();
        let slots = series.map(|s| s.slots.locked().clone());
        (0..SLOTS as u64)
            .rev()
            .map(|back| {
                let number = now.checked_sub(back);
                match (&slots, number) {
                    (Some(slots), Some(number)) => {
                        let slot = &slots[(number % SLOTS as u64) as usize];
                        if slot.number == number {
                            slot.clone()
                        } else {
                            Slot::default()
                        }
                    }
                    _ => Slot::default(),
                }
            })
            .collect()
    }
}

impl Series {
    /// Counts a call that ended at `now` after `elapsed`, failed or not (the caller's
    /// clock reading, taken once per call).
    pub(crate) fn record(&self, now: Instant, elapsed: Duration, failed: bool) {
        let number = slot_number(self.start, now);
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|bound| elapsed.as_secs_f64() <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        let mut slots = self.slots.locked();
        let slot = &mut slots[(number % SLOTS as u64) as usize];
        if slot.number != number {
            *slot = Slot {
                number,
                ..Slot::default()
            };
        }
        slot.calls += 1;
        slot.errors += u64::from(failed);
        slot.latency[bucket] += 1;
    }
}

impl Slot {
    /// Adds another slot's calls to this one's.
    pub(crate) fn add(&mut self, other: &Slot) {
        self.calls += other.calls;
        self.errors += other.errors;
        for (mine, theirs) in self.latency.iter_mut().zip(&other.latency) {
            *mine += theirs;
        }
    }

    /// The `q` quantile of the slot's latencies in seconds, interpolated within its
    /// bucket; `None` with no calls.
    pub(crate) fn quantile(&self, q: f64) -> Option<f64> {
        let mut cumulative = Vec::with_capacity(self.latency.len());
        let mut total = 0;
        for (i, count) in self.latency.iter().enumerate() {
            total += count;
            let bound = LATENCY_BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            cumulative.push((bound, total));
        }
        quantile(&cumulative, q)
    }
}

/// The `q` quantile of a cumulative histogram, interpolated within its bucket; `None`
/// with no observations. An estimate in the top (`+Inf`) bucket is the largest finite
/// bound, as Prometheus' `histogram_quantile` gives.
pub(super) fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.iter().map(|(_, count)| *count).max()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut previous = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            if bound.is_infinite() {
                return Some(previous.0);
            }
            let within = (count - previous.1) as f64;
            let fraction = if within == 0.0 {
                1.0
            } else {
                (rank - previous.1 as f64) / within
            };
            return Some(previous.0 + (bound - previous.0) * fraction);
        }
        previous = (bound, count);
    }
    Some(previous.0)
}

fn slot_number(start: Instant, now: Instant) -> u64 {
    (now.saturating_duration_since(start).as_secs() / SLOT.as_secs()) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_the_current_slot_and_old_ones_read_empty() {
        let recent = Recent::default();
        let series = recent.series("q", "f");
        series.record(Instant::now(), Duration::from_millis(2), false);
        series.record(Instant::now(), Duration::from_millis(2), false);
        series.record(Instant::now(), Duration::from_millis(40), true);
        let window = recent.window("q", "f");
        assert_eq!(window.len(), SLOTS);
        let last = window.last().unwrap();
        assert_eq!((last.calls, last.errors), (3, 1));
        assert!(window[..SLOTS - 1].iter().all(|s| s.calls == 0));
        let p50 = last.quantile(0.5).unwrap();
        assert!((0.001..=0.0025).contains(&p50), "{p50}");
        let p99 = last.quantile(0.99).unwrap();
        assert!((0.025..=0.05).contains(&p99), "{p99}");
        assert!(recent.window("q", "other").iter().all(|s| s.calls == 0));
    }

    #[test]
    fn only_the_last_errors_are_kept_newest_first() {
        let recent = Recent::default();
        for i in 0..LAST_ERRORS + 5 {
            recent.error(RecentError {
                at: SystemTime::now(),
                queue: "q".into(),
                function: format!("f{i}"),
                code: "internal".into(),
                message: "boom".into(),
            });
        }
        let errors = recent.errors("q");
        assert_eq!(errors.len(), LAST_ERRORS);
        assert_eq!(errors[0].function, format!("f{}", LAST_ERRORS + 4));
        assert!(recent.errors("other").is_empty());
    }
}
