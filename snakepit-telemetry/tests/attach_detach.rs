//! Attaching, detaching, listing, duplicate ids and panicking handlers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use snakepit_core::{builtin, Value};
use snakepit_telemetry::{AttachError, Telemetry};

fn counter() -> (
    Arc<AtomicUsize>,
    impl Fn(&snakepit_core::Event<'_>) + Send + Sync,
) {
    let n = Arc::new(AtomicUsize::new(0));
    let m = n.clone();
    (n, move |_: &snakepit_core::Event<'_>| {
        m.fetch_add(1, Ordering::Relaxed);
    })
}

#[test]
fn attach_receives_only_its_events_and_detach_stops_them() {
    let t = Telemetry::new();
    let (n, h) = counter();
    t.attach("python-monitor", "snakepit.python.call.stop", h)
        .unwrap();
    t.execute(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(5))],
        &[],
    );
    t.execute(builtin::PYTHON_CALL_START, &[], &[]);
    assert_eq!(n.load(Ordering::Relaxed), 1);

    t.detach("python-monitor").unwrap();
    t.execute(
        builtin::PYTHON_CALL_STOP,
        &[("duration", Value::Int(5))],
        &[],
    );
    assert_eq!(n.load(Ordering::Relaxed), 1);
    assert_eq!(
        t.detach("python-monitor"),
        Err(AttachError::NotFound("python-monitor".into()))
    );
}

#[test]
fn attach_many_and_list() {
    let t = Telemetry::new();
    let (n, h) = counter();
    t.attach_many(
        "pool-monitor",
        &[
            "snakepit.pool.worker.spawned",
            "snakepit.pool.worker.terminated",
        ],
        h,
    )
    .unwrap();
    t.execute(builtin::POOL_WORKER_SPAWNED, &[], &[]);
    t.execute(builtin::POOL_WORKER_TERMINATED, &[], &[]);
    t.execute(builtin::POOL_WORKER_RESTARTED, &[], &[]);
    assert_eq!(n.load(Ordering::Relaxed), 2);
    let list = t.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, "pool-monitor");
    assert_eq!(
        list[0].events,
        vec![
            "snakepit.pool.worker.spawned",
            "snakepit.pool.worker.terminated"
        ]
    );
    assert_eq!(t.list_for(builtin::POOL_WORKER_SPAWNED).len(), 1);
    assert!(t.list_for(builtin::POOL_STATUS).is_empty());
}

#[test]
fn glob_patterns_attach_to_every_matching_event() {
    let t = Telemetry::new();
    let (n, h) = counter();
    t.attach("all-pool", "snakepit.pool.queue.*", h).unwrap();
    t.execute(builtin::POOL_QUEUE_ENQUEUED, &[], &[]);
    t.execute(builtin::POOL_QUEUE_DEQUEUED, &[], &[]);
    t.execute(builtin::POOL_QUEUE_TIMEOUT, &[], &[]);
    t.execute(builtin::POOL_STATUS, &[], &[]);
    assert_eq!(n.load(Ordering::Relaxed), 3);
}

#[test]
fn duplicate_id_is_an_error_and_keeps_the_first_handler() {
    let t = Telemetry::new();
    let (first, h1) = counter();
    let (second, h2) = counter();
    t.attach("dup", "snakepit.pool.status", h1).unwrap();
    let err = t.attach("dup", "snakepit.pool.status", h2).unwrap_err();
    assert_eq!(err, AttachError::DuplicateId("dup".into()));
    assert!(err.to_string().contains("`dup`"));
    t.execute(builtin::POOL_STATUS, &[], &[]);
    assert_eq!(first.load(Ordering::Relaxed), 1);
    assert_eq!(second.load(Ordering::Relaxed), 0);
}

#[test]
fn unknown_events_are_named_in_the_error() {
    let t = Telemetry::new();
    let err = t
        .attach(
            "x",
            "snakepit.pool.made_up",
            |_: &snakepit_core::Event<'_>| {},
        )
        .unwrap_err();
    assert_eq!(
        err,
        AttachError::UnknownEvent("snakepit.pool.made_up".into())
    );
    let err = t
        .attach("y", "snakepit.nothing.*", |_: &snakepit_core::Event<'_>| {})
        .unwrap_err();
    assert_eq!(err, AttachError::NoMatch("snakepit.nothing.*".into()));
    assert!(t.list().is_empty());
    assert!(t.execute_name("snakepit.nope", &[], &[]).is_err());
}

#[test]
fn handlers_see_measurements_metadata_and_a_timestamp() {
    let t = Telemetry::new();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    t.attach("queue-depth", "snakepit.pool.status", move |e| {
        *s.lock().unwrap() = Some((
            e.name().to_string(),
            e.measurement("queue_depth").and_then(Value::as_i64),
            e.meta_str("pool_name").map(str::to_string),
            e.timestamp_ns(),
        ));
    })
    .unwrap();
    t.execute(
        builtin::POOL_STATUS,
        &[("queue_depth", Value::Int(51))],
        &[("pool_name", "default".into())],
    );
    let (name, depth, pool, ts) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(name, "snakepit.pool.status");
    assert_eq!(depth, Some(51));
    assert_eq!(pool.as_deref(), Some("default"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    assert!(
        ts <= now && now - ts < 60_000_000_000,
        "timestamp {ts} vs now {now}"
    );
}

#[test]
fn a_panicking_handler_is_detached_and_reported() {
    let t = Telemetry::new();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r = reports.clone();
    t.attach(
        "watch-detach",
        "snakepit.telemetry.handler.detached",
        move |e| {
            r.lock().unwrap().push((
                e.meta_str("handler_id").unwrap_or("").to_string(),
                e.meta_str("event_name").unwrap_or("").to_string(),
                e.meta_str("reason").unwrap_or("").to_string(),
            ));
        },
    )
    .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    t.attach("bad", "snakepit.pool.status", move |_| {
        c.fetch_add(1, Ordering::Relaxed);
        panic!("boom in handler");
    })
    .unwrap();
    let (good, h) = counter();
    t.attach("good", "snakepit.pool.status", h).unwrap();

    t.execute(builtin::POOL_STATUS, &[], &[]);
    t.execute(builtin::POOL_STATUS, &[], &[]);

    assert_eq!(
        calls.load(Ordering::Relaxed),
        1,
        "detached after the first panic"
    );
    assert_eq!(
        good.load(Ordering::Relaxed),
        2,
        "other handlers keep running"
    );
    let ids: Vec<String> = t.list().into_iter().map(|h| h.id).collect();
    assert!(!ids.contains(&"bad".to_string()));
    let reports = reports.lock().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].0, "bad");
    assert_eq!(reports[0].1, "snakepit.pool.status");
    assert!(reports[0].2.contains("boom in handler"));
}

#[test]
fn clones_share_handlers_and_instances_are_independent() {
    let a = Telemetry::new();
    let b = Telemetry::new();
    let (n, h) = counter();
    a.attach("h", "snakepit.pool.status", h).unwrap();
    a.clone().execute(builtin::POOL_STATUS, &[], &[]);
    b.execute(builtin::POOL_STATUS, &[], &[]);
    assert_eq!(n.load(Ordering::Relaxed), 1);
}
