//! An OpenTelemetry SDK span exporter that sends OTLP/HTTP protobuf, for
//! tests of an application's own SDK pipeline: each batch becomes one
//! `ExportTraceServiceRequest`, converted with `opentelemetry-proto`'s
//! transform (the conversion the OTLP exporters of opentelemetry-rust use)
//! and posted to `<endpoint>/v1/traces`, for instance an
//! [`OtlpReceiver`](crate::otlp::OtlpReceiver).

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use prost::Message;

/// Posts each batch to `<endpoint>/v1/traces`, with the resource the
/// pipeline set (the tracer provider, or whoever calls `set_resource`).
#[derive(Debug)]
pub struct OtlpHttpExporter {
    url: String,
    resource: ResourceAttributesWithSchema,
}

impl OtlpHttpExporter {
    /// An exporter to `endpoint` (`http://host:port`).
    pub fn new(endpoint: &str) -> OtlpHttpExporter {
        OtlpHttpExporter {
            url: format!("{}/v1/traces", endpoint.trim_end_matches('/')),
            resource: ResourceAttributesWithSchema::default(),
        }
    }
}

impl SpanExporter for OtlpHttpExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let body = ExportTraceServiceRequest {
            resource_spans: group_spans_by_resource_and_scope(batch, &self.resource),
        }
        .encode_to_vec();
        ureq::post(&self.url)
            .timeout(Duration::from_secs(5))
            .set("Content-Type", "application/x-protobuf")
            .send_bytes(&body)
            .map(drop)
            .map_err(|e| OTelSdkError::InternalFailure(format!("POST {}: {e}", self.url)))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.into();
    }
}
