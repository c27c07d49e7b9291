//! Folding a worker's telemetry batches into host events.
//!
//! Nothing from the worker is trusted. For every event:
//!
//! * the name must be dot-separated segments of `[A-Za-z0-9_-]`, at most
//!   [`MAX_NAME_BYTES`] long, and a Python event of the catalog
//!   (`catalog.python_id`). A span event (`<name>.start/.stop/.exception`
//!   with a span id) whose name is not in the catalog folds into
//!   `snakepit.python.span.*` with `span_name` metadata. Anything else is
//!   rejected: `snakepit.telemetry.event.rejected` (reason `invalid_name` or
//!   `unknown_event`), never a new series.
//! * a measurement key not in the event's catalog entry is dropped
//!   (`unknown_measurement`); a NaN or infinite number is dropped
//!   (`non_finite`), a string that is not a finite number too
//!   (`not_a_number`); an event left with no measurement because every value
//!   was bad is rejected (`malformed`). Drops are reported with
//!   `snakepit.telemetry.field.dropped`.
//! * metadata keys beyond [`MAX_METADATA_FIELDS`] are dropped
//!   (`too_many_fields`); keys are cut at [`MAX_METADATA_KEY_BYTES`] and
//!   values at [`MAX_METADATA_VALUE_BYTES`] (on a character boundary,
//!   `metadata_truncated`). Keys the host adds (`worker_id`, `pool_name`,
//!   `python_pid`, `node`) are the host's, whatever the worker sent.
//!
//! The worker's drop counters are cumulative; each batch's are turned into
//! deltas and reported as `snakepit.telemetry.events.dropped`
//! (`where = worker`) when they are plausible (see [`crate::plausible`]).
//! A batch also says how many events the worker still holds unsent
//! (`pending`); when folding ends (the client is closed or dropped, as it is
//! when the worker exits), or when a batch's sequence number starts again
//! (a new worker process behind the same address), the last such count is
//! reported as dropped with reason `worker_exited`. A stream the worker
//! ends cleanly (it shut down after flushing, or another host took the
//! stream and with it the events) leaves nothing to report. Events a worker
//! accepted after the last batch that reached the host are counted from the
//! worker's shared accepted-events count (`<socket>.counters`, see
//! [`crate::counters_file`]) when folding ends: what it accepted less what
//! arrived here (and its encoding errors, reported apart) is reported as
//! `worker_exited` if more than its last `pending`. That count is rewritten
//! every 64 events, so up to 63 events may go unreported (a lower bound).
//!
//! Nothing here keeps state per name or per value, so a hostile worker
//! cannot grow the host's memory.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use snakepit_core::{builtin, Catalog, EventContext, EventId, Field, Value};
use snakepit_telemetry::Telemetry;

use crate::batch::{parse_run, EventFields, EventView, Item, RawBatch, RunFields, WireValue};
use crate::log_parents::LogParents;
use crate::plausible::{counter_delta, Allowance};
use crate::proto;
use crate::trace::parse_trace_id;

/// Longest accepted event name (wire name, dots included), in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Metadata fields kept per event (the host's enrichment not counted).
pub const MAX_METADATA_FIELDS: usize = 32;
/// Longest metadata key kept, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 64;
/// Longest metadata value kept, in bytes; longer values are truncated.
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Longest span name kept (`span_name` of generic span events), in bytes.
pub const MAX_SPAN_NAME_BYTES: usize = 128;
/// Longest correlation id kept, in bytes.
pub const MAX_CORRELATION_ID_BYTES: usize = 128;
/// Longest offending name reported in `event.rejected`, in bytes.
pub const MAX_REJECTED_NAME_BYTES: usize = 64;
/// Longest forwarded Python log message, in bytes.
pub const MAX_LOG_MESSAGE_BYTES: usize = 16 * 1024;

const ENRICHMENT_KEYS: [&str; 4] = ["worker_id", "pool_name", "python_pid", "node"];
const DROP_REASONS: [&str; 6] = [
    "buffer_full",
    "sampled_out",
    "filtered",
    "disabled",
    "encode_error",
    "logs_dropped",
];

