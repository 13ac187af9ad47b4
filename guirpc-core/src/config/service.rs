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
    /// Where rejected requests are dead-lettered; empty for nowhere (they are acknowledged).
    pub dead_letter_exchange: String,
    /// Where `/metrics`, `/healthz`, `/readyz` and the status page are served; empty for
    /// nowhere.
    pub metrics_addr: String,
    /// The topic exchange `#[subscribe]` functions are bound to.
    pub events_exchange: String,
    /// How many more times a failed event is run before it is dead-lettered.
    pub event_retries: u32,
}

impl ServiceSettings {
    /// Whether a request the server rejects goes to the dead-letter exchange: one is
    /// configured, and requests are acknowledged after their outcome (at-most-once
    /// acknowledges them on receipt, when there is nothing left to reject).
    pub(crate) fn dead_letters(&self) -> bool {
        !self.dead_letter_exchange.is_empty() && self.delivery == Delivery::AtLeastOnce
    }
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Settings::default().service()
    }
}
