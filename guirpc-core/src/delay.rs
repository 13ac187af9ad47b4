//! The delay ladder: how a message waits in the broker, with the broker's core features
//! only (no plugin), before it goes to its queue. Scheduled casts and the retries of casts
//! and events both wait on it.
//!
//! It is [`LEVELS`] rungs, each a topic exchange and a quorum queue of the same name,
//! `guirpc.delay.<2^N>ms`, whose messages all live `2^N` milliseconds (`x-message-ttl`:
//! one TTL per queue, so that they expire in order, at the head). A message's routing key
//! spells its delay in binary, highest rung first, then its destination queue:
//! `0.0.….1.0.1.orders` waits 5 ms then goes to `orders`. It is published to the top
//! rung's exchange; each rung's exchange routes it to its own queue when its bit is `1`
//! and on to the rung below when it is `0`; each queue, as its messages expire,
//! dead-letters them to the rung below (at least once: `x-dead-letter-strategy`), and the
//! last rung to [`DELIVER_EXCHANGE`], where every service queue is bound by its name. So a
//! message waits exactly its delay, plus a few milliseconds per rung it passes, and no
//! process holds it meanwhile: it survives a restart of its server and (the queues and
//! messages being durable) of the broker.
//!
//! The longest delay is [`MAX_DELAY`] (2^32 - 1 ms, about 49.7 days); delays are counted in
//! whole milliseconds, rounded up.

use std::time::Duration;

use lapin::Channel;
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};

/// How many rungs: delays up to 2^32 - 1 ms.
pub const LEVELS: u32 = 32;

/// The longest delay a message can wait.
pub const MAX_DELAY: Duration = Duration::from_millis((1 << LEVELS) - 1);

/// The exchange the last rung dead-letters to; each service queue is bound to it with
/// [`binding`].
pub const DELIVER_EXCHANGE: &str = "guirpc.delay.deliver";

/// Where a message goes that reaches the ladder's end for a queue no longer there (its
/// service's queue deleted while it waited): the exchange [`DELIVER_EXCHANGE`] falls back
/// to, and a durable queue of the same name, for a person to look into.
pub const UNROUTABLE: &str = "guirpc.delay.unroutable";

/// The exchange a delayed message is published to: the top rung's.
pub fn entry() -> String {
    rung(LEVELS - 1)
}

/// The name of the exchange and the queue of rung `level`: `guirpc.delay.4096ms`.
pub fn rung(level: u32) -> String {
    format!("guirpc.delay.{}ms", 1u64 << level)
}

/// The delay in whole milliseconds, rounded up, or why it cannot wait that long.
pub fn millis(delay: Duration) -> Result<u64, String> {
    let millis = delay.as_nanos().div_ceil(1_000_000);
    u64::try_from(millis)
        .ok()
        .filter(|&millis| millis <= MAX_DELAY.as_millis() as u64)
        .ok_or_else(|| {
            format!(
                "a delay of {:.0} s is longer than the longest a message can wait ({} ms, about 49.7 days)",
                delay.as_secs_f64(),
                MAX_DELAY.as_millis()
            )
        })
}