/// Counters of what one client's telemetry stream delivered and refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Batches received.
    pub batches: u64,
    /// Events handed to the dispatcher (the host's policy may still drop them).
    pub events_folded: u64,
    /// Events rejected (unknown or invalid name, malformed).
    pub events_rejected: u64,
    /// Measurement or metadata fields dropped or truncated.
    pub fields_dropped: u64,
    /// Log records forwarded to `tracing`.
    pub logs_forwarded: u64,
    /// The worker's cumulative drop counters, as last reported:
    /// `buffer_full, sampled_out, filtered, disabled, encode_error, logs_dropped`.
    pub worker_drops: [u64; 6],
    /// The policy version the worker last reported applying.
    pub policy_version: u64,
    /// Times the telemetry stream was reopened after breaking.
    pub reconnects: u64,
    /// Worker counter reports refused as implausible (a delta larger than
    /// the worker could have counted, see [`crate::plausible`]).
    pub implausible_counts: u64,
    /// Events the worker held unsent in its last batch (`pending`).
    pub worker_pending: u64,
}

/// Shared atomic counters behind [`TelemetryStats`].
#[derive(Default, Debug)]
pub(crate) struct StatCounters {
    batches: AtomicU64,
    folded: AtomicU64,
    rejected: AtomicU64,
    fields_dropped: AtomicU64,
    logs: AtomicU64,
    worker_drops: [AtomicU64; 6],
    policy_version: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    implausible: AtomicU64,
    pending: AtomicU64,
}

