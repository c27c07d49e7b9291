//! Correlation ids flow into events emitted in their scope, across `.await`
//! points and threads.

use std::sync::{Arc, Mutex};

use snakepit_core::builtin;
use snakepit_telemetry::{
    bind, get_correlation_id, new_correlation_id, reset_correlation_id, set_correlation_id,
    CorrelationExt, Telemetry,
};

fn recorder(t: &Telemetry) -> Arc<Mutex<Vec<Option<String>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    t.attach("rec", "snakepit.pool.status", move |e| {
        s.lock()
            .unwrap()
            .push(e.correlation_id().map(str::to_string));
    })
    .unwrap();
    seen
}

#[test]
fn set_get_reset_and_guards_nest() {
    assert_eq!(get_correlation_id(), None);
    let id = new_correlation_id();
    assert_eq!(id.as_str().len(), 36, "a UUID string");
    assert_ne!(id, new_correlation_id());
    {
        let _outer = set_correlation_id(id.clone());
        assert_eq!(get_correlation_id(), Some(id.clone()));
        {
            let _inner = set_correlation_id("inner");
            assert_eq!(get_correlation_id().unwrap().as_str(), "inner");
        }
        assert_eq!(get_correlation_id(), Some(id.clone()));
        reset_correlation_id();
        assert_eq!(get_correlation_id(), None);
    }
    assert_eq!(get_correlation_id(), None);
}

#[test]
fn events_carry_the_id_current_in_their_scope() {
    let t = Telemetry::new();
    let seen = recorder(&t);
    t.execute(builtin::POOL_STATUS, &[], &[]);
    {
        let _g = set_correlation_id("abc-123");
        t.execute(builtin::POOL_STATUS, &[], &[]);
    }
    t.execute(builtin::POOL_STATUS, &[], &[]);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![None, Some("abc-123".to_string()), None]
    );
}

#[test]
fn the_id_crosses_threads_with_bind() {
    let t = Telemetry::new();
    let seen = recorder(&t);
    let _g = set_correlation_id("thread-req");
    let t2 = t.clone();
    std::thread::spawn(bind(move || t2.execute(builtin::POOL_STATUS, &[], &[])))
        .join()
        .unwrap();
    // Without bind, a new thread starts with no id.
    let t3 = t.clone();
    std::thread::spawn(move || t3.execute(builtin::POOL_STATUS, &[], &[]))
        .join()
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("thread-req".to_string()), None]
    );
}

#[test]
fn the_id_follows_a_future_across_awaits_and_worker_threads() {
    let t = Telemetry::new();
    let seen = recorder(&t);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for i in 0..8 {
            let t = t.clone();
            let fut = async move {
                for _ in 0..3 {
                    t.execute(builtin::POOL_STATUS, &[], &[]);
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    tokio::task::yield_now().await;
                }
                get_correlation_id().map(|c| c.to_string())
            };
            tasks.push(tokio::spawn(fut.with_correlation(format!("task-{i}"))));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap(), Some(format!("task-{i}")));
        }
    });
    // Outside the futures, the worker threads hold no id.
    assert_eq!(get_correlation_id(), None);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 24);
    for i in 0..8 {
        let id = format!("task-{i}");
        assert_eq!(
            seen.iter()
                .filter(|s| s.as_deref() == Some(id.as_str()))
                .count(),
            3
        );
    }
}

#[test]
fn with_current_correlation_captures_the_callers_id() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let fut = {
        let _g = set_correlation_id("captured");
        async { get_correlation_id().map(|c| c.to_string()) }.with_current_correlation()
    };
    assert_eq!(rt.block_on(fut), Some("captured".to_string()));
}

/// Generated ids are UUID v4 strings, unique across threads.
#[test]
fn generated_ids_are_unique_uuid_v4_strings() {
    let threads: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                (0..25_000)
                    .map(|_| new_correlation_id().as_str().to_string())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all = std::collections::HashSet::new();
    for t in threads {
        for id in t.join().unwrap() {
            let u = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(u.get_version_num(), 4, "{id}");
            assert_eq!(u.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(id, id.to_lowercase());
            assert!(all.insert(id), "a repeated id");
        }
    }
    assert_eq!(all.len(), 100_000);
}
