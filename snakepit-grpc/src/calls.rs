//! The persistent, multiplexed call stream (`CallBatchStream` RPC): many
//! calls in flight on one HTTP/2 stream, matched to their replies by request
//! id. Requests queued at the moment a message is sent travel together in
//! one `CallBatch`; the worker answers with `CallReplyBatch`es.
//!
//! A reader task owns the response side. When the stream breaks (worker
//! killed, connection reset) every pending call fails at once with
//! `Unavailable`, and the stream refuses new calls; the client opens a new
//! one on the next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::channel::{BatchStream, Pacer, Rpc};
use crate::error::{from_status, CallError};
use crate::proto::{self, call_reply::Body};

/// What the reader hands to a waiting streaming call.
pub(crate) enum StreamItem {
    /// One chunk: JSON bytes and sequence number.
    Chunk(Vec<u8>, u64),
    /// The stream finished successfully.
    End,
    /// The stream failed.
    Error(CallError),
}

/// The final reply of a non-streaming call: its outcome and the worker's
/// call telemetry (`CallReply.telemetry`), if it sent any.
pub(crate) type FinalReply = (
    Result<proto::ToolResult, CallError>,
    Option<proto::CallTelemetry>,
);

/// A call waiting on a `CallBatchStream` for its replies.
pub(crate) enum Pending {
    /// A non-streaming call: waits for its one final reply.
    Reply(oneshot::Sender<FinalReply>),
    /// A streaming call: receives its chunks, then its end or error.
    Chunks(mpsc::UnboundedSender<StreamItem>),
    /// The caller stopped waiting (timeout, dropped future, dropped chunk
    /// stream). A non-streaming call's telemetry, when the reply comes,
    /// still goes to the function so the call's events are not lost; a
    /// streaming call was sent a cancel and waits for the worker's
    /// confirmation (its final reply), its late chunks ignored. The instant
    /// is the call's deadline (sent + timeout; for a cancelled streaming
    /// call, the cancel time when earlier), when it has one: a worker that
    /// has not answered well after it did not stop the tool (see
    /// [`Shared::overdue`]).
    Abandoned(Option<LateReply>, Option<Instant>),
}

/// Emits a call's events from a reply nobody waits for any more.
pub(crate) type LateReply = Box<dyn FnOnce(proto::CallTelemetry) + Send>;

/// Abandoned calls kept per stream, waiting for their late replies.
const MAX_ABANDONED: usize = 10_000;

impl Pending {
    fn fail(self, e: CallError) {
        match self {
            Pending::Reply(tx) => {
                let _ = tx.send((Err(e), None));
            }
            Pending::Chunks(tx) => {
                let _ = tx.send(StreamItem::Error(e));
            }
            Pending::Abandoned(..) => {}
        }
    }

    fn fail_with(self, e: CallError, telemetry: Option<proto::CallTelemetry>) {
        match self {
            Pending::Reply(tx) => {
                let _ = tx.send((Err(e), telemetry));
            }
            Pending::Abandoned(late, _) => {
                if let (Some(late), Some(t)) = (late, telemetry) {
                    late(t);
                }
            }
            stream => stream.fail(e),
        }
    }
}

struct State {
    /// `Some(reason)` once the stream is broken.
    broken: Option<String>,
    pending: HashMap<u64, Pending>,
    /// How many of `pending` are `Abandoned`.
    abandoned: usize,
}

impl State {
    fn take(&mut self, id: u64) -> Option<Pending> {
        let p = self.pending.remove(&id);
        if matches!(p, Some(Pending::Abandoned(..))) {
            self.abandoned -= 1;
        }
        p
    }
}