impl StatCounters {
    /// Counts events emitted from call replies as folded.
    pub(crate) fn count_folded(&self, n: u64) {
        self.folded.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> TelemetryStats {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TelemetryStats {
            batches: r(&self.batches),
            events_folded: r(&self.folded),
            events_rejected: r(&self.rejected),
            fields_dropped: r(&self.fields_dropped),
            logs_forwarded: r(&self.logs),
            worker_drops: std::array::from_fn(|i| r(&self.worker_drops[i])),
            policy_version: r(&self.policy_version),
            reconnects: r(&self.reconnects),
            implausible_counts: r(&self.implausible),
            worker_pending: r(&self.pending),
        }
    }
}

/// The host's name, read once (`/proc/sys/kernel/hostname`, else `$HOSTNAME`).
pub(crate) fn node_name() -> &'static str {
    static NODE: OnceLock<String> = OnceLock::new();
    NODE.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The last `max` bytes of `s` at most, on a char boundary: a traceback's
/// end names the frame that raised and the exception.
pub(crate) fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

fn valid_segment(p: &str) -> bool {
    !p.is_empty()
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Folds the batches of one worker.
pub(crate) struct Folder {
    telemetry: Telemetry,
    catalog: Arc<Catalog>,
    worker_id: Arc<str>,
    pool_name: Arc<str>,
    python_pid: i64,
    stats: Arc<StatCounters>,
    last_drops: [u64; 6],
    /// Events the worker held unsent after its last batch.
    pending: u64,
    /// The last batch's sequence number.
    last_seq: u64,
    /// The worker's shared accepted-events count, when it has one.
    counters: Option<PathBuf>,
    /// Events that arrived in batches (folded or rejected) from this worker
    /// process.
    received: u64,
    /// True while every batch the worker sent since it started came here
    /// (no clean end of stream, no new process): only then does its
    /// accepted count less `received` say what it never sent.
    whole: bool,
    allowance: Allowance,
    name: String,
    /// The callers' `tracing` spans of calls in flight, parents of the
    /// worker's log records.
    log_parents: Option<Arc<LogParents>>,
}

#[derive(Default)]
struct Dropped {
    unknown_measurement: i64,
    non_finite: i64,
    not_a_number: i64,
    truncated: i64,
    too_many: i64,
}

impl Folder {
    pub(crate) fn new(
        telemetry: Telemetry,
        worker_id: Arc<str>,
        pool_name: Arc<str>,
        python_pid: Option<u32>,
        stats: Arc<StatCounters>,
    ) -> Self {
        Folder {
            catalog: telemetry.catalog().clone(),
            telemetry,
            worker_id,
            pool_name,
            python_pid: python_pid.map_or(-1, i64::from),
            stats,
            last_drops: [0; 6],
            pending: 0,
            last_seq: 0,
            counters: None,
            received: 0,
            whole: true,
            allowance: Allowance::default(),
            name: String::with_capacity(MAX_NAME_BYTES),
            log_parents: None,
        }
    }

    /// Reads the worker's accepted-events count from `path` when folding
    /// ends (see [`crate::counters_file`]).
    pub(crate) fn with_counters(mut self, path: Option<PathBuf>) -> Self {
        self.counters = path;
        self
    }

    /// Emits the worker's log records inside the `tracing` span of the
    /// call they were logged in, while `parents` knows it.
    pub(crate) fn with_log_parents(mut self, parents: Arc<LogParents>) -> Self {
        self.log_parents = Some(parents);
        self
    }

    /// Folds one batch: events, drop counters, logs.
    pub(crate) fn fold(&mut self, batch: &RawBatch) {
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        if batch.seq != 0 && batch.seq <= self.last_seq {
            // A new worker process: what the last one held is gone. Its
            // counters file is the new process's now.
            self.report_unsent();
            self.whole = false;
        }
        self.last_seq = batch.seq;
        self.stats
            .policy_version
            .store(batch.policy_version, Ordering::Relaxed);
        let mut fields = EventFields::default();
        let mut run = RunFields::default();
        for item in batch.items() {
            match item {
                Item::Event(raw) => {
                    self.received += 1;
                    match EventView::parse(raw, &mut fields) {
                        Ok(ev) => self.fold_event(&ev, &fields),
                        // Its name may be what is damaged: none is reported.
                        Err(_) => self.reject("", "malformed", 1),
                    }
                }
                Item::Run(raw) => self.fold_run(raw, &mut fields, &mut run),
            }
        }
        if let Some(d) = &batch.drops {
            self.drops(d);
        }
        self.pending = batch.pending;
        self.stats.pending.store(batch.pending, Ordering::Relaxed);
        for log in &batch.logs {
            self.forward_log(log);
        }
    }

    /// Folds the events of one run: the template with each timestamp and
    /// value in turn. A run that breaks the wire rules, or whose template
    /// does not have exactly one measurement, or whose lists differ in
    /// length, is rejected whole (`malformed`, counted per event).
    fn fold_run<'b>(
        &mut self,
        raw: &'b [u8],
        fields: &mut EventFields<'b>,
        run: &mut RunFields<'b>,
    ) {
        let parsed = parse_run(raw, fields, run);
        let n = run.timestamps.len().max(run.values.len()).max(1) as u64;
        self.received += n;
        let mut ev = match parsed {
            Ok(ev)
                if fields.measurements.len() == 1 && run.timestamps.len() == run.values.len() =>
            {
                ev
            }
            _ => return self.reject("", "malformed", n),
        };
        // Every event of the run has the template's name: resolved once.
        let Some(resolved) = self.resolve(&ev, fields, n) else {
            return;
        };
        for (&ts, &v) in run.timestamps.iter().zip(&run.values) {
            ev.timestamp_ns = ts;
            fields.measurements[0].1 = Some(WireValue::Int(v));
            self.fold_resolved(resolved, &ev, fields);
        }
    }

    fn reject(&self, name: &str, reason: &'static str, count: u64) {
        self.stats.rejected.fetch_add(count, Ordering::Relaxed);
        if !self.telemetry.is_enabled(builtin::TELEMETRY_EVENT_REJECTED) {
            return;
        }
        self.telemetry.execute_with(
            builtin::TELEMETRY_EVENT_REJECTED,
            &[(
                "count",
                Value::Int(i64::try_from(count).unwrap_or(i64::MAX)),
            )],
            &[
                ("worker_id", Value::from(&*self.worker_id)),
                (
                    "event_name",
                    Value::from(truncate(name, MAX_REJECTED_NAME_BYTES)),
                ),
                ("reason", Value::from(reason)),
            ],
            EventContext::default(),
        );
    }

    /// Resolves the event id (and the span name for generic spans), or
    /// rejects the event (`count` events: a run's share its name).
    fn resolve<'e>(
        &mut self,
        ev: &EventView<'e>,
        fields: &EventFields<'e>,
        count: u64,
    ) -> Option<(EventId, Option<&'e str>)> {
        self.name.clear();
        let mut first = None;
        let mut valid = true;
        for (i, &part) in fields.parts.iter().enumerate() {
            first.get_or_insert(part);
            if self.name.len() + part.len() + 1 > MAX_NAME_BYTES {
                valid = false;
                break;
            }
            if i > 0 {
                self.name.push('.');
            }
            self.name.push_str(part);
            valid &= valid_segment(part);
        }
        valid &= first.is_some();
        if !valid {
            let shown = if self.name.is_empty() {
                first.unwrap_or("")
            } else {
                self.name.as_str()
            };
            let shown = shown.to_string();
            self.reject(&shown, "invalid_name", count);
            return None;
        }
        if let Some(id) = self.catalog.python_id(&self.name) {
            return Some((id, None));
        }
        // A user span with a name the catalog does not know.
        if ev.span_id != 0 {
            let role = if self.name.ends_with(".start") {
                Some(builtin::PYTHON_SPAN_START)
            } else if self.name.ends_with(".stop") {
                Some(builtin::PYTHON_SPAN_STOP)
            } else if self.name.ends_with(".exception") {
                Some(builtin::PYTHON_SPAN_EXCEPTION)
            } else {
                None
            };
            if let Some(id) = role {
                let span_name = if ev.span_name.is_empty() {
                    None
                } else {
                    Some(truncate(ev.span_name, MAX_SPAN_NAME_BYTES))
                };
                return Some((id, span_name.or(Some(""))));
            }
        }
        let name = self.name.clone();
        self.reject(&name, "unknown_event", count);
        None
    }

