//! Where a client's calls go: to the broker ([`amqp`]), or to this program's own
//! functions in memory ([`memory`], behind [`crate::testing`]). Both carry the calls the
//! client's pipeline hands them, and retry an idempotent call the same way
//! ([`with_retries`]).

pub(crate) mod amqp;
pub(crate) mod memory;

use std::future::Future;
use std::time::Duration;

use tracing::debug;

use crate::error::Error;
use crate::middleware::ClientRequest;
use amqp::Subscription;

/// A client's transport, as the client holds it (its calls go through the pipeline).
#[derive(Debug)]
pub(crate) enum Transport {
    /// To the broker.
    Amqp(amqp::Handle),
    /// To this program's own functions.
    Memory,
}

impl Transport {
    /// Whether calls can be sent now (the in-memory transport always can).
    pub(crate) fn is_connected(&self) -> bool {
        match self {
            Transport::Amqp(amqp) => amqp.is_connected(),
            Transport::Memory => true,
        }
    }

    /// Why the broker blocks the client's publishes, while it does.
    pub(crate) fn blocked(&self) -> Option<String> {
        match self {
            Transport::Amqp(amqp) => amqp.blocked(),
            Transport::Memory => None,
        }
    }

    /// Waits until calls can be sent, at most `limit`; whether they can.
    pub(crate) async fn wait_connected(&self, limit: Duration) -> bool {
        match self {
            Transport::Amqp(amqp) => amqp.wait_connected(limit).await,
            Transport::Memory => true,
        }
    }

    /// Closes the connection, if there is one.
    pub(crate) async fn close(&self) {
        if let Transport::Amqp(amqp) = self {
            amqp.close().await;
        }
    }

    /// Subscribes to events on the broker.
    pub(crate) async fn subscribe(&self, pattern: &str) -> Result<Subscription, Error> {
        match self {
            Transport::Amqp(amqp) => amqp.subscribe(pattern).await,
            Transport::Memory => Err(Error::Config(
                "the in-memory transport has no events to subscribe to".into(),
            )),
        }
    }
}

/// Sends a call, and again after a retriable failure as often as its retries allow;
/// `wait_connected` waits for a lost connection to come back before the next attempt.
pub(crate) async fn with_retries<W, F, A, T>(
    request: &ClientRequest,
    wait_connected: impl Fn(Duration) -> W,
    attempt: A,
) -> Result<T, Error>
where
    W: Future<Output = bool>,
    A: Fn() -> F,
    F: Future<Output = Result<T, Error>>,
{
    let mut attempts = 0;
    loop {
        match attempt().await {
            Err(err) if err.is_retriable() && attempts < request.retries => {
                attempts += 1;
                debug!(
                    function = request.function,
                    attempt = attempts,
                    "retrying an idempotent call: {err}"
                );
                // A lost link takes a moment to come back; do not spend the retries on it.
                wait_connected(request.timeout).await;
            }
            outcome => return outcome,
        }
    }
}
