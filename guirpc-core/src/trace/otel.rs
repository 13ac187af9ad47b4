//! OpenTelemetry (the `otel` feature): guirpc's spans carry OpenTelemetry's trace context,
//! and an OTLP/HTTP exporter sends them to a collector.
//!
//! With a `tracing-opentelemetry` layer installed (by [`Provider::layer`], or by the
//! program), a server's `guirpc.serve` span continues the caller's trace from the
//! request's `traceparent`, and a client's `guirpc.call` span sends its own context on,
//! so one trace runs from a caller across the broker into the handler and the calls the
//! handler makes. Without such a layer, guirpc's own trace context is used, as in a build
//! without the feature.

use lapin::types::{AMQPValue, FieldTable};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::TraceContext;

/// Makes the caller's trace context, read from the request headers, the parent of a
/// server's span; returns the span's context (OpenTelemetry's IDs), or `None` when no
/// OpenTelemetry layer records the span.
pub(crate) fn continue_trace(span: &Span, headers: &FieldTable) -> Option<TraceContext> {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer records the span: then there is no
        // OpenTelemetry context to continue, and guirpc's own is used.
        let _ = span.set_parent(parent);
    }
    context_of(span)
}

/// A span's OpenTelemetry context, as guirpc's trace context; `None` when no
/// OpenTelemetry layer records the span.
pub(crate) fn context_of(span: &Span) -> Option<TraceContext> {
    if span.is_disabled() {
        return None;
    }
    let context: Context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return None;
    }
    let state = span_context.trace_state().header();
    Some(TraceContext {
        trace_id: u128::from_be_bytes(span_context.trace_id().to_bytes()),
        span_id: u64::from_be_bytes(span_context.span_id().to_bytes()),
        flags: span_context.trace_flags().to_u8(),
        state: (!state.is_empty()).then_some(state),
    })
}

/// Reads request headers for the propagator.
struct Headers<'a>(&'a FieldTable);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            AMQPValue::ByteArray(b) => std::str::from_utf8(b.as_slice()).ok(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|key| key.as_str()).collect()
    }
}

/// Spans exported over OTLP/HTTP (protobuf), in batches from a thread of their own.
#[derive(Debug, Clone)]
pub struct Provider {
    provider: SdkTracerProvider,
}

impl Provider {
    /// An exporter to the collector at `endpoint` (`http://collector:4318`; the
    /// `/v1/traces` path is added unless given), naming the service `service`.
    pub fn otlp(
        endpoint: &str,
        service: &str,
    ) -> Result<Provider, Box<dyn std::error::Error + Send + Sync>> {
        let endpoint = endpoint.trim_end_matches('/');
        let endpoint = if endpoint.ends_with("/v1/traces") {
            endpoint.to_owned()
        } else {
            format!("{endpoint}/v1/traces")
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()?;
        Ok(Provider::new(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    Resource::builder()
                        .with_service_name(service.to_owned())
                        .build(),
                )
                .build(),
        ))
    }

    /// Wraps a tracer provider built otherwise (an in-memory exporter in tests, say).
    pub fn new(provider: SdkTracerProvider) -> Provider {
        Provider { provider }
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans.
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("guirpc"))
            .with_threads(false)
    }

    /// Sends the spans not yet sent, and stops.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            tracing::warn!("exporting the last spans: {err}");
        }
    }
}
