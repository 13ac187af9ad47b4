use guirpc_core::subscribe;

#[subscribe]
async fn no_pattern(event: u32) {}

#[subscribe("orders.*")]
async fn two_events(first: u32, second: u32) {}

#[subscribe("orders.*", twice)]
async fn unknown_option(event: u32) {}

#[subscribe("orders.*")]
async fn no_body(event: u32);

fn main() {}
