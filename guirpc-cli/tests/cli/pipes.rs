//! Pipe functions served by `guirpc serve` as a process, with no crate at all and from
//! the pipes example: no worker outlives its server.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::{broker, ctl, guirpc, run, serving, text, unique_queue, until};

/// Starts `guirpc serve` with `args` in `dir`, and waits until it serves.
fn serve_process(args: &[&str], dir: &Path) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_guirpc"));
    command
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env("GUIRPC_URI", broker())
        .env_remove("GUIRPC_CONFIG")
        .env_remove("GUIRPC_QUEUE")
        .stdout(Stdio::null());
    serving(command, Duration::from_secs(30))
}

fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standalone_binary_serves_pipe_functions_and_no_worker_outlives_it() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-pipes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("pid.py"),
        "import json, os, sys\nfor line in sys.stdin:\n    call = json.loads(line)\n    print(json.dumps({\"ok\": {\"pid\": os.getpid(), \"args\": call[\"args\"]}}), flush=True)\n",
    )
    .unwrap();
    let queue = unique_queue("pipes");
    // From the command line, in a directory with no crate: no Rust function at all.
    let mut server = serve_process(
        &[
            "--queue",
            &queue,
            "--pipe",
            "pid=python3 pid.py",
            "--pipe-workers",
            "2",
        ],
        &dir,
    );
    let out = guirpc(&["call", "pid", r#"{"x": 1}"#, "-q", &queue], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["args"], json!({"x": 1}));
    let pid = answer["pid"].as_u64().unwrap();
    assert!(alive(pid));
    // Killed outright, the server cannot end its workers: they see their input close.
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(
        until(Duration::from_secs(10), || !alive(pid)).await,
        "worker {pid} outlived its killed server"
    );

    // From guirpc.toml: a [[pipe]] table, described for `guirpc list`.
    std::fs::write(
        dir.join("guirpc.toml"),
        format!(
            "[service]\nqueue = \"{queue}\"\n\n[[pipe]]\nname = \"whoami\"\ncommand = [\"python3\", \"pid.py\"]\nworkers = 2\ntimeout = \"5s\"\ndescription = \"Says which worker answers.\"\nparams = [\"x\"]\n"
        ),
    )
    .unwrap();
    let server = serve_process(&[], &dir);
    let out = guirpc(&["call", "whoami", "[7]", "-q", &queue], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["args"], json!({"x": 7}));
    let out = guirpc(&["list", "-q", &queue], None).await;
    let listed = text(&out.stdout);
    assert!(
        listed.contains("whoami") && listed.contains("Says which worker answers."),
        "{listed}"
    );
    let pid = answer["pid"].as_u64().unwrap();
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let mut server = server;
    assert!(server.wait().unwrap().success());
    assert!(!alive(pid), "worker {pid} outlived its stopped server");

    // A bad table is a configuration error naming it.
    std::fs::write(
        dir.join("guirpc.toml"),
        "[[pipe]]\nname = \"broken\"\nworkers = 2\n",
    )
    .unwrap();
    let out = run(&["serve".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("command"),
        "{}",
        text(&out.stderr)
    );
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pipes_example_serves_a_python_and_a_bash_function() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pipes/guirpc.toml");
    let queue = unique_queue("pipes-example");
    let config = config.display().to_string();
    // From another directory: the commands run in the file's.
    let mut server = serve_process(
        &["--config", &config, "--queue", &queue],
        &std::env::temp_dir(),
    );
    let out = guirpc(
        &[
            "call",
            "text.wc",
            r#"{"text": "to be or not"}"#,
            "-q",
            &queue,
        ],
        None,
    )
    .await;
    assert_eq!(text(&out.stdout).trim(), "4", "{}", text(&out.stderr));
    let out = guirpc(&["call", "text.shout", r#"["quiet"]"#, "-q", &queue], None).await;
    assert_eq!(
        text(&out.stdout).trim(),
        "\"QUIET\"",
        "{}",
        text(&out.stderr)
    );
    let out = guirpc(&["call", "text.wc", r#"{"text": 5}"#, "-q", &queue], None).await;
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["code"], "handler_error");
    assert_eq!(error["error"]["detail"], json!({"got": 5}));
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
}
