//! Calls and streams: a request published, and its replies awaited.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use lapin::options::BasicPublishOptions;
use lapin::types::ShortString;
use tokio::time::Instant;
use tracing::debug;

use super::link::Link;
use super::pending::{Answer, Pending};
use super::replies::{leads, send_credit};
use super::{Shared, no_route, not_connected, timed_out};
use crate::error::Error;
use crate::middleware::{ClientRequest, ClientResponse};
use crate::protocol;
use crate::protocol::v01::{self, Protocol};
use crate::stream;

/// Publishes a request once there is a link (waiting for one until the call's deadline),
/// its reply awaited as `register` arranges: what `register` returned, and the
/// guard that forgets the call however it ends.
async fn send_request<R>(
    shared: &Shared,
    request: &ClientRequest,
    deadline: Instant,
    register: impl Fn(&Pending, u64) -> Option<(R, bool)>,
) -> Result<(Waiting, R), Error> {
    let function = request.function.as_str();
    // A guirpc 0.1 consumer's call: its arguments rewritten into that form once.
    let legacy = match shared.protocol {
        Protocol::Guirpc => None,
        Protocol::Guirpc01(serializer) => {
            let (body, encoding) = v01::request_body(serializer, &request.body)
                .map_err(|why| Error::Config(format!("`{function}`: {why}")))?;
            Some((serializer, encoding, body))
        }
    };
    // A call that has not been sent waits for a connection until its deadline; only a
    // call in flight when its connection drops fails at once.
    loop {
        let linked = shared.linked.notified();
        if let Some(link) = shared.link() {
            let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
            if let Some((reply, leading)) = register(link.pending(), id) {
                let waiting = Waiting {
                    link,
                    id,
                    answered: false,
                    leading,
                };
                let correlation_id = itoa::Buffer::new().format(id).into();
                let (properties, body) = match &legacy {
                    None => (
                        protocol::request_properties(
                            function,
                            request.codec,
                            correlation_id,
                            request.timeout,
                            &request.headers,
                        ),
                        &request.body[..],
                    ),
                    Some((serializer, encoding, body)) => (
                        v01::request_properties(
                            function,
                            *serializer,
                            encoding,
                            correlation_id,
                            request.timeout,
                        ),
                        &body[..],
                    ),
                };
                let properties = properties.with_user_id(waiting.link.user.clone());
                let publish = waiting.link.channel.basic_publish(
                    shared.exchange.clone(),
                    request.queue.clone(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    body,
                    properties,
                );
                // Polled once, a publish has queued its frames (or found the channel
                // closed): the call waits for its reply, not for the frames to be written,
                // which would cost a wake-up of its task (its thread, for a blocking call)
                // per call. Frames that a failing connection never writes fail the call
                // with the link, like a reply that never comes.
                match futures_lite::future::poll_once(publish).await {
                    // Not sent: the link is dying; wait for the next.
                    Some(Err(err)) => debug!(function, "the request was not sent: {err}"),
                    _ => return Ok((waiting, reply)),
                }
            }
        }
        // A timer only while there is no link to send on.
        tokio::select! {
            () = linked => {}
            () = tokio::time::sleep_until(deadline) => return Err(not_connected(shared, request)),
        }
    }
}

pub(super) async fn round_trip(
    shared: &Shared,
    request: &ClientRequest,
) -> Result<ClientResponse, Error> {
    // One deadline for the whole call, the wait for a connection included. A call waiting
    // for its reply is timed out by its link's returns tick (in the table of pending calls),
    // not by a timer of its own: registering one with tokio's timer and removing it again
    // cost about 2% of the rate with one call in flight.
    let deadline = Instant::now() + request.timeout;
    let lead = leads();
    let (mut waiting, mut reply) = send_request(shared, request, deadline, |pending, id| {
        pending.insert(id, deadline, lead)
    })
    .await?;
    let answer = if waiting.leading {
        waiting.link.replies.lead(&mut reply).await
    } else {
        reply.await
    };
    // Whatever came, the router, the returns tick or the link's end took the entry out.
    waiting.answered = true;
    match answer {
        Ok(Answer::Reply(delivery)) if shared.protocol != Protocol::Guirpc => {
            let json = crate::codec::Codec::Json;
            let (ok, body) = match v01::response(&delivery.properties, &delivery.data) {
                Ok(value) => (true, value),
                Err((code, message)) => (false, crate::envelope::encode(json, &code, &message)),
            };
            Ok(ClientResponse {
                ok,
                codec: json,
                body,
                items: None,
            })
        }
        Ok(Answer::Reply(delivery)) => {
            let codec = protocol::received_codec(&delivery.properties);
            Ok(ClientResponse {
                ok: protocol::reply_is_ok(&delivery.properties),
                codec,
                body: delivery.data,
                items: None,
            })
        }
        Ok(Answer::Returned) => Err(no_route(shared, request)),
        Ok(Answer::Expired) => Err(timed_out(shared, request)),
        Err(_) => Err(Error::connection(
            &shared.masked_uri,
            "the connection to the broker was lost before the reply arrived (the call may have run)",
        )),
    }
}

/// Sends a call asking for a stream, and waits for its first message.
pub(super) async fn open_stream(
    shared: &Shared,
    request: &ClientRequest,
) -> Result<ClientResponse, Error> {
    let window = request
        .headers
        .inner()
        .get(protocol::HEADER_STREAM)
        .and_then(protocol::value_as_u64)
        .map_or(stream::DEFAULT_WINDOW, |w| {
            u32::try_from(w)
                .unwrap_or(protocol::MAX_CREDIT)
                .clamp(1, protocol::MAX_CREDIT)
        });
    if shared.protocol != Protocol::Guirpc {
        return Err(Error::Config(format!(
            "`{}`: a guirpc 0.1 consumer streams nothing: call it without a stream",
            request.function
        )));
    }
    // The deadline bounds the whole stream: its timer goes on with the items.
    let deadline = Instant::now() + request.timeout;
    let (tx, rx) = stream::channel(window);
    let (waiting, ()) = send_request(shared, request, deadline, |pending, id| {
        pending.insert_stream(id, tx.clone()).map(|()| ((), false))
    })
    .await?;
    let expired = Box::pin(tokio::time::sleep_until(deadline));
    drop(tx);
    let credit = Credit {
        waiting,
        to: None,
        window: u64::from(window),
        granted: u64::from(window),
        consumed: 0,
        open: true,
        runtime: tokio::runtime::Handle::current(),
    };
    let uri = shared.masked_uri.clone();
    let cut = Arc::new(move |why: String| Error::connection(&uri, why));
    stream::open(request, rx, Box::new(credit), expired, cut, || {
        no_route(shared, request)
    })
    .await
}

/// A stream's credit: granted back to the server as the caller's code consumes items,
/// half a window at a time; a cancellation when the stream is dropped before its end.
struct Credit {
    /// Forgets the stream's entry when the stream goes.
    waiting: Waiting,
    /// The credit queue and the server's ID of the stream, from the first item.
    to: Option<(ShortString, ShortString)>,
    window: u64,
    granted: u64,
    consumed: u64,
    /// Whether the stream is still running (else nothing is due).
    open: bool,
    runtime: tokio::runtime::Handle,
}

impl Credit {
    fn send(&self, credit: Option<u32>) {
        if let Some((queue, id)) = self.to.clone() {
            let channel = self.waiting.link.channel.clone();
            self.runtime.spawn(send_credit(channel, queue, id, credit));
        }
    }
}

impl stream::Control for Credit {
    fn consumed(&mut self, credit_to: Option<(ShortString, ShortString)>) {
        if self.to.is_none() {
            self.to = credit_to;
        }
        self.consumed += 1;
        let outstanding = self.granted.saturating_sub(self.consumed);
        if outstanding <= self.window / 2 {
            let more = self.window - outstanding;
            self.granted += more;
            self.send(Some(u32::try_from(more).unwrap_or(u32::MAX)));
        }
    }

    fn finished(&mut self) {
        self.open = false;
    }

    fn restarted(&mut self, credit_to: Option<(ShortString, ShortString)>) {
        if credit_to.is_some() {
            self.to = credit_to;
        }
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        if self.open {
            self.send(None);
        }
    }
}

/// Removes a call's entry however the call ends, cancellation included, unless an
/// answer came (whoever sent it removed the entry).
struct Waiting {
    link: Arc<Link>,
    id: u64,
    answered: bool,
    /// Whether this call routes the link's replies (and hands that back when it ends).
    leading: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if !self.answered {
            self.link.pending().forget(self.id);
        }
        if self.leading {
            self.link.replies.hand_back();
        }
    }
}
