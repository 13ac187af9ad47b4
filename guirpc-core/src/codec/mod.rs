//! Body encodings. A request names its codec in `content_type`; the server answers in the
//! same one. MessagePack is the default: compact, and written with field names so that any
//! MessagePack library can read what a Rust struct became.
//!
//! Both codecs read a body the same way, whoever sent it: one value and nothing after it,
//! nested fewer than [`MAX_DEPTH`] levels (serde_json's own limit), so that no body can
//! exhaust a stack, in a debug build either. Both refuse to write a float that is not
//! finite in JSON, which has no way to carry it.

pub(crate) mod buffers;
mod extent;
mod finite;
mod shared;

pub use shared::Bytes;

use std::fmt;
use std::str::FromStr;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A body encoding.
///
/// ```
/// use guirpc_core::Codec;
///
/// let body = Codec::Json.encode(&(1, "two")).unwrap();
/// assert_eq!(body, br#"[1,"two"]"#);
/// let back: (i32, String) = Codec::Json.decode(&body).unwrap();
/// assert_eq!(back, (1, "two".to_string()));
/// assert_eq!("msgpack".parse::<Codec>().unwrap(), Codec::MsgPack);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Codec {
    /// MessagePack (`application/msgpack`), structs as maps keyed by field name.
    #[default]
    MsgPack,
    /// JSON (`application/json`).
    Json,
}

/// The deepest nesting of arrays and maps a body may have: serde_json's limit, applied to
/// MessagePack as well.
pub const MAX_DEPTH: usize = 128;

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CodecError(String);

impl Codec {
    /// The `content_type` this codec is announced with.
    pub const fn content_type(self) -> &'static str {
        match self {
            Codec::MsgPack => "application/msgpack",
            Codec::Json => "application/json",
        }
    }

    /// The codec a `content_type` names; `None` for one guirpc does not speak.
    /// An absent `content_type` means MessagePack (see `docs/PROTOCOL.md`).
    pub fn from_content_type(content_type: Option<&str>) -> Option<Codec> {
        match content_type {
            None | Some("") => Some(Codec::MsgPack),
            Some(ct) => {
                // Parameters such as `; charset=utf-8` do not change the codec.
                // Read on every request and reply: compared without allocating.
                let essence = ct.split(';').next().unwrap_or("").trim();
                let is = |name: &str| essence.eq_ignore_ascii_case(name);
                if is("application/msgpack")
                    || is("application/x-msgpack")
                    || is("application/vnd.msgpack")
                {
                    Some(Codec::MsgPack)
                } else if is("application/json") {
                    Some(Codec::Json)
                } else {
                    None
                }
            }
        }
    }

    /// Encodes a value.
    pub fn encode<T: Serialize + ?Sized>(self, value: &T) -> Result<Vec<u8>, CodecError> {
        let mut body = Vec::new();
        self.encode_into(value, &mut body)?;
        Ok(body)
    }

    /// Encodes a value into a kept buffer: a body about to be sent, whose buffer goes back
    /// with [`buffers::give_back`] once it is.
    pub(crate) fn encode_to_send<T: Serialize + ?Sized>(
        self,
        value: &T,
    ) -> Result<Vec<u8>, CodecError> {
        let mut body = buffers::take();
        match self.encode_into(value, &mut body) {
            Ok(()) => Ok(body),
            Err(err) => {
                buffers::give_back(body);
                Err(err)
            }
        }
    }

    fn encode_into<T: Serialize + ?Sized>(
        self,
        value: &T,
        body: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let written = match self {
            Codec::MsgPack => {
                rmp_serde::encode::write_named(body, value).map_err(|e| e.to_string())
            }
            Codec::Json => {
                serde_json::to_writer(body, &finite::Finite(value)).map_err(|e| e.to_string())
            }
        };
        written.map_err(CodecError)
    }

    /// Decodes a value; the error says what did not fit, and where.
    pub fn decode<T: DeserializeOwned>(self, body: &[u8]) -> Result<T, CodecError> {
        let decoded = match self {
            Codec::MsgPack => {
                let end = extent::first_value_len(body).map_err(CodecError)?;
                if end < body.len() {
                    return Err(CodecError(format!(
                        "trailing bytes: the value ends at byte {end} of {}",
                        body.len()
                    )));
                }
                T::deserialize(&mut msgpack_decoder(body)).map_err(|e| e.to_string())
            }
            Codec::Json => serde_json::from_slice(body).map_err(|e| e.to_string()),
        };
        // Only a failure pays for the second, slower decode that explains it.
        decoded.map_err(|plain| CodecError(self.explain::<T>(body).unwrap_or(plain)))
    }

    /// Decodes a value from a shared buffer: the [`Bytes`] in it share the buffer, where
    /// [`Codec::decode`] would copy them out.
    pub fn decode_shared<T: DeserializeOwned>(self, body: &bytes::Bytes) -> Result<T, CodecError> {
        shared::decoding_from(body, || self.decode(body))
    }

    /// Decodes again, tracking the path to the value that did not fit, with serde_json's
    /// messages ("invalid type: string \"two\", expected i64") rather than MessagePack
    /// marker names.
    fn explain<T: DeserializeOwned>(self, body: &[u8]) -> Option<String> {
        let error = match self {
            Codec::Json => {
                let mut de = serde_json::Deserializer::from_slice(body);
                serde_path_to_error::deserialize::<_, T>(&mut de).err()?
            }
            Codec::MsgPack => {
                let value = serde_json::Value::deserialize(&mut msgpack_decoder(body)).ok()?;
                serde_path_to_error::deserialize::<_, T>(value).err()?
            }
        };
        let path = error.path().to_string();
        Some(if path == "." {
            error.into_inner().to_string()
        } else {
            format!("{path}: {}", error.into_inner())
        })
    }
}

