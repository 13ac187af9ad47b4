//! The parts of the status pages beyond the totals: the last quarter hour of each function
//! as small SVG charts (drawn here, no script), the last errors, and a page per function
//! with its description, schemas and example calls generated from them.

use std::fmt::Write;

use serde_json::Value;

use super::Endpoint;
use super::html::{Latency, STYLE, escape, utc};
use super::recent::{SLOT, SLOTS, Slot};

const WIDTH: f64 = 180.0;
const HEIGHT: f64 = 36.0;

/// The charts of the functions called in the last 15 minutes, busiest first.
pub(super) fn recent<'a>(
    endpoint: &Endpoint,
    functions: impl Iterator<Item = &'a String>,
    query: &str,
) -> String {
    let recent = &endpoint.metrics.inner.server.recent;
    let mut called: Vec<(u64, &String)> = functions
        .map(|name| {
            let calls = recent
                .window(&endpoint.queue, name)
                .iter()
                .map(|s| s.calls)
                .sum();
            (calls, name)
        })
        .filter(|(calls, _)| *calls > 0)
        .collect();
    called.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let mut html = String::from(
        "<h2>Last 15 minutes</h2>\n<p class=\"meta\">Calls and errors per second, and latency (p50 blue, p99 brown), in 10-second steps; the functions called, busiest first.</p>\n",
    );
    if called.is_empty() {
        html.push_str("<p id=\"quiet\">No calls in the last 15 minutes.</p>\n");
    }
    for (_, name) in called {
        let link = served(endpoint, name).then(|| format!("{}{query}", path_of(name)));
        html.push_str(&charts(endpoint, name, link.as_deref()));
        html.push('\n');
    }
    html
}

/// One function's charts: calls per second, errors per second, p50 and p99 latency.
pub(super) fn charts(endpoint: &Endpoint, function: &str, link: Option<&str>) -> String {
    let window = endpoint
        .metrics
        .inner
        .server
        .recent
        .window(&endpoint.queue, function);
    let per_second = SLOT.as_secs_f64();
    let calls: Vec<Option<f64>> = window
        .iter()
        .map(|s| Some(s.calls as f64 / per_second))
        .collect();
    let errors: Vec<Option<f64>> = window
        .iter()
        .map(|s| Some(s.errors as f64 / per_second))
        .collect();
    let p50: Vec<Option<f64>> = window.iter().map(|s| s.quantile(0.5)).collect();
    let p99: Vec<Option<f64>> = window.iter().map(|s| s.quantile(0.99)).collect();
    let total_calls: u64 = window.iter().map(|s| s.calls).sum();
    let total_errors: u64 = window.iter().map(|s| s.errors).sum();
    let whole = merged(&window);
    let mut html = String::new();
    let _ = write!(
        html,
        "<figure class=\"chart\" data-function=\"{name}\" data-calls=\"{total_calls}\" data-errors=\"{total_errors}\">\
<figcaption>{title}: <span class=\"calls\">{total_calls}</span> {}, <span class=\"errors\">{total_errors}</span> {}, p50 {}, p99 {} in the last 15 min</figcaption>\
<div class=\"row\">{}{}{}</div></figure>",
        plural(total_calls, "call"),
        plural(total_errors, "error"),
        Latency(whole.quantile(0.5)),
        Latency(whole.quantile(0.99)),
        sparkline("calls/s", &[(&calls, "#1f6feb")], |v| format!("{v:.1}/s")),
        sparkline("errors/s", &[(&errors, "#b3261e")], |v| format!("{v:.1}/s")),
        sparkline(
            "latency p50, p99",
            &[(&p50, "#1f6feb"), (&p99, "#9a6700")],
            |v| Latency(Some(v)).to_string()
        ),
        name = escape(function),
        title = match link {
            Some(link) => format!("<a href=\"{link}\"><code>{}</code></a>", escape(function)),
            None => format!("<code>{}</code>", escape(function)),
        },
    );
    html
}

/// Whether the service serves a function of that name (`unknown` gathers those it does not).
pub(super) fn served(endpoint: &Endpoint, name: &str) -> bool {
    endpoint.functions.iter().any(|(served, _)| served == name)
}

