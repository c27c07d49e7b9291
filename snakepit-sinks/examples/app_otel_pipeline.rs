//! snakepit's spans in the application's own OpenTelemetry pipeline
//! (feature `otel-sdk`): the application builds its exporter, resource and
//! tracer provider as usual, and gives snakepit the same exporter kind and
//! resource through `OtelSdkSink`. Here the exporter prints each span; in an
//! application it is the OTLP exporter (or any `SpanExporter`) it already
//! uses.
//!
//! `cargo run -p snakepit-sinks --features otel-sdk --example app_otel_pipeline`

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use snakepit_core::{Sink, Value};
use snakepit_sinks::otel::OtelSdkSink;
use snakepit_telemetry::{SpanOptions, Telemetry};

/// The application's exporter: prints each span with its service.
#[derive(Debug, Default)]
struct Print {
    service: String,
}

impl SpanExporter for Print {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        for s in batch {
            println!(
                "{} {:<12} scope {:<9} trace {} span {} parent {}",
                self.service,
                s.name,
                s.instrumentation_scope.name(),
                s.span_context.trace_id(),
                s.span_context.span_id(),
                s.parent_span_id,
            );
        }
        Ok(())
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.service = resource
            .get(&"service.name".into())
            .map(|v| v.to_string())
            .unwrap_or_default();
    }
}

fn main() {
    // The application's pipeline: its resource and exporter.
    let resource = Resource::builder().with_service_name("my-app").build();
    let provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(Print::default())
        .build();

    // snakepit's spans into the same kind of pipeline, with the same resource.
    let telemetry = Telemetry::new();
    let sink = Arc::new(
        OtelSdkSink::builder(&telemetry)
            .with_resource(resource)
            .with_batch_exporter(Print::default())
            .build()
            .expect("a pipeline was given"),
    );
    telemetry.attach_sink("otel", &[], sink.clone()).unwrap();

    // A call's host span inside the application's request span (a pool
    // built with the `opentelemetry` feature of snakepit-pool takes this
    // parent from the current context by itself).
    provider.tracer("my-app").in_span("handle request", |cx| {
        let sc = cx.span().span_context().clone();
        let family = telemetry
            .catalog()
            .span_family("snakepit.grpc.call")
            .unwrap();
        let metadata = [("tool", Value::from("predict"))];
        let call = telemetry.start_span_with(
            family,
            &metadata,
            SpanOptions {
                parent_span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
                trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            },
        );
        call.stop();
    });

    sink.shutdown(Duration::from_secs(5)).unwrap();
    provider.shutdown().unwrap();
}
