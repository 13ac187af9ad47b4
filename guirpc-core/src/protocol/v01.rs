//! The form of the Python package guirpc 0.1, which guirpc servers answer and guirpc
//! clients can speak (docs/PROTOCOL.md, "The guirpc 0.1 form"; docs/MIGRATING.md).
//!
//! A request names its function in the header `FaaS-Name`; its body is base64 of the
//! text its serializer wrote (`JsonSerializer`: JSON, `TextSerializer`: text) in its
//! `content_encoding`. A reply carries the headers `Response-Status` (200, 400, 500) and
//! `Response-Serializer`, and base64 of the result's text, or of the error message.
//! `BinarySerializer` bodies are pickles: refused, never unpickled.

use std::borrow::Cow;

use base64::Engine as _;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use serde_json::Value;

use super::ErrorCode;

/// The header naming the function called.
pub const HEADER_FAAS_NAME: &str = "FaaS-Name";
/// The reply's status: 200, or 400 or 500 with the message as the body.
pub const HEADER_RESPONSE_STATUS: &str = "Response-Status";
/// The serializer the reply's body is written with, by its class name.
pub const HEADER_RESPONSE_SERIALIZER: &str = "Response-Serializer";

/// A guirpc 0.1 serializer guirpc speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serializer {
    /// `JsonSerializer`: JSON text, ASCII (`ensure_ascii`).
    Json,
    /// `TextSerializer`: the text itself.
    Text,
}

impl Serializer {
    /// Its class name, as `Response-Serializer` names it.
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "JsonSerializer",
            Serializer::Text => "TextSerializer",
        }
    }

    /// The `content_type` it writes.
    pub fn content_type(self) -> &'static str {
        match self {
            Serializer::Json => "application/json",
            Serializer::Text => "text/plain",
        }
    }

    /// The serializer a message's `content_type` names; why not, for one guirpc does not
    /// read.
    pub(crate) fn of(content_type: Option<&str>) -> Result<Serializer, String> {
        let essence = content_type.map(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
        match essence.as_deref() {
            Some("application/json") => Ok(Serializer::Json),
            Some("text/plain") => Ok(Serializer::Text),
            None | Some("") => Err(
                "a guirpc 0.1 body without content_type: a pickle (BinarySerializer), which guirpc never unpickles; send it with JsonSerializer or TextSerializer".into(),
            ),
            Some(other) => Err(format!(
                "a guirpc 0.1 body of content_type `{other}` (expected application/json, JsonSerializer, or text/plain, TextSerializer)"
            )),
        }
    }
}

/// How a guirpc 0.1 request's body is written, from its properties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Form {
    content_type: Option<String>,
    encoding: Option<String>,
}

impl Form {
    pub(crate) fn of(properties: &BasicProperties) -> Form {
        Form {
            content_type: properties.content_type().as_ref().map(|c| c.to_string()),
            encoding: properties
                .content_encoding()
                .as_ref()
                .map(|e| e.to_string()),
        }
    }

    /// The serializer of its reply: the request's.
    pub(crate) fn serializer(&self) -> Result<Serializer, String> {
        Serializer::of(self.content_type.as_deref())
    }

    /// The arguments as guirpc reads them, in JSON: an object by parameter name, an array
    /// in order, and any other value (a text, a number) as the one argument of a function
    /// of one parameter.
    pub(crate) fn arguments(&self, body: &[u8]) -> Result<Vec<u8>, String> {
        let serializer = self.serializer()?;
        let bytes = decode_base64(body)?;
        let text = decode_text(&bytes, self.encoding.as_deref())?;
        let value = match serializer {
            Serializer::Json => serde_json::from_str::<Value>(&text)
                .map_err(|err| format!("a guirpc 0.1 JSON body that does not parse: {err}"))?,
            Serializer::Text => Value::String(text.into_owned()),
        };
        let arguments = match value {
            value @ (Value::Object(_) | Value::Array(_)) => value,
            one => Value::Array(vec![one]),
        };
        Ok(serde_json::to_vec(&arguments).expect("a JSON value always encodes"))
    }
}

/// Base64 as guirpc 0.1 writes it (`base64.encodebytes`: padded, a line break every 76
/// characters); whitespace is skipped.
fn decode_base64(body: &[u8]) -> Result<Vec<u8>, String> {
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|err| format!("a guirpc 0.1 body that is not base64 ({err})"))
}

