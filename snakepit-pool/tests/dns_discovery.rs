//! External workers found through DNS (`dns:<name>:<port>`): a slot per
//! address, new addresses added and vanished ones drained at each
//! resolution, with `discovered` and `removed` events. A test resolver
//! changes the answers; the workers are real processes on loopback TCP.

mod common;

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::json;
use snakepit_pool::{CallOptions, Pool, PoolConfig, PoolError, Resolver};
use snakepit_telemetry::Telemetry;

const TOKEN: &str = "dns-s3cret";

/// Answers set by the test; every name resolves to them.
#[derive(Clone)]
struct Answers(Arc<Mutex<io::Result<Vec<SocketAddr>>>>);

impl Default for Answers {
    fn default() -> Self {
        Answers(Arc::new(Mutex::new(Ok(Vec::new()))))
    }
}

impl Answers {
    fn set(&self, addresses: &[SocketAddr]) {
        *self.0.lock().unwrap() = Ok(addresses.to_vec());
    }

    fn fail(&self) {
        *self.0.lock().unwrap() = Err(io::Error::other("no such host"));
    }
}

#[async_trait::async_trait]
impl Resolver for Answers {
    async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
        match &*self.0.lock().unwrap() {
            Ok(a) => Ok(a.clone()),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        }
    }
}

/// A worker on loopback TCP with the token, as a Deployment would run it.
fn external(worker_id: &str) -> (WorkerProcess, SocketAddr) {
    let process = WorkerSpec::new(SHOWCASE, worker_id)
        .listen("127.0.0.1:0")
        .env("SNAKEPIT_TOKEN", TOKEN)
        .quiet()
        .start();
    let address = process.ready.listen.parse().expect("host:port");
    (process, address)
}

fn dns_config(name: &str, answers: &Answers) -> PoolConfig {
    PoolConfig::external([])
        .pool_name(name)
        .external_worker("dns:workers.test:50051", Some(TOKEN.to_string()))
        .discovery_interval(Duration::from_millis(100))
        .resolver(answers.clone())
        .startup_timeout(Duration::from_secs(5))
        .restart_backoff(Duration::from_millis(50), Duration::from_millis(200), 50)
}

