//! The `guirpc` command line.
//!
//! A service is a binary whose `main` hands over to [`main`] (or [`Main`]), so that the
//! functions it marks `#[rpc]` are linked into the program that serves them:
//!
//! ```no_run
//! use guirpc_core::rpc;
//!
//! #[rpc]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     guirpc_cli::main()
//! }
//! ```
//!
//! `cargo run -- serve` then serves `add`; the standalone `guirpc serve`, run in the
//! crate's directory, does the same through `cargo run`. Every other command (`call`,
//! `list`, `ping`, `config`, `new`, `completions`) works the same from either.

#![warn(missing_docs)]

mod asyncapi;
mod call;
mod cast;
mod config;
mod dead;
mod events;
mod exit;
mod flag;
mod list;
mod logging;
mod new;
mod output;
mod ping;
mod serve;
mod settings;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

pub use exit::Exit;

/// guirpc: serve and call Rust functions over RabbitMQ.
///
/// Exit codes: 0 ok, 1 the remote function failed or refused the call, 2 usage or
/// configuration error, 3 broker unreachable, 4 timeout, 5 no such service queue.
#[derive(Debug, Parser)]
#[command(name = "guirpc", version, about, long_about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    New(new::Args),
    Config(config::Args),
    #[command(alias = "runconsumer")]
    Serve(serve::Args),
    #[command(alias = "publishone")]
    Call(call::Args),
    Cast(cast::Args),
    Dead(dead::Args),
    Publish(events::PublishArgs),
    Subscribe(events::SubscribeArgs),
    List(list::Args),
    Ping(ping::Args),
    Asyncapi(asyncapi::Args),
    /// Print a shell completion script: guirpc completions bash > /etc/bash_completion.d/guirpc
    Completions {
        /// bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },
}

/// Why the command line could not be read.
enum Parse {
    Clap(clap::Error),
    Settings(exit::Failure),
}

/// Runs the command line with this process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    Main::new().run()
}

/// The command line, with a program's own defaults.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     guirpc_cli::Main::new().default_queue("calculator").run()
/// }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Main {
    defaults: Vec<(&'static str, String)>,
}

impl Main {
    /// The command line with the built-in defaults.
    pub fn new() -> Self {
        Main::default()
    }

    /// The service queue when neither file, environment nor flag names one.
    pub fn default_queue(mut self, queue: impl Into<String>) -> Self {
        self.defaults.push(("service.queue", queue.into()));
        self
    }

    /// The command line, its help showing this program's defaults.
    fn command(&self) -> Result<clap::Command, exit::Failure> {
        let settings = guirpc_core::Settings::with_defaults(&self.defaults)
            .map_err(|err| exit::Failure::new(Exit::Usage, err.to_string()))?;
        Ok(settings::document_defaults(Cli::command(), &settings))
    }

    /// Runs with this process's arguments and returns the exit code.
    pub fn run(self) -> ExitCode {
        self.run_with(std::env::args_os())
    }

    /// Runs with the given arguments (the first is the program name).
    pub fn run_with<I, T>(self, args: I) -> ExitCode
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let parsed = self.command().map_err(Parse::Settings).and_then(|command| {
            command
                .try_get_matches_from(args)
                .and_then(|matches| Cli::from_arg_matches(&matches))
                .map_err(Parse::Clap)
        });
        let cli = match parsed {
            Ok(cli) => cli,
            Err(Parse::Settings(failure)) => return failure.report(),
            Err(Parse::Clap(err)) => {
                let _ = err.print();
                return if err.use_stderr() {
                    Exit::Usage.into()
                } else {
                    ExitCode::SUCCESS
                };
            }
        };
        let defaults = &self.defaults;
        let outcome = match cli.command {
            Command::New(args) => new::run(args),
            Command::Config(args) => config::run(args, &cli.log, defaults),
            Command::Completions { shell } => self.command().map(|mut command| {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command, "guirpc", &mut script);
                output::write_bytes(&script);
            }),
            command => match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                // On a worker thread, not this one: what the command spawns (each line's
                // call or cast of `--stdin`) then runs beside it, without a wake-up of
                // another thread for every message.
                Ok(runtime) => runtime.block_on(async {
                    let (log, defaults) = (cli.log, defaults.clone());
                    tokio::spawn(async move { run_async(command, &log, &defaults).await })
                        .await
                        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
                }),
                Err(err) => Err(exit::Failure::new(
                    Exit::Usage,
                    format!("cannot start the async runtime: {err}"),
                )),
            },
        };
        match outcome {
            Ok(()) => ExitCode::SUCCESS,
            Err(failure) => failure.report(),
        }
    }
}

/// Runs a command that needs the async runtime.
async fn run_async(
    command: Command,
    log: &logging::LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), exit::Failure> {
    match command {
        Command::Serve(args) => serve::run(args, log, defaults).await,
        Command::Call(args) => call::run(args, log, defaults).await,
        Command::Cast(args) => cast::run(args, log, defaults).await,
        Command::Dead(args) => dead::run(args, log, defaults).await,
        Command::Publish(args) => events::publish(args, log, defaults).await,
        Command::Subscribe(args) => events::subscribe(args, log, defaults).await,
        Command::List(args) => list::run(args, log, defaults).await,
        Command::Ping(args) => ping::run(args, log, defaults).await,
        Command::Asyncapi(args) => asyncapi::run(args, log, defaults).await,
        Command::New(_) | Command::Config(_) | Command::Completions { .. } => {
            unreachable!("run without the async runtime")
        }
    }
}
