//! `--memory`: steady memory over many calls, as resident memory and as the bytes a counting
//! allocator sees the program hold.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use guirpc_core::{Bytes, Client};

use crate::{broker, echo, echo_later};

/// The system allocator, counting the bytes the program holds while `COUNTING` is set (the
/// memory mode): resident memory also moves with the allocator's arenas, live bytes only
/// with what the program keeps.
struct CountingAllocator;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

fn count(bytes: isize) {
    if COUNTING.load(Ordering::Relaxed) {
        LIVE_BYTES.fetch_add(bytes, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc(layout) };
        if !block.is_null() {
            count(layout.size() as isize);
        }
        block
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let block = unsafe { System.alloc_zeroed(layout) };
        if !block.is_null() {
            count(layout.size() as isize);
        }
        block
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        unsafe { System.dealloc(block, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(block, layout, size) };
        if !moved.is_null() {
            count(size as isize - layout.size() as isize);
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// A server and a client in this process complete `calls` calls, 1% of which time out;
/// resident memory after the first ten thousand and at the end.
pub(crate) async fn memory(calls: u64) {
    // Counted from before anything is set up: the figure is everything the program holds.
    COUNTING.store(true, Ordering::Relaxed);
    let queue = format!("bench.memory.{}", std::process::id());
    let _server = crate::server()
        .uri(broker())
        .queue(&queue)
        .queue_arguments(guirpc_tests::expiring())
        .concurrency(256)
        .prefetch(512)
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .uri(broker())
        .queue(&queue)
        .timeout(Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let timeouts = Arc::new(AtomicU64::new(0));
    let checkpoints: Vec<u64> = std::iter::once(10_000)
        .chain((1..=10).map(|k| calls * k / 10))
        .filter(|&c| c <= calls)
        .collect();
    let started = Instant::now();
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (client, next, timeouts) = (client.clone(), next.clone(), timeouts.clone());
            tokio::spawn(async move {
                let data = Bytes::from(vec![7u8; 16]);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= calls {
                        return;
                    }
                    if i % 100 == 99 {
                        // Answers after the client has given up.
                        let late = echo_later::call(&client, data.clone(), 300).await;
                        assert!(
                            matches!(late, Err(guirpc_core::Error::Timeout { .. })),
                            "{late:?}"
                        );
                        timeouts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        echo::call(&client, data.clone()).await.unwrap();
                    }
                }
            })
        })
        .collect();
    println!(
        "{:>10} {:>10} {:>12} {:>10} {:>10}",
        "calls", "timed out", "resident KiB", "heap KiB", "calls/s"
    );
    let heap_kib = || LIVE_BYTES.load(Ordering::Relaxed) / 1024;
    let (mut at_ten_thousand, mut heap_at_ten_thousand) = (0, 0);
    for checkpoint in checkpoints {
        while next.load(Ordering::Relaxed) < checkpoint {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (rss, heap) = (guirpc_tests::rss_kib(), heap_kib());
        if checkpoint == 10_000 {
            (at_ten_thousand, heap_at_ten_thousand) = (rss, heap);
        }
        println!(
            "{checkpoint:>10} {:>10} {rss:>12} {heap:>10} {:>10.0}",
            timeouts.load(Ordering::Relaxed),
            checkpoint as f64 / started.elapsed().as_secs_f64()
        );
    }
    for worker in workers {
        worker.await.unwrap();
    }
    // Let the late replies of the last timed-out calls arrive and be dropped.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (end, heap) = (guirpc_tests::rss_kib(), heap_kib());
    println!(
        "resident memory after 10 000 calls: {at_ten_thousand} KiB; after {calls}: {end} KiB ({:+.1}%)",
        (end as f64 / at_ten_thousand as f64 - 1.0) * 100.0
    );
    println!(
        "heap held after 10 000 calls: {heap_at_ten_thousand} KiB; after {calls}: {heap} KiB ({:+} KiB)",
        heap - heap_at_ten_thousand
    );
}
