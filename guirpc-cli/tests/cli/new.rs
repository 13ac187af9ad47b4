//! `guirpc new`: a crate that builds, serves and answers at once; existing directories
//! and bad names refused.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{broker, ctl, run, serving, text, unique_queue};

#[test]
fn new_refuses_existing_directories_and_bad_names() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("taken")).unwrap();
    std::fs::write(dir.join("taken/keep.txt"), "mine").unwrap();
    let out = run(&["new".into(), "taken".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("already exists"));
    assert_eq!(
        std::fs::read_to_string(dir.join("taken/keep.txt")).unwrap(),
        "mine"
    );
    let out = run(&["new".into(), "9lives".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(2));
    assert!(!dir.join("9lives").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_new_service_builds_serves_and_answers_at_once() {
    let dir = std::env::temp_dir().join(format!("guirpc-cli-scaffold-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = run(&["new".into(), "greeter".into()], None, Some(&dir));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let crate_dir = dir.join("greeter");
    for file in [
        "Cargo.toml",
        "guirpc.toml",
        "src/lib.rs",
        "src/main.rs",
        "examples/client.rs",
        "README.md",
    ] {
        assert!(crate_dir.join(file).exists(), "{file} missing");
    }
    // Built in a target directory of its own next to the workspace's, kept between runs.
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/scaffold");
    let build = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bins", "--examples"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "the new crate does not build:\n{}",
        text(&build.stderr)
    );

    let queue = unique_queue("scaffold");
    // The standalone `guirpc serve`, run in the crate's directory, serves the crate's functions.
    let mut service = Command::new(env!("CARGO_BIN_EXE_guirpc"));
    service
        .args(["serve", "--queue", &queue])
        .current_dir(&crate_dir)
        .env("GUIRPC_URI", broker())
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO", env!("CARGO"))
        .stdout(Stdio::null());
    let mut service = serving(service, Duration::from_secs(120));
    let out = run(
        &[
            "call".into(),
            "greet".into(),
            r#"{"name": "you"}"#.into(),
            "-q".into(),
            queue.clone(),
        ],
        None,
        None,
    );
    assert_eq!(
        text(&out.stdout).trim(),
        "\"Hello, you!\"",
        "{}",
        text(&out.stderr)
    );
    let client = Command::new(target.join("debug/examples/client"))
        .current_dir(&crate_dir)
        .env("GUIRPC_URI", broker())
        .env("GUIRPC_QUEUE", &queue)
        .output()
        .unwrap();
    assert_eq!(
        text(&client.stdout).trim(),
        "Hello, world!",
        "{}",
        text(&client.stderr)
    );
    Command::new("kill")
        .args(["-TERM", &service.id().to_string()])
        .status()
        .unwrap();
    assert!(service.wait().unwrap().success());
    let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
    std::fs::remove_dir_all(&dir).unwrap();
}
