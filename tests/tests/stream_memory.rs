//! A million items through one stream, in a process of its own, so that its resident
//! memory says what the stream holds at both ends (the server and the caller both live
//! here) and nothing else.

use std::time::{Duration, Instant};

use futures_lite::StreamExt;
use guirpc_tests::{count_up, progress_of};

#[tokio::test(flavor = "multi_thread")]
async fn a_million_items_stream_through_in_bounded_memory() {
    let (server, client) = guirpc_tests::serve("stream-million").await;
    let token = format!("{}-million", server.queue());
    let total: u64 = 1_000_000;
    let client = client.with_timeout(Duration::from_secs(600));
    let started = Instant::now();
    let mut items = count_up::call(&client, token.clone(), total, 0);
    let (mut next, mut baseline, mut peak) = (0, 0, 0);
    let window = u64::from(guirpc_core::stream::DEFAULT_WINDOW);
    while let Some(item) = items.next().await {
        assert_eq!(item.unwrap(), next);
        next += 1;
        if next == 20_000 {
            baseline = guirpc_tests::rss_kib();
        }
        if next % 50_000 == 0 {
            peak = peak.max(guirpc_tests::rss_kib());
            // Server and caller live in this process: neither runs ahead of the window.
            let produced = progress_of(&token).produced;
            assert!(
                produced <= next + window + 1,
                "{produced} produced, {next} taken"
            );
        }
    }
    assert_eq!(next, total);
    let elapsed = started.elapsed();
    println!(
        "{total} items in {elapsed:?} ({:.0} items/s); RSS {baseline} KiB after 20k items, peak {peak} KiB",
        total as f64 / elapsed.as_secs_f64()
    );
    // Both ends in this process: whatever they buffer, it does not grow with the stream.
    assert!(
        peak < baseline + 16 * 1024,
        "memory grew from {baseline} KiB to {peak} KiB over the stream"
    );
}
