//! Calls the calculator from async code: `cargo run -p guirpc-examples --bin calc-client`.

use guirpc_core::config::LoadOptions;
use guirpc_core::{ClientBuilder, Error, Settings};
use guirpc_examples::{DivideError, QUEUE, add, divide, summarize};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The same settings as the service: ./guirpc.toml, GUIRPC_URI, GUIRPC_QUEUE, ...
    let settings = Settings::load(LoadOptions {
        defaults: vec![("service.queue", QUEUE.into())],
        ..Default::default()
    })?;
    let client = ClientBuilder::from_settings(&settings).connect().await?;

    // Typed stubs, checked by the compiler.
    println!("add(2, 3) = {}", add::call(&client, 2, 3).await?);
    println!("divide(1, 4) = {}", divide::call(&client, 1.0, 4.0).await?);
    match divide::call(&client, 1.0, 0.0).await {
        Err(Error::Handler {
            error: DivideError::ByZero { dividend },
            ..
        }) => println!("divide(1, 0) failed as it should: division of {dividend} by zero"),
        other => println!("divide(1, 0) = {other:?}?"),
    }

    // Many calls in flight at once on one client.
    let calls = (0..100).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { add::call(&client, i, i).await })
    });
    let mut total = 0;
    for call in calls {
        total += call.await??;
    }
    println!("100 concurrent additions sum to {total}");

    // By name, without stubs: arguments by name or in order.
    let stats: guirpc_examples::Stats = client
        .call(
            summarize::NAME,
            serde_json::json!({"numbers": [1.0, 2.0, 4.5]}),
        )
        .await?;
    println!("stats.summary([1, 2, 4.5]) = {stats:?}");
    let sum: i64 = client.call("add", (40, 2)).await?;
    println!("call(\"add\", (40, 2)) = {sum}");
    Ok(())
}
