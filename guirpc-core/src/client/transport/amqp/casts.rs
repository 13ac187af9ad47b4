//! Casts and events: published on the link's confirming channel, done when the broker
//! has taken them.

use lapin::Confirmation;
use lapin::options::BasicPublishOptions;

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
    let expired = tokio::time::sleep(request.timeout);
    tokio::pin!(expired);
    loop {
        let linked = shared.linked.notified();
        if let Some(link) = shared.link() {
            let publish = async {
                let channel = link.casts(shared).await?;
                // An event goes to the events exchange by its topic; no subscriber is no
                // error. A cast goes to its service queue, which must exist.
                let (properties, exchange, routing_key) = if event {
                    let properties = protocol::event_properties(request.codec, &request.headers);
                    (properties, shared.events_exchange.clone(), function.into())
                } else {
                    let properties =
                        protocol::cast_properties(function, request.codec, &request.headers);
                    (properties, shared.exchange.clone(), request.queue.clone())
                };
                channel
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
                    .await?
                    .await
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
                // The link failed under it: whether the broker took it is unknown.
                Err(err) => Err(Error::connection(
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
