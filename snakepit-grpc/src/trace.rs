//! W3C traceparent: formatting the host call span, parsing a caller's.

/// `00-<32 hex trace id>-<16 hex span id>-01`. Written digit by digit: the
/// `format!` machinery was a few percent of the host's CPU per call.
pub(crate) fn format_traceparent(trace_id: u128, span_id: u64) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-00000000000000000000000000000000-0000000000000000-01";
    for (i, b) in out[3..35].iter_mut().enumerate() {
        *b = HEX[((trace_id >> (124 - 4 * i)) & 0xF) as usize];
    }
    for (i, b) in out[36..52].iter_mut().enumerate() {
        *b = HEX[((span_id >> (60 - 4 * i)) & 0xF) as usize];
    }
    // Every byte is ASCII: one copy, not a char-by-char push.
    String::from_utf8_lossy(&out).into_owned()
}

/// The trace id and span id of a traceparent, if it is well formed.
pub(crate) fn parse_traceparent(s: &str) -> Option<(u128, u64)> {
    let mut parts = s.split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let span = parts.next()?;
    let flags = parts.next()?;
    if version.len() != 2 || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let span_id = u64::from_str_radix(span, 16).ok()?;
    (trace_id != 0 && span_id != 0).then_some((trace_id, span_id))
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
        let tp = format_traceparent(0xabc, 0x12);
        assert_eq!(
            tp,
            "00-00000000000000000000000000000abc-0000000000000012-01"
        );
        assert_eq!(parse_traceparent(&tp), Some((0xabc, 0x12)));
        assert_eq!(parse_traceparent("00-zz-11-01"), None);
        assert_eq!(parse_trace_id("nope"), 0);
        for (t, sp) in [
            (u128::MAX, u64::MAX),
            (0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331),
            (1, 1),
        ] {
            let tp = format_traceparent(t, sp);
            assert_eq!(tp, format!("00-{t:032x}-{sp:016x}-01"));
            assert_eq!(parse_traceparent(&tp), Some((t, sp)));
        }
    }
}
