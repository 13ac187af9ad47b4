//! The server's per-request pipeline: the layers (tracing, metrics, the user's) around the
//! dispatcher, which finds and runs the function. Every failure becomes an error reply.
//! The same pipeline serves requests from the broker and from the in-memory transport of
//! [`crate::testing`].

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use futures_lite::FutureExt;
use tracing::{debug, error, warn};

use crate::codec::Codec;
use crate::metrics::{Metrics, ServerMetricsLayer};
use crate::middleware::{
    BoxFuture, Layer, Layers, OwnService, Reply, ServerRequest, ServerService,
};
use crate::protocol::{
    self, Description, ErrorCode, FunctionDescription, ParamDescription, Pong,
    SubscriptionDescription,
};
use crate::registry::{Invocation, Registry, Subscriber};
use crate::trace::ServerTraceLayer;

/// What the dispatcher needs to answer: the functions, and what pings report.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    pub queue: Arc<str>,
    pub registry: Registry,
    pub max_message_size: usize,
    /// The longest run of a function that states none.
    pub max_run: std::time::Duration,
    pub concurrency: usize,
    pub instance: String,
    pub started: Instant,
    /// Calls running now (pings report it).
    pub in_flight: AtomicUsize,
    /// The `#[subscribe]` functions served.
    pub subscribers: Vec<&'static Subscriber>,
    /// The service's retry policy of casts and events.
    pub retry: crate::retry::RetryPolicy,
    /// Who may call what.
    pub permissions: crate::access::Permissions,
    /// The exchanges of requests and of events, which descriptions name.
    pub exchange: String,
    pub events_exchange: String,
    /// What `guirpc.describe` answers, made at its first call (the schemas take some
    /// work; nothing in it changes while the server runs).
    pub description: std::sync::OnceLock<Description>,
}

impl Dispatcher {
    /// The retry policy of a function or subscriber stating `options`: the service's,
    /// with those in place.
    pub(crate) fn retry_policy(
        &self,
        options: Option<&crate::retry::RetryOverride>,
    ) -> crate::retry::RetryPolicy {
        options.map_or(self.retry, |options| self.retry.overridden(options))
    }
}

/// Builds the pipeline: tracing outermost, then metrics (when on), then the user's layers
/// in the order added (a panic in any of them caught there, so that spans and metrics see
/// the call's `internal` outcome), then the dispatcher.
pub(crate) fn build(
    dispatcher: Arc<Dispatcher>,
    layers: &Layers<ServerService>,
    metrics: Option<&Metrics>,
    dead_letter: bool,
) -> ServerService {
    let users = layers.wrap(ServerService::own(Dispatch(dispatcher.clone())));
    let mut service = ServerService::own(CatchPanic(users));
    if let Some(metrics) = metrics {
        let mut functions: Vec<String> = dispatcher
            .registry
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        functions.extend(dispatcher.subscribers.iter().map(|s| s.name().to_owned()));
        functions.push(protocol::FUNCTION_DESCRIBE.to_owned());
        functions.push(protocol::FUNCTION_PING.to_owned());
        let layer =
            ServerMetricsLayer::new(metrics.server(), &dispatcher.queue, functions, dead_letter);
        service = ServerService::own(layer.layer(service));
    }
    ServerService::own(ServerTraceLayer.layer(service))
}

/// Runs a request through the pipeline. Whatever panics costs the request an `internal`
/// error reply, never the server.
pub(crate) async fn run(service: &ServerService, request: ServerRequest) -> Reply {
    let codec = request.codec;
    call_caught(service, request)
        .await
        .unwrap_or_else(|panic| layer_panicked(codec, "a request", panic.as_ref()))
}

/// Calls `service` once; a panic while it makes its future, or while that runs, is the
/// outcome instead of a reply.
fn call_caught(
    service: &ServerService,
    request: ServerRequest,
) -> impl Future<Output = Result<Reply, Box<dyn Any + Send>>> + Send + 'static {
    let called = std::panic::catch_unwind(AssertUnwindSafe(|| service.call_once(request)));
    async move {
        match AssertUnwindSafe(called?).catch_unwind().await? {
            Ok(reply) => Ok(reply),
            Err(never) => match never {},
        }
    }
}

/// Catches a panic of the user's layers (or of the dispatcher) as an `internal` reply.
struct CatchPanic(ServerService);

impl OwnService<ServerRequest, Reply, Infallible> for CatchPanic {
    fn call(&self, request: ServerRequest) -> BoxFuture<Result<Reply, Infallible>> {
        let (codec, function) = (request.codec, request.function.clone());
        let reply = call_caught(&self.0, request);
        Box::pin(async move {
            Ok(reply.await.unwrap_or_else(|panic| {
                layer_panicked(codec, &format!("`{function}`"), panic.as_ref())
            }))
        })
    }
}