fn plural(count: u64, word: &str) -> String {
    if count == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// All slots as one, for the window's quantiles.
fn merged(window: &[Slot]) -> Slot {
    window.iter().fold(Slot::default(), |mut all, slot| {
        all.add(slot);
        all
    })
}

/// A small chart of series sharing a scale: a line each (broken where a slot has no
/// value), the largest value written at the top.
fn sparkline(
    title: &str,
    series: &[(&Vec<Option<f64>>, &str)],
    label: impl Fn(f64) -> String,
) -> String {
    let largest = series
        .iter()
        .flat_map(|(values, _)| values.iter().flatten())
        .fold(0.0_f64, |a, b| a.max(*b));
    let scale = if largest > 0.0 { largest } else { 1.0 };
    let step = WIDTH / (SLOTS - 1) as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"spark\" role=\"img\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\"><title>{title}, last 15 minutes (largest {})</title>\
<rect x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"#f6f8fa\"/>",
        escape(&label(largest)),
        w = WIDTH,
        h = HEIGHT + 12.0,
        title = escape(title),
    );
    for (values, color) in series {
        let mut segment: Vec<String> = Vec::new();
        let flush = |segment: &mut Vec<String>, svg: &mut String| {
            match segment.len() {
                0 => {}
                1 => {
                    let (x, y) = segment[0].split_once(',').unwrap_or(("0", "0"));
                    let _ = write!(
                        svg,
                        "<circle cx=\"{x}\" cy=\"{y}\" r=\"1.5\" fill=\"{color}\"/>"
                    );
                }
                _ => {
                    let _ = write!(
                        svg,
                        "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"/>",
                        segment.join(" ")
                    );
                }
            }
            segment.clear();
        };
        for (i, value) in values.iter().enumerate() {
            match value {
                Some(v) => {
                    let x = i as f64 * step;
                    let y = 12.0 + HEIGHT - v / scale * HEIGHT;
                    segment.push(format!("{x:.1},{y:.1}"));
                }
                None => flush(&mut segment, &mut svg),
            }
        }
        flush(&mut segment, &mut svg);
    }
    let _ = write!(
        svg,
        "<text x=\"2\" y=\"10\" font-size=\"9\" fill=\"#555\">{} &#183; max {}</text></svg>",
        escape(title),
        escape(&label(largest)),
    );
    svg
}

/// The last errors of the service, newest first.
pub(super) fn errors(endpoint: &Endpoint) -> String {
    let errors = endpoint.metrics.inner.server.recent.errors(&endpoint.queue);
    let mut html = format!(
        "<h2>Last errors</h2>\n<p>The last {} error replies of this server (at most {}).</p>\n",
        errors.len(),
        super::recent::LAST_ERRORS
    );
    if errors.is_empty() {
        return html;
    }
    html.push_str("<table id=\"errors\">\n<tr><th>when (UTC)</th><th>function</th><th>code</th><th class=\"doc\">message</th></tr>\n");
    for error in &errors {
        let _ = writeln!(
            html,
            "<tr><td>{}</td><td><code>{}</code></td><td class=\"code\">{}</td><td class=\"doc\">{}</td></tr>",
            utc(error.at),
            escape(&error.function),
            escape(&error.code),
            escape(&error.message),
        );
    }
    html.push_str("</table>\n");
    html
}

