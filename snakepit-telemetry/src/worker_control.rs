//! Runtime control of one worker: sampling, toggle and filters for a single
//! worker id (the reference system's `update_sampling("worker_1", …)`,
//! `toggle` and `update_filter`), on top of the pool-wide policy.
//!
//! An override sets some fields of the policy for one worker; the others
//! follow the pool-wide policy. The effective policy is pushed to that
//! worker alone over its telemetry stream, and to its replacement after a
//! restart: overrides are kept by worker id on the [`Telemetry`] instance
//! until [`WorkerControl::reset`]. The host does not filter again what such
//! a worker sends: the worker applied its own policy.
//!
//! ```
//! use snakepit_telemetry::Telemetry;
//!
//! let telemetry = Telemetry::new();
//! telemetry.control().set_sampling_rate(0.1).unwrap();
//! let w1 = telemetry.control().worker("default_1");
//! w1.set_sampling_rate(1.0).unwrap();          // all of worker 1's events
//! w1.set_filters(&[], &["python.memory.*"]).unwrap();
//! assert_eq!(telemetry.worker_policy("default_1").unwrap().sampling_rate, 1.0);
//! assert!(telemetry.worker_policy("default_2").is_none(), "the pool-wide policy");
//! w1.reset();
//! assert!(telemetry.worker_policy("default_1").is_none());
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use snakepit_core::{Pattern, PatternRate, Policy};
use tokio::sync::watch;

use crate::control::{check_rate, pattern_rate, patterns, upsert_pattern_rate, Control};
use crate::dispatch::Telemetry;
use crate::error::ControlError;

/// The fields one worker overrides; `None` follows the pool-wide policy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkerOverrides {
    /// Delivery on or off for this worker.
    pub enabled: Option<bool>,
    /// This worker's sampling rate.
    pub sampling_rate: Option<f64>,
    /// This worker's per-pattern rates (replacing the pool-wide list).
    pub pattern_rates: Option<Vec<PatternRate>>,
    /// This worker's allow and deny lists (replacing the pool-wide ones).
    pub filters: Option<(Vec<Pattern>, Vec<Pattern>)>,
    /// Bumped on every change of this worker's overrides.
    pub version: u64,
}

impl WorkerOverrides {
    /// `global` with these overrides applied. Its version grows with both
    /// the pool-wide policy's and the overrides' (a worker sees every
    /// change as newer).
    pub fn apply(&self, global: &Policy) -> Policy {
        let mut p = global.clone();
        if let Some(enabled) = self.enabled {
            p.enabled = enabled;
        }
        if let Some(rate) = self.sampling_rate {
            p.sampling_rate = rate;
        }
        if let Some(rates) = &self.pattern_rates {
            p.pattern_rates = rates.clone();
        }
        if let Some((allow, deny)) = &self.filters {
            p.allow = allow.clone();
            p.deny = deny.clone();
        }
        p.version = global.version + self.version;
        p
    }
}

/// The overrides of every worker, and a watch that fires on each change.
pub(crate) struct WorkerPolicies {
    overrides: Mutex<BTreeMap<String, WorkerOverrides>>,
    /// Does any worker have overrides? (One load on the hot path.)
    any: AtomicBool,
    changed: watch::Sender<u64>,
}

impl Default for WorkerPolicies {
    fn default() -> Self {
        WorkerPolicies {
            overrides: Mutex::new(BTreeMap::new()),
            any: AtomicBool::new(false),
            changed: watch::channel(0).0,
        }
    }
}

