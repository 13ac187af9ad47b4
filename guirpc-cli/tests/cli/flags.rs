//! Help, completions and typed flags; the log's filters and its colours.

use std::process::{Command, Stdio};

use crate::{broker, guirpc, run, serve, text};

#[test]
fn completions_help_and_a_serve_without_functions() {
    let out = run(&["completions".into(), "bash".into()], None, None);
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(
        script.contains("guirpc") && script.contains("ping"),
        "{script}"
    );
    for command in [
        "new",
        "config",
        "config init",
        "config show",
        "serve",
        "call",
        "list",
        "ping",
    ] {
        let mut args: Vec<String> = command.split(' ').map(String::from).collect();
        args.push("--help".into());
        let out = run(&args, None, None);
        assert_eq!(out.status.code(), Some(0), "{command}");
        assert!(
            text(&out.stdout).contains("Example"),
            "`{command} --help` shows no example"
        );
    }
    let out = run(&["frobnicate".into()], None, None);
    assert_eq!(out.status.code(), Some(2));
    // The standalone binary links no functions and this is no crate directory.
    let out = run(&["serve".into()], None, Some(&std::env::temp_dir()));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no #[rpc] functions"),
        "{}",
        text(&out.stderr)
    );
}

/// Flags take typed values, listed in help; the help shows the program's own defaults;
/// `GUIRPC_LOG` takes `tracing`'s filter syntax and refuses a word that is no level.
#[tokio::test(flavor = "multi_thread")]
async fn flags_are_typed_and_log_filters_are_checked() {
    let out = guirpc(&["call", "add", "[1, 2]", "--timeout", "soon"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("30s"), "{}", text(&out.stderr));
    let out = guirpc(&["serve", "--delivery", "twice"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("at-least-once"),
        "{}",
        text(&out.stderr)
    );
    let out = guirpc(&["ping", "--log-level", "loud"], None).await;
    assert_eq!(out.status.code(), Some(2));
    let out = guirpc(&["serve", "--help"], None).await;
    let help = text(&out.stdout);
    for expected in [
        "[default: guirpc]",
        "[env: GUIRPC_PREFETCH] [default: 128]",
        "at-most-once",
        "[possible values: error, warn, info, debug, trace]",
        "--metrics-addr <HOST:PORT>",
        "[env: GUIRPC_METRICS_ADDR] [default: \"\"]",
        "--otlp-endpoint <URL>",
        "[env: GUIRPC_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT]",
    ] {
        assert!(help.contains(expected), "`{expected}` missing from {help}");
    }

    let server = serve("log-filter").await;
    let q = server.queue().to_owned();
    let log = |filter: &'static str| {
        let q = q.clone();
        tokio::task::spawn_blocking(move || {
            Command::new(env!("CARGO_BIN_EXE_guirpc"))
                .args(["call", "add", "[1, 2]", "-q", &q])
                .env("GUIRPC_URI", broker())
                .env("GUIRPC_LOG", filter)
                .env("NO_COLOR", "1")
                .output()
                .unwrap()
        })
    };
    let out = log("warn,guirpc_core=debug").await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "3\n");
    let out = log("loud").await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`loud` is not a level"),
        "{}",
        text(&out.stderr)
    );
}

/// Logs on a terminal are in colour, unless `NO_COLOR` is set.
#[test]
fn no_color_turns_colour_off_on_a_terminal() {
    let screen = |no_color: bool| {
        let shell = format!(
            "{} ping -q guirpc-test.cli.no-such-queue --timeout 1s --log-level debug",
            env!("CARGO_BIN_EXE_guirpc")
        );
        let mut command = Command::new("script");
        command
            .args(["-qec", &shell, "/dev/null"])
            .env("GUIRPC_URI", broker())
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if no_color {
            command.env("NO_COLOR", "1");
        }
        text(&command.output().expect("`script` (util-linux) runs").stdout)
    };
    let coloured = screen(false);
    assert!(
        coloured.contains("DEBUG") && coloured.contains("\x1b["),
        "{coloured:?}"
    );
    let plain = screen(true);
    assert!(
        plain.contains("DEBUG") && !plain.contains("\x1b[3"),
        "{plain:?}"
    );
}