/// A MessagePack decoder of `body` that stops at [`MAX_DEPTH`].
fn msgpack_decoder(
    body: &[u8],
) -> rmp_serde::Deserializer<rmp_serde::decode::ReadRefReader<'_, [u8]>> {
    let mut de = rmp_serde::Deserializer::from_read_ref(body);
    de.set_max_depth(MAX_DEPTH);
    de
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::MsgPack => "msgpack",
            Codec::Json => "json",
        })
    }
}

impl FromStr for Codec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "msgpack" | "messagepack" => Ok(Codec::MsgPack),
            "json" => Ok(Codec::Json),
            other => Err(format!(
                "unknown codec `{other}` (expected `msgpack` or `json`)"
            )),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Codec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Codec {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Point {
        x: i32,
        y: i32,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Circle { r: f64 },
    }

    #[test]
    fn msgpack_writes_structs_as_maps_with_field_names() {
        let body = Codec::MsgPack.encode(&Point { x: 1, y: 2 }).unwrap();
        // fixmap of 2 entries, first key the fixstr "x"
        assert_eq!(body[0], 0x82);
        assert_eq!(&body[1..3], &[0xa1, b'x']);
        assert_eq!(
            Codec::MsgPack.decode::<Point>(&body).unwrap(),
            Point { x: 1, y: 2 }
        );
    }

    #[test]
    fn enums_are_externally_tagged_in_both_codecs() {
        for codec in [Codec::MsgPack, Codec::Json] {
            let unit = codec.encode(&Shape::Dot).unwrap();
            assert_eq!(codec.decode::<String>(&unit).unwrap(), "Dot", "{codec}");
            let circle = codec.encode(&Shape::Circle { r: 1.5 }).unwrap();
            let as_json: serde_json::Value = codec.decode(&circle).unwrap();
            assert_eq!(
                as_json,
                serde_json::json!({"Circle": {"r": 1.5}}),
                "{codec}"
            );
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(Codec::from_content_type(None), Some(Codec::MsgPack));
        assert_eq!(
            Codec::from_content_type(Some("application/json; charset=utf-8")),
            Some(Codec::Json)
        );
        assert_eq!(
            Codec::from_content_type(Some("application/x-msgpack")),
            Some(Codec::MsgPack)
        );
        assert_eq!(Codec::from_content_type(Some("text/plain")), None);
        for codec in [Codec::MsgPack, Codec::Json] {
            assert_eq!(
                Codec::from_content_type(Some(codec.content_type())),
                Some(codec)
            );
            assert_eq!(codec.to_string().parse::<Codec>(), Ok(codec));
        }
    }

    #[test]
    fn decode_errors_say_what_did_not_fit() {
        let err = Codec::Json
            .decode::<Point>(br#"{"x": "one", "y": 2}"#)
            .unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        assert!(err.to_string().contains("column"), "{err}");
        assert!(Codec::MsgPack.decode::<Point>(&[0xc1]).is_err());
        let body = Codec::MsgPack
            .encode(&serde_json::json!({"x": 1, "y": "two"}))
            .unwrap();
        let err = Codec::MsgPack
            .decode::<Point>(&body)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("y: invalid type: string \"two\", expected i32"),
            "{err}"
        );
    }

    #[test]
    fn nesting_deeper_than_the_limit_is_refused_by_both_codecs() {
        for depth in [MAX_DEPTH + 1, 1_000, 100_000] {
            let mut msgpack = vec![0x91; depth];
            msgpack.push(0xc0);
            let json = format!("{}null{}", "[".repeat(depth), "]".repeat(depth));
            for (codec, body) in [(Codec::MsgPack, msgpack), (Codec::Json, json.into_bytes())] {
                let err = codec
                    .decode::<serde_json::Value>(&body)
                    .unwrap_err()
                    .to_string();
                assert!(
                    err.contains("depth") || err.contains("recursion"),
                    "{codec} {depth}: {err}"
                );
                // The explaining second decode must not recurse either.
                assert!(codec.decode::<Point>(&body).is_err());
            }
        }
        let mut shallow = vec![0x91; 100];
        shallow.push(0xc0);
        assert!(Codec::MsgPack.decode::<serde_json::Value>(&shallow).is_ok());
    }

    #[test]
    fn trailing_bytes_are_refused_by_both_codecs() {
        let mut msgpack = Codec::MsgPack.encode(&(1, 2)).unwrap();
        msgpack.push(0x01);
        let err = Codec::MsgPack.decode::<(i32, i32)>(&msgpack).unwrap_err();
        assert!(err.to_string().contains("trailing"), "{err}");
        assert!(Codec::Json.decode::<(i32, i32)>(b"[1, 2] 3").is_err());
        assert!(Codec::Json.decode::<(i32, i32)>(b" [1, 2]\n").is_ok());
        assert!(Codec::MsgPack.decode::<(i32, i32)>(&[0x92, 0x01]).is_err());
    }

    #[test]
    fn non_finite_floats_are_refused_in_json_and_carried_in_msgpack() {
        for value in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let err = Codec::Json.encode(&Shape::Circle { r: value }).unwrap_err();
            assert!(
                err.to_string().contains("cannot be encoded in JSON"),
                "{err}"
            );
            let err = Codec::Json.encode(&vec![Some(value as f32)]).unwrap_err();
            assert!(err.to_string().contains("JSON"), "{err}");
            let body = Codec::MsgPack.encode(&value).unwrap();
            let back: f64 = Codec::MsgPack.decode(&body).unwrap();
            assert_eq!(back.to_bits(), value.to_bits());
        }
        let mut map = std::collections::BTreeMap::new();
        map.insert("x", vec![1.5f64, -0.0]);
        assert_eq!(Codec::Json.encode(&map).unwrap(), br#"{"x":[1.5,-0.0]}"#);
    }
}
