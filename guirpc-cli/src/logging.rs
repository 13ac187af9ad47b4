//! Log output: level and format from flags, the environment or the config file.

use std::io::IsTerminal;

use clap::Args;
use guirpc_core::config::{LogFormat, Settings};
use tracing::level_filters::LevelFilter;

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
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match settings.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    // Already installed (a second run in one process): keep the first.
    let _ = installed;
    Ok(())
}
