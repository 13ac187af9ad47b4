//! Casts and events as jobs: what becomes of one that failed. No caller hears of it, so
//! the server decides: run it again later, by its retry policy ([`crate::retry`]), or give
//! it up as a dead letter that says why.
//!
//! A retry is the same message published again, with its attempt counted
//! ([`HEADER_ATTEMPT`]), to the broker's delay ladder ([`crate::delay`]), which brings it
//! back to the queue it came from when its delay is over: no server holds it meanwhile,
//! and it survives a restart of the server and of the broker. A dead letter is the message
//! published to the service's dead-letter queue (`<queue>.dead`, or the configured
//! `dead_letter_exchange`) with headers a person can read: function, code, message,
//! attempts, first and last failure, server instance ([`protocol::dead`]).
//!
//! Either is published on a confirming channel of the session's own, mandatory, and the
//! original is acknowledged only once the broker has the copy: a connection lost between
//! the two redelivers the original (at least once, never lost). A copy the broker refuses
//! leaves the original rejected, for the queue's own dead-letter exchange if it has one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::{Mutex, OnceCell};
use tracing::{error, warn};

use super::Shared;
use super::settle::Verdict;
use crate::metrics::Labels;
use crate::protocol::{self, ErrorCode, HEADER_ATTEMPT, HEADER_FIRST_FAILURE, dead};
use crate::retry::RetryPolicy;

/// A session's retries and dead letters.
pub(super) struct Jobs {
    connection: Arc<Connection>,
    /// The user the session authenticated as: the `user_id` of what it publishes, and the
    /// one user whose messages may name a caller they were published for.
    pub(super) user: Arc<str>,
    channel: OnceCell<Channel>,
    /// The queues bound to the ladder's end, once the ladder is declared.
    ladder: Mutex<Option<HashSet<String>>>,
}

/// A cast or an event whose run failed.
pub(super) struct Failed<'a> {
    /// The queue it was taken from, where a retry comes back.
    pub queue: &'a str,
    /// The function or subscriber that ran it.
    pub function: &'a str,
    /// The event's topic.
    pub topic: Option<&'a str>,
    pub policy: RetryPolicy,
    pub properties: &'a BasicProperties,
    pub body: &'a [u8],
    pub code: ErrorCode,
    pub message: String,
    /// Who sent it: the copy is published by the server, on this caller's behalf.
    pub caller: &'a crate::Caller,
}

/// Why a copy was not published.
enum Refused {
    /// The connection failed first: leave the original unsettled, for redelivery.
    Lost,
    /// The broker would not take it.
    Broker(String),
}

impl Jobs {
    pub(super) fn new(connection: Arc<Connection>, user: Arc<str>) -> Jobs {
        Jobs {
            connection,
            user,
            channel: OnceCell::new(),
            ladder: Mutex::new(None),
        }
    }

    /// Binds `queue` to the ladder's end, so that scheduled casts reach it (the ladder's
    /// end is declared if it is not yet; the ladder itself waits for its first use), on a
    /// channel of its own; a failure is logged.
    pub(super) async fn bind(connection: Arc<Connection>, queue: String) {
        let bound = async {
            let channel = connection.create_channel().await?;
            crate::delay::declare_end(&channel).await?;
            crate::delay::bind(&channel, &queue).await?;
            channel.close(200, "bound".into()).await
        };
        if let Err(err) = bound.await {
            warn!(
                "cannot bind queue `{queue}` to the delay ladder ({err}); scheduled casts to it bind it themselves"
            );
        }
    }

    /// Counts a run of a cast or an event, by its attempt.
    pub(super) fn ran(&self, shared: &Shared, function: &str, properties: &BasicProperties) {
        if let Some(metrics) = &shared.metrics {
            let attempt = attempt(properties);
            let attempt = if attempt >= 10 {
                "10+".to_owned()
            } else {
                attempt.to_string()
            };
            let labels = job_labels(&shared.settings.queue, function, Some(attempt));
            metrics.server().attempts.get_or_create(&labels).inc();
        }
    }

