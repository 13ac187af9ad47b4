//! `guirpc call`: call a function by name from a shell, once, or once per line of input.

use std::collections::{HashMap, VecDeque};

use clap::Args as ClapArgs;
use futures_lite::StreamExt;
use guirpc_core::{Client, Error};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::task::JoinSet;

use crate::exit::{Exit, Failure};
use crate::logging::LogArgs;
use crate::output::{Json, outln};
use crate::settings::ClientArgs;

/// Call a function by name with JSON arguments and print its result as JSON.
///
/// Arguments are a JSON object by parameter name or an array in order; none means `{}`.
/// They travel in MessagePack unless --codec json.
///
/// Exit codes: 0 ok, 1 the function failed or refused the call, 2 usage or configuration,
/// 3 broker unreachable, 4 timeout, 5 no such service queue.
///
/// A function that streams its result prints one JSON line per item as the items come,
/// until its end (an error ends it early, printed as below); the call's --timeout bounds
/// the whole stream.
///
/// With --stdin, reads one JSON argument value per line and writes one line per input line,
/// in input order: the result, or {"error": {"code", "message", "detail"}}; exit code 1 if
/// any line failed. (Streaming functions are called one at a time, without --stdin.)
///
/// With --check, the arguments are first checked against the schema the running service
/// describes (guirpc list --schema shows it): a field that does not fit is named, and
/// nothing is sent.
///
/// Examples:
///   guirpc call add '{"a": 1, "b": 2}'
///   guirpc call add '[1, 2]' --queue calculator --timeout 2s
///   guirpc call stats.summary '{"numbers": [1, "2"]}' --check
///   cat requests.jsonl | guirpc call add --stdin --inflight 64 > results.jsonl
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// The function's name
    function: String,
    /// Arguments as JSON: '{"a": 1}' by name or '[1, 2]' in order [default: {}]
    #[arg(conflicts_with = "stdin")]
    args: Option<String>,
    /// Read one JSON argument value per line from standard input
    #[arg(long)]
    stdin: bool,
    /// With --stdin: how many calls to keep in flight at once (results that come before an
    /// earlier line's wait for it, up to 8 × N lines, without holding their places)
    #[arg(long, value_name = "N", default_value_t = 32, requires = "stdin")]
    inflight: usize,
    /// Print the result indented
    #[arg(long)]
    pretty: bool,
    /// Check the arguments against the service's schema of the function before sending
    #[arg(long, conflicts_with = "stdin")]
    check: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    // Arguments are checked before connecting: a typo costs no round trip. A guirpc 0.1
    // consumer takes any one value (a text, for its TextSerializer).
    let legacy = args
        .client
        .protocol
        .as_deref()
        .is_some_and(|p| p.starts_with("guirpc-0.1"));
    let single = if args.stdin {
        None
    } else if legacy {
        let text = args.args.as_deref().unwrap_or("{}");
        Some(
            serde_json::from_str(text).map_err(|err| {
                Failure::new(Exit::Usage, format!("invalid JSON arguments: {err}"))
            })?,
        )
    } else {
        Some(
            parse_args(args.args.as_deref().unwrap_or("{}")).map_err(|message| {
                Failure::new(Exit::Usage, message)
                    .hint(r#"arguments are JSON: '{"a": 1, "b": 2}' by name or '[1, 2]' in order"#)
            })?,
        )
    };
    if args.inflight == 0 {
        return Err(Failure::new(Exit::Usage, "--inflight must be at least 1"));
    }
    let client = args.client.connect(log, defaults).await?;
    if let (true, Some(call_args)) = (args.check, &single) {
        check(&client, &args.function, call_args).await?;
    }
    match single {
        Some(call_args) => call_once(&client, &args.function, call_args, args.pretty, legacy).await,
        None => call_lines(client, args.function, args.inflight).await,
    }
}

