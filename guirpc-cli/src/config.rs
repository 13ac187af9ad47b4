//! `guirpc config`: write a configuration file, or show the effective settings.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args as ClapArgs, Subcommand};
use guirpc_core::Settings;
use guirpc_core::config::DEFAULT_CONFIG_FILE;

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
    /// Print the effective settings and where each came from (file, env, flag, default).
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
        Command::Show { json, client } => show(&client.load(log, defaults)?, json),
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

fn show(settings: &Settings, json: bool) -> Result<(), Failure> {
    if json {
        let entries: Vec<serde_json::Value> = settings
            .entries()
            .map(|(key, value, source)| serde_json::json!({"key": key.path(), "value": value, "source": source.to_string()}))
            .collect();
        outln!(
            "{}",
            serde_json::to_string_pretty(&entries).expect("settings always print")
        );
    } else {
        let rows: Vec<[String; 3]> = settings
            .entries()
            .map(|(key, value, source)| [key.path(), value, source.to_string()])
            .collect();
        print_table(["SETTING", "VALUE", "SOURCE"], &rows);
    }
    Ok(())
}