pub(crate) struct Shared {
    state: Mutex<State>,
    pacer: Arc<Pacer>,
    alive: AtomicBool,
    /// Set when the client let go of this stream on purpose (replaced,
    /// closed): its end is then not a lost connection.
    retired: AtomicBool,
    /// The request side, for releases of result segments (weak: dropping
    /// `CallBatches` still half-closes the stream).
    requests: mpsc::WeakSender<proto::CallRequest>,
    /// The worker's pid when it may send results in shared memory.
    shm_pid: Option<u32>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The caller stopped waiting for call `id` at `now`. A non-streaming
    /// call with a `late` reply handler is kept (abandoned) until its reply;
    /// a streaming call still running is kept (abandoned) until the worker
    /// confirms the cancel, with the cancel time as its deadline when that
    /// is earlier than `deadline`. Beyond [`MAX_ABANDONED`] calls are
    /// removed at once. True if it was a streaming call still running (so
    /// the worker should be told to stop it).
    pub(crate) fn forget(
        &self,
        id: u64,
        late: Option<LateReply>,
        deadline: Option<Instant>,
        now: Instant,
    ) -> bool {
        let mut st = self.lock();
        if st.broken.is_some() {
            st.take(id);
            return false;
        }
        let room = st.abandoned < MAX_ABANDONED;
        match (st.pending.get_mut(&id), late) {
            (Some(p @ Pending::Reply(_)), Some(late)) if room => {
                *p = Pending::Abandoned(Some(late), deadline);
                st.abandoned += 1;
                false
            }
            (Some(p @ Pending::Chunks(_)), _) if room => {
                let cancelled = deadline.map_or(now, |d| d.min(now));
                *p = Pending::Abandoned(None, Some(cancelled));
                st.abandoned += 1;
                true
            }
            _ => matches!(st.take(id), Some(Pending::Chunks(_))),
        }
    }

    /// How many calls are kept abandoned, waiting for the worker's late
    /// reply or cancel confirmation.
    pub(crate) fn abandoned(&self) -> usize {
        self.lock().abandoned
    }

    /// Abandoned calls still unanswered more than `grace` after their
    /// deadline: how many, and how long past its deadline the oldest is.
    /// The worker answers a call that timed out, and confirms a cancelled
    /// streaming call, once the tool has really stopped, so these are tools
    /// it could not stop.
    pub(crate) fn overdue(&self, grace: Duration, now: Instant) -> Option<(usize, Duration)> {
        let st = self.lock();
        if st.abandoned == 0 {
            return None;
        }
        let mut found: Option<(usize, Duration)> = None;
        for p in st.pending.values() {
            if let Pending::Abandoned(_, Some(deadline)) = p {
                let past = now.saturating_duration_since(*deadline);
                if past > grace {
                    let (n, longest) = found.unwrap_or_default();
                    found = Some((n + 1, longest.max(past)));
                }
            }
        }
        found
    }

    fn fail_all(&self, reason: String) {
        let pending = {
            let mut st = self.lock();
            self.alive.store(false, Ordering::Release);
            st.broken.get_or_insert(reason.clone());
            st.abandoned = 0;
            std::mem::take(&mut st.pending)
        };
        for (_, p) in pending {
            p.fail(CallError::unavailable(reason.clone()));
        }
    }

    /// Hands every reply of one batch to its waiting call.
    fn deliver_batch(&self, batch: proto::CallReplyBatch) {
        let mut finals = 0;
        for reply in batch.replies {
            finals += u64::from(!matches!(reply.body, Some(Body::Chunk(_))));
            self.deliver(reply);
        }
        self.pacer.on_replies(finals);
    }

