use std::time::Duration;

use snakepit_core::config::Config;
use snakepit_core::Value;
use snakepit_pool::{CallOptions, Pool, PoolConfig};
use snakepit_sinks::{telemetry_from_config, SinkSet};

const TELEMETRY: &str = r#"
[[sinks]]
kind = "prometheus"
listen = "127.0.0.1:9568"
"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Telemetry and its sinks, from TOML (or Config::load("snakepit.toml")).
    let config = Config::from_toml(TELEMETRY, "inline")?;
    let telemetry = telemetry_from_config(&config);
    let sinks = SinkSet::from_config(&config, &telemetry)?;

    // A handler: runs on the emitting thread for every matching event.
    telemetry.attach("greet-timing", "snakepit.python.call.stop", |event| {
        let ms = event
            .measurement("duration")
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            / 1e6;
        println!(
            "{} took {ms:.2} ms",
            event.meta_str("command").unwrap_or("?")
        );
    })?;

    // Absolute paths, as the workers may run elsewhere. Not canonicalize():
    // a venv's bin/python is a symlink, and the interpreter it points to is
    // outside the venv and has none of its packages.
    let adapters = std::path::absolute("adapters")?;
    let pool_config = PoolConfig::new("greeter:Greeter")
        .pool_name("greeter")
        .workers(2)
        .python(std::path::absolute(".venv/bin/python")?)
        .env("PYTHONPATH", adapters.display().to_string());
    let pool = Pool::start(telemetry.clone(), pool_config).await?;

    let out = pool
        .execute(
            "greet",
            serde_json::json!({"name": "Ada"}),
            CallOptions::default(),
        )
        .await?;
    println!("{}", out.value);

    if let Some(addr) = sinks.prometheus_addr() {
        println!("metrics on http://{addr}/metrics; Ctrl-C to stop");
    }
    tokio::signal::ctrl_c().await?;
    pool.shutdown().await;
    let _ = sinks.shutdown(Duration::from_secs(2));
    Ok(())
}
