//! The status page: one HTML page for a person, rendered from the very numbers `/metrics`
//! exposes (so the two never disagree), reloading itself every few seconds.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::Endpoint;
use super::html::{Latency, STYLE, escape, utc};
use super::recent::quantile;

/// How often the page reloads itself, in seconds.
const REFRESH_SECONDS: u32 = 2;

/// How many dead letters shown on the page.
const LAST_DEAD_LETTERS: usize = 5;

/// The dead letters a server gave up: how many, and the last few with why.
#[derive(Debug, Default)]
pub(crate) struct DeadLetters {
    state: std::sync::Mutex<DeadState>,
}

#[derive(Debug, Default)]
struct DeadState {
    count: u64,
    last: std::collections::VecDeque<DeadLetter>,
}

#[derive(Debug, Clone)]
struct DeadLetter {
    at: std::time::SystemTime,
    function: String,
    code: String,
    message: String,
}

impl DeadLetters {
    /// Records one given up.
    pub(crate) fn record(&self, function: &str, code: &str, message: &str) {
        use crate::sync::Locked;
        let mut state = self.state.locked();
        state.count += 1;
        if state.last.len() == LAST_DEAD_LETTERS {
            state.last.pop_front();
        }
        state.last.push_back(DeadLetter {
            at: std::time::SystemTime::now(),
            function: function.to_owned(),
            code: code.to_owned(),
            message: message.to_owned(),
        });
    }

    fn snapshot(&self) -> (u64, Vec<DeadLetter>) {
        use crate::sync::Locked;
        let state = self.state.locked();
        (state.count, state.last.iter().rev().cloned().collect())
    }
}

/// One function's row.
#[derive(Debug, Default)]
struct Row {
    summary: String,
    calls: u64,
    errors: u64,
    /// Cumulative bucket counts by upper bound, as exposed.
    buckets: Vec<(f64, u64)>,
}

/// The status page; `query` (`?token=...`, or empty) is kept on its links.
pub(super) fn page(endpoint: &Endpoint, query: &str) -> String {
    let text = endpoint.metrics.encode();
    let queue = endpoint.queue.as_str();
    let mut rows: BTreeMap<String, Row> = endpoint
        .functions
        .iter()
        .map(|(name, summary)| {
            let row = Row {
                summary: summary.clone(),
                ..Row::default()
            };
            (name.clone(), row)
        })
        .collect();
    let mut in_flight = 0.0;
    for sample in text.lines().filter_map(Sample::parse) {
        if sample.label("queue") != Some(queue) {
            continue;
        }
        let function = sample.label("function").unwrap_or_default();
        match sample.name {
            "guirpc_server_calls_total" => {
                let row = rows.entry(function.to_owned()).or_default();
                let count = sample.value as u64;
                row.calls += count;
                if sample.label("code") != Some(crate::middleware::OUTCOME_OK) {
                    row.errors += count;
                }
            }
            "guirpc_server_handler_duration_seconds_bucket" => {
                let bound = match sample.label("le") {
                    Some("+Inf") => f64::INFINITY,
                    Some(le) => le.parse().unwrap_or(f64::INFINITY),
                    None => continue,
                };
                let row = rows.entry(function.to_owned()).or_default();
                row.buckets.push((bound, sample.value as u64));
            }
            "guirpc_server_calls_in_flight" => in_flight = sample.value,
            _ => {}
        }
    }
    let readiness = (endpoint.readiness)();
    let state_class = if readiness.is_ready() { "ok" } else { "bad" };
    let uptime = endpoint.started.elapsed().as_secs();
    let mut html = String::with_capacity(4096);
    let _ = write!(
        html,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="{REFRESH_SECONDS}">
<title>guirpc: {queue}</title>
<style>{STYLE}</style></head>
<body>
<h1>Service <code>{}</code></h1>
<div class="meta">instance {} &middot; guirpc {} &middot; up {}h {:02}m {:02}s</div>
<p>Connection: <span id="state" class="{state_class}">{}</span> &middot;
calls in flight: <span id="in-flight">{in_flight}</span></p>
"#,
        escape(queue),
        escape(&endpoint.instance),
        env!("CARGO_PKG_VERSION"),
        uptime / 3600,
        uptime / 60 % 60,
        uptime % 60,
        escape(&readiness.to_string()),
    );
    html.push_str(&super::pages::recent(endpoint, rows.keys(), query));
    html.push_str(&super::pages::errors(endpoint));
    html.push_str("<h2>Since start</h2>\n<table id=\"functions\">\n<tr><th>function</th><th>calls</th><th>errors</th><th>p50</th><th>p95</th><th>p99</th><th class=\"doc\">description</th></tr>\n");
    for (name, row) in &rows {
        let _ = writeln!(
            html,
            "<tr data-function=\"{0}\"><td>{7}</td><td class=\"calls\">{1}</td><td class=\"errors\">{2}</td><td>{3}</td><td>{4}</td><td>{5}</td><td class=\"doc\">{6}</td></tr>",
            escape(name),
            row.calls,
            row.errors,
            Latency(quantile(&row.buckets, 0.50)),
            Latency(quantile(&row.buckets, 0.95)),
            Latency(quantile(&row.buckets, 0.99)),
            escape(&row.summary),
            if super::pages::served(endpoint, name) {
                format!(
                    "<a href=\"{}{query}\"><code>{}</code></a>",
                    super::pages::path_of(name),
                    escape(name)
                )
            } else {
                format!("<code>{}</code>", escape(name))
            },
        );
    }
    let _ = writeln!(html, "</table>");
    if let Some(dead) = &endpoint.dead_letters {
        let (count, last) = dead.snapshot();
        let _ = writeln!(
            html,
            "<h2>Dead letters</h2>\n<p>Given up by this server since it started: <span id=\"dead-letters\">{count}</span>{}</p>",
            match &endpoint.dead_letter_queue {
                Some(queue) => format!(
                    " &middot; kept in <code>{0}</code> (<code>guirpc dead list -q {1}</code>)",
                    escape(queue),
                    escape(queue_name(queue)),
                ),
                None => String::new(),
            }
        );
        if !last.is_empty() {
            let _ = writeln!(
                html,
                "<table id=\"dead\">\n<tr><th>when (UTC)</th><th>function</th><th>code</th><th class=\"doc\">message</th></tr>"
            );
            for letter in &last {
                let _ = writeln!(
                    html,
                    "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td class=\"doc\">{}</td></tr>",
                    utc(letter.at),
                    escape(&letter.function),
                    escape(&letter.code),
                    escape(&letter.message),
                );
            }
            let _ = writeln!(html, "</table>");
        }
    }
    let _ = write!(
        html,
        "<p class=\"meta\">Latencies are estimated from the histogram buckets of <a href=\"/metrics{query}\">/metrics</a>, as Prometheus' <code>histogram_quantile</code> does. Health: <a href=\"/healthz\">/healthz</a>, <a href=\"/readyz\">/readyz</a>. The service's AsyncAPI document: <a href=\"/asyncapi.json{query}\">/asyncapi.json</a>. Reloads every {REFRESH_SECONDS} s.</p>\n</body></html>\n"
    );
    html
}