/// Checks arguments against the schema a running service describes for the function.
async fn check(client: &Client, function: &str, args: &Value) -> Result<(), Failure> {
    let description = client.describe().await?;
    let Some(described) = description.functions.iter().find(|f| f.name == function) else {
        let names: Vec<&str> = description
            .functions
            .iter()
            .map(|f| f.name.as_str())
            .collect();
        return Err(Failure::new(
            Exit::Remote,
            format!("`{}` serves no function `{function}`", description.queue),
        )
        .hint(format!("it serves: {}", names.join(", "))));
    };
    let Some(schema) = &described.schema else {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "`{}` runs guirpc {}, whose description has no schemas: call without --check",
                description.queue, description.version
            ),
        ));
    };
    // Arguments in order are checked as the server reads them: by parameter name.
    let named = match args {
        Value::Array(items) if items.len() == described.params.len() => Value::Object(
            described
                .params
                .iter()
                .map(|p| p.name.clone())
                .zip(items.iter().cloned())
                .collect(),
        ),
        Value::Array(items) => {
            return Err(Failure::new(
                Exit::Usage,
                format!(
                    "`{function}` takes {} arguments ({}); {} given in order",
                    described.params.len(),
                    described.parameters(),
                    items.len()
                ),
            ));
        }
        other => other.clone(),
    };
    guirpc_core::schema::check(&schema.params, &named).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("  {p}")).collect();
        Failure::new(
            Exit::Usage,
            format!(
                "the arguments do not fit `{function}`'s schema; nothing was sent:\n{}",
                lines.join("\n")
            ),
        )
        .hint(format!(
            "`guirpc list --schema` shows what `{function}` takes"
        ))
    })
}

/// Reads the arguments: an object or an array.
pub(crate) fn parse_args(text: &str) -> Result<Value, String> {
    match serde_json::from_str::<Value>(text) {
        Ok(value @ (Value::Object(_) | Value::Array(_))) => Ok(value),
        Ok(other) => Err(format!(
            "arguments must be a JSON object or array, not {}: wrap a single argument as '[{other}]'",
            kind(&other)
        )),
        Err(err) => Err(format!("invalid JSON arguments: {err}")),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One call; a function that streams its result prints one line per item, as the items
/// come (a function that does not, its one result).
async fn call_once(
    client: &Client,
    function: &str,
    args: Value,
    pretty: bool,
    legacy: bool,
) -> Result<(), Failure> {
    // A guirpc 0.1 consumer streams nothing: one plain call.
    let mut items = if legacy {
        let once = client.call::<Json>(function, args).await;
        Box::pin(futures_lite::stream::once(once))
            as std::pin::Pin<Box<dyn futures_lite::Stream<Item = _> + Send>>
    } else {
        Box::pin(client.stream::<Json>(function, args))
    };
    while let Some(item) = items.next().await {
        match item {
            Ok(Json(result)) => {
                let text = if pretty {
                    serde_json::to_string_pretty(&result)
                } else {
                    serde_json::to_string(&result)
                };
                outln!("{}", text.expect("a JSON value always prints"));
            }
            Err(err) => {
                // The envelope goes to standard output for scripts; the sentence to
                // standard error.
                if let Error::Remote(_) = &err {
                    outln!("{}", error_line(&err));
                }
                return Err(err.into());
            }
        }
    }
    Ok(())
}

/// How many lines, per call in flight, may have their results wait for an earlier line's.
const WAITING_PER_CALL: usize = 8;

/// One result line per input line, in order, with at most `inflight` calls running. A
/// call that ends before an earlier line's waits for it, without holding its place among
/// the running: a slow line does not narrow the window (up to [`WAITING_PER_CALL`] times
/// `inflight` lines waiting at once; then reading pauses until the slow one ends).
async fn call_lines(client: Client, function: String, inflight: usize) -> Result<(), Failure> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut out = BufWriter::new(tokio::io::stdout());
    // Line `written + i`'s result, once it has one.
    let mut waiting: VecDeque<Option<(bool, String)>> = VecDeque::new();
    let waiting_limit = inflight.saturating_mul(WAITING_PER_CALL);
    let mut running: JoinSet<(bool, String)> = JoinSet::new();
    // Each running call's line, by its task.
    let mut line_of: HashMap<tokio::task::Id, usize> = HashMap::with_capacity(inflight);
    let (mut read, mut written, mut failed, mut eof) = (0usize, 0usize, 0usize, false);
    // A reader that went away ends the run quietly; nothing more can be delivered.
    let write_error = |err: std::io::Error| -> Failure { crate::output::closed_or_failed(&err) };
    let progress = progress_bar();
    loop {
        while let Some((ok, line)) = waiting.front_mut().and_then(Option::take) {
            waiting.pop_front();
            written += 1;
            failed += usize::from(!ok);
            progress.inc(1);
            if !ok {
                progress.set_message(format!("{failed} failed"));
            }
            out.write_all(line.as_bytes()).await.map_err(write_error)?;
            out.write_all(b"\n").await.map_err(write_error)?;
        }
        if waiting.is_empty() {
            // Nothing pending: whoever reads the output gets it now.
            out.flush().await.map_err(write_error)?;
            if eof {
                break;
            }
        }
        let can_read = !eof && running.len() < inflight && waiting.len() < waiting_limit;
        tokio::select! {
            Some(done) = running.join_next_with_id() => {
                let (id, outcome) = match done {
                    Ok((id, outcome)) => (id, outcome),
                    Err(err) => {
                        let line = json!({"error": {"code": "internal", "message": err.to_string()}});
                        (err.id(), (false, line.to_string()))
                    }
                };
                let line = line_of.remove(&id).expect("every running call's line is known");
                waiting[line - written] = Some(outcome);
            }
            text = lines.next_line(), if can_read => match text {
                Ok(Some(text)) => {
                    read += 1;
                    match parse_args(&text) {
                        Ok(args) => {
                            let (client, function) = (client.clone(), function.clone());
                            let task = running.spawn(async move {
                                match client.call::<Json>(&function, args).await {
                                    Ok(Json(result)) => (true, result.to_string()),
                                    Err(err) => (false, error_line(&err)),
                                }
                            });
                            line_of.insert(task.id(), read - 1);
                            waiting.push_back(None);
                        }
                        Err(message) => {
                            let line = json!({"error": {"code": "invalid_json", "message": format!("line {read}: {message}")}});
                            waiting.push_back(Some((false, line.to_string())));
                        }
                    }
                }
                Ok(None) => eof = true,
                Err(err) => {
                    return Err(Failure::new(
                        Exit::Usage,
                        format!("cannot read standard input: {err}"),
                    ));
                }
            },
            else => unreachable!("with nothing running, every result is written and a line can be read"),
        }
    }
    progress.finish_and_clear();
    if failed > 0 {
        eprintln!("{failed} of {read} calls failed");
        return Err(Failure::silent(Exit::Remote));
    }
    Ok(())
}

/// Lines done, their rate and failures, on standard error while it is a terminal (and
/// not at all otherwise: a log file or a pipe gets no progress lines).
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {human_pos} lines done, {per_sec}, {msg}")
            .expect("a valid template"),
    );
    bar.set_message("0 failed");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// A failed call as one JSON line: `{"error": {"code", "message", "detail"}}`.
