//! The export thread: drains the queue, pairs events into spans, and POSTs
//! batches to `<endpoint>/v1/traces` as OTLP/HTTP protobuf.

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use prost::Message;
use snakepit_core::config::OtelSinkConfig;
use snakepit_core::{builtin, Value};
use snakepit_telemetry::Telemetry;

use super::console::Console;
use super::direct::{Chunk, Shards};
use super::pairing::Pairing;
use super::proto::{self, KeyValue};
use super::retry::{next_wait, status_error, PostError, FIRST_BACKOFF};
use super::wire::{delimited_len, put_delimited_header};
use super::{Control, Counters, Msg, OtelError, SpanInfo};

/// `<endpoint>/v1/traces`, checked.
pub(crate) fn traces_url(endpoint: &str) -> Result<String, OtelError> {
    let bad = |message: &str| OtelError::Endpoint {
        endpoint: endpoint.to_string(),
        message: message.to_string(),
    };
    let Some(rest) = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
    else {
        return Err(bad("allowed: http://host:port or https://host:port"));
    };
    if rest.is_empty() || rest.starts_with('/') {
        return Err(bad(
            "has no host; allowed: http://host:port or https://host:port",
        ));
    }
    let base = endpoint.trim_end_matches('/');
    Ok(if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    })
}

/// The HTTP agent of `config`: for an `https://` endpoint, rustls trusting
/// the CA(s) in `config.ca`, else the system's roots.
pub(crate) fn agent(config: &OtelSinkConfig) -> Result<ureq::Agent, OtelError> {
    let timeout = config.export_timeout.max(Duration::from_millis(1));
    let builder = ureq::AgentBuilder::new().timeout(timeout);
    if !config.endpoint.starts_with("https://") {
        return Ok(builder.build());
    }
    let tls_err = |message: String| OtelError::Tls {
        endpoint: config.endpoint.clone(),
        message,
    };
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let pem = std::fs::read(path)
                .map_err(|e| tls_err(format!("cannot read ca `{}`: {e}", path.display())))?;
            let mut any = false;
            for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    tls_err(format!(
                        "ca `{}` is not PEM certificates: {e}",
                        path.display()
                    ))
                })?;
                roots.add(cert).map_err(|e| {
                    tls_err(format!(
                        "ca `{}` holds an unusable certificate: {e}",
                        path.display()
                    ))
                })?;
                any = true;
            }
            if !any {
                return Err(tls_err(format!(
                    "ca `{}` holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(tls_err(
                    "no system root certificate found: set `ca` to the collector's CA".into(),
                ));
            }
        }
    }
    // The process's crypto provider (ring, the one built in).
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(builder.tls_config(std::sync::Arc::new(tls)).build())
}

/// How often drop counters are reported at most.
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// Longest sleep between checks of the control state and of the chunks.
const TICK: Duration = Duration::from_millis(25);
/// How often the emitting threads' chunks are looked at, at most.
const SCAN_EVERY: Duration = Duration::from_millis(20);
/// Queue polling period while events keep coming.
const POLL_EVERY: Duration = Duration::from_millis(1);
/// How long after the last event the thread keeps polling before it blocks.
const STAY_POLLING: Duration = Duration::from_millis(50);
/// The parts of an `ExportTraceServiceRequest` around its spans, encoded
/// once. A batch buffer starts with [`Frame::reserve`] spare bytes, then
/// its spans as `ScopeSpans.spans` entries; the request's header is written
/// at the end of the spare bytes when the batch is sent.
pub(crate) struct Frame {
    /// `ResourceSpans.resource` (field 1, with key and length).
    resource: Vec<u8>,
    /// `ScopeSpans.scope` (field 1, with key and length).
    scope: Vec<u8>,
    /// Room for the header: the two fields plus two keys and lengths.
    reserve: usize,
}

impl Frame {
    pub fn new(resource: &proto::Resource, scope: &proto::InstrumentationScope) -> Frame {
        let field = |body: Vec<u8>| {
            let mut out = Vec::with_capacity(delimited_len(body.len()));
            put_delimited_header(&mut out, 1, body.len());
            out.extend_from_slice(&body);
            out
        };
        let resource = field(resource.encode_to_vec());
        let scope = field(scope.encode_to_vec());
        let reserve = resource.len() + scope.len() + 2 * (1 + 10);
        Frame {
            resource,
            scope,
            reserve,
        }
    }

