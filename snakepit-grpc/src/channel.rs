//! The tonic channel to one worker (Unix socket, TCP or TCP with TLS) and
//! the token interceptor.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use crate::address::WorkerAddress;
use crate::error::CallError;
use crate::options::ConnectOptions;
use crate::proto::bridge_service_client::BridgeServiceClient;
use crate::proto::{CallBatch, CallRequest};

/// The channel with the token interceptor.
pub(crate) type Raw = InterceptedService<Channel, TokenAuth>;

/// The generated client over the channel, with the token interceptor.
pub(crate) type Rpc = BridgeServiceClient<Raw>;

/// The generated client over `raw`, with the message size bounds for calls
/// whose payload is at most `limit` bytes
/// ([`ConnectOptions::max_message_bytes`]).
pub(crate) fn rpc(raw: Raw, limit: usize) -> Rpc {
    BridgeServiceClient::new(raw)
        .max_decoding_message_size(wire_limit(limit))
        .max_encoding_message_size(wire_limit(limit))
}

/// The message size the transport accepts for a payload limit: the limit
/// plus [`MESSAGE_HEADROOM_BYTES`] (as the worker's servers).
pub(crate) fn wire_limit(limit: usize) -> usize {
    limit.saturating_add(MESSAGE_HEADROOM_BYTES)
}

/// Room above the payload limit for what a message carries besides it: a
/// result's call ids and telemetry, an error's (bounded) text, the framing
/// of the calls in a batch. The worker allows the same.
pub(crate) const MESSAGE_HEADROOM_BYTES: usize = 1024 * 1024;

/// Largest telemetry stream message accepted from a worker (a telemetry
/// batch is bounded by the worker at about 4 MB).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Adds `x-snakepit-token` to every RPC when a token is configured.
#[derive(Clone, Debug)]
pub(crate) struct TokenAuth {
    token: Option<MetadataValue<Ascii>>,
}

impl Interceptor for TokenAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.token {
            request.metadata_mut().insert("x-snakepit-token", t.clone());
        }
        Ok(request)
    }
}

/// Connects (eagerly, within `connect_timeout`) and returns the channel
/// with the token interceptor.
pub(crate) async fn connect(options: &ConnectOptions) -> Result<Raw, CallError> {
    let token = match &options.token {
        Some(t) => Some(t.parse::<MetadataValue<Ascii>>().map_err(|_| {
            CallError::unavailable(
                "the worker token must be printable ASCII (it travels as gRPC metadata x-snakepit-token)",
            )
        })?),
        None => None,
    };
    let tls = match (&options.address, &options.tls) {
        (WorkerAddress::Tcp(_), Some(tls)) => Some(
            tls.load()
                .map_err(|e| CallError::unavailable(e.to_string()))?,
        ),
        _ => None,
    };
    let endpoint = match &options.address {
        WorkerAddress::Tcp(addr) => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
                .map_err(|e| CallError::unavailable(format!("bad address {addr}: {e}")))?;
            match tls {
                Some(tls) => endpoint.tls_config(tls).map_err(|e| {
                    CallError::unavailable(format!("TLS settings for {addr}: {}", chain(&e)))
                })?,
                None => endpoint,
            }
        }
        // The authority is unused on a Unix socket.
        WorkerAddress::Unix(_) => Endpoint::from_static("http://worker.local"),
    }
    .connect_timeout(options.connect_timeout)
    .tcp_nodelay(true)
    .initial_stream_window_size(Some(4 << 20))
    .initial_connection_window_size(Some(16 << 20));
    let connecting = async {
        match &options.address {
            WorkerAddress::Unix(path) => {
                let path = path.clone();
                endpoint
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    }))
                    .await
            }
            WorkerAddress::Tcp(_) => endpoint.connect().await,
        }
    };
    let channel = tokio::time::timeout(options.connect_timeout, connecting)
        .await
        .map_err(|_| {
            CallError::unavailable(format!(
                "connecting to {} timed out after {:?}",
                options.address, options.connect_timeout
            ))
        })?
        .map_err(|e| {
            let chain = chain(&e);
            CallError::unavailable(match tls_cause_after_handshake(options, &chain) {
                Some(why) => format!("cannot connect to {}: {why} ({chain})", options.address),
                None => format!("cannot connect to {}: {chain}", options.address),
            })
        })?;
    Ok(InterceptedService::new(channel, TokenAuth { token }))
}

