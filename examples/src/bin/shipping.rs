//! The shipping service: ships every order the orders service announces.
//!
//! ```sh
//! cargo run -p guirpc-examples --bin shipping -- serve
//! guirpc call shipped -q shipping
//! ```
//!
//! Its servers share the `orders.created` events (each order is shipped once, whichever
//! server takes it); events published while it is down wait in its queue.

use std::process::ExitCode;
use std::sync::Mutex;

use guirpc_core::{rpc, subscribe};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The event of a new order, as the orders service publishes it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreated {
    /// The order's number.
    pub id: u64,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: u32,
}

static SHIPPED: Mutex<Vec<u64>> = Mutex::new(Vec::new());

/// Ships a new order.
#[subscribe("orders.created")]
async fn ship(order: OrderCreated) {
    tracing::info!(
        order = order.id,
        "shipping {} x {}",
        order.quantity,
        order.item
    );
    SHIPPED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(order.id);
}

/// The orders this server has shipped.
#[rpc]
async fn shipped() -> Vec<u64> {
    SHIPPED.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

fn main() -> ExitCode {
    guirpc_cli::Main::new().default_queue("shipping").run()
}
