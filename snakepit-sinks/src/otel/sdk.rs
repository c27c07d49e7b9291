//! The OpenTelemetry sink into the application's own `opentelemetry_sdk`
//! pipeline (feature `otel-sdk`): the same spans as [`OtelSink`], from the
//! same span assembly (call spans from their end event, user spans paired
//! from start and end), each handed to the application's span processors
//! as an [`SpanData`] of the instrumentation scope `snakepit`. The
//! processors' exporter, resource and batching are the application's; the
//! built-in OTLP/HTTP exporter is not involved.
//!
//! [`OtelSink`]: super::OtelSink

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Event as OtelEvent, SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, SpanData, SpanEvents, SpanExporter, SpanLinks, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use snakepit_core::{Event, Sink, SinkError, SpanRole};
use snakepit_telemetry::{Telemetry, UnsampledTraces};

use super::export::report_dropped;
use super::fields::FieldValue;
use super::pairing::{self, Pairing};
use super::span_out::SpanOut;
use super::wire::SpanRef;
use super::{families, proto, FamilyTable, OtelError, OtelStats, SpanEvent, SpanInfo};

/// User spans open at once by default before the oldest is evicted (the
/// built-in sink's default `max_open_spans`).
const DEFAULT_MAX_OPEN: usize = 10_000;

/// Builds an [`OtelSdkSink`]: the application's span processors (or a
/// batch exporter) and the resource they report, as on the application's
/// `SdkTracerProvider` builder.
#[derive(Debug)]
pub struct OtelSdkSinkBuilder {
    telemetry: Telemetry,
    processors: Vec<Box<dyn SpanProcessor>>,
    resource: Option<Resource>,
    max_open_spans: usize,
}

impl OtelSdkSinkBuilder {
    /// Adds a span processor of the application's pipeline. Its `on_end`
    /// runs on the thread that emits the span's end event (the caller's for
    /// host spans, the telemetry stream's for worker spans), so it must
    /// not block: a `BatchSpanProcessor` (which only enqueues) is the one
    /// to use; a `SimpleSpanProcessor` would export on that thread.
    pub fn with_span_processor<P: SpanProcessor + 'static>(mut self, processor: P) -> Self {
        self.processors.push(Box::new(processor));
        self
    }

    /// Adds a `BatchSpanProcessor` with its default batch settings in
    /// front of `exporter`.
    pub fn with_batch_exporter<E: SpanExporter + 'static>(self, exporter: E) -> Self {
        self.with_span_processor(BatchSpanProcessor::builder(exporter).build())
    }

    /// The resource the processors report (pass the one of the
    /// application's tracer provider, so that both report one service).
    /// Without one, the SDK's default resource (`service.name` from
    /// `OTEL_SERVICE_NAME`, else `unknown_service`).
    pub fn with_resource(mut self, resource: Resource) -> Self {
        self.resource = Some(resource);
        self
    }

    /// User spans open at once (started, not yet ended) before the oldest
    /// is evicted and counted in [`OtelStats::evicted`]; default 10,000,
    /// at least 1.
    pub fn with_max_open_spans(mut self, max_open_spans: usize) -> Self {
        self.max_open_spans = max_open_spans;
        self
    }

    /// The sink, to attach with `telemetry.attach_sink`. Fails when no
    /// processor or exporter was given.
    pub fn build(self) -> Result<OtelSdkSink, OtelError> {
        if self.processors.is_empty() {
            return Err(OtelError::NoSdkPipeline);
        }
        let resource = self.resource.unwrap_or_else(|| Resource::builder().build());
        let mut processors = self.processors;
        for p in &mut processors {
            p.set_resource(&resource);
        }
        let (families, infos) = families(self.telemetry.catalog());
        Ok(OtelSdkSink {
            reported: Mutex::new([0; 2]),
            families,
            pairing: Mutex::new(Pairing::new(self.max_open_spans, infos.clone())),
            infos,
            processors,
            scope: InstrumentationScope::builder("snakepit")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            unsampled: self.telemetry.unsampled_traces().clone(),
            telemetry: self.telemetry,
            counters: SdkCounters::default(),
            closed: AtomicBool::new(false),
        })
    }
}

