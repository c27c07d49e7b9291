//! The caller's `tracing` span of each call, by the call's trace id, so a
//! Python log record logged during the call is emitted inside it (and a
//! `tracing-opentelemetry` layer puts it in the call's trace).
//!
//! A call registers the span current where it began, if there is one (a
//! call made outside any `tracing` span registers nothing and costs one
//! look-up of the current span). Log records travel on the telemetry stream
//! and arrive after the call's reply, so a span stays known for
//! [`GRACE`] after its last call ends. At most [`MAX_SPANS`] are held; past
//! that, a new call's logs carry their ids without a parent span.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long a span stays known after its last call ended.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// Spans held at most (calls in flight and recently ended).
pub(crate) const MAX_SPANS: usize = 1024;

struct Known {
    span: tracing::Span,
    /// Calls in flight under it.
    live: u32,
    /// When its last call ended (`live` is 0).
    ended: Option<Instant>,
}

#[derive(Default)]
struct State {
    spans: HashMap<u128, Known>,
    /// Spans whose calls all ended, oldest first (an id may be listed again
    /// if a call under it began and ended since: only its last end counts).
    ended: VecDeque<(u128, Instant)>,
}

impl State {
    /// Forgets spans ended more than [`GRACE`] ago, and the oldest ended
    /// ones while the table is full.
    fn prune(&mut self, now: Instant) {
        while let Some(&(id, at)) = self.ended.front() {
            if now.duration_since(at) < GRACE && self.spans.len() < MAX_SPANS {
                break;
            }
            self.ended.pop_front();
            if let Entry::Occupied(e) = self.spans.entry(id) {
                if e.get().live == 0 && e.get().ended == Some(at) {
                    e.remove();
                }
            }
        }
    }
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
        state.prune(Instant::now());
        let full = state.spans.len() >= MAX_SPANS;
        match state.spans.entry(trace_id) {
            Entry::Occupied(mut e) => {
                let known = e.get_mut();
                known.live += 1;
                known.ended = None;
            }
            Entry::Vacant(_) if full => return None,
            Entry::Vacant(e) => {
                e.insert(Known {
                    span,
                    live: 1,
                    ended: None,
                });
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
        let mut state = self.lock();
        state.prune(Instant::now());
        state.spans.get(&trace_id).map(|k| k.span.clone())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut state = self.parents.lock();
        let now = Instant::now();
        let Some(known) = state.spans.get_mut(&self.trace_id) else {
            return;
        };
        known.live = known.live.saturating_sub(1);
        if known.live == 0 {
            known.ended = Some(now);
            state.ended.push_back((self.trace_id, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_is_known_while_its_calls_run_and_for_a_grace_after() {
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
            drop(b);
            // Ended, within the grace.
            assert_eq!(parents.parent(7).and_then(|s| s.id()), caller.id());
            assert!(parents.parent(8).is_none());
            // Past the grace it is forgotten.
            parents.lock().prune(Instant::now() + GRACE);
            assert!(parents.parent(7).is_none());
            // A full table refuses new spans but forgets ended ones first.
            let held: Vec<_> = (1..=MAX_SPANS as u128)
                .map(|t| parents.register(t).expect("room"))
                .collect();
            assert!(parents.register(u128::MAX).is_none());
            drop(held);
            assert!(parents.register(u128::MAX).is_some());
        });
    }
}