/// One sample line of the exposition: `name{label="value",...} value`.
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl<'a> Sample<'a> {
    fn parse(line: &'a str) -> Option<Sample<'a>> {
        if line.starts_with('#') || line.is_empty() {
            return None;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(at) => line.split_at(at),
            None => return None,
        };
        let mut labels = Vec::new();
        let mut rest = rest;
        if let Some(mut inner) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = inner.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let inner_trimmed = inner.trim_start_matches(',');
                let (key, after) = inner_trimmed.split_once("=\"")?;
                let mut value = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next()? {
                        (i, '"') => break i,
                        (_, '\\') => match chars.next()?.1 {
                            'n' => value.push('\n'),
                            other => value.push(other),
                        },
                        (_, c) => value.push(c),
                    }
                };
                labels.push((key, value));
                inner = &after[end + 1..];
            }
        }
        let value = rest.split_ascii_whitespace().next()?.parse().ok()?;
        Some(Sample {
            name,
            labels,
            value,
        })
    }

    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The service queue of a dead-letter queue's name.
fn queue_name(dead: &str) -> &str {
    dead.strip_suffix(crate::protocol::DEAD_SUFFIX)
        .unwrap_or(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_with_their_labels() {
        let sample = Sample::parse(r#"x_bucket{le="0.5",queue="q",function="a\"b"} 3"#).unwrap();
        assert_eq!(sample.name, "x_bucket");
        assert_eq!(sample.label("function"), Some("a\"b"));
        assert_eq!(sample.label("le"), Some("0.5"));
        assert_eq!(sample.value, 3.0);
        assert_eq!(Sample::parse("up 1").unwrap().value, 1.0);
        assert!(Sample::parse("# TYPE x counter").is_none());
        assert!(Sample::parse(r#"x{a="unterminated} 1"#).is_none());
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let buckets = [(0.001, 50), (0.01, 100), (f64::INFINITY, 100)];
        assert_eq!(quantile(&buckets, 0.5), Some(0.001));
        assert!((quantile(&buckets, 0.75).unwrap() - 0.0055).abs() < 1e-9);
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 0)], 0.5), None);
        assert_eq!(quantile(&[(0.1, 0), (f64::INFINITY, 4)], 0.5), Some(0.1));
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
