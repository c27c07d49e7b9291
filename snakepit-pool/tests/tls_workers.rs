//! External workers over TLS (and mTLS) on 127.0.0.1, with certificates
//! made in the test: calls and python telemetry through TLS plus token,
//! and each way a TLS connection fails, named in the startup error.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError, WorkerTls};
use snakepit_telemetry::Telemetry;
use snakepit_testkit::tls::{CertFiles, Pki};

const TOKEN: &str = "tls-s3cret";

/// A worker on loopback TCP serving TLS with `server`, requiring a client
/// certificate signed by `client_ca` when given.
fn tls_worker(id: &str, server: &CertFiles, client_ca: Option<&Path>) -> WorkerProcess {
    let mut args = vec![
        "--tls-cert".to_string(),
        server.cert.display().to_string(),
        "--tls-key".to_string(),
        server.key.display().to_string(),
    ];
    if let Some(ca) = client_ca {
        args.extend(["--tls-client-ca".to_string(), ca.display().to_string()]);
    }
    WorkerSpec::new(SHOWCASE, id)
        .listen("127.0.0.1:0")
        .env("SNAKEPIT_TOKEN", TOKEN)
        .args(args)
        .quiet()
        .start()
}

fn tls_config(name: &str, worker: &WorkerProcess, token: &str, tls: WorkerTls) -> PoolConfig {
    PoolConfig::external([])
        .pool_name(name)
        .external_worker_tls(&worker.ready.listen, Some(token.to_string()), tls)
        .startup_timeout(Duration::from_secs(10))
        .restart_backoff(Duration::from_millis(50), Duration::from_millis(200), 50)
}

/// Starting the pool fails; returns the startup reason (also the
/// `spawn_failed` reason).
async fn startup_failure(config: PoolConfig) -> String {
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.spawn_failed");
    let err = Pool::start(telemetry, config).await.unwrap_err();
    let PoolError::Startup { reason, .. } = &err else {
        panic!("expected a startup error, got {err:?}");
    };
    let failed = rec.named("snakepit.pool.worker.spawn_failed");
    assert!(!failed.is_empty(), "no spawn_failed event");
    assert_eq!(meta(&failed[0], "reason"), *reason);
    eprintln!("startup failed as expected: {reason}");
    reason.clone()
}