/// The routing key of a message that waits `millis` then goes to `queue`.
pub fn routing_key(millis: u64, queue: &str) -> String {
    let mut key = String::with_capacity(2 * LEVELS as usize + queue.len());
    for level in (0..LEVELS).rev() {
        key.push(if millis >> level & 1 == 1 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(queue);
    key
}

/// The pattern binding `queue` to [`DELIVER_EXCHANGE`]: any delay, then the queue's name.
pub fn binding(queue: &str) -> String {
    let mut pattern = "*.".repeat(LEVELS as usize);
    pattern.push_str(queue);
    pattern
}

/// The pattern of rung `level`'s exchange that matches a key whose bit `level` is `bit`.
fn pattern(level: u32, bit: char) -> String {
    let mut pattern = "*.".repeat((LEVELS - 1 - level) as usize);
    pattern.push(bit);
    pattern.push_str(".#");
    pattern
}

const DURABLE: ExchangeDeclareOptions = ExchangeDeclareOptions {
    passive: false,
    durable: true,
    auto_delete: false,
    internal: false,
    nowait: false,
};

/// Declares the ladder's end: [`DELIVER_EXCHANGE`], and [`UNROUTABLE`] behind it.
pub(crate) async fn declare_end(channel: &Channel) -> lapin::Result<()> {
    channel
        .exchange_declare(
            UNROUTABLE.into(),
            lapin::ExchangeKind::Fanout,
            DURABLE,
            FieldTable::default(),
        )
        .await?;
    // Replicated, as every queue of the ladder is: a cluster that loses a node keeps it.
    let mut quorum = FieldTable::default();
    quorum.insert(
        crate::protocol::ARG_QUEUE_TYPE.into(),
        AMQPValue::LongString("quorum".into()),
    );
    channel
        .queue_declare(
            UNROUTABLE.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            quorum,
        )
        .await?;
    channel
        .queue_bind(
            UNROUTABLE.into(),
            UNROUTABLE.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut arguments = FieldTable::default();
    arguments.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(UNROUTABLE.into()),
    );
    channel
        .exchange_declare(
            DELIVER_EXCHANGE.into(),
            lapin::ExchangeKind::Topic,
            DURABLE,
            arguments,
        )
        .await
}

/// Declares the ladder (idempotent: every client and server that uses it does, once per
/// connection).
pub(crate) async fn declare(channel: &Channel) -> lapin::Result<()> {
    let durable = DURABLE;
    declare_end(channel).await?;
    for level in 0..LEVELS {
        let name = rung(level);
        let below = match level {
            0 => DELIVER_EXCHANGE.to_owned(),
            _ => rung(level - 1),
        };
        channel
            .exchange_declare(
                name.as_str().into(),
                lapin::ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        let mut arguments = FieldTable::default();
        let text = |text: &str| AMQPValue::LongString(text.into());
        arguments.insert(crate::protocol::ARG_QUEUE_TYPE.into(), text("quorum"));
        arguments.insert(
            "x-message-ttl".into(),
            AMQPValue::LongLongInt(1i64 << level),
        );
        arguments.insert(
            crate::protocol::ARG_DEAD_LETTER_EXCHANGE.into(),
            text(&below),
        );
        arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        arguments.insert("x-overflow".into(), text("reject-publish"));
        channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await?;
        channel
            .queue_bind(
                name.as_str().into(),
                name.as_str().into(),
                pattern(level, '1').into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_bind(
                below.as_str().into(),
                name.as_str().into(),
                pattern(level, '0').into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Binds `queue` to [`DELIVER_EXCHANGE`], which [`declare`] must have declared.
pub(crate) async fn bind(channel: &Channel, queue: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            DELIVER_EXCHANGE.into(),
            binding(queue).into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_spells_the_delay_in_binary_highest_rung_first() {
        let key = routing_key(5, "orders.v2");
        assert!(key.ends_with(".1.0.1.orders.v2"), "{key}");
        assert_eq!(key.split('.').count(), LEVELS as usize + 2);
        assert_eq!(pattern(0, '1'), format!("{}1.#", "*.".repeat(31)));
        assert_eq!(pattern(31, '0'), "0.#");
        assert_eq!(rung(12), "guirpc.delay.4096ms");
        assert_eq!(entry(), "guirpc.delay.2147483648ms");
    }

    #[test]
    fn delays_round_up_to_the_millisecond_and_stop_at_the_longest() {
        assert_eq!(millis(Duration::from_micros(1500)), Ok(2));
        assert_eq!(millis(MAX_DELAY), Ok((1 << 32) - 1));
        let err = millis(MAX_DELAY + Duration::from_millis(1)).unwrap_err();
        assert!(err.contains("49.7 days"), "{err}");
    }
}
