//! Streamed results: a function that returns a `Stream` of items, sent to the caller one
//! message per item as they are produced, with flow control.
//!
//! The caller grants credit: its request says how many items the server may send before
//! it hears more ([`HEADER_STREAM`](crate::protocol::HEADER_STREAM)), and it grants more as its code consumes
//! them, so that neither side nor the broker ever holds more than that window. Dropping
//! the stream cancels the function; its deadline bounds the whole stream; a connection lost
//! on either side ends it with a retriable [`Error::Connection`]. `docs/PROTOCOL.md`
//! specifies the messages.
//!
//! ```no_run
//! use futures_lite::StreamExt;
//! use guirpc_core::stream::Stream;
//! use guirpc_core::rpc;
//!
//! /// The first `n` squares, one item at a time.
//! #[rpc]
//! async fn squares(n: u64) -> impl Stream<Item = u64> {
//!     futures_lite::stream::iter((0..n).map(|i| i * i))
//! }
//!
//! # async fn caller(client: &guirpc_core::Client) -> Result<(), guirpc_core::Error> {
//! let mut items = squares::call(client, 10);
//! while let Some(square) = items.next().await {
//!     println!("{}", square?);
//! }
//! # Ok(()) }
//! # fn main() {}
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::SystemTime;

/// The trait of what a streaming function returns (`futures_core::Stream`, the one the
/// `futures` crates use too).
pub use futures_lite::Stream;
use futures_lite::StreamExt;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::codec::Codec;
use crate::error::{Error, RemoteError};
pub(crate) use crate::message::ItemSink;
use crate::message::{ClientRequest, ClientResponse, Reply};
pub(crate) use crate::message::{Control, Items, Outlet, Piece, Progress, Stopped};
use crate::protocol::ErrorCode;
use crate::sync::Locked;

/// How many items a caller lets a server send ahead of what its code has consumed.
pub const DEFAULT_WINDOW: u32 = 64;

// ---------------------------------------------------------------------------------------
// The server's side.

/// What ends a stream on the wire, once the function is done.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Last {
    /// The function does not stream: its reply goes as a plain reply.
    Plain,
    /// The end marker (an ok reply) or the error ending the stream, after `count` items.
    End { count: u64 },
    /// Nothing goes: the caller cancelled, or the connection is gone.
    Nothing(Stopped),
}

impl Progress {
    pub(crate) fn last(&self) -> Last {
        if let Some(stopped) = self.stopped.locked().clone() {
            return Last::Nothing(stopped);
        }
        if self.started.load(Ordering::Acquire) {
            Last::End {
                count: self.sent.load(Ordering::Acquire),
            }
        } else {
            Last::Plain
        }
    }
}

impl ItemSink {
    pub(crate) fn new(outlet: impl Outlet + 'static) -> (ItemSink, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        let sink = ItemSink {
            outlet: Box::new(outlet),
            deadline: None,
            progress: progress.clone(),
        };
        (sink, progress)
    }

    /// Drives a function's stream to its end, its first error, its deadline, or the
    /// caller's cancellation; the reply that ends the stream. `to_reply` encodes an item:
    /// an error reply ends the stream with that error.
    pub(crate) async fn drive<X>(
        mut self,
        function: &str,
        codec: Codec,
        items: impl Stream<Item = X>,
        mut to_reply: impl FnMut(X) -> Reply,
    ) -> Reply {
        self.progress.started.store(true, Ordering::Release);
        let deadline = self.deadline;
        let expired = async move {
            match deadline {
                Some(deadline) => {
                    let left = deadline
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    tokio::time::sleep(left).await;
                }
                None => std::future::pending().await,
            }
        };
        let progress = self.progress.clone();
        let stop = |stopped: Stopped, sent: u64| {
            let reply = stopped_reply(function, codec, sent, &stopped);
            *progress.stopped.locked() = Some(stopped);
            reply
        };
        let drive = async {
            let mut items = std::pin::pin!(items);
            let mut stopped = self.outlet.stopped();
            let mut sent = 0;
            loop {
                // A cancellation stops a function waiting for its next item too.
                let item = tokio::select! {
                    item = items.next() => item,
                    stopped = &mut stopped => return stop(stopped, sent),
                };
                let Some(item) = item else { break };
                let reply = to_reply(item);
                if !reply.is_ok() {
                    return reply;
                }
                if let Err(stopped) = self.outlet.send(sent, reply).await {
                    return stop(stopped, sent);
                }
                sent += 1;
                progress.sent.store(sent, Ordering::Release);
            }
            Reply::encoded(Vec::new())
        };
        tokio::select! {
            reply = drive => reply,
            () = expired => Reply::error(
                codec,
                ErrorCode::DeadlineExceeded,
                &format!("the deadline of the stream of `{function}` passed while it was running"),
            ),
        }
    }
}

