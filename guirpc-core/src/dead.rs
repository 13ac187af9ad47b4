//! A service's dead letters, for a person: list them, show one, send some back to the
//! service for another round of attempts, or drop them. `guirpc dead` is this module on
//! the command line.
//!
//! Dead letters are read with `basic.get` and left unacknowledged, so that those not
//! taken go back to the queue, in their order, when the reading channel closes: reading
//! never loses one. One sent back is published (confirmed) to the queue it came from
//! before it is acknowledged: at worst, a connection lost in between leaves it in both.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection};

use crate::codec::Codec;
use crate::config::BrokerSettings;
use crate::error::Error;
use crate::protocol::{self, dead};

/// One dead letter: why it was given up, and what it carried.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its id, for [`DeadLetters::retry`] and [`DeadLetters::purge`] (a message given up
    /// by the broker itself, without guirpc's headers, has one made from its content).
    pub id: String,
    /// The queue it came from, where it goes back.
    pub queue: String,
    /// The function (or subscriber) that failed it; empty when unknown.
    pub function: String,
    /// The event's topic, for an event.
    pub topic: Option<String>,
    /// The error code of its last run (`handler_error`, ...), or the broker's reason
    /// (`rejected`, `expired`, `delivery_limit`).
    pub code: String,
    /// The error message of its last run.
    pub message: String,
    /// How many times it ran.
    pub attempts: u32,
    /// When its first run failed, seconds since the Unix epoch.
    pub first_failure: Option<u64>,
    /// When its last run failed.
    pub last_failure: Option<u64>,
    /// The server instance that gave it up.
    pub instance: String,
    /// The codec of its arguments.
    pub codec: Codec,
    /// Its arguments, encoded.
    pub body: Vec<u8>,
    headers: FieldTable,
    properties: BasicProperties,
}

impl DeadLetter {
    /// Its arguments (or event) as JSON.
    pub fn arguments(&self) -> Result<serde_json::Value, crate::codec::CodecError> {
        self.codec.decode(&self.body)
    }

    fn read(properties: BasicProperties, body: Vec<u8>, dead_queue: &str) -> DeadLetter {
        let headers = properties.headers().clone().unwrap_or_default();
        let text = |name: &str| {
            let value = headers.inner().get(name)?;
            protocol::value_as_str(value).map(|text| text.into_owned())
        };
        let time = |name: &str| match headers.inner().get(name) {
            Some(AMQPValue::Timestamp(secs)) => Some(*secs),
            Some(other) => protocol::value_as_u64(other),
            None => None,
        };
        // The broker's own record, for a message it dead-lettered itself.
        let death = first_death(&headers);
        let id = text(dead::ID).unwrap_or_else(|| {
            let mut hasher = DefaultHasher::new();
            body.hash(&mut hasher);
            format!("{:?}", headers.inner()).hash(&mut hasher);
            format!("{:016x}", hasher.finish())
        });
        let queue = text(dead::QUEUE)
            .or_else(|| death.as_ref().map(|(queue, _)| queue.clone()))
            .unwrap_or_else(|| {
                dead_queue
                    .strip_suffix(protocol::DEAD_SUFFIX)
                    .unwrap_or(dead_queue)
                    .to_owned()
            });
        let function = text(dead::FUNCTION)
            .or_else(|| text(protocol::HEADER_FUNCTION))
            .or_else(|| properties.kind().as_ref().map(|kind| kind.to_string()))
            .unwrap_or_default();
        let code = text(dead::CODE)
            .or_else(|| death.map(|(_, reason)| reason))
            .unwrap_or_default();
        DeadLetter {
            id,
            queue,
            function,
            topic: text(dead::TOPIC),
            code,
            message: text(dead::MESSAGE).unwrap_or_default(),
            attempts: time(dead::ATTEMPTS).map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX)),
            first_failure: time(dead::FIRST_FAILURE),
            last_failure: time(dead::LAST_FAILURE),
            instance: text(dead::INSTANCE).unwrap_or_default(),
            codec: protocol::received_codec(&properties),
            body,
            headers,
            properties,
        }
    }

    /// The message as it goes back: its own headers, without the dead letter's nor the
    /// count of its attempts (another round begins). Whoever sends it back publishes it as
    /// their own user (the broker refuses another `user_id`), and it runs as their call.
    fn revived(&self) -> BasicProperties {
        let mut headers = FieldTable::default();
        for (name, value) in self.headers.inner() {
            let name_text = name.as_str();
            if name_text.starts_with("guirpc-dead-")
                || name_text == protocol::HEADER_ATTEMPT
                || name_text == protocol::HEADER_FIRST_FAILURE
                || name_text == "x-death"
                || name_text.starts_with("x-first-death-")
                || name_text.starts_with("x-last-death-")
            {
                continue;
            }
            headers.insert(name.clone(), value.clone());
        }
        self.properties.clone().with_headers(headers)
    }
}

/// The queue and the reason of the broker's first `x-death` record.
fn first_death(headers: &FieldTable) -> Option<(String, String)> {
    let text =
        |value: Option<&AMQPValue>| protocol::value_as_str(value?).map(|text| text.into_owned());
    let queue = text(headers.inner().get("x-first-death-queue"))?;
    let reason = text(headers.inner().get("x-first-death-reason")).unwrap_or_default();
    Some((queue, reason))
}

/// A service's dead-letter queue, `<queue>.dead`.
pub struct DeadLetters {
    connection: Connection,
    queue: String,
    /// The user the connection authenticated as: a dead letter sent back is published as
    /// this user, and runs as its call.
    user: String,
}

