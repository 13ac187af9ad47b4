use guirpc_core::rpc;

#[rpc]
async fn first<T: Clone>(items: Vec<T>) -> Option<T> {
    items.first().cloned()
}

fn main() {}
