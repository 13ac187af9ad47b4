//! Retry policies of casts and events: how many times a one-way request is run, how long
//! it waits between runs, and after which outcomes it is run again.
//!
//! A retry waits in the broker, not in the server: the failed request is published to the
//! delay ladder ([`crate::delay`]) with its attempt counted, and comes back to its queue
//! when its delay is over; after the last attempt it is dead-lettered with its reasons.
//! Calls with a reply are never retried by the server: their caller has a deadline, and
//! its own `retries`.
//!
//! ```
//! use std::time::Duration;
//! use guirpc_core::retry::RetryPolicy;
//!
//! let policy: RetryPolicy = RetryPolicy::default().with_backoff("1s..5m").unwrap();
//! assert_eq!(policy.backoff.nominal(1), Duration::from_secs(1));
//! assert_eq!(policy.backoff.nominal(3), Duration::from_secs(4));
//! assert_eq!(policy.backoff.nominal(30), Duration::from_secs(300));
//! ```

use std::fmt;
use std::time::Duration;

use crate::duration::{format_duration, parse_duration};
use crate::protocol::ErrorCode;

/// How a failed cast or event is run again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// How many runs in all, the first included: `1` is no retry.
    pub attempts: u32,
    /// How long each retry waits.
    pub backoff: Backoff,
    /// Which outcomes are retried.
    pub on: RetryOn,
}

impl Default for RetryPolicy {
    /// Three runs, 1 s then 2 s apart (at most a minute, less up to a fifth for jitter),
    /// after a handler error or an internal failure.
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: Backoff::default(),
            on: RetryOn::DEFAULT,
        }
    }
}

impl RetryPolicy {
    /// This policy with the backoff range `first..largest` (`"1s..5m"`).
    pub fn with_backoff(mut self, range: &str) -> Result<RetryPolicy, String> {
        let (first, largest) = parse_range(range)?;
        self.backoff.first = first;
        self.backoff.largest = largest;
        Ok(self)
    }

    /// Whether a run that ended with `code` on attempt `attempt` (1 for the first) is run
    /// again.
    pub fn retries(&self, code: &ErrorCode, attempt: u32) -> bool {
        attempt < self.attempts && self.on.contains(code)
    }

    /// This policy with the options a function or subscriber states in place of these.
    pub fn overridden(mut self, by: &RetryOverride) -> RetryPolicy {
        if let Some(attempts) = by.attempts {
            self.attempts = attempts;
        }
        if let Some((first, largest)) = by.backoff {
            self.backoff.first = first;
            self.backoff.largest = largest;
        }
        if let Some(factor) = by.factor {
            self.backoff.factor = factor;
        }
        if let Some(jitter) = by.jitter {
            self.backoff.jitter = jitter;
        }
        if let Some(on) = by.on {
            self.on = on;
        }
        self
    }
}

impl fmt::Display for RetryPolicy {
    /// `3 attempts, 1s..1m x2 jitter 0.2, on handler_error,internal`, or `no retries`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts <= 1 {
            return f.write_str("no retries");
        }
        write!(
            f,
            "{} attempts, {}, on {}",
            self.attempts, self.backoff, self.on
        )
    }
}

impl From<RetryPolicy> for crate::protocol::RetryDescription {
    fn from(policy: RetryPolicy) -> Self {
        let backoff = policy.backoff;
        crate::protocol::RetryDescription {
            attempts: policy.attempts,
            backoff: format!(
                "{}..{}",
                format_duration(backoff.first),
                format_duration(backoff.largest)
            ),
            factor: backoff.factor,
            jitter: backoff.jitter,
            on: policy
                .on
                .to_string()
                .split(',')
                .map(str::to_owned)
                .collect(),
        }
    }
}

/// The options `#[rpc(retry(...))]` and `#[subscribe(retry(...))]` state; the rest come
/// from the service's `[retry]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryOverride {
    /// `attempts = 5`.
    pub attempts: Option<u32>,
    /// `backoff = "1s..5m"`.
    pub backoff: Option<(Duration, Duration)>,
    /// `factor = 3`.
    pub factor: Option<f64>,
    /// `jitter = 0.1`.
    pub jitter: Option<f64>,
    /// `on = "handler_error,internal"`.
    pub on: Option<RetryOn>,
}

/// The delays between runs: `first`, then each `factor` times the one before, never above
/// `largest`, each shortened by up to `jitter` of itself at random (so that a thousand
/// casts failing together do not all come back at once).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay before the second run.
    pub first: Duration,
    /// How much each delay grows over the one before (at least 1).
    pub factor: f64,
    /// The longest delay.
    pub largest: Duration,
    /// The fraction, 0 to 1, by which a delay is shortened at most.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(1),
            factor: 2.0,
            largest: Duration::from_secs(60),
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The delay after the run `attempt` (1 for the first) before jitter: `first ×
    /// factor^(attempt - 1)`, at most `largest`.
    pub fn nominal(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.first.as_secs_f64() * self.factor.max(1.0).powi(exponent);
        Duration::try_from_secs_f64(secs)
            .unwrap_or(self.largest)
            .min(self.largest)
    }

    /// The delay after the run `attempt`, jitter taken: between `nominal × (1 - jitter)`
    /// and `nominal`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let nominal = self.nominal(attempt);
        let jitter = self.jitter.clamp(0.0, 1.0) * fastrand::f64();
        nominal.mul_f64(1.0 - jitter)
    }
}

