//! Standard output for results. A reader that goes away early (`guirpc list | head -1`)
//! is not an error: the command ends quietly, with success, as `head` meant it to.

use std::fmt;
use std::io::{ErrorKind, Write};

use crate::exit::{Exit, report};

/// Prints a line of results on standard output.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}
pub(crate) use outln;

pub(crate) fn write_line(line: fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{line}").and_then(|()| out.flush());
    if let Err(err) = written {
        closed_or_failed(&err);
    }
}

/// Writes bytes as they are, on the same terms as [`outln!`].
pub(crate) fn write_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    if let Err(err) = out.write_all(bytes).and_then(|()| out.flush()) {
        closed_or_failed(&err);
    }
}

/// Ends the program: quietly when the reader closed the pipe, with a message otherwise.
pub(crate) fn closed_or_failed(err: &std::io::Error) -> ! {
    if err.kind() == ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    let _ = report(
        Exit::Usage,
        &format!("cannot write to standard output: {err}"),
        None,
    );
    std::process::exit(Exit::Usage as i32)
}

/// A result as JSON, whatever codec it came in: MessagePack `bin` (a `Bytes` or `ByteBuf`)
/// becomes an array of numbers, as JSON writes bytes, and a map key that is not a string
/// (MessagePack allows any) becomes its JSON text, where `serde_json::Value` would refuse
/// both.
pub(crate) struct Json(pub serde_json::Value);

impl<'de> serde::Deserialize<'de> for Json {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(JsonVisitor).map(Json)
    }
}

struct JsonVisitor;

impl<'de> serde::de::Visitor<'de> for JsonVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_i64<E>(self, v: i64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_u64<E>(self, v: u64) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_f64<E>(self, v: f64) -> Result<serde_json::Value, E> {
        // JSON has no NaN or infinity: null, as serde_json writes them.
        Ok(serde_json::Number::from_f64(v).map_or(serde_json::Value::Null, Into::into))
    }

    fn visit_str<E>(self, v: &str) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_string<E>(self, v: String) -> Result<serde_json::Value, E> {
        Ok(v.into())
    }

    fn visit_bytes<E>(self, v: &[u8]) -> Result<serde_json::Value, E> {
        Ok(v.iter().map(|&b| serde_json::Value::from(b)).collect())
    }

    fn visit_none<E>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_unit<E>(self) -> Result<serde_json::Value, E> {
        Ok(serde_json::Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<serde_json::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<serde_json::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> Result<serde_json::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Json(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(items.into())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<serde_json::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some((Json(key), Json(value))) = map.next_entry()? {
            let key = match key {
                serde_json::Value::String(key) => key,
                other => other.to_string(),
            };
            object.insert(key, value);
        }
        Ok(object.into())
    }
}

#[cfg(test)]
mod tests {
    use super::Json;
    use guirpc_core::{Bytes, Codec};
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn bytes_and_foreign_keys_read_as_json() {
        let value = (
            Bytes::from(vec![1, 2, 255]),
            BTreeMap::from([(7u32, "seven")]),
            Some(1.5),
            "text",
        );
        for codec in [Codec::MsgPack, Codec::Json] {
            let body = codec.encode(&value).unwrap();
            let Json(read) = codec.decode(&body).unwrap();
            assert_eq!(
                read,
                json!([[1, 2, 255], {"7": "seven"}, 1.5, "text"]),
                "{codec}"
            );
        }
        // MessagePack carries NaN, which JSON has no word for.
        let body = Codec::MsgPack.encode(&f64::NAN).unwrap();
        let Json(read) = Codec::MsgPack.decode(&body).unwrap();
        assert_eq!(read, serde_json::Value::Null);
    }
}
