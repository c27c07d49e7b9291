//! The one-RPC-per-call paths (`ExecuteTool`, `ExecuteStreamingTool`):
//! slower than the call stream, kept as the benchmark baseline and for
//! simple servers.

use tonic::metadata::MetadataValue;
use tonic::Request;

use crate::call_span::CallSpan;
use crate::calls::tool_error;
use crate::chunks::{ChunkStream, Source};
use crate::client::{decode_result, WorkerClient};
use crate::error::{from_status, worker_timeout, CallError};
use crate::options::{CallOptions, ToolOutput};
use crate::proto;

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
        // The same fields as a call-stream request, in the unary message.
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

    /// Runs a tool with one unary `ExecuteTool` RPC (the slower path, kept
    /// as the baseline and for simple servers). Same contract as
    /// [`WorkerClient::execute`].
    pub async fn execute_unary(
        &self,
        tool: &str,
        args: serde_json::Value,
        opts: CallOptions,
    ) -> Result<ToolOutput, CallError> {
        let telemetry = &self.inner.telemetry;
        let span = CallSpan::begin(telemetry, &self.inner.worker_id, "ExecuteTool", tool, &opts);
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

    /// Runs a streaming tool with one `ExecuteStreamingTool` RPC. Same
    /// contract as [`WorkerClient::execute_stream`].
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
            "ExecuteStreamingTool",
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
        let started = opened.map(|streaming| Source::Rpc(Box::pin(streaming)));
        self.chunk_stream(started, span, &opts)
    }
}
