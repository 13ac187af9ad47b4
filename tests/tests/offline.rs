//! Tests without a broker: the in-memory transport of `guirpc_core::testing`, with every
//! broker URI pointing at a closed port, so that nothing here can reach RabbitMQ.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use guirpc_core::middleware::{ClientRequest, ClientService, Reply, ServerRequest, ServerService};
use guirpc_core::{Client, Error, ErrorCode, Metrics, Server, testing};
use guirpc_tests::{DivError, Point, api, sample};
use tower::ServiceExt;
use tower::layer::layer_fn;
use tower::service_fn;

/// A port nothing listens on.
fn closed_port_uri() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
}

/// A broker URI where no broker is, proved by a refused connection.
async fn no_broker() -> String {
    let uri = closed_port_uri();
    let refused = tokio::time::timeout(Duration::from_secs(10), Client::connect(&uri))
        .await
        .expect("a closed port refuses at once");
    assert!(
        matches!(refused, Err(Error::Connection { .. })),
        "{refused:?}"
    );
    uri
}

/// An in-memory client of this program's functions, its server and client both given
/// the broker-less URI.
async fn offline_client() -> Client {
    let uri = no_broker().await;
    Server::builder()
        .uri(&uri)
        .in_memory()
        .unwrap()
        .client_with(Client::builder().uri(&uri))
}

#[tokio::test]
async fn the_program_s_functions_are_called_as_over_the_broker() {
    // The one-line form a user writes; it never connects anywhere.
    let client = testing::client();
    assert_eq!(api::add::call(&client, 1, 2).await.unwrap(), 3);
    let client = offline_client().await;
    assert!(client.is_connected());
    assert_eq!(api::add::call(&client, 1, 2).await.unwrap(), 3);
    // Typed errors, by stub and by name.
    assert_eq!(
        api::checked_div::call(&client, 7, 0)
            .await
            .unwrap_err()
            .to_string(),
        Error::<DivError>::Handler {
            function: "checked_div".into(),
            error: DivError::ByZero(7)
        }
        .to_string()
    );
    let remote = client.call::<i64>("checked_div", (7, 0)).await.unwrap_err();
    assert_eq!(remote.code(), Some(ErrorCode::HandlerError));
    // Through both codecs, structs included.
    for codec in [guirpc_core::Codec::Json, guirpc_core::Codec::MsgPack] {
        let moved: Point = client
            .with_codec(codec)
            .call(
                "shift",
                serde_json::json!({"point": {"x": 1.0, "y": 2.0}, "by": {"By": {"dx": 1.0, "dy": 1.0}}}),
            )
            .await
            .unwrap();
        assert_eq!(moved, Point { x: 2.0, y: 3.0 });
    }
    // Plain functions run on the blocking pool, as served.
    let joined: String = client
        .call("text.join", (vec!["a", "b"], "-"))
        .await
        .unwrap();
    assert_eq!(joined, "a-b");
    // A cast is taken at once and run in the background.
    let token = format!("offline-cast-{}", std::process::id());
    guirpc_tests::record::cast(&client, token.clone())
        .await
        .unwrap();
    assert!(guirpc_tests::wait_recorded(&token, 1, Duration::from_secs(5)).await);
    // A scheduled one when its time comes; one too far out is refused, as by a broker.
    let later = format!("offline-later-{}", std::process::id());
    let asked = std::time::Instant::now();
    guirpc_tests::record::cast_after(&client, Duration::from_millis(300), later.clone())
        .await
        .unwrap();
    assert!(guirpc_tests::wait_recorded(&later, 1, Duration::from_secs(5)).await);
    assert!(asked.elapsed() >= Duration::from_millis(300));
    let too_far = guirpc_core::delay::MAX_DELAY + Duration::from_secs(1);
    let refused = guirpc_tests::record::cast_after(&client, too_far, "never".into()).await;
    assert!(
        matches!(refused, Err(guirpc_core::Error::Config(_))),
        "{refused:?}"
    );
    // The built-ins answer.
    let description = client.describe().await.unwrap();
    assert!(description.functions.iter().any(|f| f.name == "add"));
    assert_eq!(client.ping().await.unwrap().queue, client.queue());
}

