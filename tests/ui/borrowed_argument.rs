use guirpc_core::rpc;

#[rpc]
async fn shout(text: &str) -> String {
    text.to_uppercase()
}

#[rpc]
fn total(values: Vec<&u32>) -> u32 {
    values.into_iter().sum()
}

fn main() {}
