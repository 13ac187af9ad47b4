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
