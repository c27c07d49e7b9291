//! The Debian `prometheus` package in the tests: a real Prometheus server
//! scraping one target every second, and `promtool check metrics`.

#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A Prometheus server on a free loopback port, scraping one target every
/// second; killed (and its data removed) on drop.
pub struct PrometheusServer {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl PrometheusServer {
    pub fn start(target: SocketAddr) -> PrometheusServer {
        let dir = std::env::temp_dir().join(format!(
            "snakepit-prom-{}-{}",
            std::process::id(),
            target.port()
        ));
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: snakepit\n    scrape_interval: 1s\n    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let addr = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start `prometheus` ({e}): install the Debian package `prometheus` \
                     (cargo xtask setup does); this test needs a real Prometheus server"
                )
            });
        PrometheusServer { child, dir, addr }
    }

    pub fn query(&self, promql: &str) -> serde_json::Value {
        let url = format!("http://{}/api/v1/query", self.addr);
        match ureq::get(&url)
            .query("query", promql)
            .timeout(Duration::from_secs(2))
            .call()
        {
            Ok(resp) => resp
                .into_string()
                .ok()
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// Waits until `promql` returns at least one sample; returns its value.
    pub fn wait_for(&mut self, promql: &str, deadline: Instant) -> f64 {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited early: {status}");
            }
            let v = self.query(promql);
            if let Some(value) = v["data"]["result"][0]["value"][1].as_str() {
                return value.parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "prometheus returned no sample for `{promql}`: {v}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn free_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// `promtool check metrics` on the text; panics with its output unless clean.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool not found: install the Debian package `prometheus` (cargo xtask setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- exposition ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
