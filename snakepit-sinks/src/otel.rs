//! The OpenTelemetry sink: spans from start/stop/exception events,
//! exported as OTLP/HTTP protobuf in batches from the sink's own thread.
//!
//! * Every complete span family of the catalog is a span: `grpc.call`
//!   (kind client), `python.call` (kind server), `tool.execution`, and user
//!   spans opened in Python with `telemetry.span(name)` (named `name`; the
//!   generic `python.span` events carry it as `span_name`). Names drop the
//!   `snakepit.` prefix, and the `python.` prefix except for `python.call`.
//! * The three spans of every call (`grpc.call`, `python.call`,
//!   `tool.execution`) are built from their stop or exception alone: our own
//!   code emits those with the start's metadata and span context, and their
//!   `duration` places the start. Their starts are ignored. User span events
//!   are paired by span id, so metadata only a start carried is kept. The
//!   span's parent is the event's `parent_span_id` and its trace the event's
//!   `trace_id`, so a host call span, the Python call span inside it and the
//!   user spans inside that form one trace. A span whose trace id is 0 takes
//!   its open parent's, or one derived from its parent's id (else its own).
//! * An exception sets status `ERROR` (message: `error_message`, else
//!   `error_type`) and adds an `exception` span event (`exception.type`,
//!   `exception.message`, and `exception.stacktrace` from a `traceback`
//!   field). Metadata and stop measurements other than `duration` become
//!   attributes named by the OpenTelemetry semantic conventions (`rpc.*`,
//!   `server.*`, `network.transport`; snakepit's own under `snakepit.`,
//!   see [`semconv`]); a user span's own metadata keep their keys.
//! * A call span is encoded by `handle` itself, on the emitting thread,
//!   straight from the event into OTLP protobuf bytes: into a chunk of one
//!   of a few shards (each thread keeps to one, so the lock is uncontended).
//!   A chunk that holds `batch_size` spans goes to the sink's thread as one
//!   message, and is sent as one request without being copied; the thread
//!   takes partly filled chunks when `export_interval` has passed since
//!   their first span, and on flush and shutdown. Chunks in the queue count
//!   against `queue_capacity` in spans; a chunk that does not fit is dropped
//!   and its spans counted. Sent chunks' buffers are reused (at most one
//!   filling and one spare per shard, of about `batch_size` spans each).
//!   Measured with every sink on (2 workers, a trivial tool), this cut the
//!   host CPU the sinks add per call from 7.5-8.5 µs (a copy of each event
//!   queued for the thread to encode) to 4.3-6.0 µs.
//! * User span events are copied into a bounded queue (`queue_capacity`); a
//!   full queue drops the event and counts it. The copy is one small
//!   message (fields packed inline; only unusually large events allocate),
//!   and the thread pairs starts with ends and encodes each finished span
//!   straight into its batch's protobuf bytes. Pairing state is bounded too
//!   (`max_open_spans`): the oldest unmatched starts are evicted and
//!   counted. A stop whose start is unknown still yields a span (start time
//!   from its `duration`). Events that arrive after shutdown are dropped and
//!   counted. Drops are reported from the sink's thread as
//!   `snakepit.telemetry.sink.overflow` and `snakepit.telemetry.events.dropped`
//!   (`where = sink`, `sink = otel`, reason `queue_full`, `unmatched_span`
//!   or `export_failed`).
//! * A request the collector answers with 429, 502, 503 or 504, or that
//!   fails in transport, is sent again with backoff (50 ms doubling to 2 s,
//!   or the collector's `Retry-After`) until `export_timeout` has passed
//!   since its first attempt or the flush/shutdown deadline comes; only then
//!   are its spans counted as `export_failed`. Other statuses are final.
//!   [`OtelStats::retries`] counts the second tries.
//! * `sample_ratio` (default 1.0) exports that fraction of traces, decided
//!   on the low 56 bits of the trace id, so a trace is exported whole or not
//!   at all; events of other traces are not queued
//!   ([`OtelStats::sampled_out`] counts their spans). Spans without a trace
//!   id are always kept. A trace whose caller marked it not sampled (a call
//!   parent with trace flags `00`, see
//!   [`Telemetry::unsampled_traces`](snakepit_telemetry::Telemetry::unsampled_traces))
//!   is never exported, host and worker spans alike, and counted the same.
//! * The thread needs no async runtime: `flush` and `shutdown` wait on plain
//!   condition variables with a deadline, so calling them from a
//!   current-thread Tokio runtime cannot deadlock.

