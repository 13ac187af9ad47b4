//! The buffers large bodies are encoded into, kept for the next call once their message
//! is sent.
//!
//! lapin copies a body into its frames as it is published, so the buffer a call's
//! arguments or a function's result were encoded into is garbage once sent. With small
//! bodies the allocator keeps such memory well. With large ones (tens of KiB) glibc's
//! allocator hands freed memory back to the kernel as soon as the top of a heap has
//! more than 128 KiB free (`M_TRIM_THRESHOLD`), and the next call's buffer is faulted in
//! again, a page at a time: with 64 KiB bodies and one call in flight, about one minor
//! page fault per call with the servers apart and a dozen in one process, where raw
//! lapin's echo took none (docs/PERFORMANCE.md). Keeping a few large buffers takes
//! guirpc's own part out of that. A buffer goes back where its body's owner lets go of it:
//! a [`crate::middleware::Reply`] as it is dropped, a stream's item once sent, a call's
//! arguments when the call is over.

use crate::sync::Locked;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Buffers smaller than this are left to the allocator.
const LARGE: usize = 16 * 1024;
/// Nor is one larger than this kept: a rare huge body should not stay resident.
const LARGEST: usize = 1024 * 1024;
/// At most this many bytes of buffers are kept, all together.
const KEPT_BYTES: usize = 8 * 1024 * 1024;

/// Kept buffers.
struct Buffers {
    kept: Mutex<Kept>,
    /// Whether any buffer is kept: while none is (small bodies only), taking one costs a
    /// load, not a lock.
    any: AtomicBool,
}

struct Kept {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// The process's.
static BUFFERS: Buffers = Buffers::new();

/// An empty buffer to encode into: a kept one, when there is one.
pub(crate) fn take() -> Vec<u8> {
    BUFFERS.take()
}

/// Takes back the buffer of a body that has been sent (or will not be): kept if it is
/// large, and there is room.
pub(crate) fn give_back(buffer: Vec<u8>) {
    BUFFERS.give_back(buffer);
}

impl Buffers {
    const fn new() -> Buffers {
        Buffers {
            kept: Mutex::new(Kept {
                buffers: Vec::new(),
                bytes: 0,
            }),
            any: AtomicBool::new(false),
        }
    }

    fn take(&self) -> Vec<u8> {
        if !self.any.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut kept = self.kept.locked();
        let Some(buffer) = kept.buffers.pop() else {
            return Vec::new();
        };
        kept.bytes -= buffer.capacity();
        self.any.store(!kept.buffers.is_empty(), Ordering::Relaxed);
        buffer
    }

    fn give_back(&self, mut buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if !(LARGE..=LARGEST).contains(&capacity) {
            return;
        }
        buffer.clear();
        let mut kept = self.kept.locked();
        if kept.bytes + capacity <= KEPT_BYTES {
            kept.bytes += capacity;
            kept.buffers.push(buffer);
            self.any.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_buffers_are_kept_within_bounds_and_small_ones_are_not() {
        let buffers = Buffers::new();
        assert_eq!(buffers.take().capacity(), 0);

        buffers.give_back(Vec::with_capacity(LARGE - 1));
        assert_eq!(
            buffers.take().capacity(),
            0,
            "a small buffer is left to the allocator"
        );
        buffers.give_back(Vec::with_capacity(LARGEST + 1));
        assert_eq!(buffers.take().capacity(), 0, "a huge one is not kept");

        let mut sent = Vec::with_capacity(64 * 1024);
        sent.extend_from_slice(&[7; 1000]);
        buffers.give_back(sent);
        let again = buffers.take();
        assert!(again.is_empty(), "a kept buffer comes back empty");
        assert!(again.capacity() >= 64 * 1024, "with its capacity");
        assert_eq!(buffers.take().capacity(), 0, "and only once");

        for _ in 0..(KEPT_BYTES / LARGEST + 4) {
            buffers.give_back(Vec::with_capacity(LARGEST));
        }
        let mut taken = 0;
        while buffers.take().capacity() > 0 {
            taken += 1;
        }
        assert_eq!(taken, KEPT_BYTES / LARGEST, "kept up to {KEPT_BYTES} bytes");
    }
}
