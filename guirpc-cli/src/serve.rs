//! `guirpc serve`: serve every `#[rpc]` function of this program until Ctrl-C.

use std::path::Path;
use std::process::Command;

use clap::{Args as ClapArgs, ValueEnum};
use guirpc_core::pipe::PipeFunction;
use guirpc_core::protocol::ExchangeName;
use guirpc_core::{Registry, ServeError, Server};

use crate::exit::{Exit, Failure};
use crate::flag::value_name;
use crate::logging::{self, LogArgs};
use crate::output::outln;
use crate::settings::BrokerArgs;

/// Serve every #[rpc] function of this program on the service queue, until Ctrl-C or SIGTERM.
///
/// Run from a service crate's directory, the standalone `guirpc` runs the crate's own binary
/// (`cargo run -- serve ...`), which links its functions.
///
/// --pipe serves a program in any language as a function: it reads one JSON line per call
/// on its standard input and writes one JSON line per answer (docs/PIPES.md). The standalone
/// `guirpc` serves pipe functions with no Rust crate at all.
///
/// Examples:
///   guirpc serve --queue calculator --concurrency 32
///   guirpc serve --queue text --pipe 'text.wc=python3 wc.py' --pipe-workers 4
#[derive(Debug, ClapArgs)]
pub(crate) struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Unacknowledged requests the broker sends ahead
    #[arg(long, value_name = "N")]
    prefetch: Option<u16>,
    /// Calls run at once
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// When a request is acknowledged
    #[arg(long, value_name = "MODE")]
    delivery: Option<DeliveryArg>,
    /// Serve /metrics (Prometheus), /healthz, /readyz and a status page at / on this address
    #[arg(long, value_name = "HOST:PORT")]
    metrics_addr: Option<String>,
    /// Send spans to this OTLP/HTTP collector (builds with the `otel` feature)
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Serve a function through worker processes running COMMAND (repeatable)
    #[arg(long, value_name = "NAME=COMMAND")]
    pipe: Vec<String>,
    /// Worker processes per --pipe function
    #[arg(long, value_name = "N", default_value_t = 1, requires = "pipe")]
    pipe_workers: usize,
    /// How long a --pipe worker may take for one call before it is replaced
    #[arg(long, value_name = "DURATION", requires = "pipe", value_parser = guirpc_core::config::parse_duration)]
    pipe_timeout: Option<std::time::Duration>,
}

/// When a request is acknowledged.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DeliveryArg {
    /// After its reply is published: a request in flight when a server dies runs again
    AtLeastOnce,
    /// On receipt: a request in flight when a server dies is lost
    AtMostOnce,
}