impl fmt::Display for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}..{} x{} jitter {}",
            format_duration(self.first),
            format_duration(self.largest),
            self.factor,
            self.jitter
        )
    }
}

/// The outcomes after which a run is retried: `handler_error` (the function returned an
/// error), `internal` (it panicked, or its worker process died), `max_run_exceeded`.
/// Never `bad_request`, `not_found` or `too_large`: those would fail again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn(u8);

const HANDLER_ERROR: u8 = 1;
const INTERNAL: u8 = 2;
const MAX_RUN: u8 = 4;
const OUTCOMES: [(u8, &str); 3] = [
    (HANDLER_ERROR, "handler_error"),
    (INTERNAL, "internal"),
    (MAX_RUN, "max_run_exceeded"),
];

impl RetryOn {
    /// `handler_error` and `internal`.
    pub const DEFAULT: RetryOn = RetryOn(HANDLER_ERROR | INTERNAL);

    /// Whether a run that ended with `code` is retried.
    pub fn contains(self, code: &ErrorCode) -> bool {
        let bit = match code {
            ErrorCode::HandlerError => HANDLER_ERROR,
            ErrorCode::Internal | ErrorCode::Unknown(_) => INTERNAL,
            ErrorCode::MaxRunExceeded => MAX_RUN,
            _ => 0,
        };
        self.0 & bit != 0
    }

    /// The set of `handler_error,internal` (commas or spaces between).
    pub fn parse(text: &str) -> Result<RetryOn, String> {
        let mut bits = 0;
        for name in text.split([',', ' ']).filter(|name| !name.is_empty()) {
            let Some((bit, _)) = OUTCOMES.iter().find(|(_, known)| *known == name) else {
                let never = ["bad_request", "not_found", "too_large"];
                let why = if never.contains(&name) {
                    format!("`{name}` is never retried: it would fail again")
                } else {
                    format!("unknown outcome `{name}`")
                };
                return Err(format!(
                    "{why}; the outcomes retried can be handler_error, internal and max_run_exceeded"
                ));
            };
            bits |= bit;
        }
        Ok(RetryOn(bits))
    }

    /// The bits, for the macro's constant.
    #[doc(hidden)]
    pub const fn from_bits(bits: u8) -> RetryOn {
        RetryOn(bits)
    }
}

impl fmt::Display for RetryOn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = OUTCOMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        if names.is_empty() {
            f.write_str("nothing")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

/// `1s..5m`: the first delay and the largest, the first no larger.
pub fn parse_range(text: &str) -> Result<(Duration, Duration), String> {
    let Some((first, largest)) = text.split_once("..") else {
        return Err(format!(
            "expected a backoff range such as `1s..5m` (the first delay, then the largest), got `{text}`"
        ));
    };
    let (first, largest) = (parse_duration(first)?, parse_duration(largest)?);
    if first.is_zero() || first > largest {
        return Err(format!(
            "the backoff range `{text}` must start above zero and no higher than it ends"
        ));
    }
    Ok((first, largest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_by_the_factor_up_to_the_largest_and_jitter_only_shortens() {
        let backoff = Backoff {
            first: Duration::from_millis(500),
            factor: 3.0,
            largest: Duration::from_secs(10),
            jitter: 0.25,
        };
        assert_eq!(backoff.nominal(1), Duration::from_millis(500));
        assert_eq!(backoff.nominal(2), Duration::from_millis(1500));
        assert_eq!(backoff.nominal(4), Duration::from_secs(10));
        assert_eq!(backoff.nominal(u32::MAX), Duration::from_secs(10));
        for attempt in 1..6 {
            for _ in 0..100 {
                let delay = backoff.delay(attempt);
                let nominal = backoff.nominal(attempt);
                assert!(delay <= nominal && delay >= nominal.mul_f64(0.75));
            }
        }
    }

    #[test]
    fn outcomes_parse_and_the_hopeless_ones_are_refused() {
        let on = RetryOn::parse("handler_error, max_run_exceeded").unwrap();
        assert!(on.contains(&ErrorCode::HandlerError));
        assert!(on.contains(&ErrorCode::MaxRunExceeded));
        assert!(!on.contains(&ErrorCode::Internal));
        assert!(!RetryOn::DEFAULT.contains(&ErrorCode::BadRequest));
        assert_eq!(on.to_string(), "handler_error,max_run_exceeded");
        let err = RetryOn::parse("bad_request").unwrap_err();
        assert!(err.contains("never retried"), "{err}");
        assert!(RetryOn::parse("sometimes").unwrap_err().contains("unknown"));
    }

    #[test]
    fn attempts_count_the_first_run_and_overrides_replace_what_they_state() {
        let policy = RetryPolicy::default();
        assert!(policy.retries(&ErrorCode::HandlerError, 2));
        assert!(!policy.retries(&ErrorCode::HandlerError, 3));
        assert!(!policy.retries(&ErrorCode::NotFound, 1));
        let policy = policy.overridden(&RetryOverride {
            attempts: Some(5),
            factor: Some(3.0),
            ..RetryOverride::default()
        });
        assert_eq!((policy.attempts, policy.backoff.factor), (5, 3.0));
        assert_eq!(policy.backoff.first, Duration::from_secs(1));
        assert_eq!(
            policy.to_string(),
            "5 attempts, 1s..60s x3 jitter 0.2, on handler_error,internal"
        );
        assert!(parse_range("5m..1s").is_err());
        assert!(parse_range("1s").is_err());
    }
}
