//! Runtime control: toggle, sampling and filters, changed without restarting
//! anything.
//!
//! Every change produces a new [`Policy`] with a higher `version`, rebuilds
//! the dispatcher's per-event gates at once, and is published to
//! subscribers ([`Control::subscribe`]) so the gRPC layer can push it to every
//! live worker; workers started later receive the current policy at spawn.
//! See [`snakepit_core::policy`] for the exact sampling rule shared with
//! Python.

use std::sync::Arc;

use snakepit_core::{Pattern, PatternRate, Policy};
use tokio::sync::watch;

use crate::dispatch::Telemetry;
use crate::error::ControlError;

/// A receiver that sees every policy change (the latest value wins).
pub type PolicyWatch = watch::Receiver<Arc<Policy>>;

/// Runtime control of one telemetry instance. Cheap to clone.
///
/// ```
/// use snakepit_telemetry::Telemetry;
///
/// let telemetry = Telemetry::new();
/// let control = telemetry.control();
/// control.set_sampling_rate(0.5).unwrap();
/// control.set_pattern_rate("python.*", 0.1).unwrap();
/// control.set_filters(&[], &["pool.status"]).unwrap();
/// assert!(control.set_sampling_rate(1.5).is_err());
/// assert_eq!(control.policy().sampling_rate, 0.5);
/// ```
#[derive(Clone, Debug)]
pub struct Control {
    telemetry: Telemetry,
}

impl Telemetry {
    /// Runtime control of this instance.
    pub fn control(&self) -> Control {
        Control {
            telemetry: self.clone(),
        }
    }
}

impl Control {
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<Policy> {
        self.telemetry.current_policy()
    }

    /// Replaces the whole policy (its `version` is assigned here).
    pub fn set_policy(&self, policy: Policy) -> Result<Arc<Policy>, ControlError> {
        policy.validate()?;
        Ok(self.telemetry.replace_policy(|p| *p = policy))
    }

    /// Turns delivery of every event on or off.
    pub fn set_enabled(&self, enabled: bool) -> Arc<Policy> {
        self.telemetry.replace_policy(|p| p.enabled = enabled)
    }

    /// Is delivery on?
    pub fn is_enabled(&self) -> bool {
        self.policy().enabled
    }

    /// Sets the global sampling rate (0.0 to 1.0).
    pub fn set_sampling_rate(&self, rate: f64) -> Result<Arc<Policy>, ControlError> {
        check_rate(rate)?;
        Ok(self.telemetry.replace_policy(|p| p.sampling_rate = rate))
    }

    /// Sets the rate for events matching `pattern`, replacing an entry with
    /// the same pattern or appending a new one (first match wins).
    pub fn set_pattern_rate(&self, pattern: &str, rate: f64) -> Result<Arc<Policy>, ControlError> {
        let entry = pattern_rate(pattern, rate)?;
        Ok(self
            .telemetry
            .replace_policy(move |p| upsert_pattern_rate(&mut p.pattern_rates, entry)))
    }

    /// Removes every per-pattern rate.
    pub fn clear_pattern_rates(&self) -> Arc<Policy> {
        self.telemetry.replace_policy(|p| p.pattern_rates.clear())
    }

    /// Replaces the allow and deny lists (glob patterns; deny wins; an empty
    /// allow list lets everything through).
    pub fn set_filters(&self, allow: &[&str], deny: &[&str]) -> Result<Arc<Policy>, ControlError> {
        let (allow, deny) = (patterns(allow)?, patterns(deny)?);
        Ok(self.telemetry.replace_policy(move |p| {
            p.allow = allow;
            p.deny = deny;
        }))
    }

    /// A receiver of every future policy change; it starts with the current
    /// policy marked as seen.
    pub fn subscribe(&self) -> PolicyWatch {
        self.telemetry.subscribe_policy()
    }
}

/// A sampling rate, checked (0.0 to 1.0) as the policy checks it.
pub(crate) fn check_rate(rate: f64) -> Result<(), ControlError> {
    Policy {
        sampling_rate: rate,
        ..Policy::default()
    }
    .validate()?;
    Ok(())
}

/// A per-pattern rate, its pattern and rate checked.
pub(crate) fn pattern_rate(pattern: &str, rate: f64) -> Result<PatternRate, ControlError> {
    let entry = PatternRate {
        pattern: Pattern::new(pattern)?,
        rate,
    };
    Policy {
        pattern_rates: vec![entry.clone()],
        ..Policy::default()
    }
    .validate()?;
    Ok(entry)
}

/// Replaces the entry of `rates` with the same pattern, or appends `entry`.
pub(crate) fn upsert_pattern_rate(rates: &mut Vec<PatternRate>, entry: PatternRate) {
    match rates.iter_mut().find(|e| e.pattern == entry.pattern) {
        Some(existing) => existing.rate = entry.rate,
        None => rates.push(entry),
    }
}

/// Glob patterns compiled; the first bad one is the error.
pub(crate) fn patterns(list: &[&str]) -> Result<Vec<Pattern>, ControlError> {
    list.iter()
        .map(|s| Pattern::new(s).map_err(Into::into))
        .collect()
}