/// The `(address, worker_id)` of each event named `name` so far.
fn seen(rec: &Recorder, name: &str) -> Vec<(String, String)> {
    rec.named(name)
        .iter()
        .map(|e| {
            (
                meta(e, "address").to_string(),
                meta(e, "worker_id").to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_are_added_and_drained_as_the_answers_change() {
    let (mut w1, a1) = external("w1");
    let (mut w2, a2) = external("w2");
    let (mut w3, a3) = external("w3");
    let answers = Answers::default();
    let mut first = [a1, a2];
    first.sort();
    answers.set(&first);
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.*");
    let pool = Arc::new(
        Pool::start(telemetry.clone(), dns_config("dns", &answers))
            .await
            .unwrap(),
    );

    let discovered = seen(&rec, "snakepit.pool.worker.discovered");
    assert_eq!(
        discovered,
        [
            (first[0].to_string(), "dns_1".to_string()),
            (first[1].to_string(), "dns_2".to_string())
        ]
    );
    let d = &rec.named("snakepit.pool.worker.discovered")[0];
    assert_eq!(meta(d, "source"), "dns:workers.test:50051");
    assert_eq!(meta(d, "pool_name"), "dns");
    assert_eq!(int(d, "addresses"), 2);
    assert_eq!(
        int(&rec.named("snakepit.pool.initialized")[0], "worker_count"),
        2
    );
    assert_eq!(pool.status().total_workers, 2);

    // A long call lands on the first slot (both idle: the lowest slot),
    // whose address then disappears: it finishes before the slot closes.
    let p = pool.clone();
    let long = tokio::spawn(async move {
        p.execute("sleep", json!({"ms": 1500}), CallOptions::default())
            .await
    });
    while pool.status().in_flight == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    answers.set(&[first[1], a3]);
    let removed = rec
        .wait_for("snakepit.pool.worker.removed", 1, Duration::from_secs(10))
        .await;
    assert_eq!(
        seen(&rec, "snakepit.pool.worker.removed"),
        [(first[0].to_string(), "dns_1".to_string())]
    );
    assert_eq!(int(&removed[0], "addresses"), 2);
    let out = long.await.unwrap().expect("the call in flight finished");
    assert_eq!(out.value, json!({"slept_ms": 1500}));
    let terminated = rec
        .wait_for(
            "snakepit.pool.worker.terminated",
            1,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(meta(&terminated[0], "worker_id"), "dns_1");
    assert_eq!(meta(&terminated[0], "reason"), "removed");
    assert_eq!(meta(&terminated[0], "planned"), "true");
    assert_eq!(int(&terminated[0], "total_commands"), 1);

    // The new address took the freed slot.
    let discovered = rec
        .wait_for(
            "snakepit.pool.worker.discovered",
            3,
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(meta(&discovered[2], "address"), a3.to_string());
    assert_eq!(meta(&discovered[2], "worker_id"), "dns_1");
    let mut ids = pool.worker_ids();
    ids.sort();
    assert_eq!(ids, ["dns_1", "dns_2"]);
    let mut pids: Vec<u32> = Vec::new();
    for info in pool.describe().await {
        pids.push(info.unwrap().pid);
    }
    pids.sort();
    let mut expected = vec![if first[1] == a1 { w1.pid() } else { w2.pid() }, w3.pid()];
    expected.sort();
    assert_eq!(
        pids, expected,
        "the pool talks to the second and third workers"
    );
    for i in 0..10 {
        let out = pool
            .execute("add", json!({"a": i, "b": 1}), CallOptions::default())
            .await
            .unwrap();
        assert_eq!(out.value, json!(i + 1));
    }

    // A failed resolution, or an empty answer, keeps the workers.
    answers.fail();
    tokio::time::sleep(Duration::from_millis(400)).await;
    answers.set(&[]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(pool.status().total_workers, 2);
    assert_eq!(rec.named("snakepit.pool.worker.removed").len(), 1);

    Arc::try_unwrap(pool).unwrap().shutdown().await;
    let reasons: Vec<String> = rec
        .named("snakepit.pool.worker.terminated")
        .iter()
        .map(|e| meta(e, "reason").to_string())
        .collect();
    assert_eq!(reasons, ["removed", "shutdown", "shutdown"]);
    for w in [&mut w1, &mut w2, &mut w3] {
        w.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_resolver_finds_a_worker_by_name() {
    let (mut worker, address) = external("w-localhost");
    let telemetry = Telemetry::new();
    let rec = Recorder::attach(&telemetry, "rec", "snakepit.pool.worker.*");
    // `localhost` from the hosts file: 127.0.0.1 serves; ::1, if listed,
    // has no worker and gets no slot.
    let cfg = PoolConfig::external([])
        .pool_name("byname")
        .external_worker(
            format!("dns:localhost:{}", address.port()),
            Some(TOKEN.to_string()),
        )
        .startup_timeout(Duration::from_secs(5));
    let pool = Pool::start(telemetry, cfg).await.unwrap();
    let discovered = seen(&rec, "snakepit.pool.worker.discovered");
    assert_eq!(discovered.len(), 1, "{:?}", rec.all());
    assert_eq!(discovered[0].0, address.to_string());
    let out = pool
        .execute("add", json!({"a": 2, "b": 2}), CallOptions::default())
        .await
        .unwrap();
    assert_eq!(out.value, json!(4));
    pool.shutdown().await;
    worker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_fails_the_start_and_bad_names_are_refused() {
    let answers = Answers::default();
    answers.fail();
    let err = Pool::start(Telemetry::new(), dns_config("nodns", &answers))
        .await
        .unwrap_err();
    assert!(matches!(err, PoolError::Startup { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("dns:workers.test:50051") && text.contains("no such host"),
        "{text}"
    );

    // Resolved, but nothing answers there: the pool starts without workers
    // and calls fail at once, saying why.
    answers.set(&["127.0.0.1:9".parse().unwrap()]);
    let pool = Pool::start(Telemetry::new(), dns_config("unreachable", &answers))
        .await
        .unwrap();
    let err = pool
        .execute("add", json!({"a": 1, "b": 1}), CallOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PoolError::NoLiveWorker { reason } if reason.contains("dns:")),
        "{err:?}"
    );
    pool.shutdown().await;

    for (address, wanted) in [
        ("dns:workers", "no port"),
        ("dns::50051", "not a host name"),
        ("dns:workers:99999", "not a port"),
        ("dns:workers:0", "not a port"),
    ] {
        let err = Pool::start(
            Telemetry::new(),
            PoolConfig::external([]).external_worker(address, None),
        )
        .await
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("external_workers[0].address") && text.contains(wanted),
            "{address}: {text}"
        );
    }
}
