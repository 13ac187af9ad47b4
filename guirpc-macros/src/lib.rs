//! The `#[rpc]` attribute of guirpc. Use it through `guirpc_core::rpc`.
//!
//! `#[rpc]` turns an ordinary function into a remotely callable one. The function stays
//! as it is, callable locally; the attribute adds
//!
//! - a registration, so that every server in the program serves the function: there is
//!   no list of functions to maintain;
//! - a module of the same name with typed call stubs: `NAME::call(&client, args..)` for a
//!   [`Client`](../guirpc_core/struct.Client.html), `NAME::call_blocking(&client, args..)`
//!   for a `BlockingClient`, and `NAME::NAME`, the name callers use.
//!
//! ```
//! use guirpc_core::rpc;
//! use serde::{Deserialize, Serialize};
//!
//! /// Adds two numbers. The doc comment is the function's description.
//! #[rpc]
//! async fn add(a: i64, b: i64) -> i64 {
//!     a + b
//! }
//!
//! #[derive(Debug, Serialize, Deserialize)]
//! enum CountError {
//!     Empty,
//! }
//!
//! /// A plain `fn` runs on the blocking thread pool, so a slow one stalls nothing.
//! #[rpc(name = "text.count")]
//! fn count_words(text: String) -> Result<usize, CountError> {
//!     match text.split_whitespace().count() {
//!         0 => Err(CountError::Empty),
//!         n => Ok(n),
//!     }
//! }
//!
//! // Typed stubs, checked by the compiler:
//! async fn caller(client: &guirpc_core::Client) -> Result<(), Box<dyn std::error::Error>> {
//!     let sum: i64 = add::call(client, 1, 2).await?;
//!     match count_words::call(client, String::new()).await {
//!         Err(guirpc_core::Error::Handler { error: CountError::Empty, .. }) => {}
//!         other => println!("{other:?}"),
//!     }
//!     assert_eq!(count_words::NAME, "text.count");
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! # Rules
//!
//! - `async fn` or plain `fn`, with any number of parameters whose types implement
//!   `Serialize` and `Deserialize` (owned types: `String`, not `&str`).
//! - Returns `T`, or `Result<T, E>`, with `T` and `E` implementing `Serialize` and
//!   `Deserialize`. A caller receives `Err(e)` as `Error::Handler { error: e, .. }`.
//! - No `self`, no generics, no `impl Trait`, no patterns in place of parameter names.
//!
//! # Options
//!
//! - `name = "..."`: the name callers use (default: the function's name).
//! - `idempotent`: running the function twice for one call is harmless, so its stubs
//!   re-send a call after a lost connection or a timeout, as often as the client's
//!   `retries` setting allows (0 by default).
//! - `max_run = "2h"`: the longest one run may take (`500ms`, `30s`, `10m`, `2h`); past it
//!   the run is cancelled and its caller answered `max_run_exceeded`. Without it, the
//!   server's `service.max_run` applies (15 minutes by default). A plain `fn` runs on its
//!   own thread, which cannot be stopped: its caller is answered, and the thread's result
//!   is dropped when it ends.
//!
//! ```
//! # use guirpc_core::rpc;
//! /// Renders a report; may take an hour on a big month.
//! #[rpc(max_run = "90m")]
//! async fn render(month: String) -> Vec<u8> {
//!     # let _ = month;
//!     Vec::new()
//! }
//! ```
//!
//! # Declarations
//!
//! A function without a body declares a remote function without serving it: only its
//! call stubs are generated. A crate of such declarations lets callers use typed stubs
//! without linking the service's code.
//!
//! ```
//! # use guirpc_core::rpc;
//! #[rpc]
//! pub async fn add(a: i64, b: i64) -> i64;
//!
//! async fn caller(client: &guirpc_core::Client) -> Result<i64, guirpc_core::Error> {
//!     add::call(client, 1, 2).await
//! }
//! # fn main() {}
//! ```

mod attr;
mod expand;
mod subscribe;

use proc_macro::TokenStream;

/// Makes a function remotely callable; see the crate documentation.
#[proc_macro_attribute]
pub fn rpc(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<attr::RpcArgs>(args) {
        Ok(args) => args,
        Err(err) => return err.to_compile_error().into(),
    };
    let function = match syn::parse::<attr::RpcFn>(item) {
        Ok(function) => function,
        Err(err) => return err.to_compile_error().into(),
    };
    match expand::expand(args, function) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}

/// Serves a function on the events whose topic matches a pattern, beside the `#[rpc]`
/// functions of every server in the program: `#[subscribe("orders.*")] async fn
/// on_order(event: OrderCreated)`. The one parameter is the event. By default each service
/// (each service queue) gets each event once, its servers sharing the work, through a
/// durable queue `{service queue}.{function}`; `#[subscribe("orders.*", broadcast)]` gives
/// every server instance every event, through a queue of its own. A handler that returns
/// `Err` or panics has its event retried (`events.retries`), then dead-lettered; an event
/// that does not decode is dead-lettered at once. `name = "..."` names the subscription.
#[proc_macro_attribute]
pub fn subscribe(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = match syn::parse::<subscribe::SubscribeArgs>(args) {
        Ok(args) => args,
        Err(err) => return err.to_compile_error().into(),
    };
    let function = match syn::parse::<attr::RpcFn>(item) {
        Ok(function) => function,
        Err(err) => return err.to_compile_error().into(),
    };
    match subscribe::expand(args, function) {
        Ok(tokens) => tokens.into(),
        Err(err) => err.to_compile_error().into(),
    }
}
