//! A service's AsyncAPI 3.0 document, written from its description: the request queue,
//! each function as a request/reply operation (and a cast), streams with their credit,
//! each subscription on the events exchange, the AMQP properties and headers of
//! docs/PROTOCOL.md as bindings, and the functions' JSON Schemas.
//!
//! The schemas of a description are JSON Schema 2020-12, each standalone; AsyncAPI 3.0's
//! default schema format is a superset of draft 7 whose `$ref`s resolve from the document's
//! root. So every schema's `$defs` move to `components/schemas` (a name two different
//! definitions share gets a number), their `$ref`s follow, and `prefixItems` become draft
//! 7's `items` array: the same values fit.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::protocol::{Description, FunctionDescription, SubscriptionDescription};

/// The AsyncAPI version written.
pub const VERSION: &str = "3.0.0";

/// Where the document says the broker is: `host:port` and the virtual host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    /// `127.0.0.1:5672`.
    pub host: String,
    /// `/`.
    pub vhost: String,
    /// Whether the connection is TLS (`amqps`).
    pub tls: bool,
}

impl Broker {
    /// The broker of an `amqp://` or `amqps://` URI (its first node, when it names a
    /// cluster), without the user or password; `None` for a URI that does not parse.
    pub fn from_uri(uri: &str) -> Option<Broker> {
        let first = uri.split(',').next()?.trim();
        let (tls, rest) = if let Some(rest) = first.strip_prefix("amqps://") {
            (true, rest)
        } else {
            (false, first.strip_prefix("amqp://")?)
        };
        let rest = rest.split(['?', '#']).next().unwrap_or("");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if host.is_empty() { "localhost" } else { host };
        let host = if host.contains(':') && !host.ends_with(']') {
            host.to_owned()
        } else {
            format!("{host}:{}", if tls { 5671 } else { 5672 })
        };
        let vhost = match path {
            "" => "/".to_owned(),
            path => path.replace("%2f", "/").replace("%2F", "/"),
        };
        Some(Broker { host, vhost, tls })
    }
}

