//! The floor of one call at a time: the same request and reply bytes as a
//! pool call, with nothing around them. A blocking Rust client writes the
//! encoded one-call `CallBatch` (made once by
//! [`snakepit_grpc::one_call_batch`]) framed as gRPC frames a message (a
//! zero byte, the length as 4 bytes big-endian) on a Unix socket;
//! `floor_peer.py` reads it whole and answers with the `CallReplyBatch` a
//! worker sends for `ping`, framed alike. No HTTP/2, no runtime, no event
//! loop, no decoding: what a round trip between a Rust and a Python process
//! costs on this machine, which the pool's round trip is held against.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// A running `floor_peer.py` and the client's connection to it.
pub struct Floor {
    peer: Child,
    conn: UnixStream,
    /// The framed request, sent as is on every round trip.
    request: Vec<u8>,
    /// Receives each framed reply.
    reply: Vec<u8>,
    _dir: tempfile::TempDir,
}

/// gRPC's message prefix: a compression flag and the length.
const HEADER: usize = 5;

fn framed(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    out
}

impl Floor {
    /// Starts `floor_peer.py` (beside this bench) with `python` and
    /// connects; `None` (with the reason on stderr) when it cannot.
    pub fn start(python: &Path, tool: &str) -> Option<Floor> {
        use std::io::BufRead;
        let batch = snakepit_grpc::one_call_batch(tool, &serde_json::json!({})).ok()?;
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("floor.sock");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/floor_peer.py");
        let mut peer = Command::new(python)
            .arg(script)
            .arg(&path)
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut line = String::new();
        std::io::BufReader::new(peer.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        if line.trim() != "ready" {
            eprintln!("floor_peer.py did not start");
            let _ = peer.kill();
            let _ = peer.wait();
            return None;
        }
        let conn = UnixStream::connect(&path).ok()?;
        let mut floor = Floor {
            peer,
            conn,
            request: framed(&batch),
            reply: Vec::new(),
            _dir: dir,
        };
        // The reply is a CallReplyBatch: field 1 (replies), length-delimited.
        match floor.round_trip() {
            Ok(()) if floor.reply.first() == Some(&0x0a) => Some(floor),
            other => {
                eprintln!("floor_peer.py answered wrongly: {other:?}");
                None
            }
        }
    }

    /// One request and its reply.
    pub fn round_trip(&mut self) -> std::io::Result<()> {
        self.conn.write_all(&self.request)?;
        let mut header = [0u8; HEADER];
        self.conn.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        self.reply.resize(len, 0);
        self.conn.read_exact(&mut self.reply)
    }

    /// Round trips of `n` calls one at a time (after a warm-up), µs each.
    pub fn samples_us(&mut self, n: usize) -> Vec<f64> {
        for _ in 0..200 {
            self.round_trip().expect("floor round trip");
        }
        (0..n)
            .map(|_| {
                let t0 = Instant::now();
                self.round_trip().expect("floor round trip");
                t0.elapsed().as_secs_f64() * 1e6
            })
            .collect()
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        // The peer ends when the connection closes.
        let _ = self.conn.shutdown(std::net::Shutdown::Both);
        let _ = self.peer.wait();
    }
}
