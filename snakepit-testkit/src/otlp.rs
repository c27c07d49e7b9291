//! OTLP/HTTP trace receivers for tests and benchmarks on a free loopback
//! port: [`OtlpReceiver`] decodes every request with the
//! `opentelemetry-proto` crate (independent of the sink's encoder) and keeps
//! the spans; [`discard_receiver`] reads each request and answers 200, as a
//! fast collector would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// What the receiver got.
#[derive(Default)]
pub struct Received {
    /// Every span, in arrival order, with its resource's `service.name`.
    pub spans: Vec<(String, Span)>,
    /// The instrumentation scope name of each span of `spans`, in the
    /// same order.
    pub scopes: Vec<String>,
    /// Request paths and content types.
    pub requests: Vec<(String, String)>,
    /// Every header of each request, names in lower case, in the order of
    /// `requests`.
    pub headers: Vec<Vec<(String, String)>>,
    /// The resource attributes of each request (as text), in that order.
    pub resources: Vec<Vec<(String, String)>>,
}

/// A receiver on a free loopback port; stops on drop.
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Every span and request so far.
    pub received: Arc<Mutex<Received>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// HTTP status to answer with.
    pub status: Arc<Mutex<u16>>,
    /// Statuses to answer the next requests with, first to last, before
    /// `status` (each refused request is counted in `refused`).
    pub script: Arc<Mutex<std::collections::VecDeque<u16>>>,
    /// Requests answered from `script` with a status other than 200.
    pub refused: Arc<std::sync::atomic::AtomicUsize>,
    /// TCP connections accepted.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl OtlpReceiver {
    /// Listens on a free loopback port, answering 200 until told otherwise.
    pub fn start() -> OtlpReceiver {
        OtlpReceiver::listen(None)
    }

    /// The same over TLS (https), with the certificate and key in these PEM
    /// files.
    pub fn start_tls(cert: &std::path::Path, key: &std::path::Path) -> OtlpReceiver {
        use rustls_pki_types::pem::PemObject;
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(cert)
            .expect("the certificate file")
            .map(|c| c.expect("a PEM certificate"))
            .collect();
        let key = rustls_pki_types::PrivateKeyDer::from_pem_file(key).expect("the key file");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("a usable certificate and key");
        OtlpReceiver::listen(Some(Arc::new(config)))
    }

    fn listen(tls: Option<Arc<rustls::ServerConfig>>) -> OtlpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(200u16));
        let script = Arc::new(Mutex::new(std::collections::VecDeque::new()));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let conns = connections.clone();
        let (r, s, st) = (received.clone(), stop.clone(), status.clone());
        let (sc, rf) = (script.clone(), refused.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        conns.fetch_add(1, Ordering::SeqCst);
                        let (r, st, sc, rf) = (r.clone(), st.clone(), sc.clone(), rf.clone());
                        stream
                            .set_read_timeout(Some(Duration::from_secs(10)))
                            .unwrap();
                        let tls = tls.clone();
                        std::thread::spawn(move || match tls {
                            None => serve(stream, &r, &st, &sc, &rf),
                            Some(config) => {
                                let Ok(conn) = rustls::ServerConnection::new(config) else {
                                    return;
                                };
                                serve(rustls::StreamOwned::new(conn, stream), &r, &st, &sc, &rf)
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        OtlpReceiver {
            addr,
            received,
            stop,
            thread: Some(thread),
            status,
            script,
            refused,
            connections,
        }
    }

    /// The `http://host:port` endpoint to give an OTel sink.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `https://localhost:port` endpoint of a receiver started with
    /// [`OtlpReceiver::start_tls`] (its certificate names `localhost`).
    pub fn https_endpoint(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }

    /// Waits until at least `n` spans arrived; returns them.
    pub fn wait_spans(&self, n: usize, timeout: Duration) -> Vec<(String, Span)> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let r = self.received.lock().unwrap();
                if r.spans.len() >= n || Instant::now() >= deadline {
                    return r.spans.clone();
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve<S: Read + Write>(
    stream: S,
    received: &Mutex<Received>,
    status: &Mutex<u16>,
    script: &Mutex<std::collections::VecDeque<u16>>,
    refused: &std::sync::atomic::AtomicUsize,
) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut length, mut content_type) = (0usize, String::new());
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or((h, ""));
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => length = v.trim().parse().unwrap_or(0),
                "content-type" => content_type = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let scripted = script.lock().unwrap().pop_front();
        let code = scripted.unwrap_or_else(|| *status.lock().unwrap());
        if scripted.is_some() && code != 200 {
            refused.fetch_add(1, Ordering::SeqCst);
        }
        // A 429 asks the client to wait one second.
        let retry_after = if code == 429 {
            "Retry-After: 1\r\n"
        } else {
            ""
        };
        if code == 200 {
            let gzipped = headers
                .iter()
                .any(|(k, v)| k == "content-encoding" && v == "gzip");
            if gzipped {
                let mut plain = Vec::new();
                flate2::read::GzDecoder::new(body.as_slice())
                    .read_to_end(&mut plain)
                    .expect("a gzip body");
                body = plain;
            }
            let request = ExportTraceServiceRequest::decode(body.as_slice())
                .expect("the sink's request decodes with opentelemetry-proto");
            let mut r = received.lock().unwrap();
            r.requests.push((path, content_type));
            r.headers.push(headers);
            r.resources.push(
                request
                    .resource_spans
                    .iter()
                    .flat_map(|rs| rs.resource.iter().flat_map(|r| r.attributes.iter()))
                    .map(|kv| {
                        (
                            kv.key.clone(),
                            kv.value.as_ref().map(text).unwrap_or_default(),
                        )
                    })
                    .collect(),
            );
            for rs in request.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref())
                    .map(text)
                    .unwrap_or_default();
                for ss in rs.scope_spans {
                    let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                    for span in ss.spans {
                        r.spans.push((service.clone(), span));
                        r.scopes.push(scope.clone());
                    }
                }
            }
        }
        // A 200 carries an ExportTraceServiceResponse with an empty
        // `partial_success`, as collectors may send.
        let body = if code == 200 { "\x0a\x00" } else { "" };
        let reply = format!(
            "HTTP/1.1 {code} X\r\n{retry_after}Content-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let writer = reader.get_mut();
        if writer.write_all(reply.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
    }
}

/// An attribute value as text.
pub fn text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// A span's attribute by key, as text.
pub fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(text)
}