/// The AsyncAPI 3.0 document of a described service, as JSON.
///
/// ```
/// use guirpc_core::protocol::Description;
/// let description = Description {
///     queue: "calculator".into(),
///     version: "0.1.0".into(),
///     functions: Vec::new(),
///     subscriptions: Vec::new(),
///     exchange: None,
///     events_exchange: None,
/// };
/// let document = guirpc_core::schema::asyncapi::document(&description, None);
/// assert_eq!(document["asyncapi"], "3.0.0");
/// assert_eq!(document["channels"]["requests"]["address"], "calculator");
/// ```
pub fn document(description: &Description, broker: Option<&Broker>) -> Value {
    let mut writer = Writer::default();
    let queue = description.queue.as_str();
    let exchange = description.exchange.as_deref().unwrap_or("");
    let events_exchange = description
        .events_exchange
        .as_deref()
        .unwrap_or(crate::protocol::DEFAULT_EVENTS_EXCHANGE);

    let mut request_messages = Map::new();
    let mut reply_messages = Map::new();
    reply_messages.insert("error".into(), reference("#/components/messages/error"));
    writer
        .messages
        .insert("error".into(), error_message("error", None));
    let mut credit_needed = false;
    let mut operations = Map::new();
    for function in &description.functions {
        let id = key(&function.name);
        let request = format!("{id}.request");
        request_messages.insert(
            request.clone(),
            reference(&format!("#/components/messages/{request}")),
        );
        let message = writer.request_message(function);
        writer.messages.insert(request.clone(), message);
        let mut replies = vec![];
        if function.streams {
            credit_needed = true;
            for (suffix, message) in writer.stream_messages(function) {
                let name = format!("{id}.{suffix}");
                reply_messages.insert(
                    name.clone(),
                    reference(&format!("#/components/messages/{name}")),
                );
                writer.messages.insert(name.clone(), message);
                replies.push(reference(&format!("#/channels/replies/messages/{name}")));
            }
        } else {
            let name = format!("{id}.reply");
            reply_messages.insert(
                name.clone(),
                reference(&format!("#/components/messages/{name}")),
            );
            let message = writer.reply_message(function);
            writer.messages.insert(name.clone(), message);
            replies.push(reference(&format!("#/channels/replies/messages/{name}")));
        }
        // A typed error's detail has its schema: the function's own error message.
        match function.schema.as_ref().and_then(|s| s.error.as_ref()) {
            Some(error) => {
                let name = format!("{id}.error");
                let detail = writer.payload(
                    Some(error),
                    "The function's error value, with `handler_error`; otherwise null.",
                    "Output",
                );
                reply_messages.insert(
                    name.clone(),
                    reference(&format!("#/components/messages/{name}")),
                );
                writer
                    .messages
                    .insert(name.clone(), error_message(&name, Some(detail)));
                replies.push(reference(&format!("#/channels/replies/messages/{name}")));
            }
            None => replies.push(reference("#/channels/replies/messages/error")),
        }
        let request_ref = reference(&format!("#/channels/requests/messages/{request}"));
        let mut operation = json!({
            "action": "receive",
            "title": function.name,
            "summary": function.summary(),
            "description": function.doc,
            "channel": reference("#/channels/requests"),
            "messages": [request_ref],
            "reply": {
                "address": {
                    "location": "$message.header#/reply_to",
                    "description": "the request's `reply_to` property: the caller's reply queue (guirpc clients use direct reply-to, `amq.rabbitmq.reply-to`)",
                },
                "channel": reference("#/channels/replies"),
                "messages": replies,
            },
            "bindings": { "amqp": { "ack": true, "bindingVersion": "0.3.0" } },
        });
        if let Some(retry) = &function.retry {
            operation["x-guirpc-retry"] = serde_json::to_value(retry).unwrap_or(Value::Null);
        }
        operations.insert(id.clone(), operation);
        if !function.streams {
            operations.insert(
                format!("{id}.cast"),
                json!({
                    "action": "receive",
                    "title": format!("{} (cast)", function.name),
                    "summary": format!("Casts `{}`: the same request without `reply_to`, published persistent, mandatory and confirmed; nothing is answered, a failed run is retried by the function's policy and then kept as a dead letter in `{queue}.dead`.", function.name),
                    "channel": reference("#/channels/requests"),
                    "messages": [reference(&format!("#/channels/requests/messages/{request}"))],
                    "bindings": { "amqp": { "ack": true, "deliveryMode": 2, "mandatory": true, "bindingVersion": "0.3.0" } },
                }),
            );
        }
    }

    let mut channels = Map::new();
    let request_binding = if exchange.is_empty() {
        json!({ "is": "queue", "queue": { "name": queue, "durable": true, "exclusive": false, "autoDelete": false }, "bindingVersion": "0.3.0" })
    } else {
        json!({ "is": "routingKey", "exchange": { "name": exchange, "type": "direct", "durable": true, "autoDelete": false }, "bindingVersion": "0.3.0" })
    };
    channels.insert(
        "requests".into(),
        json!({
            "address": queue,
            "title": format!("The requests of `{queue}`"),
            "description": if exchange.is_empty() {
                format!("The service queue `{queue}`: requests are published to the default exchange with routing key `{queue}`, `mandatory` (a request no queue takes comes back at once: the service is not running).")
            } else {
                format!("Requests are published to the direct exchange `{exchange}` with routing key `{queue}`, `mandatory`; the service queue `{queue}` is bound to it.")
            },
            "messages": request_messages,
            "bindings": { "amqp": request_binding },
        }),
    );
    channels.insert(
        "replies".into(),
        json!({
            "address": null,
            "title": "Replies",
            "description": "The caller's reply queue, named by each request's `reply_to`; replies are published to the default exchange.",
            "messages": reply_messages,
        }),
    );
    if credit_needed {
        channels.insert(
            "credit".into(),
            json!({
                "address": null,
                "title": "Stream credit",
                "description": "The queue a stream's first item names in its `guirpc-credit-to` header, exclusive to the server; the caller grants credit and cancels there.",
                "messages": { "credit": reference("#/components/messages/credit"), "cancel": reference("#/components/messages/cancel") },
            }),
        );
        writer.messages.insert("credit".into(), control_message("credit", "Grants the server `message_id` more items of the stream whose ID is the `correlation_id` (in decimal)."));
        writer.messages.insert("cancel".into(), control_message("cancel", "Stops the stream whose ID is the `correlation_id` (in decimal); the server sends nothing more."));
        operations.insert(
            "stream.credit".into(),
            json!({
                "action": "receive",
                "title": "Credit and cancellation of streams",
                "channel": reference("#/channels/credit"),
                "messages": [reference("#/channels/credit/messages/credit"), reference("#/channels/credit/messages/cancel")],
            }),
        );
    }
    for subscription in &description.subscriptions {
        let id = key(&subscription.name);
        let channel = format!("events.{id}");
        let name = format!("{id}.event");
        let message = writer.event_message(subscription);
        writer.messages.insert(name.clone(), message);
        channels.insert(
            channel.clone(),
            json!({
                "address": subscription.pattern,
                "title": format!("Events matching `{}`", subscription.pattern),
                "description": format!(
                    "Events published to the topic exchange `{events_exchange}` with a topic matching `{}` (`*` one word, `#` any); {}.",
                    subscription.pattern,
                    if subscription.broadcast {
                        "every server of the service gets each, on a queue of its own".to_owned()
                    } else {
                        format!("each is served once by the service, from the queue `{queue}.{}`", subscription.name)
                    }
                ),
                "messages": { name.clone(): reference(&format!("#/components/messages/{name}")) },
                "bindings": { "amqp": {
                    "is": "routingKey",
                    "exchange": { "name": events_exchange, "type": "topic", "durable": true, "autoDelete": false },
                    "bindingVersion": "0.3.0",
                } },
            }),
        );
        let mut operation = json!({
            "action": "receive",
            "title": subscription.name,
            "summary": subscription.summary,
            "channel": reference(&format!("#/channels/{channel}")),
            "messages": [reference(&format!("#/channels/{channel}/messages/{name}"))],
            "bindings": { "amqp": { "ack": true, "bindingVersion": "0.3.0" } },
        });
        if let Some(retry) = &subscription.retry {
            operation["x-guirpc-retry"] = serde_json::to_value(retry).unwrap_or(Value::Null);
        }
        operations.insert(format!("on.{id}"), operation);
    }

    let mut document = json!({
        "asyncapi": VERSION,
        "info": {
            "title": format!("{queue} (a guirpc service)"),
            "version": description.version,
            "description": format!(
                "The service served on the queue `{queue}` by guirpc {}: every function is a request/reply operation on that queue (and can be cast, without a reply), every subscription an operation on the events exchange. Bodies are MessagePack (`application/msgpack`, the default when `content_type` is absent) or JSON (`application/json`); the schemas describe both. The wire protocol: docs/PROTOCOL.md.",
                description.version
            ),
        },
        "defaultContentType": crate::codec::Codec::MsgPack.content_type(),
        "channels": channels,
        "operations": operations,
        "components": {
            "schemas": writer.schemas,
            "messages": writer.messages,
        },
    });
    if let Some(broker) = broker {
        document["servers"] = json!({
            "broker": {
                "host": broker.host,
                "pathname": broker.vhost,
                "protocol": if broker.tls { "amqps" } else { "amqp" },
                "protocolVersion": "0.9.1",
            }
        });
    }
    document
}

