//! The procedural macros of guirpc: `#[rpc]` and `#[subscribe]`. Use them through
//! `guirpc_core` (`guirpc_core::rpc`, `guirpc_core::subscribe`), whose documentation has
//! their rules, options and examples: the code they generate names `guirpc_core`'s items.

mod attr;
mod expand;
mod subscribe;

use proc_macro::TokenStream;

/// Makes a function remotely callable; see `guirpc_core::rpc`.
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
/// `Err` or panics has its event retried later by the service's `[retry]` policy, or its
/// own (`retry(attempts = 4, backoff = "1s..5m", factor = 2, jitter = 0.2, on =
/// "handler_error,internal")`, any of them), then kept as a dead letter; an event that does
/// not decode is a dead letter at once. `name = "..."` names the subscription.
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
