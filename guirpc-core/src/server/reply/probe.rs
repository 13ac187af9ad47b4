//! The probe a server makes of its broker at every connection: which direct reply-to
//! addresses the broker writes, and whether it delivers a reply to one yet.

use lapin::options::BasicPublishOptions;
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection};
use tracing::{debug, info, warn};

use super::ReplyNodes;
use crate::protocol::{self, DirectReplyTo};

impl ReplyNodes {
    /// Asks the broker for a direct reply-to address of `connection`'s own (a message to a
    /// queue of the probe's, with `reply_to` for the broker to fill in): its node is known
    /// from then on, and whether the broker writes addresses as this server reads them. A
    /// probe that fails changes nothing: unreadable addresses are then isolated, not refused.
    ///
    /// The probe also sends a reply to that address, and waits (at most [`BOOTING`]) until
    /// one comes back: RabbitMQ 4.0 accepts connections a moment before it has booted, and
    /// drops the direct replies published in that moment, so a server that took requests
    /// at once would answer callers who never hear. Until its replies arrive, the server
    /// takes none; its requests wait in the queue.
    pub(in crate::server) async fn probe(&self, connection: &Connection) {
        use std::sync::atomic::Ordering::Relaxed;
        let started = std::time::Instant::now();
        let mut waited = false;
        // A broker that never delivered a reply to the server's own address (something
        // between them that does not pass it on) is not waited for again at the next
        // connection.
        let patient = !self.undelivered.load(Relaxed);
        let probed = loop {
            let left = BOOTING.saturating_sub(started.elapsed());
            let attempt = tokio::time::timeout(left.max(PROBE_WAIT), probe_address(connection));
            let Ok(attempt) = attempt.await else {
                warn!(
                    "the broker did not answer the probe of its direct reply-to addresses within {BOOTING:?}; taking requests anyway"
                );
                return;
            };
            match attempt {
                Ok(probed) if patient && !probed.delivered && started.elapsed() < BOOTING => {
                    if !waited {
                        info!(
                            "the broker does not deliver direct replies yet (still booting?); requests are taken once it does"
                        );
                        waited = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                probed => break probed,
            }
        };
        match probed {
            Ok(Probed { address, delivered }) => {
                if !delivered {
                    if patient {
                        warn!(
                            "the broker did not deliver a direct reply to this server's own address within {BOOTING:?}; taking requests anyway"
                        );
                    }
                    self.undelivered.store(true, Relaxed);
                } else if waited {
                    info!("the broker delivers direct replies: taking requests");
                }
                let mut scratch = [0; 96];
                if let DirectReplyTo::Node(node) = protocol::direct_reply_to(&address, &mut scratch)
                {
                    self.learn(node.into());
                    self.readable
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                } else {
                    warn!(
                        "the broker writes direct reply-to addresses in a form this server cannot read ({address}): replies to such addresses go out on connections of their own"
                    );
                }
            }
            Err(err) => debug!("could not probe the broker's direct reply-to addresses: {err}"),
        }
    }
}

/// How long a server waits at most for the broker to deliver direct replies before it takes
/// requests (see [`ReplyNodes::probe`]).
const BOOTING: std::time::Duration = std::time::Duration::from_secs(10);
/// How long one probe waits for its reply to come back.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// What a probe found.
struct Probed {
    /// The direct reply-to address the broker gave a channel of the connection (empty if
    /// it gave none).
    address: String,
    /// Whether a reply to that address came back to the channel within a second.
    delivered: bool,
}

/// The direct reply-to address the broker gives a channel of `connection`, and whether a
/// reply published to it is delivered.
async fn probe_address(connection: &Connection) -> Result<Probed, lapin::Error> {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    let channel = connection.create_channel().await?;
    let probed = async {
        let mut consumer =
            protocol::consume_no_ack(&channel, protocol::DIRECT_REPLY_TO.into()).await?;
        let private = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        };
        let queue = channel
            .queue_declare("".into(), private, FieldTable::default())
            .await?;
        channel
            .basic_publish(
                "".into(),
                queue.name().clone(),
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default().with_reply_to(protocol::DIRECT_REPLY_TO.into()),
            )
            .await?;
        // Routed at once; the get may still come first.
        let mut address = None;
        for _ in 0..100 {
            let get = BasicGetOptions { no_ack: true };
            if let Some(message) = channel.basic_get(queue.name().clone(), get).await? {
                address = message.delivery.properties.reply_to().clone();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let Some(address) = address else {
            return Ok(Probed {
                address: String::new(),
                delivered: true,
            });
        };
        channel
            .basic_publish(
                "".into(),
                address.clone(),
                BasicPublishOptions::default(),
                b"",
                BasicProperties::default(),
            )
            .await?;
        let reply =
            tokio::time::timeout(PROBE_WAIT, futures_lite::StreamExt::next(&mut consumer)).await;
        // Exclusive, it would otherwise last as long as the connection.
        let _ = channel
            .queue_delete(queue.name().clone(), Default::default())
            .await;
        Ok(Probed {
            address: address.to_string(),
            delivered: matches!(reply, Ok(Some(Ok(_)))),
        })
    }
    .await;
    let _ = channel.close(200, "probed".into()).await;
    probed
}