mod console;
mod direct;
#[cfg(test)]
#[path = "../tests/unit/otel_encode_reference.rs"]
mod encode_reference;
mod export;
mod fields;
mod pairing;
pub(crate) mod proto;
mod retry;
#[cfg(feature = "otel-sdk")]
mod sdk;
mod semconv;
mod span_out;
mod wire;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender, TrySendError};
use snakepit_core::config::OtelSinkConfig;
use snakepit_core::{Catalog, Event, EventId, Sink, SinkError, SpanRole};
use snakepit_telemetry::Telemetry;

use crate::shard::CacheLine;

pub use self::pairing::span_name_of;
#[cfg(feature = "otel-sdk")]
pub use self::sdk::{OtelSdkSink, OtelSdkSinkBuilder};

/// The OTel sink could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The endpoint is not a usable URL.
    #[error("otel endpoint `{endpoint}`: {message}")]
    Endpoint {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong.
        message: String,
    },
    /// The export thread could not start.
    #[error("cannot start the otel export thread: {0}")]
    Thread(std::io::Error),
    /// The TLS settings of an https endpoint are unusable.
    #[error("otel endpoint `{endpoint}`: {message}")]
    Tls {
        /// The endpoint given.
        endpoint: String,
        /// What is wrong (the file and why).
        message: String,
    },
    /// The `console` exporter's file cannot be opened.
    #[error("otel console exporter: cannot open `{path}`: {message}")]
    Console {
        /// The file given.
        path: String,
        /// Why it cannot be opened.
        message: String,
    },
    /// An `OtelSdkSink` was built without a span processor or exporter.
    #[error("the otel SDK sink has no span processor: give the application's with `with_span_processor` or `with_batch_exporter`")]
    NoSdkPipeline,
}

/// Counters of what the sink did, for tests and diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OtelStats {
    /// Spans accepted by the collector.
    pub exported: u64,
    /// Events (or call spans) dropped because the queue was full, or
    /// because they came after shutdown.
    pub dropped_queue_full: u64,
    /// Started spans evicted before their stop arrived (or left open at shutdown).
    pub evicted: u64,
    /// Spans lost because an export request failed (after its retries).
    pub export_failed: u64,
    /// Export requests sent again after a retryable failure (HTTP 429, 502,
    /// 503, 504 or a transport error).
    pub retries: u64,
    /// Spans not exported because their trace was not sampled
    /// (`sample_ratio`; counted at their stop or exception event).
    pub sampled_out: u64,
}

/// What the handler hands to the thread.
// Boxing the event would cost an allocation per event; `Wake` is rare.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Msg {
    Event(SpanEvent),
    /// Spans encoded on the emitting thread (see [`direct`]).
    Chunk(direct::Chunk),
    Wake,
}

/// A copy of one span event.
pub(crate) struct SpanEvent {
    pub role: SpanRole,
    /// Index of the span family in the table the exporter holds.
    pub family: u16,
    pub span_id: u64,
    pub parent_span_id: u64,
    /// The trace id as two halves (high, low): keeps the message 8-aligned.
    pub trace: [u64; 2],
    pub timestamp_ns: u64,
    /// The `duration` measurement, or [`NO_DURATION`].
    pub duration: u64,
    pub fields: fields::PackedFields,
}

/// No `duration` measurement (a duration is an `i64`, never this).
const NO_DURATION: u64 = u64::MAX;

