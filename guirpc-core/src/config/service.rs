//! What a server takes of the settings.

use std::time::Duration;

use super::{BrokerSettings, Delivery, QueueType, Settings};

/// What a server needs to know.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ServiceSettings {
    /// Where the broker is, and how to reach it.
    pub broker: BrokerSettings,
    /// The exchange requests arrive through.
    pub exchange: String,
    /// A routing key the queue is bound to `exchange` with besides its name (`""`: none).
    pub routing_key: String,
    /// Whether `exchange` is declared durable when it does not exist.
    pub exchange_durable: bool,
    /// The request queue.
    pub queue: String,
    /// Unacknowledged requests the broker sends ahead.
    pub prefetch: u16,
    /// Calls run at once.
    pub concurrency: usize,
    /// When requests are acknowledged.
    pub delivery: Delivery,
    /// How long a shutdown waits for running calls.
    pub shutdown_grace: Duration,
    /// The largest request body decoded.
    pub max_message_size: usize,
    /// The largest reply body sent.
    pub max_reply_size: usize,
    /// The longest run of a function that states none.
    pub max_run: Duration,
    /// The type of the service queue.
    pub queue_type: QueueType,
    /// Quorum queues: deliveries after which an unsettled request is dead-lettered (0: the
    /// broker's default).
    pub delivery_limit: u32,
    /// Whether failed casts and events are kept as dead letters (in `<queue>.dead`).
    pub dead_letters: bool,
    /// Where rejected requests are dead-lettered by the broker, and the dead letters of
    /// casts and events go in place of `<queue>.dead`; empty for nowhere.
    pub dead_letter_exchange: String,
    /// Where `/metrics`, `/healthz`, `/readyz` and the status page are served; empty for
    /// nowhere; a bare port for loopback's.
    pub metrics_addr: String,
    /// The bearer token `/metrics` and the status page want; empty for none.
    pub metrics_token: String,
    /// The topic exchange `#[subscribe]` functions are bound to.
    pub events_exchange: String,
    /// How failed casts and events are run again, unless their function says otherwise.
    pub retry: crate::retry::RetryPolicy,
    /// Who may call what, over what the code says: the `[[allow]]` tables.
    pub access: Vec<crate::access::AccessRule>,
}

impl ServiceSettings {
    /// Whether a request the server rejects goes to the dead-letter exchange: one is
    /// configured, and requests are acknowledged after their outcome (at-most-once
    /// acknowledges them on receipt, when there is nothing left to reject).
    pub(crate) fn rejects_to_exchange(&self) -> bool {
        !self.dead_letter_exchange.is_empty() && self.delivery == Delivery::AtLeastOnce
    }

    /// The service's dead-letter queue, `<queue>.dead`, when the server keeps its own.
    pub fn dead_letter_queue(&self) -> Option<String> {
        (self.dead_letters && self.dead_letter_exchange.is_empty())
            .then(|| format!("{}{}", self.queue, crate::protocol::DEAD_SUFFIX))
    }

    /// Where the dead letters of casts and events are published: the exchange and the
    /// routing key, or `None` when they are dropped.
    pub(crate) fn dead_letter_target(&self) -> Option<(String, String)> {
        if !self.dead_letter_exchange.is_empty() {
            return Some((self.dead_letter_exchange.clone(), self.queue.clone()));
        }
        self.dead_letter_queue().map(|queue| (String::new(), queue))
    }
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Settings::default().service()
    }
}
