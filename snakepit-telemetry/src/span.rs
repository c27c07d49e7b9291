//! Spans: a start event, then a stop or exception event with `duration`.
//!
//! `duration` is in nanoseconds from a monotonic clock. A span captures the
//! correlation id current when it starts and stamps all of its events with it
//! and with its span id, so sampling keeps or drops the span whole.

use std::time::Instant;

use snakepit_core::{EventContext, Field, SpanFamily, Value};

use crate::correlation::{get_correlation_id, CorrelationId};
use crate::dispatch::{now_ns, Telemetry};
use crate::rand::new_span_id;

/// Where a span sits in a trace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanOptions {
    /// The parent span (0 = none).
    pub parent_span_id: u64,
    /// The W3C trace id (0 = none).
    pub trace_id: u128,
}

/// An open span. Finish it with [`SpanGuard::stop`] or
/// [`SpanGuard::exception`]; dropping it unfinished emits the exception event
/// with `error_type` `panic` (while unwinding) or `dropped` (e.g. a cancelled
/// future).
#[must_use = "a span ends when it is stopped or dropped"]
pub struct SpanGuard<'a> {
    telemetry: &'a Telemetry,
    family: SpanFamily,
    metadata: &'a [Field<'a>],
    start: Instant,
    span_id: u64,
    options: SpanOptions,
    correlation: Option<CorrelationId>,
    finished: bool,
}

impl Telemetry {
    /// Runs `f` inside a span: emits `start`, then `stop` with `duration`, or
    /// `exception` if `f` panics (the panic continues).
    ///
    /// ```
    /// use snakepit_telemetry::Telemetry;
    /// use snakepit_core::builtin;
    ///
    /// let telemetry = Telemetry::new();
    /// let family = telemetry.catalog().span_family("snakepit.grpc.call").unwrap();
    /// let answer = telemetry.span(family, &[("tool", "predict".into())], || 42);
    /// assert_eq!(answer, 42);
    /// ```
    pub fn span<R>(&self, family: SpanFamily, metadata: &[Field<'_>], f: impl FnOnce() -> R) -> R {
        let guard = self.start_span(family, metadata);
        let out = f();
        guard.stop();
        out
    }

    /// Opens a span and emits its start event.
    pub fn start_span<'a>(
        &'a self,
        family: SpanFamily,
        metadata: &'a [Field<'a>],
    ) -> SpanGuard<'a> {
        self.start_span_with(family, metadata, SpanOptions::default())
    }

    /// Opens a span with an explicit parent and trace id.
    pub fn start_span_with<'a>(
        &'a self,
        family: SpanFamily,
        metadata: &'a [Field<'a>],
        options: SpanOptions,
    ) -> SpanGuard<'a> {
        let guard = SpanGuard {
            telemetry: self,
            family,
            metadata,
            start: Instant::now(),
            span_id: new_span_id(),
            options,
            correlation: get_correlation_id(),
            finished: false,
        };
        let system_time = now_ns();
        guard.emit(
            family.start,
            &[("system_time", Value::Int(system_time as i64))],
            metadata,
            system_time,
        );
        guard
    }
}

impl<'a> SpanGuard<'a> {
    /// This span's id.
    pub fn span_id(&self) -> u64 {
        self.span_id
    }

    /// The correlation id this span carries.
    pub fn correlation_id(&self) -> Option<&CorrelationId> {
        self.correlation.as_ref()
    }

    /// Nanoseconds since the span started.
    pub fn elapsed_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn emit(
        &self,
        id: snakepit_core::EventId,
        measurements: &[Field<'_>],
        metadata: &[Field<'_>],
        ts: u64,
    ) {
        self.telemetry.execute_with(
            id,
            measurements,
            metadata,
            EventContext {
                timestamp_ns: ts,
                correlation_id: self.correlation.as_ref().map(CorrelationId::as_str),
                span_id: self.span_id,
                parent_span_id: self.options.parent_span_id,
                trace_id: self.options.trace_id,
            },
        );
    }

    fn finish(
        &mut self,
        id: snakepit_core::EventId,
        extra_measurements: &[Field<'_>],
        extra_metadata: &[Field<'_>],
    ) {
        self.finished = true;
        let duration = Value::Int(self.elapsed_ns() as i64);
        let mut measurements: Vec<Field<'_>> = Vec::with_capacity(1 + extra_measurements.len());
        measurements.push(("duration", duration));
        measurements.extend(extra_measurements.iter().map(|(k, v)| (*k, v.reborrow())));
        if extra_metadata.is_empty() {
            self.emit(id, &measurements, self.metadata, 0);
        } else {
            let mut metadata: Vec<Field<'_>> = self
                .metadata
                .iter()
                .map(|(k, v)| (*k, v.reborrow()))
                .collect();
            metadata.extend(extra_metadata.iter().map(|(k, v)| (*k, v.reborrow())));
            self.emit(id, &measurements, &metadata, 0);
        }
    }

    /// Ends the span normally.
    pub fn stop(self) {
        self.stop_with(&[], &[]);
    }

    /// Ends the span normally, adding measurements and metadata to the stop event.
    pub fn stop_with(mut self, measurements: &[Field<'_>], metadata: &[Field<'_>]) {
        let id = self.family.stop;
        self.finish(id, measurements, metadata);
    }

    /// Ends the span with an error.
    pub fn exception(self, error_type: &str, message: &str) {
        self.exception_with(error_type, message, &[]);
    }

    /// Ends the span with an error, adding metadata to the exception event.
    pub fn exception_with(mut self, error_type: &str, message: &str, metadata: &[Field<'_>]) {
        let mut md: Vec<Field<'_>> = vec![
            ("error_type", Value::from(error_type)),
            ("error_message", Value::from(message)),
        ];
        md.extend(metadata.iter().map(|(k, v)| (*k, v.reborrow())));
        let id = self.family.exception;
        self.finish(id, &[], &md);
    }
}

impl Drop for SpanGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let (kind, message) = if std::thread::panicking() {
                ("panic", "the code inside the span panicked")
            } else {
                ("dropped", "the span was dropped before it finished")
            };
            let id = self.family.exception;
            self.finish(
                id,
                &[],
                &[
                    ("error_type", Value::from(kind)),
                    ("error_message", Value::from(message)),
                ],
            );
        }
    }
}