#[tokio::test]
async fn errors_timeouts_and_panics_arrive_as_they_would_from_rabbitmq() {
    let client = offline_client().await;
    let missing = api::missing::call(&client).await.unwrap_err();
    assert_eq!(missing.code(), Some(ErrorCode::NotFound));
    assert!(
        missing.to_string().contains("missing.function"),
        "{missing}"
    );
    let bad = client.call::<i64>("add", ("one", 2)).await.unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::BadRequest), "{bad}");
    let panicked = client.call::<u8>("explode", ("boom",)).await.unwrap_err();
    assert_eq!(panicked.code(), Some(ErrorCode::Internal));
    assert!(panicked.to_string().contains("boom"), "{panicked}");
    let slow = client.with_timeout(Duration::from_millis(50));
    let timed_out = slow.call::<u64>("nap", (5_000u64,)).await.unwrap_err();
    assert!(matches!(timed_out, Error::Timeout { .. }), "{timed_out}");
    // An idempotent function is sent again after a timeout, as the retry policy says:
    // three attempts of 200 ms each.
    let patient = client
        .with_timeout(Duration::from_millis(200))
        .with_retries(2);
    let started = std::time::Instant::now();
    let err = guirpc_tests::slow_square::call(&patient, 4, 2_000)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        guirpc_tests::slow_square::call(&patient, 4, 10)
            .await
            .unwrap(),
        16
    );
    // Another queue has no server in this process.
    let elsewhere = client.with_queue("nobody-serves-this");
    let no_route = api::add::call(&elsewhere, 1, 1).await.unwrap_err();
    assert!(matches!(no_route, Error::NoRoute { .. }), "{no_route}");
}

