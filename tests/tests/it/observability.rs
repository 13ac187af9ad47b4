//! Layers, spans, metrics, health and the status page, against the real broker.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guirpc_core::middleware::{
    ClientRequest, ClientService, Reply, ServerRequest, ServerService, client_outcome,
};
use guirpc_core::{Client, Error, ErrorCode, Metrics, Server};
use guirpc_tests::{api, expiring, http_get, poll, sample, spans, unique_queue, until, uri};
use tower::ServiceExt;
use tower::layer::layer_fn;
use tower::service_fn;

/// A server layer that refuses callers without an `x-api-key` header, before the function.
fn authorize() -> impl tower::Layer<
    ServerService,
    Service = impl tower::Service<
        ServerRequest,
        Response = Reply,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
              + Send
              + Sync
              + 'static,
> + Send
+ Sync
+ 'static {
    layer_fn(|inner: ServerService| {
        service_fn(move |request: ServerRequest| {
            let inner = inner.clone();
            async move {
                if request.header("x-api-key").as_deref() != Some("sesame") {
                    let code = ErrorCode::parse("unauthorized");
                    return Ok(Reply::error(request.codec, code, "no valid API key"));
                }
                inner.oneshot(request).await
            }
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn layers_see_every_call_can_refuse_one_and_see_its_outcome() {
    let queue = unique_queue("layers");
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .layer(authorize())
        .start()
        .await
        .unwrap();
    // A client layer that adds the key, and one that records each outcome.
    let outcomes = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = outcomes.clone();
    let record = layer_fn(move |inner: ClientService| {
        let seen = seen.clone();
        service_fn(move |request: ClientRequest| {
            let (inner, seen) = (inner.clone(), seen.clone());
            async move {
                let function = request.function.clone();
                let result = inner.oneshot(request).await;
                let outcome = client_outcome(&result);
                seen.lock().unwrap().push(format!("{function}: {outcome}"));
                result
            }
        })
    });
    let with_key = layer_fn(|inner: ClientService| {
        service_fn(move |mut request: ClientRequest| {
            request.set_header("x-api-key", "sesame");
            inner.clone().oneshot(request)
        })
    });
    let builder = Client::builder().uri(uri()).queue(&queue);
    let keyed = builder
        .clone()
        .layer(record.clone())
        .layer(with_key)
        .connect()
        .await
        .unwrap();
    let keyless = builder.layer(record).connect().await.unwrap();

    assert_eq!(api::add::call(&keyed, 2, 3).await.unwrap(), 5);
    let refused = api::add::call(&keyless, 2, 3).await.unwrap_err();
    match &refused {
        Error::Remote(remote) => {
            assert_eq!(remote.code().as_str(), "unauthorized");
            assert_eq!(remote.message(), "no valid API key");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let missing = api::missing::call(&keyed).await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    assert_eq!(
        *outcomes.lock().unwrap(),
        [
            "add: ok",
            "add: unauthorized",
            "missing.function: not_found"
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicking_layer_costs_its_call_an_error_reply_and_the_server_serves_on() {
    let queue = unique_queue("panicking-layer");
    let metrics = Metrics::new();
    let fragile = layer_fn(|inner: ServerService| {
        service_fn(move |request: ServerRequest| {
            let inner = inner.clone();
            async move {
                if request.function == "answer" {
                    panic!("the layer broke");
                }
                inner.oneshot(request).await
            }
        })
    });
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .layer(fragile)
        .metrics(&metrics)
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(uri())
        .queue(&queue)
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    for _ in 0..3 {
        let err = client.call::<u32>("answer", ()).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
        assert!(err.to_string().contains("the layer broke"), "{err}");
        assert_eq!(api::add::call(&client, 1, 1).await.unwrap(), 2);
    }
    // Counted as what they were: internal failures, rejected.
    let text = metrics.encode();
    let q = format!("queue=\"{queue}\"");
    let answer = format!("guirpc_server_calls_total{{{q},function=\"answer\",code=\"internal\"}}");
    assert_eq!(sample(&text, &answer), Some(3.0), "{text}");
    assert_eq!(
        sample(&text, &format!("guirpc_server_rejected_total{{{q}}}")),
        Some(3.0)
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_trace_runs_from_the_caller_across_the_broker_into_the_calls_a_handler_makes() {
    spans::capture();
    let (server, client) = guirpc_tests::serve("trace").await;
    let queue = server.queue().to_owned();
    let sum: i64 = client.call("relay", (&queue, 2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    let spans = spans::wait_for(4, |span| span.field("rpc.service") == queue).await;
    let find = |name: &str, method: &str| {
        spans
            .iter()
            .find(|s| s.name == name && s.field("rpc.method") == method)
            .unwrap_or_else(|| panic!("no {name} span of {method} in {spans:#?}"))
    };
    let (call, serve) = (find("guirpc.call", "relay"), find("guirpc.serve", "relay"));
    let (nested_call, nested_serve) = (find("guirpc.call", "add"), find("guirpc.serve", "add"));
    // One trace, with each span the child of the one before it, across the broker.
    let trace = call.field("trace_id");
    assert_eq!(trace.len(), 32, "{call:?}");
    for span in [serve, nested_call, nested_serve] {
        assert_eq!(span.field("trace_id"), trace, "{span:?}");
    }
    assert_eq!(call.field("parent_span_id"), "");
    assert_eq!(serve.field("parent_span_id"), call.field("span_id"));
    assert_eq!(nested_call.field("parent_span_id"), serve.field("span_id"));
    assert_eq!(
        nested_serve.field("parent_span_id"),
        nested_call.field("span_id")
    );
    // The semantic conventions' fields.
    assert_eq!(serve.field("otel.kind"), "server");
    assert_eq!(call.field("otel.kind"), "client");
    assert_eq!(serve.field("rpc.system"), "guirpc");
    assert_eq!(serve.field("messaging.system"), "rabbitmq");
    assert_eq!(serve.field("messaging.destination.name"), queue);
    assert!(!serve.field("messaging.message.conversation_id").is_empty());
    assert_eq!(serve.field("messaging.rabbitmq.redelivered"), "false");
    assert_eq!(serve.field("guirpc.outcome"), "ok");
    assert_eq!(call.field("guirpc.outcome"), "ok");
    assert!(call.field("guirpc.duration_ms").parse::<f64>().unwrap() > 0.0);

    // A failed call's spans say so.
    let missing = api::missing::call(&client).await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    let failed = spans::wait_for(2, |span| {
        span.field("rpc.service") == queue && span.field("rpc.method") == "missing.function"
    })
    .await;
    for span in &failed {
        assert_eq!(span.field("guirpc.outcome"), "not_found", "{span:?}");
        assert_eq!(span.field("otel.status_code"), "ERROR", "{span:?}");
        assert_eq!(span.field("error.type"), "not_found", "{span:?}");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_s_traceparent_is_continued_and_a_malformed_one_starts_a_new_trace() {
    spans::capture();
    let (server, _client) = guirpc_tests::serve("traceparent").await;
    let queue = server.queue().to_owned();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    // A plain AMQP publish stands for a caller of another language.
    let connection = guirpc_core::lapin::Connection::connect(&uri(), Default::default())
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    for (token, traceparent) in [("continued", parent), ("fresh", "00-zz-garbage")] {
        let mut headers = guirpc_core::lapin::types::FieldTable::default();
        headers.insert(
            "guirpc-function".into(),
            guirpc_core::lapin::types::AMQPValue::LongString("record".into()),
        );
        headers.insert(
            "traceparent".into(),
            guirpc_core::lapin::types::AMQPValue::LongString(traceparent.into()),
        );
        let body = serde_json::to_vec(&serde_json::json!({ "token": format!("{queue}-{token}") }))
            .unwrap();
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                Default::default(),
                &body,
                guirpc_core::lapin::BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_correlation_id(token.into())
                    .with_headers(headers),
            )
            .await
            .unwrap();
    }
    assert!(
        guirpc_tests::wait_recorded(&format!("{queue}-fresh"), 1, Duration::from_secs(10)).await
    );
    let served = spans::wait_for(2, |span| {
        span.field("rpc.service") == queue && span.name == "guirpc.serve"
    })
    .await;
    assert_eq!(served.len(), 2, "{served:#?}");
    let by_id = |id: &str| {
        served
            .iter()
            .find(|span| span.field("messaging.message.conversation_id") == id)
            .unwrap_or_else(|| panic!("no span of request {id}: {served:#?}"))
    };
    let continued = by_id("continued");
    assert_eq!(
        continued.field("trace_id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(continued.field("parent_span_id"), "00f067aa0ba902b7");
    let fresh = by_id("fresh");
    assert_eq!(fresh.field("trace_id").len(), 32);
    assert_ne!(fresh.field("trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(fresh.field("parent_span_id"), "");
    server.shutdown().await.unwrap();
}

/// A server on a queue of its own, serving metrics on a free port.
async fn metered(test: &str) -> (String, Server) {
    let queue = unique_queue(test);
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .metrics_addr("127.0.0.1:0")
        .start()
        .await
        .unwrap();
    (queue, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly_the_calls_made_and_health_endpoints_answer() {
    let (queue, server) = metered("metrics").await;
    let addr = server.metrics_addr().expect("listening");
    let metrics = Metrics::new();
    let client = Client::builder()
        .uri(uri())
        .queue(&queue)
        .metrics(&metrics)
        .connect()
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(api::add::call(&client, i, 1).await.unwrap(), i + 1);
    }
    assert!(api::checked_div::call(&client, 1, 0).await.is_err());
    assert!(api::missing::call(&client).await.is_err());
    client
        .call::<u8>("no such function, <b>hostile</b>", ())
        .await
        .unwrap_err();

    let scrape = |path: &'static str| tokio::task::spawn_blocking(move || http_get(addr, path));
    let (status, text) = scrape("/metrics").await.unwrap();
    assert_eq!(status, 200);
    let q = format!("queue=\"{queue}\"");
    let series = |name: &str, labels: &str| format!("{name}{{{q}{labels}}}");
    let value = |name: &str, labels: &str| sample(&text, &series(name, labels));
    assert_eq!(
        value("guirpc_server_calls_total", ",function=\"add\",code=\"ok\""),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            "guirpc_server_calls_total",
            ",function=\"checked_div\",code=\"handler_error\""
        ),
        Some(1.0)
    );
    // Unknown names share one label: a caller cannot grow the metrics.
    assert_eq!(
        value(
            "guirpc_server_calls_total",
            ",function=\"unknown\",code=\"not_found\""
        ),
        Some(2.0)
    );
    assert!(!text.contains("hostile"), "{text}");
    assert_eq!(
        value(
            "guirpc_server_handler_duration_seconds_count",
            ",function=\"add\""
        ),
        Some(3.0)
    );
    assert_eq!(value("guirpc_server_rejected_total", ""), Some(2.0));
    assert_eq!(value("guirpc_server_dead_lettered_total", ""), Some(0.0));
    assert_eq!(value("guirpc_server_calls_in_flight", ""), Some(0.0));
    assert_eq!(value("guirpc_server_ready", ""), Some(1.0));
    assert_eq!(value("guirpc_server_broker_blocked", ""), Some(0.0));
    assert_eq!(value("guirpc_server_redeliveries_total", ""), Some(0.0));

    // The client's side, in its own registry.
    let client_text = metrics.encode();
    let client_value = |labels: &str| {
        sample(
            &client_text,
            &format!("guirpc_client_calls_total{{{q}{labels}}}"),
        )
    };
    assert_eq!(
        client_value(",function=\"add\",code=\"ok\""),
        Some(3.0),
        "{client_text}"
    );
    assert_eq!(
        client_value(",function=\"checked_div\",code=\"handler_error\""),
        Some(1.0)
    );
    assert_eq!(
        client_value(",function=\"missing.function\",code=\"not_found\""),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &client_text,
            &format!("guirpc_client_duration_seconds_count{{{q},function=\"add\"}}")
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&client_text, "guirpc_client_calls_pending"),
        Some(0.0)
    );

    assert_eq!(scrape("/healthz").await.unwrap(), (200, "ok\n".to_owned()));
    let (status, body) = scrape("/readyz").await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "ready: connected and consuming\n")
    );
    assert_eq!(scrape("/nowhere").await.unwrap().0, 404);

    // A timed-out call is counted by its outcome on the client.
    let quick = client.with_timeout(Duration::from_millis(50));
    let err = quick.call::<u64>("nap", (1000u64,)).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    let client_text = metrics.encode();
    assert_eq!(
        sample(
            &client_text,
            &format!("guirpc_client_calls_total{{{q},function=\"nap\",code=\"timeout\"}}")
        ),
        Some(1.0),
        "{client_text}"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_refuses_what_is_not_a_small_get_and_a_taken_port_is_a_config_error() {
    use std::io::{Read, Write};
    let (queue, server) = metered("listener").await;
    let addr = server.metrics_addr().unwrap();
    let exchange = move |request: Vec<u8>| {
        tokio::task::spawn_blocking(move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let _ = stream.write_all(&request);
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            response
        })
    };
    let post = exchange(b"POST /metrics HTTP/1.1\r\nhost: x\r\n\r\n".to_vec())
        .await
        .unwrap();
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    let mut huge = b"GET / HTTP/1.1\r\nx-filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 64 * 1024));
    let refused = exchange(huge).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 431"), "{refused}");
    let head = exchange(b"HEAD /healthz HTTP/1.1\r\n\r\n".to_vec())
        .await
        .unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    // Still serving after all that.
    let (status, _) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap();
    assert_eq!(status, 200);

    let taken = Server::builder()
        .uri(uri())
        .queue(&queue)
        .metrics_addr(addr.to_string())
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(taken, guirpc_core::ServeError::Config(_)),
        "{taken}"
    );
    assert!(taken.to_string().contains(&addr.to_string()), "{taken}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_status_page_shows_the_service_in_a_real_browser() {
    let Some(chromium) = guirpc_tests::chromium() else {
        return;
    };
    let (queue, server) = metered("status").await;
    let addr = server.metrics_addr().unwrap();
    let client = guirpc_tests::client(&queue).await;
    for i in 0..7 {
        api::add::call(&client, i, i).await.unwrap();
    }
    api::checked_div::call(&client, 1, 0).await.unwrap_err();
    // A cast that cannot run: a dead letter at once, which the page shows with its reason.
    client.cast("no_such_job", ()).await.unwrap();
    let dead = format!("guirpc_server_dead_lettered_total{{queue=\"{queue}\"}}");
    let metrics = server.metrics().expect("a metered server records");
    assert!(
        until(Duration::from_secs(10), || sample(&metrics.encode(), &dead)
            == Some(1.0))
        .await
    );
    let url = format!("http://{addr}/");
    let screenshot = std::env::temp_dir().join(format!("guirpc-status-{}.png", std::process::id()));
    let (dom, shot) = tokio::task::spawn_blocking({
        let screenshot = screenshot.clone();
        move || guirpc_tests::browse(&chromium, &url, &screenshot)
    })
    .await
    .unwrap();
    assert!(
        dom.contains(&format!("Service <code>{queue}</code>")),
        "{dom}"
    );
    assert!(dom.contains("ready: connected and consuming"), "{dom}");
    let row = |function: &str| {
        let start = dom
            .find(&format!("<tr data-function=\"{function}\">"))
            .unwrap_or_else(|| panic!("no row for {function}: {dom}"));
        dom[start..].split("</tr>").next().unwrap().to_owned()
    };
    let add = row("add");
    assert!(add.contains("<td class=\"calls\">7</td>"), "{add}");
    assert!(add.contains("<td class=\"errors\">0</td>"), "{add}");
    assert!(add.contains("Adds two integers."), "{add}");
    assert!(add.contains("µs") || add.contains("ms"), "a latency: {add}");
    let div = row("checked_div");
    assert!(
        div.contains("<td class=\"calls\">1</td>") && div.contains("<td class=\"errors\">1</td>"),
        "{div}"
    );
    assert!(dom.contains("<span id=\"dead-letters\">1</span>"), "{dom}");
    let dead_table = &dom[dom
        .find("<table id=\"dead\">")
        .expect("the dead letters' table")..];
    assert!(
        dead_table.contains("<code>no_such_job</code>") && dead_table.contains("not_found"),
        "{dead_table}"
    );
    assert!(
        dom.contains(&format!("guirpc dead list -q {queue}")),
        "{dom}"
    );
    // A real screenshot: a PNG of the page.
    assert!(
        shot.starts_with(b"\x89PNG"),
        "no PNG at {}",
        screenshot.display()
    );
    assert!(shot.len() > 10_000, "a blank page? {} bytes", shot.len());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draining_server_is_not_ready_while_it_finishes_its_calls() {
    let (queue, server) = metered("draining").await;
    let addr = server.metrics_addr().unwrap();
    let client = Client::builder()
        .uri(uri())
        .queue(&queue)
        .timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let running = tokio::spawn(async move { client.call::<u64>("nap", (1_500u64,)).await });
    let in_flight = format!("guirpc_server_calls_in_flight{{queue=\"{queue}\"}}");
    let metrics = server.metrics().expect("a metered server records");
    assert!(
        until(Duration::from_secs(10), || sample(
            &metrics.encode(),
            &in_flight
        ) == Some(1.0))
        .await,
        "the call never started"
    );
    let readyz = move || tokio::task::spawn_blocking(move || http_get(addr, "/readyz"));
    assert_eq!(readyz().await.unwrap().0, 200);
    let stopping = tokio::spawn(server.shutdown());
    let draining = poll(Duration::from_secs(10), || async {
        match readyz().await.unwrap() {
            (503, reason) => Ok(reason),
            other => Err(other),
        }
    })
    .await;
    assert_eq!(draining, Ok("not ready: shutting down\n".to_owned()));
    assert!(
        !running.is_finished(),
        "the call ended before the server said it drained"
    );
    assert_eq!(running.await.unwrap().unwrap(), 1_500);
    stopping.await.unwrap().unwrap();
}