/// What the error of connecting with `options`, or of its first RPC, means
/// for TLS (see [`crate::tls::explain_after_handshake`]).
pub(crate) fn tls_cause_after_handshake(
    options: &ConnectOptions,
    error: &str,
) -> Option<&'static str> {
    match (&options.address, &options.tls) {
        (WorkerAddress::Tcp(_), Some(tls)) => crate::tls::explain_after_handshake(tls, error),
        _ => None,
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(x) = source {
        // Transport errors often repeat their source's text in their own.
        let text = x.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = x.source();
    }
    s
}

/// An mpsc receiver as a `Stream`, for client-streaming requests.
pub(crate) struct RecvStream<T>(pub(crate) mpsc::Receiver<T>);

impl<T> futures_core::Stream for RecvStream<T> {
    type Item = T;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        self.0.poll_recv(cx)
    }
}

/// Requests coalesced into one `CallBatch` per request-stream message.
const MAX_BATCH_CALLS: usize = 1024;
/// A batch stops growing at about this many payload bytes (and never holds
/// more than the message limit, see [`BatchStream`]).
const MAX_BATCH_BYTES: usize = 4 << 20;
/// Scheduler turns a batch waits at most, and only while it keeps growing.
const MAX_YIELDS: u32 = 3;
/// With at least this many calls sent and not yet answered, a new batch
/// waits for the next reply batch (see [`Pacer`]).
const PACE_ABOVE: u64 = 8;
/// Longest a paced batch waits for a reply batch before it goes anyway
/// (calls that run long must not hold up new ones for longer).
const PACE_MAX_WAIT: std::time::Duration = std::time::Duration::from_millis(1);

/// Shared by a call stream's request side and its reply reader: under load,
/// one request batch per reply batch.
///
/// Without pacing, 64 callers on one worker travel in ~35 small messages in
/// flight (1.8 calls each, measured), and the worker pays its per-message
/// gRPC cost (a read and a write through grpc.aio, tens of µs) for every
/// two calls. When many calls are already in flight, a new batch waits until
/// the worker's next reply batch arrives (or [`PACE_MAX_WAIT`]): it then
/// carries every call that queued meanwhile. A lone call, or a few, never
/// waits.
#[derive(Default)]
pub(crate) struct Pacer {
    /// Calls sent (cancel and release requests excluded).
    sent: AtomicU64,
    /// Final replies received (result, error, stream end).
    answered: AtomicU64,
    /// Reply batches received.
    reply_batches: AtomicU64,
    /// Final replies in the last reply batch: how many callers it woke.
    last_finals: AtomicU64,
    waker: atomic_waker::AtomicWaker,
}

impl Pacer {
    /// The reader got a reply batch holding `finals` final replies.
    pub(crate) fn on_replies(&self, finals: u64) {
        self.answered.fetch_add(finals, Ordering::Relaxed);
        self.last_finals.store(finals, Ordering::Relaxed);
        self.reply_batches.fetch_add(1, Ordering::Release);
        self.waker.wake();
    }

    fn outstanding(&self) -> u64 {
        self.sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.answered.load(Ordering::Relaxed))
    }

    /// Nobody else is about to send: no call in flight, and the last reply
    /// batch woke at most one caller (the one sending now). A lone request
    /// then goes at once, without the scheduler turn that gathers the
    /// callers a reply batch woke.
    fn alone(&self) -> bool {
        self.outstanding() == 0 && self.last_finals.load(Ordering::Relaxed) <= 1
    }
}

