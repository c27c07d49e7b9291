//! [`WorkerClient`]: one connection to one worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use snakepit_telemetry::Telemetry;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::call_events::CallEvents;
use crate::call_span::CallSpan;
use crate::calls::{CallBatches, Pending};
use crate::channel::{self, Rpc};
use crate::chunks::{ChunkStream, Source};
use crate::error::{from_status, worker_timeout, CallError};
use crate::fold::{Folder, StatCounters, TelemetryStats};
use crate::link::Link;
use crate::log_parents::LogParents;
use crate::options::{
    CallOptions, ConnectOptions, ToolInfo, ToolOutput, WorkerInfo, MIN_MESSAGE_BYTES,
};
use crate::proto;
use crate::telemetry_stream::TelemetryTask;
use crate::WorkerAddress;

const CLOSED: &str = "the client was closed";

/// `rpc_method` of the calls of [`WorkerClient::execute`] and
/// [`WorkerClient::execute_stream`]: the RPC that carries them.
const CALL_BATCH_STREAM: &str = "CallBatchStream";

pub(crate) struct Inner {
    pub(crate) telemetry: Telemetry,
    options: ConnectOptions,
    pub(crate) worker_id: Arc<str>,
    python_pid: Option<u32>,
    /// Set when large binary payloads go in shared memory (a local worker).
    shm: Option<crate::shm::Peer>,
    /// The worker's main address (`rpc`), as call events report it.
    pub(crate) address: Arc<str>,
    /// Where `call_rpc` goes, as call events report it.
    call_address: Arc<str>,
    /// The callers' `tracing` spans of calls, for the worker's log records.
    pub(crate) log_parents: Arc<LogParents>,
    pub(crate) rpc: Rpc,
    /// Where the call streams go: the worker's native call socket when it
    /// serves one (`DescribeReply.call_address`), else `rpc`.
    call_rpc: Rpc,
    link: Arc<Link>,
    /// The `CallBatchStream`s (`ConnectOptions::call_streams`); calls are
    /// spread over them in turn.
    streams: Box<[Mutex<Option<Arc<CallBatches>>>]>,
    next_stream: AtomicUsize,
    stats: Arc<StatCounters>,
    close_tx: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.link.close();
        let _ = self.close_tx.send(true);
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A client for one worker: tool calls over persistent multiplexed
/// `CallBatchStream`s (or, on the compatibility path, one RPC per call),
/// health checks, and a background task that folds
/// the worker's telemetry into the host's [`Telemetry`] and pushes the
/// host's policy to the worker.
///
/// Cheap to clone (an `Arc`); clones share the connection. The background
/// task stops on [`WorkerClient::close`] or when the last clone is dropped.
#[derive(Clone)]
pub struct WorkerClient {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient")
            .field("worker_id", &self.inner.worker_id)
            .field("address", &self.inner.options.address)
            .field("connected", &self.is_connected())
            .finish()
    }
}

fn encode_args(tool: &str, args: &serde_json::Value) -> Result<Vec<u8>, CallError> {
    match args {
        serde_json::Value::Null => Ok(b"{}".to_vec()),
        serde_json::Value::Object(_) => serde_json::to_vec(args)
            .map_err(|e| CallError::protocol(format!("cannot encode arguments of {tool:?}: {e}"))),
        other => Err(CallError::Tool {
            error_type: "InvalidArguments".to_string(),
            message: format!(
                "arguments of tool {tool:?} must be a JSON object (or null), got {}",
                kind_of(other)
            ),
            traceback: String::new(),
        }),
    }
}

/// The encoded `CallBatch` of one call of `tool` with `args`, as the call
/// stream sends it: request id 1, a new correlation id and a sampled W3C
/// traceparent, no timeout. For benchmarks that measure the transport under
/// the client (they send these bytes themselves, framed by hand); the
/// client never uses it. `args` must be a JSON object or null.
pub fn one_call_batch(tool: &str, args: &serde_json::Value) -> Result<Vec<u8>, CallError> {
    use snakepit_telemetry::{new_correlation_id, new_span_id, new_trace_id};
    let call = proto::CallRequest {
        request_id: 1,
        tool_name: tool.to_string(),
        args_json: encode_args(tool, args)?,
        correlation_id: new_correlation_id().as_str().to_string(),
        traceparent: crate::trace::format_traceparent(new_trace_id(), new_span_id(), 0x01),
        ..Default::default()
    };
    Ok(prost::Message::encode_to_vec(&proto::CallBatch {
        calls: vec![call],
    }))
}

