//! [`ChunkStream`]: the chunks of one streaming call, in order.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use snakepit_telemetry::Telemetry;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::call_span::CallSpan;
use crate::calls::{PendingGuard, StreamItem};
use crate::compat::ToolChunks;
use crate::error::{worker_timeout, CallError};

/// Where the chunks come from.
pub(crate) enum Source {
    /// A call on a `CallBatchStream`.
    CallBatches {
        rx: mpsc::UnboundedReceiver<StreamItem>,
        /// Let go when the stream ends on the host (its timeout, a bad
        /// chunk): a call the worker has not ended is then cancelled there,
        /// without waiting for the caller to drop the stream.
        guard: Option<PendingGuard>,
    },
    /// An `ExecuteStreamingTool` RPC (the compatibility path).
    Compat(ToolChunks),
}

impl Source {
    fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<StreamItem> {
        match self {
            Source::CallBatches { rx, .. } => rx.poll_recv(cx).map(|item| {
                item.unwrap_or_else(|| {
                    StreamItem::Error(CallError::unavailable(
                        "the call stream closed before the streaming call ended",
                    ))
                })
            }),
            Source::Compat(chunks) => chunks.poll_item(cx),
        }
    }
}

/// The chunks of a streaming call: each item is one JSON chunk, in order;
/// the stream ends after the last chunk, and an error item ends it too.
/// Dropping it early cancels the call: on the host (the
/// `grpc.stream.closed` event then has reason `cancelled`) and, on the
/// persistent call stream, in the worker too: a cancel request stops the
/// tool (a sync generator is closed at its next item, an async one is
/// cancelled) and its Python call span ends with `error_type = Cancelled`.
/// A stream that times out cancels the call in the worker the same way, at
/// once. The worker confirms a cancel once the generator has really
/// stopped; until then the call counts for the stuck-call watchdog
/// ([`crate::WorkerClient::overdue_calls`]).
pub struct ChunkStream {
    source: Source,
    span: CallSpan,
    telemetry: Telemetry,
    worker_id: Arc<str>,
    deadline: Option<(Pin<Box<Sleep>>, Duration)>,
    count: u64,
    done: bool,
}

impl std::fmt::Debug for ChunkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkStream")
            .field("tool", &self.span.tool)
            .field("worker_id", &self.worker_id)
            .field("chunks", &self.count)
            .field("done", &self.done)
            .finish()
    }
}

impl ChunkStream {
    pub(crate) fn new(
        source: Source,
        span: CallSpan,
        telemetry: Telemetry,
        worker_id: Arc<str>,
        timeout: Option<Duration>,
    ) -> Self {
        span.stream_opened(&telemetry, &worker_id);
        ChunkStream {
            source,
            span,
            telemetry,
            worker_id,
            deadline: timeout.map(|t| (Box::pin(tokio::time::sleep(t)), t)),
            count: 0,
            done: false,
        }
    }

    /// Chunks delivered so far.
    pub fn chunks(&self) -> u64 {
        self.count
    }

    fn end(&mut self, outcome: Result<(), &CallError>) {
        self.done = true;
        if let Source::CallBatches { guard, .. } = &mut self.source {
            guard.take();
        }
        let reason = if outcome.is_ok() {
            "completed"
        } else {
            "error"
        };
        self.span
            .stream_closed(&self.telemetry, &self.worker_id, self.count, reason);
        self.span
            .finish(&self.telemetry, &self.worker_id, outcome.map(|_| "OK"));
    }
}

impl Stream for ChunkStream {
    type Item = Result<serde_json::Value, CallError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let item = match this.source.poll_item(cx) {
            Poll::Ready(item) => item,
            Poll::Pending => {
                if let Some((sleep, after)) = &mut this.deadline {
                    if sleep.as_mut().poll(cx).is_ready() {
                        let e = CallError::Timeout { after: *after };
                        this.end(Err(&e));
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                return Poll::Pending;
            }
        };
        match item {
            StreamItem::Chunk(data, seq) => match serde_json::from_slice(&data) {
                Ok(value) => {
                    this.count += 1;
                    this.span
                        .stream_message(&this.telemetry, &this.worker_id, data.len(), seq);
                    Poll::Ready(Some(Ok(value)))
                }
                Err(e) => {
                    let e = CallError::protocol(format!(
                        "chunk {seq} of tool {:?} is not valid JSON: {e}",
                        this.span.tool
                    ));
                    this.end(Err(&e));
                    Poll::Ready(Some(Err(e)))
                }
            },
            StreamItem::End => {
                this.end(Ok(()));
                Poll::Ready(None)
            }
            StreamItem::Error(e) => {
                let e = worker_timeout(e, this.deadline.as_ref().map(|(_, after)| *after));
                this.end(Err(&e));
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

impl Drop for ChunkStream {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            self.span
                .stream_closed(&self.telemetry, &self.worker_id, self.count, "cancelled");
            self.span
                .finish(&self.telemetry, &self.worker_id, Ok("CANCELLED"));
        }
    }
}
