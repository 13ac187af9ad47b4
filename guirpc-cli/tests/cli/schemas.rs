//! `guirpc list --schema`, `guirpc call --check` and `guirpc asyncapi` against a running
//! service.

use serde_json::Value;

use super::{guirpc, serve, text};

#[tokio::test(flavor = "multi_thread")]
async fn list_schema_prints_each_function_s_schemas() {
    let server = serve("list-schema").await;
    let out = guirpc(&["list", "-q", server.queue(), "--schema"], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("add(a: i64, b: i64) -> i64\n  params:\n    {"),
        "{stdout}"
    );
    assert!(stdout.contains("  params:\n    {"), "{stdout}");
    assert!(stdout.contains("\"format\": \"int64\""), "{stdout}");
    assert!(stdout.contains("  item:"), "countdown's items: {stdout}");
    assert!(
        stdout.contains("  error (detail of handler_error):"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn call_check_names_the_field_that_does_not_fit_and_sends_nothing() {
    let server = serve("check").await;
    let queue = server.queue();
    let out = guirpc(
        &[
            "call",
            "add",
            r#"{"a": 1, "b": "2"}"#,
            "-q",
            queue,
            "--check",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("the arguments do not fit `add`'s schema; nothing was sent"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`b`: expected an integer, got the string \"2\""),
        "{stderr}"
    );
    assert!(stderr.contains("guirpc list --schema"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = guirpc(&["call", "add", r#"[1]"#, "-q", queue, "--check"], None).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("`add` takes 2 arguments (a: i64, b: i64); 1 given in order"),
        "{}",
        text(&out.stderr)
    );

    let out = guirpc(
        &[
            "call",
            "nap",
            r#"{"ms": -5, "extra": 1}"#,
            "-q",
            queue,
            "--check",
        ],
        None,
    )
    .await;
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`ms`: at least 0, got -5"), "{stderr}");
    assert!(
        stderr.contains("`extra`: not expected (expected: ms)"),
        "{stderr}"
    );

    // Arguments that fit are sent, by name or in order.
    for args in [r#"{"a": 1, "b": 2}"#, "[1, 2]"] {
        let out = guirpc(&["call", "add", args, "-q", queue, "--check"], None).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), "3");
    }
    let out = guirpc(&["call", "nope", "{}", "-q", queue, "--check"], None).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("serves no function `nope`"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn asyncapi_asks_the_running_service_when_it_links_no_functions_of_its_own() {
    let server = serve("asyncapi").await;
    let out = guirpc(&["asyncapi", "-q", server.queue()], None).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let document: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(document["asyncapi"], "3.0.0");
    assert_eq!(document["channels"]["requests"]["address"], server.queue());
    assert_eq!(
        document["components"]["messages"]["add.request"]["payload"]["properties"]["b"]["type"],
        "integer"
    );
    assert!(document["operations"]["countdown"]["reply"]["messages"].is_array());
    assert!(
        document["channels"]["credit"].is_object(),
        "a streaming function's credit"
    );

    let out = guirpc(
        &["asyncapi", "-q", "guirpc-test.cli.nobody-serves-this"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
}

/// `--protocol guirpc-0.1` writes calls as the Python package guirpc 0.1 does; a guirpc
/// server answers them in that form (the real package's side: tests/tests/guirpc01.rs).
#[tokio::test(flavor = "multi_thread")]
async fn call_speaks_guirpc_0_1_to_a_server_that_answers_it() {
    let server = serve("v01").await;
    let queue = server.queue();
    let out = guirpc(
        &[
            "call",
            "add",
            r#"{"a": 1, "b": 2}"#,
            "-q",
            queue,
            "--protocol",
            "guirpc-0.1",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "3");
    let out = guirpc(
        &[
            "call",
            "div",
            "[1, 0]",
            "-q",
            queue,
            "--protocol",
            "guirpc-0.1",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("status 400: [handler_error]"), "{stderr}");
    let out = guirpc(
        &[
            "cast",
            "add",
            "[1, 2]",
            "-q",
            queue,
            "--protocol",
            "guirpc-0.1",
        ],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("takes no casts"),
        "{}",
        text(&out.stderr)
    );
}