/// The page of one function, `None` when the service serves none of that name.
pub(super) fn function_page(endpoint: &Endpoint, name: &str, query: &str) -> Option<String> {
    let description = (endpoint.description)()?;
    let function = description.functions.iter().find(|f| f.name == name)?;
    let queue = escape(&endpoint.queue);
    let mut html = String::with_capacity(8192);
    let _ = write!(
        html,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>guirpc: {queue} &#183; {n}</title>\n<style>{}</style></head>\n<body>\n\
<p class=\"meta\"><a href=\"/{query}\">&#8592; <code>{queue}</code></a></p>\n\
<h1><code>{n}</code></h1>\n<p class=\"signature\"><code>{}</code></p>\n<div class=\"doc\">{}</div>\n{}\n",
        STYLE,
        escape(&function.signature()),
        paragraphs(&function.doc),
        charts(endpoint, name, None),
        n = escape(name),
    );
    if function.streams {
        html.push_str("<p>It streams its result: call it asking for a stream (<code>guirpc call</code> does), its items come as they are produced.</p>\n");
    }
    if let Some(retry) = &function.retry {
        let _ = writeln!(
            html,
            "<p>Casts of it that fail: {}.</p>",
            escape(&retry.to_string())
        );
    }
    let example_args = function
        .schema
        .as_ref()
        .and_then(|s| crate::schema::example(&s.params))
        .filter(Value::is_object)
        .unwrap_or_else(|| Value::Object(Default::default()));
    let args = serde_json::to_string(&example_args).expect("a value always prints");
    let _ = write!(
        html,
        "<h2>Call it</h2>\n<p>From a shell (the broker from <code>GUIRPC_URI</code> or <code>guirpc.toml</code>):</p>\n<pre id=\"shell\">{}</pre>\n\
<p>From Python with pika, in JSON (set <code>GUIRPC_URI</code>, or it connects to a local broker as guest):</p>\n<pre id=\"python\">{}</pre>\n",
        escape(&shell_example(
            &endpoint.queue,
            name,
            &args,
            function.streams
        )),
        escape(&python_example(&endpoint.queue, name, &example_args)),
    );
    if let Some(schema) = &function.schema {
        html.push_str("<h2>Schemas</h2>\n<p>JSON Schema 2020-12, from the Rust types (<code>guirpc list --schema</code> prints them too).</p>\n");
        for (label, id, schema) in [
            ("Arguments", "schema-params", Some(&schema.params)),
            ("Result", "schema-returns", schema.returns.as_ref()),
            ("Each item", "schema-item", schema.item.as_ref()),
            (
                "Error (the detail of handler_error)",
                "schema-error",
                schema.error.as_ref(),
            ),
        ] {
            if let Some(schema) = schema {
                let text = serde_json::to_string_pretty(schema).expect("a schema always prints");
                let _ = writeln!(
                    html,
                    "<h3>{label}</h3>\n<pre id=\"{id}\">{}</pre>",
                    escape(&text)
                );
            }
        }
    }
    html.push_str("</body></html>\n");
    Some(html)
}

/// `guirpc call ...`, with arguments that fit the schema.
fn shell_example(queue: &str, name: &str, args: &str, streams: bool) -> String {
    let quoted = format!("'{}'", args.replace('\'', r"'\''"));
    let mut line = format!("guirpc call --queue {queue} {name} {quoted}");
    if !streams {
        line.push_str(&format!("\nguirpc cast --queue {queue} {name} {quoted}"));
    }
    line
}

/// A Python program that calls the function with pika through direct reply-to.
fn python_example(queue: &str, name: &str, args: &Value) -> String {
    let literal = |text: &str| serde_json::to_string(text).expect("a string always prints");
    format!(
        r#"import json, os, uuid
import pika

connection = pika.BlockingConnection(pika.URLParameters(os.environ.get("GUIRPC_URI", "amqp://localhost:5672/%2f")))
channel = connection.channel()
replies = {{}}

def on_reply(channel, method, properties, body):
    replies[properties.correlation_id] = (properties.type, json.loads(body))

channel.basic_consume("amq.rabbitmq.reply-to", on_reply, auto_ack=True)
arguments = {args}  # by parameter name
call_id = str(uuid.uuid4())
channel.basic_publish(
    exchange="",
    routing_key={queue},
    mandatory=True,
    properties=pika.BasicProperties(
        type={name},
        content_type="application/json",
        correlation_id=call_id,
        reply_to="amq.rabbitmq.reply-to",
        expiration="10000",
    ),
    body=json.dumps(arguments),
)
while call_id not in replies:
    connection.process_data_events(time_limit=1)
status, value = replies[call_id]
print(status, json.dumps(value))  # "ok" and the result, or "error" and {{code, message, detail}}
connection.close()"#,
        queue = literal(queue),
        name = literal(name),
        args = python_literal(args),
    )
}

/// A JSON value as Python writes it: `True`, `None`, the rest as JSON has it (a JSON
/// string is a Python string literal).
fn python_literal(value: &Value) -> String {
    match value {
        Value::Null => "None".to_owned(),
        Value::Bool(true) => "True".to_owned(),
        Value::Bool(false) => "False".to_owned(),
        Value::Number(_) | Value::String(_) => value.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(python_literal)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), python_literal(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A doc comment as paragraphs.
fn paragraphs(doc: &str) -> String {
    doc.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", escape(p.trim())))
        .collect()
}

/// A function's name in a path: `/functions/stats.summary`.
pub(super) fn path_of(name: &str) -> String {
    let mut path = String::from("/functions/");
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_') {
            path.push(byte as char);
        } else {
            let _ = write!(path, "%{byte:02X}");
        }
    }
    path
}

/// The name in `/functions/<name>`, decoded.
pub(super) fn name_of(path: &str) -> Option<String> {
    let encoded = path.strip_prefix("/functions/")?;
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
