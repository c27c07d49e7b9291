//! The sink's thread: the `/metrics` HTTP listener and the recorder's upkeep.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use snakepit_core::SinkError;

use super::samples::Registry;
use super::PrometheusError;

/// The sink's thread: serves `/metrics` when a listen address is set,
/// polling a non-blocking socket (so it can stop without a wake-up
/// connection), and runs the recorder's upkeep every second: histogram
/// samples are buffered until then, so memory stays bounded even when
/// nobody scrapes.
pub(super) struct Listener {
    pub addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

const POLL: Duration = Duration::from_millis(10);
const UPKEEP_EVERY: Duration = Duration::from_secs(1);
const MAX_REQUEST_HEAD: usize = 8 * 1024;

impl Listener {
    pub fn start(
        addr: Option<SocketAddr>,
        registry: Arc<Registry>,
    ) -> Result<Listener, PrometheusError> {
        let unspecified = SocketAddr::from(([127, 0, 0, 1], 0));
        let err = |source| PrometheusError::Listen {
            listen: addr.unwrap_or(unspecified),
            source,
        };
        let (socket, local) = match addr {
            Some(addr) => {
                let socket = TcpListener::bind(addr).map_err(err)?;
                socket.set_nonblocking(true).map_err(err)?;
                let local = socket.local_addr().map_err(err)?;
                (Some(socket), Some(local))
            }
            None => (None, None),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("snakepit-prometheus".into())
            .spawn(move || serve(socket, &registry, flag))
            .map_err(err)?;
        Ok(Listener {
            addr: local,
            stop,
            thread,
        })
    }

    pub fn stop(self, timeout: Duration) -> Result<(), SinkError> {
        self.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + timeout;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return Err(SinkError::Timeout {
                    sink: "prometheus".into(),
                    timeout,
                    pending: 0,
                });
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.thread.join();
        Ok(())
    }
}

fn serve(socket: Option<TcpListener>, registry: &Registry, stop: Arc<AtomicBool>) {
    let mut last_upkeep = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let Some(socket) = &socket else {
            std::thread::sleep(POLL * 5);
            if last_upkeep.elapsed() >= UPKEEP_EVERY {
                registry.upkeep();
                last_upkeep = Instant::now();
            }
            continue;
        };
        match socket.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, registry) {
                    tracing::debug!(target: "snakepit::telemetry", error = %e, "prometheus scrape failed");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                tracing::warn!(target: "snakepit::telemetry", error = %e, "prometheus listener accept failed");
                std::thread::sleep(POLL);
            }
        }
        if last_upkeep.elapsed() >= UPKEEP_EVERY {
            registry.upkeep();
            last_upkeep = Instant::now();
        }
    }
}

/// Answers one HTTP/1.x request: `GET /metrics` gets the exposition, anything
/// else a 404 (or 405). The connection is closed afterwards.
fn answer(mut stream: TcpStream, registry: &Registry) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if head.len() > MAX_REQUEST_HEAD {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                b"",
            );
        }
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => {
            let body = registry.render();
            respond(
                &mut stream,
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                body.as_bytes(),
            )
        }
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", b""),
        _ => respond(
            &mut stream,
            "404 Not Found",
            "text/plain",
            b"try /metrics\n",
        ),
    }
}

fn respond(
    stream: &mut TcpStream,
    status: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()
}
