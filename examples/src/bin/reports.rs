//! The reports service: keeps a ledger of the orders the orders service announces, and
//! streams a report of them, one line per order, as it reads the ledger.
//!
//! ```sh
//! cargo run -p guirpc-examples --bin reports -- serve
//! guirpc call report '{"min_quantity": 2}' -q reports     # one JSON line per order
//! ```
//!
//! The report is a streamed result: the caller gets each line as it is produced, holds at
//! most a window of them, and stops the report by dropping the stream.

use std::process::ExitCode;
use std::sync::Mutex;

use guirpc_core::stream::Stream;
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

/// One line of the report.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ReportLine {
    /// The order's number.
    pub order: u64,
    /// What was ordered.
    pub item: String,
    /// How many.
    pub quantity: u32,
    /// The quantity of this order and every one reported before it.
    pub running_total: u64,
}

static LEDGER: Mutex<Vec<OrderCreated>> = Mutex::new(Vec::new());

/// Records a new order in the ledger.
#[subscribe("orders.created")]
async fn record(order: OrderCreated) {
    LEDGER.lock().unwrap_or_else(|e| e.into_inner()).push(order);
}

/// Streams the ledger's orders of at least `min_quantity`, one line each, in order.
#[rpc]
async fn report(min_quantity: u32) -> impl Stream<Item = ReportLine> {
    let orders: Vec<OrderCreated> = LEDGER.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut running_total = 0;
    futures_lite::stream::iter(
        orders
            .into_iter()
            .filter(move |order| order.quantity >= min_quantity)
            .map(move |order| {
                running_total += u64::from(order.quantity);
                ReportLine {
                    order: order.id,
                    item: order.item,
                    quantity: order.quantity,
                    running_total,
                }
            }),
    )
}

fn main() -> ExitCode {
    guirpc_cli::Main::new().default_queue("reports").run()
}