    /// Runs a failed cast or event again later, or gives it up: how to settle the
    /// original, or `None` when the connection was lost first (leave it: the broker
    /// delivers it again).
    pub(super) async fn failed(&self, shared: &Shared, failed: Failed<'_>) -> Option<Verdict> {
        let attempt = attempt(failed.properties);
        let Failed {
            function, topic, ..
        } = failed;
        let topic = topic.unwrap_or("");
        let now = SystemTime::now();
        if failed.policy.retries(&failed.code, attempt) {
            let delay = failed.policy.backoff.delay(attempt);
            let mut headers = forwarded(failed.properties);
            headers.insert(
                HEADER_ATTEMPT.into(),
                AMQPValue::LongLongInt(i64::from(attempt) + 1),
            );
            if !headers.inner().contains_key(HEADER_FIRST_FAILURE) {
                headers.insert(HEADER_FIRST_FAILURE.into(), timestamp(now));
            }
            if !topic.is_empty() {
                headers.insert(
                    protocol::HEADER_TOPIC.into(),
                    AMQPValue::LongString(topic.into()),
                );
            }
            let properties = self.on_behalf(failed.properties, headers, failed.caller);
            match self
                .retry(failed.queue, delay, properties, failed.body)
                .await
            {
                Ok(()) => {
                    warn!(
                        function,
                        topic,
                        attempt,
                        "failed: {} ({}); attempt {} of {} in {:.1}s",
                        failed.message,
                        failed.code.as_str(),
                        attempt + 1,
                        failed.policy.attempts,
                        delay.as_secs_f64()
                    );
                    if let Some(metrics) = &shared.metrics {
                        let labels = job_labels(&shared.settings.queue, function, None);
                        metrics.server().retries.get_or_create(&labels).inc();
                    }
                    return Some(Verdict::Served);
                }
                Err(Refused::Lost) => return None,
                Err(Refused::Broker(why)) => error!(
                    function,
                    "cannot schedule the retry ({why}); giving it up as a dead letter"
                ),
            }
        }
        let Some((exchange, routing_key)) = shared.settings.dead_letter_target() else {
            error!(
                function,
                topic,
                attempt,
                "failed: {} ({}), after {attempt} attempt(s); dropped: the service keeps no dead letters (service.dead_letters = false)",
                failed.message,
                failed.code.as_str()
            );
            shared.count_rejected_late();
            return Some(Verdict::Served);
        };
        let mut headers = forwarded(failed.properties);
        let first = headers
            .inner()
            .get(HEADER_FIRST_FAILURE)
            .cloned()
            .unwrap_or_else(|| timestamp(now));
        let text = |text: &str| AMQPValue::LongString(text.into());
        let id = format!("{:016x}", fastrand::u64(..));
        for (name, value) in [
            (dead::ID, text(&id)),
            (dead::QUEUE, text(failed.queue)),
            (dead::FUNCTION, text(function)),
            (dead::CODE, text(failed.code.as_str())),
            (dead::MESSAGE, text(shortened(&failed.message))),
            (dead::ATTEMPTS, AMQPValue::LongLongInt(attempt.into())),
            (dead::FIRST_FAILURE, first),
            (dead::LAST_FAILURE, timestamp(now)),
            (dead::INSTANCE, text(&shared.dispatcher.instance)),
        ] {
            headers.insert(name.into(), value);
        }
        if !topic.is_empty() {
            // The topic for a person, and for the event when it is sent back.
            headers.insert(dead::TOPIC.into(), text(topic));
            headers.insert(protocol::HEADER_TOPIC.into(), text(topic));
        }
        let properties = self.on_behalf(failed.properties, headers, failed.caller);
        let sent = self
            .publish(&exchange, &routing_key, properties, failed.body)
            .await;
        match sent {
            Ok(()) => {
                error!(
                    function,
                    topic,
                    attempt,
                    dead_letter = id,
                    "failed: {} ({}), after {attempt} attempt(s); dead-lettered to `{routing_key}`",
                    failed.message,
                    failed.code.as_str()
                );
                shared.count_dead_letter(function, &failed.code, &failed.message);
                Some(Verdict::Served)
            }
            Err(Refused::Lost) => None,
            Err(Refused::Broker(why)) => {
                error!(
                    function,
                    "failed: {} ({}); the broker refused its dead letter ({why}): rejected",
                    failed.message,
                    failed.code.as_str()
                );
                shared.count_rejected_late();
                Some(Verdict::Rejected)
            }
        }
    }

    /// The properties of a copy the server publishes as its own user (the broker refuses
    /// another `user_id`), for `caller`.
    fn on_behalf(
        &self,
        properties: &BasicProperties,
        mut headers: FieldTable,
        caller: &crate::Caller,
    ) -> BasicProperties {
        if let Some(user) = caller.user() {
            headers.insert(
                crate::caller::HEADER_ON_BEHALF_OF.into(),
                AMQPValue::LongString(user.into()),
            );
        }
        properties
            .clone()
            .with_headers(headers)
            .with_user_id(ShortString::from(&*self.user))
    }

