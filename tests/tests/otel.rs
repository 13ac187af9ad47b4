//! OpenTelemetry (`--features otel`): a client call, its handler and the call the handler
//! makes in turn are exported as one trace, with the right parents, across the real broker.
#![cfg(feature = "otel")]

use opentelemetry::trace::{SpanId, SpanKind};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[tokio::test(flavor = "multi_thread")]
async fn a_call_its_handler_and_a_nested_call_are_one_exported_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let otel = guirpc_core::otel::Provider::new(provider.clone());
    tracing_subscriber::registry()
        .with(otel.layer())
        .try_init()
        .unwrap();

    let (server, client) = guirpc_tests::serve("otel").await;
    let queue = server.queue().to_owned();
    let sum: i64 = client.call("relay", (&queue, 20, 22)).await.unwrap();
    assert_eq!(sum, 42);

    let attribute = |span: &SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.as_str().into_owned())
            .unwrap_or_default()
    };
    let mut spans = Vec::new();
    for _ in 0..200 {
        let _ = provider.force_flush();
        spans = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|span| attribute(span, "rpc.service") == queue)
            .collect();
        if spans.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let find = |kind: SpanKind, method: &str| {
        spans
            .iter()
            .find(|s| s.span_kind == kind && attribute(s, "rpc.method") == method)
            .unwrap_or_else(|| panic!("no {kind:?} span of {method} in {spans:#?}"))
    };
    let call = find(SpanKind::Client, "relay");
    let serve = find(SpanKind::Server, "relay");
    let nested_call = find(SpanKind::Client, "add");
    let nested_serve = find(SpanKind::Server, "add");

    let trace = call.span_context.trace_id();
    for span in [serve, nested_call, nested_serve] {
        assert_eq!(span.span_context.trace_id(), trace, "{span:#?}");
    }
    assert_eq!(call.parent_span_id, SpanId::INVALID);
    assert_eq!(serve.parent_span_id, call.span_context.span_id());
    assert_eq!(nested_call.parent_span_id, serve.span_context.span_id());
    assert_eq!(
        nested_serve.parent_span_id,
        nested_call.span_context.span_id()
    );
    // The span's name is the conventions' `service/method`, and the IDs in the log
    // fields are OpenTelemetry's.
    assert_eq!(serve.name, format!("{queue}/relay"));
    assert_eq!(attribute(serve, "trace_id"), trace.to_string());
    assert_eq!(
        attribute(serve, "span_id"),
        serve.span_context.span_id().to_string()
    );
    assert_eq!(attribute(serve, "messaging.system"), "rabbitmq");
    assert_eq!(attribute(serve, "guirpc.outcome"), "ok");
    server.shutdown().await.unwrap();
}