    fn deliver(&self, reply: proto::CallReply) {
        let id = reply.request_id;
        let telemetry = reply.telemetry;
        match reply.body {
            Some(Body::Result(mut r)) => {
                let p = self.lock().take(id);
                let mapped = if r.shm_results.is_empty() {
                    Ok(())
                } else {
                    let wanted = matches!(p, Some(Pending::Reply(_)));
                    self.shm_results(&mut r, wanted)
                };
                if let Some(p) = p {
                    match p {
                        Pending::Reply(tx) => {
                            let _ = tx.send((mapped.map(|()| r), telemetry));
                        }
                        Pending::Abandoned(late, _) => {
                            if let (Some(late), Some(t)) = (late, telemetry) {
                                late(t);
                            }
                        }
                        Pending::Chunks(tx) => {
                            let _ = tx.send(StreamItem::Error(CallError::protocol(
                                "worker sent a unary result to a streaming call",
                            )));
                        }
                    }
                }
            }
            Some(Body::Error(e)) => {
                let p = self.lock().take(id);
                if let Some(p) = p {
                    p.fail_with(tool_error(e), telemetry);
                }
            }
            Some(Body::Chunk(c)) => {
                let st = self.lock();
                if let Some(Pending::Chunks(tx)) = st.pending.get(&id) {
                    let _ = tx.send(StreamItem::Chunk(c.data_json, c.seq));
                }
            }
            Some(Body::End(_)) => {
                let p = self.lock().take(id);
                if let Some(p) = p {
                    match p {
                        Pending::Chunks(tx) => {
                            let _ = tx.send(StreamItem::End);
                        }
                        Pending::Abandoned(..) => {}
                        Pending::Reply(tx) => {
                            let _ = tx.send((
                                Err(CallError::protocol("worker ended a unary call as a stream")),
                                None,
                            ));
                        }
                    }
                }
            }
            None => {
                let p = self.lock().take(id);
                if let Some(p) = p {
                    p.fail(CallError::protocol("worker sent a reply with no body"));
                }
            }
        }
    }
}

impl Shared {
    /// Moves a result's shared-memory values into its binary results (when
    /// `wanted`: a caller waits for it), then tells the worker it may close
    /// the segments (`shm_release`), whether they were read or not.
    fn shm_results(&self, r: &mut proto::ToolResult, wanted: bool) -> Result<(), CallError> {
        let handles = std::mem::take(&mut r.shm_results);
        let release = proto::CallRequest {
            shm_release: handles.values().map(|h| h.inode).collect(),
            ..Default::default()
        };
        let mapped = match (wanted, self.shm_pid) {
            (false, _) => Ok(Vec::new()),
            (true, None) => Err(CallError::protocol(
                "the worker sent shared-memory results to a host that did not offer them",
            )),
            (true, Some(pid)) => handles
                .into_iter()
                .map(|(k, h)| match crate::shm::open(&h, pid) {
                    Ok(m) => Ok((k, m)),
                    Err(e) => Err(CallError::protocol(format!("binary result {k:?}: {e}"))),
                })
                .collect::<Result<Vec<_>, _>>(),
        };
        // The host's mappings keep the memory; the worker's segments can go.
        if let Some(tx) = self.requests.upgrade() {
            send_soon(tx, release);
        }
        for (k, m) in mapped? {
            r.binary_results.insert(k, m.as_slice().to_vec());
        }
        Ok(())
    }
}

/// Queues a request that carries no call (a cancel, a release): at once if
/// the queue has room, else as soon as it has.
fn send_soon(tx: mpsc::Sender<proto::CallRequest>, request: proto::CallRequest) {
    if let Err(mpsc::error::TrySendError::Full(request)) = tx.try_send(request) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = tx.send(request).await;
            });
        }
    }
}

pub(crate) fn tool_error(e: proto::ToolError) -> CallError {
    CallError::Tool {
        error_type: e.r#type,
        message: e.message,
        traceback: e.traceback,
    }
}

/// Removes a pending call when the caller stops waiting (timeout, dropped
/// future), so abandoned calls leave nothing behind.
pub(crate) struct PendingGuard {
    shared: Arc<Shared>,
    id: u64,
    late: Option<LateReply>,
    /// The call's deadline, when it has a timeout.
    deadline: Option<Instant>,
    /// The stream's request side, to send a cancel for a streaming call
    /// dropped before its end.
    cancel: Option<mpsc::Sender<proto::CallRequest>>,
}

impl PendingGuard {
    /// What to do with the worker's call telemetry if the caller stops
    /// waiting before the reply arrives.
    pub(crate) fn on_late_reply(&mut self, late: LateReply) {
        self.late = Some(late);
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let running_stream =
            self.shared
                .forget(self.id, self.late.take(), self.deadline, Instant::now());
        if let (true, Some(tx)) = (running_stream, self.cancel.take()) {
            let cancel = proto::CallRequest {
                request_id: self.id,
                cancel: true,
                ..Default::default()
            };
            // The cancel must reach the worker, or a well-behaved generator
            // would run on unconfirmed and count as stuck: with the request
            // queue full it is sent as soon as there is room.
            send_soon(tx, cancel);
        }
    }
}