    fn fold_event(&mut self, ev: &EventView<'_>, fields: &EventFields<'_>) {
        if let Some(resolved) = self.resolve(ev, fields, 1) {
            self.fold_resolved(resolved, ev, fields);
        }
    }

    /// Validates, enriches and emits one event whose name resolved.
    fn fold_resolved(
        &mut self,
        (id, span_name): (EventId, Option<&str>),
        ev: &EventView<'_>,
        fields: &EventFields<'_>,
    ) {
        let spec = self.catalog.spec(id);
        let mut dropped = Dropped::default();
        let mut measurements: Vec<Field<'_>> = Vec::with_capacity(fields.measurements.len());
        let mut bad_values = 0;
        for &(key, value) in &fields.measurements {
            let Some(index) = spec.measurement_index(key) else {
                dropped.unknown_measurement += 1;
                continue;
            };
            let key: &str = &spec.measurements[index].key;
            // A map key sent again replaces the value before (proto3 maps);
            // the bad value it replaces still counts as dropped.
            if let Some(at) = measurements.iter().position(|(k, _)| *k == key) {
                measurements.remove(at);
            }
            let v = match value {
                Some(WireValue::Int(i)) => Value::Int(i),
                Some(WireValue::Float(f)) if f.is_finite() => Value::Float(f),
                Some(WireValue::Float(_)) => {
                    dropped.non_finite += 1;
                    bad_values += 1;
                    continue;
                }
                Some(WireValue::Str(s)) => match s.trim().parse::<f64>() {
                    Ok(f) if f.is_finite() => Value::Float(f),
                    Ok(_) => {
                        dropped.non_finite += 1;
                        bad_values += 1;
                        continue;
                    }
                    Err(_) => {
                        dropped.not_a_number += 1;
                        bad_values += 1;
                        continue;
                    }
                },
                None => {
                    dropped.not_a_number += 1;
                    bad_values += 1;
                    continue;
                }
            };
            measurements.push((key, v));
        }
        let name: &str = &spec.name;
        if measurements.is_empty() && bad_values > 0 {
            self.report_dropped(name, &dropped);
            self.reject(name, "malformed", 1);
            return;
        }
        self.stats.folded.fetch_add(1, Ordering::Relaxed);
        let enabled = self.telemetry.is_enabled(id);
        let mut metadata: Vec<Field<'_>> = Vec::new();
        if enabled {
            metadata.reserve(fields.metadata.len().min(MAX_METADATA_FIELDS) + 5);
        }
        // Keys kept so far (cut to their bound), for the repeated-key rule.
        let mut kept: [&str; MAX_METADATA_FIELDS] = [""; MAX_METADATA_FIELDS];
        let mut n_kept = 0;
        for &(key, value) in &fields.metadata {
            if ENRICHMENT_KEYS.contains(&key) {
                continue;
            }
            let k = truncate(key, MAX_METADATA_KEY_BYTES);
            let v = truncate(value, MAX_METADATA_VALUE_BYTES);
            if k.len() < key.len() || v.len() < value.len() {
                dropped.truncated += 1;
            }
            // A map key sent again replaces the value before (proto3 maps).
            if let Some(at) = kept[..n_kept].iter().position(|x| *x == k) {
                if enabled {
                    metadata[at].1 = Value::Str(Cow::Borrowed(v));
                }
                continue;
            }
            if n_kept == MAX_METADATA_FIELDS {
                dropped.too_many += 1;
                continue;
            }
            kept[n_kept] = k;
            n_kept += 1;
            if enabled {
                metadata.push((k, Value::Str(Cow::Borrowed(v))));
            }
        }
        self.report_dropped(name, &dropped);
        if !enabled {
            return;
        }
        if let Some(span_name) = span_name {
            metadata.push(("span_name", Value::Str(Cow::Borrowed(span_name))));
        }
        metadata.push(("worker_id", Value::Str(Cow::Borrowed(&self.worker_id))));
        metadata.push(("pool_name", Value::Str(Cow::Borrowed(&self.pool_name))));
        if self.python_pid >= 0 {
            metadata.push(("python_pid", Value::Int(self.python_pid)));
        }
        metadata.push(("node", Value::Str(Cow::Borrowed(node_name()))));
        let correlation_id = (!ev.correlation_id.is_empty())
            .then(|| truncate(ev.correlation_id, MAX_CORRELATION_ID_BYTES));
        let context = EventContext {
            timestamp_ns: u64::try_from(ev.timestamp_ns).unwrap_or(0),
            correlation_id,
            span_id: ev.span_id,
            parent_span_id: ev.parent_span_id,
            trace_id: parse_trace_id(ev.trace_id),
        };
        self.telemetry
            .execute_from_worker(&self.worker_id, id, &measurements, &metadata, context);
    }