/// The call requests queued in an mpsc channel as a `Stream` of
/// `CallBatch`es: each item takes every request ready at that moment (up to
/// [`MAX_BATCH_CALLS`] / [`MAX_BATCH_BYTES`]).
///
/// A batch of several requests never encodes to more than the message
/// limit: a request that would take it over waits for the next batch
/// (`carry`). A single request is at most the limit (the client refuses a
/// larger one before queueing it), so no batch is refused by the transport,
/// which would fail every call on the stream.
///
/// Callers woken by the replies of one batch send their next requests a
/// moment apart; taking only the first would send batches of one. So after
/// taking what is queued, the stream yields to the scheduler (wakes itself
/// and returns `Pending`) and then takes what arrived meanwhile, yielding
/// again while the batch grows (at most [`MAX_YIELDS`] turns). A request
/// that is alone (no call in flight, and the last reply batch woke at most
/// one caller: one call at a time) goes at once, without that turn.
pub(crate) struct BatchStream {
    rx: mpsc::Receiver<CallRequest>,
    held: Vec<CallRequest>,
    /// Encoded size of `held` in the batch, bytes.
    held_bytes: usize,
    /// The message limit, bytes.
    limit: usize,
    /// A request (and its encoded size) taken from `rx` that did not fit
    /// the batch held: the first of the next one.
    carry: Option<(CallRequest, usize)>,
    yields: u32,
    pacer: Arc<Pacer>,
    /// `pacer.reply_batches` when the last batch was sent.
    replies_at_send: u64,
    /// Running while a paced batch waits.
    pace_timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl BatchStream {
    /// Batches of at most `limit` encoded bytes (a lone request excepted).
    pub(crate) fn new(rx: mpsc::Receiver<CallRequest>, pacer: Arc<Pacer>, limit: usize) -> Self {
        BatchStream {
            rx,
            held: Vec::new(),
            held_bytes: 0,
            limit,
            carry: None,
            yields: 0,
            pacer,
            replies_at_send: 0,
            pace_timer: None,
        }
    }

    /// Whether the batch held now may go (see [`Pacer`]); if not, the task
    /// is woken by the next reply batch or when [`PACE_MAX_WAIT`] passes.
    fn may_send(&mut self, cx: &mut Context<'_>) -> bool {
        if self.full() || self.pacer.outstanding() < PACE_ABOVE {
            return true;
        }
        if self.pacer.reply_batches.load(Ordering::Acquire) != self.replies_at_send {
            return true;
        }
        self.pacer.waker.register(cx.waker());
        // A reply batch that came between the check and the registration.
        if self.pacer.reply_batches.load(Ordering::Acquire) != self.replies_at_send {
            return true;
        }
        let timer = self
            .pace_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(PACE_MAX_WAIT)));
        timer.as_mut().poll(cx).is_ready()
    }

    /// No more requests go into the batch held.
    fn full(&self) -> bool {
        self.held.len() >= MAX_BATCH_CALLS
            || self.held_bytes >= MAX_BATCH_BYTES
            || self.carry.is_some()
    }

    /// Adds `r` to the batch held, or keeps it for the next batch when it
    /// would take a batch of several over the limit.
    fn hold(&mut self, r: CallRequest) {
        let size = framed_size(&r);
        if !self.held.is_empty() && self.held_bytes + size > self.limit {
            self.carry = Some((r, size));
        } else {
            self.held_bytes += size;
            self.held.push(r);
        }
    }

    fn drain(&mut self) {
        while !self.full() {
            match self.rx.try_recv() {
                Ok(r) => self.hold(r),
                Err(_) => break,
            }
        }
    }

    fn take(&mut self) -> CallBatch {
        self.held_bytes = 0;
        self.yields = 0;
        self.pace_timer = None;
        self.replies_at_send = self.pacer.reply_batches.load(Ordering::Acquire);
        let calls = std::mem::take(&mut self.held);
        let counted = calls
            .iter()
            .filter(|c| !c.cancel && c.shm_release.is_empty())
            .count() as u64;
        self.pacer.sent.fetch_add(counted, Ordering::Relaxed);
        CallBatch { calls }
    }
}

