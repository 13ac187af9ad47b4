use guirpc_core::rpc;

#[rpc(nmae = "x")]
async fn misspelt() {}

#[rpc(name = "")]
async fn empty() {}

#[rpc]
struct NotAFunction;

fn main() {}

#[rpc(max_run = "soon")]
async fn vague() {}

#[rpc(max_run = "0s")]
async fn instant() {}

#[rpc(retry(attempts = 0))]
async fn never_runs() {}

#[rpc(retry(on = "bad_request"))]
async fn hopeless() {}

#[rpc(retry(backoff = "5m..1s"))]
async fn backwards() {}

#[rpc(retry(jitter = 2.0))]
async fn jumpy() {}

#[rpc(retry(tries = 3))]
async fn misnamed() {}
