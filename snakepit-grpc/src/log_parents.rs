//! The caller's `tracing` span of each call, by the call's trace id, so a
//! Python log record logged during the call is emitted inside it (and a
//! `tracing-opentelemetry` layer puts it in the call's trace).
//!
//! A call registers the span current where it began, if there is one (a
//! call made outside any `tracing` span registers nothing and costs one
//! look-up of the current span). The span is known while a call under it
//! runs, and forgotten when the last one ends: holding a handle longer
//! would keep the caller's span open (a `tracing` span closes when its last
//! handle goes, and `tracing-opentelemetry` ends the OTel span then), which
//! would delay its export and stretch its duration. Records that arrive
//! after the call's reply keep their ids, without a parent span. At most
//! [`MAX_SPANS`] are held; past that, a new call's logs carry their ids
//! without a parent span.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Spans held at most (calls in flight).
pub(crate) const MAX_SPANS: usize = 1024;

struct Known {
    span: tracing::Span,
    /// Calls in flight under it.
    live: u32,
}

#[derive(Default)]
struct State {
    spans: HashMap<u128, Known>,
}

/// The callers' spans of one client's calls.
#[derive(Default)]
pub(crate) struct LogParents {
    state: Mutex<State>,
}

/// A call's registration; ends it when dropped.
pub(crate) struct Registered {
    parents: Arc<LogParents>,
    trace_id: u128,
}

impl LogParents {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the current `tracing` span for a call in `trace_id`;
    /// `None` when there is no current span or the table is full.
    pub(crate) fn register(self: &Arc<Self>, trace_id: u128) -> Option<Registered> {
        let span = tracing::Span::current();
        if trace_id == 0 || span.is_none() || span.is_disabled() {
            return None;
        }
        let mut state = self.lock();
        let full = state.spans.len() >= MAX_SPANS;
        match state.spans.entry(trace_id) {
            Entry::Occupied(mut e) => e.get_mut().live += 1,
            Entry::Vacant(_) if full => return None,
            Entry::Vacant(e) => {
                e.insert(Known { span, live: 1 });
            }
        }
        Some(Registered {
            parents: self.clone(),
            trace_id,
        })
    }

    /// The span registered for `trace_id`, while it is known.
    pub(crate) fn parent(&self, trace_id: u128) -> Option<tracing::Span> {
        if trace_id == 0 {
            return None;
        }
        self.lock().spans.get(&trace_id).map(|k| k.span.clone())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut state = self.parents.lock();
        if let Entry::Occupied(mut e) = state.spans.entry(self.trace_id) {
            e.get_mut().live = e.get().live.saturating_sub(1);
            if e.get().live == 0 {
                // The caller's span handle goes here, not later.
                e.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_known_while_its_calls_run_and_let_go_after() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let parents = Arc::new(LogParents::default());
            // Outside any span: nothing to register.
            assert!(parents.register(7).is_none());
            let caller = tracing::info_span!("caller");
            let _entered = caller.enter();
            assert!(parents.register(0).is_none());
            let a = parents.register(7).expect("registered");
            let b = parents.register(7).expect("registered");
            assert_eq!(parents.parent(7).and_then(|s| s.id()), caller.id());
            drop(a);
            // One call still runs under it.
            assert_eq!(parents.parent(7).and_then(|s| s.id()), caller.id());
            assert!(parents.parent(8).is_none());
            drop(b);
            // The last call ended: the handle is gone.
            assert!(parents.parent(7).is_none());
            // A full table refuses new spans until calls end.
            let held: Vec<_> = (1..=MAX_SPANS as u128)
                .map(|t| parents.register(t).expect("room"))
                .collect();
            assert!(parents.register(u128::MAX).is_none());
            drop(held);
            assert!(parents.register(u128::MAX).is_some());
        });
    }
}
