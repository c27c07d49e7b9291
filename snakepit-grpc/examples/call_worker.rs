//! Starts one Python worker, calls a tool on it, and prints the Python
//! events folded into the host's telemetry.
//!
//! ```text
//! cargo xtask setup   # once: the venv with snakepit_bridge
//! cargo run -p snakepit-grpc --example call_worker
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::json;
use snakepit_core::ready::ReadyLine;
use snakepit_grpc::{CallOptions, ConnectOptions, WorkerAddress, WorkerClient};
use snakepit_telemetry::Telemetry;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let python = std::env::var("SNAKEPIT_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").into());
    let dir = std::env::temp_dir().join(format!("snakepit-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let socket = dir.join("w1.sock");
    let mut worker = Command::new(&python)
        .args([
            "-m",
            "snakepit_bridge.worker",
            "--worker-id",
            "w1",
            "--watch-stdin",
        ])
        .args([
            "--adapter",
            "snakepit_bridge.adapters.showcase:ShowcaseAdapter",
        ])
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {python}: {e} (run `cargo xtask setup`)"))?;
    let mut line = String::new();
    BufReader::new(worker.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let Some(ready) = ReadyLine::parse(&line)? else {
        return Err(format!("the worker did not start: {line:?}").into());
    };
    println!(
        "worker {} (pid {}) listens on {}",
        ready.worker_id, ready.pid, ready.listen
    );

    let telemetry = Telemetry::new();
    telemetry.attach("print", "snakepit.python.*", |e| {
        println!("{:<42} {:?}", e.name(), e.measurement("duration"));
    })?;
    let client = WorkerClient::connect(
        telemetry,
        ConnectOptions::new(WorkerAddress::Unix(socket), "w1"),
    )
    .await?;
    let out = client
        .execute(
            "text_stats",
            json!({"text": "hello snakepit"}),
            CallOptions::default(),
        )
        .await?;
    println!("text_stats -> {}", out.value);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    client.close().await;
    worker.kill()?;
    worker.wait()?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