#[derive(Default)]
struct SdkCounters {
    handed: AtomicU64,
    evicted: AtomicU64,
    sampled_out: AtomicU64,
    after_shutdown: AtomicU64,
}

/// The OpenTelemetry sink of an application with its own `opentelemetry_sdk`
/// pipeline: snakepit's spans (`grpc.call`, `python.call`,
/// `tool.execution`, user spans) go to the application's span processors,
/// with its resource, beside the application's own spans. Build it with
/// [`OtelSdkSink::builder`]; attach it with `telemetry.attach_sink`.
///
/// Sampling is the trace's: a trace whose caller marked it not sampled
/// (the application's sampler said no to the caller's span, whose context
/// reaches the call; see `Telemetry::unsampled_traces`) gives no span;
/// every other span is handed over with the sampled flag set.
/// [`Sink::flush`] and [`Sink::shutdown`] flush and shut down the
/// processors given to the builder.
pub struct OtelSdkSink {
    families: FamilyTable,
    infos: Arc<[SpanInfo]>,
    pairing: Mutex<Pairing>,
    processors: Vec<Box<dyn SpanProcessor>>,
    scope: InstrumentationScope,
    unsampled: UnsampledTraces,
    counters: SdkCounters,
    closed: AtomicBool,
    /// Drop reports go here, on flush and shutdown.
    telemetry: Telemetry,
    /// Evictions and late events reported so far.
    reported: Mutex<[u64; 2]>,
}

impl std::fmt::Debug for OtelSdkSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelSdkSink")
            .field("processors", &self.processors)
            .field("stats", &self.stats())
            .finish()
    }
}

impl OtelSdkSink {
    /// A builder for a sink of `telemetry`'s spans.
    pub fn builder(telemetry: &Telemetry) -> OtelSdkSinkBuilder {
        OtelSdkSinkBuilder {
            telemetry: telemetry.clone(),
            processors: Vec::new(),
            resource: None,
            max_open_spans: DEFAULT_MAX_OPEN,
        }
    }

    /// What the sink did so far. `exported` counts spans handed to the
    /// processors (what their exporter did with them is theirs to say);
    /// `dropped_queue_full` counts span events that came after shutdown.
    /// Evictions and late events are also reported as
    /// `snakepit.telemetry.events.dropped` (`sink = otel`, reason
    /// `unmatched_span` or `queue_full`) on every flush and at shutdown.
    pub fn stats(&self) -> OtelStats {
        let c = &self.counters;
        OtelStats {
            exported: c.handed.load(Ordering::Relaxed),
            dropped_queue_full: c.after_shutdown.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            sampled_out: c.sampled_out.load(Ordering::Relaxed),
            ..OtelStats::default()
        }
    }

    fn hand_over(&self, spans: Vec<SpanData>) {
        self.counters
            .handed
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        for span in spans {
            // The last processor takes the span itself.
            if let Some((last, rest)) = self.processors.split_last() {
                for p in rest {
                    p.on_end(span.clone());
                }
                last.on_end(span);
            }
        }
    }

    /// Reports the spans lost since the last report (evicted starts, events
    /// after shutdown) as `snakepit.telemetry.events.dropped`.
    fn report_drops(&self) {
        let c = &self.counters;
        let now = [
            c.evicted.load(Ordering::Relaxed),
            c.after_shutdown.load(Ordering::Relaxed),
        ];
        let before = std::mem::replace(
            &mut *self.reported.lock().unwrap_or_else(|p| p.into_inner()),
            now,
        );
        report_dropped(
            &self.telemetry,
            &[
                (now[0] - before[0], "unmatched_span"),
                (now[1] - before[1], "queue_full"),
            ],
        );
    }

    fn each(
        &self,
        what: &str,
        f: impl Fn(&dyn SpanProcessor) -> OTelSdkResult,
    ) -> Result<(), SinkError> {
        let errors: Vec<String> = self
            .processors
            .iter()
            .filter_map(|p| f(p.as_ref()).err().map(|e| e.to_string()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SinkError::Failed {
                sink: "otel".into(),
                message: format!(
                    "{what} of the application's span processor: {}",
                    errors.join("; ")
                ),
            })
        }
    }
}

