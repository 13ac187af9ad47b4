//! `config init` and `config show`: every setting written, where each value came from,
//! the pipe tables.

use std::process::Command;

use serde_json::Value;

use crate::{run, text};

#[test]
fn config_init_writes_every_setting_and_never_overwrites() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["config".into(), "init".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let written = std::fs::read_to_string(dir.join("guirpc.toml")).unwrap();
    for key in [
        "uri = ",
        "queue = ",
        "prefetch = 128",
        "concurrency = 64",
        "timeout = \"30s\"",
        "GUIRPC_URI",
    ] {
        assert!(written.contains(key), "{key} missing from\n{written}");
    }
    std::fs::write(dir.join("guirpc.toml"), "[service]\nqueue = \"mine\"\n").unwrap();
    let out = run(&["config".into(), "init".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("guirpc.toml")).unwrap(),
        "[service]\nqueue = \"mine\"\n"
    );

    // show: where each value came from; the password masked.
    let args: Vec<String> = [
        "config",
        "show",
        "--json",
        "--timeout",
        "5s",
        "--uri",
        "amqp://u:hunter2@h/%2f",
    ]
    .map(String::from)
    .to_vec();
    let out = run(&args, None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!text(&out.stdout).contains("hunter2"));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |key: &str| entries.iter().find(|e| e["key"] == key).unwrap().clone();
    assert_eq!(find("service.queue")["value"], "mine");
    assert!(
        find("service.queue")["source"]
            .as_str()
            .unwrap()
            .starts_with("file ")
    );
    assert_eq!(find("client.timeout")["source"], "flag");
    assert_eq!(find("broker.uri")["value"], "amqp://u:****@h/%2f");
    assert_eq!(find("service.prefetch")["source"], "default");
    let out = Command::new(env!("CARGO_BIN_EXE_guirpc"))
        .args(["config", "show"])
        .current_dir(&dir)
        .env("GUIRPC_PREFETCH", "7")
        .output()
        .unwrap();
    let table = text(&out.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with("service.prefetch"))
        .unwrap();
    assert!(
        row.contains(" 7 ") && row.ends_with("env GUIRPC_PREFETCH"),
        "{row}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_show_lists_the_pipe_tables() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-config-pipes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("guirpc.toml"),
        "[[pipe]]\nname = \"text.wc\"\ncommand = \"python3 wc.py\"\nworkers = 4\ntimeout = \"5s\"\ndir = \"scripts\"\n\n[[pipe]]\nname = \"say\"\ncommand = [\"bash\", \"-c\", \"echo 'hi there'\"]\n",
    )
    .unwrap();
    let out = run(&["config".into(), "show".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = |key: &str| {
        let row = table
            .lines()
            .find(|line| line.starts_with(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in\n{table}"));
        assert!(row.ends_with("file guirpc.toml"), "{row}");
        row.to_owned()
    };
    assert!(row("pipe[text.wc].command").contains(" python3 wc.py "));
    assert!(row("pipe[text.wc].workers").contains(" 4 "));
    assert!(row("pipe[text.wc].timeout").contains(" 5s "));
    assert!(row("pipe[text.wc].dir").contains(" scripts "));
    assert!(row("pipe[say].workers").contains(" 1 "));
    assert!(row("pipe[say].timeout").contains(" 30s "));
    assert!(row("pipe[say].dir").contains(" . "));
    // The command as `--pipe` reads it back, quotes and all.
    let args: Vec<String> = ["config", "show", "--json"].map(String::from).to_vec();
    let out = run(&args, None, Some(&dir));
    let entries: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let value = |key: &str| {
        entries
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no {key}"))["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(value("pipe[text.wc].workers"), "4");
    let say =
        guirpc_core::pipe::PipeFunction::parse(&format!("say={}", value("pipe[say].command")))
            .unwrap();
    assert_eq!(say.command, ["bash", "-c", "echo 'hi there'"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