impl SpanEvent {
    /// The copy of `event`, a member of span family `family`, that pairing
    /// takes.
    pub fn of(role: SpanRole, family: u16, event: &Event<'_>) -> SpanEvent {
        let trace_id = event.trace_id();
        SpanEvent {
            role,
            family,
            span_id: event.span_id(),
            parent_span_id: event.parent_span_id(),
            trace: [(trace_id >> 64) as u64, trace_id as u64],
            timestamp_ns: event.timestamp_ns(),
            duration: pairing::duration_of(event).unwrap_or(NO_DURATION),
            fields: fields::PackedFields::new(
                event.measurements(),
                event.metadata(),
                event.correlation_id(),
                role != SpanRole::Start,
            ),
        }
    }

    pub fn trace_id(&self) -> u128 {
        (u128::from(self.trace[0]) << 64) | u128::from(self.trace[1])
    }

    pub fn duration_ns(&self) -> Option<u64> {
        (self.duration != NO_DURATION).then_some(self.duration)
    }
}

/// A span family: its name and kind.
#[derive(Debug)]
pub(crate) struct SpanInfo {
    pub name: String,
    pub kind: i32,
    /// User spans take their name from `span_name` metadata.
    pub named_by_metadata: bool,
    /// What the conventions make of it (see [`semconv`]).
    pub family: semconv::Family,
    /// Its fixed attributes ([`semconv::fixed`]) as `Span.attributes`
    /// entries, encoded once.
    pub fixed: Box<[u8]>,
}

/// Counters written by emitting threads live on their own cache line, apart
/// from those the export thread writes, so neither side slows the other.
#[derive(Default)]
pub(crate) struct Counters {
    pub dropped_queue_full: CacheLine<AtomicU64>,
    pub sampled_out: CacheLine<AtomicU64>,
    pub exported: AtomicU64,
    pub evicted: AtomicU64,
    pub export_failed: AtomicU64,
    pub retries: AtomicU64,
    /// Wake-ups in the queue (rare: flush and shutdown send them).
    pub wakes: AtomicU64,
    /// Spans in the chunks in the queue (bounded by `queue_capacity`).
    pub chunk_spans: CacheLine<AtomicU64>,
}

/// Flush and stop requests, answered by the thread.
#[derive(Default)]
pub(crate) struct Control {
    pub state: Mutex<ControlState>,
    pub changed: Condvar,
}

#[derive(Default)]
pub(crate) struct ControlState {
    pub flush_requested: u64,
    pub flush_done: u64,
    pub stop_deadline: Option<Instant>,
    /// Deadline of the latest flush request (retries stop before it).
    pub flush_deadline: Option<Instant>,
    pub stopped: bool,
}

/// The OpenTelemetry sink. Build it with [`OtelSink::new`]; attach it with
/// `telemetry.attach_sink`; call [`Sink::shutdown`] to flush and stop.
pub struct OtelSink {
    tx: Sender<Msg>,
    families: FamilyTable,
    infos: Arc<[SpanInfo]>,
    shards: Arc<direct::Shards>,
    counters: Arc<Counters>,
    control: Arc<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
    capacity: usize,
    /// Traces whose id's low 56 bits are below this are exported (`None`:
    /// all of them).
    sample_below: Option<u64>,
    /// Traces a caller marked not sampled: never exported.
    unsampled: snakepit_telemetry::UnsampledTraces,
}

impl std::fmt::Debug for OtelSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelSink")
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