    fn report_dropped(&self, event_name: &str, d: &Dropped) {
        let reasons = [
            ("unknown_measurement", d.unknown_measurement),
            ("non_finite", d.non_finite),
            ("not_a_number", d.not_a_number),
            ("metadata_truncated", d.truncated),
            ("too_many_fields", d.too_many),
        ];
        for (reason, count) in reasons {
            if count == 0 {
                continue;
            }
            self.stats
                .fields_dropped
                .fetch_add(count as u64, Ordering::Relaxed);
            self.telemetry.execute_with(
                builtin::TELEMETRY_FIELD_DROPPED,
                &[("count", Value::Int(count))],
                &[
                    ("worker_id", Value::from(&*self.worker_id)),
                    ("event_name", Value::from(event_name)),
                    ("reason", Value::from(reason)),
                ],
                EventContext::default(),
            );
        }
    }

    /// Turns the worker's cumulative counters into deltas and reports them.
    fn drops(&mut self, d: &proto::DropCounts) {
        let now = [
            d.buffer_full,
            d.sampled_out,
            d.filtered,
            d.disabled,
            d.encode_error,
            d.logs_dropped,
        ];
        for (i, reason) in DROP_REASONS.iter().enumerate() {
            self.stats.worker_drops[i].store(now[i], Ordering::Relaxed);
            match counter_delta(&mut self.last_drops[i], now[i], &mut self.allowance) {
                Some(0) => {}
                Some(delta) => self.report_worker_drop(reason, delta),
                None => self.implausible(reason, now[i]),
            }
        }
    }

    fn report_worker_drop(&self, reason: &str, count: u64) {
        self.telemetry.execute_with(
            builtin::TELEMETRY_EVENTS_DROPPED,
            &[(
                "count",
                Value::Int(i64::try_from(count).unwrap_or(i64::MAX)),
            )],
            &[
                ("where", Value::from("worker")),
                ("reason", Value::from(reason)),
                ("worker_id", Value::from(&*self.worker_id)),
            ],
            EventContext::default(),
        );
    }

    /// A counter report that is not believed: counted, logged (the first
    /// few times), never reported as drops.
    fn implausible(&self, what: &str, value: u64) {
        let n = self.stats.implausible.fetch_add(1, Ordering::Relaxed);
        if n < 3 {
            tracing::warn!(
                target: "snakepit::grpc",
                worker_id = &*self.worker_id,
                counter = what,
                value,
                "ignoring an implausible telemetry counter from the worker \
                 (more than it could have counted since its last report)"
            );
        }
    }

    /// The worker ended the stream cleanly: it flushed before shutting
    /// down, or another host took its stream (and the events it held).
    pub(crate) fn stream_ended(&mut self) {
        self.pending = 0;
        self.whole = false;
    }

    /// Events the worker accepted and never sent, by its shared
    /// accepted-events count: what it accepted less what arrived here and
    /// its encoding errors (reported apart). `None` without a readable count
    /// or once some of its batches may have gone elsewhere.
    fn unsent_by_count(&self) -> Option<u64> {
        if !self.whole {
            return None;
        }
        let pid = u32::try_from(self.python_pid).ok();
        let accepted = crate::counters_file::read_accepted(self.counters.as_deref()?, pid)?;
        Some(accepted.saturating_sub(self.received.saturating_add(self.last_drops[4])))
    }

