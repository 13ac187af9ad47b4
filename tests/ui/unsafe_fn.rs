use guirpc_core::rpc;

#[rpc]
unsafe fn danger(x: u8) -> u8 {
    x
}

fn main() {}