impl OtelSink {
    /// Starts the export thread for a `kind = "otel"` config table. Drop
    /// reports are emitted on `telemetry`.
    pub fn new(config: &OtelSinkConfig, telemetry: &Telemetry) -> Result<OtelSink, OtelError> {
        let url = export::traces_url(&config.endpoint)?;
        let (families, infos) = families(telemetry.catalog());
        let capacity = config.queue_capacity.max(1);
        let (tx, rx) = bounded(capacity);
        let counters = Arc::new(Counters::default());
        let control = Arc::new(Control::default());
        let frame = export::Frame::for_config(config);
        // A full chunk must fit in the queue's span budget.
        let shards = Arc::new(direct::Shards::new(
            frame.reserve(),
            config.batch_size.clamp(1, capacity),
        ));
        let console = match config.exporter {
            snakepit_core::config::OtelExporterKind::Otlp => None,
            snakepit_core::config::OtelExporterKind::Console => {
                Some(console::Console::open(config.console_path.as_deref())?)
            }
        };
        let exporter = export::Exporter::new(
            config,
            url,
            telemetry.clone(),
            counters.clone(),
            infos.clone(),
            frame,
            shards.clone(),
        )?
        .with_console(console);
        let ctl = control.clone();
        let thread = std::thread::Builder::new()
            .name("snakepit-otel".into())
            .spawn(move || exporter.run(rx, &ctl))
            .map_err(OtelError::Thread)?;
        Ok(OtelSink {
            tx,
            families,
            infos,
            shards,
            counters,
            control,
            thread: Mutex::new(Some(thread)),
            capacity,
            sample_below: sample_threshold(config.sample_ratio),
            unsampled: telemetry.unsampled_traces().clone(),
        })
    }

    /// What the sink did so far.
    pub fn stats(&self) -> OtelStats {
        let c = &*self.counters;
        OtelStats {
            exported: c.exported.load(Ordering::Relaxed),
            dropped_queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            export_failed: c.export_failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            sampled_out: c.sampled_out.load(Ordering::Relaxed),
        }
    }

