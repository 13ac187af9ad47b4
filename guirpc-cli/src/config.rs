//! `guirpc config`: write a configuration file, or show the effective settings.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use guirpc_core::Settings;
use guirpc_core::config::{DEFAULT_CONFIG_FILE, format_duration};

use crate::exit::{Exit, Failure};
use crate::list::print_table;
use crate::logging::LogArgs;
use crate::output::outln;
use crate::settings::ClientArgs;

/// Write a commented guirpc.toml, or show the effective settings and where each came from.
///
/// Examples:
///   guirpc config init
///   GUIRPC_QUEUE=calculator guirpc config show --timeout 5s
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a commented guirpc.toml with every setting at its default (never overwrites).
    ///
    /// Example: guirpc config init && $EDITOR guirpc.toml
    #[command(alias = "createconfig")]
    Init {
        /// Where to write it
        #[arg(default_value = DEFAULT_CONFIG_FILE)]
        path: PathBuf,
    },
    /// Print the effective settings and where each came from (file, env, flag, default),
    /// then the file's [[pipe]] tables.
    ///
    /// Example: GUIRPC_QUEUE=calculator guirpc config show --timeout 5s
    Show {
        /// Print as JSON
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub(crate) fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    match args.command {
        Command::Init { path } => init(path, defaults),
        Command::Show { json, client } => {
            let settings = client.load(log, defaults)?;
            // Where `Settings::load` found the file, which is where its [[pipe]] tables came
            // from.
            let file =
                client.broker.config.clone().or_else(|| {
                    Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|path| path.exists())
                });
            show(&settings, file, json)
        }
    }
}

fn init(path: PathBuf, defaults: &[(&'static str, String)]) -> Result<(), Failure> {
    let settings = Settings::with_defaults(defaults)
        .map_err(|err| Failure::new(Exit::Usage, err.to_string()))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|err| {
            let failure = Failure::new(
                Exit::Usage,
                format!("cannot create {}: {err}", path.display()),
            );
            if err.kind() == std::io::ErrorKind::AlreadyExists {
                failure.hint("it is left as it is; remove it first, or give another path")
            } else {
                failure
            }
        })?;
    file.write_all(settings.to_toml().as_bytes())
        .map_err(|err| {
            Failure::new(
                Exit::Usage,
                format!("cannot write {}: {err}", path.display()),
            )
        })?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn show(settings: &Settings, file: Option<PathBuf>, json: bool) -> Result<(), Failure> {
    let mut rows: Vec<[String; 3]> = settings
        .entries()
        .map(|(key, value, source)| [key.path(), value, source.to_string()])
        .collect();
    // A [[pipe]] table's fields, under its function's name: `pipe[text.wc].workers`.
    let source = file.map_or_else(String::new, |file| format!("file {}", file.display()));
    for pipe in &settings.pipes {
        let dir = pipe
            .dir
            .as_ref()
            .map_or_else(|| ".".to_owned(), |dir| dir.display().to_string());
        for (field, value) in [
            ("command", shell_words(&pipe.command)),
            ("workers", pipe.workers.to_string()),
            ("timeout", format_duration(pipe.timeout)),
            ("dir", dir),
        ] {
            rows.push([
                format!("pipe[{}].{field}", pipe.name),
                value,
                source.clone(),
            ]);
        }
    }
    if json {
        let entries: Vec<serde_json::Value> = rows
            .into_iter()
            .map(|[key, value, source]| serde_json::json!({"key": key, "value": value, "source": source}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("settings always print")
        );
    } else {
        print_table(["SETTING", "VALUE", "SOURCE"], &rows);
    }
    Ok(())
}

/// A command's words as `--pipe` and `command = "..."` read them back: quoted where a
/// word holds what a shell would split or interpret.
fn shell_words(words: &[String]) -> String {
    let plain = |word: &str| {
        !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    };
    words
        .iter()
        .map(|word| {
            if plain(word) {
                word.clone()
            } else {
                format!("'{}'", word.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