/// The text of a body in its `content_encoding`: ASCII (what guirpc 0.1 writes), UTF-8
/// (also when none is named) or Latin-1.
fn decode_text<'a>(bytes: &'a [u8], encoding: Option<&str>) -> Result<Cow<'a, str>, String> {
    let name = encoding.unwrap_or("utf-8").trim().to_ascii_lowercase();
    match name.as_str() {
        "ascii" | "us-ascii" => {
            if bytes.is_ascii() {
                Ok(Cow::Borrowed(
                    std::str::from_utf8(bytes).expect("ASCII is UTF-8"),
                ))
            } else {
                Err("a guirpc 0.1 body that is not ASCII, as its content_encoding says".into())
            }
        }
        "utf-8" | "utf8" => std::str::from_utf8(bytes)
            .map(Cow::Borrowed)
            .map_err(|err| format!("a guirpc 0.1 body that is not UTF-8: {err}")),
        "latin-1" | "latin1" | "iso-8859-1" => {
            Ok(Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()))
        }
        other => Err(format!(
            "a guirpc 0.1 body in content_encoding `{other}` (expected ascii or utf-8)"
        )),
    }
}

/// The status guirpc 0.1 reads for a reply of this outcome: 200, 400 for what the call
/// got wrong (and a function's own error), 500 for what went wrong on the server's side.
pub(crate) fn status(code: Option<&ErrorCode>) -> i32 {
    match code {
        None => 200,
        Some(
            ErrorCode::BadRequest
            | ErrorCode::NotFound
            | ErrorCode::HandlerError
            | ErrorCode::TooLarge
            | ErrorCode::Unauthorized
            | ErrorCode::Forbidden,
        ) => 400,
        Some(_) => 500,
    }
}

/// A reply's body and `content_encoding` in guirpc 0.1's form: `value` the function's
/// return value (as JSON), or the error's `[code] message`.
pub(crate) fn reply_body(
    serializer: Serializer,
    outcome: Result<&Value, (&ErrorCode, &str)>,
) -> (Vec<u8>, &'static str) {
    let (text, encoding) = match outcome {
        Ok(value) => match (serializer, value) {
            (Serializer::Text, Value::String(text)) => utf8_or_ascii(text.clone()),
            (Serializer::Text, other) => (ascii_json(other), "ascii"),
            (Serializer::Json, value) => (ascii_json(value), "ascii"),
        },
        Err((code, message)) => (ascii_escaped(&format!("[{code}] {message}")), "ascii"),
    };
    let body = base64::engine::general_purpose::STANDARD
        .encode(text.as_bytes())
        .into_bytes();
    (body, encoding)
}

fn utf8_or_ascii(text: String) -> (String, &'static str) {
    let encoding = if text.is_ascii() { "ascii" } else { "utf-8" };
    (text, encoding)
}

/// JSON in ASCII, as Python's `json.dumps` writes it by default: every other character as
/// a `\u` escape (a surrogate pair beyond the first plane). Lossless, and readable by
/// guirpc 0.1's producer, which decodes replies as ASCII.
pub(crate) fn ascii_json(value: &Value) -> String {
    ascii_escaped(&serde_json::to_string(value).expect("a JSON value always encodes"))
}

/// Text with every character beyond ASCII as a `\u` escape.
fn ascii_escaped(text: &str) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}

/// The properties of a reply in guirpc 0.1's form. An error is written as text, as
/// guirpc 0.1's own errors are.
pub(crate) fn reply_properties(
    serializer: Serializer,
    encoding: &'static str,
    status: i32,
    correlation_id: Option<ShortString>,
) -> BasicProperties {
    let serializer = if status == 200 {
        serializer
    } else {
        Serializer::Text
    };
    let mut headers = FieldTable::default();
    headers.insert(HEADER_RESPONSE_STATUS.into(), AMQPValue::LongInt(status));
    headers.insert(
        HEADER_RESPONSE_SERIALIZER.into(),
        AMQPValue::LongString(serializer.name().into()),
    );
    let properties = BasicProperties::default()
        .with_content_type(serializer.content_type().into())
        .with_content_encoding(encoding.into())
        .with_headers(headers);
    match correlation_id {
        Some(id) => properties.with_correlation_id(id),
        None => properties,
    }
}

/// What a client speaks to its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// guirpc's own (docs/PROTOCOL.md).
    #[default]
    Guirpc,
    /// The Python package guirpc 0.1's, to call its consumers: the arguments written
    /// with this serializer (`Text` takes one string), the reply read from its
    /// `Response-Status` and `Response-Serializer`. Calls only: its consumers take no
    /// casts and stream nothing.
    Guirpc01(Serializer),
}

impl std::str::FromStr for Protocol {
    type Err = String;

