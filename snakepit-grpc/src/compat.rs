//! The compatibility call paths: one RPC per call (`ExecuteTool`,
//! `ExecuteStreamingTool`), as the reference system (Snakepit) calls its
//! workers.
//!
//! They serve peers that speak one RPC per call: a worker or server of the
//! reference system, or a simple server that implements only these RPCs,
//! reached through [`WorkerClient::execute_unary`] and
//! [`WorkerClient::execute_stream_unary`]; and they are the baseline of the
//! `worker_calls` benchmark. The pool never uses them: its calls go on the
//! persistent `CallBatchStream` (`calls.rs`), which is faster. A call here
//! has the same contract, events and errors as on that stream, except that
//! its `grpc.call.*` events report `rpc_method` `ExecuteTool` or
//! `ExecuteStreamingTool`, and the worker's `python.*` events of the call
//! come through the telemetry stream (not on the reply).
//!
//! The worker's other compatibility RPCs (`CallStream`, `StreamTelemetry`,
//! `Heartbeat`; see the "Compatibility" section of the proto's service) have
//! no client here.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tonic::metadata::MetadataValue;
use tonic::{Request, Streaming};

use crate::call_span::CallSpan;
use crate::calls::{tool_error, StreamItem};
use crate::chunks::{ChunkStream, Source};
use crate::client::{decode_result, WorkerClient};
use crate::error::{from_status, worker_timeout, CallError};
use crate::options::{CallOptions, ToolOutput};
use crate::proto;

/// `rpc_method` of a call on [`WorkerClient::execute_unary`].
const EXECUTE_TOOL: &str = "ExecuteTool";

/// `rpc_method` of a call on [`WorkerClient::execute_stream_unary`].
const EXECUTE_STREAMING_TOOL: &str = "ExecuteStreamingTool";

/// The chunks of one `ExecuteStreamingTool` RPC.
pub(crate) struct ToolChunks(Pin<Box<Streaming<proto::ToolChunk>>>);

impl ToolChunks {
    /// The next chunk, the end (a final chunk without error), or the error
    /// (a final chunk with one, a transport error, or a stream that ended
    /// without a final chunk).
    pub(crate) fn poll_item(&mut self, cx: &mut Context<'_>) -> Poll<StreamItem> {
        self.0.as_mut().poll_next(cx).map(|item| match item {
            Some(Ok(chunk)) if chunk.is_final => match chunk.error {
                Some(e) => StreamItem::Error(tool_error(e)),
                None => StreamItem::End,
            },
            Some(Ok(chunk)) => StreamItem::Chunk(chunk.data, chunk.seq),
            Some(Err(status)) => StreamItem::Error(from_status(&status, None)),
            None => StreamItem::Error(CallError::protocol(
                "the worker ended the stream without a final chunk",
            )),
        })
    }
}

impl WorkerClient {
    /// A request with the correlation id and traceparent as metadata. The
    /// deadline travels as `timeout_ms` and is enforced by the caller
    /// (tonic's own `grpc-timeout` would surface as a transport error).
    fn unary_request<T>(&self, message: T, span: &CallSpan) -> Request<T> {
        let mut request = Request::new(message);
        let md = request.metadata_mut();
        if let Ok(v) = MetadataValue::try_from(span.correlation.as_str()) {
            md.insert(snakepit_telemetry::CORRELATION_HEADER, v);
        }
        if let Ok(v) = MetadataValue::try_from(span.traceparent.as_str()) {
            md.insert("traceparent", v);
        }
        request
    }

    fn tool_request(
        &self,
        tool: &str,
        args: &serde_json::Value,
        opts: &CallOptions,
        span: &CallSpan,
        stream: bool,
    ) -> Result<Request<proto::ExecuteToolRequest>, CallError> {
        // The same fields as a `CallBatchStream` request, in the unary message.
        let r = self.request(tool, args, opts, span, stream)?;
        let message = proto::ExecuteToolRequest {
            tool_name: r.tool_name,
            args_json: r.args_json,
            binary_parameters: r.binary_parameters,
            correlation_id: r.correlation_id,
            traceparent: r.traceparent,
            timeout_ms: r.timeout_ms,
            stream: r.stream,
            ..Default::default()
        };
        Ok(self.unary_request(message, span))
    }

    /// Runs a tool with one unary `ExecuteTool` RPC: the compatibility path
    /// for peers that speak one RPC per call (see the module doc), slower
    /// than [`WorkerClient::execute`]. Same contract as
    /// [`WorkerClient::execute`]; its events report `rpc_method` =
    /// `ExecuteTool`.
    pub async fn execute_unary(
        &self,
        tool: &str,
        args: serde_json::Value,
        opts: CallOptions,
    ) -> Result<ToolOutput, CallError> {
        let telemetry = &self.inner.telemetry;
        let span = CallSpan::begin(
            telemetry,
            &self.inner.worker_id,
            EXECUTE_TOOL,
            &self.inner.address,
            &self.inner.log_parents,
            tool,
            &opts,
        );
        let result = self
            .unless_closed(async {
                let request = self.tool_request(tool, &args, &opts, &span, false)?;
                let mut rpc = self.inner.rpc.clone();
                let call = rpc.execute_tool(request);
                let response = match opts.timeout {
                    Some(after) => tokio::time::timeout(after, call)
                        .await
                        .map_err(|_| CallError::Timeout { after })?,
                    None => call.await,
                }
                .map_err(|s| from_status(&s, opts.timeout))?
                .into_inner();
                if !response.success {
                    let e = tool_error(response.error.unwrap_or(proto::ToolError {
                        r#type: "Unknown".to_string(),
                        message: response.error_message,
                        traceback: String::new(),
                    }));
                    return Err(worker_timeout(e, opts.timeout));
                }
                decode_result(tool, &response.result_json, response.binary_results)
            })
            .await;
        span.finish(
            telemetry,
            &self.inner.worker_id,
            result.as_ref().map(|_| "OK"),
        );
        result
    }

    /// Runs a streaming tool with one `ExecuteStreamingTool` RPC: the
    /// compatibility path for peers that speak one RPC per call (see the
    /// module doc). Same contract as [`WorkerClient::execute_stream`]; its
    /// events report `rpc_method` = `ExecuteStreamingTool`.
    pub async fn execute_stream_unary(
        &self,
        tool: &str,
        args: serde_json::Value,
        opts: CallOptions,
    ) -> Result<ChunkStream, CallError> {
        let telemetry = &self.inner.telemetry;
        let span = CallSpan::begin(
            telemetry,
            &self.inner.worker_id,
            EXECUTE_STREAMING_TOOL,
            &self.inner.address,
            &self.inner.log_parents,
            tool,
            &opts,
        );
        let opened = self
            .unless_closed(async {
                let request = self.tool_request(tool, &args, &opts, &span, true)?;
                let response = self
                    .inner
                    .rpc
                    .clone()
                    .execute_streaming_tool(request)
                    .await
                    .map_err(|s| from_status(&s, opts.timeout))?;
                Ok(response.into_inner())
            })
            .await;
        let started = opened.map(|streaming| Source::Compat(ToolChunks(Box::pin(streaming))));
        self.chunk_stream(started, span, &opts)
    }
}
