//! Every call carries x-snakepit-correlation-id and a W3C traceparent; the
//! tool sees both, and its span is a child of the host's grpc.call span,
//! whose parent is the caller's (`CallOptions::parent`), flags included.

mod common;

use common::{connect_recorded, Worker, SHOWCASE};
use serde_json::json;
use snakepit_grpc::CallOptions;
use snakepit_telemetry::{set_correlation_id, CorrelationId};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlation_id_and_traceparent_reach_the_tool() {
    let worker = Worker::start(SHOWCASE, "w-corr");
    let (_telemetry, rec, client) =
        connect_recorded(worker.options(), &["snakepit.grpc.call.start"]).await;

    for unary in [false, true] {
        let run = |opts: CallOptions| {
            let c = client.clone();
            async move {
                if unary {
                    c.execute_unary("whoami", json!({}), opts).await
                } else {
                    c.execute("whoami", json!({}), opts).await
                }
                .unwrap()
                .value
            }
        };

        // An explicit id; the traceparent is generated from the host span.
        let before = rec.count("snakepit.grpc.call.start");
        let seen = run(CallOptions {
            correlation_id: Some(CorrelationId::new("corr-explicit-1")),
            ..CallOptions::default()
        })
        .await;
        assert_eq!(seen["correlation_id"], json!("corr-explicit-1"));
        let start = rec.named("snakepit.grpc.call.start")[before].clone();
        assert_eq!(start.correlation_id.as_deref(), Some("corr-explicit-1"));
        let host_span = format!("{:016x}", start.span_id);
        let host_trace = format!("{:032x}", start.trace_id);
        assert_eq!(
            seen["traceparent"],
            json!(format!("00-{host_trace}-{host_span}-01"))
        );
        assert_eq!(seen["trace_id"], json!(host_trace));

        // The id current on this thread.
        {
            let _g = set_correlation_id("corr-current-2");
            let seen = run(CallOptions::default()).await;
            assert_eq!(seen["correlation_id"], json!("corr-current-2"));
        }

        // None at all: a fresh one is generated.
        let seen = run(CallOptions::default()).await;
        let generated = seen["correlation_id"].as_str().unwrap();
        assert_eq!(generated.len(), 36, "{generated}");

        // A caller's parent: grpc.call is its child, and the worker gets
        // grpc.call's context (same trace, flags carried), not the caller's.
        for flags in ["01", "00"] {
            let tp = format!("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-{flags}");
            let before = rec.count("snakepit.grpc.call.start");
            let seen = run(CallOptions::default().parent(tp.parse().unwrap())).await;
            let start = rec.named("snakepit.grpc.call.start")[before].clone();
            assert_eq!(start.parent_span_id, 0xb7ad6b7169203331);
            assert_eq!(start.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
            let host_span = format!("{:016x}", start.span_id);
            assert_eq!(
                seen["traceparent"],
                json!(format!(
                    "00-0af7651916cd43dd8448eb211c80319c-{host_span}-{flags}"
                ))
            );
            assert_eq!(seen["trace_id"], json!("0af7651916cd43dd8448eb211c80319c"));
            let current = seen["current_traceparent"].as_str().unwrap();
            assert!(
                current.ends_with(&format!("-{flags}")),
                "unary {unary}: {seen}"
            );
        }
    }
    client.close().await;
}
