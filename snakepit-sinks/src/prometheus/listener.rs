//! The sink's threads: the `/metrics` HTTP server and the recorder's upkeep.
//!
//! The server is hyper's HTTP/1 connection driver on a single-threaded
//! tokio runtime that the listener thread owns (the sink works under any
//! runtime, or none). Every connection is its own task, so a slow client
//! holds only its connection, never the listener or another scrape:
//!
//! * a request head must arrive within [`HEADER_TIMEOUT`] (a client that
//!   trickles its request is closed then);
//! * a connection lives at most [`CONNECTION_TIMEOUT`] in all (request,
//!   render, response and keep-alive);
//! * at most [`MAX_CONNECTIONS`] connections are served at once; one more is
//!   closed as soon as it is accepted (so that many clients holding their
//!   connections can refuse scrapes until their deadlines: the listener
//!   belongs on a trusted network);
//! * a request head may be at most [`MAX_REQUEST_HEAD`] bytes (larger: 431).
//!
//! Upkeep (handing buffered histogram samples to the recorder, every
//! [`UPKEEP_EVERY`]) runs on a thread of its own, so memory stays bounded
//! whatever the listener is doing, and whether or not anyone scrapes. A
//! scrape still hands every buffered sample over before it renders.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use snakepit_core::SinkError;
use tokio::sync::{Notify, Semaphore};

use super::samples::Registry;
use super::PrometheusError;

/// How long a client may take to send a request head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may stay open, whatever it does.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// Largest request head accepted, in bytes.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// How often buffered samples are handed to the recorder.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(1);

const CONTENT_TYPE_METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The running threads of one sink.
pub(super) struct Listener {
    pub addr: Option<SocketAddr>,
    server: Option<(Arc<Notify>, JoinHandle<()>)>,
    upkeep: (mpsc::Sender<()>, JoinHandle<()>),
}

impl Listener {
    /// Binds `addr` (when set) and starts the server and upkeep threads.
    pub fn start(
        addr: Option<SocketAddr>,
        registry: Arc<Registry>,
    ) -> Result<Listener, PrometheusError> {
        let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
        let err = |source| PrometheusError::Listen {
            listen: addr.unwrap_or(unspecified),
            source,
        };
        let server = match addr {
            Some(addr) => {
                let socket = std::net::TcpListener::bind(addr).map_err(err)?;
                socket.set_nonblocking(true).map_err(err)?;
                let local = socket.local_addr().map_err(err)?;
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                    .map_err(err)?;
                let socket = {
                    let _in_runtime = runtime.enter();
                    tokio::net::TcpListener::from_std(socket).map_err(err)?
                };
                let stop = Arc::new(Notify::new());
                let (registry, flag) = (registry.clone(), stop.clone());
                let thread = std::thread::Builder::new()
                    .name("snakepit-prom-http".into())
                    .spawn(move || runtime.block_on(serve(socket, registry, flag)))
                    .map_err(err)?;
                Some((local, stop, thread))
            }
            None => None,
        };
        let (upkeep_tx, upkeep_rx) = mpsc::channel();
        let upkeep = std::thread::Builder::new()
            .name("snakepit-prom-upkeep".into())
            .spawn(move || loop {
                match upkeep_rx.recv_timeout(UPKEEP_EVERY) {
                    Err(RecvTimeoutError::Timeout) => registry.upkeep(),
                    _ => return,
                }
            });
        let upkeep = match upkeep {
            Ok(thread) => thread,
            Err(e) => {
                if let Some((_, stop, _)) = &server {
                    stop.notify_one();
                }
                return Err(err(e));
            }
        };
        Ok(Listener {
            addr: server.as_ref().map(|(local, _, _)| *local),
            server: server.map(|(_, stop, thread)| (stop, thread)),
            upkeep: (upkeep_tx, upkeep),
        })
    }

    /// Stops both threads; connections in progress are closed. Waits for
    /// them at most `timeout`.
    pub fn stop(self, timeout: Duration) -> Result<(), SinkError> {
        let deadline = Instant::now() + timeout;
        let (upkeep_stop, upkeep) = self.upkeep;
        drop(upkeep_stop);
        let mut threads = vec![upkeep];
        if let Some((stop, thread)) = self.server {
            stop.notify_one();
            threads.push(thread);
        }
        for thread in threads {
            while !thread.is_finished() {
                if Instant::now() >= deadline {
                    return Err(SinkError::Timeout {
                        sink: "prometheus".into(),
                        timeout,
                        pending: 0,
                    });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            let _ = thread.join();
        }
        Ok(())
    }
}

/// Accepts connections until `stop` is notified; each connection is a task.
async fn serve(socket: tokio::net::TcpListener, registry: Arc<Registry>, stop: Arc<Notify>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = stop.notified() => return,
            accepted = socket.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, mostly: wait a little.
                tracing::warn!(target: "snakepit::telemetry", error = %e, "prometheus listener accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(
                target: "snakepit::telemetry",
                max = MAX_CONNECTIONS,
                "prometheus listener: too many connections; closing a new one"
            );
            continue;
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_REQUEST_HEAD)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |request| std::future::ready(answer(&request, &registry))),
                );
            match tokio::time::timeout(CONNECTION_TIMEOUT, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(target: "snakepit::telemetry", error = %e, "prometheus connection failed");
                }
                Err(_) => {
                    tracing::debug!(target: "snakepit::telemetry", timeout = ?CONNECTION_TIMEOUT, "prometheus connection closed at its deadline");
                }
            }
            drop(permit);
        });
    }
}

/// `GET /metrics` gets the exposition; another method on `/metrics` a 405,
/// anything else a 404.
fn answer(
    request: &Request<Incoming>,
    registry: &Registry,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            CONTENT_TYPE_METRICS,
            Bytes::from(registry.render()),
        ),
        (_, "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", Bytes::new()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"try /metrics\n"),
        ),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(response)
}
