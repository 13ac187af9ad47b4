//! `guirpc asyncapi`: a service's AsyncAPI 3.0 document.

use std::path::PathBuf;

use clap::Args as ClapArgs;
use guirpc_core::schema::asyncapi::{self, Broker};
use guirpc_core::{Registry, Server, Subscriber};

use crate::exit::{Exit, Failure};
use crate::logging::LogArgs;
use crate::output::outln;
use crate::settings::ClientArgs;

/// Write a service's AsyncAPI 3.0 document (JSON): its request queue, each function as a
/// request/reply operation and a cast, streams, event subscriptions, the AMQP properties
/// and headers as bindings, and the JSON Schemas of the functions' types.
///
/// In a service's own binary (cargo run -- asyncapi) the document is made from the
/// functions it links and its settings, with no broker; the guirpc command, which links
/// none, asks the running service (as --remote does in a service's binary).
///
/// Examples:
///   cargo run -- asyncapi > asyncapi.json
///   guirpc asyncapi -q calculator --output calculator.asyncapi.json
#[derive(Debug, ClapArgs)]
#[command(verbatim_doc_comment)]
pub(crate) struct Args {
    /// Write the document to this file instead of standard output
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Ask the running service, also in a binary that links functions
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let settings = args.client.load(log, defaults)?;
    let registry = Registry::collect().map_err(|err| Failure::new(Exit::Usage, err.to_string()))?;
    let links_functions = !registry.is_empty() || !Subscriber::all().is_empty();
    let local = links_functions && !args.remote;
    let description = if local {
        settings
            .pipes
            .iter()
            .cloned()
            .fold(
                Server::builder()
                    .settings(settings.service())
                    .registry(registry),
                |builder, pipe| builder.pipe(pipe),
            )
            .description()
            .map_err(|err| Failure::new(Exit::Usage, err.to_string()))?
    } else {
        args.client.connect(log, defaults).await?.describe().await?
    };
    let broker = Broker::from_uri(&settings.uri);
    let document = asyncapi::document(&description, broker.as_ref());
    let text = serde_json::to_string_pretty(&document).expect("a document always prints");
    match &args.output {
        Some(path) => std::fs::write(path, text + "\n").map_err(|err| {
            Failure::new(
                Exit::Usage,
                format!("cannot write {}: {err}", path.display()),
            )
        }),
        None => {
            outln!("{text}");
            Ok(())
        }
    }
}