    /// Reports the events the worker last said it held unsent as dropped
    /// (`worker_exited`): folding has ended, so they will not arrive here.
    fn report_unsent(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        if pending == 0 {
            return;
        }
        if self.allowance.take(pending) {
            self.report_worker_drop("worker_exited", pending);
        } else {
            self.implausible("pending", pending);
        }
    }

    /// A Python log record becomes a `tracing` event, target
    /// `snakepit::python`, at its level, with fields `worker_id`, `logger`,
    /// `timestamp_ns` and, when it was logged inside a call (or any span),
    /// `correlation_id`, `trace_id` (32 hex digits) and `span_id` (16: the
    /// `tool.execution` span or the user span current then). Its parent is
    /// the `tracing` span the call was made in, while the client knows it
    /// (see `log_parents`); else it has none.
    fn forward_log(&self, log: &proto::LogRecord) {
        self.stats.logs.fetch_add(1, Ordering::Relaxed);
        let worker_id: &str = &self.worker_id;
        let message = truncate(&log.message, MAX_LOG_MESSAGE_BYTES);
        let logger = truncate(&log.logger, MAX_METADATA_VALUE_BYTES);
        let correlation_id = truncate(&log.correlation_id, MAX_CORRELATION_ID_BYTES);
        let correlation_id = (!correlation_id.is_empty()).then_some(correlation_id);
        let trace = parse_trace_id(&log.trace_id);
        let trace_id = (trace != 0).then(|| format!("{trace:032x}"));
        let span_id = (trace != 0 && log.span_id != 0).then(|| format!("{:016x}", log.span_id));
        let parent = self
            .log_parents
            .as_ref()
            .and_then(|p| p.parent(trace))
            .and_then(|span| span.id());
        macro_rules! forward {
            ($level:ident) => {
                tracing::$level!(
                    target: "snakepit::python",
                    parent: parent.clone(),
                    worker_id,
                    logger,
                    correlation_id,
                    trace_id = trace_id.as_deref(),
                    span_id = span_id.as_deref(),
                    timestamp_ns = log.timestamp_ns,
                    "{message}"
                )
            };
        }
        match log.level.as_str() {
            "debug" => forward!(debug),
            "info" => forward!(info),
            "warning" | "warn" => forward!(warn),
            _ => forward!(error),
        }
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        // Folding has ended: the worker's own count covers events accepted
        // after its last batch too (the larger of the two is reported).
        if let Some(unsent) = self.unsent_by_count() {
            self.pending = self.pending.max(unsent);
        }
        self.report_unsent();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use bytes::Bytes;
    use prost::Message;

    use super::*;

    #[test]
    fn a_damaged_event_is_rejected_alone_and_the_rest_of_its_batch_folds() {
        let telemetry = Telemetry::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        for pattern in [
            "snakepit.python.tool.execution.stop",
            "snakepit.telemetry.event.rejected",
        ] {
            let seen = seen.clone();
            telemetry
                .attach(pattern, pattern, move |e| {
                    let what = match e.meta_str("reason") {
                        Some(r) => format!("{} {r}", e.name()),
                        None => format!("{} {:?}", e.name(), e.meta_str("tool")),
                    };
                    seen.lock().unwrap().push(what);
                })
                .unwrap();
        }
        let good = |tool: &str| proto::TelemetryEvent {
            event_parts: vec!["tool".into(), "execution".into(), "stop".into()],
            measurements: [(
                "duration".to_string(),
                proto::TelemetryValue {
                    value: Some(proto::telemetry_value::Value::IntValue(5)),
                },
            )]
            .into(),
            metadata: [("tool".to_string(), tool.to_string())].into(),
            ..Default::default()
        };
        // A batch of one event whose name part is not UTF-8.
        let mut damaged = proto::TelemetryBatch {
            events: vec![good("x")],
            ..Default::default()
        }
        .encode_to_vec();
        let at = damaged.windows(4).position(|w| w == b"tool").unwrap();
        damaged[at] = 0xFF;
        let mut batch = vec![];
        for ev in [good("a"), good("b")] {
            batch.push(
                proto::TelemetryBatch {
                    events: vec![ev],
                    ..Default::default()
                }
                .encode_to_vec(),
            );
        }
        let all = [batch[0].clone(), damaged, batch[1].clone()].concat();
        let raw = RawBatch::parse(Bytes::from(all)).expect("the batch's outer fields are sound");
        let stats = Arc::new(StatCounters::default());
        let mut folder = Folder::new(
            telemetry.clone(),
            Arc::from("w1"),
            Arc::from("p"),
            None,
            stats.clone(),
        );
        folder.fold(&raw);
        assert_eq!(
            *seen.lock().unwrap(),
            [
                "snakepit.python.tool.execution.stop Some(\"a\")",
                "snakepit.telemetry.event.rejected malformed",
                "snakepit.python.tool.execution.stop Some(\"b\")",
            ]
        );
        let s = stats.snapshot();
        assert_eq!((s.events_folded, s.events_rejected), (2, 1));
    }

    #[test]
    fn a_run_folds_into_one_event_per_timestamp_and_a_bad_run_is_rejected_whole() {
        let telemetry = Telemetry::new();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        telemetry
            .attach("stops", "snakepit.python.tool.execution.stop", move |e| {
                let d = e.measurement("duration").and_then(Value::as_i64);
                s.lock().unwrap().push((
                    e.timestamp_ns(),
                    d,
                    e.meta_str("tool").map(str::to_string),
                    e.correlation_id().map(str::to_string),
                ));
            })
            .unwrap();
        let template = |measurements: &[&str]| proto::TelemetryEvent {
            event_parts: vec!["tool".into(), "execution".into(), "stop".into()],
            measurements: measurements
                .iter()
                .map(|k| {
                    (
                        k.to_string(),
                        proto::TelemetryValue {
                            value: Some(proto::telemetry_value::Value::IntValue(0)),
                        },
                    )
                })
                .collect(),
            metadata: [("tool".to_string(), "t".to_string())].into(),
            correlation_id: "c1".into(),
            ..Default::default()
        };
        let batch = proto::TelemetryBatch {
            runs: vec![
                proto::EventRun {
                    template: Some(template(&["duration"])),
                    timestamps: vec![100, 200, 300],
                    values: vec![7, 8, 9],
                },
                // Two measurements in the template: 2 events rejected.
                proto::EventRun {
                    template: Some(template(&["duration", "x"])),
                    timestamps: vec![1, 2],
                    values: vec![1, 2],
                },
                // Lists of different lengths: 3 events rejected.
                proto::EventRun {
                    template: Some(template(&["duration"])),
                    timestamps: vec![1, 2, 3],
                    values: vec![1],
                },
                // A name the catalog does not know: 4 events, one report.
                proto::EventRun {
                    template: Some(proto::TelemetryEvent {
                        event_parts: vec!["not".into(), "in".into(), "catalog".into()],
                        ..template(&["duration"])
                    }),
                    timestamps: vec![1, 2, 3, 4],
                    values: vec![1, 2, 3, 4],
                },
            ],
            ..Default::default()
        };
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let r = rejected.clone();
        telemetry
            .attach("rejected", "snakepit.telemetry.event.rejected", move |e| {
                r.lock().unwrap().push((
                    e.meta_str("reason").map(str::to_string),
                    e.measurement("count").and_then(Value::as_i64),
                ));
            })
            .unwrap();
        let raw = RawBatch::parse(Bytes::from(batch.encode_to_vec())).unwrap();
        let stats = Arc::new(StatCounters::default());
        let mut folder = Folder::new(
            telemetry,
            Arc::from("w1"),
            Arc::from("p"),
            None,
            stats.clone(),
        );
        folder.fold(&raw);
        let got = seen.lock().unwrap().clone();
        let want: Vec<_> = [(100, 7), (200, 8), (300, 9)]
            .into_iter()
            .map(|(ts, d)| (ts, Some(d), Some("t".to_string()), Some("c1".to_string())))
            .collect();
        assert_eq!(got, want);
        let s = stats.snapshot();
        assert_eq!((s.events_folded, s.events_rejected), (3, 9));
        let reason = |r: &str, n: i64| (Some(r.to_string()), Some(n));
        assert_eq!(
            *rejected.lock().unwrap(),
            [
                reason("malformed", 2),
                reason("malformed", 3),
                reason("unknown_event", 4)
            ]
        );
    }

    #[test]
    fn truncates_on_char_boundaries() {
        assert_eq!(truncate("abc", 5), "abc");
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 5), "abc");
    }
}
