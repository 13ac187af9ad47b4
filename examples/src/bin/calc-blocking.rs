//! Calls the calculator from synchronous code, no async runtime of its own:
//! `cargo run -p guirpc-examples --bin calc-blocking`.

use guirpc_core::config::LoadOptions;
use guirpc_core::{ClientBuilder, Error, Settings};
use guirpc_examples::{QUEUE, add, divide};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings::load(LoadOptions {
        defaults: vec![("service.queue", QUEUE.into())],
        ..Default::default()
    })?;
    let client = ClientBuilder::from_settings(&settings).connect_blocking()?;

    println!("add(20, 22) = {}", add::call_blocking(&client, 20, 22)?);
    match divide::call_blocking(&client, 3.0, 0.0) {
        Err(Error::Handler { error, .. }) => println!("divide(3, 0) failed: {error}"),
        other => println!("divide(3, 0) = {other:?}?"),
    }
    let product: f64 = client.call(
        "divide",
        serde_json::json!({"dividend": 9.0, "divisor": 3.0}),
    )?;
    println!("call(\"divide\", 9 / 3) = {product}");

    // One client, shared by threads.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            std::thread::spawn(move || add::call_blocking(&client, i, 1))
        })
        .collect();
    let results: Result<Vec<i64>, _> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    println!("8 threads got {:?}", results?);
    Ok(())
}
