//! W3C traceparent: the typed parent a caller gives a call
//! ([`TraceParent`]), and the fast formatter of the host call span's.

use std::fmt;
use std::str::FromStr;

/// The `sampled` bit of W3C trace flags.
const SAMPLED: u8 = 0x01;

/// A W3C trace context parent (`traceparent` header, version `00`): the
/// trace id, the caller's span id and the trace flags.
///
/// Give it to a call with [`CallOptions::parent`](crate::CallOptions::parent):
/// the call's `grpc.call` span becomes a child of `span_id` in `trace_id`,
/// and the `sampled` flag carries through to the worker (a call whose
/// parent is not sampled is exported by no snakepit OTel sink, host or
/// worker spans alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The 128-bit trace id (never 0).
    pub trace_id: u128,
    /// The caller's 64-bit span id (never 0).
    pub span_id: u64,
    /// The W3C trace flags; bit 0 is `sampled`.
    pub flags: u8,
}

/// Why a string is not a valid W3C traceparent.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid traceparent {input:?}: {reason} (expected `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, \
     55 characters, ids not all zero)"
)]
pub struct TraceParentError {
    /// The rejected input (at most its first 64 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl TraceParent {
    /// A sampled parent.
    ///
    /// # Panics
    /// Never; an id of 0 makes an invalid parent that
    /// [`is_valid`](Self::is_valid) reports and calls ignore (new root).
    pub fn new(trace_id: u128, span_id: u64) -> Self {
        TraceParent {
            trace_id,
            span_id,
            flags: SAMPLED,
        }
    }

    /// The same parent with the `sampled` flag set or cleared.
    pub fn with_sampled(mut self, sampled: bool) -> Self {
        if sampled {
            self.flags |= SAMPLED;
        } else {
            self.flags &= !SAMPLED;
        }
        self
    }

    /// Is the `sampled` flag set?
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Are both ids non-zero (W3C: an all-zero id is invalid)?
    pub fn is_valid(&self) -> bool {
        self.trace_id != 0 && self.span_id != 0
    }

    /// Parses a `traceparent` header value. Surrounding whitespace is
    /// ignored and hex digits may be in either case; the version must not be
    /// `ff` and neither id may be all zero. A version above `00` is accepted
    /// when its first four fields have the `00` layout (W3C forward
    /// compatibility); anything after them must start with `-`.
    pub fn parse(s: &str) -> Result<TraceParent, TraceParentError> {
        let t = s.trim();
        let fail = |reason| TraceParentError {
            input: s.chars().take(64).collect(),
            reason,
        };
        if t.len() < 55 {
            return Err(fail("too short"));
        }
        if !t.is_ascii() {
            return Err(fail("not ASCII"));
        }
        let b = t.as_bytes();
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return Err(fail("fields are not separated by `-` at 2, 35 and 52"));
        }
        let hex = |r: std::ops::Range<usize>, what| {
            let part = &t[r];
            if part.bytes().all(|c| c.is_ascii_hexdigit()) {
                Ok(part)
            } else {
                Err(fail(what))
            }
        };
        let version = u8::from_str_radix(hex(0..2, "version is not 2 hex digits")?, 16)
            .map_err(|_| fail("version is not 2 hex digits"))?;
        if version == 0xff {
            return Err(fail("version ff is forbidden"));
        }
        if version == 0 && t.len() != 55 {
            return Err(fail("version 00 has exactly 55 characters"));
        }
        if t.len() > 55 && b[55] != b'-' {
            return Err(fail("text after the flags must start with `-`"));
        }
        let trace_id = u128::from_str_radix(hex(3..35, "trace id is not 32 hex digits")?, 16)
            .map_err(|_| fail("trace id is not 32 hex digits"))?;
        let span_id = u64::from_str_radix(hex(36..52, "span id is not 16 hex digits")?, 16)
            .map_err(|_| fail("span id is not 16 hex digits"))?;
        let flags = u8::from_str_radix(hex(53..55, "flags are not 2 hex digits")?, 16)
            .map_err(|_| fail("flags are not 2 hex digits"))?;
        if trace_id == 0 {
            return Err(fail("trace id is all zero"));
        }
        if span_id == 0 {
            return Err(fail("span id is all zero"));
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }
}