    fn wake(&self) {
        // Counted first so that the thread never sees more wakes taken
        // than sent.
        self.counters.wakes.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(Msg::Wake).is_err() {
            self.counters.wakes.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Waits until `done(state)` or the deadline; true if done.
    fn wait(&self, deadline: Instant, done: impl Fn(&ControlState) -> bool) -> bool {
        let mut state = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if done(&state) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Wake the thread periodically in case the Wake message was lost
            // to a full queue.
            let step = (deadline - now).min(Duration::from_millis(50));
            state = self
                .control
                .changed
                .wait_timeout(state, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            drop(state);
            self.wake();
            state = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        }
    }

    fn timeout(&self, timeout: Duration) -> SinkError {
        SinkError::Timeout {
            sink: "otel".into(),
            timeout,
            // Messages in the queue less the wake-ups in it (a chunk counts
            // once), plus the spans in chunks.
            pending: (self.tx.len() as u64)
                .saturating_sub(self.counters.wakes.load(Ordering::Relaxed))
                + self.counters.chunk_spans.load(Ordering::Relaxed),
        }
    }

    /// Queues a full chunk of spans encoded on an emitting thread, or drops
    /// and counts them when the queue holds its capacity in spans already.
    #[cold]
    fn hand_over(&self, chunk: direct::Chunk) {
        let n = chunk.spans as u64;
        let queued = self.counters.chunk_spans.fetch_add(n, Ordering::Relaxed) + n;
        let sent = queued <= self.capacity as u64 && self.tx.try_send(Msg::Chunk(chunk)).is_ok();
        if !sent {
            self.counters.chunk_spans.fetch_sub(n, Ordering::Relaxed);
            self.counters
                .dropped_queue_full
                .fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// The bits of a trace id the sampler reads: its low 56, which W3C trace
/// ids (version 00, level 2) keep random.
const SAMPLE_MASK: u64 = (1 << 56) - 1;

/// The sampler's threshold for `ratio` (`None`: keep every trace).
fn sample_threshold(ratio: f64) -> Option<u64> {
    if ratio >= 1.0 || ratio.is_nan() {
        return None;
    }
    // Exact for ratios with few binary digits; 0.0 keeps nothing.
    Some((ratio.max(0.0) * (SAMPLE_MASK as f64 + 1.0)) as u64)
}

/// The span role and family index of every event, by id (`None`: not a
/// span event), and whether the event is the end of a span that is
/// encoded from it alone on the emitting thread.
type FamilyTable = Box<[Option<(SpanRole, u16, bool)>]>;

/// Span families whose stop and exception events carry everything their
/// start does: the same metadata (the stop adds to it), the span context,
/// and a duration that places the start. The sink does not queue their
/// starts; it builds each span from its end alone, with no pairing. These
/// are the three spans of every call, emitted by snakepit's own code.
const STOP_CARRIES_START: [&str; 3] = [
    "snakepit.grpc.call",
    "snakepit.python.call",
    "snakepit.python.tool.execution",
];

/// The span family of every event in the catalog, by id, and the families
/// by index.
fn families(catalog: &Catalog) -> (FamilyTable, Arc<[SpanInfo]>) {
    let mut out: Vec<Option<(SpanRole, u16, bool)>> = vec![None; catalog.len()];
    let mut infos = Vec::new();
    for (id, spec) in catalog.iter() {
        let Some((SpanRole::Start, family)) = catalog.span_of(id) else {
            continue;
        };
        let Ok(index) = u16::try_from(infos.len()) else {
            break;
        };
        let prefix = spec.name.strip_suffix(".start").unwrap_or(&spec.name);
        infos.push(pairing::span_info(prefix));
        let skip_start = STOP_CARRIES_START.contains(&prefix);
        for (role, member) in [
            (SpanRole::Start, family.start),
            (SpanRole::Stop, family.stop),
            (SpanRole::Exception, family.exception),
        ] {
            if role == SpanRole::Start && skip_start {
                continue;
            }
            out[member.index()] = Some((role, index, skip_start));
        }
    }
    (out.into_boxed_slice(), infos.into())
}

impl Sink for OtelSink {
    fn name(&self) -> &str {
        "otel"
    }

    fn handle(&self, event: &Event<'_>) {
        let Some(&Some((role, family, direct))) = self.families.get(event.id().index()) else {
            return;
        };
        let trace_id = event.trace_id();
        if self.unsampled.contains(trace_id) {
            if role != SpanRole::Start {
                self.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        if let Some(below) = self.sample_below {
            // A span without a trace id cannot be sampled consistently: kept.
            if trace_id != 0 && (trace_id as u64) & SAMPLE_MASK >= below {
                if role != SpanRole::Start {
                    self.counters.sampled_out.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
        }
        if direct {
            // A span needs an id; a span-less end is not exportable.
            if event.span_id() == 0 {
                self.counters.evicted.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let trace_id = match trace_id {
                0 => pairing::derived_trace(event.span_id(), event.parent_span_id()),
                t => t,
            };
            let info = &self.infos[usize::from(family)];
            match self
                .shards
                .push(|out| pairing::encode_event(info, role, event, trace_id, out))
            {
                Ok(None) => {}
                Ok(Some(full)) => self.hand_over(full),
                // Shut down: dropped and counted, as a closed queue's are.
                Err(direct::Closed) => {
                    self.counters
                        .dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            return;
        }
        match self
            .tx
            .try_send(Msg::Event(SpanEvent::of(role, family, event)))
        {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        let ticket = {
            let mut s = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.stopped {
                return Ok(());
            }
            s.flush_requested += 1;
            s.flush_deadline = Some(deadline);
            s.flush_requested
        };
        self.wake();
        if self.wait(deadline, |s| s.flush_done >= ticket || s.stopped) {
            Ok(())
        } else {
            Err(self.timeout(timeout))
        }
    }

    fn shutdown(&self, timeout: Duration) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        {
            let mut s = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
            if s.stop_deadline.is_none() {
                s.stop_deadline = Some(deadline);
            }
        }
        self.wake();
        if !self.wait(deadline, |s| s.stopped) {
            return Err(self.timeout(timeout));
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        Ok(())
    }
}

impl Drop for OtelSink {
    fn drop(&mut self) {
        // Ask the thread to stop soon; do not wait for it.
        let mut s = self.control.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.stop_deadline.is_none() {
            s.stop_deadline = Some(Instant::now() + Duration::from_secs(1));
        }
        drop(s);
        self.wake();
    }
}

/// The event ids that carry spans (for attaching only to those).
pub fn span_events(catalog: &Catalog) -> Vec<EventId> {
    catalog
        .iter()
        .filter(|(id, _)| catalog.span_of(*id).is_some())
        .map(|(id, _)| id)
        .collect()
}