impl std::fmt::Debug for DeadLetters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetters")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl DeadLetters {
    /// Opens the dead-letter queue of the service `queue` (`<queue>.dead`), or the queue
    /// `dead_queue` itself when given.
    pub async fn open(
        broker: &BrokerSettings,
        queue: &str,
        dead_queue: Option<&str>,
    ) -> Result<DeadLetters, Error> {
        let masked = crate::uri::mask_uri(&broker.uri);
        let brokers = crate::link::Brokers::new(broker);
        let connected = brokers
            .connect("guirpc dead letters")
            .await
            .map_err(|err| Error::connection(&masked, err))?;
        let queue = dead_queue
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{queue}{}", protocol::DEAD_SUFFIX));
        let letters = DeadLetters {
            connection: connected.connection,
            queue,
            user: connected.user,
        };
        letters.count().await?;
        Ok(letters)
    }

    /// The dead-letter queue's name.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// How many dead letters the queue holds.
    pub async fn count(&self) -> Result<u32, Error> {
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|err| {
                if protocol::is_not_found(&err) {
                    Error::Config(format!(
                        "no dead-letter queue `{}`: the service keeps none yet (its server declares it on start, with service.dead_letters = true)",
                        self.queue
                    ))
                } else {
                    self.failed(err)
                }
            })?;
        let _ = channel.close(200, "counted".into()).await;
        Ok(declared.message_count())
    }

    /// Every dead letter (up to `limit`), oldest first; they stay in the queue.
    pub async fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, Error> {
        let channel = self.channel().await?;
        let letters = self.read(&channel, limit).await?;
        // Closing gives them all back, in their order.
        let _ = channel.close(200, "listed".into()).await;
        Ok(letters.into_iter().map(|(_, letter)| letter).collect())
    }

    /// Sends the dead letters `select` picks back to the queues they came from, for
    /// another round of attempts; the others stay. Returns those sent back; one whose
    /// queue is gone stays, and the error says so once the others are sent.
    pub async fn retry(
        &self,
        mut select: impl FnMut(&DeadLetter) -> bool,
    ) -> Result<Vec<DeadLetter>, Error> {
        let channel = self.channel().await?;
        let publisher = self.channel().await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|err| self.failed(err))?;
        let mut sent = Vec::new();
        let mut stranded = Vec::new();
        for (tag, letter) in self.read(&channel, usize::MAX).await? {
            if !select(&letter) {
                continue;
            }
            let confirmation = publisher
                .basic_publish(
                    "".into(),
                    letter.queue.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &letter.body,
                    letter.revived().with_user_id(self.user.as_str().into()),
                )
                .await
                .map_err(|err| self.failed(err))?
                .await
                .map_err(|err| self.failed(err))?;
            match confirmation {
                Confirmation::Ack(None) | Confirmation::NotRequested => {
                    channel
                        .basic_ack(tag, BasicAckOptions::default())
                        .await
                        .map_err(|err| self.failed(err))?;
                    sent.push(letter);
                }
                Confirmation::Ack(Some(_)) | Confirmation::Nack(_) => {
                    stranded.push(format!("{} (to `{}`)", letter.id, letter.queue))
                }
            }
        }
        let _ = publisher.close(200, "sent back".into()).await;
        let _ = channel.close(200, "sent back".into()).await;
        if !stranded.is_empty() {
            return Err(Error::Config(format!(
                "sent {} dead letter(s) back; {} stayed in `{}`, their queue gone or refusing them: {}",
                sent.len(),
                stranded.len(),
                self.queue,
                stranded.join(", ")
            )));
        }
        Ok(sent)
    }

    /// Drops the dead letters `select` picks; the others stay. Returns those dropped.
    pub async fn purge(
        &self,
        mut select: impl FnMut(&DeadLetter) -> bool,
    ) -> Result<Vec<DeadLetter>, Error> {
        let channel = self.channel().await?;
        let mut dropped = Vec::new();
        for (tag, letter) in self.read(&channel, usize::MAX).await? {
            if select(&letter) {
                channel
                    .basic_ack(tag, BasicAckOptions::default())
                    .await
                    .map_err(|err| self.failed(err))?;
                dropped.push(letter);
            }
        }
        let _ = channel.close(200, "purged".into()).await;
        Ok(dropped)
    }

    /// Takes up to `limit` dead letters on `channel`, unacknowledged: as many as the
    /// queue held when reading began, so that a letter arriving meanwhile waits its turn.
    async fn read(&self, channel: &Channel, limit: usize) -> Result<Vec<(u64, DeadLetter)>, Error> {
        let mut letters = Vec::new();
        let mut left = None;
        while letters.len() < limit && left != Some(0) {
            let got = channel
                .basic_get(
                    self.queue.as_str().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(|err| self.failed(err))?;
            let Some(got) = got else { break };
            let remaining = got.message_count;
            left = Some(left.map_or(remaining, |left: u32| left.saturating_sub(1).min(remaining)));
            let delivery = got.delivery;
            let letter = DeadLetter::read(delivery.properties, delivery.data, &self.queue);
            letters.push((delivery.delivery_tag, letter));
        }
        Ok(letters)
    }

    async fn channel(&self) -> Result<Channel, Error> {
        self.connection
            .create_channel()
            .await
            .map_err(|err| self.failed(err))
    }

    fn failed(&self, err: lapin::Error) -> Error {
        Error::Config(format!("dead-letter queue `{}`: {err}", self.queue))
    }
}
