//! The orders example, run for real: the orders service announces each order as an event,
//! the shipping service ships it, the reports service streams a report of them, each as
//! its own process on the real broker.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_lite::StreamExt;
use guirpc_core::Client;

fn broker() -> String {
    std::env::var("GUIRPC_TEST_URI")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The `rabbitmqctl` of the broker the tests use: `$GUIRPC_TEST_CTL`, or the machine's.
fn ctl() -> String {
    std::env::var("GUIRPC_TEST_CTL").unwrap_or_else(|_| "rabbitmqctl".into())
}

/// Starts `binary serve --queue queue` and waits until it serves.
fn serve(binary: &str, queue: &str) -> Child {
    let mut child = Command::new(binary)
        .args(["serve", "--queue", queue])
        .env("GUIRPC_URI", broker())
        .env_remove("GUIRPC_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example runs");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("serving") => return child,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{binary} did not start serving within 30 s");
            }
        }
    }
}

fn terminate(mut child: Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_order_placed_with_the_orders_service_is_shipped_by_the_shipping_service() {
    let id = std::process::id();
    let (orders_queue, shipping_queue) = (
        format!("example-orders.{id}"),
        format!("example-shipping.{id}"),
    );
    let reports_queue = format!("example-reports.{id}");
    let shipping = serve(env!("CARGO_BIN_EXE_shipping"), &shipping_queue);
    let reports = serve(env!("CARGO_BIN_EXE_reports"), &reports_queue);
    let orders = serve(env!("CARGO_BIN_EXE_orders"), &orders_queue);

    let client = Client::builder().uri(broker()).connect().await.unwrap();
    let mut placed = Vec::new();
    for (item, quantity) in [("tea", 2), ("cups", 6), ("pot", 1)] {
        let order: u64 = client
            .with_queue(&orders_queue)
            .call("place_order", (item, quantity))
            .await
            .unwrap();
        placed.push(order);
    }
    let refused = client
        .with_queue(&orders_queue)
        .call::<u64>("place_order", ("nothing", 0))
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("at least 1"), "{refused}");

    let shipping_client = client.with_queue(&shipping_queue);
    let mut shipped: Vec<u64> = Vec::new();
    for _ in 0..100 {
        shipped = shipping_client.call("shipped", ()).await.unwrap();
        if shipped.len() >= placed.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shipped.sort_unstable();
    assert_eq!(shipped, placed);

    // The report streams one line per order of at least 2, as the ledger has them.
    let reports_client = client.with_queue(&reports_queue);
    let mut lines: Vec<serde_json::Value> = Vec::new();
    for _ in 0..100 {
        lines = reports_client
            .stream::<serde_json::Value>("report", serde_json::json!({"min_quantity": 2}))
            .map(Result::unwrap)
            .collect()
            .await;
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items: Vec<&str> = lines.iter().map(|l| l["item"].as_str().unwrap()).collect();
    assert_eq!(items, ["tea", "cups"]);
    assert_eq!(lines[1]["running_total"], 8);
    // From the shell: one JSON line per order.
    let out = Command::new(env!("CARGO_BIN_EXE_reports"))
        .args(["call", "report", "[1]", "-q", &reports_queue])
        .env("GUIRPC_URI", broker())
        .env_remove("GUIRPC_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    terminate(orders);
    terminate(shipping);
    terminate(reports);
    for queue in [
        orders_queue,
        format!("{shipping_queue}.ship"),
        shipping_queue,
        format!("{reports_queue}.record"),
        reports_queue,
    ] {
        let _ = Command::new(ctl()).args(["delete_queue", &queue]).output();
    }
}