    /// `guirpc`, `guirpc-0.1` (its `JsonSerializer`) or `guirpc-0.1-text` (its
    /// `TextSerializer`).
    fn from_str(text: &str) -> Result<Protocol, String> {
        match text.trim() {
            "guirpc" => Ok(Protocol::Guirpc),
            "guirpc-0.1" | "guirpc-0.1-json" => Ok(Protocol::Guirpc01(Serializer::Json)),
            "guirpc-0.1-text" => Ok(Protocol::Guirpc01(Serializer::Text)),
            other => Err(format!(
                "expected `guirpc`, `guirpc-0.1` or `guirpc-0.1-text`, got `{other}`"
            )),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Guirpc => "guirpc",
            Protocol::Guirpc01(Serializer::Json) => "guirpc-0.1",
            Protocol::Guirpc01(Serializer::Text) => "guirpc-0.1-text",
        })
    }
}

/// A call's properties in guirpc 0.1's form: `FaaS-Name`, the serializer's
/// `content_type`, direct reply-to, the timeout as `expiration`.
pub(crate) fn request_properties(
    function: &str,
    serializer: Serializer,
    encoding: &'static str,
    correlation_id: ShortString,
    timeout: std::time::Duration,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        HEADER_FAAS_NAME.into(),
        AMQPValue::LongString(function.into()),
    );
    BasicProperties::default()
        .with_correlation_id(correlation_id)
        .with_reply_to(super::DIRECT_REPLY_TO.into())
        .with_expiration(
            itoa::Buffer::new()
                .format(timeout.as_millis().max(1))
                .into(),
        )
        .with_content_type(serializer.content_type().into())
        .with_content_encoding(encoding.into())
        .with_headers(headers)
}

/// A call's body in guirpc 0.1's form, from its arguments in JSON, and its
/// `content_encoding`: JSON as ASCII; a text as itself (ASCII, or UTF-8 when it is not).
pub(crate) fn request_body(
    serializer: Serializer,
    json: &[u8],
) -> Result<(Vec<u8>, &'static str), String> {
    let value: Value = serde_json::from_slice(json).map_err(|err| err.to_string())?;
    let (text, encoding) = match (serializer, value) {
        (Serializer::Json, value) => (ascii_json(&value), "ascii"),
        (Serializer::Text, Value::String(text)) => utf8_or_ascii(text),
        (Serializer::Text, Value::Array(mut one)) if one.len() == 1 && one[0].is_string() => {
            match one.pop() {
                Some(Value::String(text)) => utf8_or_ascii(text),
                _ => unreachable!("checked"),
            }
        }
        (Serializer::Text, other) => {
            return Err(format!(
                "a guirpc 0.1 TextSerializer call takes one string, not {other}"
            ));
        }
    };
    let body = base64::engine::general_purpose::STANDARD
        .encode(text.as_bytes())
        .into_bytes();
    Ok((body, encoding))
}