#[tokio::test]
async fn server_and_client_layers_and_metrics_run_around_in_memory_calls() {
    let uri = no_broker().await;
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = log.clone();
    let server_layer = layer_fn(move |inner: ServerService| {
        let seen = seen.clone();
        service_fn(move |request: ServerRequest| {
            let (inner, seen) = (inner.clone(), seen.clone());
            async move {
                let key = request.header("x-tenant").map(|t| t.into_owned());
                // No subscriber records spans in this program: its calls start no trace.
                assert!(request.header("traceparent").is_none());
                seen.lock().unwrap().push(format!("server saw {key:?}"));
                if key.is_none() {
                    let refusal = Reply::error(
                        request.codec,
                        ErrorCode::parse("unauthorized"),
                        "who are you?",
                    );
                    return Ok::<_, Infallible>(refusal);
                }
                inner.oneshot(request).await
            }
        })
    });
    let metrics = Metrics::new();
    let server = Server::builder()
        .uri(&uri)
        .queue("tenants")
        .metrics(&metrics)
        .layer(server_layer)
        .in_memory()
        .unwrap();
    let tenant = layer_fn(|inner: ClientService| {
        service_fn(move |mut request: ClientRequest| {
            request.set_header("x-tenant", "acme");
            inner.clone().oneshot(request)
        })
    });
    let with_tenant =
        server.client_with(Client::builder().uri(&uri).layer(tenant).metrics(&metrics));
    let anonymous = server.client();
    assert_eq!(api::add::call(&with_tenant, 2, 2).await.unwrap(), 4);
    let refused = api::add::call(&anonymous, 2, 2).await.unwrap_err();
    assert_eq!(refused.code().unwrap().as_str(), "unauthorized");
    assert_eq!(
        *log.lock().unwrap(),
        ["server saw Some(\"acme\")", "server saw None"]
    );
    let text = metrics.encode();
    let calls = |code: &str| {
        sample(
            &text,
            &format!(
                "guirpc_server_calls_total{{queue=\"tenants\",function=\"add\",code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(calls("ok"), Some(1.0), "{text}");
    assert_eq!(calls("unauthorized"), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            "guirpc_client_calls_total{queue=\"tenants\",function=\"add\",code=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_run_in_memory_with_the_same_flow_control_errors_and_cancellation() {
    use futures_lite::StreamExt;
    use guirpc_tests::{count_up, lines, progress_of};
    let client = offline_client().await;
    let items: Vec<u64> = count_up::call(&client, "memory".into(), 100, 0)
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(items, (0..100).collect::<Vec<_>>());
    let mut failing = lines::call(&client, 5, Some(1));
    assert_eq!(failing.next().await.unwrap().unwrap(), "line 0");
    assert!(matches!(
        failing.next().await,
        Some(Err(Error::Handler {
            error: DivError::ByZero(1),
            ..
        }))
    ));
    assert!(failing.next().await.is_none());
    // A slow caller holds the function to the window; dropping the stream cancels it.
    let mut slow = count_up::call(&client, "memory-slow".into(), 1_000_000, 0);
    assert_eq!(slow.next().await.unwrap().unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let window = u64::from(guirpc_core::stream::DEFAULT_WINDOW);
    assert!(progress_of("memory-slow").produced <= window + 4);
    drop(slow);
    let mut waited = 0;
    while !progress_of("memory-slow").dropped && waited < 100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += 1;
    }
    assert!(progress_of("memory-slow").dropped);
    // Its deadline bounds it.
    let mut timed = count_up::call(
        &client.with_timeout(Duration::from_millis(300)),
        "memory-deadline".into(),
        1_000,
        50,
    );
    let err = loop {
        match timed.next().await.unwrap() {
            Ok(_) => {}
            Err(err) => break err,
        }
    };
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

/// A user's server layer that panics where the caller asks it to (in `poll_ready`, or in
/// `call` before it makes a future), and passes the rest on.
#[derive(Clone)]
struct Brittle {
    inner: ServerService,
    /// Set, the next `poll_ready` panics (and clears it).
    ready_panics: Arc<Mutex<bool>>,
}

impl tower::Service<ServerRequest> for Brittle {
    type Response = Reply;
    type Error = Infallible;
    type Future = <ServerService as tower::Service<ServerRequest>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        if std::mem::take(&mut *self.ready_panics.lock().unwrap()) {
            panic!("not ready, and broken");
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: ServerRequest) -> Self::Future {
        if request.function == "answer" {
            panic!("broken before the call began");
        }
        self.inner.call(request)
    }
}

#[tokio::test]
async fn a_layer_panicking_while_made_ready_or_before_its_future_costs_only_its_call() {
    let uri = no_broker().await;
    let ready_panics = Arc::new(Mutex::new(false));
    let flag = ready_panics.clone();
    let server = Server::builder()
        .uri(&uri)
        .queue("brittle")
        .layer(layer_fn(move |inner: ServerService| Brittle {
            inner,
            ready_panics: flag.clone(),
        }))
        .in_memory()
        .unwrap();
    let client = server.client();
    for _ in 0..2 {
        *ready_panics.lock().unwrap() = true;
        let err = api::add::call(&client, 1, 2).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
        assert!(err.to_string().contains("not ready, and broken"), "{err}");
        let err = client.call::<u32>("answer", ()).await.unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::Internal), "{err}");
        assert!(
            err.to_string().contains("broken before the call began"),
            "{err}"
        );
        assert_eq!(api::add::call(&client, 1, 2).await.unwrap(), 3);
    }
}

/// Who may call what, without a broker: `client_as` calls as a verified user.
#[guirpc_core::rpc(allow = ["alice"])]
async fn alices_only() -> String {
    guirpc_core::Caller::current().to_string()
}

#[tokio::test]
async fn permissions_hold_in_memory_for_a_client_as_a_user() {
    let server = guirpc_core::Server::builder().in_memory().unwrap();
    let alice = server.client_as("alice");
    assert_eq!(alices_only::call(&alice).await.unwrap(), "alice");
    let refused = alices_only::call(&server.client_as("bob"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, guirpc_core::Error::Remote(remote) if *remote.code() == guirpc_core::ErrorCode::Forbidden),
        "{refused:?}"
    );
    let anonymous = alices_only::call(&server.client()).await.unwrap_err();
    assert!(
        matches!(&anonymous, guirpc_core::Error::Remote(remote) if *remote.code() == guirpc_core::ErrorCode::Unauthorized),
        "{anonymous:?}"
    );
}
