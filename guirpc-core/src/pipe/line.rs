//! The line format of `docs/PIPES.md`: the request line a worker reads for a call, and what
//! its answer line says. Nothing here knows of processes or pipes.

use serde_json::{Value, json};

use crate::codec::Codec;
use crate::envelope;
use crate::middleware::Reply;
use crate::protocol::ErrorCode;

/// What a worker may write on its standard output, said wherever it broke the rule.
pub(super) const STDOUT_RULE: &str = "a worker must write nothing to its standard output but \
     one answer line per call it read, {\"ok\": ...} or {\"error\": ...}, and its logs to its \
     standard error";

/// The line a worker reads for one call, newline included.
pub(super) fn request(id: u64, function: &str, args: &Value, deadline_ms: Option<u128>) -> Vec<u8> {
    let mut line = serde_json::to_vec(&json!({
        "id": id,
        "function": function,
        "args": args,
        "deadline_ms": deadline_ms,
    }))
    .expect("a JSON value always encodes");
    line.push(b'\n');
    line
}

/// A worker's answer: a JSON object with exactly one of `ok` and `error`; its other keys
/// (an `id` echoed back, say) are ignored.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Answer {
    /// `{"ok": value}`: the function's result.
    Ok(Value),
    /// `{"error": "message"}` or `{"error": {"message": ..., "detail": ...}}`: the
    /// function's own error.
    Error { message: String, detail: Value },
}

impl Answer {
    /// Reads an answer line's value; `Err` says why it is not an answer.
    pub(super) fn parse(value: Value) -> Result<Answer, &'static str> {
        let Value::Object(mut answer) = value else {
            return Err(r#"an answer is a JSON object, {"ok": ...} or {"error": ...}"#);
        };
        match (answer.remove("ok"), answer.remove("error")) {
            (Some(_), Some(_)) => Err("it has both `ok` and `error`; an answer has exactly one"),
            (None, None) => Err(r#"it is neither {"ok": ...} nor {"error": ...}"#),
            (Some(value), None) => Ok(Answer::Ok(value)),
            (None, Some(error)) => {
                let (message, detail) = match error {
                    Value::String(message) => (message, Value::Null),
                    Value::Object(mut error) => {
                        let message = match error.remove("message") {
                            Some(Value::String(message)) => message,
                            Some(other) => other.to_string(),
                            None => "the worker reported an error".to_owned(),
                        };
                        (message, error.remove("detail").unwrap_or(Value::Null))
                    }
                    other => (other.to_string(), Value::Null),
                };
                Ok(Answer::Error { message, detail })
            }
        }
    }

    /// The reply the caller of `name` gets: the result, or `handler_error` with the message
    /// ("`NAME` returned an error: MESSAGE") and the detail.
    pub(super) fn reply(self, name: &str, codec: Codec) -> Reply {
        let (message, detail) = match self {
            Answer::Ok(value) => return Reply::value(codec, &value),
            Answer::Error { message, detail } => (message, detail),
        };
        let code = ErrorCode::HandlerError;
        let message = format!("`{name}` returned an error: {message}");
        match envelope::encode_with_detail(codec, &code, &message, &detail) {
            Ok(body) => Reply {
                code: Some(code),
                body,
                rejected: false,
            },
            Err(err) => Reply::error(
                codec,
                ErrorCode::Internal,
                &format!("`{name}` returned an error whose detail cannot be encoded: {err}"),
            ),
        }
    }
}

/// At most 200 bytes of what a worker wrote, as text, for a message.
pub(super) fn shown(bytes: &[u8]) -> String {
    let mut shown = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
    if shown.ends_with('\n') {
        shown.pop();
    }
    shown
}
