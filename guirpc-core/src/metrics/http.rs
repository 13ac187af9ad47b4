//! The observability listener: one small HTTP/1.1 server with `/metrics` (Prometheus),
//! `/healthz` (the process runs), `/readyz` (connected and consuming) and a status page
//! at `/`.
//!
//! Each connection carries one `GET` (or `HEAD`) and is closed after the response. A
//! request head larger than 8 KiB, or slower than 5 seconds, is refused: the listener is
//! meant for scrapers, probes and a person's browser, and must cost the service nothing
//! whatever else connects to it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use super::Endpoint;

/// The largest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many connections are served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 64;

/// Whether a server can serve now, as `/readyz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// Connected and consuming.
    Ready,
    /// Not connected: connecting, or reconnecting after a lost connection.
    Connecting,
    /// Connected, but the broker blocks publishing (a memory or disk alarm): replies wait.
    Blocked(String),
    /// Shutting down: no new requests are taken.
    Draining,
}

impl Readiness {
    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        *self == Readiness::Ready
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Ready => f.write_str("ready: connected and consuming"),
            Readiness::Connecting => f.write_str("not ready: connecting to the broker"),
            Readiness::Blocked(reason) => {
                write!(f, "not ready: the broker blocks publishing ({reason})")
            }
            Readiness::Draining => f.write_str("not ready: shutting down"),
        }
    }
}

/// Binds the listener's address; a clear error when it is taken or malformed. A bare port
/// (`9464`, `:9464`) is loopback's: the listener is reachable from elsewhere only when an
/// address says so (`0.0.0.0:9464`).
pub(crate) async fn bind(addr: &str) -> Result<TcpListener, String> {
    let port = addr.strip_prefix(':').unwrap_or(addr);
    let addr = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{port}")
    } else {
        addr.to_owned()
    };
    TcpListener::bind(&addr)
        .await
        .map_err(|err| format!("cannot listen for metrics on {addr}: {err}"))
}

/// Serves the endpoint on `listener` until the returned task is aborted.
pub(crate) fn spawn(listener: TcpListener, endpoint: Arc<Endpoint>) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        info!("metrics, health and status at http://{addr}/ (/metrics, /healthz, /readyz)");
    }
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            match listener.accept().await {
                Ok((stream, _)) => {
                    let endpoint = endpoint.clone();
                    tokio::spawn(async move {
                        if let Err(err) = serve(stream, &endpoint).await {
                            debug!("metrics listener: {err}");
                        }
                        drop(permit);
                    });
                }
                Err(err) => {
                    warn!("metrics listener cannot accept: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

async fn serve(mut stream: TcpStream, endpoint: &Endpoint) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(head) => head?,
        Err(_) => return Ok(()),
    };
    let (response, with_body) = match head {
        None => (
            Response::text("431 Request Header Fields Too Large", "request too large\n"),
            true,
        ),
        Some(head) => respond(&head, endpoint),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if with_body {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Reads up to the blank line ending the head; `None` if it is larger than allowed.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..read]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
    Ok(Some(String::from_utf8_lossy(&head).into_owned()))
}

/// Whether a request carries the token: `Authorization: Bearer <token>`, or `?token=`.
fn authorized(head: &str, target: &str, token: &str) -> bool {
    let bearer = head.lines().skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("authorization")
            .then(|| value.trim().strip_prefix("Bearer ").map(str::trim))
            .flatten()
    });
    let query = target.split_once('?').and_then(|(_, query)| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
    });
    [bearer, query]
        .into_iter()
        .flatten()
        .any(|given| same(given.as_bytes(), token.as_bytes()))
}

/// Compares in time that depends on the lengths only, not on where they first differ.
fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// The response to a request head, and whether it carries a body (not for `HEAD`).
fn respond(head: &str, endpoint: &Endpoint) -> (Response, bool) {
    let mut words = head
        .lines()
        .next()
        .unwrap_or_default()
        .split_ascii_whitespace();
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or("/"),
    );
    let with_body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => {
            return (
                Response::text("405 Method Not Allowed", "only GET and HEAD\n"),
                true,
            );
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or_default();
    // Health and readiness are for probes, which carry no token.
    if !matches!(path, "/healthz" | "/readyz")
        && let Some(token) = &endpoint.token
        && !authorized(head, target, token)
    {
        return (
            Response::text(
                "401 Unauthorized",
                "unauthorized: send `Authorization: Bearer <service.metrics_token>` (or, from a browser, add `?token=...`)\n",
            ),
            with_body,
        );
    }
    // A token given in the address stays on the pages' links.
    let query = target
        .split_once('?')
        .and_then(|(_, query)| query.split('&').find(|pair| pair.starts_with("token=")))
        .map(|pair| format!("?{pair}"))
        .unwrap_or_default();
    let html = |body: String| Response {
        status: "200 OK",
        content_type: "text/html; charset=utf-8",
        body,
    };
    let response = match path {
        "/metrics" => Response {
            status: "200 OK",
            content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body: endpoint.metrics.encode(),
        },
        "/healthz" => Response::text("200 OK", "ok\n"),
        "/readyz" => {
            let readiness = (endpoint.readiness)();
            let status = if readiness.is_ready() {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            Response::text(status, format!("{readiness}\n"))
        }
        "/" => html(super::status::page(endpoint, &query)),
        "/asyncapi.json" => match (endpoint.description)() {
            Some(description) => Response {
                status: "200 OK",
                content_type: "application/json",
                body: serde_json::to_string_pretty(&crate::schema::asyncapi::document(
                    &description,
                    None,
                ))
                .expect("a document always prints"),
            },
            None => Response::text("503 Service Unavailable", "the server is stopping\n"),
        },
        path if path.starts_with("/functions/") => {
            match super::pages::name_of(path)
                .and_then(|name| super::pages::function_page(endpoint, &name, &query))
            {
                Some(page) => html(page),
                None => Response::text(
                    "404 Not Found",
                    "no such function: the status page at / links each one\n",
                ),
            }
        }
        _ => Response::text(
            "404 Not Found",
            "not found: try /metrics, /healthz, /readyz, /asyncapi.json or /\n",
        ),
    };
    (response, with_body)
}
