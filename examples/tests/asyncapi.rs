//! The AsyncAPI documents of the example services, from their binaries (no broker) and
//! from a running service, validated by the AsyncAPI project's own parser
//! (`@asyncapi/parser`, installed here with the machine's Node.js and npm).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The parser's version: pinned, so that a new release cannot change what passes.
const PARSER: &str = "@asyncapi/parser@3.6.6";

/// Parses each document named on the command line; prints every diagnostic, exits 1 if
/// any is an error (severity 0).
const CHECK_JS: &str = r#"const { Parser } = require('@asyncapi/parser');
const fs = require('fs');
const names = ['error', 'warning', 'info', 'hint'];
(async () => {
  const parser = new Parser();
  let failed = false;
  for (const file of process.argv.slice(2)) {
    const { document, diagnostics } = await parser.parse(fs.readFileSync(file, 'utf8'), { source: file });
    for (const d of diagnostics) {
      console.log(`${file}: [${names[d.severity]}] ${d.code} at /${d.path.join('/')}: ${d.message}`);
    }
    if (!document || diagnostics.some(d => d.severity === 0)) failed = true;
  }
  process.exitCode = failed ? 1 : 0;
})();
"#;

fn broker() -> String {
    std::env::var("GUIRPC_TEST_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The parser, installed once into the test's target directory; `None` (with a note)
/// on a machine without Node.js and npm, outside CI.
fn parser() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("asyncapi-parser");
    let npm = Command::new("npm").arg("--version").output();
    if !npm.is_ok_and(|out| out.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have Node.js and npm for the AsyncAPI parser"
        );
        eprintln!("skipped: no npm on this machine (the AsyncAPI parser needs Node.js and npm)");
        return None;
    }
    if !dir.join("node_modules/@asyncapi/parser").is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .arg(PARSER)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "npm install {PARSER}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::write(dir.join("check.js"), CHECK_JS).unwrap();
    Some(dir)
}

/// Runs the parser on documents: whether it accepts them all, and what it said.
fn validate(parser: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("node")
        .arg(parser.join("check.js"))
        .args(files)
        .current_dir(parser)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

/// `<binary> asyncapi ...`: the document, parsed.
fn document(binary: &str, args: &[&str]) -> Value {
    let out = Command::new(binary)
        .arg("asyncapi")
        .args(args)
        .env("GUIRPC_URI", broker())
        .env_remove("GUIRPC_QUEUE")
        .env_remove("GUIRPC_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{binary} asyncapi: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON document")
}

fn written(name: &str, document: &Value) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("asyncapi");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(document).unwrap()).unwrap();
    path
}

#[test]
fn the_examples_documents_are_valid_asyncapi_and_say_what_the_code_says() {
    let calculator = document(env!("CARGO_BIN_EXE_calculator"), &[]);
    assert_eq!(calculator["asyncapi"], "3.0.0");
    assert_eq!(calculator["channels"]["requests"]["address"], "calculator");
    let host = guirpc_core::schema::asyncapi::Broker::from_uri(&broker())
        .expect("the test broker's URI")
        .host;
    assert_eq!(calculator["servers"]["broker"]["host"], host.as_str());
    assert!(
        !calculator.to_string().contains("guest:guest"),
        "no credentials"
    );
    let messages = &calculator["components"]["messages"];
    let add = &messages["add.request"];
    assert_eq!(add["payload"]["properties"]["a"]["type"], "integer");
    assert_eq!(add["payload"]["required"], serde_json::json!(["a", "b"]));
    assert_eq!(add["bindings"]["amqp"]["messageType"], "add");
    let summary = &messages["stats.summary.reply"]["payload"];
    assert_eq!(summary["$ref"], "#/components/schemas/Stats");
    let stats = &calculator["components"]["schemas"]["Stats"];
    assert_eq!(
        stats["properties"]["mean"]["type"],
        serde_json::json!(["number", "null"])
    );
    let divide = &calculator["operations"]["divide"];
    assert_eq!(divide["action"], "receive");
    assert_eq!(
        divide["reply"]["address"]["location"],
        "$message.header#/reply_to"
    );
    assert!(calculator["operations"]["divide.cast"].is_object());
    // `divide`'s typed error: the detail of its own error reply.
    let error = &messages["divide.error"]["payload"];
    assert_eq!(
        error["properties"]["detail"]["anyOf"][0]["$ref"],
        "#/components/schemas/DivideError"
    );
    assert!(
        calculator["components"]["schemas"]["DivideError"]["oneOf"].is_array(),
        "{:#}",
        calculator["components"]["schemas"]
    );
    let replies = &divide["reply"]["messages"];
    assert_eq!(
        replies[1]["$ref"],
        "#/channels/replies/messages/divide.error"
    );

    let shipping = document(env!("CARGO_BIN_EXE_shipping"), &[]);
    let events = &shipping["channels"]["events.ship"];
    assert_eq!(events["address"], "orders.created");
    assert_eq!(
        events["bindings"]["amqp"]["exchange"]["name"],
        "guirpc.events"
    );
    assert_eq!(events["bindings"]["amqp"]["exchange"]["type"], "topic");
    let event = &shipping["components"]["messages"]["ship.event"]["payload"];
    assert_eq!(event["$ref"], "#/components/schemas/OrderCreated");
    assert_eq!(
        shipping["components"]["schemas"]["OrderCreated"]["properties"]["quantity"]["format"],
        "uint32"
    );
    let reports = document(env!("CARGO_BIN_EXE_reports"), &[]);
    let orders = document(env!("CARGO_BIN_EXE_orders"), &[]);

    // From a running service, the same document but its broker.
    let queue = format!("guirpc-test.asyncapi.{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_calculator"))
        .args(["serve", "--queue", &queue])
        .env("GUIRPC_URI", broker())
        .env_remove("GUIRPC_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let live = loop {
        let out = Command::new(env!("CARGO_BIN_EXE_calculator"))
            .args(["asyncapi", "--remote", "--queue", &queue, "--timeout", "2s"])
            .env("GUIRPC_URI", broker())
            .env_remove("GUIRPC_CONFIG")
            .output()
            .unwrap();
        if out.status.success() {
            break serde_json::from_slice::<Value>(&out.stdout).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = child.kill();
    let _ = child.wait();
    let mut local = document(env!("CARGO_BIN_EXE_calculator"), &["--queue", &queue]);
    local["servers"] = live["servers"].clone();
    assert_eq!(
        live, local,
        "the running service's document is the binary's"
    );

    let Some(parser) = parser() else {
        return;
    };
    let (valid, said) = validate(
        &parser,
        &[
            written("calculator", &calculator),
            written("shipping", &shipping),
            written("reports", &reports),
            written("orders", &orders),
            written("calculator-live", &live),
        ],
    );
    assert!(valid, "the AsyncAPI parser refuses a document:\n{said}");
    // The parser does judge: an operation whose message is not its channel's is refused.
    let mut broken = calculator.clone();
    broken["operations"]["add"]["messages"][0]["$ref"] = "#/components/messages/add.request".into();
    let (valid, said) = validate(&parser, &[written("broken", &broken)]);
    assert!(!valid, "a broken document passed: {said}");
    assert!(said.contains("[error]"), "{said}");
}
