//! `guirpc publish` and `guirpc subscribe`: events from and to a shell.

use clap::Args as ClapArgs;
use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::cast::send;
use crate::exit::{Exit, Failure};
use crate::logging::LogArgs;
use crate::settings::ClientArgs;

/// Publish an event on a topic: done once the broker has taken it.
///
/// The event is any JSON value, sent in MessagePack unless --codec json, to the topic
/// exchange `events.exchange` (guirpc.events). An event no one subscribes to is dropped by
/// the broker: that is not an error. With --stdin, publishes one JSON value per line; a line
/// that cannot be published is named on standard error, and the exit code is 1.
///
/// Examples:
///   guirpc publish orders.created '{"id": 7, "total": 12.5}'
///   tail -f orders.jsonl | guirpc publish orders.created --stdin
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct PublishArgs {
    /// The topic: words separated by dots, `orders.created`
    topic: String,
    /// The event as JSON
    #[arg(conflicts_with = "stdin", required_unless_present = "stdin")]
    event: Option<String>,
    /// Publish one JSON value per line of standard input
    #[arg(long)]
    stdin: bool,
    /// With --stdin: how many events may wait for the broker's confirmation at once
    #[arg(long, value_name = "N", default_value_t = 64, requires = "stdin")]
    inflight: usize,
    #[command(flatten)]
    client: ClientArgs,
}

/// Print every event whose topic matches PATTERN as one JSON line, until Ctrl-C.
///
/// Each line is {"topic": "...", "event": ...}. `*` matches one word of a topic, `#` any
/// number. Only events published while it runs are seen (its queue is its own, and goes
/// away with it).
///
/// Example:
///   guirpc subscribe 'orders.*' | while read -r line; do echo "got $line"; done
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct SubscribeArgs {
    /// The topic pattern: `orders.*`, `orders.#`, `#`
    pattern: String,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_event(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|err| format!("invalid JSON event: {err}"))
}

pub(crate) async fn publish(
    args: PublishArgs,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let single = match (&args.event, args.stdin) {
        (Some(text), false) => Some(parse_event(text).map_err(|m| Failure::new(Exit::Usage, m))?),
        _ => None,
    };
    if args.inflight == 0 {
        return Err(Failure::new(Exit::Usage, "--inflight must be at least 1"));
    }
    let client = args.client.connect(log, defaults).await?;
    let topic = args.topic;
    send(single, "events", args.inflight, parse_event, move |event| {
        let (client, topic) = (client.clone(), topic.clone());
        async move { client.publish(&topic, event).await }
    })
    .await
}

pub(crate) async fn subscribe(
    args: SubscribeArgs,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let client = args.client.connect(log, defaults).await?;
    let mut subscription = client.subscribe(&args.pattern).await?;
    let mut out = BufWriter::new(tokio::io::stdout());
    let write_error = |err: std::io::Error| -> Failure { crate::output::closed_or_failed(&err) };
    // Ready: a script may publish once this line is on stderr.
    eprintln!("subscribed to `{}`", args.pattern);
    while let Some(event) = subscription.next().await {
        let event = event?;
        let line = match event.decode::<crate::output::Json>() {
            Ok(crate::output::Json(value)) => json!({"topic": event.topic(), "event": value}),
            Err(err) => {
                eprintln!("an event on `{}` does not decode: {err}", event.topic());
                continue;
            }
        };
        out.write_all(line.to_string().as_bytes())
            .await
            .map_err(write_error)?;
        out.write_all(b"\n").await.map_err(write_error)?;
        out.flush().await.map_err(write_error)?;
    }
    Ok(())
}
