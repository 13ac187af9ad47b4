//! Spans, and the W3C Trace Context carried across the broker.
//!
//! Every served call runs inside a `guirpc.serve` span, and every client call inside a
//! `guirpc.call` span, with the fields OpenTelemetry's semantic conventions for RPC and
//! messaging name (`docs/OBSERVABILITY.md` lists them). Log lines written inside carry
//! them, the call's `trace_id` and `span_id` among them.
//!
//! A client sends its call's trace context in the `traceparent` (and `tracestate`)
//! headers; the server continues that trace: its span is a child of the caller's, and the
//! calls its handler makes in turn are children of the server's. Without the `otel`
//! feature the context is guirpc's own (random IDs, carried in a task-local); with it,
//! and a tracing-opentelemetry layer installed, it is OpenTelemetry's.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::time::Instant;

use lapin::types::ShortString;
use tracing::{Instrument, Span, field};

#[cfg(feature = "otel")]
pub mod otel;

use crate::error::Error;
use crate::middleware::{
    BoxFuture, ClientRequest, ClientResponse, ClientService, Layer, OwnService, Reply,
    ServerRequest, ServerService, client_outcome, service_of_own,
};

/// The trace context headers, named where every wire name is ([`crate::protocol`]).
pub use crate::protocol::{HEADER_TRACEPARENT, HEADER_TRACESTATE};

/// The longest `tracestate` passed on (the W3C limit is 32 members; 512 bytes is the size
/// every implementation must propagate).
const MAX_TRACESTATE: usize = 512;

/// A position in a distributed trace: the trace, and the span within it.
#[derive(Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, 16 bytes, never all zero.
    pub trace_id: u128,
    /// The span, 8 bytes, never all zero.
    pub span_id: u64,
    /// The W3C trace flags (bit 0: sampled).
    pub flags: u8,
    /// The `tracestate` header, passed on unchanged.
    pub state: Option<String>,
}

tokio::task_local! {
    static CURRENT: Option<TraceContext>;
}

thread_local! {
    /// The context of a blocking function's call, on the thread that runs it.
    static BLOCKING: std::cell::RefCell<Option<TraceContext>> = const { std::cell::RefCell::new(None) };
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn root() -> TraceContext {
        TraceContext {
            trace_id: nonzero(|| fastrand::u128(..)),
            span_id: nonzero(|| fastrand::u64(..)),
            flags: 1,
            state: None,
        }
    }

    /// A new span in this trace.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            span_id: nonzero(|| fastrand::u64(..)),
            ..self.clone()
        }
    }

    /// Reads a `traceparent` header: `00-<32 hex>-<16 hex>-<2 hex>`. A later version is
    /// read by its first four fields, as the specification asks; malformed values, the
    /// version `ff` and all-zero IDs are refused.
    pub fn parse(traceparent: &str) -> Option<TraceContext> {
        let value = traceparent.trim();
        let bytes = value.as_bytes();
        if bytes.len() < 55 || !bytes[..55].is_ascii() {
            return None;
        }
        let (version, trace, span, flags) =
            (&value[0..2], &value[3..35], &value[36..52], &value[53..55]);
        if [bytes[2], bytes[35], bytes[52]] != [b'-'; 3] {
            return None;
        }
        let version = lower_hex(version).and_then(|v| u8::try_from(v).ok())?;
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if version > 0 && bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        let trace_id = lower_hex(trace)?;
        let span_id = u64::try_from(lower_hex(span)?).ok()?;
        let flags = u8::try_from(lower_hex(flags)?).ok()?;
        (trace_id != 0 && span_id != 0).then_some(TraceContext {
            trace_id,
            span_id,
            flags,
            state: None,
        })
    }

    /// The `traceparent` header of this context.
    pub fn traceparent(&self) -> String {
        format!(
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }

    /// The context of the call being served by this task (or blocking function), if any:
    /// the parent of the calls it makes.
    pub fn current() -> Option<TraceContext> {
        match CURRENT.try_with(Option::clone) {
            Ok(current) => current,
            Err(_) => BLOCKING.with(|current| current.borrow().clone()),
        }
    }

    /// Runs `future` with this context as the current one.
    pub async fn scope<F: Future>(self, future: F) -> F::Output {
        CURRENT.scope(Some(self), future).await
    }

    /// Runs `f` with `context` as the current one on this thread (for blocking functions).
    pub(crate) fn in_blocking<R>(context: Option<TraceContext>, f: impl FnOnce() -> R) -> R {
        /// Puts the previous context back however `f` ends, a panic included.
        struct Restore(Option<TraceContext>);
        impl Drop for Restore {
            fn drop(&mut self) {
                BLOCKING.with(|current| *current.borrow_mut() = self.0.take());
            }
        }
        let _restore = Restore(BLOCKING.with(|current| current.replace(context)));
        f()
    }

    fn from_headers(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<TraceContext> {
        let mut context = TraceContext::parse(traceparent?)?;
        context.state = tracestate
            .map(str::trim)
            .filter(|state| !state.is_empty() && state.len() <= MAX_TRACESTATE)
            .map(str::to_owned);
        Some(context)
    }
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.traceparent())
    }
}

