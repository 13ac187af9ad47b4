//! The orders service: takes orders, and announces each one as an `orders.created` event
//! to whoever subscribes (the shipping service, for one).
//!
//! ```sh
//! cargo run -p guirpc-examples --bin orders -- serve
//! guirpc call place_order '{"item": "tea", "quantity": 2}' -q orders
//! ```

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use guirpc_core::{Client, ClientBuilder, Settings, rpc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

/// The event of a new order. The services that exchange it each declare it (a shared API
/// crate would hold it once).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreated {
    /// The order's number.
    pub id: u64,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: u32,
}

/// Places an order and announces it; returns the order's number.
#[rpc]
async fn place_order(item: String, quantity: u32) -> Result<u64, String> {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    static EVENTS: OnceCell<Client> = OnceCell::const_new();
    if quantity == 0 {
        return Err("an order needs a quantity of at least 1".into());
    }
    let events = EVENTS
        .get_or_try_init(|| async {
            let settings = Settings::load(Default::default()).map_err(|e| e.to_string())?;
            ClientBuilder::from_settings(&settings)
                .connect()
                .await
                .map_err(|e| e.to_string())
        })
        .await?;
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let event = OrderCreated { id, item, quantity };
    // Confirmed by the broker before the caller hears of the order.
    events
        .publish("orders.created", &event)
        .await
        .map_err(|e| format!("order {id} was not announced: {e}"))?;
    Ok(id)
}

fn main() -> ExitCode {
    guirpc_cli::Main::new().default_queue("orders").run()
}
