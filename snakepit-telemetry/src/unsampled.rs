//! The traces a caller marked not sampled (W3C trace flags `00`), so that
//! exporting sinks leave out every span of them: the host's call spans and
//! the worker's spans, which reach the host later on its telemetry stream.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

/// How many unsampled traces are remembered; the oldest is forgotten first
/// (its late spans would then be exported under the sink's own sampling).
pub const MAX_UNSAMPLED_TRACES: usize = 65_536;

#[derive(Default)]
struct Set {
    ids: HashSet<u128>,
    order: VecDeque<u128>,
}

/// A shared, bounded set of unsampled trace ids (cheap to clone; clones
/// share it). [`Telemetry::unsampled_traces`](crate::Telemetry::unsampled_traces)
/// gives the instance's.
#[derive(Clone, Default)]
pub struct UnsampledTraces {
    any: Arc<AtomicBool>,
    set: Arc<RwLock<Set>>,
}

impl std::fmt::Debug for UnsampledTraces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UnsampledTraces")
            .field("any", &self.any.load(Ordering::Relaxed))
            .finish()
    }
}

impl UnsampledTraces {
    /// Records that `trace_id` is not sampled (0 is ignored). At most
    /// [`MAX_UNSAMPLED_TRACES`] are kept.
    pub fn mark(&self, trace_id: u128) {
        if trace_id == 0 {
            return;
        }
        let mut s = self.set.write().unwrap_or_else(|e| e.into_inner());
        if s.ids.insert(trace_id) {
            s.order.push_back(trace_id);
            if s.order.len() > MAX_UNSAMPLED_TRACES {
                if let Some(old) = s.order.pop_front() {
                    s.ids.remove(&old);
                }
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// Was `trace_id` marked not sampled? One atomic load while none was.
    pub fn contains(&self, trace_id: u128) -> bool {
        if trace_id == 0 || !self.any.load(Ordering::Acquire) {
            return false;
        }
        let s = self.set.read().unwrap_or_else(|e| e.into_inner());
        s.ids.contains(&trace_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_shared() {
        let a = UnsampledTraces::default();
        let b = a.clone();
        assert!(!b.contains(7));
        a.mark(7);
        a.mark(0);
        assert!(b.contains(7) && !b.contains(0) && !b.contains(8));
        for t in 100..100 + MAX_UNSAMPLED_TRACES as u128 {
            a.mark(t);
        }
        assert!(!b.contains(7), "the oldest is forgotten");
        assert!(b.contains(100 + MAX_UNSAMPLED_TRACES as u128 - 1));
    }
}