    /// The frame of this config's requests: its resource (`service.name`
    /// and the SDK's attributes) and the `snakepit` scope.
    pub fn for_config(config: &OtelSinkConfig) -> Frame {
        Frame::new(
            &proto::Resource {
                attributes: [
                    KeyValue::string("service.name", config.service_name.clone()),
                    KeyValue::string("telemetry.sdk.name", "snakepit"),
                    KeyValue::string("telemetry.sdk.language", "rust"),
                    KeyValue::string("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
                ]
                .into_iter()
                .chain(
                    config
                        .resource_attributes
                        .iter()
                        .filter(|(k, _)| *k != "service.name")
                        .map(|(k, v)| KeyValue::string(k.clone(), v.clone())),
                )
                .collect(),
            },
            &proto::InstrumentationScope {
                name: "snakepit".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
        )
    }

    /// Spare bytes at the start of a batch buffer.
    pub fn reserve(&self) -> usize {
        self.reserve
    }

    /// An empty batch buffer.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.reserve + capacity);
        buf.resize(self.reserve, 0);
        buf
    }

    /// The request body: writes the header into the spare bytes of `buf`
    /// (using `header` as scratch) and returns the request from there on.
    pub fn finish<'b>(&self, buf: &'b mut [u8], header: &mut Vec<u8>) -> &'b [u8] {
        let spans = buf.len().saturating_sub(self.reserve);
        let scope_spans = self.scope.len() + spans;
        let resource_spans = self.resource.len() + delimited_len(scope_spans);
        header.clear();
        put_delimited_header(header, 1, resource_spans);
        header.extend_from_slice(&self.resource);
        put_delimited_header(header, 2, scope_spans);
        header.extend_from_slice(&self.scope);
        let at = self.reserve - header.len();
        buf[at..self.reserve].copy_from_slice(header);
        &buf[at..]
    }
}

/// Encoded spans waiting to be sent in one request.
struct Batch {
    buf: Vec<u8>,
    spans: usize,
}

/// Batch buffers kept for reuse.
const SPARE_BUFFERS: usize = 4;

pub(crate) struct Exporter {
    /// Spans encoded on the emitting threads, not yet handed over.
    shards: Arc<Shards>,
    url: String,
    /// The `console` exporter: lines of text instead of OTLP requests.
    console: Option<Console>,
    /// Headers of every request.
    headers: Vec<(String, String)>,
    /// Gzip request bodies.
    gzip: bool,
    agent: ureq::Agent,
    telemetry: Telemetry,
    counters: Arc<Counters>,
    pairing: Pairing,
    /// The batch being filled.
    current: Batch,
    /// Full batches, oldest first.
    ready: VecDeque<Batch>,
    /// Spans in `current` and `ready`.
    finished: usize,
    spare: Vec<Vec<u8>>,
    frame: Frame,
    header: Vec<u8>,
    oldest_finished: Option<Instant>,
    batch_size: usize,
    interval: Duration,
    timeout: Duration,
    capacity: u64,
    reported: Reported,
    last_report: Instant,
    last_scan: Instant,
}

/// Counter values at the last drop report.
#[derive(Default, Clone, Copy)]
struct Reported {
    queue_full: u64,
    evicted: u64,
    export_failed: u64,
}

impl Exporter {
    /// The export thread's state; fails when the endpoint's TLS settings
    /// are unusable (see [`agent`]).
    pub fn new(
        config: &OtelSinkConfig,
        url: String,
        telemetry: Telemetry,
        counters: Arc<Counters>,
        families: Arc<[SpanInfo]>,
        frame: Frame,
        shards: Arc<Shards>,
    ) -> Result<Exporter, OtelError> {
        let timeout = config.export_timeout.max(Duration::from_millis(1));
        Ok(Exporter {
            shards,
            url,
            console: None,
            headers: config
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            gzip: config.compression == snakepit_core::config::OtelCompression::Gzip,
            agent: agent(config)?,
            telemetry,
            counters,
            pairing: Pairing::new(config.max_open_spans, families),
            current: Batch {
                buf: frame.buffer(0),
                spans: 0,
            },
            ready: VecDeque::new(),
            finished: 0,
            spare: Vec::new(),
            frame,
            header: Vec::new(),
            oldest_finished: None,
            batch_size: config.batch_size.max(1),
            interval: config.export_interval.max(Duration::from_millis(1)),
            timeout,
            capacity: config.queue_capacity as u64,
            reported: Reported::default(),
            last_report: Instant::now(),
            last_scan: Instant::now(),
        })
    }

