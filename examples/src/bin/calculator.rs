//! The calculator service: `cargo run -p guirpc-examples --bin calculator -- serve`.
//!
//! Its functions live in the `guirpc_examples` library; naming the crate links them in,
//! and the guirpc command line serves every linked `#[rpc]` function.

use std::process::ExitCode;

fn main() -> ExitCode {
    guirpc_cli::Main::new()
        .default_queue(guirpc_examples::QUEUE)
        .run()
}
