//! `guirpc dead`: a service's dead letters, for a person: list, show, send back, drop.

use clap::{Args as ClapArgs, Subcommand};
use guirpc_core::config::format_utc;
use guirpc_core::dead::{DeadLetter, DeadLetters};

use crate::exit::{Exit, Failure};
use crate::list::print_table;
use crate::logging::LogArgs;
use crate::output::outln;
use crate::settings::BrokerArgs;

/// See, send back or drop the dead letters of a service: the casts and events that failed
/// their last attempt (or could not run), kept in `<queue>.dead` with why.
///
/// Examples:
///   guirpc dead list -q orders
///   guirpc dead show 3f2a9c0d1e4b5a6f -q orders
///   guirpc dead retry --function charge -q orders     (after fixing `charge`)
///   guirpc dead purge --all -q orders
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the dead letters, oldest first: id, function, why, when, attempts
    List {
        /// Print one JSON object per line
        #[arg(long)]
        json: bool,
        /// At most this many
        #[arg(long, value_name = "N", default_value_t = 1000)]
        limit: usize,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// Show one dead letter: its headers and its arguments as JSON
    Show {
        /// Its id, as `guirpc dead list` prints it
        id: String,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// Send dead letters back to the queue they came from, for another round of attempts
    Retry {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        queue: QueueArgs,
    },
    /// Drop dead letters for good
    Purge {
        #[command(flatten)]
        select: Select,
        #[command(flatten)]
        queue: QueueArgs,
    },
}

#[derive(Debug, ClapArgs)]
struct QueueArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The dead-letter queue, when not `<queue>.dead`
    #[arg(long, value_name = "NAME")]
    dead_queue: Option<String>,
}

/// Which dead letters: by id, by function, or all.
#[derive(Debug, ClapArgs)]
struct Select {
    /// The ids of those to take, as `guirpc dead list` prints them
    ids: Vec<String>,
    /// Those of this function (or subscriber)
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// All of them
    #[arg(long, conflicts_with_all = ["ids", "function"])]
    all: bool,
}

impl Select {
    fn check(&self, verb: &str) -> Result<(), Failure> {
        if self.ids.is_empty() && self.function.is_none() && !self.all {
            return Err(Failure::new(
                Exit::Usage,
                format!("say which dead letters to {verb}: their ids, --function NAME, or --all"),
            ));
        }
        Ok(())
    }

    fn picks(&self, letter: &DeadLetter) -> bool {
        self.all
            || self.ids.contains(&letter.id)
            || self.function.as_deref() == Some(letter.function.as_str())
    }
}

pub(crate) async fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let queue_args = match &args.action {
        Action::List { queue, .. }
        | Action::Show { queue, .. }
        | Action::Retry { queue, .. }
        | Action::Purge { queue, .. } => queue,
    };
    let settings = queue_args.broker.load(log, Vec::new(), defaults)?;
    let _ = crate::logging::init(&settings, false)?;
    let letters = DeadLetters::open(
        &settings.broker(),
        &settings.queue,
        queue_args.dead_queue.as_deref(),
    )
    .await?;
    match args.action {
        Action::List { json, limit, .. } => {
            let list = letters.list(limit).await?;
            if json {
                for letter in &list {
                    outln!("{}", summary(letter));
                }
                return Ok(());
            }
            if list.is_empty() {
                outln!("no dead letters in `{}`", letters.queue());
                return Ok(());
            }
            let rows: Vec<[String; 6]> = list
                .iter()
                .map(|letter| {
                    [
                        letter.id.clone(),
                        letter.function.clone(),
                        letter.code.clone(),
                        letter.last_failure.map_or_else(String::new, format_utc),
                        letter.attempts.to_string(),
                        letter.message.clone(),
                    ]
                })
                .collect();
            print_table(
                [
                    "ID",
                    "FUNCTION",
                    "CODE",
                    "LAST FAILURE (UTC)",
                    "ATTEMPTS",
                    "MESSAGE",
                ],
                &rows,
            );
            Ok(())
        }
        Action::Show { id, .. } => {
            let list = letters.list(usize::MAX).await?;
            let Some(letter) = list.iter().find(|letter| letter.id == id) else {
                return Err(Failure::new(
                    Exit::Usage,
                    format!("no dead letter `{id}` in `{}`", letters.queue()),
                )
                .hint("`guirpc dead list` prints their ids"));
            };
            let mut shown = summary(letter);
            shown["arguments"] = match letter.arguments() {
                Ok(arguments) => arguments,
                Err(err) => serde_json::json!({ "undecodable": err.to_string() }),
            };
            outln!(
                "{}",
                serde_json::to_string_pretty(&shown).expect("JSON always prints")
            );
            Ok(())
        }
        Action::Retry { select, .. } => {
            select.check("send back")?;
            let sent = letters.retry(|letter| select.picks(letter)).await?;
            for letter in &sent {
                outln!(
                    "sent {} ({}) back to `{}`",
                    letter.id,
                    letter.function,
                    letter.queue
                );
            }
            outln!("{} dead letter(s) sent back", sent.len());
            Ok(())
        }
        Action::Purge { select, .. } => {
            select.check("drop")?;
            let dropped = letters.purge(|letter| select.picks(letter)).await?;
            outln!(
                "{} dead letter(s) dropped from `{}`",
                dropped.len(),
                letters.queue()
            );
            Ok(())
        }
    }
}

/// A dead letter as JSON, its arguments left out.
fn summary(letter: &DeadLetter) -> serde_json::Value {
    let time = |secs: Option<u64>| secs.map(format_utc);
    serde_json::json!({
        "id": letter.id,
        "queue": letter.queue,
        "function": letter.function,
        "topic": letter.topic,
        "code": letter.code,
        "message": letter.message,
        "attempts": letter.attempts,
        "first_failure": time(letter.first_failure),
        "last_failure": time(letter.last_failure),
        "instance": letter.instance,
    })
}