/// Collects the messages and the definitions they share.
#[derive(Default)]
struct Writer {
    schemas: Map<String, Value>,
    /// Each component schema as its description had it, to tell a definition met again
    /// from another of the same name.
    originals: BTreeMap<String, Value>,
    messages: Map<String, Value>,
}

impl Writer {
    fn request_message(&mut self, function: &FunctionDescription) -> Value {
        let params = function.schema.as_ref().map(|s| &s.params);
        let mut headers = json!({
            "guirpc-deadline": { "type": "integer", "description": "The absolute deadline, milliseconds since the Unix epoch (an AMQP integer, not a timestamp); past it the call is answered `deadline_exceeded` without running." },
            "traceparent": { "type": "string", "description": "W3C Trace Context of the caller." },
            "tracestate": { "type": "string", "description": "W3C trace state, passed on with `traceparent`." },
            "guirpc-function": { "type": "string", "const": function.name, "description": "Protocol version 1's function name, for a name longer than the `type` property holds." },
        });
        if function.streams {
            headers["guirpc-stream"] = json!({ "type": "integer", "minimum": 1, "description": "Asks for a stream: the initial credit, how many items the server may send before the caller grants more (at most 4096 count)." });
        }
        json!({
            "name": format!("{}.request", key(&function.name)),
            "title": format!("A call of `{}`", function.name),
            "summary": function.summary(),
            "headers": { "type": "object", "properties": headers },
            "correlationId": { "location": "$message.header#/correlation_id", "description": "The `correlation_id` property, echoed on the reply." },
            "payload": self.payload(params, "The arguments: a map of parameter name to value.", "Input"),
            "bindings": { "amqp": { "messageType": function.name, "bindingVersion": "0.3.0" } },
            "x-guirpc-signature": function.signature(),
        })
    }

