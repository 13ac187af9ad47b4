//! A calculator service: the functions, shared by the service binary (which serves them)
//! and the client binaries (which call them through their typed stubs).
//!
//! - `cargo run -p guirpc-examples --bin calculator -- serve` serves them;
//! - `cargo run -p guirpc-examples --bin calc-client` calls them from async code;
//! - `cargo run -p guirpc-examples --bin calc-blocking` calls them from a plain `fn main`.

use guirpc_core::rpc;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The service queue the calculator is served on.
pub const QUEUE: &str = "calculator";

/// Adds two integers.
#[rpc]
pub async fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// Why a division failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
pub enum DivideError {
    /// The divisor was zero.
    #[error("division of {dividend} by zero")]
    ByZero {
        /// What was to be divided.
        dividend: f64,
    },
}

/// Divides `dividend` by `divisor`; dividing by zero is an error the caller receives typed.
#[rpc]
pub fn divide(dividend: f64, divisor: f64) -> Result<f64, DivideError> {
    if divisor == 0.0 {
        Err(DivideError::ByZero { dividend })
    } else {
        Ok(dividend / divisor)
    }
}

/// Summary statistics of a list of numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Stats {
    /// How many numbers.
    pub count: usize,
    /// Their sum.
    pub sum: f64,
    /// Their mean, if there is any number.
    pub mean: Option<f64>,
}

/// Counts, sums and averages a list of numbers (a plain `fn`: runs on the blocking pool).
#[rpc(name = "stats.summary")]
pub fn summarize(numbers: Vec<f64>) -> Stats {
    let sum: f64 = numbers.iter().sum();
    Stats {
        count: numbers.len(),
        sum,
        mean: (!numbers.is_empty()).then(|| sum / numbers.len() as f64),
    }
}
