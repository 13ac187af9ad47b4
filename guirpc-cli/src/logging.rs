//! Log output: level and format from flags, the environment or the config file.

use std::io::IsTerminal;

use clap::Args;
use guirpc_core::config::{LogFormat, Settings};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::exit::{Exit, Failure};

#[derive(Debug, Args)]
pub(crate) struct LogArgs {
    /// Log level: error, warn, info, debug or trace [env: GUIRPC_LOG]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json [env: GUIRPC_LOG_FORMAT]
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<String>,
}

impl LogArgs {
    pub fn flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = Vec::new();
        if let Some(level) = &self.log_level {
            flags.push(("log.level", level.clone()));
        }
        if let Some(format) = &self.log_format {
            flags.push(("log.format", format.clone()));
        }
        flags
    }
}

/// Installs the log subscriber; logs go to standard error.
pub(crate) fn init(settings: &Settings) -> Result<(), Failure> {
    let level: LevelFilter = settings.log_level.parse().map_err(|_| {
        Failure::new(
            Exit::Usage,
            format!(
                "unknown log level `{}` (expected error, warn, info, debug or trace)",
                settings.log_level
            ),
        )
    })?;
    // guirpc reports unroutable calls itself (a no-route error); lapin's warning would
    // dump the whole returned message besides.
    let filter = Targets::new()
        .with_default(level)
        .with_target("lapin::returned_messages", LevelFilter::ERROR);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
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