fn layer_panicked(codec: Codec, what: &str, panic: &(dyn Any + Send)) -> Reply {
    let why = panic_message(panic);
    error!("a middleware layer panicked serving {what}: {why}");
    Reply::refusal(
        codec,
        ErrorCode::Internal,
        &format!("the server failed serving {what}: {why}"),
    )
}

/// The innermost service: finds and runs the function.
struct Dispatch(Arc<Dispatcher>);

impl OwnService<ServerRequest, Reply, Infallible> for Dispatch {
    fn call(&self, request: ServerRequest) -> BoxFuture<Result<Reply, Infallible>> {
        let dispatcher = self.0.clone();
        Box::pin(async move {
            dispatcher.in_flight.fetch_add(1, Ordering::Relaxed);
            let _running = InFlight(&dispatcher.in_flight);
            Ok(dispatch(&dispatcher, request).await)
        })
    }
}

/// Counts a call as running until dropped.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn dispatch(dispatcher: &Dispatcher, request: ServerRequest) -> Reply {
    let ServerRequest {
        function,
        codec,
        body,
        deadline,
        unreadable,
        legacy,
        subscriber,
        items,
        caller,
        ..
    } = request;
    let rejected = |codec: Codec, code: ErrorCode, message: &str| {
        warn!(function, "rejected a request ({code}): {message}");
        Reply::refusal(codec, code, message)
    };
    // Every message names the function, when the request does; built only for a refusal.
    let call = || match function.as_str() {
        "" => "the request".to_owned(),
        name => format!("the call to `{name}`"),
    };
    if let Some(unsupported) = unreadable {
        let message = format!("{} has {unsupported}", call());
        return rejected(Codec::Json, ErrorCode::BadRequest, &message);
    }
    // Checked before anything is decoded.
    let limit = dispatcher.max_message_size;
    if body.len() > limit {
        let message = format!(
            "the body of {} is {} bytes, over the maximum of {limit} bytes",
            call(),
            body.len()
        );
        return rejected(codec, ErrorCode::TooLarge, &message);
    }
    // A guirpc 0.1 body: base64 of its serializer's text, read into JSON arguments.
    let body = match &legacy {
        Some(form) => match form.arguments(&body) {
            Ok(arguments) => arguments,
            Err(why) => {
                let message = format!("{} has {why}", call());
                return rejected(Codec::Json, ErrorCode::BadRequest, &message);
            }
        },
        None => body,
    };
    // Who called may not: refused before anything runs (or is decoded).
    let allowed = |name: &str| {
        dispatcher
            .permissions
            .check(name, &caller)
            .map_err(|(code, message)| {
                warn!(function = name, caller = %caller, "refused a call ({code}): {message}");
                Reply::error(codec, code, &message)
            })
    };
    if let Some(subscriber) = subscriber {
        if let Err(refused) = allowed(subscriber.name()) {
            return refused;
        }
        let future = (subscriber.handler())(Invocation {
            codec,
            body: body.into(),
            deadline: None,
            items: None,
        });
        let future = caller.scope(AssertUnwindSafe(future).catch_unwind());
        return match future.await {
            Ok(reply) => reply,
            Err(panic) => {
                let what = panic_message(panic.as_ref());
                error!(
                    subscriber = subscriber.name(),
                    "event handler panicked: {what}"
                );
                Reply::error(
                    codec,
                    ErrorCode::Internal,
                    &format!("`{}` panicked: {what}", subscriber.name()),
                )
            }
        };
    }
    if function.is_empty() {
        let message = format!(
            "the request names no function (in its `type`, or a `{}` header)",
            protocol::HEADER_FUNCTION
        );
        return rejected(codec, ErrorCode::BadRequest, &message);
    }
    let name = function.as_str();
    if name.starts_with(protocol::RESERVED_PREFIX) {
        if let Err(refused) = allowed(name) {
            return refused;
        }
        return match builtin(dispatcher, name, codec, &body) {
            Ok(reply) => reply,
            Err((code, message)) => rejected(codec, code, &message),
        };
    }
    let Some(registered) = dispatcher.registry.get(name) else {
        let message = format!(
            "no function `{name}` is served on queue `{}`",
            dispatcher.queue
        );
        return rejected(codec, ErrorCode::NotFound, &message);
    };
    if let Err(refused) = allowed(name) {
        return refused;
    }
    if deadline.is_some_and(|deadline| SystemTime::now() > deadline) {
        let message = format!("the deadline of this call to `{name}` passed before it could start");
        debug!("{message}");
        return Reply::error(codec, ErrorCode::DeadlineExceeded, &message);
    }
    let items = items.map(|mut sink| {
        sink.deadline = deadline;
        sink
    });
    let future = registered.invoke(Invocation {
        codec,
        body: body.into(),
        deadline,
        items,
    });
    let max_run = registered.max_run().unwrap_or(dispatcher.max_run);
    let run = tokio::time::timeout(
        max_run,
        caller.scope(AssertUnwindSafe(future).catch_unwind()),
    );
    let Ok(ran) = run.await else {
        let message = format!(
            "`{name}` ran longer than its max_run of {} and was cancelled",
            crate::duration::format_duration(max_run)
        );
        warn!(function = name, "{message}");
        return Reply::error(codec, ErrorCode::MaxRunExceeded, &message);
    };
    match ran {
        Ok(reply) => reply,
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            error!(function = name, "handler panicked: {what}");
            Reply::refusal(
                codec,
                ErrorCode::Internal,
                &format!("`{name}` panicked: {what}"),
            )
        }
    }
}

