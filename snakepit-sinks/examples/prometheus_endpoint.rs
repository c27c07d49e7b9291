//! A Prometheus endpoint with the guide's default metrics, fed by host
//! events, scraped once over HTTP.
//!
//! ```text
//! cargo run -p snakepit-sinks --example prometheus_endpoint
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use snakepit_core::{builtin, Value};
use snakepit_sinks::prometheus::PrometheusSink;
use snakepit_telemetry::Telemetry;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let telemetry = Telemetry::new();
    let sink = Arc::new(
        PrometheusSink::builder()
            .listen("127.0.0.1:0".parse()?)
            .build(telemetry.catalog())?,
    );
    telemetry.attach_sink("prometheus", &[], sink.clone())?;
    for depth in [3, 7, 1] {
        telemetry.execute(
            builtin::POOL_STATUS,
            &[
                ("queue_depth", Value::Int(depth)),
                ("available_workers", Value::Int(2)),
            ],
            &[("pool_name", "default".into())],
        );
    }
    telemetry.execute(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(2_500_000))],
        &[("command", "predict".into())],
    );
    let addr = sink.local_addr().ok_or("the sink has no listener")?;
    let mut conn = TcpStream::connect(addr)?;
    write!(
        conn,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    for line in text.lines().filter(|l| l.starts_with("snakepit_")) {
        println!("{line}");
    }
    Ok(())
}
