//! docs/deploy/: the host's snakepit.toml of docs/deployment.md loads and
//! validates as written (pool, discovery, sinks, `[opentelemetry]`), and
//! `promtool check config` accepts the Prometheus config. (The Kubernetes
//! and Collector YAML are checked by python/tests/test_deployment_files.py.)

use std::path::PathBuf;
use std::process::Command;

use snakepit_core::config::SinkConfig;
use snakepit_core::Config;
use snakepit_pool::{DnsName, PoolConfig};

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/deploy")
        .join(file)
}

/// The host's snakepit.toml as written, with its TLS directory
/// (`/etc/snakepit/tls/`, a mounted secret in the cluster) pointed at a
/// real CA made for the test: the config reads the files when validated.
#[test]
fn the_hosts_config_loads_as_written() {
    let pki = snakepit_testkit::tls::Pki::new("deploy");
    let text = std::fs::read_to_string(deploy("snakepit.toml")).unwrap();
    assert!(text.contains("\"/etc/snakepit/tls/ca.crt\""), "{text}");
    let text = text.replace("/etc/snakepit/tls/ca.crt", &pki.ca().display().to_string());
    let path = pki.dir().join("snakepit.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).unwrap();
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let pools = PoolConfig::from_config(&config).unwrap();
    assert_eq!(pools.len(), 1);
    let pool = &pools[0];
    pool.validate().unwrap();
    assert!(pool.is_external());
    let name = DnsName::parse(&pool.external_workers[0].address)
        .expect("a dns: address")
        .unwrap();
    assert_eq!(name.port, 50051);
    let tls = pool.external_workers[0].tls.as_ref().expect("tls");
    assert_eq!(tls.ca, pki.ca());
    let kinds: Vec<&str> = config
        .sinks
        .iter()
        .map(|s| match s {
            SinkConfig::Prometheus(_) => "prometheus",
            SinkConfig::Otel(o) => {
                assert_eq!(o.service_name, "my-service");
                assert_eq!(o.sample_ratio, 0.1);
                "otel"
            }
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["prometheus", "otel"]);
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy("prometheus.yml"))
        .output()
        .expect("promtool not found: install the Debian package `prometheus` (cargo xtask setup)");
    assert!(
        out.status.success(),
        "promtool check config failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
