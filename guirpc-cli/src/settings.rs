//! Flags shared by every command that talks to a broker, and how they become [`Settings`].

use std::path::PathBuf;

use clap::Args;
use guirpc_core::config::LoadOptions;
use guirpc_core::{Client, ClientBuilder, Codec, Settings};

use crate::exit::{Exit, Failure};
use crate::logging::LogArgs;

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
    /// Broker URI [env: GUIRPC_URI, AMQP_URI] [default: amqp://guest:guest@127.0.0.1:5672/%2f]
    #[arg(long, value_name = "URI")]
    pub uri: Option<String>,
    /// Exchange requests are published to [env: GUIRPC_EXCHANGE] [default: "", the default exchange]
    #[arg(long, value_name = "NAME")]
    pub exchange: Option<String>,
    /// Service queue [env: GUIRPC_QUEUE] [default: guirpc]
    #[arg(long, short = 'q', value_name = "NAME")]
    pub queue: Option<String>,
}

/// Flags of commands that call a service.
#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// How long to wait for the reply, e.g. 500ms, 10s [env: GUIRPC_TIMEOUT] [default: 30s]
    #[arg(long, short = 't', value_name = "DURATION")]
    pub timeout: Option<String>,
    /// How to encode arguments: msgpack or json [env: GUIRPC_CODEC] [default: msgpack]
    #[arg(long, value_name = "CODEC")]
    pub codec: Option<Codec>,
}

impl BrokerArgs {
    /// Loads the settings: defaults, file, environment, then these flags and `more`.
    pub fn load(
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
    pub fn load(
        &self,
        log: &LogArgs,
        defaults: &[(&'static str, String)],
    ) -> Result<Settings, Failure> {
        let mut more = Vec::new();
        if let Some(timeout) = &self.timeout {
            more.push(("client.timeout", timeout.clone()));
        }
        if let Some(codec) = self.codec {
            more.push(("client.codec", codec.to_string()));
        }
        self.broker.load(log, more, defaults)
    }

    /// Loads the settings and connects a client with them.
    pub async fn connect(
        &self,
        log: &LogArgs,
        defaults: &[(&'static str, String)],
    ) -> Result<Client, Failure> {
        let settings = self.load(log, defaults)?;
        crate::logging::init(&settings)?;
        Ok(ClientBuilder::from_settings(&settings).connect().await?)
    }
}
