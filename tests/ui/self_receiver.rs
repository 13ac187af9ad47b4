use guirpc_core::rpc;

struct Counter;

impl Counter {
    #[rpc]
    async fn get(&self) -> u64 {
        0
    }
}

fn main() {}
