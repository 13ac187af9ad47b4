//! Flags shared by every command that talks to a broker, and how they become [`Settings`].
//! [`FLAGS`] maps each flag to its setting: the one table that loads a flag's value and
//! writes the environment variables and default into its help.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use guirpc_core::config::{KEYS, LoadOptions, format_duration, parse_duration};
use guirpc_core::{Client, ClientBuilder, Settings};

use crate::exit::{Exit, Failure};
use crate::flag::value_name;
use crate::logging::LogArgs;

/// Every flag that sets a setting: `(flag id, setting)`.
pub(crate) const FLAGS: &[(&str, &str)] = &[
    ("uri", "broker.uri"),
    ("exchange", "broker.exchange"),
    ("queue", "service.queue"),
    ("prefetch", "service.prefetch"),
    ("concurrency", "service.concurrency"),
    ("delivery", "service.delivery"),
    ("metrics_addr", "service.metrics_addr"),
    ("otlp_endpoint", "service.otlp_endpoint"),
    ("timeout", "client.timeout"),
    ("codec", "client.codec"),
    ("log_level", "log.level"),
    ("log_format", "log.format"),
];

/// Adds `[env: ...] [default: ...]` to the help of every flag in [`FLAGS`], with the
/// defaults in force for this program (a service's own default queue, say).
pub(crate) fn document_defaults(command: clap::Command, settings: &Settings) -> clap::Command {
    let command = FLAGS.iter().fold(command, |command, &(id, path)| {
        if command.get_arguments().all(|arg| arg.get_id() != id) {
            return command;
        }
        let Some((key, value, _)) = settings.entries().find(|(key, _, _)| key.path() == path)
        else {
            return command;
        };
        let shown = if value.is_empty() {
            "\"\"".to_owned()
        } else {
            value
        };
        command.mut_arg(id, |arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            arg.help(format!(
                "{help} [env: {}] [default: {shown}]",
                key.env.join(", ")
            ))
        })
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    names.into_iter().fold(command, |command, name| {
        command.mut_subcommand(name, |sub| document_defaults(sub, settings))
    })
}

#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Configuration file [env: GUIRPC_CONFIG] [default: ./guirpc.toml if present]
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "GUIRPC_CONFIG",
        hide_env = true
    )]
    pub config: Option<PathBuf>,
    /// Broker URI
    #[arg(long, value_name = "URI")]
    pub uri: Option<String>,
    /// Exchange requests are published to ("" is the default exchange)
    #[arg(long, value_name = "NAME")]
    pub exchange: Option<String>,
    /// Service queue
    #[arg(long, short = 'q', value_name = "NAME")]
    pub queue: Option<String>,
}

/// How arguments are encoded.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum CodecArg {
    /// MessagePack
    Msgpack,
    /// JSON
    Json,
}

/// Flags of commands that call a service.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// How long to wait for the reply, e.g. 500ms, 10s
    #[arg(long, short = 't', value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// How to encode arguments
    #[arg(long, value_name = "CODEC")]
    pub codec: Option<CodecArg>,
    /// What calls are written in: guirpc, or guirpc-0.1 / guirpc-0.1-text to call a consumer of the Python package guirpc 0.1 (its JsonSerializer / TextSerializer)
    #[arg(long, value_name = "PROTOCOL")]
    pub protocol: Option<String>,
}

impl BrokerArgs {
    /// Loads the settings: defaults, file, environment, then these flags and `more`.
    pub(crate) fn load(
        &self,
        log: &LogArgs,
        more: Vec<(&'static str, String)>,
        defaults: &[(&'static str, String)],
    ) -> Result<Settings, Failure> {
        let mut flags = log.flags();
        let named = [
            ("broker.uri", &self.uri),
            ("broker.exchange", &self.exchange),
            ("service.queue", &self.queue),
        ];
        flags.extend(
            named
                .into_iter()
                .filter_map(|(key, value)| value.clone().map(|v| (key, v))),
        );
        flags.extend(more);
        debug_assert!(
            flags
                .iter()
                .all(|(path, _)| KEYS.iter().any(|k| k.path() == *path))
        );
        Settings::load(LoadOptions {
            file: self.config.clone(),
            flags,
            defaults: defaults.to_vec(),
        })
        .map_err(|err| {
            Failure::new(Exit::Usage, err.to_string()).hint(
                "`guirpc config show` prints the effective settings and where each comes from",
            )
        })
    }
}

impl ClientArgs {
    pub(crate) fn load(
        &self,
        log: &LogArgs,
        defaults: &[(&'static str, String)],
    ) -> Result<Settings, Failure> {
        let mut more = Vec::new();
        if let Some(timeout) = self.timeout {
            more.push(("client.timeout", format_duration(timeout)));
        }
        if let Some(codec) = self.codec {
            more.push(("client.codec", value_name(codec)));
        }
        if let Some(protocol) = &self.protocol {
            more.push(("client.protocol", protocol.clone()));
        }
        self.broker.load(log, more, defaults)
    }

    /// Loads the settings and connects a client with them.
    pub(crate) async fn connect(
        &self,
        log: &LogArgs,
        defaults: &[(&'static str, String)],
    ) -> Result<Client, Failure> {
        let settings = self.load(log, defaults)?;
        let _ = crate::logging::init(&settings, false)?;
        Ok(ClientBuilder::from_settings(&settings).connect().await?)
    }
}
