//! The error envelope, the body of every error reply, encoded and decoded here and nowhere
//! else: `{"code": "...", "message": "...", "detail": ...}` in the reply's codec
//! (`docs/PROTOCOL.md`). Servers write it for refusals and failed functions; clients read it
//! into a [`RemoteError`](crate::RemoteError); log lines show its message.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

use crate::codec::{Codec, CodecError};
use crate::protocol::ErrorCode;

#[derive(Debug, Serialize, Deserialize)]
struct Envelope<'a, D> {
    code: Cow<'a, str>,
    message: Cow<'a, str>,
    #[serde(default = "none")]
    detail: Option<D>,
}

fn none<D>() -> Option<D> {
    None
}

/// An envelope without detail.
pub(crate) fn encode(codec: Codec, code: &ErrorCode, message: &str) -> Vec<u8> {
    let envelope: Envelope<'_, ()> = Envelope {
        code: code.as_str().into(),
        message: message.into(),
        detail: None,
    };
    codec
        .encode(&envelope)
        .expect("an envelope of strings always encodes")
}

/// An envelope whose detail is a function's own error value.
pub(crate) fn encode_with_detail<D: Serialize>(
    codec: Codec,
    code: &ErrorCode,
    message: &str,
    detail: &D,
) -> Result<Vec<u8>, CodecError> {
    codec.encode(&Envelope {
        code: code.as_str().into(),
        message: message.into(),
        detail: Some(detail),
    })
}

/// An envelope's code and message. A body that is no envelope reads as an `internal`
/// error saying so, so that a foreign or broken server's reply is never lost in silence.
pub(crate) fn read(codec: Codec, body: &[u8]) -> (ErrorCode, String) {
    match codec.decode::<Envelope<'_, IgnoredAny>>(body) {
        Ok(envelope) => (
            ErrorCode::parse(&envelope.code),
            envelope.message.into_owned(),
        ),
        Err(err) => (
            ErrorCode::Internal,
            format!("the server sent an error reply that is not a guirpc error envelope: {err}"),
        ),
    }
}

/// An envelope's detail, decoded as `T`; `None` when it has none.
pub(crate) fn detail<T: DeserializeOwned>(
    codec: Codec,
    body: &[u8],
) -> Option<Result<T, CodecError>> {
    match codec.decode::<Envelope<'_, T>>(body) {
        Ok(envelope) => envelope.detail.map(Ok),
        Err(err) => Some(Err(err)),
    }
}

/// Shows an encoded envelope's message and code in a log line.
pub(crate) struct Summary<'a>(pub Codec, pub &'a [u8]);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.decode::<Envelope<'_, IgnoredAny>>(self.1) {
            Ok(envelope) => write!(f, "{} ({})", envelope.message, envelope.code),
            Err(_) => f.write_str("<undecodable error envelope>"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_in_both_codecs() {
        for codec in [Codec::Json, Codec::MsgPack] {
            let body = encode_with_detail(codec, &ErrorCode::HandlerError, "no", &7u8).unwrap();
            assert_eq!(read(codec, &body), (ErrorCode::HandlerError, "no".into()));
            assert_eq!(detail::<u8>(codec, &body).unwrap().unwrap(), 7);
            let plain = encode(codec, &ErrorCode::NotFound, "who?");
            assert!(detail::<u8>(codec, &plain).is_none());
            assert_eq!(Summary(codec, &plain).to_string(), "who? (not_found)");
        }
        assert_eq!(read(Codec::Json, b"[1]").0, ErrorCode::Internal);
    }
}
