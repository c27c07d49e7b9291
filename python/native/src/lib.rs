//! `snakepit_bridge._native`: the worker's gRPC server, served from Rust
//! inside the Python worker: `CallBatchStream` on the call socket and, on
//! a Unix socket, every RPC of the main socket too.
//!
//! grpc.aio hands every completed operation from its poller thread to the
//! event loop through a socket, and a call needs two (a read and a write):
//! at one call at a time that was most of the round trip (see
//! ARCHITECTURE.md). Here tonic serves `CallBatchStream` on its own Unix
//! socket from one thread of ours; the messages stay undecoded bytes, and the
//! worker's event loop takes them in one go when a byte on a notification
//! socket wakes it ([`CallServer::fileno`], [`CallServer::take`]). Replies go
//! back with [`CallServer::send`], which neither blocks nor waits.
//!
//! On the main socket (`main`), every other RPC (`Ping`, `Describe`,
//! `TelemetryStream`, the compatibility RPCs) reaches Python the same way,
//! announced by its method path and metadata ([`CallServer::take_rpcs`]);
//! Python runs the servicer's method and answers with `send`, then `end` or
//! [`CallServer::fail`]; a streaming method waits while
//! [`CallServer::backlog`] says its client is not reading. So a worker on a
//! Unix socket neither imports grpc nor starts a grpc.aio server
//! (docs/decisions/0023-native-main-socket.md).
//!
//! Python objects are touched only on the Python side of each method (with
//! the GIL); the server thread sees bytes and locks only.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::{mpsc, watch};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::StreamingService;
use tonic::{Status, Streaming};

mod span;

/// The method the call socket serves; every other path is answered
/// `UNIMPLEMENTED` there (the main socket hands them to Python).
const CALL_BATCH_STREAM: &str = "/snakepit.bridge.BridgeService/CallBatchStream";

/// The metadata key that carries the worker's token, as on the main socket.
const TOKEN_HEADER: &str = "x-snakepit-token";

/// Largest message either way when [`CallServer::new`] is given none; the
/// worker passes its grpc.aio server's limit (`--max-message-bytes` plus
/// headroom).
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// Messages as bytes: the worker decodes and encodes them in Python.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// What arrived on an RPC of the main socket other than `CallBatchStream`.
enum RpcItem {
    /// The RPC started: its method path and metadata (name, value).
    Open(String, Vec<(String, String)>),
    /// A request message.
    Message(Bytes),
    /// The request side ended (closed by the client, or broken).
    End,
    /// The client went away (cancelled, or its connection closed) before
    /// Python ended the RPC.
    Gone,
}

/// A reply message, or the status that ends the RPC.
type Reply = Result<Bytes, Status>;

/// The reply side of a stream, and how many of its replies wait for the
/// connection (sent by Python, not yet taken by HTTP/2, which takes them
/// as the client's flow-control window allows).
struct ReplySender {
    tx: mpsc::UnboundedSender<Reply>,
    backlog: Arc<AtomicUsize>,
}

/// What the server thread and the Python methods share.
struct Shared {
    /// Arrived call batches (`None`: that stream's request side ended), in
    /// order.
    queue: Mutex<Vec<(u64, Option<Bytes>)>>,
    /// What arrived on the other RPCs, in order.
    rpcs: Mutex<Vec<(u64, RpcItem)>>,
    /// Written when `queue` or `rpcs` stops being empty; the event loop
    /// watches the other end.
    wake: UnixStream,
    /// The reply side of each open stream and RPC.
    streams: Mutex<HashMap<u64, ReplySender>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Appends `item` to `queue`; true if it was empty (a wake-up is due).
fn append<T>(queue: &Mutex<Vec<T>>, item: T) -> bool {
    let mut q = lock(queue);
    let empty = q.is_empty();
    q.push(item);
    empty
}

impl Shared {
    fn push(&self, id: u64, item: Option<Bytes>) {
        if append(&self.queue, (id, item)) {
            self.wake();
        }
    }

