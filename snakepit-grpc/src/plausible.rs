//! How far a worker's counters may move: the host's bound on what a worker
//! reports it dropped or left unsent.
//!
//! A worker's counters are not trusted. A count it reports is plausible
//! when the worker could have handled that many events since it last
//! reported: the host allows [`MAX_WORKER_EVENTS_PER_SEC`] events per second
//! of its own clock, saved up for at most [`ALLOWANCE_WINDOW`] (a worker
//! starts with a full window). A Python worker handles well under a tenth of
//! that rate (an `emit` costs at least ~100 ns, and the GIL serializes a
//! process's threads), so an honest worker is never refused, while a worker
//! that lies can move the host's counters at most that fast in all.

use std::time::{Duration, Instant};

/// The most events per second a worker's counters may account for.
pub const MAX_WORKER_EVENTS_PER_SEC: u64 = 50_000_000;
/// The longest time the allowance saves up (a burst of at most
/// `MAX_WORKER_EVENTS_PER_SEC` x this many seconds).
pub const ALLOWANCE_WINDOW: Duration = Duration::from_secs(10);

/// Events a worker may still account for, refilled with time.
#[derive(Debug)]
pub(crate) struct Allowance {
    left: f64,
    at: Instant,
}

impl Default for Allowance {
    fn default() -> Self {
        Allowance {
            left: Self::cap(),
            at: Instant::now(),
        }
    }
}

impl Allowance {
    fn cap() -> f64 {
        MAX_WORKER_EVENTS_PER_SEC as f64 * ALLOWANCE_WINDOW.as_secs_f64()
    }

    /// Takes `n` events from the allowance if it holds that many (true);
    /// otherwise takes nothing (false).
    pub(crate) fn take(&mut self, n: u64) -> bool {
        let now = Instant::now();
        let earned = now.duration_since(self.at).as_secs_f64() * MAX_WORKER_EVENTS_PER_SEC as f64;
        self.left = (self.left + earned).min(Self::cap());
        self.at = now;
        let n = n as f64;
        if n > self.left {
            return false;
        }
        self.left -= n;
        true
    }
}

/// The rule for one cumulative counter: a counter moves forward by a
/// plausible delta; one that goes backwards starts again from zero (a new
/// worker process behind the same address), and what it reports then is
/// again checked. Returns the delta to report, `None` for an implausible
/// one (the baseline still moves to `now`, so one lie costs one report).
pub(crate) fn counter_delta(last: &mut u64, now: u64, allowance: &mut Allowance) -> Option<u64> {
    let delta = if now >= *last { now - *last } else { now };
    *last = now;
    if delta == 0 || allowance.take(delta) {
        Some(delta)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_alternating_between_max_and_zero_reports_nothing() {
        let mut allowance = Allowance::default();
        let mut last = 0;
        let mut total = 0u64;
        for i in 0..1000 {
            let now = if i % 2 == 0 { u64::MAX } else { 0 };
            total += counter_delta(&mut last, now, &mut allowance).unwrap_or(0);
        }
        assert_eq!(total, 0);
        // It still counts honest progress afterwards.
        assert_eq!(counter_delta(&mut last, 5, &mut allowance), Some(5));
        assert_eq!(counter_delta(&mut last, 12, &mut allowance), Some(7));
        // A restart (backwards) counts what the new process reports.
        assert_eq!(counter_delta(&mut last, 3, &mut allowance), Some(3));
    }

    #[test]
    fn the_allowance_bounds_the_total_a_liar_can_report() {
        let mut allowance = Allowance::default();
        let mut last = 0;
        let mut total = 0u64;
        // Up and down by a large but not absurd amount, many times at once.
        for i in 0..100 {
            let now = if i % 2 == 0 { 400_000_000 } else { 0 };
            total += counter_delta(&mut last, now, &mut allowance).unwrap_or(0);
        }
        // The window (5e8) plus what a few milliseconds earn.
        assert!(total <= 500_000_000 + MAX_WORKER_EVENTS_PER_SEC, "{total}");
        assert!(total >= 400_000_000, "{total}");
    }
}
