//! The export thread: drains the queue, pairs events into spans, and POSTs
//! batches to `<endpoint>/v1/traces` as OTLP/HTTP protobuf.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use snakepit_core::config::OtelSinkConfig;
use snakepit_core::{builtin, Value};
use snakepit_telemetry::Telemetry;

use super::assemble::Pairing;
use super::proto::{self, KeyValue};
use super::{Control, Counters, Msg, OtelError};

/// `<endpoint>/v1/traces`, checked.
pub(crate) fn traces_url(endpoint: &str) -> Result<String, OtelError> {
    let bad = |message: &str| OtelError::Endpoint {
        endpoint: endpoint.to_string(),
        message: message.to_string(),
    };
    let rest = if let Some(rest) = endpoint.strip_prefix("http://") {
        rest
    } else if endpoint.starts_with("https://") {
        return Err(bad(
            "https is not supported by this build; use an http:// endpoint (e.g. a local collector)",
        ));
    } else {
        return Err(bad("allowed: http://host:port"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad("has no host; allowed: http://host:port"));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// How often drop counters are reported at most.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Longest sleep between checks of the control state.
const TICK: Duration = Duration::from_millis(100);

pub(crate) struct Exporter {
    url: String,
    agent: ureq::Agent,
    telemetry: Telemetry,
    counters: Arc<Counters>,
    pairing: Pairing,
    finished: Vec<proto::Span>,
    oldest_finished: Option<Instant>,
    batch_size: usize,
    interval: Duration,
    timeout: Duration,
    resource: proto::Resource,
    capacity: u64,
    reported: Reported,
    last_report: Instant,
}

/// Counter values at the last drop report.
#[derive(Default, Clone, Copy)]
struct Reported {
    queue_full: u64,
    evicted: u64,
    export_failed: u64,
}

impl Exporter {
    pub fn new(
        config: &OtelSinkConfig,
        url: String,
        telemetry: Telemetry,
        counters: Arc<Counters>,
    ) -> Exporter {
        let timeout = Duration::from_millis(config.export_timeout_ms.max(1));
        Exporter {
            url,
            agent: ureq::AgentBuilder::new().timeout(timeout).build(),
            telemetry,
            counters,
            pairing: Pairing::new(config.max_open_spans),
            finished: Vec::new(),
            oldest_finished: None,
            batch_size: config.batch_size.max(1),
            interval: Duration::from_millis(config.export_interval_ms.max(1)),
            timeout,
            resource: proto::Resource {
                attributes: vec![
                    KeyValue::string("service.name", config.service_name.clone()),
                    KeyValue::string("telemetry.sdk.name", "snakepit"),
                    KeyValue::string("telemetry.sdk.language", "rust"),
                    KeyValue::string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
                ],
            },
            capacity: config.queue_capacity as u64,
            reported: Reported::default(),
            last_report: Instant::now(),
        }
    }

    pub fn run(mut self, rx: Receiver<Msg>, control: &Control) {
        loop {
            let wait = match self.oldest_finished {
                Some(t) => (t + self.interval)
                    .saturating_duration_since(Instant::now())
                    .min(TICK),
                None => TICK,
            };
            match rx.recv_timeout(wait) {
                Ok(msg) => self.take(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Drain what is there, a batch at a time.
            while self.finished.len() < self.batch_size {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(_) => break,
                }
            }
            let (flush_ticket, stop_deadline) = {
                let s = control.state.lock().unwrap_or_else(|p| p.into_inner());
                let ticket = (s.flush_requested > s.flush_done).then_some(s.flush_requested);
                (ticket, s.stop_deadline)
            };
            if flush_ticket.is_some() || stop_deadline.is_some() {
                let deadline = stop_deadline.unwrap_or_else(|| Instant::now() + self.timeout);
                // At most one queue's worth: producers may keep sending.
                for _ in 0..=self.capacity {
                    let Ok(msg) = rx.try_recv() else { break };
                    self.take(msg);
                    if self.finished.len() >= self.batch_size {
                        self.export(Some(deadline));
                    }
                }
                self.export(Some(deadline));
                if stop_deadline.is_some() {
                    let open = self.pairing.abandon();
                    self.counters.evicted.fetch_add(open, Ordering::Relaxed);
                    self.report_drops();
                    break;
                }
                let mut s = control.state.lock().unwrap_or_else(|p| p.into_inner());
                s.flush_done = s.flush_done.max(flush_ticket.unwrap_or(0));
                control.changed.notify_all();
            } else if self.finished.len() >= self.batch_size
                || self
                    .oldest_finished
                    .is_some_and(|t| t.elapsed() >= self.interval)
            {
                self.export(None);
            }
            if self.last_report.elapsed() >= REPORT_EVERY {
                self.report_drops();
            }
        }
        let mut s = control.state.lock().unwrap_or_else(|p| p.into_inner());
        s.stopped = true;
        control.changed.notify_all();
    }

    fn take(&mut self, msg: Msg) {
        let Msg::Event(event) = msg else {
            return;
        };
        self.counters.queued.fetch_sub(1, Ordering::Relaxed);
        let (span, evicted) = self.pairing.accept(event);
        if evicted > 0 {
            self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        if let Some(span) = span {
            if self.finished.is_empty() {
                self.oldest_finished = Some(Instant::now());
            }
            self.finished.push(span);
        }
    }

    /// Exports every finished span, `batch_size` per request.
    fn export(&mut self, deadline: Option<Instant>) {
        while !self.finished.is_empty() {
            let n = self.finished.len().min(self.batch_size);
            let spans: Vec<proto::Span> = self.finished.drain(..n).collect();
            let count = spans.len() as u64;
            let timeout = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(self.timeout),
                None => self.timeout,
            };
            if timeout.is_zero() {
                self.counters
                    .export_failed
                    .fetch_add(count, Ordering::Relaxed);
                continue;
            }
            match self.post(spans, timeout) {
                Ok(()) => {
                    self.counters.exported.fetch_add(count, Ordering::Relaxed);
                }
                Err(message) => {
                    self.counters
                        .export_failed
                        .fetch_add(count, Ordering::Relaxed);
                    tracing::warn!(
                        target: "snakepit::telemetry",
                        sink = "otel",
                        url = %self.url,
                        spans = count,
                        error = %message,
                        "OTLP export failed; spans dropped"
                    );
                }
            }
        }
        self.oldest_finished = None;
    }

    fn post(&self, spans: Vec<proto::Span>, timeout: Duration) -> Result<(), String> {
        let request = proto::ExportTraceServiceRequest {
            resource_spans: vec![proto::ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![proto::ScopeSpans {
                    scope: Some(proto::InstrumentationScope {
                        name: "snakepit".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                    }),
                    spans,
                }],
            }],
        };
        let body = request.encode_to_vec();
        match self
            .agent
            .post(&self.url)
            .timeout(timeout)
            .set("Content-Type", "application/x-protobuf")
            .send_bytes(&body)
        {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, resp)) => Err(format!(
                "HTTP {code} {}",
                resp.status_text().chars().take(200).collect::<String>()
            )),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Emits drop reports for what changed since the last report.
    fn report_drops(&mut self) {
        self.last_report = Instant::now();
        let c = &self.counters;
        let now = Reported {
            queue_full: c.dropped_queue_full.load(Ordering::Relaxed),
            evicted: c.evicted.load(Ordering::Relaxed),
            export_failed: c.export_failed.load(Ordering::Relaxed),
        };
        let before = self.reported;
        self.reported = now;
        let queue_full = now.queue_full - before.queue_full;
        if queue_full > 0 {
            self.telemetry.execute(
                builtin::TELEMETRY_SINK_OVERFLOW,
                &[
                    ("dropped", Value::from(queue_full)),
                    ("capacity", Value::from(self.capacity)),
                ],
                &[("sink", Value::from("otel"))],
            );
        }
        for (count, reason) in [
            (queue_full, "queue_full"),
            (now.evicted - before.evicted, "unmatched_span"),
            (now.export_failed - before.export_failed, "export_failed"),
        ] {
            if count > 0 {
                self.telemetry.execute(
                    builtin::TELEMETRY_EVENTS_DROPPED,
                    &[("count", Value::from(count))],
                    &[
                        ("where", Value::from("sink")),
                        ("reason", Value::from(reason)),
                        ("sink", Value::from("otel")),
                    ],
                );
            }
        }
    }
}