impl FromStr for TraceParent {
    type Err = TraceParentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceParent::parse(s)
    }
}

impl fmt::Display for TraceParent {
    /// The `00-<trace>-<span>-<flags>` header value, lowercase.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_traceparent(self.trace_id, self.span_id, self.flags))
    }
}

/// `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`. Written digit by
/// digit: the `format!` machinery was a few percent of the host's CPU per
/// call.
pub(crate) fn format_traceparent(trace_id: u128, span_id: u64, flags: u8) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    for (i, b) in out[3..35].iter_mut().enumerate() {
        *b = HEX[((trace_id >> (124 - 4 * i)) & 0xF) as usize];
    }
    for (i, b) in out[36..52].iter_mut().enumerate() {
        *b = HEX[((span_id >> (60 - 4 * i)) & 0xF) as usize];
    }
    out[53] = HEX[usize::from(flags >> 4)];
    out[54] = HEX[usize::from(flags & 0xF)];
    // Every byte is ASCII: one copy, not a char-by-char push.
    String::from_utf8_lossy(&out).into_owned()
}

/// A 32-hex-digit trace id as sent by Python (0 when absent or malformed).
pub(crate) fn parse_trace_id(s: &str) -> u128 {
    if s.len() != 32 {
        return 0;
    }
    u128::from_str_radix(s, 16).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let tp = format_traceparent(0xabc, 0x12, 1);
        assert_eq!(
            tp,
            "00-00000000000000000000000000000abc-0000000000000012-01"
        );
        assert_eq!(TraceParent::parse(&tp), Ok(TraceParent::new(0xabc, 0x12)));
        assert_eq!(parse_trace_id("nope"), 0);
        for (t, sp, fl) in [
            (u128::MAX, u64::MAX, 0u8),
            (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, 1),
            (1, 1, 0xff),
        ] {
            let tp = format_traceparent(t, sp, fl);
            assert_eq!(tp, format!("00-{t:032x}-{sp:016x}-{fl:02x}"));
            let p = TraceParent::parse(&tp).unwrap();
            assert_eq!((p.trace_id, p.span_id, p.flags), (t, sp, fl));
            assert_eq!(p.to_string(), tp);
        }
        let unsampled: TraceParent = " 00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-00 "
            .parse()
            .unwrap();
        assert!(!unsampled.is_sampled());
        assert!(unsampled.with_sampled(true).is_sampled());
        // A later version may append fields.
        assert!(TraceParent::parse(&format!(
            "01-{}-{}-01-extra",
            "a".repeat(32),
            "b".repeat(16)
        ))
        .is_ok());
    }

    #[test]
    fn bad_input_is_named_with_the_reason() {
        let good_trace = "0af7651916cd43dd8448eb211c80319c";
        let good_span = "b7ad6b7169203331";
        for (input, reason) in [
            ("00-zz-11-01".to_string(), "too short"),
            (format!("00_{good_trace}-{good_span}-01"), "separated"),
            (format!("ff-{good_trace}-{good_span}-01"), "version ff"),
            (format!("0g-{good_trace}-{good_span}-01"), "version"),
            (
                format!("00-{}-{good_span}-01", "0".repeat(32)),
                "trace id is all zero",
            ),
            (
                format!("00-{good_trace}-{}-01", "0".repeat(16)),
                "span id is all zero",
            ),
            (
                format!("00-{}x-{good_span}-01", &good_trace[1..]),
                "trace id",
            ),
            (
                format!("00-{good_trace}-{}+-01", &good_span[1..]),
                "span id",
            ),
            (format!("00-{good_trace}-{good_span}-0x"), "flags"),
            (format!("00-{good_trace}-{good_span}-01-more"), "exactly 55"),
            (
                format!("01-{good_trace}-{good_span}-01x"),
                "must start with",
            ),
        ] {
            let err = TraceParent::parse(&input).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(reason), "{input}: {msg}");
            assert!(msg.contains(&input[..20.min(input.len())]), "{msg}");
        }
    }
}
