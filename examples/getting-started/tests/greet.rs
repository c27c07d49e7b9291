//! The service of src/main.rs, tested: a pool on a venv made by
//! `snakepit_pool::test_util` (from the wheel in `SNAKEPIT_WHEEL`), a call
//! of the adapter's tool, the handler's event and the Prometheus metric.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_core::config::Config;
use snakepit_pool::test_util::python_env;
use snakepit_pool::{CallOptions, Pool};
use snakepit_sinks::{telemetry_from_config, SinkSet};

// Port 0: any free port, read back from the sink set.
const TELEMETRY: &str = r#"
[[sinks]]
kind = "prometheus"
listen = "127.0.0.1:0"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn greet_is_answered_seen_by_the_handler_and_counted() {
    // Made on the first run, then reused; blocking, so before the pool.
    let env = python_env("greeter:Greeter", None).expect("a venv with snakepit_bridge");
    let adapters = concat!(env!("CARGO_MANIFEST_DIR"), "/adapters");
    let pool_config = env
        .config
        .pool_name("greeter")
        .workers(2)
        .env("PYTHONPATH", adapters);

    let config = Config::from_toml(TELEMETRY, "inline").unwrap();
    let telemetry = telemetry_from_config(&config);
    let sinks = SinkSet::from_config(&config, &telemetry).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    telemetry
        .attach("greet-seen", "snakepit.python.call.stop", move |event| {
            let command = event.meta_str("command").unwrap_or("?");
            log.lock().unwrap().push(command.to_string());
        })
        .unwrap();

    let pool = Pool::start(telemetry.clone(), pool_config).await.unwrap();
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), 2, "two workers: {pids:?}");
    let out = pool
        .execute(
            "greet",
            serde_json::json!({"name": "Ada"}),
            CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(out.value, serde_json::json!({"text": "Hello, Ada!"}));

    // The call's end event comes from the worker just after its result.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !seen.lock().unwrap().iter().any(|c| c == "greet") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        ["greet"],
        "the handler saw one call of greet"
    );

    let addr = sinks.prometheus_addr().expect("a Prometheus endpoint");
    let metrics = get_metrics(addr);
    let greet = metrics
        .lines()
        .find(|l| {
            l.starts_with("snakepit_python_call_stop_duration_seconds_count{")
                && l.contains("command=\"greet\"")
        })
        .unwrap_or_else(|| panic!("no count of greet calls in:\n{metrics}"));
    assert!(greet.ends_with(" 1"), "one call of greet: {greet}");
    assert!(
        metrics.contains("snakepit_pool_worker_spawned_total{pool_name=\"greeter\"} 2"),
        "two workers spawned:\n{metrics}"
    );

    pool.shutdown().await;
    for pid in pids {
        let proc = format!("/proc/{pid}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&proc).exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !std::path::Path::new(&proc).exists(),
            "worker {pid} outlived the pool"
        );
    }
    sinks.shutdown(Duration::from_secs(2)).unwrap();
}

/// `GET /metrics` over plain HTTP/1.0 (the body after the headers).
fn get_metrics(addr: std::net::SocketAddr) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"),
        "{response}"
    );
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Tests calling `python_env` at once share one venv: one makes it, the
/// others wait for it and reuse it.
#[test]
fn tests_running_at_once_share_one_venv() {
    let envs: Vec<_> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..3)
            .map(|_| s.spawn(|| python_env("greeter:Greeter", None).unwrap()))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert!(envs.iter().all(|e| e.python == envs[0].python), "{envs:?}");
    let import = std::process::Command::new(&envs[0].python)
        .args(["-c", "import snakepit_bridge"])
        .status()
        .unwrap();
    assert!(
        import.success(),
        "{:?} imports snakepit_bridge",
        envs[0].python
    );
}
