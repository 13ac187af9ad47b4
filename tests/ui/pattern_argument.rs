use guirpc_core::rpc;

#[rpc]
fn sum((a, b): (i32, i32), _: bool) -> i32 {
    a + b
}

fn main() {}