fn error_line(err: &Error) -> String {
    let (code, detail) = match err {
        Error::Remote(remote) => (
            remote.code().as_str().to_owned(),
            remote
                .detail::<Json>()
                .and_then(Result::ok)
                .map_or(Value::Null, |Json(detail)| detail),
        ),
        Error::Timeout { .. } => ("timeout".to_owned(), Value::Null),
        Error::NoRoute { .. } => ("no_route".to_owned(), Value::Null),
        Error::Connection { .. } => ("connection".to_owned(), Value::Null),
        Error::Decode { .. } => ("decode".to_owned(), Value::Null),
        Error::Encode { .. } => ("encode".to_owned(), Value::Null),
        _ => ("error".to_owned(), Value::Null),
    };
    let message = match err {
        Error::Remote(remote) => remote.message().to_owned(),
        other => other.to_string(),
    };
    json!({"error": {"code": code, "message": message, "detail": detail}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_an_object_or_an_array() {
        assert_eq!(parse_args(r#"{"a": 1}"#), Ok(json!({"a": 1})));
        assert_eq!(parse_args("[1, 2]"), Ok(json!([1, 2])));
        let err = parse_args("5").unwrap_err();
        assert!(err.contains("'[5]'"), "{err}");
        let err = parse_args(r#"{"a": }"#).unwrap_err();
        assert!(err.contains("line 1 column 7"), "{err}");
    }
}