fn kind_of(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

pub(crate) fn decode_result(
    tool: &str,
    json: &[u8],
    binary: std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<ToolOutput, CallError> {
    let value = if json.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(json).map_err(|e| {
            CallError::protocol(format!("result of tool {tool:?} is not valid JSON: {e}"))
        })?
    };
    Ok(ToolOutput {
        value,
        binary: binary.into_iter().collect(),
    })
}

fn timeout_ms(t: Option<Duration>) -> u64 {
    t.map_or(0, |t| (t.as_millis() as u64).max(1))
}

impl WorkerClient {
    /// Connects, checks the worker with `Describe`, opens the persistent
    /// call stream(s) and the telemetry stream (its task folds events into
    /// `telemetry` and pushes the current policy first, then every change),
    /// and emits `grpc.connection.established`. With `options.python_pid`
    /// set the telemetry stream opens while `Describe` runs.
    ///
    /// Fails with `Unavailable` when the worker cannot be reached within
    /// `connect_timeout` or refuses the token.
    pub async fn connect(
        telemetry: Telemetry,
        options: ConnectOptions,
    ) -> Result<WorkerClient, CallError> {
        let started = Instant::now();
        if options.max_message_bytes < MIN_MESSAGE_BYTES {
            return Err(CallError::unavailable(format!(
                "max_message_bytes is {}; it must be at least {MIN_MESSAGE_BYTES}",
                options.max_message_bytes
            )));
        }
        let limit = options.max_message_bytes;
        let raw = channel::connect(&options).await?;
        let rpc = channel::rpc(raw.clone(), limit);
        let address: Arc<str> = Arc::from(options.address.to_string());
        let worker_id: Arc<str> = Arc::from(options.worker_id.as_str());
        let link = Arc::new(Link::new(
            telemetry.clone(),
            worker_id.clone(),
            options.address.to_string(),
        ));
        let stats = Arc::new(StatCounters::default());
        let log_parents = Arc::new(LogParents::default());
        let telemetry_task = |python_pid: Option<u32>| TelemetryTask {
            raw: raw.clone(),
            link: link.clone(),
            stats: stats.clone(),
            folder: Folder::new(
                telemetry.clone(),
                worker_id.clone(),
                Arc::from(options.pool_name.as_str()),
                python_pid,
                stats.clone(),
            )
            .with_counters(match &options.address {
                WorkerAddress::Unix(socket) => Some(crate::counters_file::path_for(socket)),
                _ => None,
            })
            .with_log_parents(log_parents.clone()),
            policy_rx: telemetry.control().subscribe(),
            log_rx: telemetry.log().subscribe(),
            workers_rx: telemetry.subscribe_worker_policies(),
            telemetry: telemetry.clone(),
            sent_version: None,
            open_timeout: options.connect_timeout,
        };
        // A worker whose pid the caller knows (one it started) has its
        // telemetry stream opened while `Describe` runs: one round trip less
        // before it serves. Calls still wait for both.
        let (info, opened) = match options.python_pid {
            Some(pid) => {
                let mut task = telemetry_task(Some(pid));
                let (info, first) = tokio::join!(describe(&rpc, &options), task.open());
                (info?, Some((task, first)))
            }
            None => (describe(&rpc, &options).await?, None),
        };
        if info.worker_id != options.worker_id {
            tracing::warn!(
                target: "snakepit::grpc",
                expected = %options.worker_id,
                reported = %info.worker_id,
                address = %options.address,
                "worker reports a different id than the one it was connected as"
            );
        }
        let mut call_address = address.clone();
        let call_rpc = match native_call_address(&options, &info) {
            Some(address) => {
                let native = ConnectOptions {
                    address,
                    ..options.clone()
                };
                match channel::connect(&native).await {
                    Ok(raw) => {
                        call_address = Arc::from(native.address.to_string());
                        channel::rpc(raw, limit)
                    }
                    Err(e) => {
                        tracing::warn!(
                            target: "snakepit::grpc",
                            worker_id = %options.worker_id,
                            address = %native.address,
                            error = %e,
                            "cannot reach the worker's call socket; calls go to its main socket"
                        );
                        rpc.clone()
                    }
                }
            }
            None => rpc.clone(),
        };
        let python_pid = options.python_pid.or(Some(info.pid));
        let (task, first) = match opened {
            Some((task, first)) => (task, first?),
            None => {
                let mut task = telemetry_task(python_pid);
                let first = task.open().await?;
                (task, first)
            }
        };
        let (close_tx, close_rx) = watch::channel(false);
        let handle = tokio::spawn(task.run(first, close_rx));
        let streams = (0..options.call_streams.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        let client = WorkerClient {
            inner: Arc::new(Inner {
                telemetry,
                worker_id,
                python_pid,
                shm: crate::shm::Peer::new(
                    &options.address,
                    python_pid,
                    options.shm_threshold_bytes,
                    options.shm_max_bytes,
                ),
                address,
                call_address,
                log_parents,
                rpc,
                call_rpc,
                link: link.clone(),
                streams,
                next_stream: AtomicUsize::new(0),
                stats,
                close_tx,
                task: Mutex::new(Some(handle)),
                options,
            }),
        };
        for slot in client.inner.streams.iter() {
            *lock(slot) = Some(Arc::new(client.open_call_batches(false)));
        }
        link.established(started.elapsed().as_nanos() as u64);
        Ok(client)
    }

    fn open_call_batches(&self, reopen: bool) -> CallBatches {
        let on_open = self.inner.link.clone();
        let on_break = self.inner.link.clone();
        CallBatches::open(
            self.inner.call_rpc.clone(),
            self.inner.options.max_message_bytes,
            self.inner.shm.as_ref().map(|p| p.pid),
            move || {
                if reopen {
                    on_open.restored(1);
                }
            },
            move |reason| on_break.lost(reason),
        )
    }

    /// A live `CallBatchStream` (reopened if it broke).
    fn call_batches(&self) -> Result<Arc<CallBatches>, CallError> {
        if self.inner.link.is_closed() {
            return Err(CallError::unavailable(CLOSED));
        }
        let streams = &self.inner.streams;
        let i = self.inner.next_stream.fetch_add(1, Ordering::Relaxed) % streams.len();
        let mut slot = lock(&streams[i]);
        if let Some(s) = slot.as_ref() {
            if s.is_alive() {
                return Ok(s.clone());
            }
        }
        let stream = Arc::new(self.open_call_batches(slot.is_some()));
        *slot = Some(stream.clone());
        Ok(stream)
    }

    /// The call's request; `ArgumentTooLarge` when it encodes to more than
    /// the message limit (it is then never queued, so no other call sees it).
    pub(crate) fn request(
        &self,
        tool: &str,
        args: &serde_json::Value,
        opts: &CallOptions,
        span: &CallSpan,
        stream: bool,
    ) -> Result<proto::CallRequest, CallError> {
        self.request_with(tool, args, opts, span, stream, None)
    }

    /// [`request`](Self::request), with binary arguments of at least the
    /// shared-memory threshold put in segments (pushed onto `segments`, to
    /// be kept until the reply) when `segments` is given and the worker is
    /// local; the request then also offers results in shared memory.
    pub(crate) fn request_with(
        &self,
        tool: &str,
        args: &serde_json::Value,
        opts: &CallOptions,
        span: &CallSpan,
        stream: bool,
        mut segments: Option<&mut Vec<crate::shm::Segment>>,
    ) -> Result<proto::CallRequest, CallError> {
        let peer = self.inner.shm.as_ref().filter(|_| segments.is_some());
        let mut binary_parameters = std::collections::BTreeMap::new();
        let mut shm_parameters = std::collections::BTreeMap::new();
        for (k, v) in &opts.binary {
            match (peer.and_then(|p| p.segment(k, v)), segments.as_mut()) {
                (Some(seg), Some(segs)) => {
                    shm_parameters.insert(k.clone(), seg.handle());
                    segs.push(seg);
                }
                _ => {
                    binary_parameters.insert(k.clone(), v.clone());
                }
            }
        }
        let request = proto::CallRequest {
            request_id: 0,
            tool_name: tool.to_string(),
            args_json: encode_args(tool, args)?,
            binary_parameters,
            shm_parameters,
            shm_min_bytes: peer.map_or(0, |p| p.threshold as u64),
            shm_max_bytes: peer.map_or(0, |p| p.max as u64),
            shm_release: Vec::new(),
            correlation_id: span.correlation.as_str().to_string(),
            traceparent: span.traceparent.clone(),
            timeout_ms: timeout_ms(opts.timeout),
            stream,
            cancel: false,
            session_id: opts.session_id.clone().unwrap_or_default(),
        };
        let size = prost::Message::encoded_len(&request);
        let limit = self.inner.options.max_message_bytes;
        if size > limit {
            return Err(CallError::ArgumentTooLarge {
                tool: tool.to_string(),
                size,
                limit,
            });
        }
        Ok(request)
    }

    /// Runs a tool on the persistent call stream (`CallBatchStream`) and
    /// returns its result.
    ///
    /// The call carries a correlation id (`opts`, else the current one, else
    /// a new one) and a W3C traceparent, and emits `grpc.call.start`, then
    /// `grpc.call.stop` or `grpc.call.exception` (with `rpc_method` =
    /// `CallBatchStream`). A worker killed during the
    /// call fails it promptly with `Unavailable`.
    pub async fn execute(
        &self,
        tool: &str,
        args: serde_json::Value,
        opts: CallOptions,
    ) -> Result<ToolOutput, CallError> {
        let span = CallSpan::begin(
            &self.inner.telemetry,
            &self.inner.worker_id,
            CALL_BATCH_STREAM,
            &self.inner.call_address,
            &self.inner.log_parents,
            tool,
            &opts,
        );
        let result = self.execute_on_batches(tool, &args, &opts, &span).await;
        span.finish(
            &self.inner.telemetry,
            &self.inner.worker_id,
            result.as_ref().map(|_| "OK"),
        );
        result
    }

    async fn execute_on_batches(
        &self,
        tool: &str,
        args: &serde_json::Value,
        opts: &CallOptions,
        span: &CallSpan,
    ) -> Result<ToolOutput, CallError> {
        // Argument segments live until this call's reply (or failure).
        let mut segments = Vec::new();
        let request = self.request_with(tool, args, opts, span, false, Some(&mut segments))?;
        let stream = self.call_batches()?;
        let (tx, rx) = oneshot::channel();
        let call = async {
            let mut guard = stream.send(request, Pending::Reply(tx)).await?;
            // If this call stops waiting (timeout), its events still come.
            let (client, tool_name) = (self.clone(), tool.to_string());
            let session = opts.session_id.clone().unwrap_or_default();
            let correlation = span.correlation.as_str().to_string();
            let trace = span.trace_id();
            guard.on_late_reply(Box::new(move |t| {
                client
                    .call_events(&session)
                    .emit(&tool_name, &correlation, trace, &t, None, "");
            }));
            let (reply, worker_events) = rx
                .await
                .map_err(|_| CallError::unavailable("the call stream went away"))?;
            drop(guard);
            if let Some(t) = &worker_events {
                let result_bytes = reply.as_ref().ok().map(|r| {
                    r.result_json.len() + r.binary_results.values().map(Vec::len).sum::<usize>()
                });
                let traceback = match &reply {
                    Err(CallError::Tool { traceback, .. }) => traceback.as_str(),
                    _ => "",
                };
                self.call_events(opts.session_id.as_deref().unwrap_or_default())
                    .emit(
                        tool,
                        span.correlation.as_str(),
                        span.trace_id(),
                        t,
                        result_bytes,
                        traceback,
                    );
            }
            reply
        };
        let reply = match opts.timeout {
            Some(after) => tokio::time::timeout(after, call)
                .await
                .map_err(|_| CallError::Timeout { after })?
                .map_err(|e| worker_timeout(e, opts.timeout))?,
            None => call.await?,
        };
        decode_result(tool, &reply.result_json, reply.binary_results)
    }

    /// The emitter of the folded `python.call.*` events of a call of
    /// `session_id` ("" if none).
    fn call_events<'a>(&'a self, session_id: &'a str) -> CallEvents<'a> {
        CallEvents {
            session_id,
            telemetry: &self.inner.telemetry,
            stats: &self.inner.stats,
            worker_id: &self.inner.worker_id,
            pool_name: &self.inner.options.pool_name,
            python_pid: self.inner.python_pid,
        }
    }

    /// Calls the caller stopped waiting for (timed out, dropped, a chunk
    /// stream dropped before its end) that the worker has not answered yet:
    /// a timed-out call's late reply, or the confirmation of a cancelled
    /// streaming call (the worker sends it once the generator has really
    /// stopped). At most 10,000 per call stream are kept.
    pub fn abandoned_calls(&self) -> usize {
        self.inner
            .streams
            .iter()
            .filter_map(|slot| lock(slot).clone())
            .map(|s| s.abandoned())
            .sum()
    }

    /// Runs a streaming tool on the persistent call stream
    /// (`CallBatchStream`). The stream
    /// yields chunks in order and ends after the last one; an error item
    /// ends it. `opts.timeout` bounds the whole stream.
    pub async fn execute_stream(
        &self,
        tool: &str,
        args: serde_json::Value,
        opts: CallOptions,
    ) -> Result<ChunkStream, CallError> {
        let telemetry = &self.inner.telemetry;
        let span = CallSpan::begin(
            telemetry,
            &self.inner.worker_id,
            CALL_BATCH_STREAM,
            &self.inner.call_address,
            &self.inner.log_parents,
            tool,
            &opts,
        );
        let started = async {
            let request = self.request(tool, &args, &opts, &span, true)?;
            let stream = self.call_batches()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let guard = stream.send(request, Pending::Chunks(tx)).await?;
            Ok::<_, CallError>(Source::CallBatches {
                rx,
                guard: Some(guard),
            })
        }
        .await;
        self.chunk_stream(started, span, &opts)
    }

    /// The stream of a streaming call that `started` opened, or its error
    /// (which ends the call's span).
    pub(crate) fn chunk_stream(
        &self,
        started: Result<Source, CallError>,
        span: CallSpan,
        opts: &CallOptions,
    ) -> Result<ChunkStream, CallError> {
        let telemetry = &self.inner.telemetry;
        match started {
            Ok(source) => Ok(ChunkStream::new(
                source,
                span,
                telemetry.clone(),
                self.inner.worker_id.clone(),
                opts.timeout,
            )),
            Err(e) => {
                span.finish(telemetry, &self.inner.worker_id, Err(&e));
                Err(e)
            }
        }
    }

    /// Fails with `Unavailable` as soon as the client is closed.
    pub(crate) async fn unless_closed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, CallError>>,
    ) -> Result<T, CallError> {
        if self.inner.link.is_closed() {
            return Err(CallError::unavailable(CLOSED));
        }
        let mut closed = self.inner.close_tx.subscribe();
        tokio::select! {
            r = fut => r,
            _ = closed.wait_for(|c| *c) => Err(CallError::unavailable(CLOSED)),
        }
    }

    /// Round trip of a `Ping` RPC (bounded by the connect timeout).
    pub async fn ping(&self) -> Result<Duration, CallError> {
        let started = Instant::now();
        let after = self.inner.options.connect_timeout;
        self.unless_closed(async {
            let mut rpc = self.inner.rpc.clone();
            let call = rpc.ping(proto::PingRequest {
                message: "snakepit".to_string(),
            });
            tokio::time::timeout(after, call)
                .await
                .map_err(|_| CallError::Timeout { after })?
                .map_err(|s| from_status(&s, Some(after)))?;
            Ok(started.elapsed())
        })
        .await
    }

    /// Calls the worker has not answered more than `grace` after their
    /// timeout: how many, and how far past its timeout the oldest is. The
    /// caller of such a call got [`CallError::Timeout`] at the timeout; the
    /// worker answers it once the tool has really stopped (an async tool is
    /// cancelled at once, a sync tool's thread cannot be stopped, an inline
    /// tool holds the event loop). A streaming call timed out or dropped
    /// before its end counts the same way from its timeout or its cancel,
    /// until the worker confirms the cancel (a sync generator's thread has
    /// returned). So a call counted here is a tool the worker could not
    /// stop. `None` when there is none.
    pub fn overdue_calls(&self, grace: Duration) -> Option<(usize, Duration)> {
        let now = Instant::now();
        let mut found: Option<(usize, Duration)> = None;
        for slot in self.inner.streams.iter() {
            let stream = lock(slot).clone();
            if let Some((n, longest)) = stream.and_then(|s| s.overdue(grace, now)) {
                let (n0, l0) = found.unwrap_or_default();
                found = Some((n0 + n, l0.max(longest)));
            }
        }
        found
    }

    /// The worker's id, pid, protocol version and tools.
    pub async fn describe(&self) -> Result<WorkerInfo, CallError> {
        let after = self.inner.options.connect_timeout;
        self.unless_closed(describe_rpc(&self.inner.rpc, after))
            .await
    }

    /// The worker id this client was connected as.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The worker's process id (given, or reported by `Describe`).
    pub fn python_pid(&self) -> Option<u32> {
        self.inner.python_pid
    }

    /// The options it was connected with.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.options
    }

    /// Not closed, and no stream broken since the last (re)connect.
    pub fn is_connected(&self) -> bool {
        self.inner.link.is_connected()
    }

    /// What the telemetry stream delivered and refused so far.
    pub fn telemetry_stats(&self) -> TelemetryStats {
        self.inner.stats.snapshot()
    }

    /// Tells the client that the worker is about to be stopped on purpose
    /// (e.g. SIGTERM at shutdown): its streams ending is then not reported
    /// as a lost connection. Calls keep working until the worker goes;
    /// call [`WorkerClient::close`] afterwards.
    pub fn expect_stop(&self) {
        self.inner.link.expect_stop();
    }

    /// Stops the telemetry task; calls in flight fail with `Unavailable`;
    /// later calls fail fast. Idempotent.
    pub async fn close(&self) {
        let first = self.inner.link.close();
        let _ = self.inner.close_tx.send(true);
        for slot in self.inner.streams.iter() {
            if let Some(s) = lock(slot).take() {
                s.shut(CLOSED);
            }
        }
        let task = lock(&self.inner.task).take();
        if let Some(mut task) = task {
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
        if first {
            tracing::debug!(
                target: "snakepit::grpc",
                worker_id = &*self.inner.worker_id,
                "worker client closed"
            );
        }
    }
}

/// `Describe` at connect, a refused client certificate named (TLS 1.3
/// reports it only to the first RPC).
async fn describe(rpc: &Rpc, options: &ConnectOptions) -> Result<WorkerInfo, CallError> {
    describe_rpc(rpc, options.connect_timeout)
        .await
        .map_err(|e| match e {
            CallError::Unavailable { message } => CallError::Unavailable {
                message: match channel::tls_cause_after_handshake(options, &message) {
                    Some(why) => format!("{why} ({message})"),
                    None => message,
                },
            },
            e => e,
        })
}

async fn describe_rpc(rpc: &Rpc, after: Duration) -> Result<WorkerInfo, CallError> {
    let mut rpc = rpc.clone();
    let call = rpc.describe(proto::DescribeRequest {});
    let reply = tokio::time::timeout(after, call)
        .await
        .map_err(|_| CallError::Timeout { after })?
        .map_err(|s| from_status(&s, Some(after)))?
        .into_inner();
    Ok(WorkerInfo {
        worker_id: reply.worker_id,
        pid: reply.pid,
        protocol_version: reply.protocol_version,
        tools: reply
            .tools
            .into_iter()
            .map(|t| ToolInfo {
                name: t.name,
                description: t.description,
                supports_streaming: t.supports_streaming,
            })
            .collect(),
        pool_name: reply.pool_name,
        adapter: reply.adapter,
        call_address: reply.call_address,
    })
}

/// The worker's native call socket, when it reports one and is itself on a
/// Unix socket (a local worker: the call socket is a file beside it). A
/// worker reached over TCP keeps every call on its address.
fn native_call_address(options: &ConnectOptions, info: &WorkerInfo) -> Option<WorkerAddress> {
    if !matches!(options.address, WorkerAddress::Unix(_)) || info.call_address.is_empty() {
        return None;
    }
    match info.call_address.parse::<WorkerAddress>() {
        Ok(address @ WorkerAddress::Unix(_)) => Some(address),
        _ => {
            tracing::warn!(
                target: "snakepit::grpc",
                worker_id = %options.worker_id,
                call_address = %info.call_address,
                "the worker reports a call socket that is not a Unix socket path; ignored"
            );
            None
        }
    }
}