    /// Writes spans as lines of text to `console` instead of sending
    /// OTLP requests (the `console` exporter).
    pub fn with_console(mut self, console: Option<Console>) -> Exporter {
        if let Some(c) = console {
            self.url = "console".to_string();
            self.console = Some(c);
        }
        self
    }

    pub fn run(mut self, rx: Receiver<Msg>, control: &Control) {
        let mut last_msg: Option<Instant> = None;
        loop {
            let wait = match self.oldest_finished {
                Some(t) => (t + self.interval)
                    .saturating_duration_since(Instant::now())
                    .min(TICK),
                None => TICK,
            };
            // While events keep coming, poll the queue every millisecond
            // instead of blocking on it: a sender must wake a blocked
            // receiver (a futex call per event, which cost the emitting
            // threads more than all the rest of the sink). Block only after
            // a quiet spell, so an idle sink costs nothing. Only event
            // messages count: chunks of call spans come a batch at a time,
            // and one wake-up per batch costs less than polling.
            let busy = last_msg.is_some_and(|t| t.elapsed() < STAY_POLLING);
            let got = if busy {
                match rx.try_recv() {
                    Ok(msg) => Ok(msg),
                    Err(TryRecvError::Empty) => {
                        std::thread::sleep(POLL_EVERY.min(wait));
                        Err(RecvTimeoutError::Timeout)
                    }
                    Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                }
            } else {
                rx.recv_timeout(wait)
            };
            match got {
                Ok(msg) => {
                    if matches!(msg, Msg::Event(_)) {
                        last_msg = Some(Instant::now());
                    }
                    self.take(msg);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Drain what is there, a batch at a time.
            while self.finished < self.batch_size {
                match rx.try_recv() {
                    Ok(msg) => self.take(msg),
                    Err(_) => break,
                }
            }
            let (flush_ticket, stop_deadline, flush_deadline) = {
                let s = control.state.lock().unwrap_or_else(|p| p.into_inner());
                let ticket = (s.flush_requested > s.flush_done).then_some(s.flush_requested);
                (ticket, s.stop_deadline, s.flush_deadline)
            };
            if flush_ticket.is_some() || stop_deadline.is_some() {
                // Finish a little before the caller's deadline, so that the
                // answer reaches it in time.
                let deadline = stop_deadline
                    .or(flush_deadline)
                    .map(|d| {
                        let left = d.saturating_duration_since(Instant::now());
                        Instant::now() + left.mul_f64(0.9)
                    })
                    .unwrap_or_else(|| Instant::now() + self.timeout);
                // At most one queue's worth: producers may keep sending.
                for _ in 0..=self.capacity {
                    let Ok(msg) = rx.try_recv() else { break };
                    self.take(msg);
                    if self.finished >= self.batch_size {
                        self.export(Some(deadline), control);
                    }
                }
                // Then what the emitting threads hold.
                self.collect_shards();
                self.export(Some(deadline), control);
                if stop_deadline.is_some() {
                    let open = self.pairing.abandon();
                    self.counters.evicted.fetch_add(open, Ordering::Relaxed);
                    // Spans written since the collection above are dropped;
                    // later ones are refused by the shards and counted there.
                    let late = self.shards.close() as u64;
                    self.counters
                        .dropped_queue_full
                        .fetch_add(late, Ordering::Relaxed);
                    self.report_drops();
                    break;
                }
                let mut s = control.state.lock().unwrap_or_else(|p| p.into_inner());
                s.flush_done = s.flush_done.max(flush_ticket.unwrap_or(0));
                control.changed.notify_all();
            } else if self
                .oldest_finished
                .is_some_and(|t| t.elapsed() >= self.interval)
            {
                // The interval is up: send everything, the emitting
                // threads' partly filled chunks too.
                self.collect_shards();
                self.export(None, control);
            } else if self.finished >= self.batch_size {
                self.export(None, control);
            }
            if self.last_report.elapsed() >= REPORT_EVERY {
                self.report_drops();
            }
            // Spans waiting in the emitting threads' chunks run the export
            // interval's clock from when they were written (looked at every
            // `SCAN_EVERY` at most: the locks are the emitting threads').
            if self.last_scan.elapsed() >= SCAN_EVERY {
                self.last_scan = Instant::now();
                if let Some(t) = self.shards.oldest() {
                    self.note_oldest(t);
                }
            }
        }
        let mut s = control.state.lock().unwrap_or_else(|p| p.into_inner());
        s.stopped = true;
        control.changed.notify_all();
    }

    fn take(&mut self, msg: Msg) {
        let event = match msg {
            Msg::Event(event) => event,
            Msg::Chunk(chunk) => {
                let n = chunk.spans as u64;
                self.counters.chunk_spans.fetch_sub(n, Ordering::Relaxed);
                self.absorb(chunk);
                return;
            }
            Msg::Wake => {
                self.counters.wakes.fetch_sub(1, Ordering::Relaxed);
                return;
            }
        };
        let (finished, evicted) = self.pairing.accept(event, &mut self.current.buf);
        if evicted > 0 {
            self.counters.evicted.fetch_add(evicted, Ordering::Relaxed);
        }
        if finished {
            self.note_finished(1, Instant::now());
            self.grow_current(1);
        }
    }

    /// Counts `spans` finished spans, the oldest finished at `at`: the
    /// export interval runs from the oldest span waiting.
    fn note_finished(&mut self, spans: usize, at: Instant) {
        self.finished += spans;
        self.note_oldest(at);
    }

    fn note_oldest(&mut self, at: Instant) {
        self.oldest_finished = Some(self.oldest_finished.map_or(at, |o| o.min(at)));
    }

    /// `spans` more spans were written into the current batch; a full one
    /// is queued for sending.
    fn grow_current(&mut self, spans: usize) {
        self.current.spans += spans;
        if self.current.spans >= self.batch_size {
            let next = self.new_batch();
            let full = std::mem::replace(&mut self.current, next);
            self.ready.push_back(full);
        }
    }

    /// Adds a chunk of spans encoded elsewhere: a large one becomes a batch
    /// of its own as it is, a small one is copied into the current batch.
    fn absorb(&mut self, chunk: Chunk) {
        if chunk.spans == 0 {
            return;
        }
        self.note_finished(chunk.spans, chunk.started.unwrap_or_else(Instant::now));
        if 2 * chunk.spans >= self.batch_size {
            self.ready.push_back(Batch {
                buf: chunk.buf,
                spans: chunk.spans,
            });
            return;
        }
        let reserve = self.frame.reserve;
        self.current
            .buf
            .extend_from_slice(chunk.buf.get(reserve..).unwrap_or(&[]));
        self.recycle(chunk.buf);
        self.grow_current(chunk.spans);
    }

    /// Takes the partly filled chunks of the emitting threads.
    fn collect_shards(&mut self) {
        let shards = self.shards.clone();
        for chunk in shards.drain() {
            self.absorb(chunk);
        }
    }

    fn new_batch(&mut self) -> Batch {
        let buf = match self.spare.pop() {
            Some(buf) => buf,
            None => self.frame.buffer(0),
        };
        Batch { buf, spans: 0 }
    }

    /// The next batch to send, oldest first.
    fn next_batch(&mut self) -> Option<Batch> {
        if let Some(batch) = self.ready.pop_front() {
            return Some(batch);
        }
        if self.current.spans == 0 {
            return None;
        }
        let next = self.new_batch();
        Some(std::mem::replace(&mut self.current, next))
    }

    fn recycle(&mut self, buf: Vec<u8>) {
        // The emitting threads' chunks first: they write the most.
        let Some(mut buf) = self.shards.recycle(buf) else {
            return;
        };
        if self.spare.len() < SPARE_BUFFERS {
            buf.truncate(self.frame.reserve);
            self.spare.push(buf);
        }
    }

    /// Exports every finished span, `batch_size` per request. A request that
    /// fails in a retryable way is sent again with backoff (honouring the
    /// collector's Retry-After) until `export_timeout` has passed since
    /// its first attempt, or the flush or shutdown deadline comes; only then
    /// are its spans counted as `export_failed`.
    fn export(&mut self, deadline: Option<Instant>, control: &Control) {
        while let Some(batch) = self.next_batch() {
            self.finished -= batch.spans;
            let count = batch.spans as u64;
            let mut buf = batch.buf;
            let body = self.frame.finish(&mut buf, &mut self.header);
            let started = Instant::now();
            let mut backoff = FIRST_BACKOFF;
            let mut attempts = 0u32;
            let result = loop {
                // The stop deadline may come while retrying: it bounds us too.
                let end = [
                    Some(started + self.timeout),
                    deadline,
                    stop_deadline(control),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(started);
                let timeout = end.saturating_duration_since(Instant::now());
                if timeout.is_zero() {
                    break Err(if attempts == 0 {
                        "the deadline passed before the export was sent".to_string()
                    } else {
                        format!("gave up after {attempts} attempts: the deadline passed")
                    });
                }
                attempts += 1;
                match self.post(body, timeout) {
                    Ok(()) => break Ok(()),
                    Err(PostError::Fatal(message)) => break Err(message),
                    Err(PostError::Retry { message, after }) => {
                        let wait = next_wait(after, &mut backoff);
                        if Instant::now() + wait >= end {
                            break Err(format!("{message} (after {attempts} attempts)"));
                        }
                        self.counters.retries.fetch_add(1, Ordering::Relaxed);
                        sleep_watching_stop(wait, control);
                    }
                }
            };
            match result {
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
            self.recycle(buf);
        }
        self.oldest_finished = None;
    }

    fn post(&self, body: &[u8], timeout: Duration) -> Result<(), PostError> {
        if let Some(console) = &self.console {
            return console.write(body).map_err(PostError::Fatal);
        }
        let mut request = self
            .agent
            .post(&self.url)
            .timeout(timeout)
            .set("Content-Type", "application/x-protobuf");
        for (k, v) in &self.headers {
            request = request.set(k, v);
        }
        let compressed;
        let body = if self.gzip {
            compressed = gzip(body).map_err(PostError::Fatal)?;
            request = request.set("Content-Encoding", "gzip");
            &compressed[..]
        } else {
            body
        };
        match request.send_bytes(body) {
            Ok(resp) => {
                drain(resp);
                Ok(())
            }
            Err(ureq::Error::Status(code, resp)) => {
                let error = status_error(code, resp.status_text(), resp.header("Retry-After"));
                drain(resp);
                Err(error)
            }
            Err(e) => Err(PostError::Retry {
                message: e.to_string(),
                after: None,
            }),
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
        report_dropped(
            &self.telemetry,
            &[
                (queue_full, "queue_full"),
                (now.evicted - before.evicted, "unmatched_span"),
                (now.export_failed - before.export_failed, "export_failed"),
            ],
        );
    }
}

/// Emits `snakepit.telemetry.events.dropped` (`where = sink`, `sink =
/// otel`) for each non-zero count, with its reason.
pub(crate) fn report_dropped(telemetry: &Telemetry, counts: &[(u64, &str)]) {
    for &(count, reason) in counts {
        if count > 0 {
            telemetry.execute(
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

/// The shutdown deadline, if a shutdown was asked for.
fn stop_deadline(control: &Control) -> Option<Instant> {
    control
        .state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .stop_deadline
}

/// Sleeps `wait`, in slices, returning early when a shutdown is asked for
/// (its deadline then bounds the retries).
fn sleep_watching_stop(wait: Duration, control: &Control) {
    let until = Instant::now() + wait;
    loop {
        let now = Instant::now();
        if now >= until || stop_deadline(control).is_some_and(|d| d <= until) {
            return;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(20)));
    }
}

/// Reads a response body to its end (up to 64 KiB), so that ureq can put
/// the connection back in its pool for the next export whatever the
/// collector answers (a body that is not read to its end cannot be).
fn drain(resp: ureq::Response) {
    let mut body = resp.into_reader().take(64 * 1024);
    let _ = std::io::copy(&mut body, &mut std::io::sink());
}

/// `body` gzip-compressed (fast level: the collector is a hop away).
fn gzip(body: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::fast(),
    );
    enc.write_all(body)
        .and_then(|()| enc.finish())
        .map_err(|e| format!("cannot gzip the request: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch framed by hand equals prost's encoding of the whole request.
    #[test]
    fn framed_batch_matches_prost_request() {
        let resource = proto::Resource {
            attributes: vec![KeyValue::string("service.name", "x".repeat(200))],
        };
        let scope = proto::InstrumentationScope {
            name: "snakepit".into(),
            version: "1.2.3".into(),
        };
        let frame = Frame::new(&resource, &scope);
        let span = |i: u64| proto::Span {
            trace_id: vec![1; 16],
            span_id: i.to_be_bytes().to_vec(),
            name: "s".repeat(i as usize * 40),
            kind: 1,
            ..Default::default()
        };
        let mut header = Vec::new();
        for n in [0u64, 1, 3, 200] {
            let spans: Vec<_> = (1..=n).map(span).collect();
            let mut buf = frame.buffer(0);
            let entries = proto::ScopeSpans {
                scope: None,
                spans: spans.clone(),
            };
            buf.extend_from_slice(&entries.encode_to_vec());
            let expected = proto::ExportTraceServiceRequest {
                resource_spans: vec![proto::ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![proto::ScopeSpans {
                        scope: Some(scope.clone()),
                        spans,
                    }],
                }],
            }
            .encode_to_vec();
            assert_eq!(frame.finish(&mut buf, &mut header), &expected[..], "{n}");
        }
    }
}
