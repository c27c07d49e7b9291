//! The `console` exporter of the OTel sink: every finished span as one line
//! of text (`key=value` pairs), to standard output or appended to a file,
//! instead of an OTLP request. The spans are the ones the OTLP exporter
//! would send, read back from the same encoded batch.
//!
//! ```text
//! span name=grpc.call kind=client trace_id=0af7…319c span_id=b7ad…3331 parent_span_id=- duration_us=412.3 status=ok rpc.method=CallBatchStream …
//! ```

use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use prost::Message;

use super::proto::{self, any_value, ExportTraceServiceRequest};
use super::OtelError;

/// Where the lines go.
pub(crate) struct Console {
    out: Mutex<Box<dyn Write + Send>>,
}

impl Console {
    /// Standard output, or `path` opened for appending (created if needed).
    pub fn open(path: Option<&Path>) -> Result<Console, OtelError> {
        let out: Box<dyn Write + Send> = match path {
            None => Box::new(std::io::stdout()),
            Some(p) => Box::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| OtelError::Console {
                        path: p.display().to_string(),
                        message: e.to_string(),
                    })?,
            ),
        };
        Ok(Console {
            out: Mutex::new(out),
        })
    }

    /// Writes one line per span of `request` (an encoded
    /// `ExportTraceServiceRequest`).
    pub fn write(&self, request: &[u8]) -> Result<(), String> {
        let request = ExportTraceServiceRequest::decode(request)
            .map_err(|e| format!("cannot read back the batch: {e}"))?;
        let mut text = String::new();
        for rs in &request.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    line(span, &mut text);
                }
            }
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(|e| format!("cannot write spans: {e}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    if bytes.iter().all(|&b| b == 0) {
        return "-".to_string();
    }
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A value as written in a line: bare when it has no space, quote or `=`,
/// else quoted with `"` and `\` escaped.
fn value(text: &str, out: &mut String) {
    if !text.is_empty() && !text.contains([' ', '"', '=', '\n', '\\']) {
        out.push_str(text);
        return;
    }
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn any(v: Option<&proto::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        None => String::new(),
    }
}

fn line(span: &proto::Span, out: &mut String) {
    let kind = match span.kind {
        proto::span_kind::CLIENT => "client",
        proto::span_kind::SERVER => "server",
        proto::span_kind::INTERNAL => "internal",
        _ => "unspecified",
    };
    let duration_us = span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano) as f64
        / 1000.0;
    out.push_str("span name=");
    value(&span.name, out);
    let _ = write!(
        out,
        " kind={kind} trace_id={} span_id={} parent_span_id={} start_unix_nano={} duration_us={duration_us:.1}",
        hex(&span.trace_id),
        hex(&span.span_id),
        hex(&span.parent_span_id),
        span.start_time_unix_nano,
    );
    match &span.status {
        Some(s) if s.code == proto::STATUS_ERROR => {
            out.push_str(" status=error status_message=");
            value(&s.message, out);
        }
        _ => out.push_str(" status=ok"),
    }
    for kv in &span.attributes {
        out.push(' ');
        out.push_str(&kv.key);
        out.push('=');
        value(&any(kv.value.as_ref()), out);
    }
    for ev in &span.events {
        out.push_str(" event=");
        value(&ev.name, out);
    }
    out.push('\n');
}
