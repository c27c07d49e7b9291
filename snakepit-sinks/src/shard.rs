//! State that many threads write on the hot path, split per thread.
//!
//! Two cores writing one cache line pass it back and forth: an uncontended
//! lock or atomic add then costs about 100 ns instead of a few. The OTel
//! sink's span chunks and the Prometheus sink's histogram samples are kept
//! in [`SHARDS`] parts, each on its own [`CacheLine`], and each thread keeps
//! to the part [`this_thread`] names.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Parts per sharded value. Threads past this many share parts (still
/// correct, only slower).
pub(crate) const SHARDS: usize = 8;

/// A value alone on its cache line (128 bytes: adjacent-line prefetch).
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct CacheLine<T>(pub T);

impl<T> std::ops::Deref for CacheLine<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

thread_local! {
    /// This thread's part, given out in turn as threads first ask.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

/// The part (below [`SHARDS`]) this thread writes to.
#[inline]
pub(crate) fn this_thread() -> usize {
    SHARD.with(|s| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_spread_over_parts_and_each_keeps_its_own() {
        let parts: Vec<(usize, usize)> = (0..2 * SHARDS)
            .map(|_| {
                std::thread::spawn(|| (this_thread(), this_thread()))
                    .join()
                    .unwrap()
            })
            .collect();
        for (first, again) in &parts {
            assert_eq!(first, again, "a thread changed parts");
            assert!(*first < SHARDS, "{first}");
        }
        // Parts are given out in turn: 16 threads cannot all land on one
        // (other tests' threads may take turns in between, so no more is
        // asserted than that).
        assert!(
            parts.iter().any(|p| p.0 != parts[0].0),
            "every thread got part {}",
            parts[0].0
        );
    }
}
