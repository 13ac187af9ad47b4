//! `guirpc ping`: a round trip to a running service, usable as a health check.

use std::time::{Duration, Instant};

use clap::Args as ClapArgs;
use serde_json::json;

use crate::exit::Failure;
use crate::logging::LogArgs;
use crate::output::outln;
use crate::settings::ClientArgs;

/// Round-trip to one server of a running service: instance, version, uptime, calls in flight,
/// latency. Exits 0 only when a server answered: usable as a health check.
///
/// Example: guirpc ping --queue calculator --timeout 2s
#[derive(Debug, ClapArgs)]
pub(crate) struct Args {
    /// Print the answer as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let client = args.client.connect(log, defaults).await?;
    let started = Instant::now();
    let pong = client.ping().await?;
    let latency = started.elapsed();
    if args.json {
        let mut value = serde_json::to_value(&pong).expect("a pong always converts");
        value["latency_ms"] = json!(latency.as_secs_f64() * 1000.0);
        outln!("{value}");
    } else {
        outln!(
            "pong from {} (guirpc {}) on queue `{}`: up {}, {} of {} calls in flight, {} functions, {:.2} ms",
            pong.instance,
            pong.version,
            pong.queue,
            human(Duration::from_millis(pong.uptime_ms)),
            pong.in_flight,
            pong.concurrency,
            pong.functions,
            latency.as_secs_f64() * 1000.0
        );
    }
    Ok(())
}

fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        3600..86400 => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{}h", secs / 86400, secs % 86400 / 3600),
    }
}
