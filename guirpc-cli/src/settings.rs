//! Flags shared by every command that talks to a broker, and how they become [`Settings`].

use std::path::PathBuf;

use clap::Args;
use guirpc_core::Settings;
use guirpc_core::config::LoadOptions;

use crate::exit::{Exit, Failure};
use crate::logging::LogArgs;

#[derive(Debug, Args)]
pub(crate) struct BrokerArgs {
    /// Configuration file [env: GUIRPC_CONFIG] [default: ./guirpc.toml if present]
    #[arg(long, short = 'c', value_name = "FILE", env = "GUIRPC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Broker URI [env: GUIRPC_URI, AMQP_URI] [default: amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(long, value_name = "URI")]
    pub uri: Option<String>,
    /// Exchange requests are published to [env: GUIRPC_EXCHANGE] [default: guirpc]
    #[arg(long, value_name = "NAME")]
    pub exchange: Option<String>,
    /// Service queue [env: GUIRPC_QUEUE] [default: guirpc]
    #[arg(long, short = 'q', value_name = "NAME")]
    pub queue: Option<String>,
}

impl BrokerArgs {
    /// Loads the settings: defaults, file, environment, then these flags and `more`.
    pub fn load(
        &self,
        log: &LogArgs,
        more: Vec<(&'static str, String)>,
        defaults: Vec<(&'static str, String)>,
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
        Settings::load(LoadOptions {
            file: self.config.clone(),
            flags,
            defaults,
        })
        .map_err(|err| {
            Failure::new(Exit::Usage, err.to_string()).hint(
                "see `guirpc config show` for the effective settings and where each comes from",
            )
        })
    }
}