    /// Publishes a retry to the ladder, declaring it (and binding `queue` to its end)
    /// first if this session has not yet.
    async fn retry(
        &self,
        queue: &str,
        delay: std::time::Duration,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), Refused> {
        let millis = crate::delay::millis(delay).map_err(Refused::Broker)?;
        {
            let mut ladder = self.ladder.lock().await;
            if !ladder.as_ref().is_some_and(|bound| bound.contains(queue)) {
                let channel = self.channel().await?;
                if ladder.is_none() {
                    crate::delay::declare(channel).await.map_err(refused)?;
                }
                let bound = ladder.get_or_insert_default();
                crate::delay::bind(channel, queue).await.map_err(refused)?;
                bound.insert(queue.to_owned());
            }
        }
        let key = crate::delay::routing_key(millis, queue);
        self.publish(&crate::delay::entry(), &key, properties, body)
            .await
    }

    /// Publishes on the confirming channel, mandatory, and waits for the broker.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        properties: BasicProperties,
        body: &[u8],
    ) -> Result<(), Refused> {
        let channel = self.channel().await?;
        let confirm = channel
            .basic_publish(
                ShortString::from(exchange),
                ShortString::from(routing_key),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                properties,
            )
            .await
            .map_err(refused)?;
        match confirm.await.map_err(refused)? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(Refused::Broker(format!(
                "no queue is bound for `{routing_key}` on exchange `{exchange}`"
            ))),
            Confirmation::Nack(_) => Err(Refused::Broker("the broker nacked it".into())),
        }
    }

    async fn channel(&self) -> Result<&Channel, Refused> {
        self.channel
            .get_or_try_init(|| async {
                let channel = self.connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                Ok(channel)
            })
            .await
            .map_err(refused)
    }
}

fn refused(err: lapin::Error) -> Refused {
    // A channel the broker closed over one message would say so; a failed connection
    // leaves the original for redelivery.
    match err.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Refused::Broker(amqp.to_string()),
        _ => Refused::Lost,
    }
}

/// Which run of its message this was: 1 for the first.
pub(super) fn attempt(properties: &BasicProperties) -> u32 {
    properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.inner().get(HEADER_ATTEMPT))
        .and_then(protocol::value_as_u64)
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX).max(1))
}

/// The message's headers without what the broker added as it dead-lettered it on the
/// ladder (`x-death` grows by a record per rung), nor a former dead letter's.
pub(super) fn forwarded(properties: &BasicProperties) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(old) = properties.headers() {
        for (name, value) in old.inner() {
            let name_text = name.as_str();
            if name_text == "x-death"
                || name_text.starts_with("x-first-death-")
                || name_text.starts_with("x-last-death-")
                || name_text.starts_with("guirpc-dead-")
                || name_text == crate::caller::HEADER_ON_BEHALF_OF
            {
                continue;
            }
            headers.insert(name.clone(), value.clone());
        }
    }
    headers
}

/// The longest error message a dead letter's header carries: headers travel in one frame
/// (RabbitMQ's `frame_max`, 128 KiB by default), whatever a function's error says.
const MESSAGE_IN_HEADER: usize = 4096;

/// `message`, cut at a character boundary to fit [`MESSAGE_IN_HEADER`].
fn shortened(message: &str) -> &str {
    if message.len() <= MESSAGE_IN_HEADER {
        return message;
    }
    let mut end = MESSAGE_IN_HEADER;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

fn timestamp(at: SystemTime) -> AMQPValue {
    AMQPValue::Timestamp(
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
    )
}

fn job_labels(queue: &str, function: &str, attempt: Option<String>) -> Labels {
    let mut labels = vec![
        ("queue", queue.to_owned()),
        ("function", function.to_owned()),
    ];
    if let Some(attempt) = attempt {
        labels.push(("attempt", attempt));
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        assert_eq!(shortened("short"), "short");
        let long = "é".repeat(MESSAGE_IN_HEADER);
        let cut = shortened(&long);
        assert!(cut.len() <= MESSAGE_IN_HEADER && cut.len() >= MESSAGE_IN_HEADER - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn forwarded_headers_leave_the_ladders_and_a_former_dead_letters_behind() {
        let mut headers = FieldTable::default();
        for name in [
            "x-death",
            "x-first-death-queue",
            "guirpc-dead-code",
            "keep-me",
        ] {
            headers.insert(name.into(), AMQPValue::LongString("v".into()));
        }
        let properties = BasicProperties::default().with_headers(headers);
        let kept: Vec<String> = forwarded(&properties)
            .inner()
            .keys()
            .map(|name| name.to_string())
            .collect();
        assert_eq!(kept, ["keep-me"]);
    }
}
