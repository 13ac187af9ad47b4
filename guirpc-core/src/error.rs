//! What a call can end in, as one type a caller matches on.

use std::convert::Infallible;
use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::codec::{Codec, CodecError};
use crate::envelope;
use crate::protocol::ErrorCode;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a call failed.
///
/// `E` is the function's own error type: a typed stub of a function returning
/// `Result<T, E>` fails with `Error<E>`, and the function's `Err(e)` arrives as
/// [`Error::Handler`]. Calls by name, and stubs of functions that cannot fail, use
/// `Error<Infallible>`, where a function's `Err` arrives as [`Error::Remote`] with code
/// [`ErrorCode::HandlerError`] (decode it with [`RemoteError::detail`]).
///
/// ```
/// # use guirpc_core::{Error, ErrorCode};
/// fn describe(err: &Error) -> &'static str {
///     match err {
///         Error::Timeout { .. } => "no reply in time",
///         Error::NoRoute { .. } => "no such service",
///         Error::Remote(remote) if remote.code() == &ErrorCode::NotFound => "no such function",
///         Error::Remote(_) => "the server refused or failed the call",
///         Error::Connection { .. } => "broker trouble: worth a retry",
///         _ => "something else",
///     }
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E = Infallible> {
    /// No reply came within the call's timeout.
    #[error(
        "call to `{function}` on queue `{queue}` timed out after {timeout:?}: no reply (is a server consuming the queue?)"
    )]
    Timeout {
        /// The function called.
        function: String,
        /// The service queue it was sent to.
        queue: String,
        /// The timeout that ran out.
        timeout: Duration,
    },
    /// The broker could not route the request: no queue is bound for that service.
    #[error(
        "no route to service `{queue}` on {} for `{function}`: no such queue is bound (is the service running?)",
        crate::protocol::ExchangeName(.exchange)
    )]
    NoRoute {
        /// The function called.
        function: String,
        /// The service queue the request was addressed to.
        queue: String,
        /// The exchange it was published to; empty for the default exchange.
        exchange: String,
    },
    /// The server answered with an error: unknown function, bad request, panic, ...
    #[error(transparent)]
    Remote(RemoteError),
    /// The function ran and returned this error.
    #[error("`{function}` failed: {error}")]
    Handler {
        /// The function called.
        function: String,
        /// The error the function returned.
        error: E,
    },
    /// The arguments could not be encoded.
    #[error("cannot encode the arguments of `{function}`: {source}")]
    Encode {
        /// The function called.
        function: String,
        /// What the codec said.
        source: CodecError,
    },
    /// The encoded arguments are larger than the client sends (`client.max_message_size`,
    /// 16 MiB by default, RabbitMQ 4's limit: a broker closes the channel of a larger
    /// message, failing every call in flight on it). Nothing was sent; not retriable.
    #[error(
        "the arguments of `{function}` are {size} bytes encoded, over the {limit}-byte limit of a message (client.max_message_size); nothing was sent"
    )]
    TooLarge {
        /// The function called.
        function: String,
        /// The encoded size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The reply could not be decoded into the expected type.
    #[error("cannot decode the reply of `{function}`: {source}")]
    Decode {
        /// The function called.
        function: String,
        /// What the codec said.
        source: CodecError,
    },
    /// The connection or channel to the broker failed; the call may not have run.
    /// Worth retrying once the client is connected again.
    #[error("connection to {uri} failed: {source}")]
    Connection {
        /// The broker URI, password masked.
        uri: String,
        /// What the AMQP client said.
        source: BoxError,
    },
    /// The deadline passed while the broker was blocking publishes (a memory or disk
    /// alarm): the request may not even have left this process.
    #[error("call to `{function}` ran out of time while the broker blocks publishing: {reason}")]
    Blocked {
        /// The function called.
        function: String,
        /// The broker's reason.
        reason: String,
    },
    /// The configuration is unusable (a malformed URI, say).
    #[error("{0}")]
    Config(String),
}

