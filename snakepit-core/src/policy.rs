//! The telemetry policy: toggle, sampling and filters.
//!
//! The same policy is applied by Python workers (before they pay for
//! encoding) and by the host (as a guard), so its decisions are defined
//! exactly here and mirrored bit for bit by `snakepit_bridge`:
//!
//! * **Filters**: an event passes when no `deny` pattern matches it and either
//!   `allow` is empty or an `allow` pattern matches it. Deny wins.
//! * **Rate**: the first `pattern_rates` entry (in order) whose pattern matches
//!   the event, else `sampling_rate`. For an event whose name ends in `.stop`
//!   or `.exception`, the rate of the same name ending in `.start` is used, so
//!   one span is never split.
//! * **Key**: the CRC-32 (IEEE) of the UTF-8 correlation id when the event has
//!   one; else its span id when nonzero; else a random number.
//! * **Decision**: keep iff `key * 0x9E3779B97F4A7C15 (mod 2^64) < floor(rate * 2^64)`,
//!   with rate 1 keeping everything and rate 0 nothing. Every event of one
//!   correlation id (or one span) gets the same decision.

use serde::{Deserialize, Serialize};

use crate::error::PolicyError;
use crate::pattern::Pattern;

/// Multiplier that spreads sampling keys over the whole `u64` range.
pub const SAMPLING_MULTIPLIER: u64 = 0x9E37_79B9_7F4A_7C15;

/// A sampling rate for events matching a pattern.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternRate {
    /// Which events (see [`Pattern`]).
    pub pattern: Pattern,
    /// Fraction kept, 0.0 to 1.0.
    pub rate: f64,
}

/// What the host and the workers do with events. Cheap to clone; changed at
/// run time through `snakepit_telemetry::Control`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// When false, no event is delivered anywhere.
    pub enabled: bool,
    /// Fraction of events (or spans, or correlation ids) kept, 0.0 to 1.0.
    pub sampling_rate: f64,
    /// Per-pattern rates; the first match wins.
    pub pattern_rates: Vec<PatternRate>,
    /// When non-empty, only matching events pass.
    pub allow: Vec<Pattern>,
    /// Matching events never pass (deny wins over allow).
    pub deny: Vec<Pattern>,
    /// Bumped on every change; workers report the version they applied.
    pub version: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            sampling_rate: 1.0,
            pattern_rates: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            version: 0,
        }
    }
}

/// How an event is sampled, precomputed from a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Rate 1: keep every event.
    All,
    /// Rate 0: drop every event.
    Nothing,
    /// Keep when the mixed key is below the threshold (`floor(rate * 2^64)`).
    Below(u64),
}

impl Sampling {
    /// Precomputes the decision for a rate in `[0, 1]`.
    pub fn from_rate(rate: f64) -> Sampling {
        if rate >= 1.0 {
            Sampling::All
        } else if rate.is_nan() || rate <= 0.0 {
            Sampling::Nothing
        } else {
            // 2^64 as f64 is exact; the product is < 2^64 for rate < 1.
            match (rate * 18_446_744_073_709_551_616.0) as u64 {
                0 => Sampling::Nothing,
                t => Sampling::Below(t),
            }
        }
    }

    /// The decision for a key (see [`sampling_key`]).
    #[inline]
    pub fn keep(self, key: u64) -> bool {
        match self {
            Sampling::All => true,
            Sampling::Nothing => false,
            Sampling::Below(t) => key.wrapping_mul(SAMPLING_MULTIPLIER) < t,
        }
    }
}

/// The sampling key of an event: CRC-32 of the correlation id, else the span
/// id, else `None` (the caller draws a random key).
#[inline]
pub fn sampling_key(correlation_id: Option<&str>, span_id: u64) -> Option<u64> {
    match correlation_id {
        Some(c) if !c.is_empty() => Some(u64::from(crc32fast::hash(c.as_bytes()))),
        _ => (span_id != 0).then_some(span_id),
    }
}

/// The precomputed fate of one event under a policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Enabled and not filtered out.
    pub pass: bool,
    /// How the event is sampled when it passes.
    pub sampling: Sampling,
}

impl Gate {
    /// A gate that lets everything through.
    pub const OPEN: Gate = Gate {
        pass: true,
        sampling: Sampling::All,
    };
    /// A gate that lets nothing through.
    pub const CLOSED: Gate = Gate {
        pass: false,
        sampling: Sampling::Nothing,
    };
}

impl Policy {
    /// Checks every rate is within `[0, 1]`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        check_rate("sampling_rate", self.sampling_rate)?;
        for pr in &self.pattern_rates {
            check_rate(pr.pattern.as_str(), pr.rate)?;
        }
        Ok(())
    }

    /// Does the filter let this event (full dotted name) through?
    pub fn allows(&self, full_name: &str) -> bool {
        if self.deny.iter().any(|p| p.matches_event(full_name)) {
            return false;
        }
        self.allow.is_empty() || self.allow.iter().any(|p| p.matches_event(full_name))
    }

    /// The sampling rate of an event (full dotted name), after the span rule.
    pub fn rate_for(&self, full_name: &str) -> f64 {
        let anchor = span_anchor(full_name);
        let anchor = anchor.as_deref().unwrap_or(full_name);
        self.pattern_rates
            .iter()
            .find(|pr| pr.pattern.matches_event(anchor))
            .map_or(self.sampling_rate, |pr| pr.rate)
    }

    /// The precomputed gate for an event (full dotted name).
    pub fn gate(&self, full_name: &str) -> Gate {
        if !self.enabled || !self.allows(full_name) {
            return Gate::CLOSED;
        }
        Gate {
            pass: true,
            sampling: Sampling::from_rate(self.rate_for(full_name)),
        }
    }
}

/// `x.start` for `x.stop` / `x.exception`, else `None`.
fn span_anchor(name: &str) -> Option<String> {
    let prefix = name
        .strip_suffix(".stop")
        .or_else(|| name.strip_suffix(".exception"))?;
    Some(format!("{prefix}.start"))
}

fn check_rate(what: &str, rate: f64) -> Result<(), PolicyError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(PolicyError::RateOutOfRange {
            what: what.to_string(),
            rate,
        })
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Pattern::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_one_and_zero() {
        assert!(Sampling::from_rate(1.0).keep(12345));
        assert!(!Sampling::from_rate(0.0).keep(12345));
        assert_eq!(Sampling::from_rate(f64::NAN), Sampling::Nothing);
    }

    #[test]
    fn span_events_share_the_start_rate() {
        let p = Policy {
            pattern_rates: vec![PatternRate {
                pattern: Pattern::new("*.start").unwrap(),
                rate: 0.25,
            }],
            ..Policy::default()
        };
        assert_eq!(p.rate_for("snakepit.grpc.call.stop"), 0.25);
        assert_eq!(p.rate_for("snakepit.grpc.call.exception"), 0.25);
        assert_eq!(p.rate_for("snakepit.pool.status"), 1.0);
    }

    #[test]
    fn key_prefers_correlation_id() {
        assert_eq!(
            sampling_key(Some("abc"), 7),
            Some(u64::from(crc32fast::hash(b"abc")))
        );
        assert_eq!(sampling_key(Some(""), 7), Some(7));
        assert_eq!(sampling_key(None, 0), None);
    }
}