    fn push_rpc(&self, id: u64, item: RpcItem) {
        if append(&self.rpcs, (id, item)) {
            self.wake();
        }
    }

    fn wake(&self) {
        // Full (the loop has a wake-up pending already) or closed: fine.
        let _ = (&self.wake).write(&[1]);
    }

    /// Registers a new stream's reply side; its id and replies.
    fn open(&self) -> (u64, Replies) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(AtomicUsize::new(0));
        lock(&self.streams).insert(
            id,
            ReplySender {
                tx,
                backlog: backlog.clone(),
            },
        );
        (
            id,
            Replies {
                rx,
                first: None,
                backlog,
                rpc: None,
            },
        )
    }

    fn is_open(&self, id: u64) -> bool {
        lock(&self.streams).contains_key(&id)
    }
}

/// Replies of one stream, as tonic wants them.
struct Replies {
    rx: mpsc::UnboundedReceiver<Reply>,
    /// A reply taken before the response started (see [`RpcHandler`]).
    first: Option<Bytes>,
    backlog: Arc<AtomicUsize>,
    /// For an RPC of the main socket: its id, to tell Python when the
    /// replies are dropped (the client went away) before it ended the RPC.
    rpc: Option<(u64, Arc<Shared>)>,
}

impl Drop for Replies {
    fn drop(&mut self) {
        if let Some((id, shared)) = self.rpc.take() {
            if shared.is_open(id) {
                shared.push_rpc(id, RpcItem::Gone);
            }
        }
    }
}

impl tokio_stream::Stream for Replies {
    type Item = Reply;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(first)));
        }
        let next = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &next {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        }
        next
    }
}

/// One `CallBatchStream` call: its requests go to the queue, its replies
/// come from [`CallServer::send`].
struct Handler(Arc<Shared>);

impl StreamingService<Bytes> for Handler {
    type Response = Bytes;
    type ResponseStream = Replies;
    type Future = std::future::Ready<Result<tonic::Response<Replies>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Bytes>>) -> Self::Future {
        let shared = self.0.clone();
        let (id, replies) = shared.open();
        let mut incoming = request.into_inner();
        tokio::spawn(async move {
            // An error (the client went away) ends the request side too.
            while let Ok(Some(message)) = incoming.message().await {
                shared.push(id, Some(message));
            }
            shared.push(id, None);
        });
        std::future::ready(Ok(tonic::Response::new(replies)))
    }
}

/// Any other RPC of the main socket: announced to Python with its method
/// path and metadata, then its request messages. Unary and streaming RPCs
/// are the same on the wire (messages each way, then the status), so one
/// handler serves every kind.
struct RpcHandler {
    shared: Arc<Shared>,
    path: String,
    metadata: Vec<(String, String)>,
}

impl StreamingService<Bytes> for RpcHandler {
    type Response = Bytes;
    type ResponseStream = Replies;
    type Future = BoxFuture<Result<tonic::Response<Replies>, Status>>;

    fn call(&mut self, request: tonic::Request<Streaming<Bytes>>) -> Self::Future {
        let shared = self.shared.clone();
        let (id, mut replies) = shared.open();
        replies.rpc = Some((id, shared.clone()));
        shared.push_rpc(
            id,
            RpcItem::Open(
                std::mem::take(&mut self.path),
                std::mem::take(&mut self.metadata),
            ),
        );
        let mut incoming = request.into_inner();
        tokio::spawn(async move {
            // Messages after Python ended the RPC have nobody to read them.
            while let Ok(Some(message)) = incoming.message().await {
                if !shared.is_open(id) {
                    return;
                }
                shared.push_rpc(id, RpcItem::Message(message));
            }
            if shared.is_open(id) {
                shared.push_rpc(id, RpcItem::End);
            }
        });
        // The response headers go with the first reply (or the status), as
        // grpc.aio sends them: a client that counts an RPC open when its
        // headers arrive (the host's telemetry stream) then knows that the
        // method runs and has read what was sent before.
        Box::pin(async move {
            match replies.rx.recv().await {
                Some(Ok(first)) => {
                    replies.backlog.fetch_sub(1, Ordering::Relaxed);
                    replies.first = Some(first);
                    Ok(tonic::Response::new(replies))
                }
                Some(Err(status)) => Err(status),
                None => Ok(tonic::Response::new(replies)),
            }
        })
    }
}

