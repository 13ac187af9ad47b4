//! Log output: level (or a full `tracing` filter) and format from flags, the environment
//! or the config file.

use std::io::IsTerminal;

use clap::{Args, ValueEnum};
use guirpc_core::config::{LogFormat, Settings};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use crate::exit::{Exit, Failure};
use crate::settings::value_name;

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
    pub fn flags(&self) -> Vec<(&'static str, String)> {
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

/// Installs the log subscriber; logs go to standard error, in colour only on a terminal
/// and unless `NO_COLOR` is set.
pub(crate) fn init(settings: &Settings) -> Result<(), Failure> {
    let filter = filter(&settings.log_level)?;
    let color = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(color);
    // An error means a subscriber is installed already (a second run in one process).
    let _ = match settings.log_format {
        LogFormat::Text => tracing_subscriber::registry()
            .with(layer.with_filter(filter))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().with_filter(filter))
            .try_init(),
    };
    Ok(())
}

/// A level (`info`) or `tracing`'s filter syntax (`info,guirpc_core::server=debug`).
/// A bare word must be a level: `tracing` would read `loud` as "everything from target
/// `loud`", hiding a typo; a target takes its level after `=`.
fn filter(text: &str) -> Result<EnvFilter, Failure> {
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
    // guirpc reports unroutable calls itself (a no-route error); lapin's warning would
    // dump the whole returned message besides.
    Ok(filter.add_directive(
        "lapin::returned_messages=error"
            .parse()
            .expect("a valid directive"),
    ))
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
            assert!(filter(good).is_ok(), "{good}");
        }
        let err = filter("loud").err().unwrap();
        assert!(err.message.contains("`loud`"), "{}", err.message);
    }
}