/// Finished spans as [`SpanData`] of one scope.
struct ToSdk<'a> {
    scope: &'a InstrumentationScope,
    spans: Vec<SpanData>,
}

impl SpanOut for ToSdk<'_> {
    fn put(&mut self, span: &SpanRef<'_>) {
        self.spans.push(span_data(span, self.scope));
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn time(unix_ns: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(unix_ns)
}

fn span_id(id: u64) -> SpanId {
    SpanId::from_bytes(id.to_be_bytes())
}

fn attribute(key: &[u8], value: &FieldValue<'_>) -> KeyValue {
    let value = match value {
        FieldValue::Int(i) => Value::I64(*i),
        FieldValue::Float(f) => Value::F64(*f),
        FieldValue::Str(s) => Value::from(text(s)),
    };
    KeyValue::new(text(key), value)
}

/// One assembled span as the SDK's exporters take it: the same ids,
/// parent, name, kind, times, attributes, `exception` event and status as
/// the built-in exporter writes, sampled.
fn span_data(span: &SpanRef<'_>, scope: &InstrumentationScope) -> SpanData {
    let (events, status) = match &span.exception {
        Some(e) => {
            let mut attributes = vec![
                KeyValue::new("exception.type", text(e.error_type)),
                KeyValue::new("exception.message", text(e.message)),
            ];
            if !e.stacktrace.is_empty() {
                attributes.push(KeyValue::new("exception.stacktrace", text(e.stacktrace)));
            }
            let event = OtelEvent::new("exception", time(e.time_ns), attributes, 0);
            let mut events = SpanEvents::default();
            events.events.push(event);
            (events, Status::error(text(e.message)))
        }
        None => (SpanEvents::default(), Status::Unset),
    };
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(span.trace_id.to_be_bytes()),
            span_id(span.span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: span_id(span.parent_span_id),
        parent_span_is_remote: false,
        span_kind: match span.kind {
            proto::span_kind::CLIENT => SpanKind::Client,
            proto::span_kind::SERVER => SpanKind::Server,
            _ => SpanKind::Internal,
        },
        name: Cow::Owned(text(span.name)),
        start_time: time(span.start_ns),
        end_time: time(span.end_ns),
        attributes: span
            .fixed_attributes
            .iter()
            .chain(span.attributes)
            .map(|(k, v)| attribute(k, v))
            .collect(),
        dropped_attributes_count: 0,
        events,
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

impl Sink for OtelSdkSink {
    fn name(&self) -> &str {
        "otel"
    }

    fn handle(&self, event: &Event<'_>) {
        let Some(&Some((role, family, direct))) = self.families.get(event.id().index()) else {
            return;
        };
        let ends = role != SpanRole::Start;
        if self.unsampled.contains(event.trace_id()) {
            if ends {
                self.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if self.closed.load(Ordering::Relaxed) {
            self.counters.after_shutdown.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut out = ToSdk {
            scope: &self.scope,
            spans: Vec::new(),
        };
        if direct {
            // A span needs an id; a span-less end is not exportable.
            if event.span_id() == 0 {
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let trace_id = match event.trace_id() {
                0 => pairing::derived_trace(event.span_id(), event.parent_span_id()),
                t => t,
            };
            let info = &self.infos[usize::from(family)];
            pairing::encode_event(info, role, event, trace_id, &mut out);
        } else {
            let copy = SpanEvent::of(role, family, event);
            let (_, evicted) = self
                .pairing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .accept(copy, &mut out);
            if evicted > 0 {
                self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
            }
        }
        // Outside the pairing lock: a processor may take its own.
        self.hand_over(out.spans);
    }

    fn flush(&self, _timeout: Duration) -> Result<(), SinkError> {
        self.report_drops();
        self.each("flush", |p| p.force_flush())
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), SinkError> {
        if self.closed.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        let open = self
            .pairing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .abandon();
        self.counters.evicted.fetch_add(open, Ordering::Relaxed);
        self.report_drops();
        self.each("shutdown", |p| p.shutdown_with_timeout(timeout))
    }
}
