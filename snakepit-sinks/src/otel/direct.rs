//! Spans encoded on the emitting thread: the three spans of every call are
//! built from their end event alone, so the handler writes each straight
//! into a batch buffer as OTLP protobuf, with no copy of the event, no
//! queue message per span and no work on the export thread but the POST.
//!
//! Each emitting thread writes into one of a few shards (picked once per
//! thread), so two threads rarely share a lock. A shard's chunk goes to the
//! export thread as one message when it holds a batch; the export thread
//! takes partly filled chunks when its export interval comes, and on flush
//! and shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::shard::{self, CacheLine, SHARDS};

/// Spans encoded as `ScopeSpans.spans` entries after `reserve` spare bytes
/// (see `Frame`), so a chunk is sent as a request without copying.
pub(crate) struct Chunk {
    pub buf: Vec<u8>,
    pub spans: usize,
    /// When its first span was written.
    pub started: Option<Instant>,
}

impl Chunk {
    /// A chunk with no span, writing into `buf`.
    fn empty(buf: Vec<u8>) -> Chunk {
        Chunk {
            buf,
            spans: 0,
            started: None,
        }
    }
}

/// A chunk is handed over at this size even short of a batch (a few spans
/// with very large attributes).
const MAX_CHUNK_BYTES: usize = 4 << 20;

/// The shard buffers of one sink.
pub(crate) struct Shards {
    shards: Box<[CacheLine<Mutex<Chunk>>]>,
    /// Spare bytes at the start of every chunk, for the request header.
    reserve: usize,
    /// Spans per chunk handed over.
    per_chunk: usize,
    /// Set when the export thread stops.
    closed: AtomicBool,
    /// Buffers of sent chunks, for the next chunks: written again while
    /// still in cache, and seldom freed on another thread than their own.
    spare: Mutex<Vec<Vec<u8>>>,
}

/// The shards are closed: the sink has shut down.
pub(crate) struct Closed;

/// Truncates a buffer back to `len` when dropped (forgotten on success).
struct Truncate<'a> {
    buf: &'a mut Vec<u8>,
    len: usize,
}

impl Drop for Truncate<'_> {
    fn drop(&mut self) {
        self.buf.truncate(self.len);
    }
}

impl Shards {
    pub fn new(reserve: usize, per_chunk: usize) -> Shards {
        Shards {
            shards: (0..SHARDS)
                .map(|_| CacheLine(Mutex::new(Chunk::empty(Vec::new()))))
                .collect(),
            reserve,
            per_chunk: per_chunk.max(1),
            closed: AtomicBool::new(false),
            spare: Mutex::new(Vec::new()),
        }
    }

    fn lock(&self, i: usize) -> MutexGuard<'_, Chunk> {
        self.shards[i % self.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one span with `write` to this thread's chunk; returns the
    /// chunk when it is full, for the caller to hand over. `Err` once the
    /// shards are closed (the span is not written).
    #[inline]
    pub fn push(&self, write: impl FnOnce(&mut Vec<u8>)) -> Result<Option<Chunk>, Closed> {
        let mut chunk = self.lock(shard::this_thread());
        // Read under the lock: `close` sets it before draining, so a span
        // is either drained by `close` or refused here.
        if self.closed.load(Ordering::Relaxed) {
            return Err(Closed);
        }
        if chunk.spans == 0 {
            chunk.buf.resize(self.reserve, 0);
            chunk.started = Some(Instant::now());
        }
        // A panic while writing (a bug) must not leave half a span in the
        // chunk: the whole request would be refused.
        let undo = Truncate {
            len: chunk.buf.len(),
            buf: &mut chunk.buf,
        };
        write(undo.buf);
        std::mem::forget(undo);
        chunk.spans += 1;
        Ok(
            if chunk.spans >= self.per_chunk || chunk.buf.len() >= MAX_CHUNK_BYTES {
                Some(self.take(&mut chunk))
            } else {
                None
            },
        )
    }

    /// Refuses spans from now on; returns how many were waiting (dropped).
    pub fn close(&self) -> usize {
        self.closed.store(true, Ordering::Relaxed);
        (0..self.shards.len())
            .map(|i| {
                let mut chunk = self.lock(i);
                std::mem::replace(&mut *chunk, Chunk::empty(Vec::new())).spans
            })
            .sum()
    }

    /// When the oldest span waiting in a shard was written.
    pub fn oldest(&self) -> Option<Instant> {
        (0..self.shards.len())
            .filter_map(|i| self.lock(i).started)
            .min()
    }

    /// Takes every partly filled chunk.
    pub fn drain(&self) -> impl Iterator<Item = Chunk> + '_ {
        (0..self.shards.len()).filter_map(|i| {
            let mut chunk = self.lock(i);
            (chunk.spans > 0).then(|| self.take(&mut chunk))
        })
    }

    /// Keeps the buffer of a sent chunk for a next one (a few at most).
    pub fn recycle(&self, mut buf: Vec<u8>) -> Option<Vec<u8>> {
        let mut spare = self.spare.lock().unwrap_or_else(|p| p.into_inner());
        if spare.len() >= SHARDS || self.closed.load(Ordering::Relaxed) {
            return Some(buf);
        }
        buf.clear();
        spare.push(buf);
        None
    }

    /// The chunk, replaced by an empty one.
    fn take(&self, chunk: &mut Chunk) -> Chunk {
        let spare = self.spare.lock().unwrap_or_else(|p| p.into_inner()).pop();
        // The next chunk will need about as much room.
        let buf = spare.unwrap_or_else(|| Vec::with_capacity(chunk.buf.capacity()));
        std::mem::replace(chunk, Chunk::empty(buf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that panics halfway leaves nothing of its span behind, and
    /// the shard takes the next span as if nothing happened.
    #[test]
    fn a_panicking_writer_leaves_no_partial_span() {
        let shards = Shards::new(3, 2);
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = shards.push(|out| {
                out.extend_from_slice(b"half");
                panic!("encoder bug");
            });
        }));
        assert!(panicked.is_err());
        assert!(matches!(shards.push(|out| out.push(7)), Ok(None)));
        let chunk = match shards.push(|out| out.push(8)) {
            Ok(Some(chunk)) => chunk,
            _ => panic!("the second span fills the chunk"),
        };
        assert_eq!((chunk.spans, &chunk.buf[..]), (2, &[0, 0, 0, 7, 8][..]));
        assert!(chunk.started.is_some());
        // Closed: refused, and what was waiting is counted.
        assert!(matches!(shards.push(|out| out.push(9)), Ok(None)));
        assert_eq!(shards.close(), 1);
        assert!(shards.push(|out| out.push(10)).is_err());
        assert_eq!(shards.drain().count(), 0);
    }
}