impl<E> Error<E> {
    /// Whether retrying the same call may succeed: a timeout or a connection failure.
    /// Mind that the function may have run already; retry only idempotent functions.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Connection { .. } | Error::Blocked { .. }
        )
    }

    /// What the call ended in, in one word for spans and metrics: the server's error
    /// code, or `timeout`, `no_route`, `encode`, `too_large`, `decode`, `connection`,
    /// `blocked`, `config`.
    pub fn outcome(&self) -> std::borrow::Cow<'static, str> {
        let kind = match self {
            Error::Remote(remote) => return remote.code.as_str().to_owned().into(),
            Error::Handler { .. } => "handler_error",
            Error::Timeout { .. } => "timeout",
            Error::NoRoute { .. } => "no_route",
            Error::Encode { .. } => "encode",
            Error::TooLarge { .. } => "too_large",
            Error::Decode { .. } => "decode",
            Error::Connection { .. } => "connection",
            Error::Blocked { .. } => "blocked",
            Error::Config(_) => "config",
        };
        kind.into()
    }

    /// The error code the server answered with, if it answered with an error.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Remote(remote) => Some(remote.code.clone()),
            Error::Handler { .. } => Some(ErrorCode::HandlerError),
            _ => None,
        }
    }

    pub(crate) fn connection(uri: &str, source: impl Into<BoxError>) -> Self {
        Error::Connection {
            uri: uri.to_owned(),
            source: source.into(),
        }
    }

    /// Re-types an error that carries no handler error.
    pub(crate) fn widen(err: Error<Infallible>) -> Self {
        match err {
            Error::Timeout {
                function,
                queue,
                timeout,
            } => Error::Timeout {
                function,
                queue,
                timeout,
            },
            Error::NoRoute {
                function,
                queue,
                exchange,
            } => Error::NoRoute {
                function,
                queue,
                exchange,
            },
            Error::Remote(remote) => Error::Remote(remote),
            Error::Handler { error, .. } => match error {},
            Error::Encode { function, source } => Error::Encode { function, source },
            Error::TooLarge {
                function,
                size,
                limit,
            } => Error::TooLarge {
                function,
                size,
                limit,
            },
            Error::Decode { function, source } => Error::Decode { function, source },
            Error::Connection { uri, source } => Error::Connection { uri, source },
            Error::Blocked { function, reason } => Error::Blocked { function, reason },
            Error::Config(message) => Error::Config(message),
        }
    }
}

/// An error reply from the server.
#[derive(Clone, PartialEq)]
pub struct RemoteError {
    function: String,
    code: ErrorCode,
    message: String,
    codec: Codec,
    body: Vec<u8>,
}

impl RemoteError {
    /// The stable error code.
    pub fn code(&self) -> &ErrorCode {
        &self.code
    }

    /// The server's message, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The function called.
    pub fn function(&self) -> &str {
        &self.function
    }

    /// Decodes the envelope's `detail`: the function's own error value when the code is
    /// [`ErrorCode::HandlerError`]. `None` when there is no detail.
    pub fn detail<T: DeserializeOwned>(&self) -> Option<Result<T, CodecError>> {
        envelope::detail(self.codec, &self.body)
    }

    /// The same error, naming `function` as the one called.
    pub(crate) fn for_function(mut self, function: &str) -> RemoteError {
        function.clone_into(&mut self.function);
        self
    }

    /// Reads an error reply. Also used for replies that carry no valid envelope, which
    /// become an `internal` error saying so.
    pub(crate) fn from_reply(function: &str, codec: Codec, body: Vec<u8>) -> RemoteError {
        let (code, message) = envelope::read(codec, &body);
        RemoteError {
            function: function.to_owned(),
            code,
            message,
            codec,
            body,
        }
    }
}

impl fmt::Debug for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteError")
            .field("function", &self.function)
            .field("code", &self.code)
            .field("message", &self.message)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` failed on the server ({}): {}",
            self.function, self.code, self.message
        )
    }
}

impl std::error::Error for RemoteError {}
