//! `guirpc new`: scaffold a service crate that builds and serves at once.

use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;

use crate::exit::{Exit, Failure};
use crate::output::outln;

/// Create a ready-to-build service crate: an #[rpc] function, guirpc.toml, a client example
/// and a README. Refuses to touch an existing directory; never deletes anything.
///
/// Example: guirpc new greeter && cd greeter && cargo run -- serve
#[derive(Debug, ClapArgs)]
#[command(alias = "initconsumer")]
pub(crate) struct Args {
    /// The crate's name, also its directory and its service queue
    name: String,
    /// Depend on the guirpc crates in this checkout instead of crates.io
    /// [default: this guirpc's own source tree, when it exists]
    #[arg(long, value_name = "DIR")]
    guirpc_path: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> Result<(), Failure> {
    let name = args.name.trim_end_matches('/');
    check_name(name)?;
    let dir = Path::new(name);
    if dir.exists() {
        return Err(
            Failure::new(Exit::Usage, format!("`{name}` already exists"))
                .hint("it is left untouched: choose another name, or move it away first"),
        );
    }
    let source = args.guirpc_path.or_else(|| {
        let own = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()?
            .to_path_buf();
        own.join("guirpc-core/Cargo.toml").exists().then_some(own)
    });
    let dependency = |krate: &str| match &source {
        Some(root) => format!(
            "{krate} = {{ path = {:?} }}",
            root.join(krate).display().to_string()
        ),
        None => format!("{krate} = \"{}\"", env!("CARGO_PKG_VERSION")),
    };
    let lib = name.replace('-', "_");
    let files = [
        ("Cargo.toml", cargo_toml(name, &dependency)),
        ("guirpc.toml", format!("[service]\nqueue = \"{name}\"\n")),
        ("src/lib.rs", LIB_RS.to_owned()),
        ("src/main.rs", MAIN_RS.replace("{lib}", &lib)),
        ("examples/client.rs", CLIENT_RS.replace("{lib}", &lib)),
        ("README.md", README_MD.replace("{name}", name)),
        (".gitignore", "/target\n".to_owned()),
    ];
    // create_dir (not _all) fails if the directory appeared meanwhile: still nothing overwritten.
    std::fs::create_dir(dir)
        .map_err(|err| Failure::new(Exit::Usage, format!("cannot create `{name}`: {err}")))?;
    for (path, text) in files {
        let path = dir.join(path);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, text));
        if let Err(err) = written {
            return Err(Failure::new(
                Exit::Usage,
                format!("cannot write {}: {err}", path.display()),
            )
            .hint(format!("what was written so far is left in `{name}`")));
        }
    }
    outln!("created service crate `{name}`");
    outln!("  cd {name} && cargo run -- serve                  # serve it");
    outln!(
        "  cd {name} && cargo run --example client          # call it (with the service running)"
    );
    Ok(())
}

fn check_name(name: &str) -> Result<(), Failure> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        Ok(())
    } else {
        Err(
            Failure::new(Exit::Usage, format!("`{name}` is not a valid crate name"))
                .hint("use letters, digits, `-` and `_`, starting with a letter"),
        )
    }
}

fn cargo_toml(name: &str, dependency: &dyn Fn(&str) -> String) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[dependencies]
{core}
{cli}
serde = {{ version = "1", features = ["derive"] }}
schemars = "1"
tokio = {{ version = "1", features = ["macros", "rt-multi-thread"] }}

# A workspace of its own, wherever it is created.
[workspace]
"#,
        core = dependency("guirpc-core"),
        cli = dependency("guirpc-cli"),
    )
}

const LIB_RS: &str = r#"//! The service's functions. Every `#[rpc]` function here is served by `cargo run -- serve`
//! and callable through its stubs: `greet::call(&client, name)`.

use guirpc_core::rpc;

/// The queue this service is served on unless configured otherwise.
pub const QUEUE: &str = env!("CARGO_PKG_NAME");

/// Greets someone. The doc comment is what `guirpc list` shows.
///
/// Types of your own derive `serde::{Serialize, Deserialize}` to travel, and
/// `schemars::JsonSchema` to have a schema in `guirpc list --schema` and `cargo run --
/// asyncapi`.
#[rpc]
pub async fn greet(name: String) -> String {
    format!("Hello, {name}!")
}
"#;

const MAIN_RS: &str = r#"//! Serves every `#[rpc]` function of the library: `cargo run -- serve`.

fn main() -> std::process::ExitCode {
    guirpc_cli::Main::new().default_queue({lib}::QUEUE).run()
}
"#;

const CLIENT_RS: &str = r#"//! Calls the service: `cargo run --example client` while `cargo run -- serve` runs.

use guirpc_core::config::LoadOptions;
use guirpc_core::{ClientBuilder, Settings};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load(LoadOptions {
        defaults: vec![("service.queue", {lib}::QUEUE.into())],
        ..Default::default()
    })?;
    let client = ClientBuilder::from_settings(&settings).connect().await?;
    println!("{}", {lib}::greet::call(&client, "world".into()).await?);
    Ok(())
}
"#;

const README_MD: &str = r#"# {name}

A guirpc service. Its functions are in `src/lib.rs`; mark more with `#[rpc]`.

- `cargo run -- serve` serves them (settings in `guirpc.toml`, `GUIRPC_*` variables, flags);
- `cargo run --example client` calls `greet` from Rust;
- `guirpc call greet '{"name": "you"}' --queue {name}` calls it from a shell;
- `cargo run -- asyncapi > asyncapi.json` writes its AsyncAPI document, with the JSON
  Schemas of its functions' types.
"#;