/// The functions every server answers from its own state. They take no arguments:
/// `{}`, `[]` or `null`, as any function without parameters.
fn builtin(
    dispatcher: &Dispatcher,
    name: &str,
    codec: Codec,
    body: &[u8],
) -> Result<Reply, (ErrorCode, String)> {
    if !matches!(name, protocol::FUNCTION_DESCRIBE | protocol::FUNCTION_PING) {
        let message =
            format!("no built-in function `{name}` (names starting with `guirpc.` are reserved)");
        return Err((ErrorCode::NotFound, message));
    }
    let no_arguments = match codec.decode::<serde_json::Value>(body) {
        Ok(serde_json::Value::Null) => true,
        Ok(serde_json::Value::Object(map)) => map.is_empty(),
        Ok(serde_json::Value::Array(items)) => items.is_empty(),
        _ => false,
    };
    if !no_arguments {
        let message =
            format!("invalid arguments for `{name}`: it takes none (`{{}}`, `[]` or `null`)");
        return Err((ErrorCode::BadRequest, message));
    }
    Ok(if name == protocol::FUNCTION_DESCRIBE {
        Reply::value(codec, description(dispatcher))
    } else {
        Reply::value(
            codec,
            &Pong {
                instance: dispatcher.instance.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                queue: dispatcher.queue.to_string(),
                uptime_ms: u64::try_from(dispatcher.started.elapsed().as_millis())
                    .unwrap_or(u64::MAX),
                // This ping is one of the calls running.
                in_flight: dispatcher
                    .in_flight
                    .load(Ordering::Relaxed)
                    .saturating_sub(1),
                concurrency: dispatcher.concurrency,
                functions: dispatcher.registry.len(),
            },
        )
    })
}

/// What `guirpc.describe` answers, made once.
pub(crate) fn description(dispatcher: &Dispatcher) -> &Description {
    dispatcher.description.get_or_init(|| describe(dispatcher))
}

/// The service as `guirpc.describe` tells it: its functions and subscribers with their
/// types' schemas, retry policies and the exchanges it is reached through.
pub(crate) fn describe(dispatcher: &Dispatcher) -> Description {
    let retry = |options| dispatcher.retry_policy(options);
    Description {
        queue: dispatcher.queue.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        functions: dispatcher
            .registry
            .iter()
            .map(|f| FunctionDescription {
                name: f.name().to_owned(),
                doc: f.doc().to_owned(),
                params: f
                    .params()
                    .iter()
                    .map(|p| ParamDescription {
                        name: p.name.to_owned(),
                        ty: p.ty.to_owned(),
                    })
                    .collect(),
                returns: f.returns().to_owned(),
                blocking: f.is_blocking(),
                streams: f.streams(),
                retry: Some(retry(f.retry()).into()),
                schema: Some(f.schema()),
            })
            .collect(),
        subscriptions: dispatcher
            .subscribers
            .iter()
            .map(|s| SubscriptionDescription {
                name: s.name().to_owned(),
                pattern: s.pattern().to_owned(),
                broadcast: s.is_broadcast(),
                summary: s.summary().to_owned(),
                retry: Some(retry(s.retry()).into()),
                schema: s.schema(),
            })
            .collect(),
        exchange: Some(dispatcher.exchange.clone()),
        events_exchange: Some(dispatcher.events_exchange.clone()),
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "a non-string panic payload"
    }
}