impl WorkerPolicies {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, WorkerOverrides>> {
        self.overrides.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, worker_id: &str, f: impl FnOnce(&mut WorkerOverrides)) {
        {
            let mut all = self.lock();
            let o = all.entry(worker_id.to_string()).or_default();
            f(o);
            o.version += 1;
            self.any.store(true, Ordering::Release);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    pub(crate) fn get(&self, worker_id: &str) -> Option<WorkerOverrides> {
        self.lock().get(worker_id).cloned()
    }

    fn contains(&self, worker_id: &str) -> bool {
        self.any.load(Ordering::Acquire) && self.lock().contains_key(worker_id)
    }

    fn remove(&self, worker_id: &str) {
        let removed = {
            let mut all = self.lock();
            let removed = all.remove(worker_id).is_some();
            self.any.store(!all.is_empty(), Ordering::Release);
            removed
        };
        if removed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl Telemetry {
    /// The effective policy of `worker_id` when it has overrides (see
    /// [`Control::worker`]); `None` when it follows the pool-wide policy.
    pub fn worker_policy(&self, worker_id: &str) -> Option<Arc<Policy>> {
        let o = self.worker_policies().get(worker_id)?;
        Some(Arc::new(o.apply(&self.current_policy())))
    }

    /// Does `worker_id` run a policy of its own? One atomic load while no
    /// worker does.
    pub fn has_worker_policy(&self, worker_id: &str) -> bool {
        self.worker_policies().contains(worker_id)
    }

    /// Emits an event a worker sent: not filtered again when the worker ran
    /// a policy of its own ([`Control::worker`]), else under the pool-wide
    /// policy as [`Telemetry::execute_with`].
    #[inline]
    pub fn execute_from_worker(
        &self,
        worker_id: &str,
        id: snakepit_core::EventId,
        measurements: &[snakepit_core::Field<'_>],
        metadata: &[snakepit_core::Field<'_>],
        context: snakepit_core::EventContext<'_>,
    ) {
        if self.has_worker_policy(worker_id) {
            self.execute_prefiltered(id, measurements, metadata, context);
        } else {
            self.execute_with(id, measurements, metadata, context);
        }
    }

    /// The policy `worker_id` runs: its effective one, else the pool-wide.
    pub fn policy_for_worker(&self, worker_id: &str) -> Arc<Policy> {
        self.worker_policy(worker_id)
            .unwrap_or_else(|| self.current_policy())
    }

    /// A receiver that sees every change of any worker's overrides.
    pub fn subscribe_worker_policies(&self) -> watch::Receiver<u64> {
        self.worker_policies().subscribe()
    }
}

impl Control {
    /// Control of one worker, by id (e.g. `default_1`).
    pub fn worker(&self, worker_id: &str) -> WorkerControl {
        WorkerControl {
            telemetry: self.telemetry().clone(),
            worker_id: worker_id.to_string(),
        }
    }
}

/// Runtime control of one worker (see the [module](self) docs).
#[derive(Clone, Debug)]
pub struct WorkerControl {
    telemetry: Telemetry,
    worker_id: String,
}

impl WorkerControl {
    /// The worker's effective policy.
    pub fn policy(&self) -> Arc<Policy> {
        self.telemetry.policy_for_worker(&self.worker_id)
    }

    fn set(&self, f: impl FnOnce(&mut WorkerOverrides)) -> Arc<Policy> {
        self.telemetry.worker_policies().update(&self.worker_id, f);
        self.policy()
    }

    /// Turns delivery of this worker's events on or off.
    pub fn set_enabled(&self, enabled: bool) -> Arc<Policy> {
        self.set(|o| o.enabled = Some(enabled))
    }

    /// Sets this worker's sampling rate (0.0 to 1.0).
    pub fn set_sampling_rate(&self, rate: f64) -> Result<Arc<Policy>, ControlError> {
        check_rate(rate)?;
        Ok(self.set(|o| o.sampling_rate = Some(rate)))
    }

    /// Sets this worker's rate for events matching `pattern` (its list
    /// starts from the pool-wide one on first use).
    pub fn set_pattern_rate(&self, pattern: &str, rate: f64) -> Result<Arc<Policy>, ControlError> {
        let entry = pattern_rate(pattern, rate)?;
        let base = self.policy().pattern_rates.clone();
        Ok(self.set(move |o| upsert_pattern_rate(o.pattern_rates.get_or_insert(base), entry)))
    }

    /// Replaces this worker's allow and deny lists (glob patterns; deny
    /// wins; an empty allow list lets everything through).
    pub fn set_filters(&self, allow: &[&str], deny: &[&str]) -> Result<Arc<Policy>, ControlError> {
        let filters = (patterns(allow)?, patterns(deny)?);
        Ok(self.set(move |o| o.filters = Some(filters)))
    }

    /// Drops this worker's overrides: it follows the pool-wide policy again.
    pub fn reset(&self) -> Arc<Policy> {
        self.telemetry.worker_policies().remove(&self.worker_id);
        self.policy()
    }
}