    fn reply_message(&mut self, function: &FunctionDescription) -> Value {
        let returns = function.schema.as_ref().and_then(|s| s.returns.as_ref());
        json!({
            "name": format!("{}.reply", key(&function.name)),
            "title": format!("What `{}` returns", function.name),
            "correlationId": { "location": "$message.header#/correlation_id" },
            "payload": self.payload(returns, &format!("The return value ({}).", function.returns), "Output"),
            "bindings": { "amqp": { "messageType": "ok", "bindingVersion": "0.3.0" } },
        })
    }

    fn stream_messages(&mut self, function: &FunctionDescription) -> Vec<(&'static str, Value)> {
        let item = function.schema.as_ref().and_then(|s| s.item.as_ref());
        let id = key(&function.name);
        vec![
            (
                "item",
                json!({
                    "name": format!("{id}.item"),
                    "title": format!("An item of `{}`", function.name),
                    "summary": "Item n (from 0) in `message_id`; the first item names the credit queue and the stream's ID in its headers.",
                    "headers": { "type": "object", "properties": {
                        "guirpc-credit-to": { "type": "string", "description": "The queue where the caller grants credit and cancels (first item only)." },
                        "guirpc-stream-id": { "type": "integer", "description": "The server's ID of the stream (first item only)." },
                    } },
                    "correlationId": { "location": "$message.header#/correlation_id" },
                    "payload": self.payload(item, "One item of the stream.", "Output"),
                    "bindings": { "amqp": { "messageType": "item", "bindingVersion": "0.3.0" } },
                }),
            ),
            (
                "end",
                json!({
                    "name": format!("{id}.end"),
                    "title": format!("The end of a stream of `{}`", function.name),
                    "summary": "No body; `message_id` holds the number of items sent.",
                    "correlationId": { "location": "$message.header#/correlation_id" },
                    "payload": { "type": "null" },
                    "bindings": { "amqp": { "messageType": "end", "bindingVersion": "0.3.0" } },
                }),
            ),
        ]
    }

    fn event_message(&mut self, subscription: &SubscriptionDescription) -> Value {
        let event = subscription.schema.as_ref().map(|s| &s.event);
        json!({
            "name": format!("{}.event", key(&subscription.name)),
            "title": format!("An event `{}` takes", subscription.name),
            "summary": subscription.summary,
            "headers": { "type": "object", "properties": {
                "traceparent": { "type": "string", "description": "W3C Trace Context of the publisher." },
                "guirpc-topic": { "type": "string", "description": "A retried event's topic (the delay ladder's routing key is not its topic)." },
            } },
            "payload": self.payload(event, "The event.", "Input"),
            "bindings": { "amqp": { "bindingVersion": "0.3.0" } },
        })
    }

    /// A schema of a description as a payload: its definitions moved to the components.
    fn payload(&mut self, schema: Option<&Value>, description: &str, hint: &str) -> Value {
        let mut schema = match schema {
            Some(schema) => self.hoist(schema, hint),
            None => json!({}),
        };
        if let Value::Object(map) = &mut schema
            && !map.contains_key("description")
        {
            map.insert("description".into(), description.into());
        }
        schema
    }

