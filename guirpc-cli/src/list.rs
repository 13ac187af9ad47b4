//! `guirpc list`: what a running service serves.

use clap::Args as ClapArgs;

use crate::exit::Failure;
use crate::logging::LogArgs;
use crate::output::outln;
use crate::settings::ClientArgs;

/// List the functions a running service serves: name, parameters, return type, description.
///
/// --schema prints each one's JSON Schemas (2020-12) instead; --json the whole description.
///
/// Example: guirpc list --queue calculator --schema
#[derive(Debug, ClapArgs)]
pub(crate) struct Args {
    /// Print the full description as JSON
    #[arg(long, conflicts_with = "schema")]
    json: bool,
    /// Print each function's JSON Schemas: its arguments, result, items and error
    #[arg(long)]
    schema: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(
    args: Args,
    log: &LogArgs,
    defaults: &[(&'static str, String)],
) -> Result<(), Failure> {
    let client = args.client.connect(log, defaults).await?;
    let description = client.describe().await?;
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&description).expect("a description always prints")
        );
        return Ok(());
    }
    if args.schema {
        print_schemas(&description);
        return Ok(());
    }
    let rows: Vec<[String; 5]> = description
        .functions
        .iter()
        .map(|f| {
            let summary = f.summary();
            [
                f.name.clone(),
                f.parameters(),
                f.returns.clone(),
                f.retry
                    .as_ref()
                    .map_or_else(String::new, ToString::to_string),
                summary.to_owned(),
            ]
        })
        .collect();
    print_table(
        [
            "NAME",
            "PARAMETERS",
            "RETURNS",
            "CASTS RETRIED",
            "DESCRIPTION",
        ],
        &rows,
    );
    Ok(())
}

/// Each function's signature, then its schemas, indented; each subscription's event.
fn print_schemas(description: &guirpc_core::protocol::Description) {
    let indented = |label: &str, schema: &serde_json::Value| {
        let text = serde_json::to_string_pretty(schema).expect("a schema always prints");
        outln!("  {label}:");
        for line in text.lines() {
            outln!("    {line}");
        }
    };
    for f in &description.functions {
        outln!("{}", f.signature());
        match &f.schema {
            Some(schema) => {
                indented("params", &schema.params);
                for (label, schema) in [
                    ("returns", &schema.returns),
                    ("item", &schema.item),
                    ("error (detail of handler_error)", &schema.error),
                ] {
                    if let Some(schema) = schema {
                        indented(label, schema);
                    }
                }
            }
            None => outln!(
                "  (no schemas: the server runs guirpc {}, which describes none)",
                description.version
            ),
        }
    }
    for s in &description.subscriptions {
        outln!("on events `{}`: {}", s.pattern, s.name);
        if let Some(schema) = &s.schema {
            indented("event", &schema.event);
        }
    }
}

/// Prints rows under a header, in columns as wide as their widest cell.
pub(crate) fn print_table<const N: usize>(header: [&str; N], rows: &[[String; N]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == N {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:width$}  ", width = widths[i]));
            }
        }
        outln!("{}", text.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
