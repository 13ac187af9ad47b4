//! Who may reach the observability listener: loopback for a bare port, and a token for
//! `/metrics` and the pages (never for the probes).

use guirpc_core::Server;
use guirpc_tests::{expiring, unique_queue, uri};

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_binds_loopback_for_a_bare_port_and_wants_its_token() {
    let queue = unique_queue("token");
    let server = Server::builder()
        .uri(uri())
        .queue(&queue)
        .queue_arguments(expiring())
        .metrics_addr("0")
        .metrics_token("s3cret-token")
        .start()
        .await
        .unwrap();
    let addr = server.metrics_addr().unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    let get = |path: &'static str| {
        tokio::task::spawn_blocking(move || guirpc_tests::http_get(addr, path))
    };
    let (status, body) = get("/metrics").await.unwrap();
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    assert_eq!(get("/").await.unwrap().0, 401);
    assert_eq!(get("/metrics?token=wrong").await.unwrap().0, 401);
    assert_eq!(get("/healthz").await.unwrap().0, 200);
    assert_eq!(get("/readyz").await.unwrap().0, 200);
    let (status, body) = get("/metrics?token=s3cret-token").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("guirpc_server_ready"), "{body}");
    // A scraper's header.
    let head = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(
                b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-token\r\n\r\n",
            )
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    })
    .await
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    server.shutdown().await.unwrap();
}
