//! The chunk stream of a streaming call through the pool.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use snakepit_grpc::{CallError, ChunkStream};

use crate::dispatch::Lease;
use crate::error::PoolError;

type Confirm = Pin<Box<dyn Future<Output = PoolError> + Send>>;

enum State {
    /// Chunks flow; the lease holds the worker's call slot.
    Streaming(Lease),
    /// The stream failed with `Unavailable`: finding out whether the worker
    /// process died (then the error is `WorkerCrashed`).
    Confirming(Confirm),
    Done,
}

/// The chunks of a streaming tool, in order. Holds the worker's call slot
/// until the stream ends or is dropped. An error item ends the stream.
pub struct PoolStream {
    chunks: ChunkStream,
    state: State,
}

impl std::fmt::Debug for PoolStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolStream")
            .field("done", &matches!(self.state, State::Done))
            .finish_non_exhaustive()
    }
}

impl PoolStream {
    pub(crate) fn new(chunks: ChunkStream, lease: Lease) -> Self {
        PoolStream {
            chunks,
            state: State::Streaming(lease),
        }
    }
}

impl Stream for PoolStream {
    type Item = Result<serde_json::Value, PoolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Confirming(confirm) => {
                    let err = std::task::ready!(confirm.as_mut().poll(cx));
                    this.state = State::Done;
                    return Poll::Ready(Some(Err(err)));
                }
                State::Streaming(_) => match Pin::new(&mut this.chunks).poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => return Poll::Ready(Some(Ok(chunk))),
                    Poll::Ready(None) => {
                        this.state = State::Done;
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Some(Err(e))) => {
                        let State::Streaming(lease) =
                            std::mem::replace(&mut this.state, State::Done)
                        else {
                            unreachable!("matched Streaming above");
                        };
                        if !matches!(e, CallError::Unavailable { .. }) {
                            return Poll::Ready(Some(Err(PoolError::Call(e))));
                        }
                        let worker = lease.worker.clone();
                        drop(lease);
                        this.state = State::Confirming(Box::pin(async move {
                            crate::pool::classify(&worker, e).await
                        }));
                    }
                },
            }
        }
    }
}
