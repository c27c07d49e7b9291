//! The chunk stream of a streaming call through the pool.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;

use crate::dispatch::Lease;
use crate::error::PoolError;
use snakepit_grpc::{CallError, ChunkStream};

/// The chunks of a streaming tool, in order. Holds the worker's call slot
/// until the stream ends or is dropped.
pub struct PoolStream {
    chunks: ChunkStream,
    lease: Option<Lease>,
}

impl std::fmt::Debug for PoolStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolStream")
            .field("done", &self.lease.is_none())
            .finish_non_exhaustive()
    }
}

impl PoolStream {
    pub(crate) fn new(chunks: ChunkStream, lease: Lease) -> Self {
        PoolStream {
            chunks,
            lease: Some(lease),
        }
    }
}

impl Stream for PoolStream {
    type Item = Result<serde_json::Value, PoolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.lease.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.chunks).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                this.lease = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(chunk))),
            Poll::Ready(Some(Err(e))) => {
                let lease = this.lease.take();
                let crashed = match (&e, &lease) {
                    (CallError::Unavailable { .. }, Some(l)) if !l.worker.external => l
                        .worker
                        .exit
                        .borrow()
                        .clone()
                        .map(|reason| (l.worker.worker_id.to_string(), reason)),
                    _ => None,
                };
                Poll::Ready(Some(Err(match crashed {
                    Some((worker_id, reason)) => PoolError::WorkerCrashed { worker_id, reason },
                    None => PoolError::Call(e),
                })))
            }
        }
    }
}