/// One open `CallBatchStream` RPC: the calls sent on it and the reader of
/// its reply batches.
pub(crate) struct CallBatches {
    tx: mpsc::Sender<proto::CallRequest>,
    shared: Arc<Shared>,
    next_id: AtomicU64,
}

impl CallBatches {
    /// Opens a stream whose request batches hold at most `limit` bytes;
    /// `on_open` runs when the worker's response headers arrive,
    /// `on_break` when the stream breaks while not closed. `shm_pid`: the
    /// worker's pid when its results may come in shared memory.
    pub(crate) fn open(
        mut rpc: Rpc,
        limit: usize,
        shm_pid: Option<u32>,
        on_open: impl FnOnce() + Send + 'static,
        on_break: impl FnOnce(&str) + Send + 'static,
    ) -> CallBatches {
        let (tx, rx) = mpsc::channel(4096);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                broken: None,
                pending: HashMap::new(),
                abandoned: 0,
            }),
            alive: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            pacer: Arc::new(Pacer::default()),
            requests: tx.downgrade(),
            shm_pid,
        });
        let reader = shared.clone();
        tokio::spawn(async move {
            let reason = match rpc
                .call_batch_stream(BatchStream::new(rx, reader.pacer.clone(), limit))
                .await
            {
                Ok(response) => {
                    on_open();
                    let mut replies = response.into_inner();
                    loop {
                        match replies.message().await {
                            Ok(Some(batch)) => reader.deliver_batch(batch),
                            Ok(None) => break "the worker closed the call stream".to_string(),
                            Err(status) => break from_status(&status, None).to_string(),
                        }
                    }
                }
                Err(status) => from_status(&status, None).to_string(),
            };
            reader.fail_all(reason.clone());
            if !reader.retired.load(Ordering::Acquire) {
                on_break(&reason);
            }
        });
        CallBatches {
            tx,
            shared,
            next_id: AtomicU64::new(1),
        }
    }

    /// See [`Shared::overdue`].
    pub(crate) fn overdue(&self, grace: Duration, now: Instant) -> Option<(usize, Duration)> {
        self.shared.overdue(grace, now)
    }

    /// See [`Shared::abandoned`].
    pub(crate) fn abandoned(&self) -> usize {
        self.shared.abandoned()
    }

    /// Can it take calls?
    pub(crate) fn is_alive(&self) -> bool {
        self.shared.alive.load(Ordering::Acquire)
    }

    /// Marks it broken (client closing): pending calls fail with `reason`.
    pub(crate) fn shut(&self, reason: &str) {
        self.shared.retired.store(true, Ordering::Release);
        self.shared.fail_all(reason.to_string());
    }

    /// Registers `pending` and sends the request. The guard removes the
    /// registration when dropped.
    pub(crate) async fn send(
        &self,
        mut request: proto::CallRequest,
        pending: Pending,
    ) -> Result<PendingGuard, CallError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cancel = matches!(pending, Pending::Chunks(_)).then(|| self.tx.clone());
        {
            let mut st = self.shared.lock();
            if let Some(reason) = &st.broken {
                return Err(CallError::unavailable(reason.clone()));
            }
            st.pending.insert(id, pending);
        }
        let deadline = (request.timeout_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(request.timeout_ms));
        let guard = PendingGuard {
            shared: self.shared.clone(),
            id,
            late: None,
            deadline,
            cancel,
        };
        request.request_id = id;
        if self.tx.send(request).await.is_err() {
            let reason = self
                .shared
                .lock()
                .broken
                .clone()
                .unwrap_or_else(|| "the call stream is closed".to_string());
            return Err(CallError::unavailable(reason));
        }
        Ok(guard)
    }
}

impl Drop for CallBatches {
    fn drop(&mut self) {
        // Dropping `tx` half-closes the request side; the worker finishes
        // what is in flight and ends the stream.
        self.shared.retired.store(true, Ordering::Release);
        self.shared.alive.store(false, Ordering::Release);
    }
}
