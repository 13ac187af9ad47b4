use guirpc_core::rpc;

// The built-ins' prefix is refused where the name is written.
#[rpc(name = "guirpc.ping")]
async fn reserved() {}

// A name that only contains it is fine.
#[rpc(name = "my.guirpc.ping")]
async fn allowed() {}

fn main() {}