    /// Moves a standalone schema's `$defs` into `components/schemas`, numbering a
    /// definition whose name another, different one already has.
    fn hoist(&mut self, schema: &Value, hint: &str) -> Value {
        let definitions = schema
            .get("$defs")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut renamed = BTreeMap::new();
        for (name, definition) in &definitions {
            let base = key(name);
            let fits = |candidate: &String| {
                self.originals
                    .get(candidate)
                    .is_none_or(|existing| existing == definition)
            };
            // Read and written forms of a type can differ (an `Option` field may be left
            // out of what is sent, never out of what is answered): the second is named
            // after its use.
            let target = [base.clone(), format!("{base}{hint}")]
                .into_iter()
                .chain((2..).map(|n| format!("{base}{hint}{n}")))
                .find(fits)
                .expect("a free name");
            renamed.insert(name.clone(), target);
        }
        for (name, definition) in &definitions {
            let target = &renamed[name];
            if !self.originals.contains_key(target) {
                self.originals.insert(target.clone(), definition.clone());
                self.schemas
                    .insert(target.clone(), convert(definition, &renamed));
            }
        }
        convert(schema, &renamed)
    }
}

/// A 2020-12 schema in AsyncAPI's draft 7 form: `$ref`s into `$defs` point at the
/// components, `prefixItems` become an `items` array, `$schema` and `$defs` go.
fn convert(schema: &Value, renamed: &BTreeMap<String, String>) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                match key.as_str() {
                    "$schema" | "$defs" => {}
                    "$ref" => {
                        let target = value
                            .as_str()
                            .and_then(|r| r.strip_prefix("#/$defs/"))
                            .map(|name| {
                                let name = renamed
                                    .get(name)
                                    .cloned()
                                    .unwrap_or_else(|| name.to_owned());
                                Value::String(format!("#/components/schemas/{name}"))
                            })
                            .unwrap_or_else(|| value.clone());
                        out.insert(key.clone(), target);
                    }
                    "prefixItems" => {
                        out.insert("items".into(), convert(value, renamed));
                        if let Some(rest) = map.get("items") {
                            out.insert("additionalItems".into(), convert(rest, renamed));
                        }
                    }
                    "items" if map.contains_key("prefixItems") => {}
                    "properties" | "patternProperties" => {
                        let converted: Map<String, Value> = value
                            .as_object()
                            .map(|props| {
                                props
                                    .iter()
                                    .map(|(k, v)| (k.clone(), convert(v, renamed)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        out.insert(key.clone(), Value::Object(converted));
                    }
                    _ => {
                        out.insert(key.clone(), convert(value, renamed));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|i| convert(i, renamed)).collect()),
        other => other.clone(),
    }
}

/// An error reply: the envelope, its `detail` a function's error type when it has one.
fn error_message(name: &str, detail: Option<Value>) -> Value {
    let detail = detail.unwrap_or_else(
        || json!({ "description": "The function's error value with `handler_error`; otherwise null." }),
    );
    json!({
        "name": name,
        "title": "An error reply",
        "summary": "The call failed: the error envelope. With `handler_error`, `detail` is the function's error value.",
        "correlationId": { "location": "$message.header#/correlation_id" },
        "payload": {
            "type": "object",
            "properties": {
                "code": { "type": "string", "enum": [
                    "bad_request", "not_found", "handler_error", "internal", "deadline_exceeded",
                    "too_large", "max_run_exceeded", "unauthorized", "forbidden",
                ], "description": "A stable code; treat an unknown one as `internal`." },
                "message": { "type": "string", "description": "A sentence for a person, naming the function." },
                "detail": { "anyOf": [detail, { "type": "null" }] },
            },
            "required": ["code", "message"],
        },
        "bindings": { "amqp": { "messageType": "error", "bindingVersion": "0.3.0" } },
    })
}

fn control_message(kind: &str, summary: &str) -> Value {
    json!({
        "name": kind,
        "summary": summary,
        "correlationId": { "location": "$message.header#/correlation_id" },
        "payload": { "type": "null" },
        "bindings": { "amqp": { "messageType": kind, "bindingVersion": "0.3.0" } },
    })
}

fn reference(to: &str) -> Value {
    json!({ "$ref": to })
}

/// A name as AsyncAPI's keys allow it: letters, digits, `.`, `-` and `_`.
fn key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}
