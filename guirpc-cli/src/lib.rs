//! The `guirpc` command line.
//!
//! A service is a binary whose `main` hands over to [`main`], so that the functions it
//! marks `#[rpc]` are linked into the program that serves them:
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
//! crate's directory, does the same through `cargo run`.

#![warn(missing_docs)]

mod exit;
mod logging;
mod serve;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use exit::Exit;

/// guirpc: serve and call Rust functions over RabbitMQ.
#[derive(Debug, Parser)]
#[command(name = "guirpc", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: logging::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    Serve(serve::Args),
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
        run(args, self.defaults)
    }
}

fn run<I, T>(args: I, defaults: Vec<(&'static str, String)>) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                Exit::Usage.into()
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            return exit::report(
                Exit::Usage,
                &format!("cannot start the async runtime: {err}"),
                None,
            );
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(args, &cli.log, defaults).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(),
    }
}