pub(crate) async fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let mut more = Vec::new();
    if let Some(prefetch) = args.prefetch {
        more.push(("service.prefetch", prefetch.to_string()));
    }
    if let Some(concurrency) = args.concurrency {
        more.push(("service.concurrency", concurrency.to_string()));
    }
    if let Some(delivery) = args.delivery {
        more.push(("service.delivery", value_name(delivery)));
    }
    if let Some(addr) = args.metrics_addr {
        more.push(("service.metrics_addr", addr));
    }
    if let Some(endpoint) = args.otlp_endpoint {
        more.push(("service.otlp_endpoint", endpoint));
    }
    let settings = args.broker.load(log, more, defaults)?;
    let _telemetry = logging::init(&settings, true)?;
    let registry = Registry::collect().map_err(|err| Failure::new(Exit::Usage, err.to_string()))?;
    let mut pipes = settings.pipes.clone();
    for spec in &args.pipe {
        let mut pipe = PipeFunction::parse(spec)
            .map_err(|err| Failure::new(Exit::Usage, format!("--pipe {err}")))?
            .workers(args.pipe_workers);
        if let Some(timeout) = args.pipe_timeout {
            pipe = pipe.timeout(timeout);
        }
        pipe.check()
            .map_err(|err| Failure::new(Exit::Usage, format!("--pipe: {err}")))?;
        // A flag stands in for the file's function of that name.
        pipes.retain(|p| p.name != pipe.name);
        pipes.push(pipe);
    }
    if registry.is_empty() && pipes.is_empty() && guirpc_core::Subscriber::all().is_empty() {
        return delegate_to_crate();
    }

    outln!(
        "guirpc {} serving queue `{}` ({}) at {}",
        env!("CARGO_PKG_VERSION"),
        settings.queue,
        ExchangeName(&settings.exchange),
        settings.masked_uri()
    );
    let width = registry
        .iter()
        .map(|f| f.signature().len())
        .max()
        .unwrap_or(0);
    for function in registry.iter() {
        outln!("  {:width$}  {}", function.signature(), function.summary());
    }
    for pipe in &pipes {
        outln!(
            "  {}  (pipe: {}, {} worker(s))  {}",
            pipe.name,
            pipe.command.join(" "),
            pipe.workers,
            pipe.description
        );
    }
    for subscriber in guirpc_core::Subscriber::all() {
        let mode = if subscriber.is_broadcast() {
            "every instance"
        } else {
            "once per service"
        };
        outln!(
            "  on events `{}` ({mode}): {}  {}",
            subscriber.pattern(),
            subscriber.name(),
            subscriber.summary()
        );
    }
    outln!(
        "delivery {}, prefetch {}, concurrency {}; Ctrl-C to stop",
        settings
            .entries()
            .find(|(k, _, _)| k.name == "delivery")
            .map(|(_, v, _)| v)
            .unwrap_or_default(),
        settings.prefetch,
        settings.concurrency
    );

    let server = pipes
        .into_iter()
        .fold(
            Server::builder()
                .settings(settings.service())
                .registry(registry),
            |builder, pipe| builder.pipe(pipe),
        )
        .start()
        .await
        .map_err(|err| match err {
            ServeError::Config(_) | ServeError::Duplicate(_) => {
                Failure::new(Exit::Usage, err.to_string())
            }
            other => Failure::new(Exit::Connection, other.to_string()),
        })?;
    server.run_until_signal().await.map_err(|err| match err {
        ServeError::Interrupted { .. } => Failure::new(Exit::Interrupted, err.to_string()),
        other => Failure::new(Exit::Connection, other.to_string())
            .hint("the server stopped serving; `guirpc config show` prints the settings it used"),
    })
}

/// The standalone `guirpc` links no functions: serve the crate in this directory instead.
fn delegate_to_crate() -> Result<(), Failure> {
    const DELEGATED: &str = "GUIRPC_DELEGATED";
    if !Path::new("Cargo.toml").exists() || std::env::var_os(DELEGATED).is_some() {
        return Err(Failure::new(Exit::Usage, "no #[rpc] functions are linked into this program").hint(
            "run `guirpc serve` in your service crate's directory, or call `guirpc_cli::main()` from your service's main and run `cargo run -- serve`",
        ));
    }
    // Everything after the program name: `serve`, its flags and the global ones.
    let forwarded: Vec<String> = std::env::args().skip(1).collect();
    eprintln!(
        "no #[rpc] functions are linked into `guirpc` itself; running this crate: cargo run -- {}",
        forwarded.join(" ")
    );
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command
        .args(["run", "--quiet", "--"])
        .args(&forwarded)
        .env(DELEGATED, "1");
    #[cfg(unix)]
    {
        // Become `cargo run` (which execs the service in turn): the service keeps this
        // process's PID, so Ctrl-C and SIGTERM reach it, and nothing is left orphaned.
        use std::os::unix::process::CommandExt;
        let err = command.exec();
        Err(Failure::new(
            Exit::Usage,
            format!("cannot run `cargo run`: {err}"),
        ))
    }
    #[cfg(not(unix))]
    {
        let status = command
            .status()
            .map_err(|err| Failure::new(Exit::Usage, format!("cannot run `cargo run`: {err}")))?;
        match status.code() {
            Some(0) => Ok(()),
            Some(code) => std::process::exit(code),
            None => Err(Failure::new(
                Exit::Usage,
                "the service was killed by a signal",
            )),
        }
    }
}