fn assert_gone(pids: &[u32]) {
    assert!(
        wait_gone(pids, Duration::from_secs(10)),
        "workers left running: {pids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_python_events_travel_over_tls_with_the_token() {
    let pki = Pki::new("workers");
    let server = pki.server("worker", &["127.0.0.1", "localhost"]);
    let worker = tls_worker("tls_1", &server, None);
    let pid = worker.pid();
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.python.tool.*");
    let pool = Pool::start(
        telemetry.clone(),
        tls_config("tls", &worker, TOKEN, WorkerTls::new(pki.ca())),
    )
    .await
    .unwrap();
    let out = pool
        .execute("add", json!({"a": 20, "b": 22}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(42));
    pool.execute("emit_events", json!({"count": 25}), CallOptions::default())
        .await
        .unwrap();
    let emitted = || {
        let mut events = rec.named("snakepit.python.tool.execution.stop");
        events.retain(|e| meta(e, "tool").starts_with("emit_events"));
        events
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while emitted().len() < 25 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let folded = emitted();
    // The 25 emitted, and the tool's own.
    assert!(
        folded.len() >= 25,
        "python events folded over TLS: {folded:?}"
    );
    for e in &folded {
        assert_eq!(meta(e, "worker_id"), "tls_1");
        assert_eq!(meta(e, "pool_name"), "tls");
    }
    pool.shutdown().await;

    // TLS does not replace the token: the wrong one is still refused.
    let reason = startup_failure(tls_config(
        "tlsbadtoken",
        &worker,
        "wrong",
        WorkerTls::new(pki.ca()),
    ))
    .await;
    assert!(reason.to_lowercase().contains("token"), "{reason}");
    drop(worker);
    assert_gone(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_accepts_the_right_client_certificate_and_refuses_none_or_a_stranger() {
    let workers = Pki::new("workers");
    let hosts = Pki::new("hosts");
    let strangers = Pki::new("strangers");
    let server = workers.server("worker", &["127.0.0.1"]);
    let host = hosts.client("host", "host.test");
    let stranger = strangers.client("stranger", "host.test");
    let worker = tls_worker("mtls_1", &server, Some(hosts.ca()));
    let pid = worker.pid();

    let mut tls = WorkerTls::new(workers.ca());
    tls.cert = Some(host.cert.clone());
    tls.key = Some(host.key.clone());
    let pool = Pool::start(Telemetry::new(), tls_config("mtls", &worker, TOKEN, tls))
        .await
        .unwrap();
    let out = pool
        .execute("add", json!({"a": 1, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(3));
    pool.shutdown().await;

    let reason = startup_failure(tls_config(
        "nocert",
        &worker,
        TOKEN,
        WorkerTls::new(workers.ca()),
    ))
    .await;
    assert!(reason.contains("requires a client certificate"), "{reason}");

    let mut tls = WorkerTls::new(workers.ca());
    tls.cert = Some(stranger.cert.clone());
    tls.key = Some(stranger.key.clone());
    let reason = startup_failure(tls_config("stranger", &worker, TOKEN, tls)).await;
    assert!(
        reason.contains("refused the client certificate"),
        "{reason}"
    );
    drop(worker);
    assert_gone(&[pid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_certificate_from_an_unknown_ca_is_refused() {
    let workers = Pki::new("workers");
    let other = Pki::new("other");
    let worker = tls_worker("unknown_ca", &workers.server("w", &["127.0.0.1"]), None);
    let reason = startup_failure(tls_config(
        "unknownca",
        &worker,
        TOKEN,
        WorkerTls::new(other.ca()),
    ))
    .await;
    assert!(reason.contains("unknown CA"), "{reason}");
    assert!(reason.contains(&worker.ready.listen), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_certificate_for_another_name_is_refused_unless_server_name_says_so() {
    let pki = Pki::new("workers");
    let worker = tls_worker("mismatch", &pki.server("w", &["worker.test"]), None);
    let reason = startup_failure(tls_config(
        "mismatch",
        &worker,
        TOKEN,
        WorkerTls::new(pki.ca()),
    ))
    .await;
    assert!(reason.contains("name mismatch"), "{reason}");
    assert!(reason.contains("tls.server_name"), "{reason}");

    // The name the certificate carries, given as server_name: accepted.
    let mut tls = WorkerTls::new(pki.ca());
    tls.server_name = Some("worker.test".to_string());
    let pool = Pool::start(Telemetry::new(), tls_config("named", &worker, TOKEN, tls))
        .await
        .unwrap();
    pool.execute("ping", json!({}), CallOptions::default())
        .await
        .unwrap();
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_worker_certificate_is_refused() {
    let pki = Pki::new("workers");
    let worker = tls_worker("expired", &pki.expired_server("w", &["127.0.0.1"]), None);
    let reason = startup_failure(tls_config(
        "expired",
        &worker,
        TOKEN,
        WorkerTls::new(pki.ca()),
    ))
    .await;
    assert!(reason.contains("expired certificate"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_tcp_worker_reached_with_tls_says_it_does_not_speak_tls() {
    let pki = Pki::new("workers");
    let plain = WorkerSpec::new(SHOWCASE, "plain")
        .listen("127.0.0.1:0")
        .env("SNAKEPIT_TOKEN", TOKEN)
        .quiet()
        .start();
    let reason =
        startup_failure(tls_config("plain", &plain, TOKEN, WorkerTls::new(pki.ca()))).await;
    assert!(reason.contains("does not speak TLS"), "{reason}");
}

/// The key of a config error, and its message.
fn config_error(config: PoolConfig) -> (String, String) {
    match config.validate().unwrap_err() {
        PoolError::Config { key, message, .. } => (key, message),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn tls_files_are_checked_with_the_config_naming_key_and_file() {
    let pki = Pki::new("workers");
    let host = pki.client("host", "host.test");
    let external =
        |tls: WorkerTls| PoolConfig::external([]).external_worker_tls("127.0.0.1:50051", None, tls);
    let missing = pki.dir().join("missing.pem");
    let (key, message) = config_error(external(WorkerTls::new(&missing)));
    assert_eq!(key, "external_workers[0].tls.ca");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("cannot read"), "{message}");

    // A key where a certificate belongs: no PEM certificate in it.
    let (key, message) = config_error(external(WorkerTls::new(&host.key)));
    assert_eq!(key, "external_workers[0].tls.ca");
    assert!(message.contains("no PEM certificate"), "{message}");

    let garbled = pki.dir().join("garbled.pem");
    std::fs::write(
        &garbled,
        "-----BEGIN CERTIFICATE-----\n@@@@\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (key, message) = config_error(external(WorkerTls::new(&garbled)));
    assert_eq!(key, "external_workers[0].tls.ca");
    assert!(message.contains("unreadable PEM"), "{message}");

    let mut tls = WorkerTls::new(pki.ca());
    tls.cert = Some(host.cert.clone());
    let (key, message) = config_error(external(tls.clone()));
    assert_eq!(key, "external_workers[0].tls.key");
    assert!(message.contains("tls.cert is set"), "{message}");

    tls.key = Some(host.cert.clone());
    let (key, message) = config_error(external(tls.clone()));
    assert_eq!(key, "external_workers[0].tls.key");
    assert!(message.contains("no PEM private key"), "{message}");

    tls.key = Some(host.key.clone());
    external(tls.clone()).validate().unwrap();

    let (key, _) = config_error(PoolConfig::external([]).external_worker_tls(
        "unix:/tmp/w.sock",
        None,
        WorkerTls::new(pki.ca()),
    ));
    assert_eq!(key, "external_workers[0].tls");
}

#[test]
fn tls_is_read_from_toml() {
    let pki = Pki::new("workers");
    let text = format!(
        "[[external_workers]]\naddress = \"10.0.0.5:50051\"\ntoken = \"t\"\n\
         tls = {{ ca = {:?}, server_name = \"worker.internal\" }}\n",
        pki.ca().display().to_string()
    );
    let cfg = PoolConfig::from_toml(&text, "snakepit.toml").unwrap();
    let tls = cfg.external_workers[0].tls.as_ref().unwrap();
    assert_eq!(tls.ca, pki.ca());
    assert_eq!(tls.server_name.as_deref(), Some("worker.internal"));

    // As in snakepit.toml (docs/deployment.md).
    let host = pki.client("host", "host.test");
    let path = pki.dir().join("snakepit.toml");
    std::fs::write(
        &path,
        format!(
            "[pool]\npool_name = \"ml\"\n\n[[pool.external_workers]]\n\
             address = \"dns:workers.internal:50051\"\ntoken = \"s3cret\"\n\
             tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n",
            pki.ca().display().to_string(),
            host.cert.display().to_string(),
            host.key.display().to_string()
        ),
    )
    .unwrap();
    let config = snakepit_core::Config::load(&path).unwrap();
    let pools = PoolConfig::from_config(&config).unwrap();
    let tls = pools[0].external_workers[0].tls.as_ref().unwrap();
    assert_eq!(tls.key.as_deref(), Some(host.key.as_path()));

    let text = "[[external_workers]]\naddress = \"10.0.0.5:50051\"\n\
                tls = { ca = \"/nonexistent/ca.pem\" }\n";
    let err = PoolConfig::from_toml(text, "snakepit.toml").unwrap_err();
    let shown = err.to_string();
    assert!(shown.contains("external_workers[0].tls.ca"), "{shown}");
    assert!(shown.contains("/nonexistent/ca.pem"), "{shown}");
}

/// Every name resolves to one address.
struct OneAddress(std::net::SocketAddr);

#[async_trait::async_trait]
impl snakepit_pool::Resolver for OneAddress {
    async fn resolve(&self, _host: &str, _port: u16) -> std::io::Result<Vec<std::net::SocketAddr>> {
        Ok(vec![self.0])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_source_verifies_its_workers_by_the_name_not_each_address() {
    let pki = Pki::new("workers");
    // The certificate names the service only, not 127.0.0.1.
    let worker = tls_worker("dns_tls", &pki.server("w", &["workers.test"]), None);
    let config = PoolConfig::external([])
        .pool_name("dnstls")
        .external_worker_tls(
            "dns:workers.test:50051",
            Some(TOKEN.to_string()),
            WorkerTls::new(pki.ca()),
        )
        .resolver(OneAddress(worker.ready.listen.parse().unwrap()))
        .startup_timeout(Duration::from_secs(10));
    let pool = Pool::start(Telemetry::new(), config).await.unwrap();
    let out = pool
        .execute("add", json!({"a": 2, "b": 3}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(5));
    pool.shutdown().await;
}