/// A span's integer attribute by key (`None` when absent or not an
/// integer).
pub fn int_attr(span: &Span, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value {
            Some(any_value::Value::IntValue(i)) => Some(i),
            _ => None,
        })
}

/// A span's attribute keys, sorted.
pub fn attr_keys(span: &Span) -> Vec<String> {
    let mut keys: Vec<String> = span.attributes.iter().map(|kv| kv.key.clone()).collect();
    keys.sort();
    keys
}

/// The attributes every RPC span (`grpc.call`, `python.call`) carries.
pub const RPC_KEYS: [&str; 4] = [
    "rpc.grpc.status_code",
    "rpc.method",
    "rpc.service",
    "rpc.system",
];

/// The attributes of a worker's span the host adds (with the tool's name).
pub const WORKER_KEYS: [&str; 5] = [
    "snakepit.node",
    "snakepit.pool",
    "snakepit.tool.name",
    "snakepit.worker.id",
    "snakepit.worker.pid",
];

/// The network attributes of a `grpc.call` over a Unix socket.
pub const UNIX_KEYS: [&str; 2] = ["network.transport", "server.address"];

/// `groups` of keys as one sorted list, to compare with [`attr_keys`].
pub fn keys(groups: &[&[&str]]) -> Vec<String> {
    let mut keys: Vec<String> = groups
        .iter()
        .flat_map(|g| g.iter())
        .map(|k| k.to_string())
        .collect();
    keys.sort();
    keys
}

/// Checks the RPC attributes of a call span: gRPC, the proto service,
/// `method` and status code `status`.
pub fn assert_rpc(span: &Span, method: &str, status: i64) {
    assert_eq!(
        attr(span, "rpc.system").as_deref(),
        Some("grpc"),
        "{}",
        span.name
    );
    assert_eq!(
        attr(span, "rpc.service").as_deref(),
        Some("snakepit.bridge.BridgeService"),
        "{}",
        span.name
    );
    assert_eq!(
        attr(span, "rpc.method").as_deref(),
        Some(method),
        "{}",
        span.name
    );
    assert_eq!(
        int_attr(span, "rpc.grpc.status_code"),
        Some(status),
        "{}",
        span.name
    );
}

/// An attribute of a span's event named `event` (the first), as text.
pub fn event_attr(span: &Span, event: &str, key: &str) -> Option<String> {
    span.events
        .iter()
        .find(|e| e.name == event)?
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(text)
}

/// 16 hex digits of an 8-byte id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A local OTLP/HTTP receiver that reads each request and answers 200 with
/// an empty body, without decoding it; returns its `http://` endpoint. It
/// serves until the process exits.
pub fn discard_receiver() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || discard(stream));
        }
    });
    format!("http://{addr}")
}

fn discard(stream: TcpStream) {
    let Ok(mut w) = stream.try_clone() else {
        return;
    };
    let mut r = BufReader::new(stream);
    // One body buffer for the connection, as a collector would reuse its
    // read buffers.
    let mut body = Vec::new();
    loop {
        let mut len = 0usize;
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(len, 0);
        if r.read_exact(&mut body).is_err()
            || w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .is_err()
        {
            return;
        }
    }
}
