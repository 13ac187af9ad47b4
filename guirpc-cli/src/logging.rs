//! Log output: level (or a full `tracing` filter) and format from flags, the environment
//! or the config file.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use guirpc_core::config::{LogFormat, Settings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::exit::{Exit, Failure};
use crate::flag::value_name;

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Log level (GUIRPC_LOG also takes a filter: info,guirpc_core::server=debug)
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<Level>,
    /// Log format
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<Format>,
}

/// The most detailed kind of log line shown.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    /// Lines for a person
    Text,
    /// One JSON object per line
    Json,
}

impl LogArgs {
    pub(crate) fn flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = Vec::new();
        if let Some(level) = self.log_level {
            flags.push(("log.level", value_name(level)));
        }
        if let Some(format) = self.log_format {
            flags.push(("log.format", value_name(format)));
        }
        flags
    }
}

/// What must live as long as the program logs: with the `otel` feature and an OTLP
/// endpoint, the exporter, flushed when this is dropped.
#[must_use]
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<guirpc_core::otel::Provider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take() {
            provider.shutdown();
        }
    }
}

/// Installs the log subscriber; logs go to standard error, in colour only on a terminal
/// and unless `NO_COLOR` is set. With an OTLP endpoint (and the `otel` feature), spans
/// also go to that collector, when `export` (for `serve`; a one-shot command's spans are
/// not worth a collector's while).
pub(crate) fn init(settings: &Settings, export: bool) -> Result<Telemetry, Failure> {
    let filter = filter(&settings.log_level, !export)?;
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(color);
    let layer = match settings.log_format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer.json().with_filter(filter).boxed(),
    };
    let telemetry = Telemetry {
        #[cfg(feature = "otel")]
        provider: if export { otlp(settings)? } else { None },
    };
    #[cfg(feature = "otel")]
    let exporting = telemetry.provider.as_ref().map(|provider| {
        // Spans of guirpc and of the service's own code; not those of the AMQP client.
        let spans = EnvFilter::new("info,lapin=off,amq_protocol=off");
        provider.layer().with_filter(spans)
    });
    #[cfg(not(feature = "otel"))]
    if export && !settings.otlp_endpoint.is_empty() {
        eprintln!(
            "warning: an OTLP endpoint is set ({}), but this guirpc was built without the `otel` feature: no spans are sent",
            settings.otlp_endpoint
        );
    }
    #[cfg(not(feature = "otel"))]
    let exporting: Option<tracing_subscriber::layer::Identity> = None;
    // An error means a subscriber is installed already (a second run in one process).
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(exporting)
        .try_init();
    Ok(telemetry)
}

/// The OTLP exporter, when an endpoint is set.
#[cfg(feature = "otel")]
fn otlp(settings: &Settings) -> Result<Option<guirpc_core::otel::Provider>, Failure> {
    if settings.otlp_endpoint.is_empty() {
        return Ok(None);
    }
    guirpc_core::otel::Provider::otlp(&settings.otlp_endpoint, &settings.queue)
        .map(Some)
        .map_err(|err| {
            Failure::new(
                Exit::Usage,
                format!("cannot export spans to {}: {err}", settings.otlp_endpoint),
            )
        })
}

/// A level (`info`) or `tracing`'s filter syntax (`info,guirpc_core::server=debug`).
/// A bare word must be a level: `tracing` would read `loud` as "everything from target
/// `loud`", hiding a typo; a target takes its level after `=`.
///
/// For a one-shot command (`call`, `cast`, `publish`, ...) at `info`, the per-call spans
/// (target `guirpc_core::trace`) are off unless the filter names that target: such a
/// command reports each failure itself, no line it writes at `info` is inside a call, and
/// formatting every call's span fields cost `call --stdin` and `cast --stdin` a third of
/// their throughput.
fn filter(text: &str, one_shot: bool) -> Result<EnvFilter, Failure> {
    let invalid = |why: String| {
        Failure::new(
            Exit::Usage,
            format!(
                "invalid log level or filter `{text}`: {why} (expected error, warn, info, debug, trace, or a filter such as `info,guirpc_core::server=debug`)"
            ),
        )
    };
    if let Some(word) = text.split(',').map(str::trim).find(|d| {
        !d.is_empty() && !d.contains('=') && Level::from_str(d, true).is_err() && *d != "off"
    }) {
        return Err(invalid(format!("`{word}` is not a level")));
    }
    let filter = EnvFilter::builder()
        .parse(text)
        .map_err(|err| invalid(err.to_string()))?;
    let quiet_calls = one_shot
        && filter.max_level_hint() == Some(tracing_subscriber::filter::LevelFilter::INFO)
        && !text.contains("guirpc_core::trace");
    // guirpc reports unroutable calls itself (a no-route error); lapin's warning would
    // dump the whole returned message besides.
    let mut filter = filter.add_directive(directive("lapin::returned_messages=error"));
    if quiet_calls {
        filter = filter.add_directive(directive("guirpc_core::trace=warn"));
    }
    Ok(filter)
}

fn directive(text: &str) -> tracing_subscriber::filter::Directive {
    text.parse().expect("a valid directive")
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn levels_and_filters_are_read_and_mistakes_named() {
        for good in [
            "info",
            "debug",
            "warn,guirpc_core::server=debug",
            "guirpc_core=trace",
        ] {
            assert!(filter(good, false).is_ok(), "{good}");
        }
        let err = filter("loud", false).err().unwrap();
        assert!(err.message.contains("`loud`"), "{}", err.message);
    }

    /// Whether a call's span (info, `guirpc_core::trace`) is made under `filter`.
    fn call_span_made(text: &str, one_shot: bool) -> bool {
        use tracing_subscriber::prelude::*;
        let subscriber = tracing_subscriber::registry().with(filter(text, one_shot).unwrap());
        tracing::subscriber::with_default(subscriber, || {
            !tracing::info_span!(target: "guirpc_core::trace", "guirpc.call").is_disabled()
        })
    }

    #[test]
    fn one_shot_commands_at_info_make_no_call_spans_unless_asked() {
        assert!(call_span_made("info", false), "serve keeps its spans");
        assert!(!call_span_made("info", true));
        assert!(call_span_made("debug", true), "a closer look keeps them");
        assert!(call_span_made("info,guirpc_core::trace=info", true));
        assert!(!call_span_made("warn", false));
    }
}
