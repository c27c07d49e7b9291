use serde_json::json;
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_telemetry::Telemetry;
use std::time::{Duration, Instant};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sock = std::env::args().nth(1).unwrap();
    let secs: u64 = std::env::args().nth(2).unwrap().parse().unwrap();
    let inflight: usize = std::env::args()
        .nth(3)
        .map(|v| v.parse().unwrap())
        .unwrap_or(1);
    let t = Telemetry::new();
    if std::env::var("OFF").is_ok() {
        t.control().set_enabled(false);
    }
    let c = WorkerClient::connect(
        t,
        ConnectOptions::new(WorkerAddress::Unix(sock.into()), "p"),
    )
    .await
    .unwrap();
    let t0 = Instant::now();
    let mut hs = vec![];
    for _ in 0..inflight {
        let c = c.clone();
        hs.push(tokio::spawn(async move {
            let mut n = 0u64;
            while t0.elapsed() < Duration::from_secs(secs) {
                c.execute("ping", json!({}), CallOptions::default())
                    .await
                    .unwrap();
                n += 1;
            }
            n
        }));
    }
    let mut n = 0;
    for h in hs {
        n += h.await.unwrap();
    }
    println!("{} calls/s", n as f64 / t0.elapsed().as_secs_f64());
    c.close().await;
}
