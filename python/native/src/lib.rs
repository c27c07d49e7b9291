//! `snakepit_bridge._native`: the worker's `CallBatchStream`, served from
//! Rust inside the Python worker.
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
//! Python objects are touched only on the Python side of each method (with
//! the GIL); the server thread sees bytes and locks only.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use tokio::sync::{mpsc, oneshot};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::StreamingService;
use tonic::{Status, Streaming};

mod span;

/// The method served here; every other path is answered `UNIMPLEMENTED`.
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

/// What the server thread and the Python methods share.
struct Shared {
    /// Arrived messages (`None`: that stream's request side ended), in order.
    queue: Mutex<Vec<(u64, Option<Bytes>)>>,
    /// Written when `queue` stops being empty; the event loop watches the
    /// other end.
    wake: UnixStream,
    /// The reply side of each open stream.
    streams: Mutex<HashMap<u64, mpsc::UnboundedSender<Bytes>>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn push(&self, id: u64, item: Option<Bytes>) {
        let was_empty = {
            let mut q = lock(&self.queue);
            let empty = q.is_empty();
            q.push((id, item));
            empty
        };
        if was_empty {
            // Full (the loop has a wake-up pending already) or closed: fine.
            let _ = (&self.wake).write(&[1]);
        }
    }
}

/// Replies of one stream, as tonic wants them.
struct Replies(mpsc::UnboundedReceiver<Bytes>);

impl tokio_stream::Stream for Replies {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|m| m.map(Ok))
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
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&shared.streams).insert(id, tx);
        let mut incoming = request.into_inner();
        tokio::spawn(async move {
            // An error (the client went away) ends the request side too.
            while let Ok(Some(message)) = incoming.message().await {
                shared.push(id, Some(message));
            }
            shared.push(id, None);
        });
        std::future::ready(Ok(tonic::Response::new(Replies(rx))))
    }
}

/// Routes `CallBatchStream` to a [`Handler`], after the token check.
#[derive(Clone)]
struct Router {
    shared: Arc<Shared>,
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
        if req.uri().path() == CALL_BATCH_STREAM {
            let handler = Handler(self.shared.clone());
            let max_message = self.max_message;
            Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(RawCodec)
                    .max_decoding_message_size(max_message)
                    .max_encoding_message_size(max_message);
                Ok(grpc.streaming(handler, req).await)
            })
        } else {
            let message = format!(
                "{} is served on the worker's main socket, not on its call socket",
                req.uri().path()
            );
            Box::pin(async move { Ok(Status::unimplemented(message).into_http()) })
        }
    }
}

/// `CallBatchStream` served on a Unix socket by a thread of its own.
///
/// Python side: watch [`fileno`](CallServer::fileno) for reading
/// (`loop.add_reader`), then [`take`](CallServer::take) what arrived; answer
/// with [`send`](CallServer::send) and finish a stream with
/// [`end`](CallServer::end).
#[pyclass(module = "snakepit_bridge._native")]
struct CallServer {
    shared: Arc<Shared>,
    /// The event loop's end of the notification socket.
    notified: UnixStream,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    /// Receives when the server thread has finished.
    stopped: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

/// How long [`CallServer::close`] waits for the server to finish: a
/// graceful stop waits for connections to close, which is up to clients.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

fn os_error(what: &str, e: std::io::Error) -> PyErr {
    PyOSError::new_err(format!("{what}: {e}"))
}

#[pymethods]
impl CallServer {
    /// Listens on the Unix socket `path` (which must not exist) and starts
    /// serving messages of at most `max_message` bytes either way. With a
    /// non-empty `token`, every request must carry it as metadata
    /// `x-snakepit-token` (else `UNAUTHENTICATED`), as on the worker's main
    /// socket.
    #[new]
    #[pyo3(signature = (path, token = None, max_message = MAX_MESSAGE))]
    fn new(path: &str, token: Option<&str>, max_message: usize) -> PyResult<Self> {
        let listener = UnixListener::bind(path)
            .map_err(|e| os_error(&format!("cannot listen on {path}"), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| os_error("set_nonblocking", e))?;
        let (wake, notified) = UnixStream::pair().map_err(|e| os_error("socketpair", e))?;
        wake.set_nonblocking(true)
            .map_err(|e| os_error("set_nonblocking", e))?;
        notified
            .set_nonblocking(true)
            .map_err(|e| os_error("set_nonblocking", e))?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            wake,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| os_error("cannot start the call server's runtime", e))?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
        let router = Router {
            shared: shared.clone(),
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| Arc::from(t.as_bytes())),
            max_message,
        };
        std::thread::Builder::new()
            .name("snakepit-calls".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::UnixListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            eprintln!("snakepit call server: {e}");
                            return;
                        }
                    };
                    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
                    let served = tonic::transport::Server::builder()
                        .serve_with_incoming_shutdown(router, incoming, async {
                            let _ = stop_rx.await;
                        })
                        .await;
                    if let Err(e) = served {
                        eprintln!("snakepit call server: {e}");
                    }
                });
                let _ = stopped_tx.send(());
            })
            .map_err(|e| os_error("cannot start the call server's thread", e))?;
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

    /// Sends one reply message on stream `id`; False when the stream is gone
    /// (ended, or its client went away).
    fn send(&self, id: u64, data: &[u8]) -> bool {
        let mut streams = lock(&self.shared.streams);
        let Some(tx) = streams.get(&id) else {
            return false;
        };
        if tx.send(Bytes::copy_from_slice(data)).is_ok() {
            return true;
        }
        streams.remove(&id);
        false
    }

    /// Ends stream `id` with status OK, after the replies already sent.
    fn end(&self, id: u64) {
        lock(&self.shared.streams).remove(&id);
    }

    /// Number of streams open.
    fn open_streams(&self) -> usize {
        lock(&self.shared.streams).len()
    }

    /// Stops listening and ends every stream; waits up to a second for the
    /// server to finish (clients closing their connections). True if it did.
    fn close(&self, py: Python<'_>) -> bool {
        lock(&self.shared.streams).clear();
        if let Some(stop) = lock(&self.stop).take() {
            let _ = stop.send(());
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

/// The module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<CallServer>()?;
    m.add_class::<span::SpanTally>()?;
    m.add_class::<span::DroppedSpanBase>()?;
    Ok(())
}