/// What `r` adds to a `CallBatch`, in bytes: its encoding, tag and length.
fn framed_size(r: &CallRequest) -> usize {
    let len = prost::Message::encoded_len(r);
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

impl futures_core::Stream for BatchStream {
    type Item = CallBatch;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CallBatch>> {
        let this = &mut *self;
        if !this.held.is_empty() {
            // A later turn: add what arrived while we yielded; yield again
            // (at most MAX_YIELDS times) while the batch keeps growing.
            let before = this.held.len();
            this.drain();
            let grew = this.held.len() > before;
            if grew && !this.full() && this.yields < MAX_YIELDS {
                this.yields += 1;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            if !this.may_send(cx) {
                return Poll::Pending;
            }
            return Poll::Ready(Some(this.take()));
        }
        if let Some((r, size)) = this.carry.take() {
            // The request the last batch had no room for opens this one.
            this.held_bytes = size;
            this.held.push(r);
        } else {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(r)) => this.hold(r),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.drain();
        if this.full() || (this.held.len() == 1 && this.pacer.alone()) {
            return Poll::Ready(Some(this.take()));
        }
        this.yields = 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(bytes: usize) -> CallRequest {
        CallRequest {
            tool_name: "echo".to_string(),
            args_json: vec![b'x'; bytes],
            ..Default::default()
        }
    }

    /// The batches the stream makes of `sizes` requests queued at once.
    async fn batches(sizes: &[usize], limit: usize) -> Vec<CallBatch> {
        let (tx, rx) = mpsc::channel(64);
        for &n in sizes {
            tx.try_send(call(n)).unwrap();
        }
        drop(tx);
        let mut stream = BatchStream::new(rx, Arc::new(Pacer::default()), limit);
        let mut out = Vec::new();
        while let Some(batch) =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut stream), cx))
                .await
        {
            out.push(batch);
        }
        out
    }

    /// Polls `stream` once.
    fn poll_once(stream: &mut BatchStream) -> Poll<Option<CallBatch>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        futures_core::Stream::poll_next(Pin::new(stream), &mut cx)
    }

    #[tokio::test]
    async fn a_lone_call_goes_at_once_and_callers_woken_together_are_gathered() {
        let (tx, rx) = mpsc::channel(64);
        let pacer = Arc::new(Pacer::default());
        let mut stream = BatchStream::new(rx, pacer.clone(), 4 << 20);
        // One call at a time: nothing in flight, nobody else woken.
        tx.send(call(10)).await.unwrap();
        match poll_once(&mut stream) {
            Poll::Ready(Some(b)) => assert_eq!(b.calls.len(), 1),
            _ => panic!("a lone call waited for a scheduler turn"),
        }
        pacer.on_replies(1);
        tx.send(call(10)).await.unwrap();
        assert!(matches!(poll_once(&mut stream), Poll::Ready(Some(_))));
        // A reply batch of 3 woke 3 callers: the first one's request waits
        // one turn for the others, and the three go together.
        pacer.on_replies(1);
        pacer.sent.fetch_add(2, Ordering::Relaxed);
        pacer.on_replies(2);
        tx.send(call(10)).await.unwrap();
        assert!(poll_once(&mut stream).is_pending());
        tx.send(call(10)).await.unwrap();
        tx.send(call(10)).await.unwrap();
        let mut got = None;
        for _ in 0..MAX_YIELDS + 1 {
            if let Poll::Ready(b) = poll_once(&mut stream) {
                got = b;
                break;
            }
        }
        assert_eq!(got.expect("a batch").calls.len(), 3);
    }

    #[tokio::test]
    async fn a_batch_of_several_calls_never_encodes_to_more_than_the_limit() {
        let limit = 4 << 20;
        let large = 3 << 20;
        let got = batches(&[large, large, 10, 10, large, limit - 100], limit).await;
        let sizes: Vec<Vec<usize>> = got
            .iter()
            .map(|b| b.calls.iter().map(|c| c.args_json.len()).collect())
            .collect();
        // In order; a call that does not fit opens the next batch.
        assert_eq!(
            sizes,
            vec![
                vec![large],
                vec![large, 10, 10],
                vec![large],
                vec![limit - 100]
            ]
        );
        for b in &got {
            assert!(prost::Message::encoded_len(b) <= limit, "{}", b.calls.len());
        }
        // Small calls still travel together.
        let got = batches(&[100; 50], limit).await;
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].calls.len(), 50);
    }
}
