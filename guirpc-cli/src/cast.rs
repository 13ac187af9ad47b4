//! `guirpc cast`: one-way calls from a shell, once or once per line of input: a work queue
//! fed from a pipe (`producer | guirpc cast work --stdin`), across machines.

use clap::Args as ClapArgs;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use crate::call::parse_args;
use crate::exit::{Exit, Failure};
use crate::logging::LogArgs;
use crate::settings::ClientArgs;

/// Cast a function by name: a one-way call, done once the broker has taken the request.
///
/// Nothing is printed on success: the function runs on a server, whenever one takes the
/// request from the queue (it waits there, across a broker restart too, for as long as it
/// takes). A cast no queue is bound for fails at once (exit 5); a broker that refuses it,
/// with exit 3.
///
/// With --delay or --at, the function runs no sooner than asked: the request waits in the
/// broker (its delay ladder) until then, at most about 49.7 days, and reaches the service
/// within a few milliseconds per power of two in the delay after (under 0.2 s in all).
///
/// With --stdin, casts one JSON argument value per line; a line that cannot be cast is
/// reported on standard error with its number, the others are cast, and the exit code is 1
/// if any failed. Every line reported nowhere was taken by the broker.
///
/// Examples:
///   guirpc cast resize '{"image": "a.png", "width": 640}' --queue images
///   find . -name '*.png' | jq -Rc '{image: ., width: 640}' | guirpc cast resize --stdin
///   guirpc cast remind '{"user": 7}' --delay 10m
///   guirpc cast report '[]' --at 2026-12-24T08:00:00Z
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The function's name
    function: String,
    /// Arguments as JSON: '{"a": 1}' by name or '[1, 2]' in order [default: {}]
    #[arg(conflicts_with = "stdin")]
    args: Option<String>,
    /// Cast one JSON argument value per line of standard input
    #[arg(long)]
    stdin: bool,
    /// With --stdin: how many casts may wait for the broker's confirmation at once
    #[arg(long, value_name = "N", default_value_t = 64, requires = "stdin")]
    inflight: usize,
    /// Run no sooner than this long from now: 30s, 10m, 2h
    #[arg(long, value_name = "DURATION", value_parser = guirpc_core::config::parse_duration, conflicts_with = "at")]
    delay: Option<std::time::Duration>,
    /// Run no sooner than this UTC time: 2026-12-24T08:00:00Z or "2026-12-24 08:00"
    #[arg(long, value_name = "TIME", value_parser = guirpc_core::config::parse_utc)]
    at: Option<u64>,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let single = match (args.stdin, args.args.as_deref()) {
        (true, _) => None,
        (false, text) => Some(parse_args(text.unwrap_or("{}")).map_err(|message| {
            Failure::new(Exit::Usage, message)
                .hint(r#"arguments are JSON: '{"a": 1, "b": 2}' by name or '[1, 2]' in order"#)
        })?),
    };
    if args.inflight == 0 {
        return Err(Failure::new(Exit::Usage, "--inflight must be at least 1"));
    }
    // One time for every line: they were asked for together.
    let not_before = match (args.delay, args.at) {
        (Some(delay), _) => Some(std::time::SystemTime::now() + delay),
        (None, Some(at)) => Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(at)),
        (None, None) => None,
    };
    let client = args.client.connect(log, defaults).await?;
    let function = args.function;
    send(
        single,
        "casts",
        args.inflight,
        parse_args,
        move |cast_args| {
            let (client, function) = (client.clone(), function.clone());
            async move {
                match not_before {
                    Some(at) => client.cast_at(at, &function, cast_args).await,
                    None => client.cast(&function, cast_args).await,
                }
            }
        },
    )
    .await
}

/// Sends `single`, or, without it, one message per line of standard input.
pub(crate) async fn send<F, Fut>(
    single: Option<Value>,
    what: &str,
    inflight: usize,
    parse: fn(&str) -> Result<Value, String>,
    send_one: F,
) -> Result<(), Failure>
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<(), guirpc_core::Error>> + Send + 'static,
{
    match single {
        Some(value) => Ok(send_one(value).await?),
        None => send_lines(what, inflight, parse, send_one).await,
    }
}

/// Sends one message per line of standard input with `send`, at most `inflight` awaiting
/// the broker's confirmation; names on stderr the lines that could not be read or sent.
async fn send_lines<F, Fut>(
    what: &str,
    inflight: usize,
    parse: fn(&str) -> Result<Value, String>,
    send: F,
) -> Result<(), Failure>
where
    F: Fn(Value) -> Fut,
    Fut: Future<Output = Result<(), guirpc_core::Error>> + Send + 'static,
{
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut running: JoinSet<(usize, Result<(), String>)> = JoinSet::new();
    let (mut line_number, mut failed) = (0usize, 0usize);
    let mut report = |done: Result<(usize, Result<(), String>), tokio::task::JoinError>| {
        let (number, outcome) = done.unwrap_or_else(|err| (0, Err(err.to_string())));
        if let Err(message) = outcome {
            failed += 1;
            eprintln!("line {number}: {message}");
        }
    };
    loop {
        while running.len() >= inflight {
            if let Some(done) = running.join_next().await {
                report(done);
            }
        }
        let text = match lines.next_line().await {
            Ok(Some(text)) => text,
            Ok(None) => break,
            Err(err) => {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("cannot read standard input: {err}"),
                ));
            }
        };
        line_number += 1;
        let number = line_number;
        match parse(&text) {
            Ok(value) => {
                let sending = send(value);
                running
                    .spawn(async move { (number, sending.await.map_err(|err| err.to_string())) });
            }
            Err(message) => report(Ok((number, Err(message)))),
        }
    }
    while let Some(done) = running.join_next().await {
        report(done);
    }
    if failed > 0 {
        eprintln!("{failed} of {line_number} {what} failed");
        return Err(Failure::silent(Exit::Remote));
    }
    Ok(())
}