fn nonzero<T: PartialEq + Default>(mut random: impl FnMut() -> T) -> T {
    loop {
        let value = random();
        if value != T::default() {
            return value;
        }
    }
}

/// Lowercase hex digits only, as the specification requires.
fn lower_hex(digits: &str) -> Option<u128> {
    digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        .then(|| u128::from_str_radix(digits, 16).ok())
        .flatten()
}

/// Shows a trace or span ID as hex, formatted only if a subscriber records it.
struct Hex<T>(T, usize);

impl<T: fmt::LowerHex> fmt::Display for Hex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:0width$x}", self.0, width = self.1)
    }
}

/// A call's span: its name, OpenTelemetry kind and messaging operation, queue, function,
/// trace context, parent, and (on a server) the request's correlation ID and redelivery.
/// Every field is given at creation, which a log subscriber formats once; with the `otel`
/// feature the IDs are recorded after, once OpenTelemetry's are known, and the span is
/// named for OpenTelemetry.
macro_rules! call_span {
    ($name:literal, $kind:literal, $operation:literal, $queue:expr, $function:expr, $context:expr, $parent:expr, $conversation:expr, $redelivered:expr, $caller:expr) => {{
        let caller: Option<&crate::Caller> = $caller;
        let (queue, function): (&str, &str) = ($queue, $function);
        let parent: Option<&TraceContext> = $parent;
        let ids: Option<&TraceContext> = if cfg!(feature = "otel") { None } else { Some($context) };
        let (conversation, redelivered): (Option<&str>, Option<bool>) = ($conversation, $redelivered);
        let span = tracing::info_span!(
            $name,
            otel.name = field::Empty,
            otel.kind = $kind,
            otel.status_code = field::Empty,
            rpc.system = "guirpc",
            rpc.service = queue,
            rpc.method = function,
            messaging.system = "rabbitmq",
            messaging.operation.type = $operation,
            messaging.destination.name = queue,
            messaging.message.conversation_id = conversation,
            messaging.rabbitmq.redelivered = redelivered,
            enduser.id = caller.map(field::display),
            guirpc.outcome = field::Empty,
            error.type = field::Empty,
            guirpc.duration_ms = field::Empty,
            trace_id = ids.map(|c| field::display(Hex(c.trace_id, 32))),
            span_id = ids.map(|c| field::display(Hex(c.span_id, 16))),
            parent_span_id = parent.map(|p| field::display(Hex(p.span_id, 16))),
        );
        if cfg!(feature = "otel") && !span.is_disabled() {
            span.record("otel.name", format!("{queue}/{function}").as_str());
        }
        span
    }};
}

/// The server's tracing layer: a `guirpc.serve` span around each call, continuing the
/// caller's trace.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTraceLayer;

impl Layer<ServerService> for ServerTraceLayer {
    type Service = ServerTrace;

    fn layer(&self, inner: ServerService) -> ServerTrace {
        ServerTrace { inner }
    }
}

/// The service [`ServerTraceLayer`] makes.
#[derive(Clone, Debug)]
pub struct ServerTrace {
    inner: ServerService,
}

service_of_own!(ServerTrace, ServerRequest, Reply, Infallible);