fn stopped_reply(function: &str, codec: Codec, sent: u64, stopped: &Stopped) -> Reply {
    match stopped {
        Stopped::Cancelled => Reply::error(
            codec,
            ErrorCode::Cancelled,
            &format!("the caller cancelled the stream of `{function}` after {sent} item(s)"),
        ),
        Stopped::SessionLost => Reply::error(
            codec,
            ErrorCode::Internal,
            &format!(
                "the connection was lost during the stream of `{function}` after {sent} item(s)"
            ),
        ),
        Stopped::GaveUp(why) => Reply::refusal(
            codec,
            ErrorCode::Internal,
            &format!("the broker refused item {sent} of the stream of `{function}`: {why}"),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// The caller's side.

/// A transport's channel for one stream, and its capacity: the credit window and the
/// messages that end a stream.
pub(crate) fn channel(window: u32) -> (mpsc::Sender<Piece>, mpsc::Receiver<Piece>) {
    mpsc::channel(window as usize + 2)
}

/// Waits for a stream's first message: an item or the end open the stream; anything else
/// is the call's one reply.
pub(crate) async fn open(
    request: &ClientRequest,
    mut rx: mpsc::Receiver<Piece>,
    control: Box<dyn Control>,
    expired: Pin<Box<tokio::time::Sleep>>,
    cut: Arc<dyn Fn(String) -> Error + Send + Sync>,
    no_route: impl FnOnce() -> Error,
) -> Result<ClientResponse, Error> {
    let mut expired = expired;
    let first = tokio::select! {
        first = rx.recv() => first,
        () = expired.as_mut() => return Err(request.timed_out()),
    };
    let mut control = control;
    match first {
        None => {
            control.finished();
            Err(cut(
                "the connection to the broker was lost before the stream began (the call may have run)"
                    .into(),
            ))
        }
        Some(Piece::Returned) => {
            control.finished();
            Err(no_route())
        }
        Some(Piece::Reply { ok, codec, body }) => {
            control.finished();
            Ok(ClientResponse {
                ok,
                codec,
                body,
                items: None,
            })
        }
        Some(first @ (Piece::Item { .. } | Piece::End { .. })) => Ok(ClientResponse {
            ok: true,
            codec: request.codec,
            body: Vec::new(),
            items: Some(Items {
                ready: VecDeque::from([first]),
                rx,
                control,
                codec: request.codec,
                received: 0,
                expired,
                cut,
                done: false,
            }),
        }),
    }
}

/// What the caller's stream makes of a message: an item's body, or the end.
enum Next {
    Item(Vec<u8>),
    Failed(Error),
}

impl Items {
    fn poll_next_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Next>> {
        if self.done {
            return Poll::Ready(None);
        }
        let piece = match self.ready.pop_front() {
            Some(piece) => Some(piece),
            None => match self.rx.poll_recv(cx) {
                Poll::Ready(piece) => piece,
                Poll::Pending => {
                    return match self.expired.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Some(self.fail(None))),
                        Poll::Pending => Poll::Pending,
                    };
                }
            },
        };
        let next = match piece {
            Some(Piece::Item {
                seq,
                body,
                credit_to,
            }) if seq == self.received => {
                self.received += 1;
                self.control.consumed(credit_to);
                Next::Item(body)
            }
            Some(Piece::Item { seq, credit_to, .. }) => {
                self.control.restarted(credit_to);
                self.fail(Some(format!(
                    "item {seq} of the stream arrived where item {} was due: the server lost its connection and started the stream again",
                    self.received
                )))
            }
            Some(Piece::End { count }) if count == self.received => {
                self.finish();
                return Poll::Ready(None);
            }
            Some(Piece::End { count }) => self.fail(Some(format!(
                "the stream ended after {} item(s) where the server sent {count}",
                self.received
            ))),
            Some(Piece::Reply {
                ok: false,
                codec,
                body,
            }) => {
                let remote = RemoteError::from_reply("", codec, body);
                if remote.code() == &ErrorCode::DeadlineExceeded {
                    // The server ended the stream by the deadline the caller also keeps:
                    // one error for both, whichever side saw it first.
                    return Poll::Ready(Some(self.fail(None)));
                }
                self.finish();
                Next::Failed(Error::Remote(remote))
            }
            Some(Piece::Reply { ok: true, .. } | Piece::Returned) => self.fail(Some(
                "the server answered the stream with a plain reply in its middle".into(),
            )),
            None => self.fail(Some(format!(
                "the connection to the broker was lost after {} item(s) of the stream",
                self.received
            ))),
        };
        Poll::Ready(Some(next))
    }

    /// Ends the stream with an error: `None` for its deadline.
    fn fail(&mut self, why: Option<String>) -> Next {
        self.done = true;
        self.rx.close();
        Next::Failed(match why {
            Some(why) => (self.cut)(why),
            None => Error::Timeout {
                function: String::new(),
                queue: String::new(),
                timeout: std::time::Duration::ZERO,
            },
        })
    }

    fn finish(&mut self) {
        self.done = true;
        self.control.finished();
        self.rx.close();
    }
}

/// The items of a streamed call, as they come: a `Stream` of `Result<T, Error<E>>`. It
/// ends after the last item, or after the first error (the function's `Err` item, a
/// refusal, the deadline, a lost connection). Dropping it cancels the call.
#[must_use = "a stream does nothing unless polled"]
pub struct ItemStream<T, E = Infallible> {
    state: State,
    /// Turns an error into the function's: its own error type out of a `handler_error`.
    typed: fn(&str, Error) -> Error<E>,
    function: String,
    queue: String,
    timeout: std::time::Duration,
    _types: PhantomData<fn() -> (T, E)>,
}

/// The call an [`ItemStream`] is of.
pub(crate) struct Opening {
    function: String,
    queue: String,
    timeout: std::time::Duration,
}

enum State {
    Opening(Pin<Box<dyn Future<Output = Result<ClientResponse, Error>> + Send>>),
    /// A plain function's one value, or an error, still to hand out.
    Single(Option<Result<Vec<u8>, Error>>, Codec),
    Flowing(Items),
    Done,
}

impl<T, E> std::fmt::Debug for ItemStream<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ItemStream")
            .field("function", &self.function)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl<T, E> ItemStream<T, E> {
    /// What the stream needs of its request, for its errors.
    pub(crate) fn opening(request: &ClientRequest) -> Opening {
        Opening {
            function: request.function.clone(),
            queue: request.queue.to_string(),
            timeout: request.timeout,
        }
    }

    pub(crate) fn new(
        opening: Opening,
        typed: fn(&str, Error) -> Error<E>,
        future: Pin<Box<dyn Future<Output = Result<ClientResponse, Error>> + Send>>,
    ) -> Self {
        ItemStream {
            state: State::Opening(future),
            typed,
            function: opening.function,
            queue: opening.queue,
            timeout: opening.timeout,
            _types: PhantomData,
        }
    }

    pub(crate) fn failed(function: &str, typed: fn(&str, Error) -> Error<E>, error: Error) -> Self {
        ItemStream {
            state: State::Single(Some(Err(error)), Codec::Json),
            typed,
            function: function.to_owned(),
            queue: String::new(),
            timeout: std::time::Duration::ZERO,
            _types: PhantomData,
        }
    }

    /// The function called.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Names the call in errors made without its request at hand.
    fn complete(&self, err: Error) -> Error {
        match err {
            Error::Timeout { .. } => Error::Timeout {
                function: self.function.clone(),
                queue: self.queue.clone(),
                timeout: self.timeout,
            },
            Error::Remote(remote) => Error::Remote(remote.for_function(&self.function)),
            other => other,
        }
    }
}

impl<T: DeserializeOwned, E> ItemStream<T, E> {
    fn decode(&self, codec: Codec, body: &[u8]) -> Result<T, Error<E>> {
        codec.decode(body).map_err(|source| Error::Decode {
            function: self.function.clone(),
            source,
        })
    }

    fn typed(&self, err: Error) -> Error<E> {
        (self.typed)(&self.function, self.complete(err))
    }
}

impl<T: DeserializeOwned, E> Stream for ItemStream<T, E> {
    type Item = Result<T, Error<E>>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // Nothing in it is pinned structurally: the future and the timer are boxed.
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Opening(opening) => match opening.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(err)) => {
                        this.state = State::Single(Some(Err(err)), Codec::Json)
                    }
                    Poll::Ready(Ok(mut response)) => {
                        this.state = match response.items.take() {
                            Some(items) => State::Flowing(items),
                            None if response.ok => {
                                State::Single(Some(Ok(response.body)), response.codec)
                            }
                            None => State::Single(
                                Some(Err(Error::Remote(RemoteError::from_reply(
                                    &this.function,
                                    response.codec,
                                    response.body,
                                )))),
                                response.codec,
                            ),
                        }
                    }
                },
                State::Single(single, codec) => {
                    let codec = *codec;
                    let next = single.take();
                    this.state = State::Done;
                    return Poll::Ready(next.map(|next| match next {
                        Ok(body) => this.decode(codec, &body),
                        Err(err) => Err(this.typed(err)),
                    }));
                }
                State::Flowing(items) => {
                    let codec = items.codec;
                    return match items.poll_next_body(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(None) => {
                            this.state = State::Done;
                            Poll::Ready(None)
                        }
                        Poll::Ready(Some(Next::Item(body))) => {
                            Poll::Ready(Some(this.decode(codec, &body)))
                        }
                        Poll::Ready(Some(Next::Failed(err))) => {
                            this.state = State::Done;
                            Poll::Ready(Some(Err(this.typed(err))))
                        }
                    };
                }
                State::Done => return Poll::Ready(None),
            }
        }
    }
}
