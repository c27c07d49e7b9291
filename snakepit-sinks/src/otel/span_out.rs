//! Where a finished span goes: the OTLP bytes of the built-in exporter, or
//! (feature `otel-sdk`) the application's SDK pipeline. Pairing and span
//! assembly write every span through this one trait, whatever takes it.

use super::wire::SpanRef;

/// Takes finished spans from the span assembly ([`super::pairing`]).
pub(crate) trait SpanOut {
    /// Takes one finished span.
    fn put(&mut self, span: &SpanRef<'_>);
}

/// A batch of `ScopeSpans.spans` entries in OTLP protobuf.
impl SpanOut for Vec<u8> {
    #[inline]
    fn put(&mut self, span: &SpanRef<'_>) {
        span.encode(2, self);
    }
}
