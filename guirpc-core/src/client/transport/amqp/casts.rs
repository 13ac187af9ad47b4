//! Casts and events: published on the link's confirming channel, done when the broker
//! has taken them.

use std::time::SystemTime;

use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, ShortString};
use lapin::{BasicProperties, Confirmation};

use super::link::Link;
use super::{Shared, no_route, not_connected, timed_out};
use crate::error::Error;
use crate::middleware::{CallKind, ClientRequest, ClientResponse};
use crate::protocol;

/// Publishes a cast, or an event, on the link's confirming channel and waits for the
/// broker to take it.
pub(super) async fn cast(
    shared: &Shared,
    request: &ClientRequest,
) -> Result<ClientResponse, Error> {
    let function = request.function.as_str();
    let event = request.kind == CallKind::Publish;
    let what = if event { "event" } else { "cast" };
    if !event && shared.protocol != crate::protocol::v01::Protocol::Guirpc {
        // Its consumers cannot take a request without `reply_to`: it would be delivered
        // to them again and again.
        return Err(Error::Config(format!(
            "`{function}`: a guirpc 0.1 consumer takes no casts: call it"
        )));
    }
    let expired = tokio::time::sleep(request.timeout);
    tokio::pin!(expired);
    loop {
        let linked = shared.linked.notified();
        if let Some(link) = shared.link() {
            let publish = async {
                let channel = link.casts(shared).await.map_err(Failure::Link)?;
                let (properties, exchange, routing_key) = address(&link, shared, request).await?;
                let confirm = channel
                    .basic_publish(
                        exchange,
                        routing_key,
                        BasicPublishOptions {
                            mandatory: !event,
                            ..Default::default()
                        },
                        &request.body,
                        properties,
                    )
                    .await
                    .map_err(Failure::Link)?;
                confirm.await.map_err(Failure::Link)
            };
            let confirmed = tokio::select! {
                confirmed = publish => confirmed,
                () = &mut expired => return Err(timed_out(shared, request)),
            };
            return match confirmed {
                Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => Ok(ClientResponse {
                    ok: true,
                    codec: request.codec,
                    body: Vec::new(),
                    items: None,
                }),
                Ok(Confirmation::Ack(Some(_))) => Err(no_route(shared, request)),
                Ok(Confirmation::Nack(_)) => Err(Error::connection(
                    &shared.masked_uri,
                    format!(
                        "the broker refused the {what} `{function}` (nack): it may not have been stored"
                    ),
                )),
                Err(Failure::Refused(why)) => {
                    Err(Error::Config(format!("cast `{function}`: {why}")))
                }
                Err(Failure::Ladder(err)) if protocol::is_not_found(&err) => {
                    Err(no_route(shared, request))
                }
                Err(Failure::Ladder(err)) => Err(Error::connection(
                    &shared.masked_uri,
                    format!(
                        "cannot set up the delay ladder for the scheduled cast `{function}` (the user needs to configure `guirpc.delay.*` and bind to queue `{}`): {err}",
                        request.queue
                    ),
                )),
                // The link failed under it: whether the broker took it is unknown.
                Err(Failure::Link(err)) => Err(Error::connection(
                    &shared.masked_uri,
                    format!(
                        "the connection failed before the broker confirmed the {what} `{function}` (it may have been taken): {err}"
                    ),
                )),
            };
        }
        tokio::select! {
            () = linked => {}
            () = &mut expired => return Err(not_connected(shared, request)),
        }
    }
}

/// Why a cast was not published.
enum Failure {
    /// The link failed under it.
    Link(lapin::Error),
    /// Its delay is longer than the ladder's.
    Refused(String),
    /// The delay ladder could not be set up for its queue.
    Ladder(lapin::Error),
}

/// Where a cast or an event goes, and with what properties. An event goes to the events
/// exchange by its topic (no subscriber is no error); a cast to its service queue, which
/// must exist; a scheduled cast to the delay ladder, which takes it there in time.
async fn address(
    link: &Link,
    shared: &Shared,
    request: &ClientRequest,
) -> Result<(BasicProperties, ShortString, ShortString), Failure> {
    let function = request.function.as_str();
    let user = link.user.clone();
    if request.kind == CallKind::Publish {
        let properties =
            protocol::event_properties(request.codec, &request.headers).with_user_id(user);
        return Ok((properties, shared.events_exchange.clone(), function.into()));
    }
    let properties =
        protocol::cast_properties(function, request.codec, &request.headers).with_user_id(user);
    let Some(not_before) = request.not_before else {
        return Ok((properties, shared.exchange.clone(), request.queue.clone()));
    };
    let wait = not_before
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let millis = crate::delay::millis(wait).map_err(Failure::Refused)?;
    link.ladder(request.queue.as_str())
        .await
        .map_err(Failure::Ladder)?;
    let since_epoch = not_before
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
        });
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(
        protocol::HEADER_NOT_BEFORE.into(),
        AMQPValue::LongLongInt(since_epoch),
    );
    let key = crate::delay::routing_key(millis, request.queue.as_str());
    Ok((
        properties.with_headers(headers),
        crate::delay::entry().into(),
        key.into(),
    ))
}
