//! The pages a person reads: charts of the last quarter hour, the last errors, and a page
//! per function with its schemas and example calls, in a real browser, after known calls.

use std::path::PathBuf;

use guirpc_core::Server;
use guirpc_tests::{self as api, browse, expiring, unescape_html, unique_queue, uri};
use serde_json::Value;

/// The part of a page from `start` up to the next `end`.
fn part<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let at = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in {dom}"));
    let rest = &dom[at..];
    &rest[..rest.find(end).map_or(rest.len(), |e| e + end.len())]
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pages_chart_the_calls_list_the_last_errors_and_show_each_function() {
    let Some(chromium) = guirpc_tests::chromium() else {
        return;
    };
    let queue = unique_queue("pages");
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .metrics_addr("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    let addr = server.metrics_addr().unwrap();
    let client = api::client(&queue).await;
    for i in 0..12 {
        api::add::call(&client, i, 1).await.unwrap();
    }
    for i in 0..3 {
        api::checked_div::call(&client, i, 0).await.unwrap_err();
    }
    client
        .call::<Value>("no_such_function", ())
        .await
        .unwrap_err();
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    let (dom, shot) = tokio::task::spawn_blocking({
        let (chromium, url, shot) = (
            chromium.clone(),
            format!("http://{addr}/"),
            shots.join("status.png"),
        );
        move || browse(&chromium, &url, &shot)
    })
    .await
    .unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "{} bytes",
        shot.len()
    );
    let add = part(
        &dom,
        "<figure class=\"chart\" data-function=\"add\"",
        "</figure>",
    );
    assert!(add.contains("data-calls=\"12\" data-errors=\"0\""), "{add}");
    assert!(
        add.contains(
            "<span class=\"calls\">12</span> calls, <span class=\"errors\">0</span> errors"
        ),
        "{add}"
    );
    assert_eq!(add.matches("<svg class=\"spark\"").count(), 3, "{add}");
    assert!(
        add.contains("<polyline") || add.contains("<circle"),
        "a line drawn: {add}"
    );
    assert!(add.contains("href=\"/functions/add\""), "{add}");
    // 12 calls in one 10-second slot (or split over two): the largest rate is 1.2/s or less.
    assert!(add.contains("max 1.2/s") || add.contains("max 0."), "{add}");
    let div = part(
        &dom,
        "<figure class=\"chart\" data-function=\"checked_div\"",
        "</figure>",
    );
    assert!(div.contains("data-calls=\"3\" data-errors=\"3\""), "{div}");

    // Names no function serves are counted under `unknown`, which has no page.
    let unknown = part(
        &dom,
        "<figure class=\"chart\" data-function=\"unknown\"",
        "</figure>",
    );
    assert!(!unknown.contains("href="), "{unknown}");
    let errors = part(&dom, "<table id=\"errors\">", "</table>");
    assert_eq!(errors.matches("<tr><td>").count(), 4, "{errors}");
    let rows: Vec<&str> = errors.split("<tr><td>").skip(1).collect();
    assert!(
        rows[0].contains("not_found") && rows[0].contains("no_such_function"),
        "newest first: {errors}"
    );
    assert!(
        rows[1].contains("<code>checked_div</code>") && rows[1].contains("handler_error"),
        "{errors}"
    );
    assert!(
        unescape_html(rows[1]).contains(r#"returned an error: {"ByZero":2}"#),
        "{errors}"
    );
    assert!(
        unescape_html(rows[3]).contains(r#"returned an error: {"ByZero":0}"#),
        "{errors}"
    );

    let (page, shot) = tokio::task::spawn_blocking({
        let (url, shot) = (
            format!("http://{addr}/functions/shift"),
            shots.join("function-shift.png"),
        );
        move || browse(&chromium, &url, &shot)
    })
    .await
    .unwrap();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "{} bytes",
        shot.len()
    );
    assert!(page.contains("<h1><code>shift</code></h1>"), "{page}");
    assert!(page.contains("Moves a point; optional scale."), "{page}");
    let params = unescape_html(part(&page, "<pre id=\"schema-params\">", "</pre>"));
    let params = params
        .trim_start_matches("<pre id=\"schema-params\">")
        .trim_end_matches("</pre>");
    let params: Value = serde_json::from_str(params).unwrap();
    assert_eq!(
        params["$defs"]["Point"]["required"],
        serde_json::json!(["x", "y"])
    );
    let shell = unescape_html(part(&page, "<pre id=\"shell\">", "</pre>"));
    assert!(
        shell.contains(&format!("guirpc call --queue {queue} shift '{{\"by\":")),
        "{shell}"
    );

    // The Python example runs as printed, against this very service.
    if guirpc_tests::python_with_pika() {
        let python = unescape_html(part(&page, "<pre id=\"python\">", "</pre>"));
        let python = python
            .trim_start_matches("<pre id=\"python\">")
            .trim_end_matches("</pre>")
            .to_owned();
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("python3")
                .args(["-c", &python])
                .env("GUIRPC_URI", uri())
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, value) = stdout.trim().split_once(' ').unwrap();
        assert_eq!(status, "ok", "{stdout}");
        let point: api::Point = serde_json::from_str(value).unwrap();
        assert!(point.x.is_finite() && point.y.is_finite(), "{stdout}");
    }

    // Unknown names are a 404, not a page; the AsyncAPI document is served beside.
    let (status, _) = tokio::task::spawn_blocking(move || api::http_get(addr, "/functions/nope"))
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, body) = tokio::task::spawn_blocking(move || api::http_get(addr, "/asyncapi.json"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let document: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(document["channels"]["requests"]["address"], queue.as_str());
    server.shutdown().await.unwrap();
}