/// The request's metadata as Python sees it on grpc.aio: lower-case names,
/// values as text, the token and the protocol's own headers left out. Its
/// size is bounded by HTTP/2 (hyper answers a header list over 16 KiB with
/// status 431 before the RPC exists).
fn metadata(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name != TOKEN_HEADER
                && name != "te"
                && name != "content-type"
                && !name.starts_with("grpc-")
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Routes `CallBatchStream` to a [`Handler`] and, on the main socket, any
/// other RPC to an [`RpcHandler`], after the token check.
#[derive(Clone)]
struct Router {
    shared: Arc<Shared>,
    /// Is this the main socket (every RPC) rather than the call socket?
    main: bool,
    /// The worker's token: every request must carry it, whatever its path.
    token: Option<Arc<[u8]>>,
    /// The largest message either way, in bytes.
    max_message: usize,
}

impl Router {
    /// Does `req` carry the token (or is none required)? Compared in
    /// constant time, as the main socket does.
    fn authorized(&self, req: &http::Request<tonic::body::Body>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        req.headers()
            .get(TOKEN_HEADER)
            .is_some_and(|got| token_matches(got.as_bytes(), token))
    }
}

/// Constant-time comparison of a presented token with the expected one (the
/// length is not secret: a token's length says nothing about its value).
fn token_matches(got: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    !got.is_empty() && bool::from(got.ct_eq(expected))
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<http::Request<tonic::body::Body>> for Router {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        if !self.authorized(&req) {
            let status =
                Status::unauthenticated(format!("missing or invalid {TOKEN_HEADER} metadata"));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let max_message = self.max_message;
        let grpc = move || {
            tonic::server::Grpc::new(RawCodec)
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(max_message)
        };
        if req.uri().path() == CALL_BATCH_STREAM {
            let handler = Handler(self.shared.clone());
            Box::pin(async move { Ok(grpc().streaming(handler, req).await) })
        } else if self.main {
            let handler = RpcHandler {
                shared: self.shared.clone(),
                path: req.uri().path().to_owned(),
                metadata: metadata(req.headers()),
            };
            Box::pin(async move { Ok(grpc().streaming(handler, req).await) })
        } else {
            let message = format!(
                "{} is served on the worker's main socket, not on its call socket",
                req.uri().path()
            );
            Box::pin(async move { Ok(Status::unimplemented(message).into_http()) })
        }
    }
}

/// The worker's native gRPC server, on Unix sockets, run by a thread of its
/// own: `CallBatchStream` on the call socket (`path`) and, given `main`,
/// every RPC of the main socket.
///
/// Python side: watch [`fileno`](CallServer::fileno) for reading
/// (`loop.add_reader`), then [`take`](CallServer::take) the call batches
/// and [`take_rpcs`](CallServer::take_rpcs) the rest, in that order;
/// answer with [`send`](CallServer::send) and finish with
/// [`end`](CallServer::end) or [`fail`](CallServer::fail).
#[pyclass(module = "snakepit_bridge._native")]
struct CallServer {
    shared: Arc<Shared>,
    /// The event loop's end of the notification socket.
    notified: UnixStream,
    stop: Mutex<Option<watch::Sender<bool>>>,
    /// Receives when the server thread has finished.
    stopped: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// How long [`CallServer::close`] waits for the server to finish: a
/// graceful stop waits for connections to close, which is up to clients.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn os_error(what: &str, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("{what}: {e}"))
}

/// A non-blocking listener on the Unix socket `path` (which must not exist).
fn listen(path: &str) -> PyResult<UnixListener> {
    let listener =
        UnixListener::bind(path).map_err(|e| os_error(&format!("cannot listen on {path}"), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| os_error("set_nonblocking", e))?;
    Ok(listener)
}

/// Serves `router` on `listener` until `stop` turns true.
async fn serve(router: Router, listener: UnixListener, mut stop: watch::Receiver<bool>) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("snakepit native server: {e}");
            return;
        }
    };
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
    let served = tonic::transport::Server::builder()
        .serve_with_incoming_shutdown(router, incoming, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await;
    if let Err(e) = served {
        eprintln!("snakepit native server: {e}");
    }
}

#[pymethods]
impl CallServer {
    /// Listens on the Unix socket `path` (the call socket: `CallBatchStream`
    /// only) and, given `main`, on that Unix socket too (every RPC), and
    /// starts serving messages of at most `max_message` bytes either way.
    /// Neither socket may exist; at least one must be given. With a
    /// non-empty `token`, every request on either socket must carry it as
    /// metadata `x-snakepit-token` (else `UNAUTHENTICATED`).
    #[new]
    #[pyo3(signature = (path, token = None, max_message = MAX_MESSAGE, main = None))]
    fn new(
        path: Option<&str>,
        token: Option<&str>,
        max_message: usize,
        main: Option<&str>,
    ) -> PyResult<Self> {
        if path.is_none() && main.is_none() {
            return Err(PyOSError::new_err(
                "the native server needs a call socket path, a main socket path, or both",
            ));
        }
        let main_listener = main.map(listen).transpose()?;
        let call_listener = match path.map(listen).transpose() {
            Ok(l) => l,
            Err(e) => {
                if let Some(main) = main {
                    let _ = std::fs::remove_file(main);
                }
                return Err(e);
            }
        };
        let (wake, notified) = UnixStream::pair().map_err(|e| os_error("socketpair", e))?;
        wake.set_nonblocking(true)
            .map_err(|e| os_error("set_nonblocking", e))?;
        notified
            .set_nonblocking(true)
            .map_err(|e| os_error("set_nonblocking", e))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            rpcs: Mutex::new(Vec::new()),
            wake,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| os_error("cannot start the native server's runtime", e))?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let router = |main: bool| Router {
            shared: shared.clone(),
            main,
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(t.as_bytes())),
            max_message,
        };
        let (main_router, call_router) = (router(true), router(false));
        std::thread::Builder::new()
            .name("snakepit-calls".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let main = async {
                        if let Some(l) = main_listener {
                            serve(main_router, l, stop_rx.clone()).await;
                        }
                    };
                    let calls = async {
                        if let Some(l) = call_listener {
                            serve(call_router, l, stop_rx.clone()).await;
                        }
                    };
                    tokio::join!(main, calls);
                });
                let _ = stopped_tx.send(());
            })
            .map_err(|e| os_error("cannot start the native server's thread", e))?;
        Ok(CallServer {
            shared,
            notified,
            stop: Mutex::new(Some(stop_tx)),
            stopped: Mutex::new(Some(stopped_rx)),
        })
    }

    /// The descriptor that becomes readable when messages are waiting.
    fn fileno(&self) -> i32 {
        self.notified.as_raw_fd()
    }

    /// Everything that arrived since the last call, in order: a list of
    /// `(stream id, message bytes)`, the bytes `None` when that stream's
    /// request side ended (closed by the client, or broken).
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        // Drain the notifications first: a message pushed after this is
        // either taken below or announced by a new byte.
        let mut sink = [0u8; 64];
        while matches!((&self.notified).read(&mut sink), Ok(n) if n > 0) {}
        let items = std::mem::take(&mut *lock(&self.shared.queue));
        let out = PyList::empty(py);
        for (id, message) in items {
            let bytes = message.map(|m| PyBytes::new(py, &m));
            out.append(PyTuple::new(
                py,
                [
                    id.into_pyobject(py)?.into_any(),
                    bytes.into_pyobject(py)?.into_any(),
                ],
            )?)?;
        }
        Ok(out)
    }

    /// What arrived on the main socket's other RPCs since the last call, in
    /// order: a list of `(rpc id, item)`, the item `(method path, [(name,
    /// value), ...])` when the RPC starts, then the bytes of each request
    /// message, then `None` when its request side ended, and `"gone"` if
    /// the client went away before the RPC ended. Call it right after
    /// [`take`](CallServer::take), in the same wake-up (which it does not
    /// drain).
    fn take_rpcs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items = std::mem::take(&mut *lock(&self.shared.rpcs));
        let out = PyList::empty(py);
        for (id, item) in items {
            let id = id.into_pyobject(py)?.into_any();
            let item = match item {
                RpcItem::Open(path, metadata) => (path, metadata).into_pyobject(py)?.into_any(),
                RpcItem::Message(m) => PyBytes::new(py, &m).into_any(),
                RpcItem::End => py.None().into_bound(py),
                RpcItem::Gone => "gone".into_pyobject(py)?.into_any(),
            };
            out.append(PyTuple::new(py, [id, item])?)?;
        }
        Ok(out)
    }

    /// Sends one reply message on stream `id`; False when the stream is gone
    /// (ended, or its client went away).
    fn send(&self, id: u64, data: &[u8]) -> bool {
        self.finish(id, Ok(Bytes::copy_from_slice(data)), false)
    }

    /// Ends stream `id` with status OK, after the replies already sent.
    fn end(&self, id: u64) {
        lock(&self.shared.streams).remove(&id);
    }

    /// Ends RPC `id` with the gRPC status `code` (a `grpc.StatusCode`
    /// number: 2 UNKNOWN, 12 UNIMPLEMENTED, ...) and `message`, after the
    /// replies already sent. False when it was gone already.
    fn fail(&self, id: u64, code: i32, message: &str) -> bool {
        let status = Status::new(tonic::Code::from_i32(code), message);
        self.finish(id, Err(status), true)
    }

    /// How many replies of stream `id` wait for its connection (sent, not
    /// yet taken by HTTP/2: a client that does not read leaves them here),
    /// or -1 when the stream is gone. A producer that can outrun its
    /// client waits while this is high.
    fn backlog(&self, id: u64) -> i64 {
        lock(&self.shared.streams)
            .get(&id)
            .map_or(-1, |s| s.backlog.load(Ordering::Relaxed) as i64)
    }

    /// Number of streams and RPCs open.
    fn open_streams(&self) -> usize {
        lock(&self.shared.streams).len()
    }

    /// Stops listening and ends every stream; waits up to a second for the
    /// server to finish (clients closing their connections). True if it did.
    fn close(&self, py: Python<'_>) -> bool {
        lock(&self.shared.streams).clear();
        if let Some(stop) = lock(&self.stop).take() {
            let _ = stop.send(true);
        }
        let Some(stopped) = lock(&self.stopped).take() else {
            return true; // closed before
        };
        py.detach(move || {
            !matches!(
                stopped.recv_timeout(CLOSE_WAIT),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            )
        })
    }
}

impl CallServer {
    /// Queues `reply` on stream `id`, then forgets the stream if `last` or
    /// if its client went away; false if the reply has no stream to go to.
    fn finish(&self, id: u64, reply: Reply, last: bool) -> bool {
        let mut streams = lock(&self.shared.streams);
        let Some(stream) = streams.get(&id) else {
            return false;
        };
        stream.backlog.fetch_add(1, Ordering::Relaxed);
        let sent = stream.tx.send(reply).is_ok();
        if last || !sent {
            streams.remove(&id);
        }
        sent
    }
}

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CallServer>()?;
    m.add_class::<span::SpanTally>()?;
    m.add_class::<span::DroppedSpanBase>()?;
    Ok(())
}