/// A guirpc 0.1 consumer's reply as a guirpc caller reads one: the value in JSON, or the
/// error (`bad_request` for a 4xx status, `internal` for any other failure) with the
/// consumer's message.
pub(crate) fn response(
    properties: &BasicProperties,
    body: &[u8],
) -> Result<Vec<u8>, (ErrorCode, String)> {
    let fail = |code: ErrorCode, message: &str| Err((code, message.to_owned()));
    let headers = properties.headers().as_ref();
    let header = |name: &str| headers.and_then(|h| h.inner().get(name));
    let Some(status) = header(HEADER_RESPONSE_STATUS).and_then(|v| match v {
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        other => super::value_as_u64(other).and_then(|v| i64::try_from(v).ok()),
    }) else {
        return fail(
            ErrorCode::Internal,
            "the guirpc 0.1 reply has no Response-Status header",
        );
    };
    let serializer = header(HEADER_RESPONSE_SERIALIZER)
        .and_then(super::value_as_str)
        .map(Cow::into_owned)
        .unwrap_or_default();
    let text = match decode_base64(body).and_then(|bytes| {
        let encoding = properties.content_encoding().as_ref().map(|e| e.as_str());
        // guirpc 0.1 writes ASCII and says so; read UTF-8 whatever it says.
        let encoding = encoding.filter(|e| e.eq_ignore_ascii_case("latin-1"));
        decode_text(&bytes, encoding).map(Cow::into_owned)
    }) {
        Ok(text) => text,
        Err(why) => return fail(ErrorCode::Internal, &format!("the reply has {why}")),
    };
    if !(200..300).contains(&status) {
        let code = if (400..500).contains(&status) {
            ErrorCode::BadRequest
        } else {
            ErrorCode::Internal
        };
        return fail(code, &format!("status {status}: {text}"));
    }
    match serializer.as_str() {
        "JsonSerializer" => match serde_json::from_str::<Value>(&text) {
            Ok(_) => Ok(text.into_bytes()),
            Err(err) => fail(
                ErrorCode::Internal,
                &format!("the JSON reply does not parse: {err}"),
            ),
        },
        "TextSerializer" => {
            Ok(serde_json::to_vec(&Value::String(text)).expect("a string always encodes"))
        }
        "BinarySerializer" => fail(
            ErrorCode::Internal,
            "the consumer answered with a pickle (BinarySerializer), which guirpc never unpickles",
        ),
        other => fail(
            ErrorCode::Internal,
            &format!(
                "the reply's Response-Serializer `{other}` is not JsonSerializer or TextSerializer"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(content_type: Option<&str>, encoding: Option<&str>) -> Form {
        Form {
            content_type: content_type.map(str::to_owned),
            encoding: encoding.map(str::to_owned),
        }
    }

    fn arguments(form: &Form, body: &[u8]) -> Result<Value, String> {
        form.arguments(body)
            .map(|json| serde_json::from_slice(&json).unwrap())
    }

    #[test]
    fn bodies_are_read_as_the_python_package_writes_them() {
        let json = form(Some("application/json"), Some("ascii"));
        // `base64.encodebytes(b'{"foo": 1, "bar": 2}')`, newline and all.
        assert_eq!(
            arguments(&json, b"eyJmb28iOiAxLCAiYmFyIjogMn0=\n").unwrap(),
            serde_json::json!({"foo": 1, "bar": 2})
        );
        assert_eq!(
            arguments(&json, b"WzEsIDJd").unwrap(),
            serde_json::json!([1, 2])
        );
        assert_eq!(arguments(&json, b"Mw==").unwrap(), serde_json::json!([3]));
        let text = form(Some("text/plain"), Some("ascii"));
        assert_eq!(
            arguments(&text, b"TXkgbmFtZQ==\n").unwrap(),
            serde_json::json!(["My name"])
        );
        let utf8 = form(Some("text/plain"), None);
        let body = base64::engine::general_purpose::STANDARD.encode("héllo");
        assert_eq!(
            arguments(&utf8, body.as_bytes()).unwrap(),
            serde_json::json!(["héllo"])
        );
    }

    #[test]
    fn what_it_cannot_read_is_refused_with_the_reason() {
        let pickle = form(None, None);
        let err = arguments(&pickle, b"gARLAy4=").unwrap_err();
        assert!(err.contains("never unpickles"), "{err}");
        let json = form(Some("application/json"), Some("ascii"));
        assert!(
            arguments(&json, b"not base64!")
                .unwrap_err()
                .contains("not base64")
        );
        let body = base64::engine::general_purpose::STANDARD.encode("{\"a\": ");
        assert!(
            arguments(&json, body.as_bytes())
                .unwrap_err()
                .contains("does not parse")
        );
        let body = base64::engine::general_purpose::STANDARD.encode("\"é\"");
        assert!(
            arguments(&json, body.as_bytes())
                .unwrap_err()
                .contains("not ASCII")
        );
        let odd = form(Some("application/json"), Some("ebcdic"));
        assert!(arguments(&odd, b"e30=").unwrap_err().contains("ebcdic"));
        let xml = form(Some("application/xml"), None);
        assert!(
            arguments(&xml, b"e30=")
                .unwrap_err()
                .contains("application/xml")
        );
    }

    #[test]
    fn replies_are_written_as_the_python_package_reads_them() {
        let decode = |body: Vec<u8>| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(body)
                    .unwrap(),
            )
            .unwrap()
        };
        let value = serde_json::json!({"result": 3, "name": "né😀"});
        let (body, encoding) = reply_body(Serializer::Json, Ok(&value));
        assert_eq!(encoding, "ascii");
        let text = decode(body);
        assert_eq!(text, r#"{"name":"n\u00e9\ud83d\ude00","result":3}"#);
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), value);
        let (body, _) = reply_body(Serializer::Text, Ok(&serde_json::json!("2")));
        assert_eq!(decode(body), "2");
        let (body, _) = reply_body(Serializer::Text, Ok(&serde_json::json!(7)));
        assert_eq!(decode(body), "7");
        let code = ErrorCode::NotFound;
        let (body, _) = reply_body(Serializer::Json, Err((&code, "no function `x`")));
        assert_eq!(decode(body), "[not_found] no function `x`");
        assert_eq!(status(None), 200);
        assert_eq!(status(Some(&ErrorCode::HandlerError)), 400);
        assert_eq!(status(Some(&ErrorCode::Internal)), 500);
        let props = reply_properties(Serializer::Json, "ascii", 400, Some("id".into()));
        let headers = props.headers().as_ref().unwrap().inner();
        assert_eq!(
            headers.get(HEADER_RESPONSE_STATUS),
            Some(&AMQPValue::LongInt(400))
        );
        assert_eq!(
            headers.get(HEADER_RESPONSE_SERIALIZER),
            Some(&AMQPValue::LongString("TextSerializer".into()))
        );
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            "text/plain"
        );
    }
}
