//! The OTel sink to a collector over https (rustls, a CA of the test's),
//! with headers, resource attributes and gzip, set in the config or
//! through the OpenTelemetry SDK's `OTEL_*` variables; a receiver that
//! serves TLS decodes what arrives. A certificate from another CA fails the
//! export, counted; a bad CA file is refused when the sink is built.

use std::sync::Arc;
use std::time::Duration;

use snakepit_core::config::{OtelCompression, SinkConfig};
use snakepit_core::{Config, Sink};
use snakepit_sinks::otel::{OtelError, OtelSink};
use snakepit_telemetry::{SpanOptions, Telemetry};
use snakepit_testkit::otlp::OtlpReceiver;
use snakepit_testkit::tls::Pki;

/// One `grpc.call` span.
fn one_span(t: &Telemetry) {
    let family = t.catalog().span_family("snakepit.grpc.call").unwrap();
    let md = [("tool", snakepit_core::Value::from("ping"))];
    let span = t.start_span_with(
        family,
        &md,
        SpanOptions {
            parent_span_id: 0,
            trace_id: snakepit_telemetry::new_trace_id(),
        },
    );
    drop(span);
}

/// The one otel sink of `config`.
fn otel(config: &Config) -> snakepit_core::config::OtelSinkConfig {
    match &config.sinks[..] {
        [SinkConfig::Otel(o)] => o.clone(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn https_with_headers_resource_attributes_and_gzip_from_the_otel_variables() {
    let pki = Pki::new("collector");
    let server = pki.server("collector", &["localhost"]);
    let receiver = OtlpReceiver::start_tls(&server.cert, &server.key);
    let mut config = Config::from_toml(
        "[[sinks]]\nkind = \"otel\"\nexport_interval = \"50ms\"\n",
        "s.toml",
    )
    .unwrap();
    let ca = pki.ca().display().to_string();
    config
        .apply_env([
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                receiver.https_endpoint().as_str(),
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", ca.as_str()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20t0k,x-tenant=acme",
            ),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=test,service.name=from-attributes",
            ),
            ("OTEL_SERVICE_NAME", "checkout"),
        ])
        .unwrap();
    let o = otel(&config);
    assert_eq!(o.compression, OtelCompression::Gzip);
    assert_eq!(o.service_name, "checkout", "OTEL_SERVICE_NAME wins");

    let t = Telemetry::new();
    let sink = Arc::new(OtelSink::new(&o, &t).unwrap());
    t.attach_sink("otel", &[], sink.clone()).unwrap();
    one_span(&t);
    sink.flush(Duration::from_secs(10)).unwrap();
    let spans = receiver.wait_spans(1, Duration::from_secs(10));
    assert_eq!(spans.len(), 1, "{:?}", sink.stats());
    assert_eq!(spans[0].0, "checkout");
    assert_eq!(spans[0].1.name, "grpc.call");
    let r = receiver.received.lock().unwrap();
    let headers = &r.headers[0];
    let header = |k: &str| {
        headers
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("authorization"), Some("Bearer t0k"));
    assert_eq!(header("x-tenant"), Some("acme"));
    assert_eq!(header("content-encoding"), Some("gzip"));
    assert!(r.resources[0].contains(&("deployment.environment".into(), "test".into())));
    assert!(r.resources[0].contains(&("service.name".into(), "checkout".into())));
    drop(r);
    sink.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn the_same_from_the_config_file_and_snakepits_variables_win() {
    let pki = Pki::new("collector");
    let server = pki.server("collector", &["localhost"]);
    let receiver = OtlpReceiver::start_tls(&server.cert, &server.key);
    let text = format!(
        "[opentelemetry]\nservice_name = \"file\"\nresource_attributes = {{ region = \"eu\" }}\n\
         [opentelemetry.exporters.otlp]\nendpoint = \"{}\"\nca = '{}'\n\
         headers = {{ authorization = \"Bearer f\" }}\n",
        receiver.https_endpoint(),
        pki.ca().display()
    );
    let mut config = Config::from_toml(&text, "s.toml").unwrap();
    config
        .apply_env([
            ("SNAKEPIT_OTEL_SERVICE_NAME", "snakepit-var"),
            ("OTEL_SERVICE_NAME", "otel-var"),
        ])
        .unwrap();
    let o = otel(&config);
    assert_eq!(o.service_name, "snakepit-var");
    let t = Telemetry::new();
    let sink = Arc::new(OtelSink::new(&o, &t).unwrap());
    t.attach_sink("otel", &[], sink.clone()).unwrap();
    one_span(&t);
    sink.flush(Duration::from_secs(10)).unwrap();
    let spans = receiver.wait_spans(1, Duration::from_secs(10));
    assert_eq!(spans.len(), 1, "{:?}", sink.stats());
    let r = receiver.received.lock().unwrap();
    assert!(r.headers[0].contains(&("authorization".into(), "Bearer f".into())));
    assert!(!r.headers[0].iter().any(|(k, _)| k == "content-encoding"));
    assert!(r.resources[0].contains(&("region".into(), "eu".into())));
    drop(r);
    sink.shutdown(Duration::from_secs(5)).unwrap();
}

#[test]
fn a_collector_certificate_from_another_ca_fails_the_export_and_bad_files_are_named() {
    let pki = Pki::new("collector");
    let other = Pki::new("other");
    let server = pki.server("collector", &["localhost"]);
    let receiver = OtlpReceiver::start_tls(&server.cert, &server.key);
    let t = Telemetry::new();
    let mut o = snakepit_core::config::OtelSinkConfig {
        endpoint: receiver.https_endpoint(),
        ca: Some(other.ca().to_path_buf()),
        export_timeout: Duration::from_millis(500),
        export_interval: Duration::from_millis(50),
        ..Default::default()
    };
    let sink = Arc::new(OtelSink::new(&o, &t).unwrap());
    t.attach_sink("otel", &[], sink.clone()).unwrap();
    one_span(&t);
    let _ = sink.flush(Duration::from_secs(5));
    assert_eq!(sink.stats().export_failed, 1, "{:?}", sink.stats());
    assert!(receiver
        .wait_spans(1, Duration::from_millis(200))
        .is_empty());
    sink.shutdown(Duration::from_secs(2)).unwrap();

    // Not a certificate, and no file at all.
    o.ca = Some(server.key.clone());
    match OtelSink::new(&o, &t) {
        Err(e @ OtelError::Tls { .. }) => {
            assert!(
                e.to_string().contains(&server.key.display().to_string()),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    o.ca = Some("/nonexistent/ca.pem".into());
    let e = OtelSink::new(&o, &t).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    // A CA for a plain http endpoint is a config error, named.
    let e = Config::from_toml(
        "[[sinks]]\nkind = \"otel\"\nendpoint = \"http://c:4318\"\nca = \"ca.pem\"\n",
        "s.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("sinks[0].ca") && e.contains("https"), "{e}");
}