impl OwnService<ServerRequest, Reply, Infallible> for ServerTrace {
    fn call(&self, request: ServerRequest) -> BoxFuture<Result<Reply, Infallible>> {
        let parent = TraceContext::from_headers(
            request.header(HEADER_TRACEPARENT).as_deref(),
            request.header(HEADER_TRACESTATE).as_deref(),
        );
        let context = parent
            .as_ref()
            .map_or_else(TraceContext::root, TraceContext::child);
        let span = call_span!(
            "guirpc.serve",
            "server",
            "process",
            &request.queue,
            &request.function,
            &context,
            parent.as_ref(),
            request.correlation_id.as_ref().map(ShortString::as_str),
            Some(request.redelivered),
            Some(&request.caller)
        );
        #[cfg(feature = "otel")]
        let context = {
            let context = otel::continue_trace(&span, &request.headers).unwrap_or(context);
            record_ids(&span, &context);
            context
        };
        // The handler's calls continue this trace when there is one: the caller sent it,
        // or this call is recorded.
        let current = (parent.is_some() || !span.is_disabled()).then_some(context);
        let future = self.inner.call_once(request);
        let started = Instant::now();
        Box::pin(
            async move {
                let reply = CURRENT.scope(current, future).await;
                if let Ok(reply) = &reply {
                    finish(&Span::current(), reply.outcome(), started);
                }
                reply
            }
            .instrument(span),
        )
    }
}

/// The client's tracing layer: a `guirpc.call` span around each call, whose context
/// travels with the request.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientTraceLayer;

impl Layer<ClientService> for ClientTraceLayer {
    type Service = ClientTrace;

    fn layer(&self, inner: ClientService) -> ClientTrace {
        ClientTrace { inner }
    }
}

/// The service [`ClientTraceLayer`] makes.
#[derive(Clone, Debug)]
pub struct ClientTrace {
    inner: ClientService,
}

service_of_own!(ClientTrace, ClientRequest, ClientResponse, Error);

impl OwnService<ClientRequest, ClientResponse, Error> for ClientTrace {
    fn call(&self, mut request: ClientRequest) -> BoxFuture<Result<ClientResponse, Error>> {
        let parent = TraceContext::current();
        let context = parent
            .as_ref()
            .map_or_else(TraceContext::root, TraceContext::child);
        let span = call_span!(
            "guirpc.call",
            "client",
            "send",
            request.queue.as_str(),
            &request.function,
            &context,
            parent.as_ref(),
            None,
            None,
            None
        );
        #[cfg(feature = "otel")]
        let context = {
            let context = otel::context_of(&span).unwrap_or(context);
            record_ids(&span, &context);
            context
        };
        // The context travels when there is a trace to continue: this call is recorded,
        // or it is made while serving a call that is part of one. A call no one records
        // starts no trace, and its request carries no header for the broker to parse.
        if parent.is_some() || !span.is_disabled() {
            request.set_header(HEADER_TRACEPARENT, context.traceparent());
            if let Some(state) = &context.state {
                request.set_header(HEADER_TRACESTATE, state.as_str());
            }
        }
        let future = self.inner.call_once(request);
        let started = Instant::now();
        Box::pin(
            async move {
                let result = future.await;
                finish(&Span::current(), client_outcome(&result).as_ref(), started);
                result
            }
            .instrument(span),
        )
    }
}

/// Records the call's trace and span IDs in its span's fields.
#[cfg(feature = "otel")]
fn record_ids(span: &Span, context: &TraceContext) {
    span.record("trace_id", field::display(Hex(context.trace_id, 32)));
    span.record("span_id", field::display(Hex(context.span_id, 16)));
}

/// Records a call's outcome and duration on its span.
fn finish(span: &Span, outcome: &str, started: Instant) {
    if span.is_disabled() {
        return;
    }
    span.record("guirpc.outcome", outcome);
    span.record(
        "guirpc.duration_ms",
        started.elapsed().as_secs_f64() * 1000.0,
    );
    if outcome != crate::middleware::OUTCOME_OK {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_malformed_values_are_refused() {
        let context = TraceContext::root();
        assert_eq!(
            TraceContext::parse(&context.traceparent()).as_ref(),
            Some(&context)
        );
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = TraceContext::parse(valid).unwrap();
        assert_eq!(parsed.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(parsed.span_id, 0x00f067aa0ba902b7);
        assert_eq!(parsed.flags, 1);
        // A later version may append fields.
        assert!(
            TraceContext::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz")
                .is_some()
        );
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736+00f067aa0ba902b7-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473é-00f067aa0ba902b7-0",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(invalid), None, "{invalid}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let root = TraceContext::root();
        let child = root.child();
        assert_eq!(child.trace_id, root.trace_id);
        assert_ne!(child.span_id, root.span_id);
        assert_ne!(TraceContext::root().trace_id, root.trace_id);
    }
}
